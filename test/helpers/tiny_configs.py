"""Tiny SSL model configs for tests: the recipe's tiny configs at test sizes.

One base for every test that builds an SSL model: the embedded recipe's own configs,
``egs2/mini_synth/ssl2/conf/tuning/train_ssl_<objective>_tiny.yaml`` (what
``./run.sh`` trains), shrunk to test sizes (16 CNN channels, D = 32, 4 heads, 2
blocks, positional convolution of 8 frames) so that a forward and backward take
milliseconds on a CPU. A test states only what it changes, as ``sections``.

On ``sys.path`` through ``pytest.ini`` (``pythonpath = . test/helpers``): ``test/`` is
not a package, and a conftest's fixtures cannot serve module-level constants.
"""

import copy
from pathlib import Path
from typing import Any, Dict

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE_CONF = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
MODEL_SECTIONS = (
    "frontend",
    "frontend_conf",
    "specaug",
    "normalize",
    "normalize_conf",
    "preencoder",
    "preencoder_conf",
    "encoder",
    "encoder_conf",
    "model_conf",
    "loss",
    "util",
)
CNN_CHANNELS = 16
WIDTH = 32  # D: preencoder and encoder output size
TEST_SIZES = {
    "preencoder_conf": {"output_size": WIDTH},
    "encoder_conf": {
        "output_size": WIDTH,
        "attention_heads": 4,
        "linear_units": 64,
        "num_blocks": 2,
        "pos_conv_kernel_size": 8,
        "pos_conv_groups": 4,
    },
}


def recipe_config(objective: str) -> Dict[str, Any]:
    """The recipe's tiny training config of ``objective`` (wav2vec2, hubert, ...)."""
    path = RECIPE_CONF / f"train_ssl_{objective}_tiny.yaml"
    with path.open() as f:
        return yaml.safe_load(f)


def merged(base: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in: dicts key by key, anything
    else (lists included) replaced whole."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_config(objective: str, **sections: Any) -> Dict[str, Any]:
    """The model sections of the recipe's tiny ``objective`` config at test sizes.

    Args:
        objective: ``wav2vec2``, ``hubert`` or ``reconstruction`` (a file
            ``train_ssl_<objective>_tiny.yaml`` of the recipe).
        sections: overrides by section (``encoder_conf={"num_blocks": 1}``,
            ``loss=[...]``), merged as :func:`merged` does.

    Returns:
        ``frontend`` ... ``util`` (the sections present in the recipe's file), ready
        for ``SSLTask``'s argument namespace or a ``config.yaml``.
    """
    recipe = recipe_config(objective)
    config = {key: recipe[key] for key in MODEL_SECTIONS if key in recipe}
    shapes = config["frontend_conf"].get("shapes")
    if shapes is not None:  # the CNN's kernels and strides, fewer channels
        config["frontend_conf"]["shapes"] = [[CNN_CHANNELS, k, s] for _, k, s in shapes]
    return merged(merged(config, TEST_SIZES), sections)
