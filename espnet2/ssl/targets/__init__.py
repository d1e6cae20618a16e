"""HuBERT targets: feature dumpers, k-means, frame labels and their quality."""
