"""Loading ESPnet checkpoints for feature extraction, and their frame geometry.

The SSL and ASR dumpers read models trained by ``espnet2.bin.ssl_train`` or
``espnet2.bin.asr_train``: a ``config.yaml`` plus a ``.pth`` state dict, or both packed
into an archive by ``espnet2.bin.pack``. ``AbsTask.build_model_from_file`` loads the
weights with ``strict=False``, so a config that does not belong to the model file
silently leaves random weights in place; here the weights are loaded separately and
every missing weight of the modules that compute features is an error.

The frame geometry (hop of the frontend, subsampling of the encoder) gives each
model's frame rate and, for the wav2vec 2.0 CNN, its exact frame count
(``espnet2.ssl.targets.frames.cnn_frame_count``).
"""

import hashlib
import logging
import math
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type, Union

import torch

from espnet2.ssl.model_files import WeightsOnlyError, load_weights_only
from espnet2.ssl.targets.dumpers.base import FeatureDumpError, Hz

PathLike = Union[Path, str]
# The modules that compute features; the losses, CTC and decoder do not.
FEATURE_MODULES = (
    "frontend.",
    "normalize.",
    "preencoder.",
    "encoder.",
    "postencoder.",
    "feature_norm.",
)
# Time subsampling of ESPnet's encoder input layers (espnet/nets/pytorch_backend/
# transformer/subsampling.py), by class name.
SUBSAMPLING_FACTORS = {
    "Conv1dSubsampling1": 1,
    "Conv1dSubsampling2": 2,
    "Conv1dSubsampling3": 3,
    "Conv2dSubsampling": 4,
    "Conv2dSubsampling1": 1,
    "Conv2dSubsampling2": 2,
    "Conv2dSubsampling6": 6,
    "Conv2dSubsampling8": 8,
}


