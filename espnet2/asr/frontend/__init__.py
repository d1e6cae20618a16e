"""ESPnet's frontends (overlay package), with our SSL upstream on s3prl's hub.

Every process that imports an ESPnet frontend runs this file first; it makes
``frontend: s3prl`` accept ``frontend_conf: {upstream: espnet_ssl_local, path_or_url:
<.pth or packed .zip>}`` (:mod:`espnet2.ssl.release.s3prl.hub`, which imports nothing
heavy).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from espnet2.ssl.release.s3prl.hub import register_when_s3prl_hub_loads  # noqa: E402

register_when_s3prl_hub_loads()
