"""Reading model files: weights only, ESPnet models from config + weights, archives.

Every tool that reads a model file does it here: :func:`load_weights_only` for a
state dict, :func:`load_model_files` (or :func:`load_task_model`) for an ESPnet model
trained by ``espnet2.bin.ssl_train`` or ``espnet2.bin.asr_train``, and
:func:`unpack_model` for an ``espnet2.bin.pack`` archive.

A downloaded checkpoint cannot run code while it is read: torch's weights-only
unpickler accepts tensors and plain containers and refuses any other Python object.
Callers turn ``WeightsOnlyError`` into their own error with their own fix.

Checkpoints of other toolkits (fairseq) also hold a few objects of plain-data classes
beside their tensors (``argparse.Namespace``, dictionaries, NumPy scalars, omegaconf
configs). :func:`load_with_plain_classes` reads them with the same weights-only
unpickler: a caller names the classes that are rebuilt as themselves (plain data,
e.g. ``argparse.Namespace``) and those rebuilt as an :class:`InertObject`, which keeps
the pickled arguments and state as data and never imports or runs the class. Every
class a file names is read from its pickle opcodes first (``pickletools``, nothing is
executed); a file naming any other class is refused before anything is built.

ESPnet models are a ``config.yaml`` plus a ``.pth`` state dict, or both packed into an
archive by ``espnet2.bin.pack``. ``AbsTask.build_model_from_file`` loads the weights
with ``strict=False``, so a config that does not belong to the model file silently
leaves random weights in place; :func:`load_task_model` loads the weights separately
and every missing weight of the modules that compute features is an error
(:class:`ModelFileError`, naming the file and the fix).
"""

import functools
import hashlib
import io
import logging
import pickletools
import tempfile
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from pathlib import Path
from typing import (
    Any,
    Collection,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    Union,
)

import torch

PathLike = Union[str, Path]
# modules whose globals torch's weights-only unpickler judges itself (tensors, storages,
# dtypes, OrderedDict, ...): it refuses the ones it does not allow
TORCH_JUDGED = ("torch.", "collections.OrderedDict", "collections.Counter")
TORCH_JUDGED += ("_codecs.encode", "builtins.bytearray", "builtins.set")
TORCH_JUDGED += ("builtins.complex",)
LEGACY_PICKLES = 4  # legacy torch.save: magic number, protocol, sys info, the object
# The modules that compute features; the losses, CTC and decoder do not.
FEATURE_MODULES = (
    "frontend.",
    "normalize.",
    "preencoder.",
    "encoder.",
    "postencoder.",
    "feature_norm.",
)


class WeightsOnlyError(ValueError):
    """A file that does not load as weights only; the message names it and why."""


class ModelFileError(ValueError):
    """An ESPnet model file, config or archive that cannot be loaded.

    The message names the file, what is wrong with it and the fix.
    """


class UnsafeGlobalsError(WeightsOnlyError):
    """A file naming classes or functions that are neither tensors nor plain data.

    Attributes:
        names: The refused globals, ``module.name``, sorted.
    """

    def __init__(self, message: str, names: Sequence[str]):
        """Keep the message and the refused names."""
        super().__init__(message)
        self.names = list(names)


class InertObject:
    """Stand-in for an object of a class a file names but that is never imported.

    Built by the unpickler in place of the real class: its constructor arguments
    (REDUCE / NEWOBJ) and its state (BUILD) are kept as data; no method of the real
    class runs. :func:`inert_class` makes one subclass per class name.

    Attributes:
        source: ``module.name`` of the class the file names.
        args: The positional arguments the pickle passed.
        state: The pickled state (usually the instance ``__dict__``), or None.
    """

    source = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertObject":
        """Keep the arguments; build nothing else."""
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: ``__new__`` kept the arguments."""

    def __setstate__(self, state: Any) -> None:
        """Keep the pickled state as data."""
        self.state = state

    def __repr__(self) -> str:
        return f"InertObject({self.source})"


@functools.lru_cache(maxsize=None)
def inert_class(name: str) -> type:
    """The :class:`InertObject` subclass that stands for the global ``name``."""
    return type(f"Inert[{name}]", (InertObject,), {"source": name})


def _first_reason(err: Exception) -> str:
    """The line of torch's error message that says why, else its first line."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    # torch's own reason follows a generic preamble of several lines
    return next((x.strip() for x in lines if "Unpickler error" in x), lines[0])


