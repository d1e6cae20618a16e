"""``espnet_ssl_local`` on s3prl's hub in every process that imports ESPnet frontends.

ESPnet's ``frontend: s3prl`` (``S3prlFrontend``, ``espnet2/asr/frontend/s3prl.py``)
checks ``frontend_conf.upstream`` against ``S3PRLUpstream.available_names()`` and
builds ``S3PRLUpstream(upstream, path_or_url=...)``; both read the names of
``s3prl.hub``, and neither ESPnet 202511 nor s3prl 0.4.18 has a plugin mechanism.
So the overlay's ``espnet2/asr/frontend/__init__.py``, which runs before any ESPnet
frontend is imported (every task imports them), calls
:func:`register_when_s3prl_hub_loads`. It puts a finder first on ``sys.meta_path``
that finds nothing itself: for ``s3prl.hub`` it returns the spec the other finders
give, with a loader that adds the entry right after s3prl's own loader has run the
module (a post-import hook). If ``s3prl.hub`` is already in ``sys.modules``, the entry
is also added at once; that is the case while s3prl's hub is still importing, since
its ``espnet_hubert`` upstream imports ESPnet's tasks and with them this package. No
s3prl or ESPnet code is replaced; the entry is added as ``register_on_s3prl_hub``
adds it.

Nothing heavy is imported before ``s3prl.hub`` is: importing it eagerly would add its
import time and its torchaudio deprecation warnings to every ESPnet process.
"""

import importlib.abc
import logging
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Callable, Optional, Sequence

HUB_MODULE = "s3prl.hub"

logger = logging.getLogger(__name__)


def add_entry(hub: ModuleType) -> None:
    """Adds ``espnet_ssl_local`` to ``hub``; logs (never raises) when it cannot.

    Args:
        hub: The ``s3prl.hub`` module, possibly still importing.
    """
    try:
        from espnet2.ssl.release.s3prl.upstream import HUB_NAME, espnet_ssl_local
    except Exception as err:  # must not break s3prl's other upstreams
        logger.warning(
            "espnet_ssl_local is not on s3prl.hub: "
            "espnet2.ssl.release.s3prl.upstream does not import (%s: %s). "
            "Fix: reinstall with `make -C tools`.",
            type(err).__name__,
            err,
        )
        return
    setattr(hub, HUB_NAME, espnet_ssl_local)


class _PostImportLoader(importlib.abc.Loader):
    """Runs the wrapped loader, then ``callback(module)``; the rest delegates."""

    def __init__(self, loader: importlib.abc.Loader, callback: Callable) -> None:
        self._loader, self._callback = loader, callback

    def create_module(self, spec: ModuleSpec) -> Optional[ModuleType]:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._callback(module)

    def __getattr__(self, name: str):  # get_source, get_code, is_package, ...
        return getattr(self._loader, name)


class _HubFinder(importlib.abc.MetaPathFinder):
    """Gives ``s3prl.hub`` the spec of the other finders, with :func:`add_entry`
    run after its loader; finds nothing else."""

    def find_spec(
        self,
        fullname: str,
        path: Optional[Sequence[str]],
        target: Optional[ModuleType] = None,
    ) -> Optional[ModuleSpec]:
        if fullname != HUB_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PostImportLoader(spec.loader, add_entry)
                return spec
        return None


def register_when_s3prl_hub_loads() -> None:
    """Adds ``espnet_ssl_local`` to ``s3prl.hub`` now if it is imported, and again
    whenever it is (re)imported.

    Idempotent: one finder at most, whatever the number of calls.
    """
    if not any(isinstance(finder, _HubFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HubFinder())
    hub = sys.modules.get(HUB_MODULE)
    if hub is not None:
        add_entry(hub)
