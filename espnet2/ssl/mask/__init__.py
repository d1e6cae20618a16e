"""Masks of the encoder input: spans in time (wav2vec 2.0, HuBERT), blocks of channels
(TERA).

Modules:

* ``frequency``: frequency masking of the encoder input frames (TERA's frequency
  alteration).
* ``span``: span masking of encoder inputs for masked prediction (wav2vec 2.0, HuBERT).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
