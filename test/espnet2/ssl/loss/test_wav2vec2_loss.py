"""Wav2Vec2Loss: negative sampling, contrastive logits, loss terms, edge cases."""

from typing import Dict, List, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F

from espnet2.ssl.loss.abs_loss import AbsSSLLoss
from espnet2.ssl.loss.wav2vec2 import Wav2Vec2Loss

ENCODER_SIZE = 12
FEATURE_SIZE = 10
FINAL_DIM = 8
GROUPS = 2
ENTRIES = 5
STATS_KEYS = {
    "loss_contrastive",
    "loss_diversity",
    "loss_feature_penalty",
    "contrastive_accuracy",
    "code_perplexity",
    "prob_perplexity",
    "gumbel_temperature",
    "codebook_usage",
    "num_masked_frames",
    "sample_size",
}


def _loss(seed: int = 0, **overrides) -> Wav2Vec2Loss:
    torch.manual_seed(seed)
    kwargs = dict(
        feature_size=FEATURE_SIZE,
        final_dim=FINAL_DIM,
        num_negatives=6,
        num_groups=GROUPS,
        num_entries=ENTRIES,
    )
    kwargs.update(overrides)
    return Wav2Vec2Loss(ENCODER_SIZE, **kwargs)


def _mask(lengths: Sequence[int], spans: Sequence[Sequence[Tuple[int, int]]]):
    """(B, T) bool mask with True on the given [start, end) spans of each row."""
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for row, row_spans in enumerate(spans):
        for start, end in row_spans:
            mask[row, start:end] = True
    return mask


def _inputs(lengths: Sequence[int], mask: torch.Tensor, seed: int = 1) -> Dict:
    """Loss inputs for a batch; padded frames hold large garbage values."""
    generator = torch.Generator().manual_seed(seed)
    batch, frames = mask.shape
    padded = torch.arange(frames)[None, :] >= torch.tensor(lengths)[:, None]
    encoder = torch.randn(batch, frames, ENCODER_SIZE, generator=generator)
    features = torch.randn(batch, frames, FEATURE_SIZE, generator=generator)
    encoder[padded] = 1e3
    features[padded] = -1e3
    return dict(
        encoder_output=[torch.zeros_like(encoder), encoder],
        encoder_output_lengths=torch.tensor(lengths),
        mask_info={"mask_m": mask, "mask_u": ~mask},
        features=features,
        features_penalty=torch.tensor(0.37),
    )


def _standard_batch() -> Tuple[List[int], torch.Tensor]:
    lengths = [20, 14, 9]
    mask = _mask(lengths, [[(2, 9), (12, 18)], [(0, 5), (10, 14)], [(3, 7)]])
    return lengths, mask


def _frames_of(mask: torch.Tensor) -> List[Tuple[int, int]]:
    """(b, t) of the masked frames in row-major order."""
    return [tuple(bt) for bt in mask.nonzero().tolist()]


def _reference_negatives(
    mask: torch.Tensor, num_negatives: int, cross: int, seed: int
) -> torch.Tensor:
    """Per-frame loop: draw u in [0, 1) and take the floor(u * n)-th other frame.

    The draws are (B * T, K) then (B * T, cross) uniforms, frame (b, t) taking row
    b * T + t; the result is (N, K + cross) for the masked frames in (b, t) order.
    """
    generator = torch.Generator().manual_seed(seed)
    frames = _frames_of(mask)
    n, width = len(frames), mask.shape[1]
    draws_within = torch.rand(
        (mask.numel(), num_negatives), generator=generator, dtype=torch.float64
    )
    draws_cross = torch.rand(
        (mask.numel(), cross), generator=generator, dtype=torch.float64
    )
    rows = []
    for i, (b, t) in enumerate(frames):
        same = [j for j, (bj, _) in enumerate(frames) if bj == b and j != i]
        anywhere = [j for j in range(n) if j != i]
        row_draws = draws_within[b * width + t]
        row = [same[int(u * len(same))] if same else -1 for u in row_draws]
        row += [
            anywhere[int(u * len(anywhere))] if anywhere else -1
            for u in draws_cross[b * width + t]
        ]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long).view(n, num_negatives + cross)


