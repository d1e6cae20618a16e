"""GumbelVectorQuantizer: codes, straight-through gradient, perplexity, schedule."""

import pytest
import torch

from espnet2.ssl.quantizer.gumbel import GumbelVectorQuantizer, group_perplexity

INPUT_SIZE = 6
GROUPS = 2
ENTRIES = 5
OUTPUT_SIZE = 8  # entries of 4 dims


def _quantizer(seed: int = 0, **overrides) -> GumbelVectorQuantizer:
    torch.manual_seed(seed)
    kwargs = dict(num_groups=GROUPS, num_entries=ENTRIES, output_size=OUTPUT_SIZE)
    kwargs.update(overrides)
    return GumbelVectorQuantizer(INPUT_SIZE, **kwargs)


def _frames(num_frames: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(
        num_frames, INPUT_SIZE, generator=torch.Generator().manual_seed(seed)
    )


def _entries(quantizer: GumbelVectorQuantizer) -> torch.Tensor:
    return quantizer.codevectors.detach().view(GROUPS, ENTRIES, -1)  # (G, V, d)


def _chosen_entries(quantizer, q: torch.Tensor) -> torch.Tensor:
    """(N, G) index of the entry each group of q equals exactly; fails otherwise."""
    groups = q.detach().view(q.size(0), GROUPS, -1)  # (N, G * d) -> (N, G, d)
    equal = (groups[:, :, None, :] == _entries(quantizer)[None]).all(dim=-1)
    assert (equal.sum(dim=-1) == 1).all(), "a group is not exactly one entry"
    return equal.float().argmax(dim=-1)


def test_codebook_and_projection_have_fairseq_shapes_and_init():
    quantizer = _quantizer()
    assert quantizer.codevectors.shape == (1, GROUPS * ENTRIES, OUTPUT_SIZE // GROUPS)
    assert quantizer.weight_proj.out_features == quantizer.num_codevectors == 10
    assert torch.all(quantizer.weight_proj.bias == 0)
    assert 0.0 <= quantizer.codevectors.min() and quantizer.codevectors.max() < 1.0


def test_output_size_not_divisible_by_the_groups_is_rejected():
    with pytest.raises(ValueError):
        GumbelVectorQuantizer(INPUT_SIZE, num_groups=3, output_size=8)


def test_eval_output_is_the_argmax_codevector_of_each_group():
    quantizer = _quantizer().eval()
    x = _frames(7)
    q, _, _ = quantizer(x)
    logits = quantizer.weight_proj(x).view(7, GROUPS, ENTRIES)
    best = logits.argmax(dim=-1)  # (N, G)
    entries = _entries(quantizer)
    expected = torch.cat([entries[g, best[:, g]] for g in range(GROUPS)], dim=1)
    assert q.shape == (7, OUTPUT_SIZE)
    assert torch.equal(q, expected)


def test_training_output_is_reproducible_under_a_seeded_generator():
    quantizer = _quantizer().train()
    x = _frames(9)
    q1, p1, _ = quantizer(x, generator=torch.Generator().manual_seed(3))
    q2, p2, _ = quantizer(x, generator=torch.Generator().manual_seed(3))
    q3, _, _ = quantizer(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(q1, q2) and torch.equal(p1, p2)
    assert not torch.equal(q1, q3)


def test_training_output_is_exactly_one_entry_per_group():
    quantizer = _quantizer().train()
    q, _, _ = quantizer(_frames(11), generator=torch.Generator().manual_seed(0))
    _chosen_entries(quantizer, q)


def test_training_choices_follow_the_softmax_of_the_logits():
    """Gumbel-max: argmax(logits + Gumbel noise) is a sample of softmax(logits)."""
    quantizer = _quantizer().train()
    x = _frames(1).expand(20000, INPUT_SIZE)
    q, _, _ = quantizer(x, generator=torch.Generator().manual_seed(0))
    chosen = _chosen_entries(quantizer, q)  # (N, G)
    counts = torch.nn.functional.one_hot(chosen, ENTRIES).float().mean(dim=0)
    probs = quantizer.weight_proj(x[:1]).view(GROUPS, ENTRIES).softmax(dim=-1)
    assert torch.allclose(counts, probs.detach(), atol=0.015)


def test_straight_through_gradient_is_the_soft_samples_gradient():
    quantizer = _quantizer(max_temperature=1.5).train()
    x = _frames(5).requires_grad_()
    weights = torch.randn(5, OUTPUT_SIZE)
    q, _, _ = quantizer(x, generator=torch.Generator().manual_seed(8))
    (grad_x,) = torch.autograd.grad((q * weights).sum(), x)

    uniform = torch.rand(
        (5, GROUPS, ENTRIES), generator=torch.Generator().manual_seed(8)
    )
    gumbel = -torch.log(-torch.log(uniform.clamp(min=torch.finfo(torch.float32).tiny)))
    logits = quantizer.weight_proj(x).view(5, GROUPS, ENTRIES)
    soft = ((logits + gumbel) / 1.5).softmax(dim=-1)
    soft_q = torch.einsum("ngv,gvd->ngd", soft, _entries(quantizer)).reshape(5, -1)
    (expected,) = torch.autograd.grad((soft_q * weights).sum(), x)
    assert grad_x.abs().sum() > 0
    assert torch.allclose(grad_x, expected, atol=1e-5)


def test_gradients_reach_weight_proj_and_the_chosen_codevectors_in_training():
    quantizer = _quantizer().train()
    q, _, _ = quantizer(_frames(4), generator=torch.Generator().manual_seed(0))
    (q * torch.randn_like(q)).sum().backward()
    assert quantizer.weight_proj.weight.grad.abs().sum() > 0
    used_rows = quantizer.codevectors.grad[0].abs().sum(dim=-1) > 0  # (G * V,)
    assert 0 < used_rows.sum() <= 4 * GROUPS


@pytest.mark.parametrize("seed", range(5))
def test_each_groups_perplexity_lies_between_one_and_the_entry_count(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = 4 * torch.randn(13, GROUPS, ENTRIES, generator=generator)
    for probs in (
        logits.softmax(dim=-1),
        torch.nn.functional.one_hot(logits.argmax(-1), ENTRIES).float(),
    ):
        perplexity = group_perplexity(probs)
        assert perplexity.shape == (GROUPS,)
        assert torch.all(perplexity >= 1 - 1e-6) and torch.all(perplexity <= ENTRIES)


@pytest.mark.parametrize("training", [False, True])
def test_summed_perplexities_lie_between_groups_and_codebook_size(training):
    quantizer = _quantizer().train(training)
    _, prob_perplexity, stats = quantizer(_frames(17), generator=torch.Generator())
    for value in (stats["code_perplexity"], stats["prob_perplexity"]):
        assert GROUPS - 1e-5 <= value <= GROUPS * ENTRIES
    assert prob_perplexity.item() == pytest.approx(stats["prob_perplexity"])
    assert prob_perplexity.requires_grad


def test_perplexities_equal_the_group_count_when_every_frame_picks_the_same_entry():
    quantizer = _quantizer().eval()
    with torch.no_grad():
        quantizer.weight_proj.weight.zero_()
        quantizer.weight_proj.bias.copy_(torch.tensor([50.0, 0, 0, 0, 0] * GROUPS))
    _, _, stats = quantizer(_frames(8))
    assert stats["code_perplexity"] == pytest.approx(GROUPS, abs=1e-5)
    assert stats["prob_perplexity"] == pytest.approx(GROUPS, abs=1e-5)
    assert stats["codebook_usage"] == pytest.approx(1 / ENTRIES)


def test_perplexities_approach_the_codebook_size_under_uniform_usage():
    torch.manual_seed(0)
    quantizer = GumbelVectorQuantizer(
        ENTRIES, num_groups=GROUPS, num_entries=ENTRIES, output_size=OUTPUT_SIZE
    ).eval()
    with torch.no_grad():  # frame i scores entry i of every group highest
        quantizer.weight_proj.weight.copy_(torch.eye(ENTRIES).repeat(GROUPS, 1))
    _, _, stats = quantizer(10 * torch.eye(ENTRIES))
    assert stats["code_perplexity"] == pytest.approx(GROUPS * ENTRIES, rel=1e-4)
    assert stats["prob_perplexity"] == pytest.approx(GROUPS * ENTRIES, rel=1e-4)
    assert stats["codebook_usage"] == 1.0


def test_temperature_starts_at_the_maximum():
    quantizer = _quantizer()
    assert quantizer.temperature == 2.0
    _, _, stats = quantizer(_frames(2), generator=torch.Generator())
    assert stats["gumbel_temperature"] == 2.0


@pytest.mark.parametrize("num_updates", [0, 1, 1000, 100_000, 277_000, 300_000, 10**12])
def test_temperature_after_step_decays_exponentially_down_to_the_floor(num_updates):
    quantizer = _quantizer()
    quantizer.step(num_updates)
    expected = max(2.0 * 0.999995**num_updates, 0.5)
    assert quantizer.temperature == pytest.approx(expected, rel=1e-12)
    assert isinstance(quantizer.temperature, float)


def test_step_accepts_espnets_one_element_global_step_tensor():
    quantizer = _quantizer(min_temperature=0.1, temperature_decay=0.5)
    quantizer.step(torch.tensor([2]))
    assert quantizer.temperature == pytest.approx(0.5)


@pytest.mark.parametrize("training", [False, True])
def test_empty_input_gives_an_empty_output_and_finite_perplexities(training):
    quantizer = _quantizer().train(training)
    q, prob_perplexity, stats = quantizer(
        torch.zeros(0, INPUT_SIZE), generator=torch.Generator()
    )
    assert q.shape == (0, OUTPUT_SIZE)
    assert prob_perplexity.item() == pytest.approx(GROUPS)
    assert stats["code_perplexity"] == pytest.approx(GROUPS)
    assert stats["codebook_usage"] == 0.0
    (q.sum() + prob_perplexity).backward()
    assert torch.isfinite(quantizer.weight_proj.weight.grad).all()


def test_quantizer_computes_in_float32_under_autocast():
    quantizer = _quantizer().train()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        q, prob_perplexity, _ = quantizer(
            _frames(3).bfloat16(), generator=torch.Generator()
        )
    assert q.dtype == prob_perplexity.dtype == torch.float32
