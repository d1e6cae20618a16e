"""The SSL model an ASR fine-tuning starts from, as the recipe's stage 7 sets it up.

ESPnet's ``frontend: espnet_ssl`` (``espnet2/asr/frontend/espnet_ssl.py``) loads the
model named by ``frontend_conf.frontend_conf.path_or_url``: a ``.pt``/``.pth`` file next
to its ``config.yaml``, or anything else through ``espnet_model_zoo``'s
``ModelDownloader`` (a zoo name, a URL, or a packed ``.zip`` on disk). This module

- writes the ASR config to train with, ``path_or_url`` set to the model;
- unpacks a packed ``.zip`` once, next to that config, and points ``path_or_url`` at
  the unpacked ``.pth`` instead of the zip;
- writes an untrained model of a pretrained one's architecture (the "from scratch"
  baseline fine-tunes the same ASR config from it).

Why not the zip itself: ``ModelDownloader`` extracts a local zip into its cache on
every load (ESPnet 202511's ``get_dict_from_cache`` looks for the extracted files one
directory above where ``unpack`` puts them, so the cache never hits). Two loaders at
once (the decoding jobs of stage 8, the ranks of a multi-GPU fine-tuning) then read a
checkpoint that another is rewriting: "PytorchStreamReader failed reading zip
archive: failed finding central directory". Its cache is also keyed by the zip's path,
so a repacked zip could be read from a stale copy.
"""

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, Union

import yaml

from espnet2.ssl.recipe.pretrain_config import RecipeConfigError, load_config

# torch and espnet2.ssl.model_files (which imports torch) are imported where a model
# is read or written: setting the path of a .pth in a config needs neither

PathLike = Union[str, Path]
UNTRAINED_MODEL = "untrained.pth"
UNPACKED_DIR = "ssl_model"  # next to the ASR train config: the unpacked SSL model


def _frontend_model_conf(config: Dict[str, Any], path: PathLike) -> Dict[str, Any]:
    """``frontend_conf.frontend_conf`` of an ASR config, checked to be espnet_ssl."""
    if config.get("frontend") != "espnet_ssl":
        raise RecipeConfigError(
            f"{path}: frontend is {config.get('frontend')!r}; fine-tuning an SSL model "
            "needs 'frontend: espnet_ssl' (see conf/tuning/train_asr_ctc_*.yaml)"
        )
    outer = config.setdefault("frontend_conf", {}) or {}
    config["frontend_conf"] = outer
    inner = outer.setdefault("frontend_conf", {}) or {}
    outer["frontend_conf"] = inner
    return inner


def _unpack_ssl_zip(zip_path: PathLike, out_dir: PathLike) -> Path:
    """Unpacks a packed SSL model (``espnet2.bin.pack ssl``) into ``out_dir``.

    ``out_dir`` is replaced. Returns the unpacked model file, next to its
    ``config.yaml`` (what ``espnet_ssl``'s ``path_or_url`` loads without the zoo).
    """
    from espnet2.ssl.model_files import ModelFileError, unpack_model

    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        _, model = unpack_model(zip_path, "ssl_train_config", "ssl_model_file", out_dir)
    except ModelFileError as err:
        raise RecipeConfigError(f"{err} (recipe stage 6 packs it)") from None
    if not (model.parent / "config.yaml").is_file():
        raise RecipeConfigError(f"{zip_path}: its model has no config.yaml beside it")
    check_weights_only(model)
    logging.info(f"{zip_path}: unpacked into {out_dir}")
    return model


def check_weights_only(model_file: PathLike) -> None:
    """Refuses a model file that is not a state dict of tensors.

    Read with ``torch.load(weights_only=True)``: a downloaded zip's checkpoint cannot
    run code while it is read, and a file holding anything else is refused here,
    naming it, before training starts.
    """
    import torch

    from espnet2.ssl.model_files import WeightsOnlyError, load_weights_only

    try:
        state = load_weights_only(model_file)
    except WeightsOnlyError as err:
        raise RecipeConfigError(
            f"{err}: not a checkpoint that loads as weights only. Use a model "
            "packed by espnet2.bin.pack ssl from a trainer checkpoint."
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise RecipeConfigError(
            f"{model_file}: not a model state dict (a dict of tensors). Use a model "
            "packed by espnet2.bin.pack ssl from a trainer checkpoint."
        )


def write_with_frontend_model(path: PathLike, model: PathLike, out: PathLike) -> None:
    """Copy the ASR config at ``path`` to ``out`` with ``path_or_url`` = ``model``.

    A packed zip is first unpacked into ``<dir of out>/ssl_model/`` and
    ``path_or_url`` names the unpacked ``.pth`` (see the module docstring).

    Args:
        path: ASR config with ``frontend: espnet_ssl``.
        model: A packed zip, or a ``.pth`` next to its ``config.yaml``.
        out: Where to write the config to train with.

    Raises:
        RecipeConfigError: When the config does not use the espnet_ssl frontend or
            the model file does not exist.
    """
    config = load_config(path)
    if not Path(model).is_file():
        raise RecipeConfigError(
            f"{model}: no such SSL model; run the recipe's stage 6 (pack) first"
        )
    conf = _frontend_model_conf(config, path)
    if str(model).endswith(".zip"):
        model = _unpack_ssl_zip(model, Path(out).parent / UNPACKED_DIR)
    conf["path_or_url"] = str(model)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    Path(out).write_text(text, encoding="utf-8")


def write_untrained_model(train_config: PathLike, out_dir: PathLike, seed: int) -> Path:
    """Build the model of a trained SSL config with fresh weights and save it.

    Args:
        train_config: The ``config.yaml`` ``espnet2.bin.ssl_train`` wrote, or a
            packed zip, whose config is read once unpacked into
            ``out_dir/ssl_model/`` (so that the baseline does not wait for the
            fine-tuning of the same zip to unpack it).
        out_dir: Receives ``config.yaml`` (a copy) and ``untrained.pth``.
        seed: Seed of the initialisation (the same seed gives the same weights).

    Returns:
        The path of ``untrained.pth``, loadable by the espnet_ssl frontend.
    """
    import torch

    from espnet2.tasks.ssl import SSLTask

    if str(train_config).endswith(".zip"):
        if not Path(train_config).is_file():
            raise RecipeConfigError(
                f"{train_config}: no such SSL model; run the recipe's stage 6 (pack)"
            )
        model_file = _unpack_ssl_zip(train_config, Path(out_dir) / UNPACKED_DIR)
        train_config = model_file.parent / "config.yaml"
    config = load_config(train_config)
    torch.manual_seed(seed)
    model = SSLTask.build_model(argparse.Namespace(**config))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(train_config, out_dir / "config.yaml")
    torch.save(model.state_dict(), out_dir / UNTRAINED_MODEL)
    logging.info(
        f"{out_dir / UNTRAINED_MODEL}: untrained {config.get('encoder')} model, "
        f"{sum(p.numel() for p in model.parameters())} parameters, seed {seed}"
    )
    return out_dir / UNTRAINED_MODEL
