"""Reading model files as weights only (``torch.load(weights_only=True)``).

A downloaded checkpoint cannot run code while it is read: torch's weights-only
unpickler accepts tensors and plain containers and refuses any other Python object.
Callers turn ``WeightsOnlyError`` into their own error with their own fix.
"""

from pathlib import Path
from typing import Any, Union

import torch


class WeightsOnlyError(ValueError):
    """A file that does not load as weights only; the message names it and why."""


def load_weights_only(path: Union[str, Path], mmap: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; with ``mmap``
    the tensors are memory-mapped from the file instead of read.

    Raises:
        WeightsOnlyError: For any file torch cannot read that way (pickled objects,
            noise, a truncated zip), with the first line of torch's reason.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # pickle, zip and torch errors alike
        lines = str(err).strip().splitlines() or [type(err).__name__]
        # torch's own reason follows a generic preamble of several lines
        first = next((x.strip() for x in lines if "Unpickler error" in x), lines[0])
        raise WeightsOnlyError(
            f"cannot read '{path}' as weights only ({first})"
        ) from None
