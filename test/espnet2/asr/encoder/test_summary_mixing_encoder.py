"""SummaryMixingEncoder: batch independence, padding, lengths, layers, registration."""

import pytest
import torch

from espnet2.asr.encoder.summary_mixing_encoder import (
    MaskedConvolutionModule,
    SummaryMixingEncoder,
)

DIM = 32
LENGTHS = [12, 5, 1, 0]
MAX_LEN = 14
MIXERS = [
    dict(mixer="summary_mixing"),
    dict(mixer="summary_mixing_lite"),
    dict(mixer="self_attention", pos_enc_layer_type="rel_pos"),
    dict(mixer="summary_mixing", cnn_module_norm="batch_norm"),
    dict(mixer="summary_mixing", pos_enc_layer_type="scaled_abs_pos"),
]


def build(input_layer=None, input_size=DIM, seed=0, **kwargs) -> SummaryMixingEncoder:
    torch.manual_seed(seed)
    options = dict(
        output_size=DIM,
        attention_heads=4,
        linear_units=64,
        num_blocks=2,
        cnn_module_kernel=5,
        input_layer=input_layer,
    )
    return SummaryMixingEncoder(input_size, **{**options, **kwargs}).double().eval()


def batch(seed=0, garbage=0.0, dim=DIM, lengths=LENGTHS, max_len=MAX_LEN):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max_len, dim, generator=generator).double()
    lens = torch.tensor(lengths)
    pad = torch.arange(max_len)[None, :] >= lens[:, None]
    return x.masked_fill(pad[..., None], garbage), lens, pad


@pytest.mark.parametrize("options", MIXERS)
def test_encoder_output_does_not_depend_on_batch_neighbours(options):
    encoder = build(**options)
    x, lens, _ = batch()
    with torch.no_grad():
        (final, layers), olens, _ = encoder(x, lens, return_all_hs=True)
        assert olens.tolist() == LENGTHS
        for b, length in enumerate(LENGTHS):
            (alone, alone_layers), _, _ = encoder(
                x[b : b + 1, :length], lens[b : b + 1], return_all_hs=True
            )
            torch.testing.assert_close(alone[0], final[b, :length], atol=1e-10, rtol=0)
            for one, many in zip(alone_layers, layers):
                torch.testing.assert_close(one[0], many[b, :length], atol=1e-10, rtol=0)


@pytest.mark.parametrize("options", MIXERS)
def test_padded_input_values_do_not_change_valid_outputs(options):
    encoder = build(**options)
    x, lens, pad = batch(garbage=0.0)
    changed, _, _ = batch(garbage=1e3)
    with torch.no_grad():
        first, _, _ = encoder(x, lens)
        second, _, _ = encoder(changed, lens)
    torch.testing.assert_close(first[~pad], second[~pad], atol=1e-10, rtol=0)


@pytest.mark.parametrize("options", MIXERS)
def test_zero_and_one_frame_utterances_give_finite_outputs(options):
    encoder = build(**options)
    x, lens, _ = batch(lengths=[1, 0], max_len=1)
    out, olens, _ = encoder(x, lens)
    assert out.shape == (2, 1, DIM) and torch.isfinite(out).all()
    assert olens.tolist() == [1, 0]


def test_return_all_hs_gives_one_output_per_block_before_the_final_norm():
    encoder = build(num_blocks=3)
    x, lens, _ = batch()
    (final, layers), _, _ = encoder(x, lens, return_all_hs=True)
    assert len(layers) == len(encoder.encoders) == 3
    assert all(layer.shape == (len(LENGTHS), MAX_LEN, DIM) for layer in layers)
    torch.testing.assert_close(final, encoder.after_norm(layers[-1]))
    plain, _, _ = encoder(x, lens)
    torch.testing.assert_close(plain, final)


def test_a_pad_mask_gives_the_same_result_as_the_lengths():
    encoder = build()
    x, lens, pad = batch()
    by_lengths, olens, _ = encoder(x, lens)
    by_mask, mask_olens, _ = encoder(x, torch.full_like(lens, MAX_LEN), masks=pad)
    torch.testing.assert_close(by_lengths, by_mask)
    assert torch.equal(olens, mask_olens)


@pytest.mark.parametrize("input_layer", ["linear", "conv2d2", "conv2d"])
def test_input_layers_subsample_and_count_output_frames(input_layer):
    encoder = build(input_layer=input_layer, input_size=20)
    assert encoder.output_size() == DIM
    x, lens, _ = batch(dim=20, lengths=[40, 23], max_len=40)
    out, olens, _ = encoder(x, lens)
    factor = {"linear": 1, "conv2d2": 2, "conv2d": 4}[input_layer]
    assert out.shape[1] == olens.max()
    assert abs(out.shape[1] - 40 / factor) <= 3
    assert olens[1] < olens[0] and torch.isfinite(out).all()


def test_layer_drop_skips_every_block_in_training_only():
    encoder = build(layer_drop_rate=1.0, dropout_rate=0.0, positional_dropout_rate=0.0)
    x, lens, _ = batch()
    encoder.train()
    (_, layers), _, _ = encoder(x, lens, return_all_hs=True)
    assert all(torch.equal(layer, x) for layer in layers)
    encoder.eval()
    (_, layers), _, _ = encoder(x, lens, return_all_hs=True)
    assert not torch.equal(layers[0], x)


def test_gradients_reach_every_parameter_and_are_finite():
    encoder = build(mixer="summary_mixing").train()
    x, lens, pad = batch()
    out, _, _ = encoder(x, lens)
    out[~pad].pow(2).mean().backward()
    for name, param in encoder.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_the_convolution_module_never_reads_padded_frames():
    torch.manual_seed(0)
    conv = MaskedConvolutionModule(DIM, 5, "layer_norm", "swish", 1e-5).double()
    x, lens, pad = batch(garbage=0.0)
    changed, _, _ = batch(garbage=-50.0)
    first, second = conv(x, pad), conv(changed, pad)
    assert torch.equal(first[~pad], second[~pad])
    alone = conv(x[1:2, :5], pad[1:2, :5])
    torch.testing.assert_close(alone[0], first[1, :5], atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(normalize_before=False), "pre-LN"),
        (dict(mixer="linear_attention"), "mixer must be one of"),
        (dict(pos_enc_layer_type="rel_pos"), "only serves self_attention"),
        (dict(pos_enc_layer_type="learned"), "pos_enc_layer_type must be one of"),
        (dict(input_layer="conv3d"), "input_layer must be one of"),
        (dict(input_size=20), "input_size \\(20\\) == output_size"),
        (dict(cnn_module_kernel=4), "must be odd"),
        (dict(cnn_module_norm="group_norm"), "cnn_module_norm must be one of"),
        (dict(attention_heads=5), "divisible by num_heads"),
    ],
)
def test_bad_options_raise_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        build(**options)


def test_the_encoder_is_registered_in_the_ssl_task():
    from espnet2.tasks.ssl import encoder_choices

    assert encoder_choices.get_class("summary_mixing") is SummaryMixingEncoder
