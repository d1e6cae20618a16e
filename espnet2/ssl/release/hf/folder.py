"""Hugging Face folders of our SSL models, and our models of Hugging Face folders.

``espnet2.bin.ssl_hf_convert`` (both directions) and ``espnet2.bin.ssl_pack release``
(the transformers export beside a release) write and read folders here. The class on
the Hugging Face side follows our config's objective (``loss[0].name``) and the
folder's ``config.json`` ``model_type``: ``Wav2Vec2ForPreTraining`` for wav2vec 2.0,
``HubertModel`` (plus our head in ``espnet_ssl_head.safetensors``) for HuBERT. The
weights are copied bitwise; :mod:`espnet2.ssl.release.hf.keys` maps the names.
"""

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import yaml
from transformers import Wav2Vec2ForPreTraining

from espnet2.ssl.model_files import load_weights_only, unpack_model
from espnet2.ssl.release.conversion import write_espnet_folder
from espnet2.ssl.release.hf import hubert as hf_hubert
from espnet2.ssl.release.hf import wav2vec2 as hf_wav2vec2
from espnet2.ssl.release.hf.wav2vec2 import NotExpressibleError, build_espnet_model

# our loss[0].name, and HF's config.json model_type -> the converter
CONVERTERS = {"wav2vec2": hf_wav2vec2, "hubert": hf_hubert}
HF_CLASSES = {"wav2vec2": "Wav2Vec2ForPreTraining", "hubert": "HubertModel"}


def _read_config(config_file: str) -> Dict[str, Any]:
    """Our training config (``config.yaml``) as a dict."""
    with open(config_file, encoding="utf-8") as f:
        train_config = yaml.safe_load(f)
    if not isinstance(train_config, dict):
        raise ValueError(f"{config_file} is not a training config.yaml (a mapping)")
    return train_config


def _converter(train_config: Dict[str, Any]):
    """The converter module of the config's objective (``loss[0].name``)."""
    losses = train_config.get("loss") or [{}]
    name = losses[0].get("name") if isinstance(losses[0], dict) else None
    if name not in CONVERTERS:
        raise NotExpressibleError(
            f"loss[0].name={name!r} cannot be expressed by transformers: its "
            f"pretraining classes here are {HF_CLASSES}"
        )
    return CONVERTERS[name]


def export_to_hf(train_config: Dict[str, Any], model_file: str, out_dir: str) -> None:
    """Write the HF folder of our model (its class picked by the objective).

    Args:
        train_config: Our training config.
        model_file: Our model's state dict (``*.pth``, read as weights only).
        out_dir: Output folder (``config.json`` + ``model.safetensors``, and for
            HuBERT ``espnet_ssl_head.safetensors``).

    Raises:
        NotExpressibleError: For a model HF cannot express (decided from the
            config alone, before ``model_file`` is read).
    """
    converter = _converter(train_config)
    converter.hf_config_from_espnet(train_config)  # refuses what HF cannot express
    state = load_weights_only(model_file)
    converter.espnet_to_hf_state_dict(state)  # names the first unknown/missing key
    model = build_espnet_model(train_config)
    model.load_state_dict(state, strict=True)  # shapes must fit the config
    if converter is hf_hubert:
        hf_hubert.save_folder(*hf_hubert.to_hf(model, train_config), out_dir)
    else:
        hf_wav2vec2.to_hf(model, train_config).save_pretrained(out_dir)


def espnet_to_hf_folder(config_file: str, model_file: str, out_dir: str) -> None:
    """Write the HF folder of our model files.

    Args:
        config_file: Our training ``config.yaml``.
        model_file: Our model's state dict (``*.pth``, read as weights only).
        out_dir: Output folder.
    """
    export_to_hf(_read_config(config_file), model_file, out_dir)


def packed_to_hf_folder(packed_model: str, out_dir: str) -> None:
    """Write the HF folder of the model in an ``espnet2.bin.pack ssl`` archive.

    Args:
        packed_model: The archive (``ssl_train_config`` + ``ssl_model_file``).
        out_dir: Output folder.
    """
    with tempfile.TemporaryDirectory(prefix="ssl_hf_convert_") as workdir:
        config_file, model_file = unpack_model(
            packed_model, "ssl_train_config", "ssl_model_file", workdir
        )
        export_to_hf(_read_config(str(config_file)), str(model_file), out_dir)


def _model_type(hf_dir: str) -> str:
    """``model_type`` of an HF folder's ``config.json``."""
    config_file = Path(hf_dir) / "config.json"
    if not config_file.is_file():
        raise OSError(
            f"{config_file} does not exist. Fix: pass a folder written by "
            "save_pretrained (e.g. by ssl_hf_convert --to_hf)."
        )
    with config_file.open(encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    if model_type not in CONVERTERS:
        raise NotExpressibleError(
            f"Hugging Face model_type={model_type!r} ({config_file}) has no ESPnet "
            f"form here: the converted types are {sorted(CONVERTERS)}"
        )
    return model_type


def hf_folder_to_espnet(
    hf_dir: str,
    out_dir: str,
    num_classes: Optional[int] = None,
    final_dim: Optional[int] = None,
    seed: int = 0,
) -> None:
    """Write ``config.yaml`` and ``model.pth`` of an HF wav2vec 2.0 / HuBERT folder.

    Args:
        hf_dir: A ``save_pretrained`` folder, read offline.
        out_dir: Output folder, loadable with ``SSLTask.build_model_from_file``.
        num_classes: HuBERT without our head: the new head's classes.
        final_dim: HuBERT, new head: its projection size.
        seed: HuBERT, new head: the seed of its initialisation.
    """
    if _model_type(hf_dir) == "hubert":
        hf_model, head = hf_hubert.load_folder(hf_dir)
        model, train_config = hf_hubert.from_hf(
            hf_model, head, num_classes, final_dim, seed
        )
    else:
        hf_model = Wav2Vec2ForPreTraining.from_pretrained(hf_dir, local_files_only=True)
        model, train_config = hf_wav2vec2.from_hf(hf_model)
    write_espnet_folder(model, train_config, out_dir)
