"""espnet2/asr/layers/summary_mixing.py: the batched layer against a naive
implementation of the paper's equations, and its padding properties.

The naive version below is written straight from Eq. 1-2 of Parcollet et al.
(arXiv 2307.07421) and the SSL variant's layer norms (arXiv 2407.13377): one
utterance at a time, Python loops over its valid frames and over the heads, one
matrix-vector product per head, a running sum for the mean, a hand-written
LayerNorm and hand-written activations. It shares nothing with the batched layer
but copies of the weight values.
"""

import math
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
import torch
import yaml

from espnet2.asr.layers.summary_mixing import (
    BlockDiagonalLinear,
    PointwiseMLP,
    SummaryMixing,
    masked_mean,
)

LENGTHS = [7, 1, 4, 0]  # mixed, with a one-frame and an empty utterance
MAX_LEN = 9
REPO_ROOT = Path(__file__).resolve().parents[4]
IN, OUT = 8, 12  # different, so that a swapped size cannot go unnoticed
MODES = ["summary_mixing", "summary_mixing_lite"]
TOLERANCE = 1e-10  # float64; the brief's bound is 1e-5


# ---------------------------------------------------------------- naive reference
def naive_activation(name: str, v: torch.Tensor) -> torch.Tensor:
    if name == "gelu":  # exact (erf) GELU
        return 0.5 * v * (1.0 + torch.erf(v / math.sqrt(2.0)))
    if name == "swish":
        return v * (1.0 / (1.0 + torch.exp(-v)))
    assert name == "relu"
    return torch.where(v > 0, v, torch.zeros_like(v))


def copy_linears(mlp: PointwiseMLP) -> List[Tuple[List[torch.Tensor], torch.Tensor]]:
    """Per layer of an MLP: the H head matrices (in/H, out/H) and the bias (out,)."""
    layers = []
    for module in mlp:
        if isinstance(module, BlockDiagonalLinear):
            heads = [w.detach().clone() for w in module.weight]
            layers.append((heads, module.bias.detach().clone()))
    return layers


def copy_norm(norm: torch.nn.Module) -> Optional[Tuple[torch.Tensor, ...]]:
    """(gamma, beta, eps) of a LayerNorm, None for no norm."""
    if isinstance(norm, torch.nn.Identity):
        return None
    assert isinstance(norm, torch.nn.LayerNorm)
    return norm.weight.detach().clone(), norm.bias.detach().clone(), norm.eps


class NaiveSummaryMixing:
    """SummaryMixing for one utterance at a time, from copies of a layer's weights."""

    def __init__(self, layer: SummaryMixing, activation: str):
        self.activation = activation
        self.lite = layer.mode == "summary_mixing_lite"
        self.summary = copy_linears(layer.summary)
        self.summary_norm = copy_norm(layer.summary_norm)
        if not self.lite:
            self.local = copy_linears(layer.local)
            self.local_norm = copy_norm(layer.local_norm)
            self.combiner_weight = layer.combiner.weight.detach().clone()  # (O, L+S)
            self.combiner_bias = layer.combiner.bias.detach().clone()

    def mlp(self, layers, v: torch.Tensor) -> torch.Tensor:
        """[linear -> activation] per layer; each head projects its own group."""
        for heads, bias in layers:
            group = v.shape[0] // len(heads)
            pieces = []
            for h, weight in enumerate(heads):
                pieces.append(v[h * group : (h + 1) * group] @ weight)
            v = naive_activation(self.activation, torch.cat(pieces) + bias)
        return v

    @staticmethod
    def layer_norm(norm, v: torch.Tensor) -> torch.Tensor:
        if norm is None:
            return v
        gamma, beta, eps = norm
        mean = sum(v[i] for i in range(len(v))) / len(v)
        var = sum((v[i] - mean) ** 2 for i in range(len(v))) / len(v)  # biased
        return (v - mean) / torch.sqrt(var + eps) * gamma + beta

    def __call__(self, x: torch.Tensor, length: int) -> torch.Tensor:
        """Outputs (length, O) for the first ``length`` frames of x (T, D)."""
        total = torch.zeros(self.summary[-1][1].shape, dtype=x.dtype)
        for t in range(length):
            total = total + self.mlp(self.summary, x[t])
        summary = self.layer_norm(self.summary_norm, total / max(length, 1))
        outputs = []
        for t in range(length):
            if self.lite:
                outputs.append(summary)
                continue
            local = self.layer_norm(self.local_norm, self.mlp(self.local, x[t]))
            both = torch.cat([local, summary])
            combined = self.combiner_weight @ both + self.combiner_bias
            outputs.append(naive_activation(self.activation, combined))
        out_size = len(summary) if self.lite else len(self.combiner_bias)
        return torch.stack(outputs) if outputs else x.new_zeros(0, out_size)


