"""Reading fairseq wav2vec 2.0 and HuBERT pretraining checkpoints without fairseq.

A fairseq checkpoint (``torch.save`` of a dict, e.g. the released
``wav2vec_small.pt``, ``wav2vec_vox_new.pt``, ``hubert_base_ls960.pt``,
``hubert_large_ll60k.pt``) holds:

- ``model``: the state dict of ``Wav2Vec2Model`` or ``HubertModel``; read;
- ``cfg`` (hydra era: a plain dict, or before March 2021 an omegaconf ``DictConfig``)
  with ``cfg["model"]`` (``_name``: the model type), ``cfg["task"]`` and
  ``cfg["criterion"]``; or ``args`` (argparse era, 2020: one flat
  ``argparse.Namespace``, the model type in ``arch``); read;
- ``optimizer_history`` (the last entry's ``num_updates`` is read), and
  ``extra_state``, ``task_state`` (HuBERT: fairseq ``Dictionary`` objects of the
  labels), ``last_optimizer_state``, ``criterion``: ignored.

Safe loading: the file is read by torch's weights-only unpickler
(:func:`espnet2.ssl.model_files.load_with_plain_classes`) with ``argparse.Namespace``
allowed as itself and the plain-data classes of :data:`INERT_CLASSES` (fairseq's
``Dictionary``, NumPy scalars and arrays, omegaconf containers and nodes) rebuilt as
inert placeholders that keep their pickled state as data: neither fairseq, omegaconf
nor NumPy code runs, and nothing is imported. Every class the file names is listed
from its pickle opcodes first; a file naming any other class or function (e.g.
``posix.system`` behind a ``__reduce__``) is refused before anything is built. The
tensors are memory-mapped, so an optimizer state is never read into memory. A
placeholder is accepted only where nothing is read: an omegaconf config is unwrapped
from its pickled ``_content``/``_val`` fields, and any other placeholder in the state
dict or in a config field that is read is an error naming it.

The translation to our model is in :mod:`espnet2.ssl.release.fairseq.convert`.

References:
    fairseq @ 3d262bb2 (facebookresearch/fairseq, commit
    3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99): ``fairseq/checkpoint_utils.py``
    (``load_checkpoint_to_cpu``, ``_upgrade_state_dict``), ``fairseq/trainer.py``
    (``Trainer.state_dict``: the saved sections), ``fairseq/models/wav2vec/wav2vec2.py``
    and ``fairseq/models/hubert/hubert.py`` (model names). fairseq issues #5603 and
    #5610 (NumPy and ``Dictionary`` globals refused by ``weights_only``). Read for
    facts only; no code copied.
"""

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import torch

from espnet2.ssl.model_files import (
    InertObject,
    UnsafeGlobalsError,
    WeightsOnlyError,
    load_with_plain_classes,
)

PathLike = Union[str, Path]
# fairseq model type (cfg.model._name or args.arch) -> our name of it
MODEL_TYPES = {"wav2vec2": "wav2vec2", "hubert": "hubert"}
FINE_TUNED_TYPES = ("wav2vec_ctc", "wav2vec_seq2seq", "hubert_ctc", "hubert_seq2seq")
PLAIN_CLASSES = (argparse.Namespace,)  # old ``args``; attributes only
# Plain-data classes of fairseq training state, rebuilt as inert placeholders; an
# entry ending in "." is a module prefix.
INERT_CLASSES = (
    "fairseq.data.dictionary.Dictionary",  # HuBERT task_state["dictionaries"]
    "numpy.core.multiarray.scalar",  # meters and best scores in extra_state
    "numpy._core.multiarray.scalar",  # the same with NumPy 2
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy.dtypes.",
    "omegaconf.",  # cfg saved as a DictConfig (containers, nodes, metadata)
    "typing.Any",  # in omegaconf metadata, as are the builtins below
    "collections.defaultdict",
    "builtins.dict",
    "builtins.list",
    "builtins.tuple",
    "builtins.int",
    "builtins.float",
    "builtins.str",
    "builtins.bool",
    "builtins.object",
)
CONFIG_SECTIONS = ("model", "task", "criterion")
OMEGACONF_CONTAINERS = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.")
STRIP_FIX = (
    "If you trust the file, keep only its weights and config in an environment "
    "with fairseq: python -c \"import torch; c = torch.load('IN.pt', "
    "weights_only=False); torch.save({'model': c['model'], 'cfg': c.get('cfg'), "
    "'args': c.get('args')}, 'OUT.pt')\", then import OUT.pt."
)