def file_sha256(path: PathLike, block_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in blocks (a model file can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_exists(path: Path, what: str, fix: str) -> None:
    if not path.is_file():
        raise FeatureDumpError(f"{what} '{path}' does not exist. Fix: {fix}")


def _load_state(model: torch.nn.Module, model_file: Path, config_file: Path) -> None:
    """Loads ``model_file`` into ``model``; every feature weight must be there."""
    try:  # weights only: a downloaded file cannot run code while it is read
        state = load_weights_only(model_file)
    except WeightsOnlyError as err:
        raise FeatureDumpError(
            f"model file: {err}. Fix: pass a model .pth written by ESPnet's "
            "trainer (e.g. 3epoch.pth or valid.loss.best.pth); checkpoint.pth "
            "(the trainer state) and files holding other Python objects are "
            "refused."
        ) from None
    if isinstance(state, dict) and "module" in state:  # DeepSpeed checkpoints
        state = state["module"]
    if not isinstance(state, dict) or ("model" in state and "optimizers" in state):
        raise FeatureDumpError(
            f"'{model_file}' is not a model state dict (checkpoint.pth holds the "
            "trainer state). Fix: pass an epoch or averaged model, e.g. 3epoch.pth "
            "or valid.loss.best.pth."
        )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        lines = str(err).strip().splitlines()  # a title, then one line per problem
        raise FeatureDumpError(
            f"the weights of '{model_file}' do not fit the model of '{config_file}' "
            f"({lines[min(1, len(lines) - 1)].strip()}). Fix: pass the config.yaml "
            "written next to the model file by the training run."
        ) from None
    missing = [key for key in missing if key.startswith(FEATURE_MODULES)]
    if missing:
        raise FeatureDumpError(
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
        FeatureDumpError: Missing files, a config the task cannot build, or weights
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
        raise FeatureDumpError(
            f"'{config_file}' refers to a file that does not exist: {err}. Fix: "
            "relative paths in config.yaml (e.g. normalize_conf.stats_file) are "
            "relative to the directory training ran in; run from there, or pack the "
            "model with espnet2.bin.pack --option <file> and pass the archive."
        ) from None
    except Exception as err:
        raise FeatureDumpError(
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
        The unpacked config and model file. ESPnet's ``unpack`` rewrites paths in
        the config that point to packed files (e.g. stats files) to ``workdir``.
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
        raise FeatureDumpError(
            f"cannot unpack '{packed}' ({err}). Fix: {fix}"
        ) from None
    if config_key not in files or model_key not in files:
        raise FeatureDumpError(
            f"'{packed}' holds no {config_key} and {model_key} (it has: "
            f"{', '.join(sorted(files)) or 'nothing'}). Fix: {fix}"
        )
    return Path(files[config_key]), Path(files[model_key])


def conv_shapes(frontend: Optional[torch.nn.Module]) -> Optional[List[Tuple]]:
    """``(channels, kernel, stride)`` per layer of a wav2vec 2.0 CNN frontend.

    Args:
        frontend: A model's frontend.

    Returns:
        The shapes for ``cnn_frame_count``, or None for other frontends.
    """
    from espnet2.asr.frontend.cnn import CNNFrontend

    if not isinstance(frontend, CNNFrontend):
        return None
    channels = frontend.output_size()
    return [(channels, block.kernel_size, block.stride) for block in frontend.layers]


def frontend_hop(frontend: Optional[torch.nn.Module]) -> Optional[int]:
    """Samples per frontend frame: the CNN's total stride or the STFT hop.

    Returns:
        The hop in samples; 1 without a frontend (raw samples); None when unknown.
    """
    if frontend is None:
        return 1
    shapes = conv_shapes(frontend)
    if shapes is not None:
        return math.prod(stride for _, _, stride in shapes)
    hop = getattr(frontend, "hop_length", None)
    return hop if isinstance(hop, int) else None


def encoder_subsampling(encoder: torch.nn.Module) -> Optional[int]:
    """Time subsampling of an ESPnet encoder's input layer (``embed``).

    Returns:
        1 for a linear, positional or absent input layer; the factor of ESPnet's
        ``Conv*Subsampling*`` layers; None for an unknown subsampling layer.
    """
    embed = getattr(encoder, "embed", None)
    if embed is None:
        return 1
    for module in embed.modules():
        name = type(module).__name__
        if "Subsampling" in name:
            return SUBSAMPLING_FACTORS.get(name)
    return 1


def model_frame_rate(
    frontend: Optional[torch.nn.Module], encoder: torch.nn.Module, sample_rate: int
) -> Optional[Hz]:
    """Encoder frames per second, or None when the geometry is unknown.

    Args:
        frontend: The model's frontend.
        encoder: Its encoder.
        sample_rate: Input sample rate in Hz.

    Returns:
        ``sample_rate / (hop * subsampling)``, e.g. 50.0 for the wav2vec 2.0 CNN and
        25.0 for 10 ms fbank frames with ``conv2d`` (4x) subsampling.
    """
    hop, factor = frontend_hop(frontend), encoder_subsampling(encoder)
    if hop is None or factor is None:
        return None
    return sample_rate / (hop * factor)


def receptive_field(shapes: List[Tuple]) -> int:
    """The fewest input samples for which unpadded convolutions give one frame."""
    samples = 1
    for _, kernel, stride in reversed(shapes):
        samples = (samples - 1) * stride + kernel
    return samples


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
        raise FeatureDumpError(
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
        raise FeatureDumpError(
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


def check_layer(layer: Optional[int], num_layers: int, source: str) -> None:
    """Raise unless ``layer`` is None (final output) or in 1..``num_layers``.

    Args:
        layer: The requested encoder layer (1 = output of the first block).
        num_layers: The encoder's blocks.
        source: The model, for the message (its file).
    """
    if layer is not None and not 1 <= layer <= num_layers:
        raise FeatureDumpError(
            f"layer {layer} is out of range: the encoder of '{source}' has "
            f"{num_layers} layers. Fix: use --layer 1..{num_layers} (the output of "
            "that encoder block), or leave --layer out for the encoder's final output."
        )
