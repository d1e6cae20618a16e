"""Exact conversion between our SSL models and transformers' wav2vec 2.0 and HuBERT.

Modules:

* ``folder``: Hugging Face folders of our models (write, read, from a packed
  archive), as the CLIs use them.
* ``hubert``: convert our HuBERT SSL model to and from transformers' HubertModel.
* ``keys``: state dict keys: our wav2vec 2.0 network <-> transformers' wav2vec 2.0 and
  HuBERT.
* ``wav2vec2``: convert our wav2vec 2.0 SSL model to and from transformers'
  Wav2Vec2ForPreTraining.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