class FairseqCheckpointError(ValueError):
    """A file that is not a fairseq checkpoint we can read: names the file and fix."""


@dataclasses.dataclass
class FairseqCheckpoint:
    """What a fairseq pretraining checkpoint holds that the import reads.

    Attributes:
        path: The file.
        model_type: ``"wav2vec2"`` or ``"hubert"``.
        model_cfg: The model's config fields (plain values; for ``args``
            checkpoints every field of the flat namespace).
        task_cfg: The task's config fields (e.g. ``normalize``, ``sample_rate``).
        criterion_cfg: The criterion's config fields (e.g. ``loss_weights``).
        state: The model's state dict, fairseq key -> tensor (memory-mapped).
        num_updates: Optimizer updates of the training (0 when not recorded).
    """

    path: str
    model_type: str
    model_cfg: Dict[str, Any]
    task_cfg: Dict[str, Any]
    criterion_cfg: Dict[str, Any]
    state: Dict[str, torch.Tensor]
    num_updates: int = 0


def fail(path: PathLike, problem: str, fix: str) -> FairseqCheckpointError:
    """The error for ``path``: ``'<path>': <problem>. Fix: <fix>``."""
    return FairseqCheckpointError(f"'{path}': {problem}. Fix: {fix}")


def _load(path: PathLike) -> Any:
    """The unpickled file (see the module docstring), errors naming the file."""
    if not Path(path).is_file():
        raise fail(path, "no such file", "pass the path of a fairseq .pt checkpoint")
    try:
        return load_with_plain_classes(path, PLAIN_CLASSES, INERT_CLASSES, mmap=True)
    except UnsafeGlobalsError as err:
        raise fail(
            path,
            f"the file names {', '.join(err.names)}, neither tensors nor plain data "
            "(loading it would run that code; nothing was loaded)",
            STRIP_FIX,
        ) from None
    except WeightsOnlyError as err:
        raise fail(
            path, f"not a torch checkpoint ({err})", "pass a fairseq .pt file"
        ) from None


def plain(value: Any) -> Any:
    """``value`` with containers copied, ``argparse.Namespace`` as dicts and omegaconf
    placeholders unwrapped (their pickled ``_content`` / ``_val``); any other
    :class:`InertObject` is left as it is."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, argparse.Namespace):
        return plain(vars(value))
    if isinstance(value, InertObject) and isinstance(value.state, dict):
        if value.source.startswith(OMEGACONF_CONTAINERS):
            return plain(value.state.get("_content"))
        if value.source.startswith("omegaconf.nodes.") and "_val" in value.state:
            return plain(value.state["_val"])
    return value


def _sections(raw: Mapping[str, Any], path: PathLike) -> Tuple[Dict, Dict, Dict]:
    """(model, task, criterion) config fields of ``cfg``, else of the flat ``args``."""
    cfg = plain(raw.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        sections = [cfg.get(name) or {} for name in CONFIG_SECTIONS]
        if all(isinstance(section, dict) for section in sections):
            return tuple(sections)
    args = plain(raw.get("args"))
    if isinstance(args, dict):
        return args, args, args
    raise fail(
        path,
        "neither a 'cfg' with a 'model' section nor an 'args' namespace (the config "
        f"is {type(raw.get('cfg')).__name__}, args {type(raw.get('args')).__name__})",
        "pass a checkpoint written by fairseq-train or fairseq-hydra-train",
    )


def _model_type(model_cfg: Mapping[str, Any], path: PathLike) -> str:
    """Our name of the checkpoint's model type (``_name``, else ``arch``)."""
    name = model_cfg.get("_name", model_cfg.get("arch"))
    if isinstance(name, str) and name in MODEL_TYPES:
        return MODEL_TYPES[name]
    hint = "a pretraining checkpoint (wav2vec2 or hubert)"
    if name in FINE_TUNED_TYPES:
        hint = "the pretraining checkpoint it was fine-tuned from (model.w2v_path)"
    raise fail(path, f"fairseq model type {name!r} is not converted", f"pass {hint}")