def _torch_load(path: PathLike, mmap: bool) -> Any:
    """``torch.load`` as weights only, every failure as a WeightsOnlyError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # pickle, zip and torch errors alike
        raise WeightsOnlyError(
            f"cannot read '{path}' as weights only ({_first_reason(err)})"
        ) from None


def load_weights_only(path: PathLike, mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; with ``mmap``
    the tensors are memory-mapped from the file instead of read.

    Raises:
        WeightsOnlyError: For any file torch cannot read that way (pickled objects,
            noise, a truncated zip), with the first line of torch's reason.
    """
    return _torch_load(path, mmap)


def _python3_name(arg: str) -> str:
    """``module.name`` of a GLOBAL argument ``"module name"``, with protocol 2's
    Python 2 names (``__builtin__.long``) mapped as the unpickler maps them."""
    module, name = arg.split(" ", 1)
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    else:
        module = IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"


def _globals_in(stream: io.BufferedIOBase) -> Set[str]:
    """``module.name`` of the GLOBAL opcodes of the pickle at the stream's position
    (read up to its STOP; protocol 2, as ``torch.save`` writes)."""
    return {
        _python3_name(arg)
        for opcode, arg, _ in pickletools.genops(stream)
        if opcode.name == "GLOBAL"
    }


def pickle_globals(path: PathLike) -> Set[str]:
    """Every global a ``torch.save`` file names, read without executing anything.

    Args:
        path: A zip checkpoint (torch >= 1.6, its ``<archive>/data.pkl``) or a legacy
            one (consecutive pickles).

    Returns:
        ``module.name`` of each GLOBAL opcode.

    Raises:
        WeightsOnlyError: For a file that is not a ``torch.save`` pickle.
    """
    try:
        with open(path, "rb") as f:
            if not zipfile.is_zipfile(f):
                f.seek(0)
                return set().union(*(_globals_in(f) for _ in range(LEGACY_PICKLES)))
            with zipfile.ZipFile(f) as archive:
                names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
                if len(names) != 1:
                    raise ValueError(f"{len(names)} data.pkl records")
                return _globals_in(io.BytesIO(archive.read(names[0])))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise WeightsOnlyError(
            f"cannot read '{path}' as a torch.save file ({type(err).__name__}: {err})"
        ) from None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    """``name`` equals a pattern, or starts with a pattern ending in ``.``."""
    return any(name == p or (p.endswith(".") and name.startswith(p)) for p in patterns)


def _sort_globals(
    names: Iterable[str], plain: Collection[str], inert: Collection[str]
) -> Tuple[List[str], List[str]]:
    """(inert globals, refused globals) among ``names``, each sorted."""
    inert_names, refused = [], []
    for name in sorted(names):
        if _matches(name, inert):
            inert_names.append(name)
        elif name not in plain and not _matches(name, TORCH_JUDGED):
            refused.append(name)
    return inert_names, refused


def load_with_plain_classes(
    path: PathLike,
    plain_classes: Sequence[type] = (),
    inert_classes: Collection[str] = (),
    mmap: bool = False,
) -> Any:
    """Read a checkpoint with torch's weights-only unpickler and a few more classes.

    Args:
        path: A ``torch.save`` file (zip or legacy format).
        plain_classes: Classes rebuilt as themselves, whose pickled form is plain
            data (e.g. ``argparse.Namespace``: attributes only).
        inert_classes: Globals rebuilt as :class:`InertObject`: exact
            ``module.name`` strings, or module prefixes ending in ``.``.
        mmap: Memory-map the tensors instead of reading them (zip files only;
            ignored for legacy ones).

    Returns:
        The unpickled object.

    Raises:
        UnsafeGlobalsError: Naming every other class or function the file names
            (nothing has been built yet).
        WeightsOnlyError: For any other file torch cannot read this way.
    """
    plain = {f"{c.__module__}.{c.__qualname__}": c for c in plain_classes}
    inert_names, refused = _sort_globals(pickle_globals(path), plain, inert_classes)
    if refused:
        raise UnsafeGlobalsError(
            f"'{path}' names {', '.join(refused)}, which are neither tensors nor "
            "plain data: reading it would import and run that code, so it was not "
            "read",
            refused,
        )
    with open(path, "rb") as f:
        mmap = mmap and zipfile.is_zipfile(f)
    safe = [*plain.values(), *((inert_class(n), n) for n in inert_names)]
    with torch.serialization.safe_globals(safe):
        return _torch_load(path, mmap)


