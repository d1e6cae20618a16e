"""espnet2/asr/encoder/wav2vec2_transformer_encoder.py: ESPnet parity by default,
each wav2vec 2.0 option, padding invariance, and exact parity with Hugging Face."""

import inspect
import logging
import textwrap
from typing import List, Tuple

import pytest
import torch
import torch.nn.functional as F
import yaml
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from transformers import Wav2Vec2Config, Wav2Vec2Model
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2Encoder

from espnet2.asr.ctc import CTC
from espnet2.asr.encoder import wav2vec2_transformer_encoder
from espnet2.asr.encoder.transformer_encoder import TransformerEncoder
from espnet2.asr.encoder.wav2vec2_transformer_encoder import Wav2Vec2TransformerEncoder
from espnet2.ssl.release.hf.keys import hf_encoder_to_espnet  # verified key mapping

DIM = 16
TOLERANCE = 1e-10


def encoder_kwargs(**overrides) -> dict:
    """Small encoder arguments; dropouts are non-zero so train mode is random."""
    kwargs = dict(
        input_size=DIM,
        output_size=DIM,
        attention_heads=2,
        linear_units=32,
        num_blocks=2,
        dropout_rate=0.1,
        positional_dropout_rate=0.1,
        attention_dropout_rate=0.1,
        input_layer="wav2vec",
        pos_enc_layer_type="conv",
        normalize_before=False,
        use_flash_attn=False,
    )
    kwargs.update(overrides)
    return kwargs


def build(cls=Wav2Vec2TransformerEncoder, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return cls(**encoder_kwargs(**overrides)).double().eval()


def padded_batch(lengths: List[int], dim: int = DIM, seed: int = 1):
    """(B, T, D) float64 batch whose padded frames hold random junk, and (B,)."""
    generator = torch.Generator().manual_seed(seed)
    xs = torch.randn(len(lengths), max(lengths), dim, generator=generator)
    return xs.double(), torch.tensor(lengths)


def layer_outputs(encoder, xs, ilens) -> List[torch.Tensor]:
    """Every layer's output (B, T, D), the last one being the encoder output."""
    (_, per_layer), _, _ = encoder(xs, ilens, return_all_hs=True)
    return per_layer


def max_diff_on_valid_frames(a: torch.Tensor, b: torch.Tensor, ilens) -> float:
    return max((a[i, :n] - b[i, :n]).abs().max().item() for i, n in enumerate(ilens))


ESPNET_CONFIGS = {
    "wav2vec_conv_post_ln": dict(),
    "wav2vec_conv_pre_ln": dict(normalize_before=True),
    "linear_abs_pos": dict(input_layer="linear", pos_enc_layer_type="abs_pos"),
    "linear_interctc_conditioning": dict(
        input_layer="linear",
        pos_enc_layer_type="abs_pos",
        normalize_before=True,
        num_blocks=3,
        interctc_layer_idx=[1, 2],
        interctc_use_conditioning=True,
    ),
}


def with_ctc_conditioning(encoder) -> CTC:
    """A CTC module and the encoder's conditioning layer (ESPnet's model sets it)."""
    torch.manual_seed(5)
    ctc = CTC(odim=5, encoder_output_size=DIM).double()
    encoder.conditioning_layer = torch.nn.Linear(5, DIM).double()
    return ctc


def test_constructor_accepts_every_espnet_argument_with_the_same_default():
    ours = inspect.signature(Wav2Vec2TransformerEncoder.__init__).parameters
    espnet = inspect.signature(TransformerEncoder.__init__).parameters
    for name, param in espnet.items():
        default = ours[name].default
        if isinstance(param.default, list):  # ESPnet's [] is our ()
            default = list(default)
        assert default == param.default, name


@pytest.mark.parametrize("config", ESPNET_CONFIGS.values(), ids=ESPNET_CONFIGS.keys())
def test_default_options_build_the_module_tree_of_espnet(config):
    ours, espnet = build(**config), build(TransformerEncoder, **config)
    # class names: weight norm makes a new ParametrizedConv1d class per module
    modules = [(n, type(m).__name__) for n, m in ours.named_modules() if n]
    assert modules == [(n, type(m).__name__) for n, m in espnet.named_modules() if n]
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert ours_shapes == {k: v.shape for k, v in espnet.state_dict().items()}


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "exact"])
@pytest.mark.parametrize("config", ESPNET_CONFIGS.values(), ids=ESPNET_CONFIGS.keys())
def test_default_options_give_espnet_outputs_exactly(config, use_sdpa):
    # use_sdpa is ESPnet's own MultiHeadedAttention option, off in its encoder
    ours = build(**config, use_sdpa=use_sdpa)
    espnet = build(TransformerEncoder, **config)
    for layer in espnet.encoders:
        layer.self_attn.use_sdpa = use_sdpa
    espnet.load_state_dict(ours.state_dict())
    ctc = None
    if config.get("interctc_use_conditioning"):
        ctc = with_ctc_conditioning(ours)
        espnet.conditioning_layer = ours.conditioning_layer
    xs, ilens = padded_batch([9, 13, 6])
    pad_masks = make_pad_mask(ilens)
    for kwargs in (dict(), dict(masks=pad_masks, return_all_hs=True)):
        got = ours(xs, ilens, ctc=ctc, **kwargs)
        want = espnet(xs, ilens, ctc=ctc, **kwargs)
        assert torch.equal(got[1], want[1])
        assert got[2] is None and want[2] is None
        got_flat, want_flat = _flatten(got[0]), _flatten(want[0])
        assert len(got_flat) == len(want_flat)
        for a, b in zip(got_flat, want_flat):
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def _flatten(out) -> list:
    """Flatten ESPnet's (output, [tensor | (layer, tensor), ...]) convention."""
    if isinstance(out, torch.Tensor):
        return [out]
    flat = [out[0]]
    for item in out[1]:
        flat.extend(item if isinstance(item, tuple) else [item])
    return flat


