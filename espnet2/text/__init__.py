"""Overlay package; ESPnet's modules of this package stay importable."""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