def _drawn(
    module: Wav2Vec2Loss, mask: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``_sample_negatives`` (B, T, K') read at the masked frames: (N, K')
    masked-frame ranks, after checking that unmasked frames get only -1."""
    negatives = module._sample_negatives(mask, generator)
    assert negatives.shape[:2] == mask.shape
    assert (negatives[~mask] == -1).all()
    return negatives[mask]


def _reference_logits(x, y, negatives, temperature) -> torch.Tensor:
    """Straightforward loop with F.cosine_similarity."""
    rows = []
    for i in range(x.size(0)):
        row = [F.cosine_similarity(x[i], y[i], dim=0) / temperature]
        for j in negatives[i].tolist():
            if j < 0 or torch.equal(y[j], y[i]):
                row.append(torch.tensor(float("-inf")))
            else:
                row.append(F.cosine_similarity(x[i], y[j], dim=0) / temperature)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def _heads(module: Wav2Vec2Loss, inputs: Dict):
    """Eval-mode x and y computed independently of the module's forward."""
    mask = inputs["mask_info"]["mask_m"]
    x = module.final_proj(inputs["encoder_output"][-1][mask])
    features = inputs["features"][mask]
    logits = module.quantizer.weight_proj(features).view(-1, GROUPS, ENTRIES)
    entries = module.quantizer.codevectors.view(GROUPS, ENTRIES, -1)
    best = logits.argmax(dim=-1)
    q = torch.cat([entries[g, best[:, g]] for g in range(GROUPS)], dim=1)
    mean_probs = logits.softmax(dim=-1).mean(dim=0)
    perplexity = torch.exp(-(mean_probs * torch.log(mean_probs + 1e-7)).sum(-1)).sum()
    return x, module.project_q(q), perplexity


def _shift(indices: torch.Tensor, offset: int) -> torch.Tensor:
    """Move masked-frame indices by offset, keeping -1 for empty slots."""
    return torch.where(indices >= 0, indices + offset, indices)


def test_loss_is_an_espnet_ssl_loss_with_the_inputs_the_model_provides():
    module = _loss()
    assert isinstance(module, AbsSSLLoss)
    assert module.util_attributes == ["mask"]
    assert module.required_inputs == [
        "encoder_output",
        "encoder_output_lengths",
        "mask_info",
        "features",
        "features_penalty",
    ]
    assert module.quantizer.codevectors.shape == (1, GROUPS * ENTRIES, FINAL_DIM // 2)
    assert module.final_proj.in_features == ENCODER_SIZE
    assert module.project_q.in_features == module.project_q.out_features == FINAL_DIM


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_negatives=0),
        dict(num_negatives=-1),
        dict(logit_temperature=0.0),
        dict(feature_dropout=1.0),
    ],
)
def test_invalid_options_are_rejected(overrides):
    with pytest.raises(ValueError):
        _loss(**overrides)


@pytest.mark.parametrize("seed", range(4))
def test_negatives_are_other_masked_frames_of_the_same_utterance(seed):
    lengths, mask = _standard_batch()
    negatives = _drawn(
        _loss(num_negatives=20), mask, torch.Generator().manual_seed(seed)
    )
    frames = _frames_of(mask)
    assert negatives.shape == (len(frames), 20)
    own = torch.arange(len(frames))[:, None]
    assert (negatives != own).all()
    assert ((negatives >= 0) & (negatives < len(frames))).all()
    utterance = torch.tensor([b for b, _ in frames])
    assert (utterance[negatives] == utterance[:, None]).all()
    for b, t in (frames[j] for j in negatives.flatten().tolist()):
        assert mask[b, t] and t < lengths[b]


