"""Convert our wav2vec 2.0 SSL model to and from transformers' Wav2Vec2ForPreTraining.

Both directions are exact: parameters are copied bitwise under a fixed key mapping
(an unknown or missing key is an error, never skipped), and the configs are
translated field by field. A config that Hugging Face (HF) cannot express is refused
with a :class:`NotExpressibleError` (a ``ValueError``) naming the option and the
reason. ESPnet values that HF has no field for (e.g. ``feature_penalty_weight``, the
Gumbel temperature schedule) and our buffers (``global_step``, ``num_updates``,
``seen_audio.*``) travel in the HF config attribute ``espnet_ssl``, so that ours ->
HF -> ours restores the same config and a bitwise identical state dict.

The translation of the shared network (CNN, feature projection, Transformer,
masking) is written once here; an :class:`HFObjective` adds the rows of one
objective: :data:`WAV2VEC2` here, HuBERT in :mod:`espnet2.ssl.release.hf.hubert`. The
state
dict keys and their correspondence are in :mod:`espnet2.ssl.release.hf.keys`.

References:
    A. Baevski, H. Zhou, A. Mohamed, M. Auli, "wav2vec 2.0: A Framework for
    Self-Supervised Learning of Speech Representations", NeurIPS 2020,
    arXiv:2006.11477.
    Hugging Face transformers 4.57.6 (pinned; also read at 5.23.0),
    ``models/wav2vec2/modeling_wav2vec2.py`` and ``configuration_wav2vec2.py`` (read
    for the module names and config fields only; no code copied); fairseq @ 3d262bb2
    ``fairseq/models/wav2vec/wav2vec2.py`` for the meaning of each option.
"""

import argparse
import copy
import functools
import inspect
from typing import Any, Dict, Mapping, NoReturn, Optional, Tuple

import torch
from transformers import PretrainedConfig, Wav2Vec2Config, Wav2Vec2ForPreTraining
from typeguard import typechecked

from espnet2.asr.encoder.wav2vec2_transformer_encoder import Wav2Vec2TransformerEncoder
from espnet2.asr.frontend.cnn import CNNFrontend
from espnet2.asr.preencoder.linear import LinearProjection
from espnet2.ssl.espnet_model import ESPnetSSLModel
from espnet2.ssl.frame_geometry import config_cnn_shapes
from espnet2.ssl.loss.wav2vec2 import Wav2Vec2Loss
from espnet2.ssl.mask.span import SpanMasking
from espnet2.ssl.release.hf.keys import (
    ESPNET_BUFFERS,
    EXTRAS_ATTRIBUTE,
    _extras,
    espnet_buffers,
    espnet_to_hf_state_dict,
    hf_to_espnet_state_dict,
)
from espnet2.tasks.ssl import SSLTask

Sections = Dict[str, Dict[str, Any]]
LAYER_NORM_EPS = 1e-5  # torch's default: our feature_norm; HF shares one eps
NORM_MODE_TO_HF = {"group_norm": "group", "layer_norm": "layer"}
FFN_ACTIVATIONS = ("gelu", "relu", "swish")  # same names in HF's ACT2FN
SECTIONS_IN_CONFIG = ("frontend_conf", "preencoder_conf", "encoder_conf", "model_conf")
ALL_SECTIONS = ("top", *SECTIONS_IN_CONFIG, "loss_conf", "mask_conf")

# ESPnet-only values of the shared network by config section, with the value a
# model from HF (which lacks them) gets: fairseq's BASE recipe or our recipes' choice.
ESPNET_ONLY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "frontend_conf": {"fs": 16000, "layer_norm_cls": "transposed"},
    "encoder_conf": {
        "positional_dropout_rate": 0.0,
        "use_flash_attn": False,
        "use_sdpa": True,
    },
    "mask_conf": {"require_same_masks": True},
    "model_conf": {"feature_grad_mult": 0.1, "extract_feats_in_collect_stats": False},
}

# ------------------------------------------------------------------------ configs

