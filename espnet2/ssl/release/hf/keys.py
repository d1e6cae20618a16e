"""State dict keys: our wav2vec 2.0 network <-> transformers' wav2vec 2.0 and HuBERT.

The key mapping used by :mod:`espnet2.ssl.release.hf.wav2vec2` and
:mod:`espnet2.ssl.release.hf.hubert`: every parameter is renamed under a fixed rule (an
unknown or missing key is an error, never skipped). Legacy ``weight_g`` /
``weight_v`` weight-norm names are accepted. Our buffers ``global_step`` /
``num_updates`` and the ``seen_audio`` counters have no place in Hugging Face's (HF)
state dict and travel in the HF config attribute ``espnet_ssl``.

Both objectives share one network (HuBERT BASE is wav2vec 2.0 BASE's CNN, feature
projection and Transformer), so one table maps it; HF nests it under ``wav2vec2.``
in ``Wav2Vec2ForPreTraining`` and at the top of ``HubertModel`` and
``Wav2Vec2Model`` (the HF prefix). Correspondence (ours -> HF)::

    frontend.layers.{i}                 {prefix}feature_extractor.conv_layers.{i}
    feature_norm                        {prefix}feature_projection.layer_norm
    preencoder.linear_out               {prefix}feature_projection.projection
    util_modules.mask.mask_embedding    {prefix}masked_spec_embed
    encoder.*                           {prefix}encoder.* (ENCODER_KEY_RULES)

and the heads of the objectives (WAV2VEC2_HEAD_KEY_RULES, HUBERT_HEAD_KEY_RULES)::

    losses.0.quantizer.*                quantizer.*
    losses.0.project_q                  project_q
    losses.0.final_proj                 project_hid
    losses.0.decoder.final_proj         final_proj        (HuBERT, our sidecar file)
    losses.0.decoder.label_embeddings   label_embeddings  (HuBERT, our sidecar file)

References:
    A. Baevski, H. Zhou, A. Mohamed, M. Auli, "wav2vec 2.0: A Framework for
    Self-Supervised Learning of Speech Representations", NeurIPS 2020,
    arXiv:2006.11477.
    Hugging Face transformers 4.57.6, ``models/wav2vec2/modeling_wav2vec2.py`` and
    ``models/hubert/modeling_hubert.py`` (read for the module names only; no code
    copied).
"""

import functools
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

import torch
from transformers import PretrainedConfig

EXTRAS_ATTRIBUTE = "espnet_ssl"  # HF config attribute holding ESPnet-only values
# no place in HF's state dict: carried by the HF config
ESPNET_BUFFERS = (
    "global_step",
    "num_updates",
    "seen_audio.seen_samples",
    "seen_audio.pending_samples",
    "seen_audio.last_update_samples",
)
PARAMS = ("weight", "bias")
WAV2VEC2_PREFIX = "wav2vec2."  # Wav2Vec2ForPreTraining's base model attribute
Rules = Tuple[Tuple[str, str], ...]

