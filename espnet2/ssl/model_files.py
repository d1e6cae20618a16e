"""Reading model files as weights only (``torch.load(weights_only=True)``).

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
"""

import functools
import io
import pickletools
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from pathlib import Path
from typing import Any, Collection, Iterable, List, Sequence, Set, Tuple, Union

import torch

PathLike = Union[str, Path]
# modules whose globals torch's weights-only unpickler judges itself (tensors, storages,
# dtypes, OrderedDict, ...): it refuses the ones it does not allow
TORCH_JUDGED = ("torch.", "collections.OrderedDict", "collections.Counter")
TORCH_JUDGED += ("_codecs.encode", "builtins.bytearray", "builtins.set")
TORCH_JUDGED += ("builtins.complex",)
LEGACY_PICKLES = 4  # legacy torch.save: magic number, protocol, sys info, the object


class WeightsOnlyError(ValueError):
    """A file that does not load as weights only; the message names it and why."""


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