# (section, our option, HF field): the same value on both sides. Sections are
# those of _sections(): "top", frontend_conf, preencoder_conf, encoder_conf,
# loss_conf (loss.0.conf), mask_conf (util mask conf) and model_conf.
SAME_VALUE_FIELDS: Tuple[Tuple[str, str, str], ...] = (
    ("frontend_conf", "bias", "conv_bias"),
    ("preencoder_conf", "output_size", "hidden_size"),
    ("encoder_conf", "output_size", "hidden_size"),
    ("encoder_conf", "num_blocks", "num_hidden_layers"),
    ("encoder_conf", "attention_heads", "num_attention_heads"),
    ("encoder_conf", "linear_units", "intermediate_size"),
    ("encoder_conf", "ffn_activation", "hidden_act"),
    ("encoder_conf", "dropout_rate", "hidden_dropout"),
    ("encoder_conf", "attention_dropout_rate", "attention_dropout"),
    ("encoder_conf", "pos_conv_kernel_size", "num_conv_pos_embeddings"),
    ("encoder_conf", "pos_conv_groups", "num_conv_pos_embedding_groups"),
    ("encoder_conf", "normalize_before", "do_stable_layer_norm"),
    ("model_conf", "input_dropout", "feat_proj_dropout"),
    ("mask_conf", "mask_prob", "mask_time_prob"),
    ("mask_conf", "mask_length", "mask_time_length"),
    ("mask_conf", "min_masks", "mask_time_min_masks"),
    ("mask_conf", "mask_channel_prob", "mask_feature_prob"),
    ("mask_conf", "mask_channel_length", "mask_feature_length"),
)
# (section, option, the only value HF can express, why); the reverse direction
# writes these values. The top-level rows are checked first.
REQUIRED_VALUES: Tuple[Tuple[str, str, Any, str], ...] = (
    ("top", "frontend", "wav2vec_cnn", "HF's feature encoder is the wav2vec 2.0 CNN"),
    ("top", "input_size", None, "HF's input is the waveform"),
    ("top", "specaug", None, "HF has no SpecAugment of the CNN features"),
    ("top", "normalize", None, "HF does not normalise the CNN features"),
    ("top", "preencoder", "linear", "HF projects the features with one Linear"),
    ("top", "encoder", "transformer", "HF's context network is a Transformer"),
    ("top", "model", "espnet", "only ESPnetSSLModel is converted"),
    ("frontend_conf", "conv_mode", "standard", "HF's CNN has plain convolutions"),
    ("frontend_conf", "normalize_audio", False, "HF's model does not do it"),
    ("frontend_conf", "normalize_output", False, "use feature_layer_norm instead"),
    ("preencoder_conf", "dropout", 0.0, "HF has no dropout before the projection"),
    ("encoder_conf", "input_layer", "wav2vec", "HF does not project its input"),
    ("encoder_conf", "pos_enc_layer_type", "conv", "HF has a conv pos embedding"),
    ("encoder_conf", "pos_conv_residual", True, "HF adds the pos conv to its input"),
    ("encoder_conf", "positionwise_layer_type", "linear", "HF's FFN is 2 Linears"),
    ("encoder_conf", "layer_norm_eps", LAYER_NORM_EPS, "HF's eps is feature_norm's"),
    ("encoder_conf", "zero_padded_frames", True, "HF zeroes padded frames"),
    ("encoder_conf", "concat_after", False, "HF's layers add residuals"),
    ("encoder_conf", "qk_norm", False, "HF's attention has no query/key norm"),
    ("encoder_conf", "interctc_layer_idx", [], "HF has no intermediate CTC"),
    ("encoder_conf", "interctc_use_conditioning", False, "HF has no CTC"),
)
TOP_REQUIRED_VALUES = tuple(row for row in REQUIRED_VALUES if row[0] == "top")
SECTION_NAMES = {"top": "", "loss_conf": "loss.0.conf", "mask_conf": "util.mask.conf"}
REQUIRED_OPTIONS = (("frontend_conf", "norm_mode"), ("frontend_conf", "conv_mode"))
REQUIRED_OPTIONS += (("frontend_conf", "bias"), ("preencoder_conf", "output_size"))
# (normalize_before, embed_layer_norm) of HF's post-LN (BASE) and pre-LN
# (do_stable_layer_norm, LARGE) encoders: one LayerNorm besides the layers' own.
ENCODER_LAYER_NORMS = ((False, True), (True, False))
# Fields every HF config writes about itself (save_pretrained sets them).
HF_METADATA_FIELDS = frozenset(
    ("architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path")
)
# HF fields _derived_hf_fields writes (not a copy of one option of ours).
DERIVED_HF_FIELDS = (
    "conv_dim",
    "conv_kernel",
    "conv_stride",
    "feat_extract_norm",
    "feat_extract_activation",
    "activation_dropout",
    "layerdrop",
    "layer_norm_eps",
    "apply_spec_augment",
    "mask_feature_min_masks",
)
# Our option holding the source HF config's fields that have no ESPnet form.
HF_FIELDS_OPTION = "hf_config_fields"
# (HF field, the only value we can express, why); a field the config class lacks
# passes.
HF_REQUIRED_VALUES: Tuple[Tuple[str, Any, str], ...] = (
    ("feat_extract_activation", "gelu", "our CNN uses exact GELU"),
    ("layer_norm_eps", LAYER_NORM_EPS, "our feature_norm has torch's eps 1e-5"),
    ("add_adapter", False, "we have no adapter after the encoder"),
    ("adapter_attn_dim", None, "we have no attention adapters"),
    ("apply_spec_augment", True, "our model always masks in pretraining"),
    ("conv_pos_batch_norm", False, "our positional conv is weight-normed"),
)


