"""fairseq wav2vec 2.0 / HuBERT config -> a transformers config for our HF import.

fairseq's ``Wav2Vec2Config`` / ``HubertConfig`` fields are translated to the fields of
transformers' ``Wav2Vec2Config`` / ``HubertConfig`` (the same network), so that the
import continues on the one mapping to ESPnet of :mod:`espnet2.ssl.release.hf.wav2vec2`
(:func:`~espnet2.ssl.release.hf.wav2vec2.translate_config_from_hf`). Values transformers
has
no field for travel in the HF config's ``espnet_ssl`` attribute as our own exports
carry them: ``feature_grad_mult``, ``require_same_masks``, the Gumbel temperature
schedule (``latent_temp``), ``cross_sample_negatives``, the feature penalty weight
(criterion ``loss_weights[1]``), the sample rate and the update count.

Every field that changes what the network computes, or what its pretraining loss
does, is either translated or refused with a
:class:`~espnet2.ssl.release.hf.wav2vec2.NotExpressibleError` naming the field and why
(:data:`REQUIRED_VALUES`): another layer type (conformer, adapters), a deeper
positional convolution or its batch-norm form, cropped frames, other masking
distributions, quantized inputs, a target GLU, negatives from everywhere or from
the codebook, a deeper quantizer, a ``latent_dim`` that differs from ``final_dim``,
an activation other than exact GELU, ReLU or swish, a binary cross-entropy
criterion. Fields that change nothing for our model are not read:
``required_seq_len_multiple`` (padding the encoder masks out), ``max_positions``,
``checkpoint_activations``, ``fp16``, the conformer-only ``depthwise_conv_kernel_size``,
``attn_type``, ``pos_enc_type``, the adapter-only ``adp_*``, the secondary mask
arguments of non-static distributions (``mask_other``, ``mask_min_space``...), and
HuBERT's head and loss options (its head is not imported, see
:mod:`espnet2.ssl.release.fairseq.convert`). A field a checkpoint lacks (older fairseq)
takes
its default in fairseq @ 3d262bb2 (:data:`FIELD_DEFAULTS`), as fairseq's own loader
does; each one is logged.

``conv_feature_layers`` (a Python expression that fairseq ``eval``s) is read by
:func:`conv_layers`, which accepts only list and tuple literals of integers joined by
``+`` and ``*``; nothing is evaluated.

References:
    fairseq @ 3d262bb2 (commit 3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99):
    ``fairseq/models/wav2vec/wav2vec2.py`` (``Wav2Vec2Config``, ``Wav2Vec2Model``,
    ``TransformerEncoder``, ``make_conv_pos``), ``fairseq/models/hubert/hubert.py``
    (``HubertConfig``), ``fairseq/criterions/wav2vec_criterion.py``
    (``loss_weights``, ``infonce``), ``fairseq/tasks/audio_pretraining.py``
    (``normalize``, ``sample_rate``); fairseq @ 621e8341 (``base_architecture``: the
    ``args`` of 2020 checkpoints). transformers 4.57.6
    ``models/wav2vec2/configuration_wav2vec2.py`` and
    ``models/hubert/configuration_hubert.py`` (field names). Read for facts only; no
    code copied.
"""

import ast
from typing import Any, Dict, List, NoReturn, Optional, Tuple

from transformers import HubertConfig, PretrainedConfig, Wav2Vec2Config

from espnet2.ssl.release.fairseq.checkpoint import FairseqCheckpoint, config_value, fail
from espnet2.ssl.release.hf.keys import EXTRAS_ATTRIBUTE
from espnet2.ssl.release.hf.wav2vec2 import LAYER_NORM_EPS, NotExpressibleError

