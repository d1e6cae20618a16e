"""Convert our HuBERT SSL model to and from transformers' HubertModel.

Our HuBERT (``loss: hubert``) is the wav2vec 2.0 network (CNN, feature projection,
Transformer, mask embedding) with ESPnet's HuBERT head (``HuBERTDecoder``: a final
projection and label embeddings). The network is translated by the tables of
:mod:`espnet2.ssl.release.hf.wav2vec2` and :mod:`espnet2.ssl.release.hf.keys` (the same
as
wav2vec 2.0's) and copied bitwise into ``HubertModel``, which has no head:

- ``config.json`` (``model_type: hubert``) + ``model.safetensors``: what
  ``HubertModel.from_pretrained(DIR)`` reads, with no missing or unexpected key;
- ``espnet_ssl_head.safetensors`` (:data:`HEAD_FILE`, ignored by transformers): the
  head, under the names ``final_proj.*`` and ``label_embeddings.*``;
- the config attribute ``espnet_ssl``: the ESPnet-only options (the head's
  ``num_classes``, ``final_dim``, ``layers``..., the token list, the masking and
  training options) and our buffers (``global_step``, ``num_updates``,
  ``seen_audio.*``).

So ours -> HF -> ours restores the same config and a bitwise identical state dict.
A ``HubertModel`` folder without our head (e.g. one HF converted from fairseq) is
imported with a new head (seeded, :func:`from_hf`), for which the number of classes
must be given. HF's ``feat_proj_layer_norm`` is our ``model_conf.feature_layer_norm``
(HuBERT may omit it); ``conv_pos_batch_norm: true`` and everything the wav2vec 2.0
converter refuses are refused with a
:class:`~espnet2.ssl.release.hf.wav2vec2.NotExpressibleError` naming the option.

References:
    W.-N. Hsu, B. Bolte, Y.-H. H. Tsai, K. Lakhotia, R. Salakhutdinov,
    A. Mohamed, "HuBERT: Self-Supervised Speech Representation Learning by Masked
    Prediction of Hidden Units", IEEE/ACM TASLP 2021, arXiv:2106.07447.
    Hugging Face transformers 4.57.6 (pinned; also read at 5.23.0),
    ``models/hubert/modeling_hubert.py`` and ``configuration_hubert.py`` (read for
    the module names and config fields only; no code copied).
"""

import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from safetensors.torch import load_file, save_file
from transformers import HubertConfig, HubertModel
from typeguard import typechecked

from espnet2.ssl.espnet_model import ESPnetSSLModel
from espnet2.ssl.loss.hubert_weighted import WeightedHuBERTLoss
from espnet2.ssl.release.hf.keys import (
    EXTRAS_ATTRIBUTE,
    HUBERT_HEAD_KEY_RULES,
    _extras,
    espnet_buffers,
    espnet_to_hf_keys,
    hf_to_espnet_keys,
)
from espnet2.ssl.release.hf.wav2vec2 import (
    HFObjective,
    build_espnet_model,
    only_loss,
    translate_config_from_hf,
    translate_config_to_hf,
)

HEAD_FILE = "espnet_ssl_head.safetensors"  # our head, beside HF's files
HUBERT_PREFIX = ""  # HubertModel is the base model itself
HEAD_PREFIXES = tuple(hf.split(".")[0] + "." for _, hf in HUBERT_HEAD_KEY_RULES)
DEFAULT_FINAL_DIM = 256  # fairseq HuBERT BASE final_dim, for a new head
PathLike = Union[str, Path]
Head = Dict[str, torch.Tensor]


class HuBERTObjective(HFObjective):
    """HuBERT (loss ``hubert``) <-> ``HubertModel`` + our head file."""

    loss_name = "hubert"
    hf_class_name = "HubertModel"
    config_class = HubertConfig
    loss_class = WeightedHuBERTLoss
    same_value_fields = (("model_conf", "feature_layer_norm", "feat_proj_layer_norm"),)
    required_options = (("loss_conf", "num_classes"), ("loss_conf", "final_dim"))
    # all of the head's options are ESPnet-only; None = given at import
    espnet_only_defaults = {
        "top": {"token_list": None, "token_type": "word"},
        "loss_conf": {
            "num_classes": None,
            "final_dim": DEFAULT_FINAL_DIM,
            "loss_type": "cross_entropy",
            "layers": [-1],
            "loss_weights": [1.0],
        },
    }


HUBERT = HuBERTObjective()


def _read_token_list(extras: Dict[str, Any]) -> None:
    """Replace a carried ``token_list`` file name by the file's tokens."""
    top = extras["top"]
    if isinstance(top["token_list"], str):
        with open(top["token_list"], encoding="utf-8") as f:
            top["token_list"] = [line.rstrip() for line in f]