class NotExpressibleError(ValueError):
    """A model the other side cannot express: one line naming the option and why.

    ``espnet2.bin.ssl_hf_convert`` exits with status 3 on it (other bad input: 1),
    so that a recipe can skip the export of an architecture HF has no class for.
    """


class HFObjective:
    """One SSL objective on the shared network: its loss and its HF classes.

    The module's tables translate the shared network; a subclass adds its
    objective's rows (same layout as :data:`SAME_VALUE_FIELDS`,
    :data:`REQUIRED_VALUES`, :data:`HF_REQUIRED_VALUES`,
    :data:`ESPNET_ONLY_DEFAULTS`) and may override the three hooks.

    Attributes:
        loss_name: Our ``loss[0].name``.
        hf_class_name: The transformers class the export loads as (messages).
        config_class: Its config class.
        loss_class: Our loss class (gives the loss options' defaults).
    """

    loss_name = ""
    hf_class_name = ""
    config_class = PretrainedConfig
    loss_class: type = object
    same_value_fields: Tuple[Tuple[str, str, str], ...] = ()
    required_values: Tuple[Tuple[str, str, Any, str], ...] = ()
    required_options: Tuple[Tuple[str, str], ...] = ()
    hf_required_values: Tuple[Tuple[str, Any, str], ...] = ()
    espnet_only_defaults: Dict[str, Dict[str, Any]] = {}

    def refuse(self, section: str, option: str, value: Any, why: str) -> NoReturn:
        """Raise :class:`NotExpressibleError` for ``section.option=value``."""
        name = f"{SECTION_NAMES.get(section, section)}.{option}".lstrip(".")
        raise NotExpressibleError(
            f"{name}={value!r} cannot be expressed by transformers' "
            f"{self.hf_class_name}: {why}"
        )

    def check(self, sections: Sections) -> None:
        """Refuse (:meth:`refuse`) what the objective's HF class cannot express."""

    def check_hf(self, config: PretrainedConfig) -> None:
        """Refuse (:func:`refuse_hf`) HF fields of the objective we cannot express."""

    def derived_options(self, config: PretrainedConfig) -> Sections:
        """The objective's options that are not a copy of one HF field."""
        return {}


def refuse_hf(config: PretrainedConfig, option: str, why: str) -> NoReturn:
    """Raise :class:`NotExpressibleError` for the HF field ``option``."""
    value = getattr(config, option)
    raise NotExpressibleError(
        f"Hugging Face {option}={value!r} has no ESPnet form: {why}"
    )