# The fields read, with their default in fairseq @ 3d262bb2 (Wav2Vec2Config; HuBERT's
# shared fields have the same defaults), used when a checkpoint lacks one.
FIELD_DEFAULTS: Dict[str, Any] = {
    "extractor_mode": "default",
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "layer_norm_first": False,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
    "dropout_input": 0.0,
    "dropout_features": 0.0,
    "feature_grad_mult": 1.0,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
    "conv_pos_batch_norm": False,
    "crop_seq_to_multiple": 1,
    "mask_prob": 0.65,
    "mask_length": 10,
    "mask_selection": "static",
    "no_mask_overlap": False,
    "mask_dropout": 0.0,
    "require_same_masks": True,
    "mask_channel_prob": 0.0,
    "mask_channel_length": 10,
    "mask_channel_selection": "static",
    "no_mask_channel_overlap": False,
    "mask_channel_before": False,
    # wav2vec 2.0 only
    "final_dim": 0,
    "logit_temp": 0.1,
    "quantize_targets": False,
    "quantize_input": False,
    "target_glu": False,
    "quantizer_depth": 1,
    "latent_vars": 320,
    "latent_groups": 2,
    "latent_dim": 0,
    "latent_temp": (2.0, 0.5, 0.999995),
    "num_negatives": 100,
    "negatives_from_everywhere": False,
    "cross_sample_negatives": 0,
    "codebook_negatives": 0,
}
# (fairseq field, HF field): the same value
SAME_VALUE_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("conv_bias", "conv_bias"),
    ("encoder_layers", "num_hidden_layers"),
    ("encoder_embed_dim", "hidden_size"),
    ("encoder_ffn_embed_dim", "intermediate_size"),
    ("encoder_attention_heads", "num_attention_heads"),
    ("activation_fn", "hidden_act"),
    ("layer_norm_first", "do_stable_layer_norm"),
    ("dropout", "hidden_dropout"),
    ("attention_dropout", "attention_dropout"),
    ("activation_dropout", "activation_dropout"),
    ("encoder_layerdrop", "layerdrop"),
    ("dropout_input", "feat_proj_dropout"),
    ("conv_pos", "num_conv_pos_embeddings"),
    ("conv_pos_groups", "num_conv_pos_embedding_groups"),
    ("mask_prob", "mask_time_prob"),
    ("mask_length", "mask_time_length"),
    ("mask_channel_prob", "mask_feature_prob"),
    ("mask_channel_length", "mask_feature_length"),
)
WAV2VEC2_SAME_VALUE_FIELDS: Tuple[Tuple[str, str], ...] = (
    ("dropout_features", "feat_quantizer_dropout"),
    ("latent_groups", "num_codevector_groups"),
    ("latent_vars", "num_codevectors_per_group"),
    ("num_negatives", "num_negatives"),
    ("logit_temp", "contrastive_logits_temperature"),
)
# (fairseq field, the only value we can express, why)
REQUIRED_VALUES: Tuple[Tuple[str, Any, str], ...] = (
    ("layer_type", "transformer", "our encoder has Transformer layers"),
    ("pos_conv_depth", 1, "our positional embedding is one convolution"),
    ("conv_pos_batch_norm", False, "our positional convolution is weight-normed"),
    ("crop_seq_to_multiple", 1, "our model keeps every CNN frame"),
    ("mask_selection", "static", "our time masks are spans of mask_length"),
    ("no_mask_overlap", False, "our time mask spans may overlap"),
    ("mask_dropout", 0.0, "our masking unmasks nothing again"),
    ("mask_channel_selection", "static", "our channel masks are spans"),
    ("no_mask_channel_overlap", False, "our channel mask spans may overlap"),
    ("mask_channel_before", False, "we mask channels after the time spans"),
)
WAV2VEC2_REQUIRED_VALUES: Tuple[Tuple[str, Any, str], ...] = (
    ("quantize_targets", True, "our wav2vec2 loss quantizes its targets"),
    ("quantize_input", False, "our encoder reads the unquantized features"),
    ("target_glu", False, "our loss has no GLU on its targets"),
    ("negatives_from_everywhere", False, "we draw negatives among masked frames"),
    ("codebook_negatives", 0, "we draw no negatives from the codebook"),
    ("quantizer_depth", 1, "our quantizer projects with one Linear"),
)
EXTRACTOR_MODES = {"default": "group", "layer_norm": "layer"}  # fairseq -> HF
ACTIVATIONS = ("gelu", "relu", "swish")  # exact GELU, ReLU, SiLU on both sides
TIME_MIN_MASKS = 2  # fairseq Wav2Vec2Model / HubertModel.apply_mask: min_masks=2
SAMPLE_RATE = 16000  # fairseq task default
WAV2VEC_CRITERION = "wav2vec"
LOSS_WEIGHT_DEFAULTS = (0.1, 10.0)  # our loss's defaults (fairseq's BASE recipe)
PARSED_FIELDS = ("conv_feature_layers", "latent_temp")  # strings in old args
MAX_LITERAL_ITEMS = 1000  # longest list conv_layers builds (a guard, not a limit)


