"""SummaryMixing against a naive implementation of the paper's equations.

The naive version below is written straight from Eq. 1-2 of Parcollet et al.
(arXiv 2307.07421) and the SSL variant's layer norms (arXiv 2407.13377): one
utterance at a time, loops over its valid frames and over the heads, plain
matrix-vector products, a running sum for the mean and a hand-written LayerNorm. It
shares nothing with the batched layer except the weight values.
"""

import math

import pytest
import torch

from espnet2.asr.layers.summary_mixing import (
    BlockDiagonalLinear,
    PointwiseMLP,
    SummaryMixing,
    masked_mean,
)

LENGTHS = [7, 1, 4, 0]
MAX_LEN = 9
DIM = 8


# ---------------------------------------------------------------- naive reference
def naive_activation(name: str, v: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return 0.5 * v * (1.0 + torch.erf(v / math.sqrt(2.0)))
    if name == "swish":
        return v / (1.0 + torch.exp(-v))
    return torch.clamp(v, min=0.0)  # relu


def naive_block_linear(linear: BlockDiagonalLinear, v: torch.Tensor) -> torch.Tensor:
    """One frame through a block-diagonal linear: head h uses its own matrix."""
    heads, group_in, group_out = linear.weight.shape
    out = []
    for h in range(heads):
        piece = v[h * group_in : (h + 1) * group_in]
        weight = linear.weight[h].detach().clone()  # (in/H, out/H)
        column = torch.zeros(group_out, dtype=v.dtype)
        for i in range(group_in):
            column = column + piece[i] * weight[i]
        out.append(column)
    return torch.cat(out) + linear.bias.detach().clone()


def naive_mlp(mlp: PointwiseMLP, v: torch.Tensor, activation: str) -> torch.Tensor:
    for module in mlp:
        if isinstance(module, BlockDiagonalLinear):
            v = naive_activation(activation, naive_block_linear(module, v))
    return v


def naive_layer_norm(norm, v: torch.Tensor) -> torch.Tensor:
    if isinstance(norm, torch.nn.Identity):
        return v
    mean = sum(v.tolist()) / len(v)
    var = sum((x - mean) ** 2 for x in v.tolist()) / len(v)
    gamma, beta = norm.weight.detach(), norm.bias.detach()
    return (v - mean) / math.sqrt(var + norm.eps) * gamma + beta


def naive_summary_mixing(
    layer: SummaryMixing, x: torch.Tensor, length: int, activation: str
) -> torch.Tensor:
    """y_t for t < length of one utterance x (T, D), from the equations."""
    total = None
    for t in range(length):
        s_t = naive_mlp(layer.summary, x[t], activation)
        total = s_t if total is None else total + s_t
    if total is None:  # no valid frame: the summary is zero
        total = torch.zeros(layer.summary.output_size, dtype=x.dtype)
    summary = naive_layer_norm(layer.summary_norm, total / max(length, 1))
    outputs = []
    for t in range(length):
        if layer.mode == "summary_mixing_lite":
            outputs.append(summary)
            continue
        local = naive_layer_norm(
            layer.local_norm, naive_mlp(layer.local, x[t], activation)
        )
        both = torch.cat([local, summary])
        weight = layer.combiner.weight.detach()
        combined = torch.stack(
            [sum(w * b for w, b in zip(row, both)) for row in weight]
        )
        outputs.append(
            naive_activation(activation, combined + layer.combiner.bias.detach())
        )
    return torch.stack(outputs) if outputs else x.new_zeros(0, layer_output(layer))


def layer_output(layer: SummaryMixing) -> int:
    if layer.mode == "summary_mixing_lite":
        return layer.summary.output_size
    return layer.combiner.out_features


# ---------------------------------------------------------------- helpers
def randomise(module: torch.nn.Module, seed: int) -> None:
    """Random values for every parameter, biases and LayerNorms included."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            values = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.copy_(0.5 * values)


def padded_batch(seed: int = 0, dim: int = DIM, garbage: float = 100.0):
    """(B, T, D) float64 with garbage on padded frames, lengths (B,), pad mask."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(
        len(LENGTHS), MAX_LEN, dim, generator=generator, dtype=torch.float64
    )
    lengths = torch.tensor(LENGTHS)
    pad = torch.arange(MAX_LEN)[None, :] >= lengths[:, None]  # (B, T)
    x = torch.where(pad[..., None], garbage * torch.ones_like(x), x)
    return x, lengths, pad


def build(mode="summary_mixing", norm=True, heads=2, activation="gelu", deep=False):
    units = (12, DIM) if deep else (DIM,)
    layer = SummaryMixing(
        DIM,
        DIM,
        local_units=units,
        summary_units=units,
        num_heads=heads,
        activation=activation,
        dropout_rate=0.1,
        use_layer_norm=norm,
        mode=mode,
    ).double()
    randomise(layer, seed=1)
    return layer.eval()


