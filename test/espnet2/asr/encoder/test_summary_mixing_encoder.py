"""espnet2/asr/encoder/summary_mixing_encoder.py: batch and padding independence,
short utterances, per-layer outputs, lengths, layer drop, the masked convolution
module, option errors, registration and gradients."""

from pathlib import Path
from typing import List

import pytest
import torch
import torch.nn.functional as F
import yaml
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from espnet.nets.pytorch_backend.transformer.subsampling import (
    Conv2dSubsampling,
    Conv2dSubsampling2,
    Conv2dSubsampling6,
    Conv2dSubsampling8,
    TooShortUttError,
)

from espnet2.asr.encoder.summary_mixing_encoder import (
    MaskedConvolutionModule,
    SummaryMixingEncoder,
)
from espnet2.asr.layers.summary_mixing import SummaryMixing

DIM = 32
LENGTHS = [12, 5, 1, 0]
MAX_LEN = 14
TOLERANCE = 1e-10  # float64
CONFIGS = {
    "summary_mixing": dict(),
    "summary_mixing_lite": dict(mixer="summary_mixing_lite"),
    "self_attention_rel_pos": dict(
        mixer="self_attention", pos_enc_layer_type="rel_pos"
    ),
    "self_attention_abs_pos": dict(
        mixer="self_attention", pos_enc_layer_type="abs_pos"
    ),
    "batch_norm": dict(cnn_module_norm="batch_norm"),
    "scaled_abs_pos": dict(pos_enc_layer_type="scaled_abs_pos"),
    "plain_blocks": dict(
        macaron_style=False, use_cnn_module=False, mixer_layer_norm=False
    ),
}
configs = pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())


def perturb(module: torch.nn.Module, seed: int = 1) -> None:
    """Move every parameter and norm statistic off its initial value (zero biases,
    unit LayerNorm gains, BatchNorm's 0/1 statistics) so that each one matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(0.1 * noise)
        for name, buffer in module.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(1.0 + torch.rand(buffer.shape, generator=generator))


def build(input_layer=None, input_size=DIM, **kwargs) -> SummaryMixingEncoder:
    """A tiny float64 encoder in eval mode with perturbed weights."""
    torch.manual_seed(0)
    options = dict(
        output_size=DIM,
        attention_heads=4,
        linear_units=64,
        num_blocks=2,
        cnn_module_kernel=5,
        input_layer=input_layer,
    )
    encoder = SummaryMixingEncoder(input_size, **{**options, **kwargs}).double()
    perturb(encoder)
    return encoder.eval()


def batch(seed=0, garbage_scale=10.0, dim=DIM, lengths=LENGTHS, max_len=MAX_LEN):
    """(B, T, D) float64 with random garbage on padded frames, lengths (B,), mask."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max_len, dim, generator=generator)
    junk = garbage_scale * torch.randn(x.shape, generator=generator)
    lens = torch.tensor(lengths)
    pad = torch.arange(max_len)[None, :] >= lens[:, None]  # (B, T)
    return torch.where(pad[..., None], junk, x).double(), lens, pad


def all_outputs(encoder, x, lens, **kwargs) -> List[torch.Tensor]:
    """[block 1, ..., block N, final], each (B, T, D)."""
    (final, layers), _, _ = encoder(x, lens, return_all_hs=True, **kwargs)
    return [*layers, final]


# ---------------------------------------------------------------- independence
@pytest.mark.parametrize("input_layer", [None, "linear"])
@configs
def test_an_utterance_gives_the_same_outputs_alone_as_in_a_padded_batch(
    options, input_layer
):
    encoder = build(input_layer=input_layer, **options)
    x, lens, _ = batch()
    with torch.no_grad():
        batched = all_outputs(encoder, x, lens)
        for b, length in enumerate(LENGTHS):
            alone = all_outputs(encoder, x[b : b + 1, :length], lens[b : b + 1])
            for one, many in zip(alone, batched):
                assert one.shape == (1, length, DIM)
                torch.testing.assert_close(
                    one[0], many[b, :length], atol=TOLERANCE, rtol=0
                )


