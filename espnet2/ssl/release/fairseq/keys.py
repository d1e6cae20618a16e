"""State dict keys: fairseq ``Wav2Vec2Model`` / ``HubertModel`` -> transformers.

Every fairseq key is renamed to the key of the same tensor in transformers'
``Wav2Vec2ForPreTraining`` (backbone under ``wav2vec2.``) or ``HubertModel`` (at the
top), from where :mod:`espnet2.ssl.release.hf.keys` maps it to ours. The keys a
checkpoint must have follow from its config (:func:`expected_keys`: CNN depth and
norms, conv bias, encoder depth, projection, head); a missing key or one left over
is an error naming it, never skipped. Correspondence (fairseq -> HF, ``{i}`` a
layer)::

    feature_extractor.conv_layers.{i}.0       feature_extractor.conv_layers.{i}.conv
    feature_extractor.conv_layers.0.2         ...conv_layers.0.layer_norm (GroupNorm,
                                              extractor_mode default)
    feature_extractor.conv_layers.{i}.2.1     ...conv_layers.{i}.layer_norm (LayerNorm,
                                              extractor_mode layer_norm)
    layer_norm                                feature_projection.layer_norm
    post_extract_proj                         feature_projection.projection
    mask_emb                                  masked_spec_embed
    encoder.pos_conv.0 (weight_g, weight_v)   encoder.pos_conv_embed.conv
                                              (parametrizations.weight.original0/1)
    encoder.layers.{i}.self_attn.{q,k,v,out}_proj
                                              encoder.layers.{i}.attention.{..}_proj
    encoder.layers.{i}.self_attn_layer_norm   encoder.layers.{i}.layer_norm
    encoder.layers.{i}.fc1 / fc2              ...feed_forward.intermediate_dense /
                                              output_dense
    encoder.layers.{i}.final_layer_norm       encoder.layers.{i}.final_layer_norm
    encoder.layer_norm                        encoder.layer_norm
    quantizer.vars                            quantizer.codevectors   (wav2vec 2.0)
    quantizer.weight_proj                     quantizer.weight_proj
    project_q                                 project_q
    final_proj                                project_hid

fairseq builds no ``post_extract_proj`` when the CNN's channels equal
``encoder_embed_dim``; the projection is then the identity, written as an identity
weight and a zero bias (exact). HuBERT's head (``final_proj``, ``label_embs_concat``,
``target_glu``) has no HF counterpart and is returned apart
(:data:`HUBERT_HEAD_KEYS`).

References:
    fairseq @ 3d262bb2 ``fairseq/models/wav2vec/wav2vec2.py``
    (``ConvFeatureExtractionModel``: conv at index 0 of each block, the norm at
    index 2; ``make_conv_pos``: ``weight_norm(dim=2)``;
    ``TransformerSentenceEncoderLayer``), ``fairseq/modules/multihead_attention.py``
    (``{q,k,v,out}_proj``), ``fairseq/modules/gumbel_vector_quantizer.py``
    (``vars``, ``weight_proj``), ``fairseq/models/hubert/hubert.py``. transformers'
    ``convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py`` (commit 6507bc80)
    and ``convert_hubert_original_pytorch_checkpoint_to_pytorch.py`` (commit
    023a0334) for the correspondence. Read for facts only; no code copied.
"""

import logging
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from espnet2.ssl.release.fairseq.checkpoint import FairseqCheckpoint, fail
from espnet2.ssl.release.fairseq.config import cnn_layers, field
from espnet2.ssl.release.hf.keys import PARAMS, WAV2VEC2_PREFIX, _template_regex

