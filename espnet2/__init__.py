"""Overlay of ESPnet's ``espnet2`` package (replaces ESPnet's ``espnet2/__init__.py``).

``extend_path`` adds every other ``espnet2`` directory on ``sys.path`` (the installed
ESPnet 202511) to this package's path, so ESPnet's own modules stay importable while
the modules of this repository come first. See CONTRIBUTING.md, "The overlay".
"""

from pkgutil import extend_path

from espnet import __version__  # noqa: F401 (kept from ESPnet's espnet2/__init__.py)

__path__ = extend_path(__path__, __name__)
