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


def load_weights_only(path: Union[str, Path]) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``.

    Raises:
        WeightsOnlyError: For any file torch cannot read that way (pickled objects,
            noise, a truncated zip), with the first line of torch's reason.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err)
        raise WeightsOnlyError(
            f"cannot read '{path}' as weights only ({first})"
        ) from None