def _state_dict(model: Any, path: PathLike) -> Dict[str, torch.Tensor]:
    """``model`` as a dict of tensors; anything else is an error naming the key."""
    if not isinstance(model, Mapping) or not model:
        raise fail(
            path,
            f"'model' is {type(model).__name__}, not a state dict",
            "pass a checkpoint whose 'model' holds the network's tensors",
        )
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise fail(
                path,
                f"model[{key!r}] is {value!r}, not a tensor",
                "pass a checkpoint whose 'model' holds only tensors",
            )
    return dict(model)


def _num_updates(raw: Mapping[str, Any]) -> int:
    """``optimizer_history[-1]["num_updates"]`` when it is an int, else 0."""
    history = raw.get("optimizer_history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        value = history[-1].get("num_updates")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def read_fairseq_checkpoint(path: PathLike) -> FairseqCheckpoint:
    """Read a fairseq ``Wav2Vec2Model`` / ``HubertModel`` checkpoint safely.

    Args:
        path: The ``.pt`` file.

    Returns:
        Its model type, config sections, state dict and update count.

    Raises:
        FairseqCheckpointError: Naming the file, the problem and the fix: not a
            torch file, a class that is not plain data, not a dict, no ``model``,
            no config, an unknown model type, a value that is not a tensor.
    """
    raw = _load(path)
    if not isinstance(raw, Mapping):
        raise fail(
            path,
            f"holds a {type(raw).__name__}, not a checkpoint dict",
            "pass a fairseq .pt checkpoint (a dict with 'model' and 'cfg' or 'args')",
        )
    if "model" not in raw:
        raise fail(
            path,
            f"has no 'model' entry (its entries: {sorted(map(str, raw))})",
            "pass a fairseq checkpoint, which keeps the weights in 'model'",
        )
    model_cfg, task_cfg, criterion_cfg = _sections(raw, path)
    model_type = _model_type(model_cfg, path)
    checkpoint = FairseqCheckpoint(
        path=str(path),
        model_type=model_type,
        model_cfg=model_cfg,
        task_cfg=task_cfg,
        criterion_cfg=criterion_cfg,
        state=_state_dict(raw["model"], path),
        num_updates=_num_updates(raw),
    )
    logging.info(
        f"{path}: fairseq {model_type}, {len(checkpoint.state)} tensors, "
        f"{checkpoint.num_updates} updates"
    )
    return checkpoint


def config_value(
    section: Mapping[str, Any], name: str, default: Any, path: PathLike
) -> Any:
    """A config field read from ``section``; ``default`` when absent (logged).

    Raises:
        FairseqCheckpointError: If the value is a placeholder (an object of a class
            that is not plain data).
    """
    if name not in section:
        logging.info(
            f"{path}: config field {name} absent: fairseq's default {default!r}"
        )
        return default
    value = section[name]
    if isinstance(value, InertObject):
        raise fail(
            path,
            f"config field {name} is an object of {value.source}, not a plain value",
            "save the checkpoint's config as plain values (fairseq does since 2021)",
        )
    return value