@pytest.mark.parametrize(
    "activation, function",
    [
        ("relu", F.relu),
        ("gelu", lambda x: 0.5 * x * (1.0 + torch.erf(x / 2**0.5))),
        ("swish", lambda x: x * torch.sigmoid(x)),
    ],
)
def test_ffn_activation_selects_the_activation_between_the_ffn_linears(
    activation, function
):
    feed_forward = build(ffn_activation=activation).encoders[1].feed_forward
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    want = feed_forward.w_2(function(feed_forward.w_1(x)))
    assert torch.allclose(feed_forward(x), want, atol=1e-12, rtol=0)


def test_gelu_ffn_differs_from_espnets_relu_ffn():
    xs, ilens = padded_batch([8, 5])
    relu_out = build()(xs, ilens)[0]
    gelu_out = build(ffn_activation="gelu")(xs, ilens)[0]
    assert max_diff_on_valid_frames(relu_out, gelu_out, ilens) > 1e-3


def test_activation_dropout_rate_none_keeps_dropout_rate_inside_the_ffn():
    feed_forward = build(dropout_rate=0.5).train().encoders[0].feed_forward
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    assert not torch.equal(feed_forward(x), feed_forward.eval()(x))


def test_activation_dropout_rate_zero_makes_the_ffn_deterministic_in_training():
    feed_forward = build(dropout_rate=0.5, activation_dropout_rate=0.0).train()
    feed_forward = feed_forward.encoders[0].feed_forward
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    assert torch.equal(feed_forward(x), feed_forward.eval()(x))


def test_activation_dropout_rate_drops_after_the_activation_in_training():
    encoder = build(dropout_rate=0.0, activation_dropout_rate=0.5).train()
    feed_forward = encoder.encoders[0].feed_forward
    x = torch.randn(2, 5, DIM, dtype=torch.float64)
    torch.manual_seed(3)
    hidden = F.dropout(F.relu(feed_forward.w_1(x)), p=0.5, training=True)
    want = feed_forward.w_2(hidden)
    torch.manual_seed(3)
    assert torch.equal(feed_forward(x), want)


def test_pos_conv_residual_adds_the_input_to_the_positional_embedding():
    plain, residual = build(), build(pos_conv_residual=True)
    x = torch.randn(2, 20, DIM, dtype=torch.float64)
    assert torch.equal(residual.embed[0](x), x + plain.embed[0](x))


