"""use_sdpa in espnet2/asr/encoder/wav2vec2_transformer_encoder.py and
summary_mixing_encoder.py: torch's scaled_dot_product_attention against ESPnet's
exact matmul -> softmax path.

Same weights, float32 on the CPU, a padded batch (lengths [T, T - 7, T / 2] with
junk on padded frames), eval mode: the outputs on valid frames and every parameter's
gradient (of a fixed random projection of the valid outputs) agree to a max relative
error (max |sdpa - exact| / max |exact|, per tensor) of at most 1e-5. Measured with
torch 2.8.0 on an AMD EPYC CPU (``python -m pytest -s`` prints each): outputs
3.4e-7 (post-LN), 2.5e-7 (pre-LN), 2.9e-7 (SummaryMixing self-attention);
gradients 1.0e-6, 5.9e-7, 8.5e-7 (the worst parameter of each). The key biases,
whose true gradient is 0, get at most 5e-8 of the largest gradient on either
path. Besides: SDPA keeps no (B, H, T, T) probabilities, drops attention weights in
training only, keeps a fully padded utterance finite, relative-position attention
stays exact, and use_sdpa turns flash attention off.
"""

import functools
import logging
from typing import Dict, Tuple

import pytest
import torch
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention
from tiny_configs import tiny_config

from espnet2.asr.encoder.building_blocks import padding_mask
from espnet2.asr.encoder.summary_mixing_encoder import SummaryMixingEncoder
from espnet2.asr.encoder.wav2vec2_transformer_encoder import Wav2Vec2TransformerEncoder

DIM, HEADS, MAX_LEN = 64, 4, 40
LENGTHS = [MAX_LEN, MAX_LEN - 7, MAX_LEN // 2]
TOLERANCE = 1e-5  # max relative error, float32

# The recipe's tiny wav2vec 2.0 encoder (test/helpers/tiny_configs.py) without dropout
WAV2VEC2 = tiny_config(
    "wav2vec2",
    encoder_conf=dict(
        output_size=DIM,
        attention_heads=HEADS,
        linear_units=2 * DIM,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        pos_conv_kernel_size=16,
    ),
)["encoder_conf"]
WAV2VEC2["input_size"] = DIM
del WAV2VEC2["use_sdpa"]  # each test chooses the path
SUMMARY_MIXING = dict(
    input_size=DIM,
    output_size=DIM,
    attention_heads=HEADS,
    linear_units=2 * DIM,
    num_blocks=2,
    dropout_rate=0.0,
    positional_dropout_rate=0.0,
    attention_dropout_rate=0.0,
    input_layer=None,
    cnn_module_kernel=5,
    mixer="self_attention",
    pos_enc_layer_type="abs_pos",
)
ENCODERS = {
    "wav2vec2_post_ln": (
        Wav2Vec2TransformerEncoder,
        dict(WAV2VEC2, normalize_before=False, embed_layer_norm=True),
    ),
    "wav2vec2_pre_ln": (
        Wav2Vec2TransformerEncoder,
        dict(WAV2VEC2, normalize_before=True, embed_layer_norm=False),
    ),
    "summary_mixing_self_attention": (SummaryMixingEncoder, SUMMARY_MIXING),
}
encoders = pytest.mark.parametrize("name", list(ENCODERS))


def build(name: str, use_sdpa: bool, **overrides) -> torch.nn.Module:
    """Encoder ``name`` in float32 eval mode; weights depend on the seed only."""
    cls, options = ENCODERS[name]
    torch.manual_seed(0)
    encoder = cls(**{**options, **overrides}, use_sdpa=use_sdpa)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move norms and biases off their 1 / 0 start
        for param in encoder.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=generator))
    return encoder.eval()


def padded_batch(lengths=LENGTHS) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) float32 with junk (scale 10) on padded frames, lengths (B,)."""
    generator = torch.Generator().manual_seed(2)
    xs = torch.randn(len(lengths), max(lengths), DIM, generator=generator)
    ilens = torch.tensor(lengths)
    pad = padding_mask(ilens, xs.size(1)).unsqueeze(-1)  # (B, T, 1)
    return xs.masked_fill(pad, 10.0), ilens


def run(encoder: torch.nn.Module, lengths=LENGTHS) -> Tuple[torch.Tensor, Dict]:
    """Valid output frames (N, D) and each parameter's gradient of a fixed random
    projection of them."""
    xs, ilens = padded_batch(lengths)
    encoder.zero_grad()
    out = encoder(xs, ilens)[0]  # (B, T, D)
    valid = ~padding_mask(ilens, out.size(1))  # (B, T)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * weights * valid.unsqueeze(-1)).sum().backward()
    grads = {name: param.grad.clone() for name, param in encoder.named_parameters()}
    return out.detach()[valid], grads


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (want must not be all zero)."""
    scale = want.abs().max().item()
    assert scale > 0
    return (got - want).abs().max().item() / scale