# ---------------------------------------------------------------- numerics
@pytest.mark.parametrize("mode", ["summary_mixing", "summary_mixing_lite"])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize(
    "heads,activation,deep",
    [(1, "gelu", False), (4, "gelu", False), (2, "swish", True), (4, "relu", True)],
)
def test_batched_layer_equals_the_equations_on_valid_frames(
    mode, norm, heads, activation, deep
):
    layer = build(mode, norm, heads, activation, deep)
    x, lengths, pad = padded_batch()
    with torch.no_grad():
        y = layer(x, pad)
    assert y.shape == (len(LENGTHS), MAX_LEN, DIM) and y.dtype == torch.float64
    for b, length in enumerate(LENGTHS):
        expected = naive_summary_mixing(layer, x[b], length, activation)
        torch.testing.assert_close(y[b, :length], expected, atol=1e-5, rtol=0)


def test_block_diagonal_linear_is_a_dense_linear_with_a_block_diagonal_weight():
    linear = BlockDiagonalLinear(12, 8, num_heads=4).double()
    randomise(linear, seed=2)
    dense = torch.block_diag(*linear.weight.detach())  # (12, 8)
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    expected = x @ dense + linear.bias.detach()
    torch.testing.assert_close(linear(x), expected, atol=1e-12, rtol=0)
    # off-diagonal blocks are structurally zero: input group 0 cannot reach output 2..7
    x0 = torch.zeros(1, 12, dtype=torch.float64)
    x0[0, :3] = 1.0
    assert torch.equal(linear(x0)[0, 2:], linear.bias.detach()[2:])


def test_block_diagonal_linear_with_one_head_is_torch_linear():
    linear = BlockDiagonalLinear(6, 5, num_heads=1).double()
    randomise(linear, seed=3)
    x = torch.randn(4, 6, dtype=torch.float64)
    expected = torch.nn.functional.linear(x, linear.weight[0].T, linear.bias)
    torch.testing.assert_close(linear(x), expected, atol=1e-12, rtol=0)


def test_block_diagonal_linear_starts_with_zero_bias_and_bounded_weights():
    linear = BlockDiagonalLinear(64, 32, num_heads=4)
    assert torch.equal(linear.bias, torch.zeros(32))
    assert linear.weight.abs().max() <= 1 / math.sqrt(16)
    assert linear.weight.std() > 0.1 / math.sqrt(16)


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("mode", ["summary_mixing", "summary_mixing_lite"])
def test_output_does_not_depend_on_batch_neighbours_or_padding(mode):
    layer = build(mode)
    x, lengths, pad = padded_batch()
    with torch.no_grad():
        batched = layer(x, pad)
        for b, length in enumerate(LENGTHS):
            alone = layer(x[b : b + 1, :length], pad[b : b + 1, :length])
            torch.testing.assert_close(
                alone[0], batched[b, :length], atol=1e-12, rtol=0
            )


@pytest.mark.parametrize("mode", ["summary_mixing", "summary_mixing_lite"])
def test_padded_frame_values_never_reach_the_valid_frames(mode):
    layer = build(mode)
    x, _, pad = padded_batch(garbage=0.0)
    changed, _, _ = padded_batch(garbage=1e6)
    with torch.no_grad():
        first, second = layer(x, pad), layer(changed, pad)
    valid = ~pad
    assert not torch.equal(x, changed)
    assert torch.equal(first[valid], second[valid])


def test_gradients_do_not_flow_to_padded_frames():
    layer = build()
    x, _, pad = padded_batch()
    x.requires_grad_(True)
    layer(x, pad)[~pad].sum().backward()
    assert torch.equal(x.grad[pad], torch.zeros_like(x.grad[pad]))
    assert x.grad[~pad].abs().sum() > 0


def test_masked_mean_is_zero_for_an_utterance_without_valid_frames():
    x = torch.full((2, 3, 4), float("nan"))
    x[0, :2] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    pad = torch.tensor([[False, False, True], [True, True, True]])
    mean = masked_mean(x, pad)
    assert mean.shape == (2, 1, 4)
    assert torch.equal(mean[0, 0], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(mean[1, 0], torch.zeros(4))


@pytest.mark.parametrize("mode", ["summary_mixing", "summary_mixing_lite"])
def test_zero_and_one_frame_utterances_give_finite_outputs(mode):
    layer = build(mode)
    x = torch.randn(2, 1, DIM, dtype=torch.float64)
    pad = torch.tensor([[False], [True]])  # lengths 1 and 0
    y = layer(x, pad)
    assert y.shape == (2, 1, DIM) and torch.isfinite(y).all()
    expected = naive_summary_mixing(layer, x[0], 1, "gelu")
    torch.testing.assert_close(y[0], expected, atol=1e-5, rtol=0)


def test_dropout_acts_only_in_training():
    layer = build()
    x, _, pad = padded_batch()
    layer.train()
    torch.manual_seed(0)
    first = layer(x, pad)
    second = layer(x, pad)
    layer.eval()
    assert not torch.equal(first[~pad], second[~pad])
    assert torch.equal(layer(x, pad)[~pad], layer(x, pad)[~pad])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_heads=3), "divisible by num_heads"),
        (dict(num_heads=0), "divisible by num_heads"),
        (dict(mode="summary_mixing_fast"), "mode must be one of"),
        (
            dict(mode="summary_mixing_lite", summary_units=(12,)),
            "must equal output_size",
        ),
        (dict(local_units=()), "at least one layer"),
        (dict(activation="tanh"), "activation must be one of"),
    ],
)
def test_bad_arguments_raise_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SummaryMixing(
            DIM, DIM, **{"local_units": (DIM,), "summary_units": (DIM,), **kwargs}
        )
