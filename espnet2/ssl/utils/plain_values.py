"""Plain Python values of nested containers, for weights-only checkpoints and YAML.

``torch.load(weights_only=True)`` refuses NumPy scalars and ``yaml.safe_dump`` refuses
NumPy scalars, paths and tuples; a learning rate, a k-means inertia or a sample count
computed with NumPy ends up in such a tree. :func:`plain_tree` rebuilds the tree with
every leaf a plain Python value.
"""

from pathlib import Path
from typing import Any

import numpy as np


def plain_tree(obj: Any, yaml_safe: bool = False) -> Any:
    """``obj`` with every NumPy scalar in its dicts, lists and tuples a Python number.

    Args:
        obj: A value, or dicts, lists and tuples of values, at any depth.
        yaml_safe: Also make it ``yaml.safe_dump``-able: paths become strings, dict
            keys strings, and tuples lists. Off, keys and container types are kept
            (an optimizer state's integer parameter ids, its ``betas`` tuple).

    Returns:
        The rebuilt tree (leaves that are already plain are the same objects).
    """
    if isinstance(obj, dict):
        return {
            (str(key) if yaml_safe else key): plain_tree(value, yaml_safe)
            for key, value in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        values = [plain_tree(value, yaml_safe) for value in obj]
        return values if yaml_safe else type(obj)(values)
    if isinstance(obj, np.generic):
        return obj.item()
    if yaml_safe and isinstance(obj, Path):
        return str(obj)
    return obj
