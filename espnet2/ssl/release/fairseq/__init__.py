"""Importing fairseq wav2vec 2.0 and HuBERT pretraining checkpoints, without fairseq.

Modules:

* ``checkpoint``: reading fairseq wav2vec 2.0 and HuBERT pretraining checkpoints without
  fairseq.
* ``config``: fairseq wav2vec 2.0 / HuBERT config -> a transformers config for our HF
  import.
* ``convert``: import a fairseq wav2vec 2.0 or HuBERT pretraining checkpoint as our SSL
  model.
* ``keys``: state dict keys: fairseq ``Wav2Vec2Model`` / ``HubertModel`` ->
  transformers.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
