"""HuBERT targets: feature dumpers, k-means, frame labels and their quality.

Overlay package (like every package of this tree): ESPnet's modules of this package,
should a later ESPnet add some, stay importable.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