def refuse(checkpoint: FairseqCheckpoint, name: str, value: Any, why: str) -> NoReturn:
    """Raise NotExpressibleError for the fairseq field ``name=value``."""
    raise NotExpressibleError(
        f"fairseq {name}={value!r} ('{checkpoint.path}') cannot be expressed by "
        f"ESPnet's SSL model: {why}"
    )


def _checked(name: str, value: Any, path: str) -> Any:
    """``value`` when its type is that of the field's default (ints as floats)."""
    kind = type(FIELD_DEFAULTS[name])
    if name in PARSED_FIELDS:
        return value
    if (
        kind is float
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise fail(
            path,
            f"config field {name}={value!r} is not a {kind.__name__}",
            "pass a checkpoint written by fairseq",
        )
    return value


def field(checkpoint: FairseqCheckpoint, name: str) -> Any:
    """The model config field ``name`` (its fairseq default when absent)."""
    value = config_value(
        checkpoint.model_cfg, name, FIELD_DEFAULTS[name], checkpoint.path
    )
    return _checked(name, value, checkpoint.path)


def _literal(node: ast.AST) -> Any:
    """Value of a list/tuple/int expression joined by ``+`` and ``*``, else None."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(item) for item in node.elts]
        if any(item is None for item in items):
            return None
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _literal(node.left), _literal(node.right)
        if isinstance(node.op, ast.Add) and isinstance(left, list):
            return left + right if isinstance(right, list) else None
        if isinstance(node.op, ast.Mult) and isinstance(left, list):
            small = type(right) is int and 0 <= len(left) * right <= MAX_LITERAL_ITEMS
            return left * right if small else None
    return None


def conv_layers(value: Any, path: str) -> List[List[int]]:
    """fairseq ``conv_feature_layers`` as ``[[channels, kernel, stride], ...]``.

    Args:
        value: The expression string fairseq ``eval``s (e.g. ``"[(512, 10, 5)] +
            [(512, 3, 2)] * 4"``) or a list of triples; only literals joined by
            ``+`` / ``*`` are accepted, nothing is evaluated.
        path: The checkpoint (messages).

    Raises:
        FairseqCheckpointError: If it is anything else.
    """
    layers = value
    if isinstance(value, str):
        try:
            layers = _literal(ast.parse(value, mode="eval").body)
        except SyntaxError:
            layers = None
    triples = isinstance(layers, (list, tuple)) and len(layers) > 0
    triples = triples and all(
        isinstance(t, (list, tuple))
        and len(t) == 3
        and all(type(v) is int and v > 0 for v in t)
        for t in layers
    )
    if not triples:
        raise fail(
            path,
            f"conv_feature_layers={value!r} is not a list of (channels, kernel, "
            "stride) literals (it is not evaluated)",
            "write it as e.g. [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2",
        )
    return [list(t) for t in layers]


def cnn_layers(checkpoint: FairseqCheckpoint) -> List[List[int]]:
    """The checkpoint's CNN as ``[[channels, kernel, stride], ...]``."""
    return conv_layers(field(checkpoint, "conv_feature_layers"), checkpoint.path)


def _latent_temp(checkpoint: FairseqCheckpoint) -> Tuple[float, float, float]:
    """(start, end, decay) of ``latent_temp`` (a tuple, or a string in old args)."""
    value = field(checkpoint, "latent_temp")
    try:
        temps = ast.literal_eval(value) if isinstance(value, str) else value
        start, end, decay = (float(t) for t in temps)
    except (ValueError, TypeError, SyntaxError):
        raise fail(
            checkpoint.path,
            f"latent_temp={value!r} is not (start, end, decay)",
            "write it as e.g. (2, 0.5, 0.999995)",
        ) from None
    return start, end, decay


def _loss_weights(checkpoint: FairseqCheckpoint) -> Tuple[float, float]:
    """(diversity, feature penalty) weights of the ``wav2vec`` criterion.

    fairseq's ``loss_weights``: None = neither extra loss, one weight = both, two
    = (diversity, feature penalty). Without a wav2vec criterion config our loss's
    defaults stay (fairseq's BASE recipe values).
    """
    section, path = checkpoint.criterion_cfg, checkpoint.path
    name = section.get("_name", section.get("criterion"))
    if name != WAV2VEC_CRITERION:
        return LOSS_WEIGHT_DEFAULTS
    if config_value(section, "infonce", False, path) is not True:
        refuse(checkpoint, "criterion.infonce", section.get("infonce", False),
               "our loss is InfoNCE, not binary cross-entropy")  # fmt: skip
    value = config_value(section, "loss_weights", None, path)
    try:  # a string in old args (fairseq eval'd it)
        weights = ast.literal_eval(value) if isinstance(value, str) else value
        weights = [] if weights is None else [float(w) for w in weights]
    except (ValueError, TypeError, SyntaxError):
        raise fail(path, f"criterion loss_weights={value!r} is not a list of numbers",
                   "write it as e.g. [0.1, 10]") from None  # fmt: skip
    if len(weights) == 1:
        weights = weights * 2
    if len(weights) != 2:
        refuse(checkpoint, "criterion.loss_weights", value, "we weight two losses")
    return weights[0], weights[1]


def _check_required(checkpoint: FairseqCheckpoint) -> None:
    """Refuse the first field whose value our model cannot express."""
    rows = REQUIRED_VALUES
    if checkpoint.model_type == "wav2vec2":
        rows += WAV2VEC2_REQUIRED_VALUES
    for name, required, why in rows:
        if field(checkpoint, name) != required:
            refuse(checkpoint, name, field(checkpoint, name), why)
    mode = field(checkpoint, "extractor_mode")
    activation = field(checkpoint, "activation_fn")
    if mode not in EXTRACTOR_MODES:
        refuse(checkpoint, "extractor_mode", mode, f"ours are {list(EXTRACTOR_MODES)}")
    if activation not in ACTIVATIONS:
        refuse(checkpoint, "activation_fn", activation, f"ours are {ACTIVATIONS}")
    if not field(checkpoint, "mask_prob") > 0:
        refuse(checkpoint, "mask_prob", field(checkpoint, "mask_prob"),
               "our model masks frames in pretraining (mask_prob > 0)")  # fmt: skip


def final_dim(checkpoint: FairseqCheckpoint) -> int:
    """fairseq's ``final_dim``, or ``encoder_embed_dim`` when it is <= 0."""
    value = field(checkpoint, "final_dim")
    return value if value > 0 else field(checkpoint, "encoder_embed_dim")


def _wav2vec2_fields(checkpoint: FairseqCheckpoint) -> Dict[str, Any]:
    """HF fields of the wav2vec 2.0 head (quantizer, projections, loss)."""
    dim = final_dim(checkpoint)
    latent_dim = field(checkpoint, "latent_dim")
    if latent_dim > 0 and latent_dim != dim:
        refuse(checkpoint, "latent_dim", latent_dim,
               f"our quantizer's codevectors have final_dim={dim} values")  # fmt: skip
    fields = {hf: field(checkpoint, name) for name, hf in WAV2VEC2_SAME_VALUE_FIELDS}
    fields.update(
        codevector_dim=dim,
        proj_codevector_dim=dim,
        diversity_loss_weight=_loss_weights(checkpoint)[0],
    )
    return fields


def _extras(checkpoint: FairseqCheckpoint) -> Dict[str, Any]:
    """Values transformers has no field for (our ``espnet_ssl`` attribute)."""
    sample_rate = config_value(
        checkpoint.task_cfg, "sample_rate", SAMPLE_RATE, checkpoint.path
    )
    extras = {
        "frontend_conf": {"fs": int(sample_rate)},
        "model_conf": {"feature_grad_mult": field(checkpoint, "feature_grad_mult")},
        "mask_conf": {"require_same_masks": field(checkpoint, "require_same_masks")},
        "buffers": {"num_updates": checkpoint.num_updates},
    }
    if checkpoint.model_type == "wav2vec2":
        start, end, decay = _latent_temp(checkpoint)
        extras["loss_conf"] = {
            "cross_sample_negatives": field(checkpoint, "cross_sample_negatives"),
            "max_temperature": start,
            "min_temperature": end,
            "temperature_decay": decay,
            "feature_penalty_weight": _loss_weights(checkpoint)[1],
        }
    return extras


def _network_fields(checkpoint: FairseqCheckpoint) -> Dict[str, Any]:
    """HF fields of the shared network (CNN, projection, Transformer, masking)."""
    layers = cnn_layers(checkpoint)
    fields = {hf: field(checkpoint, name) for name, hf in SAME_VALUE_FIELDS}
    fields.update(
        conv_dim=[channels for channels, _, _ in layers],
        conv_kernel=[kernel for _, kernel, _ in layers],
        conv_stride=[stride for _, _, stride in layers],
        feat_extract_norm=EXTRACTOR_MODES[field(checkpoint, "extractor_mode")],
        feat_extract_activation="gelu",  # fairseq's CNN: nn.GELU()
        layer_norm_eps=LAYER_NORM_EPS,  # fairseq's LayerNorm / Fp32GroupNorm
        mask_time_min_masks=TIME_MIN_MASKS,
        mask_feature_min_masks=0,  # compute_mask_indices' default for channels
        apply_spec_augment=True,
    )
    return fields


def to_hf_config(checkpoint: FairseqCheckpoint) -> PretrainedConfig:
    """The transformers config of the checkpoint's network.

    Args:
        checkpoint: From :func:`~espnet2.ssl.release.fairseq.checkpoint.
            read_fairseq_checkpoint`.

    Returns:
        A ``Wav2Vec2Config`` (``Wav2Vec2ForPreTraining``) or a ``HubertConfig``
        (``HubertModel``, ``feat_proj_layer_norm: true``: fairseq's ``layer_norm``),
        with the ESPnet-only values in its ``espnet_ssl`` attribute.

    Raises:
        NotExpressibleError: Naming the first fairseq field our model cannot express.
        FairseqCheckpointError: For a field of the wrong type or an unreadable
            ``conv_feature_layers`` / ``latent_temp``.
    """
    _check_required(checkpoint)
    fields = _network_fields(checkpoint)
    fields[EXTRAS_ATTRIBUTE] = _extras(checkpoint)
    if checkpoint.model_type == "wav2vec2":
        return Wav2Vec2Config(**fields, **_wav2vec2_fields(checkpoint))
    return HubertConfig(**fields, feat_proj_layer_norm=True, conv_pos_batch_norm=False)


def normalize_audio(checkpoint: FairseqCheckpoint) -> bool:
    """Whether fairseq's task normalised each waveform (``task.normalize``): then
    the model expects zero-mean, unit-variance audio (LARGE models)."""
    value = config_value(checkpoint.task_cfg, "normalize", False, checkpoint.path)
    if not isinstance(value, bool):
        raise fail(checkpoint.path, f"task normalize={value!r} is not a bool",
                   "pass a checkpoint written by fairseq")  # fmt: skip
    return value


def label_sets(checkpoint: FairseqCheckpoint) -> Optional[int]:
    """How many label sets fairseq's HuBERT predicted (``task.labels``), or None."""
    labels = config_value(checkpoint.task_cfg, "labels", None, checkpoint.path)
    return len(labels) if isinstance(labels, (list, tuple)) else None