@configs
def test_padded_input_values_do_not_change_valid_outputs(options):
    encoder = build(**options)
    x, lens, pad = batch(garbage_scale=0.0)
    changed, _, _ = batch(garbage_scale=1e3)
    assert not torch.equal(x, changed)
    with torch.no_grad():
        first = all_outputs(encoder, x, lens)
        second = all_outputs(encoder, changed, lens)
    for a, b in zip(first, second):
        torch.testing.assert_close(a[~pad], b[~pad], atol=TOLERANCE, rtol=0)


@configs
def test_gradients_do_not_reach_padded_input_frames(options):
    encoder = build(**options, dropout_rate=0.0, positional_dropout_rate=0.0)
    x, lens, pad = batch()
    x.requires_grad_(True)
    sum(out[~pad].sum() for out in all_outputs(encoder, x, lens)).backward()
    assert torch.equal(x.grad[pad], torch.zeros_like(x.grad[pad]))
    assert x.grad[~pad].abs().min() > 0


# ---------------------------------------------------------------- short inputs
@configs
def test_zero_and_one_frame_utterances_give_finite_outputs(options):
    encoder = build(**options)
    with torch.no_grad():
        for lengths, max_len in (([1, 0], 1), ([0, 0], 3), ([0], 0)):
            x, lens, _ = batch(lengths=lengths, max_len=max_len)
            outputs = all_outputs(encoder, x, lens)
            _, olens, _ = encoder(x, lens)
            assert olens.tolist() == lengths
            for out in outputs:
                assert out.shape == (len(lengths), max_len, DIM)
                assert torch.isfinite(out).all()


def test_an_input_too_short_for_the_subsampling_raises_too_short_utt_error():
    encoder = build(input_layer="conv2d2", input_size=20)
    x, lens, _ = batch(dim=20, lengths=[6, 6], max_len=6)
    with pytest.raises(TooShortUttError):
        encoder(x, lens)


# ---------------------------------------------------------------- outputs, lengths
def test_return_all_hs_gives_each_block_output_and_the_normed_last_as_final():
    encoder = build(num_blocks=3)
    x, lens, _ = batch()
    with torch.no_grad():
        (final, layers), olens, _ = encoder(x, lens, return_all_hs=True)
        plain, plain_olens, states = encoder(x, lens)
    assert len(layers) == len(encoder.encoders) == 3
    assert all(layer.shape == (len(LENGTHS), MAX_LEN, DIM) for layer in layers)
    assert not torch.equal(layers[0], layers[1])
    torch.testing.assert_close(final, encoder.after_norm(layers[-1]), atol=0, rtol=0)
    assert torch.equal(plain, final) and torch.equal(olens, plain_olens)
    assert states is None


def test_a_pad_mask_gives_the_same_result_as_the_lengths():
    encoder = build()
    x, lens, pad = batch(lengths=[12, 5, 1], max_len=MAX_LEN)
    with torch.no_grad():
        by_lengths, olens, _ = encoder(x, lens, return_all_hs=True)
        wrong_lens = torch.full_like(lens, MAX_LEN)  # ignored when masks is given
        for mask in (pad, make_pad_mask(lens, maxlen=MAX_LEN)):
            by_mask, mask_olens, _ = encoder(
                x, wrong_lens, masks=mask, return_all_hs=True
            )
            assert torch.equal(olens, mask_olens) and olens.tolist() == [12, 5, 1]
            for a, b in zip([by_lengths[0], *by_lengths[1]], [by_mask[0], *by_mask[1]]):
                assert torch.equal(a, b)


def test_output_size_is_the_model_width():
    assert build(input_size=24, output_size=24).output_size() == 24
    encoder = build(input_layer="linear", input_size=20, output_size=24)
    out, _, _ = encoder(*batch(dim=20)[:2])
    assert encoder.output_size() == 24 and out.shape[-1] == 24


@pytest.mark.parametrize("input_layer", [None, "linear"])
def test_input_layers_without_subsampling_keep_the_lengths(input_layer):
    encoder = build(input_layer=input_layer, input_size=DIM)
    x, lens, _ = batch()
    out, olens, _ = encoder(x, lens)
    assert out.shape == (len(LENGTHS), MAX_LEN, DIM) and torch.equal(olens, lens)