# (ESPnet Wav2Vec2TransformerEncoder key, HF Wav2Vec2Encoder / HubertEncoder key)
# templates; {layer} is a layer index, {param} "weight" or "bias".
ENCODER_KEY_RULES: Rules = (
    (
        "embed.0.convs.0.parametrizations.weight.original0",
        "pos_conv_embed.conv.parametrizations.weight.original0",
    ),
    (
        "embed.0.convs.0.parametrizations.weight.original1",
        "pos_conv_embed.conv.parametrizations.weight.original1",
    ),
    ("embed.0.convs.0.bias", "pos_conv_embed.conv.bias"),
    *(
        (
            f"encoders.{{layer}}.self_attn.linear_{name}.{{param}}",
            f"layers.{{layer}}.attention.{name}_proj.{{param}}",
        )
        for name in ("q", "k", "v", "out")
    ),
    ("encoders.{layer}.norm1.{param}", "layers.{layer}.layer_norm.{param}"),
    (
        "encoders.{layer}.feed_forward.w_1.{param}",
        "layers.{layer}.feed_forward.intermediate_dense.{param}",
    ),
    (
        "encoders.{layer}.feed_forward.w_2.{param}",
        "layers.{layer}.feed_forward.output_dense.{param}",
    ),
    ("encoders.{layer}.norm2.{param}", "layers.{layer}.final_layer_norm.{param}"),
)
# HF's encoder.layer_norm: after the positional embedding (post-LN, BASE) or after
# the last layer (do_stable_layer_norm, pre-LN).
POST_LN_NORM_RULE = ("embed.1.{param}", "layer_norm.{param}")
PRE_LN_NORM_RULE = ("after_norm.{param}", "layer_norm.{param}")
# Names of torch.nn.utils.weight_norm (legacy) -> parametrizations.weight_norm.
LEGACY_WEIGHT_NORM = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}
# The network outside the encoder; HF keys without the base model's prefix. The
# first two rules are the CNN's (their layout is read from the keys).
BACKBONE_KEY_RULES: Rules = (
    (
        "frontend.layers.{layer}.conv.{param}",
        "feature_extractor.conv_layers.{layer}.conv.{param}",
    ),
    (
        "frontend.layers.{layer}.layer_norm.{param}",
        "feature_extractor.conv_layers.{layer}.layer_norm.{param}",
    ),
    ("feature_norm.{param}", "feature_projection.layer_norm.{param}"),
    ("preencoder.linear_out.{param}", "feature_projection.projection.{param}"),
    ("util_modules.mask.mask_embedding", "masked_spec_embed"),
)
FEATURE_NORM_TEMPLATE = BACKBONE_KEY_RULES[2][0]
WAV2VEC2_HEAD_KEY_RULES: Rules = (
    ("losses.0.quantizer.codevectors", "quantizer.codevectors"),
    ("losses.0.quantizer.weight_proj.{param}", "quantizer.weight_proj.{param}"),
    ("losses.0.project_q.{param}", "project_q.{param}"),
    ("losses.0.final_proj.{param}", "project_hid.{param}"),
)
# ESPnet's HuBERTDecoder; HF's HubertModel has no head, so these HF names are
# those of our sidecar file (espnet2.ssl.release.hf.hubert).
HUBERT_HEAD_KEY_RULES: Rules = (
    ("losses.0.decoder.final_proj.{param}", "final_proj.{param}"),
    ("losses.0.decoder.label_embeddings.{param}", "label_embeddings.{param}"),
)
# Wav2Vec2ForPreTraining outside its encoder (kept for callers of the old name).
MODEL_KEY_RULES: Rules = (
    tuple((ours, WAV2VEC2_PREFIX + hf) for ours, hf in BACKBONE_KEY_RULES)
    + WAV2VEC2_HEAD_KEY_RULES
)
_PLACEHOLDERS = {"layer": r"(?P<layer>\d+)", "param": r"(?P<param>weight|bias)"}


@functools.lru_cache(maxsize=None)
def _template_regex(template: str) -> "re.Pattern[str]":
    """Compile a key template: literal text, ``{layer}`` and ``{param}`` fields."""
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, ...
    return re.compile(
        "".join(
            _PLACEHOLDERS[p] if i % 2 else re.escape(p) for i, p in enumerate(parts)
        )
    )


def encoder_key_rules(pre_ln: bool = False) -> Rules:
    """(ours, HF) encoder key templates; ``pre_ln`` = HF ``do_stable_layer_norm``."""
    return ENCODER_KEY_RULES + (PRE_LN_NORM_RULE if pre_ln else POST_LN_NORM_RULE,)


def backbone_key_rules(hf_prefix: str = "", pre_ln: bool = False) -> Rules:
    """(ours, HF) key templates of the shared network, encoder included.

    Args:
        hf_prefix: The HF base model's prefix: ``"wav2vec2."`` in
            ``Wav2Vec2ForPreTraining``, ``""`` in ``HubertModel`` and
            ``Wav2Vec2Model``.
        pre_ln: HF ``do_stable_layer_norm``.
    """
    encoder = tuple(
        (f"encoder.{ours}", f"encoder.{hf}") for ours, hf in encoder_key_rules(pre_ln)
    )
    return tuple((ours, hf_prefix + hf) for ours, hf in BACKBONE_KEY_RULES + encoder)


