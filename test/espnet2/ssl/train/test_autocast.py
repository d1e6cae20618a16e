"""CPU autocast (bf16, fp16) of the SSL models, and the AMP grad-scaler path of
ESPnet's trainer on a CPU.

ESPnet's trainer autocasts through ``torch.cuda.amp``, which does nothing on a CPU.
The model tests therefore enter ``torch.autocast("cpu", dtype)`` themselves. The
trainer tests run the real ``SSLTrainer.train_one_epoch`` (ESPnet's loop) with the
trainer's ``autocast`` swapped for the CPU one and a CPU grad scaler passed in.

Tolerances are multiples of the unit roundoff u of the autocast dtype: bf16 keeps 8
significant bits (u = 2**-8 = 3.9e-3), fp16 keeps 11 (u = 2**-11 = 4.9e-4). Each of
the ~12 matmuls and convolutions between the waveform and the loss rounds its output
once. The loss averages many frames, so the errors partly cancel: 2.5 u. A single
parameter's gradient averages less: the gradient vector may differ by 10 u in norm.
Measured on the tiny models (validation mode), relative to float32: with torch
2.8.0 on an AMD EPYC, loss 1.0e-3 (bf16) and 1.9e-4 (fp16) for wav2vec 2.0, 1.7e-3
and 1.7e-4 for HuBERT; gradients 7.4e-3 and 1.1e-3, 6.2e-3 and 6.6e-4. With torch
2.12.1 on an AMX Xeon: loss 1.0e-3 and 1.6e-4, 2.0e-3 and 8e-5; gradients 7e-3 and
1.2e-3, 5e-3 and 6e-4, but bf16 loss 1.7e-2 and 6.4e-2 without the float32
positional conv of ``Wav2Vec2TransformerEncoder._embed``, a oneDNN bug that these
tests caught (on the EPYC with 2.8.0, without it: 1.1e-3 and 2.5e-3, no bug).
Closeness is tested in validation mode, whose masks,
negatives and argmax quantizer are fixed: in training a hard Gumbel choice can flip
on rounding (measured: 1 of ~40 choices on 2 to 3 seeds in 20, moving the gradient
by up to 400 u), which is sampling, not a precision fault.
"""

import math
from typing import Dict, List

import pytest
import torch

import espnet2.train.trainer as espnet_trainer
from espnet2.schedulers.warmup_lr import WarmupLR
from espnet2.ssl.loss.wav2vec2 import Wav2Vec2Loss
from espnet2.ssl.quantizer.gumbel import GumbelVectorQuantizer
from espnet2.tasks.ssl import SSLTask
from espnet2.train.distributed_utils import DistributedOption
from espnet2.train.reporter import Reporter

UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
LOSS_RTOL_IN_U = 2.5
GRAD_RTOL_IN_U = 10.0
DTYPES = [
    pytest.param(torch.bfloat16, id="bf16"),
    pytest.param(torch.float16, id="fp16"),
]


def require_cpu_autocast(dtype: torch.dtype) -> None:
    """Skip unless this torch autocasts a CPU matmul to ``dtype`` (torch 2.8.0 and
    2.12.1 do for bf16 and fp16; older torch warned "CPU Autocast only supports
    dtype of torch.bfloat16" and disabled autocast for fp16)."""
    if not torch.amp.is_autocast_available("cpu"):
        pytest.skip(f"torch {torch.__version__} has no CPU autocast")
    with torch.autocast("cpu", dtype=dtype):
        out = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    if out.dtype != dtype:
        pytest.skip(f"torch {torch.__version__} CPU autocast ignores {dtype}")


def inputs(objective: str, audio_batch) -> Dict[str, torch.Tensor]:
    """Model inputs: two utterances (0.5 s, 0.35 s) and, for HuBERT, frame labels."""
    speech, lengths = audio_batch((8000, 5600))
    batch = dict(speech=speech, speech_lengths=lengths)
    if objective == "hubert":
        frames = (8000 - 400) // 320 + 1
        batch["text"] = torch.arange(frames).repeat(2, 1) % 10
        batch["text_lengths"] = torch.tensor([frames, frames])
    return batch


def loss_and_gradient(model, batch, dtype=None):
    """A forward + backward under CPU autocast to ``dtype`` (None: float32).

    Training masks, Gumbel noise and negatives come from torch's global generator,
    seeded the same for every dtype; validation ones are seeded from the audio.

    Returns:
        The loss (0-dim), the stats and the flattened gradient of every parameter
        that got one.
    """
    model.zero_grad()
    torch.manual_seed(3)
    enabled = dtype is not None
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=enabled):
        loss, stats, _ = model(**batch)
    loss.backward()
    grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
    return loss.detach(), stats, torch.cat(grads)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("objective", ["wav2vec2", "hubert"])
def test_autocast_training_step_gives_a_finite_loss_stats_and_gradients(
    build_ssl_model, ssl_configs, audio_batch, objective, dtype
):
    require_cpu_autocast(dtype)
    model, _ = build_ssl_model(ssl_configs[objective])
    loss, stats, grad = loss_and_gradient(model, inputs(objective, audio_batch), dtype)
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert all(math.isfinite(float(value)) for value in stats.values()), stats
    assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("objective", ["wav2vec2", "hubert"])