Rules = Tuple[Tuple[str, str], ...]
CONV = "feature_extractor.conv_layers.{layer}"
POS_CONV = "encoder.pos_conv.0"
HF_POS_CONV = "encoder.pos_conv_embed.conv"
WEIGHT_NORM_FORMS = (  # nn.utils.weight_norm (fairseq), parametrizations (newer torch)
    ("weight_g", "weight_v"),
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)
# (fairseq key template, HF key template without the base model's prefix)
BACKBONE_KEY_RULES: Rules = (
    (f"{CONV}.0.{{param}}", f"{CONV}.conv.{{param}}"),
    (f"{CONV}.2.{{param}}", f"{CONV}.layer_norm.{{param}}"),  # GroupNorm, layer 0
    (f"{CONV}.2.1.{{param}}", f"{CONV}.layer_norm.{{param}}"),  # LayerNorm
    ("layer_norm.{param}", "feature_projection.layer_norm.{param}"),
    ("post_extract_proj.{param}", "feature_projection.projection.{param}"),
    ("mask_emb", "masked_spec_embed"),
    *(
        (f"{POS_CONV}.{form}", f"{HF_POS_CONV}.parametrizations.weight.original{i}")
        for forms in WEIGHT_NORM_FORMS
        for i, form in enumerate(forms)
    ),
    (f"{POS_CONV}.bias", f"{HF_POS_CONV}.bias"),
    *(
        (
            f"encoder.layers.{{layer}}.self_attn.{name}_proj.{{param}}",
            f"encoder.layers.{{layer}}.attention.{name}_proj.{{param}}",
        )
        for name in ("q", "k", "v", "out")
    ),
    (
        "encoder.layers.{layer}.self_attn_layer_norm.{param}",
        "encoder.layers.{layer}.layer_norm.{param}",
    ),
    (
        "encoder.layers.{layer}.fc1.{param}",
        "encoder.layers.{layer}.feed_forward.intermediate_dense.{param}",
    ),
    (
        "encoder.layers.{layer}.fc2.{param}",
        "encoder.layers.{layer}.feed_forward.output_dense.{param}",
    ),
    (
        "encoder.layers.{layer}.final_layer_norm.{param}",
        "encoder.layers.{layer}.final_layer_norm.{param}",
    ),
    ("encoder.layer_norm.{param}", "encoder.layer_norm.{param}"),
)
# Wav2Vec2ForPreTraining's head, at its top level
WAV2VEC2_HEAD_KEY_RULES: Rules = (
    ("quantizer.vars", "quantizer.codevectors"),
    ("quantizer.weight_proj.{param}", "quantizer.weight_proj.{param}"),
    ("project_q.{param}", "project_q.{param}"),
    ("final_proj.{param}", "project_hid.{param}"),
)
LABEL_EMBEDDINGS = "label_embs_concat"
HUBERT_HEAD_KEYS = ("final_proj.weight", "final_proj.bias", LABEL_EMBEDDINGS)
HUBERT_GLU_KEYS = ("target_glu.0.weight", "target_glu.0.bias")
LAYER_KEYS = tuple(
    f"self_attn.{name}_proj.{param}"
    for name in ("q", "k", "v", "out")
    for param in PARAMS
) + tuple(
    f"{module}.{param}"
    for module in ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
    for param in PARAMS
)


def _with_params(*stems: str) -> List[str]:
    """``stem.weight`` and ``stem.bias`` of each stem."""
    return [f"{stem}.{param}" for stem in stems for param in PARAMS]


def has_projection(checkpoint: FairseqCheckpoint) -> bool:
    """Whether fairseq built ``post_extract_proj`` (CNN channels != model size)."""
    return cnn_layers(checkpoint)[-1][0] != field(checkpoint, "encoder_embed_dim")


def _cnn_keys(checkpoint: FairseqCheckpoint) -> List[str]:
    """The CNN's keys: convs (bias with ``conv_bias``), norms by ``extractor_mode``."""
    num_layers = len(cnn_layers(checkpoint))
    convs = [f"feature_extractor.conv_layers.{i}.0" for i in range(num_layers)]
    keys = [f"{c}.weight" for c in convs]
    if field(checkpoint, "conv_bias"):
        keys += [f"{c}.bias" for c in convs]
    if field(checkpoint, "extractor_mode") == "default":  # GroupNorm on layer 0
        return keys + _with_params("feature_extractor.conv_layers.0.2")
    norms = [f"feature_extractor.conv_layers.{i}.2.1" for i in range(num_layers)]
    return keys + _with_params(*norms)


def _pos_conv_keys(state: Mapping[str, torch.Tensor]) -> List[str]:
    """The positional conv's keys, in the weight-norm form the state dict uses."""
    forms = [f for f in WEIGHT_NORM_FORMS if f"{POS_CONV}.{f[0]}" in state]
    names = forms[0] if forms else WEIGHT_NORM_FORMS[0]
    return [f"{POS_CONV}.{name}" for name in names] + [f"{POS_CONV}.bias"]