def _canonical_weight_norm(state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Rename legacy ``weight_g`` / ``weight_v`` keys to parametrization names."""
    renamed = {}
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        if leaf in LEGACY_WEIGHT_NORM:
            key = f"{stem}.{LEGACY_WEIGHT_NORM[leaf]}"
        if key in renamed:
            raise KeyError(f"{key} is given twice (legacy and parametrization name)")
        renamed[key] = value
    return renamed


def _counterpart(
    key: str, rules: Iterable[Tuple[str, str]], source: int
) -> Optional[str]:
    """The other side's key by the first rule matching on side ``source`` (0/1)."""
    for rule in rules:
        match = _template_regex(rule[source]).fullmatch(key)
        if match:
            return rule[1 - source].format(**match.groupdict())
    return None


def _rename(
    state: Mapping[str, torch.Tensor], rules: Iterable[Tuple[str, str]], source: int
) -> Dict[str, torch.Tensor]:
    """Rename every key of ``state`` from side ``source`` (0 = ours, 1 = HF).

    Raises:
        KeyError: Naming a key that no rule maps, or two keys mapped to one.
    """
    side = ("ESPnet", "Hugging Face")[source]
    renamed = {}
    for key, value in _canonical_weight_norm(state).items():
        new_key = _counterpart(key, rules, source)
        if new_key is None:
            raise KeyError(f"{side} key {key!r} has no counterpart in the other model")
        if new_key in renamed:
            raise KeyError(f"{side} key {key!r} maps to {new_key!r} a second time")
        renamed[new_key] = value
    return renamed


def hf_encoder_to_espnet(
    state: Mapping[str, torch.Tensor], pre_ln: bool = False
) -> Dict[str, torch.Tensor]:
    """Rename an HF ``Wav2Vec2Encoder`` state dict to ``Wav2Vec2TransformerEncoder``.

    Args:
        state: HF encoder keys (legacy ``weight_g`` / ``weight_v`` accepted).
        pre_ln: HF ``do_stable_layer_norm`` (its ``layer_norm`` is our
            ``after_norm``); False = post-LN BASE (our ``embed.1``).

    Returns:
        The same tensors under our encoder's keys.

    Raises:
        KeyError: Naming the first key without a counterpart.
    """
    return _rename(state, encoder_key_rules(pre_ln), source=1)


def _indices(keys: Iterable[str], prefix: str) -> List[int]:
    """Sorted distinct integers that follow ``prefix`` in the keys."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _expand(template: str, num_layers: int) -> Set[str]:
    """Every key a template stands for, for layers ``0 .. num_layers - 1``."""
    layers = range(num_layers) if "{layer}" in template else [0]
    params = PARAMS if "{param}" in template else ["weight"]
    return {template.format(layer=i, param=p) for i in layers for p in params}


def _is_pre_ln(espnet_keys: Iterable[str]) -> bool:
    """Whether our encoder keys show a final ``after_norm`` (pre-LN)."""
    return any(key.startswith("encoder.after_norm.") for key in espnet_keys)


def _expected_frontend_keys(keys: Set[str]) -> Set[str]:
    """Our CNN keys for the layout ``keys`` show: depth (largest index), conv
    bias, norm on layer 0 only (group) or on every layer."""
    num_convs = max(_indices(keys, "frontend.layers."), default=-1) + 1
    conv_bias = any(re.fullmatch(r"frontend\.layers\.\d+\.conv\.bias", k) for k in keys)
    normed = _indices([k for k in keys if ".layer_norm." in k], "frontend.layers.")
    num_normed = num_convs if any(i > 0 for i in normed) else min(1, num_convs)
    expected = {
        f"frontend.layers.{i}.conv.{param}"
        for i in range(num_convs)
        for param in (PARAMS if conv_bias else ("weight",))
    }
    return expected | {
        f"frontend.layers.{i}.layer_norm.{param}"
        for i in range(num_normed)
        for param in PARAMS
    }


def _expected_espnet_keys(
    keys: Set[str], head_rules: Rules, feature_norm: bool
) -> Set[str]:
    """Our parameter keys for the layout that ``keys`` show (CNN and encoder depth,
    pre- or post-LN), with ``feature_norm`` or without, and the head's keys."""
    num_layers = max(_indices(keys, "encoder.encoders."), default=-1) + 1
    expected = _expected_frontend_keys(keys)
    rules = backbone_key_rules("", _is_pre_ln(keys))[2:] + head_rules
    for ours, _ in rules:
        if feature_norm or ours != FEATURE_NORM_TEMPLATE:
            expected |= _expand(ours, num_layers)
    return expected


def _check_complete(
    espnet_keys: Set[str],
    rules: Rules,
    head_rules: Rules,
    feature_norm: bool,
    source: int,
) -> None:
    """Raise a KeyError naming a missing key, on the ``source`` side (0 = ours)."""
    expected = _expected_espnet_keys(espnet_keys, head_rules, feature_norm)
    missing = sorted(expected - espnet_keys)
    if not missing:
        return
    shown = _counterpart(missing[0], rules, 0) if source else missing[0]
    side = ("ESPnet", "Hugging Face")[source]
    raise KeyError(f"{side} state dict lacks {shown!r} ({len(missing)} missing)")


def espnet_buffers(state: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    """Our counters without an HF place: ``{"global_step": n, "num_updates": m}``.

    Args:
        state: Our model's state dict; buffers are (1,) int64.
    """
    return {name: int(state[name].item()) for name in ESPNET_BUFFERS if name in state}


def espnet_to_hf_keys(
    state: Mapping[str, torch.Tensor],
    hf_prefix: str,
    head_rules: Rules,
    feature_norm: bool = True,
) -> Dict[str, Any]:
    """Rename our ``ESPnetSSLModel`` state dict to HF keys (buffers left out).

    Args:
        state: Our state dict (one loss at ``losses.0``).
        hf_prefix: The HF base model's prefix (:func:`backbone_key_rules`).
        head_rules: The objective's head rules, e.g. ``WAV2VEC2_HEAD_KEY_RULES``.
        feature_norm: Whether the model has ``feature_norm`` (HF
            ``feat_proj_layer_norm``).

    Returns:
        The HF state dict (tensors shared, not copied), with parametrized
        weight-norm names for the pos conv.

    Raises:
        KeyError: Naming a key without an HF counterpart, or a missing key.
    """
    params = _canonical_weight_norm(state)
    for name in ESPNET_BUFFERS:
        params.pop(name, None)
    rules = backbone_key_rules(hf_prefix, _is_pre_ln(params)) + head_rules
    converted = _rename(params, rules, source=0)
    _check_complete(set(params), rules, head_rules, feature_norm, source=0)
    return converted


def hf_to_espnet_keys(
    state: Mapping[str, torch.Tensor],
    hf_prefix: str,
    head_rules: Rules,
    hf_config: Optional[PretrainedConfig] = None,
) -> Dict[str, torch.Tensor]:
    """Rename an HF state dict (base model and head) to our model's keys.

    Args:
        state: HF keys; legacy ``weight_g`` / ``weight_v`` names are accepted.
        hf_prefix: The HF base model's prefix (:func:`backbone_key_rules`).
        head_rules: The objective's head rules.
        hf_config: Gives ``do_stable_layer_norm``, ``feat_proj_layer_norm``
            (absent = True) and the carried buffers (``espnet_ssl["buffers"]``);
            None = post-LN with zero counters.

    Returns:
        Our state dict, buffers included ((1,) int64 each).

    Raises:
        KeyError: Naming a key without a counterpart, or a missing HF key.
    """
    pre_ln = bool(getattr(hf_config, "do_stable_layer_norm", False))
    feature_norm = bool(getattr(hf_config, "feat_proj_layer_norm", True))
    rules = backbone_key_rules(hf_prefix, pre_ln) + head_rules
    converted = _rename(state, rules, source=1)
    _check_complete(set(converted), rules, head_rules, feature_norm, source=1)
    buffers = _extras(hf_config).get("buffers", {})
    for name in ESPNET_BUFFERS:
        converted[name] = torch.tensor([int(buffers.get(name, 0))], dtype=torch.int64)
    return converted


def espnet_to_hf_state_dict(state: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Rename our wav2vec 2.0 state dict to ``Wav2Vec2ForPreTraining`` keys.

    The buffers ``global_step`` and ``num_updates`` have no HF place: they are left
    out here and carried by the config (:func:`espnet_buffers`,
    :func:`~espnet2.ssl.release.hf.wav2vec2.hf_config_from_espnet`). Tensors are shared,
    not copied.

    Args:
        state: Our state dict (a single wav2vec2 loss at ``losses.0``).

    Returns:
        The HF state dict, with parametrized weight-norm names for the pos conv.

    Raises:
        KeyError: Naming a key without an HF counterpart, or a missing key.
    """
    return espnet_to_hf_keys(state, WAV2VEC2_PREFIX, WAV2VEC2_HEAD_KEY_RULES)


def hf_to_espnet_state_dict(
    state: Mapping[str, torch.Tensor], hf_config: Optional[PretrainedConfig] = None
) -> Dict[str, torch.Tensor]:
    """Rename a ``Wav2Vec2ForPreTraining`` state dict to our model's keys.

    Args:
        state: HF keys; legacy ``weight_g`` / ``weight_v`` names are accepted.
        hf_config: Gives ``do_stable_layer_norm`` and the carried buffers
            (``espnet_ssl["buffers"]``); None = post-LN with zero counters.

    Returns:
        Our state dict, buffers included ((1,) int64 each).

    Raises:
        KeyError: Naming a key without a counterpart, or a missing HF key.
    """
    return hf_to_espnet_keys(state, WAV2VEC2_PREFIX, WAV2VEC2_HEAD_KEY_RULES, hf_config)


def _extras(hf_config: Optional[PretrainedConfig]) -> Dict[str, Any]:
    """The ESPnet-only values carried by an HF config (empty if none)."""
    return dict(getattr(hf_config, EXTRAS_ATTRIBUTE, None) or {})