@functools.lru_cache(maxsize=None)
def sdpa_and_exact(name: str) -> Tuple[Tuple, Tuple]:
    """run() of encoder ``name`` with use_sdpa True and False (same weights)."""
    return run(build(name, use_sdpa=True)), run(build(name, use_sdpa=False))


@encoders
def test_sdpa_gives_the_exact_outputs_on_valid_frames(name):
    (sdpa, _), (exact, _) = sdpa_and_exact(name)
    error = relative_error(sdpa, exact)
    print(f"{name}: output relative error {error:.2e}")
    assert error <= TOLERANCE


@encoders
def test_sdpa_gives_the_exact_gradient_of_every_parameter(name):
    (_, sdpa), (_, exact) = sdpa_and_exact(name)
    assert sdpa.keys() == exact.keys()
    # The key bias adds q . b_k to a whole row of scores, which softmax ignores:
    # its gradient is 0 up to rounding on both paths, so no relative error exists.
    key_biases = [key for key in exact if key.endswith("linear_k.bias")]
    assert len(key_biases) == 2
    scale = max(grad.abs().max().item() for grad in exact.values())
    for key in key_biases:
        assert max(sdpa[key].abs().max(), exact[key].abs().max()) <= 1e-5 * scale
    errors = {
        key: relative_error(sdpa[key], exact[key])
        for key in exact
        if key not in key_biases
    }
    worst = max(errors, key=errors.get)
    print(f"{name}: worst gradient relative error {errors[worst]:.2e} ({worst})")
    assert errors[worst] <= TOLERANCE


def attention_modules(encoder: torch.nn.Module):
    return [m for m in encoder.modules() if isinstance(m, MultiHeadedAttention)]


@encoders
@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "exact"])
def test_only_the_exact_path_keeps_the_attention_probabilities(name, use_sdpa):
    encoder = build(name, use_sdpa=use_sdpa)
    run(encoder)
    modules = attention_modules(encoder)
    assert len(modules) == 2 and all(m.use_sdpa is use_sdpa for m in modules)
    for module in modules:
        if use_sdpa:
            assert module.attn is None
        else:  # (B, H, T, T)
            assert module.attn.shape == (len(LENGTHS), HEADS, MAX_LEN, MAX_LEN)


def two_forwards(encoder: torch.nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    xs, ilens = padded_batch()
    with torch.no_grad():
        return encoder(xs, ilens)[0], encoder(xs, ilens)[0]


@encoders
def test_sdpa_drops_attention_weights_in_training_only(name):
    # every other dropout is 0, so attention dropout is the only randomness
    encoder = build(name, use_sdpa=True, attention_dropout_rate=0.3)
    first, second = two_forwards(encoder.train())
    assert (first - second).abs().max() > 1e-3
    first, second = two_forwards(encoder.eval())
    assert torch.equal(first, second)
    first, second = two_forwards(build(name, use_sdpa=True).train())  # rate 0
    assert torch.equal(first, second)


@encoders
def test_sdpa_keeps_a_fully_padded_utterance_finite(name):
    # ESPnet's exact path gives such rows zero weights; torch's CPU SDPA too
    # (CUDA kernels not checked here)
    (sdpa, sdpa_grads), (exact, _) = [
        run(build(name, use_sdpa=use_sdpa), lengths=[MAX_LEN, 0])
        for use_sdpa in (True, False)
    ]
    assert relative_error(sdpa, exact) <= TOLERANCE
    assert all(torch.isfinite(grad).all() for grad in sdpa_grads.values())


def test_relative_position_attention_stays_on_the_exact_path():
    rel_pos = dict(pos_enc_layer_type="rel_pos")
    sdpa = build("summary_mixing_self_attention", use_sdpa=True, **rel_pos)
    exact = build("summary_mixing_self_attention", use_sdpa=False, **rel_pos)
    assert all(m.use_sdpa is False for m in attention_modules(sdpa))
    assert torch.equal(run(sdpa)[0], run(exact)[0])
    assert all(m.attn is not None for m in attention_modules(sdpa))


def test_use_sdpa_turns_flash_attention_off_and_says_so(caplog):
    with caplog.at_level(logging.INFO):
        encoder = build(
            "wav2vec2_post_ln",
            use_sdpa=True,
            use_flash_attn=True,
            attention_dropout_rate=0.1,
        )
    assert "turns use_flash_attn off" in caplog.text
    for module in attention_modules(encoder):
        assert module.use_flash_attn is False
        # ESPnet's flash setting would have made attention dropout an Identity
        assert isinstance(module.dropout, torch.nn.Dropout)


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "exact"])
def test_a_batch_without_frames_passes_through_either_path(use_sdpa):
    # ESPnet's SDPA path cannot reshape (B, 0) heads; the encoder skips the layers
    encoder = Wav2Vec2TransformerEncoder(
        DIM, output_size=DIM, input_layer="linear", use_sdpa=use_sdpa
    )
    out, olens, _ = encoder(torch.zeros(2, 0, DIM), torch.tensor([0, 0]))
    assert out.shape == (2, 0, DIM) and olens.tolist() == [0, 0]