def test_autocast_loss_and_gradients_are_close_to_float32(
    build_ssl_model, ssl_configs, audio_batch, objective, dtype
):
    require_cpu_autocast(dtype)
    model, _ = build_ssl_model(ssl_configs[objective])
    model.eval()
    batch = inputs(objective, audio_batch)
    loss32, _, grad32 = loss_and_gradient(model, batch)
    loss, stats, grad = loss_and_gradient(model, batch, dtype)
    u = UNIT_ROUNDOFF[dtype]
    assert all(math.isfinite(float(value)) for value in stats.values()), stats
    assert abs(float(loss - loss32)) <= LOSS_RTOL_IN_U * u * abs(float(loss32))
    assert float((grad - grad32).norm()) <= GRAD_RTOL_IN_U * u * float(grad32.norm())


def _recording(method, dtypes: List[torch.dtype]):
    """``method`` that appends the dtype of its (first) tensor output to ``dtypes``."""

    def wrapper(*args, **kwargs):
        out = method(*args, **kwargs)
        dtypes.append((out[0] if isinstance(out, tuple) else out).dtype)
        return out

    return wrapper


@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_logits_and_quantizer_stay_float32_inside_the_autocast_model(
    build_ssl_model, ssl_configs, audio_batch, monkeypatch, dtype
):
    require_cpu_autocast(dtype)
    seen = {name: [] for name in ("logits", "group_logits", "gumbel", "quantizer")}
    for cls, name, key in [
        (Wav2Vec2Loss, "_contrastive_logits", "logits"),
        (GumbelVectorQuantizer, "_group_logits", "group_logits"),
        (GumbelVectorQuantizer, "_gumbel_one_hot", "gumbel"),
        (GumbelVectorQuantizer, "forward", "quantizer"),
    ]:
        monkeypatch.setattr(cls, name, _recording(getattr(cls, name), seen[key]))
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    loss, _, _ = loss_and_gradient(model, inputs("wav2vec2", audio_batch), dtype)
    assert seen == {key: [torch.float32] for key in seen}
    assert loss.dtype == torch.float32