# ---------------------------------------------------------------- helpers
def randomise(module: torch.nn.Module, seed: int) -> None:
    """Random non-zero values everywhere: weights, biases and LayerNorm gains."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if "norm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.3 * noise)
            else:
                param.copy_(0.5 * noise)


def padded_batch(seed: int = 0, garbage_scale: float = 100.0, dim: int = IN):
    """(B, T, D) float64 with random garbage on padded frames, and the pad mask."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LENGTHS), MAX_LEN, dim, generator=generator)
    junk = garbage_scale * torch.randn(x.shape, generator=generator)
    pad = torch.arange(MAX_LEN)[None, :] >= torch.tensor(LENGTHS)[:, None]  # (B, T)
    return torch.where(pad[..., None], junk, x).double(), pad


def build(
    mode: str = "summary_mixing",
    layer_norm: bool = True,
    heads: int = 4,
    activation: str = "gelu",
    deep: bool = False,
) -> SummaryMixing:
    """A float64 layer in eval mode with random weights (local L=4, summary S=OUT)."""
    layer = SummaryMixing(
        IN,
        OUT,
        local_units=(16, 4) if deep else (4,),
        summary_units=(8, OUT) if deep else (OUT,),
        num_heads=heads,
        activation=activation,
        dropout_rate=0.1,
        use_layer_norm=layer_norm,
        mode=mode,
    ).double()
    randomise(layer, seed=1)
    return layer.eval()


# ---------------------------------------------------------------- the equations
@pytest.mark.parametrize("deep", [False, True], ids=["1-layer", "2-layer"])
@pytest.mark.parametrize("activation", ["gelu", "swish"])
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("layer_norm", [True, False], ids=["ln", "no-ln"])
@pytest.mark.parametrize("mode", MODES)
def test_batched_layer_equals_the_naive_equations_on_valid_frames(
    mode, layer_norm, heads, activation, deep
):
    layer = build(mode, layer_norm, heads, activation, deep)
    naive = NaiveSummaryMixing(layer, activation)
    x, pad = padded_batch()
    with torch.no_grad():
        y = layer(x, pad)
    assert y.shape == (len(LENGTHS), MAX_LEN, OUT) and y.dtype == torch.float64
    for b, length in enumerate(LENGTHS):
        expected = naive(x[b], length)
        torch.testing.assert_close(y[b, :length], expected, atol=TOLERANCE, rtol=0)


def test_relu_layer_equals_the_naive_equations_on_valid_frames():
    layer = build(activation="relu", deep=True)
    naive = NaiveSummaryMixing(layer, "relu")
    x, pad = padded_batch()
    with torch.no_grad():
        y = layer(x, pad)
    for b, length in enumerate(LENGTHS):
        torch.testing.assert_close(
            y[b, :length], naive(x[b], length), atol=TOLERANCE, rtol=0
        )


def test_naive_reference_notices_a_mean_taken_over_padded_frames_too():
    """The comparison above has power: a mean over all T frames would fail it."""
    layer = build()
    naive = NaiveSummaryMixing(layer, "gelu")
    x, pad = padded_batch()
    with torch.no_grad():
        y = layer(x, torch.zeros_like(pad))  # every frame counted as valid
    assert (y[0, :7] - naive(x[0], 7)).abs().max() > 1e-3


def test_block_diagonal_linear_is_a_dense_linear_with_a_block_diagonal_weight():
    linear = BlockDiagonalLinear(12, 8, num_heads=4).double()
    randomise(linear, seed=2)
    dense = torch.block_diag(*linear.weight.detach())  # (12, 8)
    x = torch.randn(3, 5, 12, dtype=torch.float64)
    expected = torch.nn.functional.linear(x, dense.T, linear.bias)
    torch.testing.assert_close(linear(x), expected, atol=1e-12, rtol=0)


def test_block_diagonal_linear_heads_see_only_their_own_feature_group():
    linear = BlockDiagonalLinear(12, 8, num_heads=4).double()
    randomise(linear, seed=2)
    x = torch.zeros(1, 12, dtype=torch.float64)
    x[0, :3] = 1.0  # input group 0 (features 0..2) feeds output group 0 (0..1) only
    assert torch.equal(linear(x)[0, 2:], linear.bias.detach()[2:])
    assert not torch.equal(linear(x)[0, :2], linear.bias.detach()[:2])


