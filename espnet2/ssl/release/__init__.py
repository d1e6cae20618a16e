"""What leaves or enters the project: packed models, model cards, Hugging Face, fairseq,
s3prl.

Modules:

* ``conversion``: what the model conversion tools share: the folder they write and their
  exits.
* ``model_card``: the model card of a packed SSL model: what it is, how it was trained,
  how it scores.
* ``packing``: packing an SSL model for the ESPnet model zoo and the Hugging Face hub.

Subpackages: ``fairseq/``, ``hf/``, ``s3prl/``.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
