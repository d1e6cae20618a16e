"""Feature dumpers for HuBERT targets, chosen by name.

``get_dumper("mfcc")``, ``get_dumper("ssl", model_file=..., layer=6)`` or
``get_dumper("asr", model_file=...)`` build a :class:`FeatureDumper`; see
``espnet2/ssl/targets/dump.py`` for writing their features to Kaldi archives.
"""

import inspect
from pkgutil import extend_path
from typing import Callable, Dict

from espnet2.ssl.targets.dumpers.asr_model import ASRDumper, build_asr_dumper
from espnet2.ssl.targets.dumpers.base import (
    FeatureDumper,
    FeatureDumpError,
    resolve_device,
)
from espnet2.ssl.targets.dumpers.mfcc import MfccDumper, mfcc_with_deltas
from espnet2.ssl.targets.dumpers.ssl_model import SSLDumper, build_ssl_dumper

__path__ = extend_path(__path__, __name__)  # overlay package, as every package here

DUMPERS: Dict[str, Callable[..., FeatureDumper]] = {
    "mfcc": MfccDumper,
    "ssl": build_ssl_dumper,
    "asr": build_asr_dumper,
}


def get_dumper(name: str, **kwargs) -> FeatureDumper:
    """Builds the dumper registered as ``name`` with its options.

    Args:
        name: ``mfcc``, ``ssl`` or ``asr``.
        **kwargs: The options of that dumper: ``mfcc``: ``num_ceps``,
            ``delta_window``, ``device``; ``ssl`` and ``asr``: ``config_file``,
            ``model_file`` or ``packed_model``, ``layer``, ``device``.

    Returns:
        The dumper.

    Raises:
        FeatureDumpError: An unknown name or an option the dumper does not take.
    """
    if name not in DUMPERS:
        raise FeatureDumpError(
            f"unknown feature type '{name}'. Fix: use one of {', '.join(DUMPERS)}."
        )
    factory = DUMPERS[name]
    accepted = inspect.signature(factory).parameters
    unknown = sorted(key for key in kwargs if key not in accepted)
    if unknown:
        raise FeatureDumpError(
            f"the {name} features take no option {', '.join(unknown)}. Fix: drop "
            f"it; {name} takes {', '.join(accepted)}."
        )
    return factory(**kwargs)


__all__ = [
    "ASRDumper",
    "DUMPERS",
    "FeatureDumpError",
    "FeatureDumper",
    "MfccDumper",
    "SSLDumper",
    "get_dumper",
    "mfcc_with_deltas",
    "resolve_device",
]