class Wav2Vec2Objective(HFObjective):
    """wav2vec 2.0 (loss ``wav2vec2``) <-> ``Wav2Vec2ForPreTraining``."""

    loss_name = "wav2vec2"
    hf_class_name = "Wav2Vec2ForPreTraining"
    config_class = Wav2Vec2Config
    loss_class = Wav2Vec2Loss
    same_value_fields = (
        ("loss_conf", "feature_dropout", "feat_quantizer_dropout"),
        ("loss_conf", "num_groups", "num_codevector_groups"),
        ("loss_conf", "num_entries", "num_codevectors_per_group"),
        ("loss_conf", "final_dim", "codevector_dim"),
        ("loss_conf", "final_dim", "proj_codevector_dim"),
        ("loss_conf", "num_negatives", "num_negatives"),
        ("loss_conf", "logit_temperature", "contrastive_logits_temperature"),
        ("loss_conf", "diversity_weight", "diversity_loss_weight"),
    )
    required_values = (
        ("loss_conf", "layer", -1, "HF's head reads the last encoder layer"),
        ("model_conf", "feature_layer_norm", True, "HF always normalises CNN features"),
    )
    espnet_only_defaults = {
        "loss_conf": {
            "cross_sample_negatives": 0,
            "max_temperature": 2.0,
            "min_temperature": 0.5,
            "temperature_decay": 0.999995,
            "feature_penalty_weight": 10.0,
        },
    }

    def check(self, sections: Sections) -> None:
        """The quantizer reads the CNN output."""
        size = sections["loss_conf"]["feature_size"]
        if size != sections["frontend_conf"]["shapes"][-1][0]:
            self.refuse("loss_conf", "feature_size", size, "HF quantizes CNN")

    def check_hf(self, config: PretrainedConfig) -> None:
        """Our ``project_q`` keeps the codevector size."""
        if config.proj_codevector_dim != config.codevector_dim:
            refuse_hf(
                config, "proj_codevector_dim", "our project_q keeps codevector_dim"
            )

    def derived_options(self, config: PretrainedConfig) -> Sections:
        """The quantizer's input size is the CNN's output size."""
        return {"loss_conf": {"feature_size": int(config.conv_dim[-1])}}


WAV2VEC2 = Wav2Vec2Objective()


@functools.lru_cache(maxsize=1)
def _task_defaults() -> Dict[str, Any]:
    """The defaults of every ``SSLTask`` option (what ``config.yaml`` holds)."""
    return vars(SSLTask.get_parser().parse_args(["--token_list", "none"]))


def complete_train_config(train_config: Mapping[str, Any]) -> Dict[str, Any]:
    """``SSLTask``'s defaults overridden by ``train_config`` (a deep copy)."""
    return copy.deepcopy({**_task_defaults(), **dict(train_config)})