def test_block_diagonal_linear_with_one_head_is_torch_linear():
    linear = BlockDiagonalLinear(6, 5, num_heads=1).double()
    randomise(linear, seed=3)
    x = torch.randn(4, 6, dtype=torch.float64)
    expected = torch.nn.functional.linear(x, linear.weight[0].T, linear.bias)
    torch.testing.assert_close(linear(x), expected, atol=1e-12, rtol=0)


def test_block_weights_and_biases_start_as_the_references_kaiming_uniform():
    """H > 1: weight ~ U(+-1/sqrt((in/H)(out/H))), bias ~ U(+-1/sqrt(out/H)): the
    bounds of kaiming_uniform_(a=sqrt(5)) on the reference's 3-D weight and 2-D
    bias (fan-in of a (H, i, o) tensor: i * o; of (H, o): o)."""
    torch.manual_seed(0)
    linear = BlockDiagonalLinear(64, 32, num_heads=4)  # blocks 16 x 8
    weight_bound, bias_bound = 1 / math.sqrt(16 * 8), 1 / math.sqrt(8)
    assert linear.weight.abs().max() <= weight_bound
    assert linear.weight.abs().max() > 0.9 * weight_bound  # 512 draws fill the range
    assert linear.bias.abs().max() <= bias_bound
    assert linear.bias.abs().max() > 0.5 * bias_bound
    assert linear.bias.std() > 0.2 * bias_bound  # not zero, as the reference


def test_one_head_starts_as_torch_linear_with_a_zero_bias():
    torch.manual_seed(0)
    linear = BlockDiagonalLinear(64, 32, num_heads=1)
    assert linear.weight.abs().max() <= 1 / math.sqrt(64)
    assert linear.weight.abs().max() > 0.9 / math.sqrt(64)
    assert torch.equal(linear.bias, torch.zeros(32))
    layer = SummaryMixing(IN, OUT, local_units=(4,), summary_units=(OUT,))
    assert torch.equal(layer.combiner.bias, torch.zeros(OUT))


def reference_mixer_parameters(d: int, heads: int, hidden: int, out: int) -> int:
    """Parameters of the reference's full SummaryMixing with layer norms, from its
    hyperparameters: each branch is VanillaNN(hid_dim + [out_dim]) of ParallelLinear
    layers (weight in*out/H, bias out), the merging layer one dense Linear, and a
    LayerNorm (gain and bias) on each branch's output."""
    branch = (d * hidden // heads + hidden) + (hidden * out // heads + out)
    merging = 2 * out * d + d
    norms = 2 * (2 * out)
    return 2 * branch + merging + norms


def test_a_base_mixer_from_the_shipped_config_has_the_references_parameters():
    """SSL BASE (IS24_PR hparams/summarymixing_wav2vec2.yaml): d_model 768, nhead 8,
    local_proj_hid_dim [768] + local_proj_out_dim 768, summary_hid_dim [768] +
    summary_out_dim 768, use_layernorm: 1,481,472 parameters in two layers a branch."""
    config = REPO_ROOT / (
        "egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_summary_mixing_base.yaml"
    )
    conf = yaml.safe_load(config.read_text())["encoder_conf"]
    layer = SummaryMixing(
        conf["output_size"],
        conf["output_size"],
        local_units=tuple(conf["local_units"]),
        summary_units=tuple(conf["summary_units"]),
        num_heads=conf["attention_heads"],
        use_layer_norm=conf["mixer_layer_norm"],
    )
    expected = reference_mixer_parameters(768, 8, 768, 768)
    assert expected == 1_481_472
    assert sum(p.numel() for p in layer.parameters()) == expected
    linears = [m for m in layer.modules() if isinstance(m, BlockDiagonalLinear)]
    assert len(layer.local) // 2 == len(layer.summary) // 2 == 2  # [linear, act] x 2
    assert [tuple(m.weight.shape) for m in linears] == [(8, 96, 96)] * 4


def test_the_lite_mode_normalises_nothing_as_the_reference():
    layer = SummaryMixing(
        IN, OUT, summary_units=(OUT,), use_layer_norm=True, mode="summary_mixing_lite"
    )
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in layer.modules())


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("layer_norm", [True, False], ids=["ln", "no-ln"])
@pytest.mark.parametrize("mode", MODES)
def test_an_utterance_gives_the_same_output_alone_as_in_a_padded_batch(
    mode, layer_norm
):
    layer = build(mode, layer_norm)
    x, pad = padded_batch()
    with torch.no_grad():
        batched = layer(x, pad)
        for b, length in enumerate(LENGTHS):
            alone = layer(x[b : b + 1, :length], pad[b : b + 1, :length])
            torch.testing.assert_close(
                alone[0], batched[b, :length], atol=1e-12, rtol=0
            )