def test_masked_positions_beyond_the_length_are_never_used():
    lengths, mask = _standard_batch()
    spoiled = mask.clone()
    spoiled[2, 9:] = True  # padding of utterance 2, wrongly marked as masked
    inputs = _inputs(lengths, spoiled)
    module = _loss().eval()
    loss, stats = module(**inputs, generator=torch.Generator().manual_seed(0))
    assert stats["sample_size"] == mask.sum().item()
    assert torch.isfinite(loss)


def test_negative_sampling_is_reproducible_under_a_seeded_generator():
    _, mask = _standard_batch()
    module = _loss(num_negatives=9, cross_sample_negatives=3)
    first = _drawn(module, mask, torch.Generator().manual_seed(5))
    second = _drawn(module, mask, torch.Generator().manual_seed(5))
    other = _drawn(module, mask, torch.Generator().manual_seed(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("cross", [0, 4])
def test_negative_sampling_matches_a_per_frame_reference_loop(cross):
    _, mask = _standard_batch()
    mask[1] = False
    mask[1, 6] = True  # utterance 1 has a single masked frame
    module = _loss(num_negatives=7, cross_sample_negatives=cross)
    negatives = _drawn(module, mask, torch.Generator().manual_seed(11))
    assert torch.equal(negatives, _reference_negatives(mask, 7, cross, seed=11))


def test_negatives_are_uniform_over_the_other_frames():
    mask = _mask([6], [[(1, 5)]])  # 4 masked frames
    negatives = _drawn(
        _loss(num_negatives=3000), mask, torch.Generator().manual_seed(0)
    )
    for i in range(4):
        counts = torch.bincount(negatives[i], minlength=4).float() / 3000
        expected = torch.full((4,), 1 / 3)
        expected[i] = 0.0
        assert torch.allclose(counts, expected, atol=0.04)


def test_cross_sample_negatives_come_from_the_whole_batch_but_never_the_frame_itself():
    _, mask = _standard_batch()
    module = _loss(num_negatives=5, cross_sample_negatives=40)
    negatives = _drawn(module, mask, torch.Generator().manual_seed(2))
    frames = _frames_of(mask)
    utterance = torch.tensor([b for b, _ in frames])
    within, cross = negatives[:, :5], negatives[:, 5:]
    assert cross.shape == (len(frames), 40)
    assert (utterance[within] == utterance[:, None]).all()
    assert (cross != torch.arange(len(frames))[:, None]).all()
    assert ((cross >= 0) & (cross < len(frames))).all()
    assert (utterance[cross] != utterance[:, None]).any()


def test_an_utterance_with_one_masked_frame_gets_only_empty_negative_slots():
    mask = _mask([10, 10], [[(4, 5)], [(1, 6)]])
    negatives = _drawn(_loss(num_negatives=4), mask, torch.Generator().manual_seed(0))
    assert (negatives[0] == -1).all()
    assert (negatives[1:] >= 1).all()


def test_logits_equal_a_cosine_similarity_loop_over_the_temperature():
    module = _loss(logit_temperature=0.3)
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, FINAL_DIM, generator=generator), torch.randn(
        6, FINAL_DIM, generator=generator
    )
    negatives = torch.tensor(
        [[1, 2, -1], [0, 0, 2], [3, 4, 5], [2, -1, -1], [5, 3, 3], [4, 1, 0]]
    )
    logits = module._contrastive_logits(x, y, negatives)
    assert logits.shape == (6, 4) and logits.dtype == torch.float32
    expected = _reference_logits(x, y, negatives, 0.3)
    assert torch.equal(torch.isinf(logits), torch.isinf(expected))
    assert torch.allclose(logits, expected, atol=1e-6)


def test_a_negative_equal_to_its_positive_gets_a_minus_infinity_logit():
    module = _loss()
    x, y = torch.randn(4, FINAL_DIM), torch.randn(4, FINAL_DIM)
    y[2] = y[0]  # frame 2 has the same target as frame 0
    logits = module._contrastive_logits(
        x, y, torch.tensor([[1, 2], [0, 3], [0, 1], [1, 2]])
    )
    assert logits[0, 2] == float("-inf") and logits[2, 1] == float("-inf")
    assert torch.isfinite(logits[[1, 3]]).all() and torch.isfinite(logits[:, 0]).all()


@pytest.mark.parametrize("cross", [0, 2])
def test_per_utterance_similarities_equal_the_cosine_loop_with_neg_is_pos(cross):
    """The all-frames path takes its within-utterance negatives from one (B, T, T)
    matmul per batch: the same logits as the gather, -inf on empty slots and on a
    negative equal to its positive, cross-utterance columns gathered."""
    batch, frames, within = 3, 5, 4
    module = _loss(logit_temperature=0.3, num_negatives=within)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(batch * frames, FINAL_DIM, generator=generator)
    y = torch.randn(batch * frames, FINAL_DIM, generator=generator)
    y[7] = y[5]  # utterance 1: frames 5 and 7 share a target
    first = torch.arange(batch * frames)[:, None] // frames * frames
    local = torch.randint(frames, (batch * frames, within), generator=generator)
    other = torch.randint(batch * frames, (batch * frames, cross), generator=generator)
    negatives = torch.cat([first + local, other], dim=1)
    negatives[5, 0], negatives[2, 1], negatives[14, -1] = 7, -1, -1
    logits = module._contrastive_logits(x, y, negatives, utterance_frames=frames)
    expected = _reference_logits(x, y, negatives, 0.3)
    assert logits[5, 1] == float("-inf") and logits[2, 2] == float("-inf")
    assert torch.equal(torch.isinf(logits), torch.isinf(expected))
    assert torch.allclose(logits, expected, atol=1e-6)


@pytest.mark.parametrize("cross", [0, 3])
def test_the_fixed_size_path_equals_the_gathered_path_with_the_same_negatives(cross):
    """Without ``negative_indices`` every frame is scored and only the masked ones
    count (no host read); given them, the masked frames are gathered first. In eval
    mode (no Gumbel noise) the generator's first draw is the negatives, so both
    paths see the same ones: loss, stats and gradients agree."""
    lengths, mask = _standard_batch()
    results = []
    for gathered in (False, True):
        module = _loss(cross_sample_negatives=cross).eval()
        generator = torch.Generator().manual_seed(7)
        inputs = _inputs(lengths, mask)
        inputs["encoder_output"][-1].requires_grad_(True)
        if gathered:
            inputs["negative_indices"] = _drawn(module, mask, generator)
        loss, stats = module(**inputs, generator=generator)
        loss.backward()
        grads = [p.grad for p in module.parameters()]
        grads.append(inputs["encoder_output"][-1].grad)
        results.append((loss, stats, grads))
    (loss, stats, grads), (loss_g, stats_g, grads_g) = results
    # float32 sums in another order; loss_diversity is (G V - perplexity) / (G V)
    assert float(loss) == pytest.approx(float(loss_g), rel=1e-6)
    for key in STATS_KEYS:
        expected = pytest.approx(float(stats_g[key]), rel=1e-6, abs=1e-6)
        assert float(stats[key]) == expected, key
    for grad, grad_g in zip(grads, grads_g):
        assert torch.allclose(grad, grad_g, rtol=1e-5, atol=1e-7)


def test_loss_equals_an_independent_computation_of_the_fairseq_formula():
    lengths, mask = _standard_batch()
    inputs = _inputs(lengths, mask)
    module = _loss(
        logit_temperature=0.2, diversity_weight=0.3, feature_penalty_weight=2.0
    ).eval()
    negatives = _reference_negatives(mask, 6, 0, seed=3)
    loss, stats = module(**inputs, negative_indices=negatives)
    x, y, perplexity = _heads(module, inputs)
    logits = _reference_logits(x, y, negatives, 0.2)
    contrastive = -logits.log_softmax(dim=-1)[:, 0].sum()
    n = mask.sum().item()
    diversity = (GROUPS * ENTRIES - perplexity) / (GROUPS * ENTRIES)
    total = contrastive + 0.3 * diversity * n + 2.0 * 0.37 * n
    assert loss.item() == pytest.approx(total.item() / n, rel=1e-5)
    assert stats["loss_contrastive"] == pytest.approx(contrastive.item() / n, rel=1e-5)
    assert stats["prob_perplexity"] == pytest.approx(perplexity.item(), rel=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_loss_equals_the_weighted_sum_of_its_stats_terms(training):
    lengths, mask = _standard_batch()
    module = _loss(
        diversity_weight=0.25, feature_penalty_weight=4.0, cross_sample_negatives=2
    ).train(training)
    loss, stats = module(
        **_inputs(lengths, mask), generator=torch.Generator().manual_seed(0)
    )
    n = stats["sample_size"]
    total = (
        stats["loss_contrastive"] * n
        + 0.25 * stats["loss_diversity"] * n
        + 4.0 * stats["loss_feature_penalty"] * n
    )
    assert loss.item() == pytest.approx(total / n, rel=1e-5)
    expected_diversity = (GROUPS * ENTRIES - stats["prob_perplexity"]) / (
        GROUPS * ENTRIES
    )
    assert stats["loss_diversity"] == pytest.approx(expected_diversity, rel=1e-5)


def test_stats_hold_every_named_term_and_the_masked_frame_count():
    lengths, mask = _standard_batch()
    _, stats = _loss()(
        **_inputs(lengths, mask), generator=torch.Generator().manual_seed(0)
    )
    assert set(stats) == STATS_KEYS
    for value in stats.values():  # tensors on the device: no host read in a step
        assert isinstance(value, torch.Tensor) and value.dim() == 0
        assert not value.requires_grad
    assert stats["sample_size"] == stats["num_masked_frames"] == mask.sum().item()
    assert 0.0 <= stats["contrastive_accuracy"] <= 1.0
    assert 0.0 < stats["codebook_usage"] <= 1.0
    assert stats["gumbel_temperature"] == 2.0


def test_accuracy_counts_frames_whose_positive_strictly_beats_every_negative():
    module = _loss()
    y = torch.eye(FINAL_DIM)[:3]
    x = torch.stack([y[0], y[1] + y[2], y[2]])  # right, tie, right
    _, stats = module._combine_losses(
        module._contrastive_logits(x, y, torch.tensor([[1], [2], [0]])),
        torch.tensor(float(GROUPS * ENTRIES)),
        torch.tensor(0.0),
        {},
    )
    assert stats["contrastive_accuracy"] == pytest.approx(2 / 3)


def test_loss_of_an_utterance_does_not_depend_on_a_padded_batch_neighbour():
    """Batch [a] vs [b, a padded]; b has no masked frame, so a's terms are the loss."""
    a_mask = _mask([9], [[(1, 4), (5, 8)]])
    a_inputs = _inputs([9], a_mask, seed=4)
    lengths = [15, 9]
    batch_mask = torch.cat(
        [torch.zeros(1, 15, dtype=torch.bool), F.pad(a_mask, (0, 6))]
    )
    batch_inputs = _inputs(lengths, batch_mask, seed=5)
    batch_inputs["features"][1, :9] = a_inputs["features"][0]
    batch_inputs["encoder_output"][-1][1, :9] = a_inputs["encoder_output"][-1][0]
    module = _loss(num_negatives=4).eval()
    negatives = _drawn(module, a_mask, torch.Generator().manual_seed(0))
    offset = batch_mask[0].sum().item()  # masked frames of b come first
    alone, alone_stats = module(**a_inputs, negative_indices=negatives)
    batched, batched_stats = module(
        **batch_inputs, negative_indices=_shift(negatives, offset)
    )
    assert batched.item() == pytest.approx(alone.item(), rel=1e-5)
    for key in STATS_KEYS:
        assert batched_stats[key] == pytest.approx(alone_stats[key], rel=1e-5), key


def test_contrastive_logits_of_an_utterance_do_not_depend_on_batch_neighbours():
    module = _loss().eval()
    a_mask = _mask([9], [[(1, 4), (5, 8)]])
    a_inputs = _inputs([9], a_mask, seed=4)
    batch_mask = torch.cat([_mask([15], [[(0, 10)]]), F.pad(a_mask, (0, 6))])
    batch_inputs = _inputs([15, 9], batch_mask, seed=5)
    batch_inputs["features"][1, :9] = a_inputs["features"][0]
    batch_inputs["encoder_output"][-1][1, :9] = a_inputs["encoder_output"][-1][0]
    negatives = _drawn(module, a_mask, torch.Generator().manual_seed(0))
    batch_negatives = _drawn(module, batch_mask, torch.Generator())
    batch_negatives[10:] = _shift(negatives, 10)  # b's 10 masked frames come first
    x_a, y_a, _ = _heads(module, a_inputs)
    x_b, y_b, _ = _heads(module, batch_inputs)
    alone = module._contrastive_logits(x_a, y_a, negatives)
    batched = module._contrastive_logits(x_b, y_b, batch_negatives)[10:]
    assert torch.allclose(alone, batched, atol=1e-5)


@pytest.mark.parametrize(
    "lengths, spans",
    [
        ([8, 6], [[(2, 5)], [(0, 2)]]),  # fewer masked frames than K = 6
        ([8, 6], [[(2, 3)], [(1, 4)]]),  # utterance 0 has exactly one masked frame
        ([5], [[(3, 4)]]),  # the only masked frame of the batch
        ([8, 6], [[], []]),  # no masked frame at all
    ],
    ids=["fewer-than-k", "one-masked-frame", "single-frame-batch", "no-masked-frame"],
)
@pytest.mark.parametrize("cross", [0, 3])
def test_short_utterances_give_a_finite_loss_and_finite_gradients(
    lengths, spans, cross
):
    mask = _mask(lengths, spans)
    module = _loss(cross_sample_negatives=cross).train()
    loss, stats = module(
        **_inputs(lengths, mask), generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(loss) and loss.requires_grad
    assert all(torch.isfinite(torch.as_tensor(v)) for v in stats.values())
    assert stats["sample_size"] == mask.sum().item()
    loss.backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_a_batch_without_masked_frames_gives_a_zero_loss():
    lengths = [8, 6]
    loss, stats = _loss()(**_inputs(lengths, _mask(lengths, [[], []])))
    assert loss.item() == 0.0
    assert stats["sample_size"] == 0.0 and stats["loss_contrastive"] == 0.0


def test_gradients_reach_both_heads_the_quantizer_and_the_codebook():
    lengths, mask = _standard_batch()
    module = _loss().train()
    loss, _ = module(
        **_inputs(lengths, mask), generator=torch.Generator().manual_seed(0)
    )
    loss.backward()
    for parameter in (
        module.final_proj.weight,
        module.project_q.weight,
        module.quantizer.weight_proj.weight,
        module.quantizer.codevectors,
    ):
        assert parameter.grad.abs().sum() > 0


def test_step_changes_the_quantizer_temperature():
    module = _loss()
    module.step(100_000)
    assert module.quantizer.temperature == pytest.approx(2.0 * 0.999995**100_000)
    lengths, mask = _standard_batch()
    _, stats = module(**_inputs(lengths, mask), generator=torch.Generator())
    assert stats["gumbel_temperature"] == pytest.approx(module.quantizer.temperature)