ESPNET_SUBSAMPLING = {
    "conv2d": Conv2dSubsampling,
    "conv2d2": Conv2dSubsampling2,
    "conv2d6": Conv2dSubsampling6,
    "conv2d8": Conv2dSubsampling8,
}


@pytest.mark.parametrize("input_layer", ESPNET_SUBSAMPLING)
def test_subsampled_lengths_are_espnets_and_match_the_output_shape(input_layer):
    encoder = build(input_layer=input_layer, input_size=20)
    espnet = ESPNET_SUBSAMPLING[input_layer](20, DIM, 0.0).double().eval()
    x, lens, pad = batch(dim=20, lengths=[40, 23, 17], max_len=40)
    with torch.no_grad():
        out, olens, _ = encoder(x, lens)
        espnet_out, espnet_keep = espnet(x, ~pad[:, None, :])  # (B, 1, T') valid
        assert out.shape == espnet_out.shape
        assert torch.equal(olens, espnet_keep.sum(dim=(1, 2)))
        for b, length in enumerate(lens.tolist()):  # no padding: every frame counts
            alone, alone_olens, _ = encoder(x[b : b + 1, :length], lens[b : b + 1])
            shape = espnet(x[b : b + 1, :length], None)[0].shape
            assert alone_olens.tolist() == [alone.shape[1]] == [shape[1]]