@pytest.mark.parametrize("garbage_scale", [1.0, 1e6], ids=["small", "huge"])
@pytest.mark.parametrize("layer_norm", [True, False], ids=["ln", "no-ln"])
@pytest.mark.parametrize("mode", MODES)
def test_changing_padded_frames_changes_nothing_on_valid_frames(
    mode, layer_norm, garbage_scale
):
    layer = build(mode, layer_norm)
    x, pad = padded_batch(seed=0, garbage_scale=0.0)
    changed, _ = padded_batch(seed=0, garbage_scale=garbage_scale)
    assert not torch.equal(x, changed)
    with torch.no_grad():
        first, second = layer(x, pad), layer(changed, pad)
    assert torch.isfinite(second[~pad]).all()
    assert torch.equal(first[~pad], second[~pad])


@pytest.mark.parametrize("layer_norm", [True, False], ids=["ln", "no-ln"])
@pytest.mark.parametrize("mode", MODES)
def test_gradients_do_not_flow_to_padded_input_frames(mode, layer_norm):
    layer = build(mode, layer_norm)
    x, pad = padded_batch()
    x.requires_grad_(True)
    layer(x, pad)[~pad].sum().backward()
    assert torch.equal(x.grad[pad], torch.zeros_like(x.grad[pad]))
    assert x.grad[~pad].abs().sum() > 0


def test_masked_mean_averages_the_valid_frames_only():
    x = torch.full((2, 3, 2), float("nan"))
    x[0, :2] = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    x[1] = torch.tensor([[1.0, 1.0], [2.0, 2.0], [6.0, 9.0]])
    pad = torch.tensor([[False, False, True], [False, False, False]])
    mean = masked_mean(x, pad)
    assert mean.shape == (2, 1, 2)
    assert torch.equal(mean[:, 0], torch.tensor([[2.0, 4.0], [3.0, 4.0]]))


@pytest.mark.parametrize("junk", [0.0, 1e30, float("inf"), float("nan")])
def test_masked_mean_of_an_all_padded_row_is_zero_and_finite(junk):
    x = torch.full((2, 3, 4), junk)
    x[0] = 1.0
    pad = torch.tensor([[False, False, False], [True, True, True]])
    mean = masked_mean(x, pad)
    assert torch.equal(mean[0, 0], torch.ones(4))
    assert torch.equal(mean[1, 0], torch.zeros(4))


def test_masked_mean_of_a_batch_without_frames_is_zero():
    mean = masked_mean(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool))
    assert torch.equal(mean, torch.zeros(2, 1, 4))


@pytest.mark.parametrize("layer_norm", [True, False], ids=["ln", "no-ln"])
@pytest.mark.parametrize("mode", MODES)
def test_zero_and_one_frame_utterances_give_finite_outputs(mode, layer_norm):
    layer = build(mode, layer_norm)
    x = 10.0 * torch.randn(2, 1, IN, dtype=torch.float64)
    pad = torch.tensor([[False], [True]])  # lengths 1 and 0
    y = layer(x, pad)
    assert y.shape == (2, 1, OUT) and torch.isfinite(y).all()
    naive = NaiveSummaryMixing(layer, "gelu")
    torch.testing.assert_close(y[0], naive(x[0], 1), atol=TOLERANCE, rtol=0)
    empty = layer(x[:, :0], pad[:, :0])  # a batch without frames
    assert empty.shape == (2, 0, OUT)


def test_dropout_acts_only_in_training():
    layer = build()
    x, pad = padded_batch()
    layer.train()
    first, second = layer(x, pad), layer(x, pad)
    assert not torch.equal(first[~pad], second[~pad])
    layer.eval()
    assert torch.equal(layer(x, pad)[~pad], layer(x, pad)[~pad])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_heads=3), r"in_features \(8\) .* divisible by num_heads \(3"),
        (dict(num_heads=0), "divisible by num_heads"),
        (dict(num_heads=4, local_units=(6,)), r"out_features \(6\)"),
        (dict(num_heads=4, summary_units=(6,)), r"out_features \(6\)"),
        (dict(mode="summary_mixing_fast"), "mode must be one of .*summary_mixing_fast"),
        (
            dict(mode="summary_mixing_lite", summary_units=(8,)),
            r"summary_units \(8\) must equal output_size \(12\)",
        ),
        (dict(local_units=()), "at least one layer"),
        (dict(summary_units=()), "at least one layer"),
        (dict(activation="tanh"), "activation must be one of"),
    ],
)
def test_bad_arguments_raise_a_value_error_that_names_the_problem(kwargs, message):
    options = {"local_units": (4,), "summary_units": (OUT,), **kwargs}
    with pytest.raises(ValueError, match=message):
        SummaryMixing(IN, OUT, **options)