@typechecked
def hf_config_from_espnet(
    train_config: Mapping[str, Any], buffers: Optional[Mapping[str, int]] = None
) -> HubertConfig:
    """Translate our HuBERT training config to an HF ``HubertConfig``.

    Args:
        train_config: The training config (``config.yaml`` as a dict); missing
            options take ``SSLTask``'s and the constructors' defaults.
        buffers: Our counters to carry; None = 0.

    Returns:
        The HF config; the head's options, the token list and the other
        ESPnet-only values are in its ``espnet_ssl`` attribute.

    Raises:
        NotExpressibleError: Naming an option HF cannot express and why.
        ValueError: For a required option that is missing (e.g. ``num_classes``).
    """
    hf_config = translate_config_to_hf(train_config, HUBERT, buffers)
    _read_token_list(getattr(hf_config, EXTRAS_ATTRIBUTE))
    return hf_config


def _unit_tokens(num_classes: int) -> list:
    """The recipe's token list for k-means labels: ``0 .. k-1``, then ``<unk>``."""
    return [str(i) for i in range(num_classes)] + ["<unk>"]


@typechecked
def espnet_config_from_hf(
    hf_config: HubertConfig,
    num_classes: Optional[int] = None,
    final_dim: Optional[int] = None,
) -> Dict[str, Any]:
    """Translate an HF ``HubertConfig`` to the model part of our training config.

    Args:
        hf_config: The HF config; its ``espnet_ssl`` attribute, when present (a
            model exported by us), gives the head's options and the token list.
        num_classes: Classes of a new head (the k of the k-means labels); None =
            the carried value.
        final_dim: Projection size of a new head; None = the carried value, else
            :data:`DEFAULT_FINAL_DIM`.

    Returns:
        A dict ``SSLTask.build_model`` accepts once completed with the task's
        defaults; without a carried token list (or with another ``num_classes``)
        the token list is ``0 .. num_classes - 1`` then ``<unk>``.

    Raises:
        NotExpressibleError: Naming an HF field we cannot express and why.
        ValueError: If no number of classes is carried nor given.
    """
    config = translate_config_from_hf(hf_config, HUBERT)
    loss_conf = config["loss"][0]["conf"]
    carried = loss_conf["num_classes"]
    if num_classes is None and carried is None:
        raise ValueError(
            "this HubertModel folder carries no ESPnet HuBERT head options "
            "(config.json has no espnet_ssl.loss_conf.num_classes), so a new head "
            "needs its number of classes. Fix: pass --num_classes K (the k of the "
            "k-means labels the model will be trained on)."
        )
    if num_classes is not None:
        loss_conf["num_classes"] = num_classes
    if final_dim is not None:
        loss_conf["final_dim"] = final_dim
    if config["token_list"] is None or loss_conf["num_classes"] != carried:
        config["token_list"] = _unit_tokens(loss_conf["num_classes"])
    return config


def espnet_to_hf_state_dict(
    state: Mapping[str, torch.Tensor], feature_norm: Optional[bool] = None
) -> Tuple[Dict[str, torch.Tensor], Head]:
    """Split and rename our HuBERT state dict: ``HubertModel`` keys and our head.

    Args:
        state: Our state dict (one hubert loss at ``losses.0``).
        feature_norm: Whether the model has ``feature_norm``; None = whether
            ``state`` has its keys.

    Returns:
        The ``HubertModel`` state dict and the head (``final_proj.*``,
        ``label_embeddings.*``); buffers are left out (the config carries them).
        Tensors are shared, not copied.

    Raises:
        KeyError: Naming a key without an HF counterpart, or a missing key.
    """
    if feature_norm is None:
        feature_norm = any(key.startswith("feature_norm.") for key in state)
    hf_state = espnet_to_hf_keys(
        state, HUBERT_PREFIX, HUBERT_HEAD_KEY_RULES, feature_norm
    )
    head_keys = [key for key in hf_state if key.startswith(HEAD_PREFIXES)]
    head = {key: hf_state.pop(key) for key in head_keys}
    return hf_state, head


@typechecked
def to_hf(
    model: ESPnetSSLModel, train_config: Mapping[str, Any]
) -> Tuple[HubertModel, Head]:
    """Our HuBERT model as an HF ``HubertModel`` and our head, same weights.

    Args:
        model: Our HuBERT model.
        train_config: The config it was built from.

    Returns:
        The HF model (our dtype and train/eval mode) and the head's tensors
        (:func:`espnet_to_hf_state_dict`), for :func:`save_folder`.
    """
    only_loss(model, WeightedHuBERTLoss)
    state = model.state_dict()
    hf_config = hf_config_from_espnet(train_config, espnet_buffers(state))
    hf_state, head = espnet_to_hf_state_dict(state, model.feature_norm is not None)
    hf_model = HubertModel(hf_config)
    hf_model.to(next(model.parameters()).dtype)
    hf_model.load_state_dict(hf_state, strict=True)
    return hf_model.train(model.training), head


def _new_head(model: ESPnetSSLModel, seed: int) -> Head:
    """Re-initialise the model's head from ``seed``; its tensors under HF names."""
    decoder = only_loss(model, WeightedHuBERTLoss).decoder
    with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG alone
        torch.manual_seed(seed)
        for layer in (decoder.final_proj, decoder.label_embeddings):
            layer.reset_parameters()
    _, head = espnet_to_hf_state_dict(model.state_dict())
    return {key: value.clone() for key, value in head.items()}


