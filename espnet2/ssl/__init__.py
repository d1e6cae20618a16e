"""Self-supervised speech pretraining (wav2vec 2.0, HuBERT, TERA-style reconstruction).

Overlay package: ESPnet's modules of this package stay importable (``extend_path``).
``docs/design.md`` draws the data flow through these parts.

Modules:

* ``espnet_model``: ESPnet's encoder-only SSL model, with the fixes wav2vec 2.0 needs
  (replaces ESPnet 202511's file; CONTRIBUTING.md lists it).
* ``frame_geometry``: the CNN's layers, receptive field and stride, frame counts,
  shapes read from a config, a model's frame rate.
* ``model_files``: reading model files: weights only
  (``torch.load(weights_only=True)``), ESPnet models from config + weights or a
  packed archive (``unpack_model``).

Subpackages:

* ``targets/``: HuBERT targets: feature dumpers, k-means, frame labels, their quality.
* ``data/``: what the training loader does to each example: checks, crops, augmentation.
* ``mask/``: span masks in time, frequency masks over channels.
* ``loss/``: the objectives (wav2vec 2.0 contrastive, HuBERT, reconstruction).
* ``quantizer/``: wav2vec 2.0's Gumbel-softmax product quantizer.
* ``train/``: the trainer and its wrappers (budget, checkpoints, gradient sync).
* ``release/``: packing, model cards, Hugging Face, fairseq and s3prl interop.
* ``study/``: run planning, FLOPs and memory, sweeps, training curves.
* ``recipe/``: what the recipe reads from and sets in configs.
* ``synth/``: the synthetic corpus of the embedded recipe (mini_synth).
* ``utils/``: small tensor operations (gradient scaling).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
