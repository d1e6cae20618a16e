"""Small helpers shared across the package.

Overlay package; ESPnet's modules of this package stay importable.

Modules:

* ``grad_multiply``: scale a gradient in the backward pass (wav2vec 2.0's CNN).
* ``plain_values``: plain Python values of nested containers (checkpoints, YAML).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