@typechecked
def from_hf(
    hf_model: HubertModel,
    head: Optional[Mapping[str, torch.Tensor]] = None,
    num_classes: Optional[int] = None,
    final_dim: Optional[int] = None,
    seed: int = 0,
) -> Tuple[ESPnetSSLModel, Dict[str, Any]]:
    """An HF ``HubertModel`` (and our head) as our model, built through ``SSLTask``.

    Args:
        hf_model: The HF model.
        head: The head's tensors (:data:`HEAD_FILE`); None = a new head, seeded
            with ``seed`` (logged as new: it predicts nothing until trained).
        num_classes: Classes of a new head; None = the carried value.
        final_dim: Projection size of a new head; None = the carried value.
        seed: Seed of a new head's initialisation.

    Returns:
        Our model (HF's dtype and train/eval mode) and its training config
        (:func:`espnet_config_from_hf`).

    Raises:
        ValueError: If a new head has no number of classes, or ``num_classes``
            contradicts the given head.
    """
    if head is not None and (num_classes is not None or final_dim is not None):
        carried = _extras(hf_model.config).get("loss_conf", {})
        given = {"num_classes": num_classes, "final_dim": final_dim}
        for option, value in given.items():
            if value is not None and value != carried.get(option):
                raise ValueError(
                    f"the folder has an ESPnet head with {option}="
                    f"{carried.get(option)}, not {value}. Fix: drop --{option}, or "
                    f"delete {HEAD_FILE} to start a new head."
                )
    train_config = espnet_config_from_hf(hf_model.config, num_classes, final_dim)
    model = build_espnet_model(train_config)
    model.to(next(hf_model.parameters()).dtype)
    load_hf_state(model, hf_model.state_dict(), hf_model.config, head, seed)
    return model.train(hf_model.training), train_config


@typechecked
def load_hf_state(
    model: ESPnetSSLModel,
    hf_state: Mapping[str, torch.Tensor],
    hf_config: HubertConfig,
    head: Optional[Mapping[str, torch.Tensor]] = None,
    seed: int = 0,
    why_new_head: str = f"no ESPnet HuBERT head ({HEAD_FILE})",
) -> None:
    """Copy a ``HubertModel`` state dict and our head into our model.

    Args:
        model: Built from :func:`espnet_config_from_hf` of ``hf_config`` (a config
            differing only in options without parameters also fits).
        hf_state: ``HubertModel`` keys; tensors of another float dtype are cast.
        hf_config: Gives ``do_stable_layer_norm``, ``feat_proj_layer_norm`` and the
            carried buffers.
        head: The head's tensors (:data:`HEAD_FILE` names); None = a new head
            seeded with ``seed``, logged as new with ``why_new_head``.
        seed: Seed of a new head's initialisation.
        why_new_head: The log's reason for a new head.

    Raises:
        KeyError: Naming an HF key without a counterpart, or a missing one.
        RuntimeError: From ``load_state_dict`` when a shape does not fit.
    """
    if head is None:
        decoder = only_loss(model, WeightedHuBERTLoss).decoder
        logging.warning(
            f"{why_new_head}: a new one is initialised "
            f"(num_classes={decoder.label_embeddings.out_features}, "
            f"final_dim={decoder.final_proj.out_features}, seed={seed}); train it "
            "before using its predictions"
        )
        head = _new_head(model, seed)
    state = hf_to_espnet_keys(
        {**hf_state, **head}, HUBERT_PREFIX, HUBERT_HEAD_KEY_RULES, hf_config
    )
    model.load_state_dict(state, strict=True)


def save_folder(
    hf_model: HubertModel, head: Mapping[str, torch.Tensor], out_dir: PathLike
) -> None:
    """Write ``hf_model.save_pretrained(out_dir)`` and the head beside it.

    Args:
        hf_model: From :func:`to_hf`.
        head: From :func:`to_hf`; written to ``out_dir/`` :data:`HEAD_FILE`
            (a temporary name, then renamed).
        out_dir: The output folder.
    """
    hf_model.save_pretrained(out_dir)
    path = Path(out_dir) / HEAD_FILE
    partial = path.with_name(path.name + ".tmp")
    tensors = {key: value.detach().contiguous() for key, value in head.items()}
    save_file(tensors, str(partial), metadata={"format": "pt"})
    os.replace(partial, path)


def load_folder(hf_dir: PathLike) -> Tuple[HubertModel, Optional[Head]]:
    """Read a ``HubertModel`` folder offline, and our head if it has one.

    Args:
        hf_dir: A ``save_pretrained`` folder (``config.json``, weights).

    Returns:
        The HF model and the head's tensors (None without :data:`HEAD_FILE`).
    """
    hf_model = HubertModel.from_pretrained(hf_dir, local_files_only=True)
    path = Path(hf_dir) / HEAD_FILE
    return hf_model, (load_file(str(path)) if path.is_file() else None)