@pytest.mark.parametrize("kernel_size", [16, 15])
def test_pos_conv_kernel_and_groups_shape_a_same_padded_weight_normed_conv(
    kernel_size,
):
    encoder = build(pos_conv_kernel_size=kernel_size, pos_conv_groups=4)
    conv = encoder.embed[0].convs[0]
    assert conv.kernel_size == (kernel_size,) and conv.groups == 4
    # weight norm over dim=2: one norm per kernel tap, as fairseq and HF
    assert conv.parametrizations.weight.original0.shape == (1, 1, kernel_size)
    x = torch.randn(2, 20, DIM, dtype=torch.float64)
    y = conv(x.transpose(1, 2))  # (B, T, D) -> (B, D, T + 1 - kernel_size % 2)
    want = F.gelu(y[..., :20]).transpose(1, 2)  # (B, D, T) -> (B, T, D)
    assert torch.equal(encoder.embed[0](x), want)


def test_pos_conv_runs_in_float32_under_cpu_bf16_autocast():
    """8 channels per group with kernel 8: a shape whose oneDNN bf16 grouped conv
    is wrong on AMX CPUs (relative error ~1, see ``_embed``)."""
    encoder = build(
        input_size=32,
        output_size=32,
        pos_conv_kernel_size=8,
        pos_conv_groups=4,
        pos_conv_residual=True,
        embed_layer_norm=True,
    ).float()
    x = torch.randn(2, 20, 32, generator=torch.Generator().manual_seed(0))
    keep = torch.ones(2, 1, 20, dtype=torch.bool)
    want, _ = encoder._embed(x, keep)
    reference, _, _ = encoder(x, torch.tensor([20, 20]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = encoder._embed(x, keep)
        out, _, _ = encoder(x, torch.tensor([20, 20]))
    assert got.dtype == torch.float32 and torch.equal(got, want)
    # the layers run in bf16 (unit roundoff 2**-8): 10 roundoffs in norm
    assert (out.float() - reference).norm() <= 10 * 2**-8 * reference.norm()


@pytest.mark.parametrize(
    "embed_layer_norm, normalize_before, expected",
    [
        (None, False, torch.nn.Identity),
        (None, True, torch.nn.LayerNorm),
        (True, False, torch.nn.LayerNorm),
        (False, True, torch.nn.Identity),
    ],
)
def test_embed_layer_norm_decides_the_norm_after_the_positional_embedding(
    embed_layer_norm, normalize_before, expected
):
    encoder = build(
        embed_layer_norm=embed_layer_norm, normalize_before=normalize_before
    )
    assert type(encoder.embed[1]) is expected


def test_embed_layer_norm_normalises_the_positional_embedding_output():
    encoder = build(embed_layer_norm=True, pos_conv_residual=True)
    x = torch.randn(2, 20, DIM, dtype=torch.float64)
    norm = encoder.embed[1]
    want = F.layer_norm(encoder.embed[0](x), (DIM,), norm.weight, norm.bias, norm.eps)
    assert torch.equal(encoder.embed(x), want)


def test_layer_norm_eps_sets_every_layer_norm_of_the_encoder():
    encoder = build(layer_norm_eps=1e-5, normalize_before=True, qk_norm=True)
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1 + 4 * 2 + 1  # embed, 2 layers x (2 + q/k), after_norm
    assert all(norm.eps == 1e-5 for norm in norms)


def test_layer_norm_eps_none_keeps_espnets_eps():
    encoder = build(normalize_before=True)
    assert encoder.embed[1].eps == 1e-5  # torch.nn.LayerNorm in the input layer
    assert encoder.encoders[0].norm1.eps == 1e-12  # ESPnet's LayerNorm
    assert encoder.after_norm.eps == 1e-12


def test_layer_norm_eps_changes_the_output():
    xs, ilens = padded_batch([8, 5])
    default_out = build()(xs, ilens)[0]
    eps_out = build(layer_norm_eps=1e-5)(xs, ilens)[0]
    assert max_diff_on_valid_frames(default_out, eps_out, ilens) > 1e-8


def test_zero_padded_frames_leaves_the_callers_tensor_untouched():
    xs, ilens = padded_batch([8, 5])
    before = xs.clone()
    build(zero_padded_frames=True)(xs, ilens)
    assert torch.equal(xs, before)


def _alone_and_batched(zero_padded_frames: bool) -> Tuple[list, list]:
    """Per-layer outputs of a 7-frame utterance alone and beside a 12-frame one."""
    encoder = build(zero_padded_frames=zero_padded_frames, pos_conv_residual=True)
    batch, ilens = padded_batch([7, 12])  # frames 7..11 of utterance 0 are junk
    alone = layer_outputs(encoder, batch[:1, :7], ilens[:1])
    batched = layer_outputs(encoder, batch, ilens)
    return alone, [out[:1, :7] for out in batched]


def test_encoder_output_does_not_depend_on_batch_neighbours_with_zero_padded_frames():
    alone, batched = _alone_and_batched(zero_padded_frames=True)
    for a, b in zip(alone, batched):
        assert (a - b).abs().max().item() <= TOLERANCE


def test_padding_leaks_into_valid_frames_without_zero_padded_frames():
    alone, batched = _alone_and_batched(zero_padded_frames=False)
    assert all((a - b).abs().max().item() > 1e-3 for a, b in zip(alone, batched))


def test_layer_drop_rate_alone_drops_no_layer_as_in_espnet(caplog):
    with caplog.at_level(logging.WARNING):
        encoder = build(layer_drop_rate=1.0, dropout_rate=0.0, attention_dropout_rate=0)
    assert "apply_layer_drop" in caplog.text
    xs, ilens = padded_batch([8, 5])
    assert torch.equal(encoder.train()(xs, ilens)[0], encoder.eval()(xs, ilens)[0])


def test_apply_layer_drop_skips_layers_in_training_only():
    encoder = build(
        layer_drop_rate=1.0,
        apply_layer_drop=True,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    xs, ilens = padded_batch([8, 5])
    per_layer = layer_outputs(encoder.train(), xs, ilens)
    assert len(per_layer) == 2
    assert all(torch.equal(out, encoder.embed(xs)) for out in per_layer)
    assert not torch.equal(layer_outputs(encoder.eval(), xs, ilens)[0], per_layer[0])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(ffn_activation="tanh"), "ffn_activation"),
        (dict(ffn_activation="gelu", positionwise_layer_type="conv1d"), "linear"),
        (dict(pos_conv_residual=True, pos_enc_layer_type="abs_pos"), "conv"),
        (dict(pos_conv_groups=4, input_layer="conv2d"), "conv"),
        (dict(embed_layer_norm=True, input_layer="linear"), "wav2vec"),
    ],
)
def test_inconsistent_options_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


