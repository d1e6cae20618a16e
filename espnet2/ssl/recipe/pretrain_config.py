"""What the SSL recipe reads from, and sets in, a pretraining config.

The recipe (``egs2/TEMPLATE/ssl2/ssl.sh``) needs three facts from the YAML config it is
given: whether the objective needs frame labels (HuBERT does, wav2vec 2.0 does not),
how many encoder blocks the model has (the default layer for the next HuBERT
iteration), and it writes the config it trains with, whose HuBERT ``num_classes``
equals the k of the k-means that made the labels.
"""

import logging
from pathlib import Path
from typing import Any, Dict, List, Union

import yaml

PathLike = Union[str, Path]
LABEL_LOSSES = ("hubert",)  # objectives trained on frame labels (the data name "text")


class RecipeConfigError(ValueError):
    """A pretraining config the recipe cannot use, with the file and the fix."""


def load_config(path: PathLike) -> Dict[str, Any]:
    """The YAML mapping in ``path``.

    Raises:
        RecipeConfigError: When the file is missing or not a YAML mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeConfigError(
            f"{path}: no such config; pass --ssl_config with an existing file "
            "(see conf/tuning/)"
        )
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise RecipeConfigError(f"{path}: not a YAML mapping of options")
    return config


def _losses(config: Dict[str, Any], path: PathLike) -> List[Dict[str, Any]]:
    """The ``loss:`` list, checked to hold ``{name: ..., conf: ...}`` entries."""
    losses = config.get("loss") or []
    if not isinstance(losses, list) or not all(
        isinstance(x, dict) and "name" in x for x in losses
    ):
        raise RecipeConfigError(
            f"{path}: 'loss' must be a list of {{name: ..., conf: {{...}}}} entries"
        )
    if not losses:
        raise RecipeConfigError(
            f"{path}: no 'loss' entry; add e.g. '- name: hubert' or '- name: wav2vec2'"
        )
    return losses


def needs_labels(path: PathLike) -> bool:
    """True when a loss of the config at ``path`` trains on frame labels (HuBERT)."""
    return any(x["name"] in LABEL_LOSSES for x in _losses(load_config(path), path))


def num_blocks(path: PathLike) -> int:
    """``encoder_conf.num_blocks`` of the config at ``path``.

    Raises:
        RecipeConfigError: When the config does not give it.
    """
    blocks = (load_config(path).get("encoder_conf") or {}).get("num_blocks")
    if not isinstance(blocks, int) or blocks < 1:
        raise RecipeConfigError(
            f"{path}: encoder_conf.num_blocks is not set; pass --next_target_layer "
            "to choose the layer explicitly"
        )
    return blocks


def write_with_num_classes(path: PathLike, num_classes: int, out: PathLike) -> None:
    """Copy the config at ``path`` to ``out`` with every label loss's ``num_classes``.

    Args:
        path: The pretraining config.
        num_classes: k of the k-means whose labels the model learns.
        out: Where to write the config to train with.

    Raises:
        RecipeConfigError: When the config has no label loss.
    """
    config = load_config(path)
    label_losses = [x for x in _losses(config, path) if x["name"] in LABEL_LOSSES]
    if not label_losses:
        raise RecipeConfigError(f"{path}: no loss trains on labels {LABEL_LOSSES}")
    for loss in label_losses:
        conf = loss.setdefault("conf", {}) or {}
        loss["conf"] = conf
        if conf.get("num_classes") not in (None, num_classes):
            logging.info(
                f"{path}: {loss['name']} num_classes {conf['num_classes']} -> "
                f"{num_classes} (the k-means k)"
            )
        conf["num_classes"] = num_classes
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    Path(out).write_text(text, encoding="utf-8")
