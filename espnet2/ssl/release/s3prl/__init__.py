"""Our SSL checkpoints as an s3prl upstream (``espnet_ssl_local``), for SUPERB probing.

Modules:

* ``hub``: ``espnet_ssl_local`` on s3prl's hub in every process that imports ESPnet
  frontends.
* ``upstream``: an s3prl upstream for ESPnet SSL checkpoints (``SSLTask``), for SUPERB
  probing.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