def test_conv2d2_subsampling_halves_and_trims_three_frames():
    encoder = build(input_layer="conv2d2", input_size=20)
    for length in (7, 8, 23, 40):
        x, lens, _ = batch(dim=20, lengths=[length], max_len=length)
        out, olens, _ = encoder(x, lens)
        assert olens.tolist() == [out.shape[1]] == [(length - 1) // 2 - 2]


# ---------------------------------------------------------------- layer drop
def test_layer_drop_rate_one_skips_every_block_in_training():
    encoder = build(layer_drop_rate=1.0, dropout_rate=0.0, positional_dropout_rate=0.0)
    x, lens, _ = batch()
    encoder.train()
    (final, layers), olens, _ = encoder(x, lens, return_all_hs=True)
    assert len(layers) == 2 and all(torch.equal(layer, x) for layer in layers)
    assert torch.equal(final, encoder.after_norm(x)) and torch.equal(olens, lens)


def test_every_block_runs_in_eval_mode_whatever_the_layer_drop_rate():
    encoder = build(layer_drop_rate=1.0)
    x, lens, pad = batch()
    with torch.no_grad():
        layers = all_outputs(encoder, x, lens)[:-1]
        xs = x
        for block, out in zip(encoder.encoders, layers):
            xs = block(xs, pad)
            torch.testing.assert_close(out, xs, atol=0, rtol=0)


# ---------------------------------------------------------------- convolution module
def manual_convolution_module(conv, x, pad) -> torch.Tensor:
    """The module's maths by hand: pointwise, GLU, zeroed padding, a depthwise
    convolution written as a loop over kernel taps, norm, swish, pointwise."""
    size, kernel = x.shape[-1], conv.depthwise.kernel_size[0]
    h = x @ conv.pointwise_in.weight[:, :, 0].T + conv.pointwise_in.bias  # (B, T, 2D)
    z = h[..., :size] * torch.sigmoid(h[..., size:])  # GLU
    z = z * (~pad)[..., None]  # padded frames are 0
    y = conv.depthwise.bias.expand_as(z).clone()
    frames = z.shape[1]
    for t in range(frames):
        for k in range(kernel):
            source = t + k - kernel // 2
            if 0 <= source < frames:
                y[:, t] = y[:, t] + conv.depthwise.weight[:, 0, k] * z[:, source]
    norm = conv.norm
    if isinstance(norm, torch.nn.LayerNorm):
        y = F.layer_norm(y, (size,), norm.weight, norm.bias, norm.eps)
    else:
        y = (y - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
        y = y * norm.weight + norm.bias
    y = y * torch.sigmoid(y)
    return y @ conv.pointwise_out.weight[:, :, 0].T + conv.pointwise_out.bias


def convolution_module(norm: str) -> MaskedConvolutionModule:
    torch.manual_seed(0)
    conv = MaskedConvolutionModule(DIM, 5, norm, "swish", 1e-5).double()
    perturb(conv)
    return conv.eval()


@pytest.mark.parametrize("norm", ["layer_norm", "batch_norm"])
def test_convolution_module_is_a_depthwise_convolution_of_zeroed_padding(norm):
    conv = convolution_module(norm)
    x, _, pad = batch()
    with torch.no_grad():
        got, want = conv(x, pad), manual_convolution_module(conv, x, pad)
    torch.testing.assert_close(got[~pad], want[~pad], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("norm", ["layer_norm", "batch_norm"])
def test_convolution_module_output_does_not_depend_on_neighbours_or_padding(norm):
    conv = convolution_module(norm)
    x, _, pad = batch()
    with torch.no_grad():
        batched = conv(x, pad)
        for b, length in enumerate(LENGTHS):
            alone = conv(x[b : b + 1, :length], pad[b : b + 1, :length])
            torch.testing.assert_close(
                alone[0], batched[b, :length], atol=TOLERANCE, rtol=0
            )


def test_convolution_module_passes_a_batch_without_frames_through():
    x = torch.zeros(2, 0, DIM, dtype=torch.float64)
    out = convolution_module("layer_norm")(x, torch.zeros(2, 0, dtype=torch.bool))
    assert out.shape == (2, 0, DIM)


@pytest.mark.parametrize("kernel", [4, 0])
def test_an_even_convolution_kernel_raises_a_value_error(kernel):
    with pytest.raises(ValueError, match=f"must be odd, got {kernel}"):
        MaskedConvolutionModule(DIM, kernel, "layer_norm", "swish", 1e-5)


# ---------------------------------------------------------------- options
@pytest.mark.parametrize(
    "options, message",
    [
        (dict(normalize_before=False), "pre-LN"),
        (dict(mixer="linear_attention"), "mixer must be one of"),
        (dict(pos_enc_layer_type="rel_pos"), "'rel_pos' only serves self_attention"),
        (
            dict(mixer="summary_mixing_lite", pos_enc_layer_type="rel_pos"),
            "only serves self_attention",
        ),
        (dict(pos_enc_layer_type="learned"), "pos_enc_layer_type must be one of"),
        (dict(input_layer="conv3d"), "input_layer must be one of"),
        (dict(input_size=20), r"input_size \(20\) == output_size \(32\)"),
        (dict(cnn_module_kernel=4), "must be odd"),
        (dict(cnn_module_norm="group_norm"), "cnn_module_norm must be one of"),
        (dict(attention_heads=5), "divisible by num_heads"),
        (dict(activation_type="tanh"), "activation must be one of"),
    ],
)
def test_bad_options_raise_a_value_error_that_names_the_problem(options, message):
    with pytest.raises(ValueError, match=message):
        build(**options)


def test_the_encoder_is_registered_in_the_ssl_task():
    from espnet2.tasks.ssl import encoder_choices

    assert encoder_choices.get_class("summary_mixing") is SummaryMixingEncoder


@configs
def test_a_backward_pass_gives_every_parameter_a_finite_gradient(options):
    encoder = build(**options).train()
    x, lens, pad = batch()
    sum(out[~pad].pow(2).mean() for out in all_outputs(encoder, x, lens)).backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_a_block_of_the_shipped_base_config_holds_the_references_mixer():
    """The BASE config's encoder_conf through the encoder (one block of the twelve):
    its mixer is the reference's SSL BASE mixer, 1,481,472 parameters, two layers per
    branch, the activation of the Conformer (swish) after each."""
    config = Path(__file__).resolve().parents[4] / "egs2/librispeech/ssl2/conf/tuning"
    config /= "train_ssl_wav2vec2_summary_mixing_base.yaml"
    conf = dict(yaml.safe_load(config.read_text())["encoder_conf"], num_blocks=1)
    encoder = SummaryMixingEncoder(768, **conf)
    (mixer,) = [m for m in encoder.modules() if isinstance(m, SummaryMixing)]
    assert sum(p.numel() for p in mixer.parameters()) == 1_481_472
    for branch in (mixer.local, mixer.summary):
        kinds = [type(m).__name__ for m in branch]
        assert kinds == ["BlockDiagonalLinear", "SiLU"] * 2, kinds  # swish = SiLU