def _with_defaults(cls: type, conf: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``conf`` completed with the defaults of ``cls.__init__`` (deep copies)."""
    params = inspect.signature(cls.__init__).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not p.empty}
    return copy.deepcopy({**defaults, **dict(conf or {})})


def _check_values(sections: Sections, rows: Tuple, objective: HFObjective) -> None:
    """Refuse the first (section, option, required, why) row not met."""
    for section, option, required, why in rows:
        value = sections[section][option]
        if (list(value) if isinstance(value, tuple) else value) != required:
            objective.refuse(section, option, value, why)


def _check_top(top: Dict[str, Any], objective: HFObjective) -> None:
    """Refuse other architectures and objectives before reading their options."""
    _check_values({"top": top}, TOP_REQUIRED_VALUES, objective)
    losses = top["loss"] or []
    if len(losses) != 1 or losses[0].get("name") != objective.loss_name:
        names = [item.get("name") for item in losses]
        why = f"its objective is one {objective.loss_name} loss"
        objective.refuse("top", "loss", names, why)


def _sections(train_config: Mapping[str, Any], objective: HFObjective) -> Sections:
    """The model parts of a training config, completed with their defaults."""
    top = complete_train_config(train_config)
    _check_top(top, objective)
    masks = [item.get("conf") for item in top["util"] or [] if item["name"] == "mask"]
    sections = {
        "top": top,
        "frontend_conf": _with_defaults(CNNFrontend, top["frontend_conf"]),
        "preencoder_conf": _with_defaults(LinearProjection, top["preencoder_conf"]),
        "encoder_conf": _with_defaults(Wav2Vec2TransformerEncoder, top["encoder_conf"]),
        "loss_conf": _with_defaults(objective.loss_class, top["loss"][0].get("conf")),
        "mask_conf": _with_defaults(SpanMasking, (masks or [{}])[-1]),
        "model_conf": _with_defaults(ESPnetSSLModel, top["model_conf"]),
    }
    for section, option in REQUIRED_OPTIONS + objective.required_options:
        if option not in sections[section]:
            name = f"{SECTION_NAMES.get(section, section)}.{option}"
            raise ValueError(f"{name} is required (it has no default)")
    return sections


def _check_expressible(sections: Sections, objective: HFObjective) -> None:
    """Raise a NotExpressibleError naming the first option HF cannot express."""
    _check_values(sections, REQUIRED_VALUES + objective.required_values, objective)
    frontend, encoder = sections["frontend_conf"], sections["encoder_conf"]
    refuse = objective.refuse
    if frontend["norm_mode"] not in NORM_MODE_TO_HF:
        refuse("frontend_conf", "norm_mode", frontend["norm_mode"], "unknown")
    if encoder["ffn_activation"] not in FFN_ACTIVATIONS:
        refuse("encoder_conf", "ffn_activation", encoder["ffn_activation"], "unknown")
    norms = (encoder["normalize_before"], encoder["embed_layer_norm"])
    if norms not in ENCODER_LAYER_NORMS:
        why = f"HF's encoders have {ENCODER_LAYER_NORMS[0]} or {ENCODER_LAYER_NORMS[1]}"
        refuse("encoder_conf", "(normalize_before, embed_layer_norm)", norms, why)
    size = sections["preencoder_conf"]["output_size"]
    if size != encoder["output_size"]:
        refuse("preencoder_conf", "output_size", size, "HF projects to hidden_size")
    if not sections["mask_conf"]["mask_prob"] > 0:
        mask_prob = sections["mask_conf"]["mask_prob"]
        refuse("mask_conf", "mask_prob", mask_prob, "HF drops mask_emb")
    objective.check(sections)


def _derived_hf_fields(sections: Sections) -> Dict[str, Any]:
    """HF fields that are not a copy of one option of ours (DERIVED_HF_FIELDS)."""
    frontend, encoder = sections["frontend_conf"], sections["encoder_conf"]
    shapes = config_cnn_shapes({"frontend_conf": frontend}, "frontend_conf")
    activation_dropout = encoder["activation_dropout_rate"]
    if activation_dropout is None:  # ESPnet: the FFN reuses dropout_rate
        activation_dropout = encoder["dropout_rate"]
    values = (
        [channels for channels, _, _ in shapes],
        [kernel for _, kernel, _ in shapes],
        [stride for _, _, stride in shapes],
        NORM_MODE_TO_HF[frontend["norm_mode"]],
        "gelu",  # the CNN's exact GELU
        activation_dropout,
        encoder["layer_drop_rate"] if encoder["apply_layer_drop"] else 0.0,
        LAYER_NORM_EPS,
        True,  # apply_spec_augment
        0,  # mask_feature_min_masks: SpanMasking draws channel spans with no minimum
    )
    return dict(zip(DERIVED_HF_FIELDS, values))


def hf_fields_we_write(objective: HFObjective) -> frozenset:
    """The HF config fields our translation determines (for ``objective``)."""
    rows = SAME_VALUE_FIELDS + objective.same_value_fields
    return frozenset((*(hf for _, _, hf in rows), *DERIVED_HF_FIELDS, EXTRAS_ATTRIBUTE))


def hf_fields_to_keep(config: PretrainedConfig, objective: HFObjective) -> Dict:
    """The fields of an imported HF config that our options do not determine.

    Only those that differ from the config class's defaults, without HF's own
    metadata. Stored in our option :data:`HF_FIELDS_OPTION`, they come back
    unchanged on export (e.g. ``final_dropout`` of a CTC head,
    ``feat_extract_dropout``, ``vocab_size``).
    """
    skip = hf_fields_we_write(objective) | HF_METADATA_FIELDS | {"model_type"}
    fields, defaults = config.to_dict(), type(config)().to_dict()
    return {
        key: copy.deepcopy(value)
        for key, value in sorted(fields.items())
        if key not in skip and (key not in defaults or value != defaults[key])
    }


def espnet_only_defaults(objective: HFObjective) -> Sections:
    """:data:`ESPNET_ONLY_DEFAULTS` with the objective's, by section."""
    merged = copy.deepcopy(ESPNET_ONLY_DEFAULTS)
    for section, defaults in objective.espnet_only_defaults.items():
        merged.setdefault(section, {}).update(copy.deepcopy(defaults))
    return merged


def _espnet_only_values(
    sections: Sections, buffers: Mapping[str, int], objective: HFObjective
) -> Dict[str, Any]:
    """The values HF has no field for, by section, and the buffers."""
    extras = {
        section: {key: copy.deepcopy(sections[section][key]) for key in defaults}
        for section, defaults in espnet_only_defaults(objective).items()
    }
    encoder = sections["encoder_conf"]
    if not encoder["apply_layer_drop"]:  # HF layerdrop is 0: keep the inert rate
        extras["encoder_conf"]["apply_layer_drop"] = False
        extras["encoder_conf"]["layer_drop_rate"] = encoder["layer_drop_rate"]
    extras["buffers"] = {name: int(buffers.get(name, 0)) for name in ESPNET_BUFFERS}
    return extras


@typechecked
def translate_config_to_hf(
    train_config: Mapping[str, Any],
    objective: HFObjective,
    buffers: Optional[Mapping[str, int]] = None,
) -> PretrainedConfig:
    """Translate our training config to the objective's HF config.

    Args:
        train_config: The training config (``config.yaml`` as a dict, or only its
            model parts); missing options take ``SSLTask``'s and the constructors'
            defaults.
        objective: E.g. :data:`WAV2VEC2`.
        buffers: Our counters to carry
            (:func:`~espnet2.ssl.release.hf.keys.espnet_buffers`); None = 0.

    Returns:
        The HF config (``objective.config_class``); ESPnet-only values and the
        buffers are in its ``espnet_ssl`` attribute (saved in ``config.json``);
        the fields kept from an imported HF config (``hf_config_fields``) are
        restored, except those our options determine.

    Raises:
        NotExpressibleError: Naming an option (``section.option=value``) HF cannot
            express and why.
        ValueError: For an option that is required and missing.
    """
    sections = _sections(train_config, objective)
    _check_expressible(sections, objective)
    kept = dict(sections["top"].get(HF_FIELDS_OPTION) or {})
    written = hf_fields_we_write(objective)
    fields = {key: value for key, value in kept.items() if key not in written}
    rows = SAME_VALUE_FIELDS + objective.same_value_fields
    fields.update({hf: sections[section][ours] for section, ours, hf in rows})
    fields.update(_derived_hf_fields(sections))
    fields[EXTRAS_ATTRIBUTE] = _espnet_only_values(sections, buffers or {}, objective)
    return objective.config_class(**fields)


@typechecked
def hf_config_from_espnet(
    train_config: Mapping[str, Any], buffers: Optional[Mapping[str, int]] = None
) -> Wav2Vec2Config:
    """Translate our wav2vec 2.0 training config to an HF ``Wav2Vec2Config``.

    See :func:`translate_config_to_hf` (``objective`` = :data:`WAV2VEC2`).
    """
    return translate_config_to_hf(train_config, WAV2VEC2, buffers)


def _check_hf_expressible(config: PretrainedConfig, objective: HFObjective) -> None:
    """Raise a NotExpressibleError naming the first HF field we cannot express."""
    for option, required, why in HF_REQUIRED_VALUES + objective.hf_required_values:
        if getattr(config, option, required) != required:
            refuse_hf(config, option, why)
    if config.feat_extract_norm not in NORM_MODE_TO_HF.values():
        refuse_hf(config, "feat_extract_norm", "unknown")
    if config.hidden_act not in FFN_ACTIVATIONS:
        refuse_hf(config, "hidden_act", f"our FFN supports {FFN_ACTIVATIONS}")
    if not config.mask_time_prob > 0:
        refuse_hf(config, "mask_time_prob", "we need masked frames (mask_prob > 0)")
    if config.mask_feature_prob > 0 and config.mask_feature_min_masks != 0:
        refuse_hf(config, "mask_feature_min_masks", "our channel masks have no minimum")
    objective.check_hf(config)


def _derived_espnet_options(config: PretrainedConfig) -> Sections:
    """Our options that are not a copy of one HF field, by section."""
    norm_modes = {hf: ours for ours, hf in NORM_MODE_TO_HF.items()}
    shapes = zip(config.conv_dim, config.conv_kernel, config.conv_stride)
    return dict(
        frontend_conf=dict(
            norm_mode=norm_modes[config.feat_extract_norm],
            shapes=[[int(c), int(k), int(s)] for c, k, s in shapes],
        ),
        encoder_conf=dict(
            embed_layer_norm=not config.do_stable_layer_norm,
            activation_dropout_rate=config.activation_dropout,
            layer_drop_rate=config.layerdrop,
            apply_layer_drop=config.layerdrop > 0,
        ),
    )


def _espnet_sections(config: PretrainedConfig, objective: HFObjective) -> Sections:
    """Every option of ours, by section, that an HF config determines."""
    sections = {name: {} for name in ALL_SECTIONS}
    derived = [_derived_espnet_options(config), objective.derived_options(config)]
    for options in derived:
        for section, values in options.items():
            sections[section].update(values)
    for section, option, value, _ in REQUIRED_VALUES + objective.required_values:
        sections[section][option] = copy.deepcopy(value)
    for section, ours, hf in SAME_VALUE_FIELDS + objective.same_value_fields:
        sections[section][ours] = getattr(config, hf)
    extras = _extras(config)
    for section, defaults in espnet_only_defaults(objective).items():
        sections[section].update({**defaults, **copy.deepcopy(extras.get(section, {}))})
    if config.layerdrop > 0:  # HF's value wins over an inert rate in the extras
        sections["encoder_conf"].update(
            layer_drop_rate=config.layerdrop, apply_layer_drop=True
        )
    return sections


@typechecked
def translate_config_from_hf(
    hf_config: PretrainedConfig, objective: HFObjective
) -> Dict[str, Any]:
    """Translate an HF config to the model part of our training config.

    ESPnet-only values come from the config's ``espnet_ssl`` attribute when it has
    one (a model converted from ours), else from :func:`espnet_only_defaults`
    (fairseq's BASE recipe).

    Args:
        hf_config: The HF config of the objective's class.
        objective: E.g. :data:`WAV2VEC2`.

    Returns:
        A dict ``SSLTask.build_model`` accepts once completed with the task's
        defaults (:func:`complete_train_config`); ``token_list`` is ``["<unk>"]``
        unless the extras carry one; ``hf_config_fields`` holds the HF fields
        our options do not determine (:func:`hf_fields_to_keep`).

    Raises:
        NotExpressibleError: Naming an HF field we cannot express and why.
    """
    _check_hf_expressible(hf_config, objective)
    sections = _espnet_sections(hf_config, objective)
    return {
        "token_list": ["<unk>"],
        "token_type": "word",
        **sections["top"],
        "init": None,
        "specaug_conf": {},
        "normalize_conf": {},
        **{name: sections[name] for name in SECTIONS_IN_CONFIG},
        "loss": [{"name": objective.loss_name, "conf": sections["loss_conf"]}],
        "util": [{"name": "mask", "conf": sections["mask_conf"]}],
        HF_FIELDS_OPTION: hf_fields_to_keep(hf_config, objective),
    }


@typechecked
def espnet_config_from_hf(hf_config: Wav2Vec2Config) -> Dict[str, Any]:
    """Translate an HF ``Wav2Vec2Config`` to the model part of our training config.

    See :func:`translate_config_from_hf` (``objective`` = :data:`WAV2VEC2`).
    """
    return translate_config_from_hf(hf_config, WAV2VEC2)


# ------------------------------------------------------------------------- models


@typechecked
def build_espnet_model(train_config: Mapping[str, Any]) -> ESPnetSSLModel:
    """Build our model through ``SSLTask.build_model`` (random weights).

    Args:
        train_config: A training config; missing options take the task defaults.
    """
    args = argparse.Namespace(**complete_train_config(train_config))
    return SSLTask.build_model(args)


def only_loss(model: ESPnetSSLModel, kind: type) -> torch.nn.Module:
    """The model's only loss, which must be a ``kind`` (the objective converted).

    Raises:
        ValueError: The model has another loss, or more than one.
    """
    if len(model.losses) != 1 or not isinstance(model.losses[0], kind):
        kinds = [type(loss).__name__ for loss in model.losses]
        raise ValueError(f"need exactly one {kind.__name__}, the model has {kinds}")
    return model.losses[0]


@typechecked
def to_hf(
    model: ESPnetSSLModel, train_config: Mapping[str, Any]
) -> Wav2Vec2ForPreTraining:
    """Our model as an HF ``Wav2Vec2ForPreTraining`` with the same weights.

    Args:
        model: Our wav2vec 2.0 model.
        train_config: The config it was built from.

    Returns:
        The HF model, in our model's dtype and train/eval mode, with our current
        Gumbel temperature (HF does not save it).
    """
    temperature = only_loss(model, Wav2Vec2Loss).quantizer.temperature
    state = model.state_dict()
    hf_config = hf_config_from_espnet(train_config, espnet_buffers(state))
    hf_model = Wav2Vec2ForPreTraining(hf_config)
    hf_model.to(next(model.parameters()).dtype)
    hf_model.load_state_dict(espnet_to_hf_state_dict(state), strict=True)
    hf_model.set_gumbel_temperature(temperature)
    return hf_model.train(model.training)


@typechecked
def from_hf(
    hf_model: Wav2Vec2ForPreTraining,
) -> Tuple[ESPnetSSLModel, Dict[str, Any]]:
    """An HF ``Wav2Vec2ForPreTraining`` as our model, built through ``SSLTask``.

    Args:
        hf_model: The HF model.

    Returns:
        Our model (HF's dtype and train/eval mode, Gumbel temperature set from
        the carried ``num_updates``) and its training config
        (:func:`espnet_config_from_hf`).
    """
    train_config = espnet_config_from_hf(hf_model.config)
    model = build_espnet_model(train_config)
    model.to(next(hf_model.parameters()).dtype)
    load_hf_state(model, hf_model.state_dict(), hf_model.config)
    return model.train(hf_model.training), train_config


@typechecked
def load_hf_state(
    model: ESPnetSSLModel,
    hf_state: Mapping[str, torch.Tensor],
    hf_config: PretrainedConfig,
) -> None:
    """Copy a ``Wav2Vec2ForPreTraining`` state dict into our model.

    Args:
        model: Built from :func:`espnet_config_from_hf` of ``hf_config`` (a config
            differing only in options without parameters also fits).
        hf_state: HF keys (legacy ``weight_g`` / ``weight_v`` accepted); tensors of
            another float dtype are cast to the model's.
        hf_config: Gives ``do_stable_layer_norm`` and the carried buffers.

    Raises:
        KeyError: Naming an HF key without a counterpart, or a missing one.
        RuntimeError: From ``load_state_dict`` when a shape does not fit.
    """
    model.load_state_dict(hf_to_espnet_state_dict(hf_state, hf_config), strict=True)
    only_loss(model, Wav2Vec2Loss).step(int(model.num_updates))


def hf_negatives_to_espnet(
    sampled_negative_indices: torch.Tensor, mask_time_indices: torch.Tensor
) -> torch.Tensor:
    """Convert HF's negative indices to our loss's ``negative_indices``.

    Args:
        sampled_negative_indices: (B, T, K) long, HF's indices into the B * T
            frames (only the rows of masked frames are read).
        mask_time_indices: (B, T) bool, True on masked frames.

    Returns:
        (N, K) long: for the N masked frames in (b, t) row-major order, the
        indices of their negatives among the masked frames in that order.

    Raises:
        ValueError: If a negative of a masked frame is not a masked frame (ours
            draws negatives among masked frames only).
    """
    mask = mask_time_indices.bool()
    flat = mask.flatten()  # (B * T,)
    rank = torch.full(flat.shape, -1, dtype=torch.long, device=flat.device)
    rank[flat] = torch.arange(int(flat.sum()), device=flat.device)
    negatives = rank[sampled_negative_indices.long()[mask]]  # (N, K)
    if (negatives < 0).any():
        raise ValueError("a negative index points to a frame that is not masked")
    return negatives