# Parity with Hugging Face transformers' Wav2Vec2Encoder (post-LN, i.e. BASE).

HF_DIM, HF_LAYERS = 32, 2
WAV2VEC2_OPTIONS = dict(
    ffn_activation="gelu",
    activation_dropout_rate=0.0,
    pos_conv_residual=True,
    pos_conv_kernel_size=16,
    pos_conv_groups=4,
    embed_layer_norm=True,
    layer_norm_eps=1e-5,
    zero_padded_frames=True,
)


def hf_model() -> Wav2Vec2Model:
    """A tiny float64 Wav2Vec2Model with random (non-default) encoder weights."""
    config = Wav2Vec2Config(
        hidden_size=HF_DIM,
        num_hidden_layers=HF_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        num_conv_pos_embeddings=16,  # even, like BASE's 128
        num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=False,
        feat_extract_norm="group",
        conv_dim=(16, 16),
        conv_kernel=(10, 3),
        conv_stride=(5, 2),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        apply_spec_augment=False,
        mask_time_prob=0.0,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    model = Wav2Vec2Model(config).double().eval()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in model.encoder.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "norm" in name and name.endswith("weight"):
                noise = 1.0 + 0.2 * noise
            elif name.endswith("original0"):  # weight-norm magnitudes
                noise = 0.5 + noise.abs()
            param.copy_(0.3 * noise if name.endswith("bias") else noise)
    return model


def run_hf(model: Wav2Vec2Model):
    """HF hidden states and the encoder's input (B, T, D) with frame lengths (B,)."""
    waveform = torch.randn(3, 400, generator=torch.Generator().manual_seed(4))
    attention_mask = torch.ones(3, 400, dtype=torch.long)
    attention_mask[1, 250:] = 0
    attention_mask[2, 130:] = 0
    captured = {}

    def keep_input(module, args, kwargs):
        captured["input"] = args[0].clone()  # the encoder zeroes padding in place

    hook = model.encoder.register_forward_pre_hook(keep_input, with_kwargs=True)
    with torch.no_grad():
        out = model(
            waveform.double(), attention_mask=attention_mask, output_hidden_states=True
        )
    hook.remove()
    ilens = model._get_feat_extract_output_lengths(attention_mask.sum(-1))
    return out, captured["input"], ilens


def run_ours(encoder, xs, ilens) -> List[torch.Tensor]:
    """[embed output, layer 1, ..., final output], each (B, T, D)."""
    captured = {}
    hook = encoder.embed.register_forward_hook(
        lambda module, args, out: captured.update(embed=out)
    )
    with torch.no_grad():
        (final, per_layer), olens, _ = encoder(
            xs, ilens, masks=make_pad_mask(ilens), return_all_hs=True
        )
    hook.remove()
    assert torch.equal(olens, ilens)
    return [captured["embed"], *per_layer, final]


def hf_sized_encoder(**options) -> Wav2Vec2TransformerEncoder:
    """Our encoder with the sizes of hf_model(), no dropout, and the options."""
    kwargs = encoder_kwargs(
        input_size=HF_DIM,
        output_size=HF_DIM,
        attention_heads=4,
        linear_units=64,
        num_blocks=HF_LAYERS,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        positional_dropout_rate=0.0,
    )
    return Wav2Vec2TransformerEncoder(**kwargs, **{**WAV2VEC2_OPTIONS, **options})


def wav2vec2_encoder(model: Wav2Vec2Model, **options) -> Wav2Vec2TransformerEncoder:
    """hf_sized_encoder() holding the model's encoder weights, float64, eval."""
    encoder = hf_sized_encoder(**options).double()
    state = hf_encoder_to_espnet(model.encoder.state_dict())
    own_keys = encoder.state_dict().keys()
    encoder.load_state_dict({k: v for k, v in state.items() if k in own_keys})
    return encoder.eval()


def test_hf_conversion_maps_every_key_one_to_one():
    model = hf_model()
    state = hf_encoder_to_espnet(model.encoder.state_dict())
    assert len(state) == len(model.encoder.state_dict())
    hf_sized_encoder().double().load_state_dict(state, strict=True)


def test_encoder_matches_hugging_face_wav2vec2_hidden_states():
    model = hf_model()
    hf_out, xs, ilens = run_hf(model)
    assert len(hf_out.hidden_states) == HF_LAYERS + 1
    ours = run_ours(wav2vec2_encoder(model), xs, ilens)
    hf_states = [*hf_out.hidden_states, hf_out.last_hidden_state]
    for index, (mine, theirs) in enumerate(zip(ours, hf_states)):
        diff = max_diff_on_valid_frames(mine, theirs, ilens.tolist())
        assert diff <= TOLERANCE, f"hidden state {index} differs by {diff}"


@pytest.mark.parametrize(
    "espnet_value",
    [
        dict(ffn_activation="relu"),
        dict(pos_conv_residual=False),
        dict(embed_layer_norm=False),
        dict(layer_norm_eps=None),
        dict(zero_padded_frames=False),
    ],
    ids=lambda option: next(iter(option)),
)
def test_each_option_is_needed_for_hugging_face_parity(espnet_value):
    model = hf_model()
    hf_out, xs, ilens = run_hf(model)
    final = run_ours(wav2vec2_encoder(model, **espnet_value), xs, ilens)[-1]
    diff = max_diff_on_valid_frames(final, hf_out.last_hidden_state, ilens.tolist())
    assert diff > 1e-8


def test_documented_base_encoder_conf_has_the_parameters_of_hf_wav2vec2_base():
    doc = wav2vec2_transformer_encoder.__doc__
    conf = yaml.safe_load(textwrap.dedent(doc.split("::\n\n", 1)[1].split("\n\n")[0]))
    with torch.device("meta"):  # shapes only, nothing allocated
        ours = Wav2Vec2TransformerEncoder(input_size=768, **conf["encoder_conf"])
        hf = Wav2Vec2Encoder(Wav2Vec2Config())  # the defaults are BASE
    assert conf["encoder_conf"]["layer_norm_eps"] == 1e-5
    hf_shapes = hf_encoder_to_espnet(hf.state_dict())
    assert {k: v.shape for k, v in hf_shapes.items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