# ------------------------------------------------------------ ESPnet models


def file_sha256(path: PathLike, block_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in blocks (a model file can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_exists(path: Path, what: str, fix: str) -> None:
    if not path.is_file():
        raise ModelFileError(f"{what} '{path}' does not exist. Fix: {fix}")


def _load_state(model: torch.nn.Module, model_file: Path, config_file: Path) -> None:
    """Loads ``model_file`` into ``model``; every feature weight must be there."""
    try:  # weights only: a downloaded file cannot run code while it is read
        state = load_weights_only(model_file)
    except WeightsOnlyError as err:
        raise ModelFileError(
            f"model file: {err}. Fix: pass a model .pth written by ESPnet's "
            "trainer (e.g. 3epoch.pth or valid.loss.best.pth); checkpoint.pth "
            "(the trainer state) and files holding other Python objects are "
            "refused."
        ) from None
    if isinstance(state, dict) and "module" in state:  # DeepSpeed checkpoints
        state = state["module"]
    if not isinstance(state, dict) or ("model" in state and "optimizers" in state):
        raise ModelFileError(
            f"'{model_file}' is not a model state dict (checkpoint.pth holds the "
            "trainer state). Fix: pass an epoch or averaged model, e.g. 3epoch.pth "
            "or valid.loss.best.pth."
        )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()  # a title, then one line per problem
        raise ModelFileError(
            f"the weights of '{model_file}' do not fit the model of '{config_file}' "
            f"({lines[min(1, len(lines) - 1)].strip()}). Fix: pass the config.yaml "
            "written next to the model file by the training run."
        ) from None
    missing = [key for key in missing if key.startswith(FEATURE_MODULES)]
    if missing:
        raise ModelFileError(
            f"'{model_file}' lacks {len(missing)} weights of the model that "
            f"'{config_file}' builds (e.g. '{missing[0]}'). Fix: pass the config.yaml "
            "written next to the model file by the training run."
        )
    if unexpected:
        logging.warning(
            f"{model_file}: {len(unexpected)} weights not used by the model "
            f"(e.g. '{unexpected[0]}')"
        )


def load_task_model(
    task: Type, config_file: Optional[PathLike], model_file: PathLike, trainer: str
) -> Tuple[torch.nn.Module, Path]:
    """Builds a model from its training config and loads its weights (on the CPU).

    Args:
        task: The ESPnet task class (``SSLTask``, ``ASRTask``).
        config_file: The ``config.yaml`` of the training run; None reads the one
            next to ``model_file`` (as ESPnet does).
        model_file: The ``.pth`` state dict.
        trainer: The training entry point, for messages (``espnet2.bin.ssl_train``).

    Returns:
        The model in eval mode, and the config file used.

    Raises:
        ModelFileError: Missing files, a config the task cannot build, or weights
            that do not belong to the config.
    """
    model_file = Path(model_file)
    config_file = (
        model_file.parent / "config.yaml" if config_file is None else Path(config_file)
    )
    _check_exists(model_file, "model file", f"pass a .pth written by {trainer}.")
    _check_exists(
        config_file,
        "config file",
        f"pass the config.yaml that {trainer} wrote in the model's directory.",
    )
    try:
        model, _ = task.build_model_from_file(config_file, None, "cpu")
    except FileNotFoundError as err:
        raise ModelFileError(
            f"'{config_file}' refers to a file that does not exist: {err}. Fix: "
            "relative paths in config.yaml (e.g. normalize_conf.stats_file) are "
            "relative to the directory training ran in; run from there, or pack the "
            "model with espnet2.bin.pack --option <file> and pass the archive."
        ) from None
    except Exception as err:
        raise ModelFileError(
            f"{task.__name__} cannot build a model from '{config_file}' "
            f"({type(err).__name__}: {err}). Fix: pass a config.yaml written by "
            f"{trainer}."
        ) from None
    _load_state(model, model_file, config_file)
    return model.eval(), config_file


def unpack_model(
    packed: PathLike, config_key: str, model_key: str, workdir: PathLike
) -> Tuple[Path, Path]:
    """Unpacks an ``espnet2.bin.pack`` archive and finds its config and model.

    Args:
        packed: The archive (``.zip``, ``.tar.gz``, ...).
        config_key: Its ``meta.yaml`` key of the config (``ssl_train_config``).
        model_key: Its key of the model file (``ssl_model_file``).
        workdir: An empty directory to unpack into.

    Returns:
        The unpacked config and model file, both below ``workdir``. ESPnet's
        ``unpack`` rewrites paths in the config that point to packed files (e.g.
        stats files) to ``workdir``.

    Raises:
        ModelFileError: A missing or unreadable archive, or one without the keys.
    """
    from espnet2.main_funcs.pack_funcs import unpack

    packed = Path(packed)
    task = config_key.split("_")[0]
    fix = (
        f"pack the model with `python -m espnet2.bin.pack {task} --{config_key} "
        f"exp/.../config.yaml --{model_key} exp/.../valid.loss.best.pth "
        "--outpath model.zip`."
    )
    _check_exists(packed, "packed model", fix)
    try:
        files = unpack(packed, workdir, use_cache=False)
    except (RuntimeError, ValueError, zipfile.BadZipFile, OSError) as err:
        raise ModelFileError(f"cannot unpack '{packed}' ({err}). Fix: {fix}") from None
    if config_key not in files or model_key not in files:
        raise ModelFileError(
            f"'{packed}' holds no {config_key} and {model_key} (it has: "
            f"{', '.join(sorted(files)) or 'nothing'}). Fix: {fix}"
        )
    return _unpacked(files[config_key], workdir), _unpacked(files[model_key], workdir)


def _unpacked(path: PathLike, workdir: PathLike) -> Path:
    """Where ``unpack`` put a packed file: a file packed under an absolute name is
    extracted below ``workdir`` without its leading "/", but ``unpack`` returns the
    original path."""
    path, workdir = Path(path), Path(workdir)
    return (
        path
        if path.is_relative_to(workdir)
        else workdir / path.relative_to(path.anchor)
    )


def load_model_files(
    task: Type,
    trainer: str,
    config_file: Optional[PathLike] = None,
    model_file: Optional[PathLike] = None,
    packed_model: Optional[PathLike] = None,
) -> Tuple[torch.nn.Module, Dict[str, Optional[str]]]:
    """Loads a model from its config and weights, or from a packed archive.

    Args:
        task: ``SSLTask`` or ``ASRTask``.
        trainer: The training entry point, for messages (``espnet2.bin.ssl_train``).
        config_file: The training ``config.yaml`` (None: next to ``model_file``).
        model_file: The ``.pth`` state dict; give it or ``packed_model``.
        packed_model: An ``espnet2.bin.pack`` archive holding both.

    Returns:
        The model (CPU, eval mode) and where it came from: ``config_file``,
        ``model_file``, ``packed_model`` and ``model_sha256`` (for ``feats.yaml``).
    """
    kind = trainer.rsplit(".", 1)[-1].split("_")[0]  # "ssl" or "asr"
    if (model_file is None) == (packed_model is None):
        raise ModelFileError(
            f"give either a {kind} model file with its config, or a packed {kind} "
            f"model, not {'both' if model_file else 'neither'}. Fix: pass "
            f"--{kind}_model_file [--{kind}_config] or --{kind}_packed_model."
        )
    if packed_model is None:
        model, used_config = load_task_model(task, config_file, model_file, trainer)
        source = {"config_file": str(used_config), "model_file": str(model_file)}
        source.update(packed_model=None, model_sha256=file_sha256(model_file))
        return model, source
    if config_file is not None:
        raise ModelFileError(
            f"a packed model brings its own config. Fix: drop --{kind}_config."
        )
    with tempfile.TemporaryDirectory(prefix="ssl_dump_feats_") as workdir:
        keys = (f"{kind}_train_config", f"{kind}_model_file")
        unpacked_config, unpacked_model = unpack_model(packed_model, *keys, workdir)
        model, _ = load_task_model(task, unpacked_config, unpacked_model, trainer)
        checksum = file_sha256(unpacked_model)
    source = {"config_file": None, "model_file": None}
    source.update(packed_model=str(packed_model), model_sha256=checksum)
    return model, source