def _half_vectors(dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """(12, 8) vectors in ``dtype``, rows 0-3 with tiny norms (~1e-3)."""
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(12, 8, generator=generator)
    vectors[:4] *= 1e-3
    return vectors.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_contrastive_logits_under_autocast_are_the_float32_logits_of_the_inputs(dtype):
    """Cosine, temperature 0.1 and the cross-entropy see no half-precision rounding:
    half-precision heads give the same loss as their outputs cast to float32."""
    require_cpu_autocast(dtype)
    module = Wav2Vec2Loss(8, feature_size=8, final_dim=8, num_negatives=4)
    x, y = _half_vectors(dtype, seed=0), _half_vectors(dtype, seed=1)
    generator = torch.Generator().manual_seed(2)
    negatives = torch.randint(0, 12, (12, 4), generator=generator)
    pp, penalty = torch.tensor(3.0), torch.tensor(0.5)
    reference = module._contrastive_logits(x.float(), y.float(), negatives)
    with torch.autocast("cpu", dtype=dtype):
        logits = module._contrastive_logits(x, y, negatives)
        loss, _ = module._combine_losses(logits, pp, penalty.to(dtype), {})
    assert logits.dtype == torch.float32
    assert torch.equal(logits, reference)
    assert torch.equal(loss, module._combine_losses(reference, pp, penalty, {})[0])


@pytest.mark.parametrize("train", [True, False], ids=["gumbel", "argmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantizer_under_autocast_is_the_float32_quantizer_of_the_inputs(dtype, train):
    require_cpu_autocast(dtype)
    torch.manual_seed(0)
    quantizer = GumbelVectorQuantizer(8, num_groups=2, num_entries=5, output_size=8)
    quantizer.train(train)
    features = _half_vectors(dtype)
    generator = torch.Generator().manual_seed(4)
    q32, pp32, stats32 = quantizer(features.float(), generator=generator)
    generator.manual_seed(4)
    with torch.autocast("cpu", dtype=dtype):
        q, pp, stats = quantizer(features, generator=generator)
    assert (q.dtype, pp.dtype) == (torch.float32, torch.float32)
    assert torch.equal(q, q32) and torch.equal(pp, pp32)
    assert stats == stats32


class CPUGradScaler(espnet_trainer.GradScaler):
    """``torch.amp.GradScaler("cpu")`` with the class ESPnet's trainer type-checks
    (``torch.cuda.amp.GradScaler``, which disables itself without CUDA)."""

    def __init__(self, **kwargs):
        torch.amp.GradScaler.__init__(self, "cpu", **kwargs)


class SnapshotIterator:
    """ESPnet-style iterator of (utt_ids, batch); records the training state after
    each step (when the trainer asks for the next batch)."""

    def __init__(self, batches: List[Dict], snapshot):
        self.batches, self.snapshot = batches, snapshot
        self.states = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        self.states.append(self.snapshot())
        for i, batch in enumerate(self.batches):
            yield [f"utt{i}_{b}" for b in range(len(batch["speech"]))], batch
            self.states.append(self.snapshot())


def _trainer_state(model, optimizer, scheduler, scaler) -> Dict:
    return dict(
        num_updates=int(model.num_updates),
        lr=optimizer.param_groups[0]["lr"],
        scheduler_steps=scheduler.last_epoch,
        adam_steps=[float(s["step"]) for s in optimizer.state.values()],
        loss_scale=scaler.get_scale(),
        params=[p.detach().clone() for p in model.parameters()],
    )


def _train_epoch(model, args, batches, dtype, monkeypatch, tmp_path, scaler=None):
    """One epoch of the real SSL trainer under CPU autocast, Adam, WarmupLR and a
    CPU grad scaler (or ``scaler``); returns the state before and after each step."""
    args.optim, args.optim_conf = "adam", {"lr": 1e-3}
    args.output_dir, args.ngpu = str(tmp_path), 0
    optimizer = SSLTask.build_optimizers(args, model)[0]
    scheduler = WarmupLR(optimizer, warmup_steps=10)
    # the untrained tiny HuBERT has weight gradients of up to ~10: times the
    # default scale 2**16 they overflow fp16 (65504), and the scaler would back
    # off over the first 3 steps (skipped like the poisoned one); 2**10 fits
    scaler = CPUGradScaler(init_scale=2.0**10) if scaler is None else scaler

    def cpu_autocast(enabled=True, **_):  # replaces torch.cuda.amp.autocast
        return torch.autocast("cpu", dtype=dtype, enabled=enabled)

    monkeypatch.setattr(espnet_trainer, "autocast", cpu_autocast)
    iterator = SnapshotIterator(
        batches, lambda: _trainer_state(model, optimizer, scheduler, scaler)
    )
    reporter = Reporter()
    reporter.set_epoch(1)
    with reporter.observe("train") as sub_reporter:
        SSLTask.trainer.train_one_epoch(
            model=model,
            iterator=iterator,
            optimizers=[optimizer],
            schedulers=[scheduler],
            scaler=scaler,
            reporter=sub_reporter,
            summary_writer=None,
            options=SSLTask.trainer.build_options(args),
            distributed_option=DistributedOption(distributed=False),
        )
    return iterator.states


def _same_params(a: Dict, b: Dict) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a["params"], b["params"]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("objective", ["wav2vec2", "hubert"])
def test_grad_scaler_skips_a_non_finite_step_and_applies_the_next_one(
    build_ssl_model,
    ssl_configs,
    audio_batch,
    monkeypatch,
    tmp_path,
    objective,
    dtype,
):
    """finite, inf in the audio (NaN loss and gradients), finite: ESPnet's loop sees
    the NaN gradient norm, lets the scaler skip ``optimizer.step()`` and does not
    step the scheduler; the update counter follows the real steps."""
    require_cpu_autocast(dtype)
    model, args = build_ssl_model(ssl_configs[objective])
    finite = inputs(objective, audio_batch)
    poisoned = dict(finite, speech=finite["speech"].clone())
    poisoned["speech"][0, 100] = float("inf")
    states = _train_epoch(
        model, args, [finite, poisoned, finite], dtype, monkeypatch, tmp_path
    )
    before, first, skipped, last = states
    assert [s["num_updates"] for s in states] == [0, 1, 1, 2]
    assert [s["scheduler_steps"] for s in states] == [0, 1, 1, 2]
    assert skipped["lr"] == first["lr"] < last["lr"]
    assert skipped["adam_steps"] == first["adam_steps"]
    assert _same_params(skipped, first)
    assert not _same_params(first, before) and not _same_params(last, skipped)
    assert skipped["loss_scale"] == first["loss_scale"] / 2  # backoff_factor 0.5
    assert all(bool(torch.isfinite(p).all()) for p in last["params"])


def test_use_amp_without_cuda_still_skips_a_non_finite_step(
    build_ssl_model, ssl_configs, audio_batch, monkeypatch, tmp_path
):
    """``use_amp: true`` on a CPU: ESPnet makes a ``torch.cuda.amp.GradScaler``,
    which disables itself; its ``step`` would run ``optimizer.step()`` on the NaN
    gradient of ESPnet's skip branch. The SSL trainer drops the disabled scaler, so
    the step is skipped and the weights stay finite."""
    if torch.cuda.is_available():
        pytest.skip("the scaler is enabled where CUDA is available")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        disabled = espnet_trainer.GradScaler()
    assert not disabled.is_enabled()
    model, args = build_ssl_model(ssl_configs["wav2vec2"])
    finite = inputs("wav2vec2", audio_batch)
    poisoned = dict(finite, speech=finite["speech"].clone())
    poisoned["speech"][0, 100] = float("nan")
    states = _train_epoch(
        model, args, [finite, poisoned, finite], torch.float32, monkeypatch,
        tmp_path, scaler=disabled,
    )  # fmt: skip
    assert [s["num_updates"] for s in states] == [0, 1, 1, 2]
    assert _same_params(states[2], states[1])
    assert all(bool(torch.isfinite(p).all()) for p in states[3]["params"])