def _head_keys(checkpoint: FairseqCheckpoint) -> List[str]:
    """The head's keys: wav2vec 2.0's quantizer and projections, HuBERT's head."""
    if checkpoint.model_type == "wav2vec2":
        keys = ["quantizer.vars", *_with_params("quantizer.weight_proj")]
        return keys + _with_params("project_q", "final_proj")
    keys = _with_params("final_proj")
    if LABEL_EMBEDDINGS in checkpoint.state:  # absent without label dictionaries
        keys.append(LABEL_EMBEDDINGS)
    if field(checkpoint, "target_glu"):
        keys += list(HUBERT_GLU_KEYS)
    return keys


def expected_keys(checkpoint: FairseqCheckpoint) -> List[str]:
    """Every key the checkpoint's state dict must have, given its config."""
    keys = _cnn_keys(checkpoint) + _with_params("layer_norm") + ["mask_emb"]
    if has_projection(checkpoint):
        keys += _with_params("post_extract_proj")
    keys += _pos_conv_keys(checkpoint.state)
    for i in range(field(checkpoint, "encoder_layers")):
        keys += [f"encoder.layers.{i}.{key}" for key in LAYER_KEYS]
    return keys + _with_params("encoder.layer_norm") + _head_keys(checkpoint)


def check_keys(checkpoint: FairseqCheckpoint) -> None:
    """Every expected key is there and no other.

    Raises:
        FairseqCheckpointError: Naming the first missing key (and how many), or the
            first key left over.
    """
    expected, present = expected_keys(checkpoint), set(checkpoint.state)
    missing = [key for key in expected if key not in present]
    if missing:
        raise fail(
            checkpoint.path,
            f"the state dict lacks {missing[0]!r} ({len(missing)} missing) that its "
            "config implies",
            "pass the checkpoint unmodified, with the config it was trained with",
        )
    extra = sorted(present - set(expected))
    if extra:
        raise fail(
            checkpoint.path,
            f"the state dict has {extra[0]!r} ({len(extra)} left over), which is no "
            f"part of a fairseq {checkpoint.model_type} model with its config",
            "pass a pretraining checkpoint of Wav2Vec2Model or HubertModel",
        )


def _hf_key(key: str, rules: Iterable[Tuple[str, str]]) -> Optional[str]:
    """The HF key of a fairseq key by the first rule that matches it."""
    for fairseq_template, hf_template in rules:
        match = _template_regex(fairseq_template).fullmatch(key)
        if match:
            return hf_template.format(**match.groupdict())
    return None


def _identity_projection(checkpoint: FairseqCheckpoint) -> Dict[str, torch.Tensor]:
    """HF's projection for fairseq's missing ``post_extract_proj``: the identity."""
    size = field(checkpoint, "encoder_embed_dim")
    logging.info(
        f"{checkpoint.path}: no post_extract_proj (CNN channels = encoder_embed_dim "
        f"= {size}): the feature projection is the identity"
    )
    return {
        "feature_projection.projection.weight": torch.eye(size),
        "feature_projection.projection.bias": torch.zeros(size),
    }


def to_hf_state_dict(
    checkpoint: FairseqCheckpoint,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """The checkpoint's tensors under transformers' keys, and HuBERT's head apart.

    Args:
        checkpoint: A checkpoint whose keys passed :func:`check_keys`.

    Returns:
        The ``Wav2Vec2ForPreTraining`` / ``HubertModel`` state dict (tensors
        shared, not copied), and the fairseq HuBERT head's tensors by fairseq key
        (empty for wav2vec 2.0).
    """
    check_keys(checkpoint)
    wav2vec2 = checkpoint.model_type == "wav2vec2"
    prefix = WAV2VEC2_PREFIX if wav2vec2 else ""
    rules = tuple((fs, prefix + hf) for fs, hf in BACKBONE_KEY_RULES)
    rules += WAV2VEC2_HEAD_KEY_RULES if wav2vec2 else ()
    hf_state, head = {}, {}
    for key, tensor in checkpoint.state.items():
        hf = _hf_key(key, rules)
        if hf is None:  # HuBERT's head: check_keys let only these through
            head[key] = tensor
        else:
            hf_state[hf] = tensor
    if not has_projection(checkpoint):
        projection = _identity_projection(checkpoint)
        hf_state.update({prefix + key: value for key, value in projection.items()})
    return hf_state, head
