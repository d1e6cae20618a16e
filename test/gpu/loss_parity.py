"""GPU check, part (a): both SSL objectives on a device against CPU float32.

For HuBERT and wav2vec 2.0, each model is built once through ESPnet's real
``SSLTask.build_model`` from its recipe config (``--size base``: the LibriSpeech
BASE configs; ``--size tiny``: the mini_synth tiny configs), seeded, and copied to
``--device``. Then:

1. **Eval-mode loss parity.** One padded batch of seeded random audio (default
   4 utterances of 4, 3.5, 3 and 2.5 s; HuBERT gets seeded random frame labels, one per
   CNN frame, padded with -1) goes through the model in eval mode on the CPU in
   float32 (the reference), on the device in float32, and on the device under bf16
   autocast. Eval mode makes the masks and negatives a function of the audio
   (``utterance_seeds`` in ``espnet2/ssl/espnet_model.py``); draws the model makes on
   its own device come from the CPU generator (``CpuRandomness``), so every run
   scores the same masked frames against the same negatives. Recorded: every scalar
   statistic of each run and its relative difference to the reference. Checked: the
   masked-frame counts are equal, and the loss differs by at most
   ``TOLERANCES[dtype]`` relative:

   * float32, 1e-4: the same maths in another summation order; TF32 is switched off
     for matmuls and cuDNN convolutions during this run (cuDNN allows TF32 by
     default, which rounds inputs to 10 bits);
   * bf16, 2e-2: autocast rounds the inputs of every matmul and convolution to 8
     significant bits (2**-9 relative), through 7 convolutions, 12 blocks and the
     loss head, and a rounded logit can flip a frame's quantizer code (wav2vec 2.0)
     or its best class; a wrong operator (a lost mask, an overflow, a norm in
     low precision that should not be) moves the loss by far more.

2. **Two training steps** on the device under ``--train_dtype`` autocast (default
   bf16; float32 on a CPU), with the optimizer of ``SSLTask.build_optimizers`` (so
   the update-counting hook is installed), forward, backward, ``optimizer.step()``.
   Checked: every loss and gradient norm is finite, the parameters stay finite,
   ``num_updates`` is 2, ``global_step`` is 2 and ``seen_audio.seen_samples`` is twice
   the batch's valid samples.

Run from the repository root:
``tools/venv/bin/python test/gpu/loss_parity.py --device cuda --output DIR/parity.json``
(exit status 1 names every failed check). ``test/gpu/run.sh`` runs it first.
"""

import argparse
import contextlib
import copy
import json
import logging
import math
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from cpu_random import CpuRandomness

from espnet2.ssl.frame_geometry import cnn_frame_count

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "base": {
        "hubert": "egs2/librispeech/ssl2/conf/tuning/train_ssl_hubert_base.yaml",
        "wav2vec2": "egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_base.yaml",
    },
    "tiny": {
        "hubert": "egs2/mini_synth/ssl2/conf/tuning/train_ssl_hubert_tiny.yaml",
        "wav2vec2": "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml",
    },
}
TOLERANCES = {"fp32": 1e-4, "bf16": 2e-2}  # relative, on the loss (module docstring)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
EQUAL_COUNTS = ("num_masked_frames", "sample_size")  # same draws: equal on every run
SAMPLE_RATE = 16000


# ---------------------------------------------------------------- models and data
def build(config_path: str, seed: int) -> Tuple[argparse.Namespace, torch.nn.Module]:
    """``SSLTask``'s arguments from a recipe config and the model it builds (CPU).

    Args:
        config_path: Training YAML, relative to the repository root.
        seed: Seeds the parameter initialisation.

    Returns:
        The parsed arguments (for ``SSLTask.build_optimizers``) and the
        ``ESPnetSSLModel``, in float32 on the CPU.
    """
    from espnet2.tasks.ssl import SSLTask

    with open(REPO_ROOT / config_path) as f:
        config = yaml.safe_load(f)
    args = SSLTask.get_parser().parse_args(["--token_list", "none"])
    for key, value in config.items():
        setattr(args, key, value)
    args.token_list = ["<unk>"]
    args.init = config.get("init")
    torch.manual_seed(seed)
    return args, SSLTask.build_model(args)


def make_batch(args: argparse.Namespace, seconds: Sequence[float], seed: int) -> Dict:
    """A padded batch of seeded random audio (and frame labels for HuBERT), on CPU.

    Args:
        args: The config's arguments (CNN shapes, the loss's ``num_classes``).
        seconds: Duration of each utterance in seconds (B,).
        seed: Seeds the audio and the labels.

    Returns:
        ``speech`` (B, S) float (0.1 x N(0, 1), zeros after each length),
        ``speech_lengths`` (B,) long in samples; with a ``num_classes`` loss also
        ``text`` (B, L) long labels in [0, num_classes), -1 after each length, and
        ``text_lengths`` (B,) long: one label per CNN frame.
    """
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([int(round(s * SAMPLE_RATE)) for s in seconds])
    speech = 0.1 * torch.randn(len(seconds), int(lengths.max()), generator=generator)
    speech[torch.arange(speech.size(1))[None, :] >= lengths[:, None]] = 0.0
    batch = {"speech": speech, "speech_lengths": lengths}
    classes = [
        c["conf"]["num_classes"] for c in args.loss if "num_classes" in c["conf"]
    ]
    if classes:
        shapes = args.frontend_conf["shapes"]
        frames = torch.tensor([cnn_frame_count(int(n), shapes) for n in lengths])
        text = torch.randint(
            classes[0], (len(seconds), int(frames.max())), generator=generator
        )
        text[torch.arange(text.size(1))[None, :] >= frames[:, None]] = -1
        batch.update(text=text, text_lengths=frames)
    return batch


def to_device(batch: Dict, device: torch.device) -> Dict:
    """The batch's tensors on ``device``."""
    return {key: value.to(device) for key, value in batch.items()}


def autocast(device: torch.device, dtype: str):
    """bf16 autocast on ``device`` for ``dtype == "bf16"``, else nothing."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


@contextlib.contextmanager
def no_tf32():
    """Matmuls and cuDNN convolutions in full float32 (restored afterwards)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def scalars(stats: Dict) -> Dict[str, float]:
    """The statistics that are one number, as Python floats."""
    out = {}
    for key, value in stats.items():
        if torch.is_tensor(value) and value.numel() == 1:
            out[key] = float(value.detach().float())
        elif isinstance(value, (int, float)):
            out[key] = float(value)
    return out


# ---------------------------------------------------------------- parity
def eval_stats(model: torch.nn.Module, batch: Dict, dtype: str) -> Dict[str, float]:
    """The model's eval-mode statistics on ``batch`` (all tensors on its device).

    Random draws made on the model's device come from the CPU generator
    (``CpuRandomness``); TF32 is off. Returns every scalar statistic (``loss``, ...).
    """
    device = batch["speech"].device
    model.eval()
    with torch.no_grad(), no_tf32(), CpuRandomness(), autocast(device, dtype):
        _, stats, _ = model(**batch)
    return scalars(stats)


def relative_differences(
    reference: Dict[str, float], other: Dict[str, float]
) -> Dict[str, float]:
    """``|other - reference| / |reference|`` per common key (absolute where 0)."""
    out = {}
    for key in sorted(set(reference) & set(other)):
        scale = abs(reference[key]) or 1.0
        out[key] = abs(other[key] - reference[key]) / scale
    return out


def parity_failures(
    name: str, reference: Dict, other: Dict, dtype: str, diffs: Dict
) -> List[str]:
    """The failed checks of one run against the CPU float32 reference."""
    failures = []
    if not math.isfinite(other["loss"]):
        failures.append(f"{name}: the loss is not finite ({other['loss']})")
    elif diffs["loss"] > TOLERANCES[dtype]:
        failures.append(
            f"{name}: loss {other['loss']:.6g} vs CPU float32 {reference['loss']:.6g}:"
            f" relative difference {diffs['loss']:.3g} > {TOLERANCES[dtype]:g}"
        )
    for key in EQUAL_COUNTS:
        if key in reference and other.get(key) != reference[key]:
            failures.append(
                f"{name}: {key} {other.get(key)} != {reference[key]} on the CPU: "
                "the runs did not draw the same masks"
            )
    return failures


# ---------------------------------------------------------------- training
def train_steps(
    args: argparse.Namespace,
    model: torch.nn.Module,
    batch: Dict,
    dtype: str,
    num_steps: int = 2,
) -> Dict:
    """``num_steps`` optimizer updates on ``batch`` (on the model's device).

    Args:
        args: The config's arguments: ``SSLTask.build_optimizers`` builds the
            optimizer from them and installs the model's update counter.
        model: A freshly built ``ESPnetSSLModel`` (counters at 0), on the device.
        batch: Tensors on the model's device (see ``make_batch``).
        dtype: ``fp32`` or ``bf16`` (autocast around the forward, as ESPnet's
            trainer does).
        num_steps: Updates to make.

    Returns:
        ``losses`` and ``grad_norms`` per step, the counters ``num_updates``,
        ``global_step``, ``seen_samples`` and ``expected_seen_samples``
        (num_steps x the batch's valid samples), ``params_finite`` and ``step_s``.
    """
    from espnet2.tasks.ssl import SSLTask

    optimizer = SSLTask.build_optimizers(args, model)[0]
    model.train()
    losses, norms, start = [], [], time.perf_counter()
    for _ in range(num_steps):
        optimizer.zero_grad(set_to_none=True)
        with autocast(batch["speech"].device, dtype):
            loss, _, _ = model(**batch)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, float("inf"))))
        optimizer.step()
        losses.append(float(loss.detach().float()))
    return {
        "losses": losses,
        "grad_norms": norms,
        "num_updates": int(model.num_updates),
        "global_step": int(model.global_step),
        "seen_samples": int(model.seen_audio.seen_samples),
        "expected_seen_samples": num_steps * int(batch["speech_lengths"].sum()),
        "params_finite": all(bool(p.isfinite().all()) for p in model.parameters()),
        "step_s": (time.perf_counter() - start) / num_steps,
    }


def training_failures(name: str, result: Dict, num_steps: int) -> List[str]:
    """The failed checks of ``train_steps``' result."""
    failures = []
    finite = all(map(math.isfinite, result["losses"] + result["grad_norms"]))
    if not finite or not result["params_finite"]:
        failures.append(f"{name}: non-finite training step: {result}")
    for key in ("num_updates", "global_step"):
        if result[key] != num_steps:
            failures.append(f"{name}: {key} {result[key]} after {num_steps} updates")
    if result["seen_samples"] != result["expected_seen_samples"]:
        failures.append(
            f"{name}: seen_samples {result['seen_samples']} != "
            f"{result['expected_seen_samples']} (the batches' valid samples)"
        )
    return failures


# ---------------------------------------------------------------- runner
def check_objective(objective: str, options: argparse.Namespace) -> Dict:
    """Parity and training steps of one objective; ``failures`` lists what failed.

    Args:
        objective: ``hubert`` or ``wav2vec2`` (a key of ``CONFIGS[size]``).
        options: The command-line options (``get_parser``).

    Returns:
        ``config``, ``params_m``, ``eval`` (statistics per run: ``cpu_fp32``,
        ``<device>_fp32``, ``<device>_bf16``), ``relative_difference`` (per run and
        statistic, against ``cpu_fp32``), ``train`` and ``failures``.
    """
    device = torch.device(options.device)
    config = CONFIGS[options.size][objective]
    args, model = build(config, options.seed)
    batch = make_batch(args, options.seconds, options.seed)
    result = {"config": config, "batch_seconds": list(options.seconds)}
    result["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    result["eval"] = {"cpu_fp32": eval_stats(model, batch, "fp32")}
    on_device = copy.deepcopy(model).to(device)
    device_batch = to_device(batch, device)
    result["relative_difference"], failures = {}, []
    for dtype in options.dtypes:
        name = f"{device.type}_{dtype}"
        stats = eval_stats(on_device, device_batch, dtype)
        diffs = relative_differences(result["eval"]["cpu_fp32"], stats)
        result["eval"][name], result["relative_difference"][name] = stats, diffs
        failures += parity_failures(
            f"{objective} {name}", result["eval"]["cpu_fp32"], stats, dtype, diffs
        )
    del on_device
    fresh = copy.deepcopy(model).to(device)  # counters at 0, as built
    result["train"] = train_steps(
        args, fresh, device_batch, options.train_dtype, options.train_steps
    )
    result["train"]["dtype"] = options.train_dtype
    failures += training_failures(
        f"{objective} training", result["train"], options.train_steps
    )
    result["failures"] = failures
    return result


def device_name(device: torch.device) -> str:
    """The card's name (``torch.cuda.get_device_name``) or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def get_parser() -> argparse.ArgumentParser:
    """The command-line options (``--help``)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--size", default="base", choices=sorted(CONFIGS))
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=["hubert", "wav2vec2"],
        choices=["hubert", "wav2vec2"],
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["fp32", "bf16"],
        choices=sorted(DTYPES),
        help="device runs compared with CPU float32",
    )
    parser.add_argument(
        "--seconds",
        nargs="+",
        type=float,
        default=[4.0, 3.5, 3.0, 2.5],
        help="utterance durations of the batch (padded to the longest)",
    )
    parser.add_argument(
        "--train_dtype",
        default=None,
        choices=sorted(DTYPES),
        help="autocast of the training steps (default: bf16 on " "CUDA, fp32 on a CPU)",
    )
    parser.add_argument("--train_steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="weights, audio, labels")
    parser.add_argument("--output", default=None, help="JSON file of the results")
    return parser


def run(options: argparse.Namespace) -> Dict:
    """Every objective's checks, with the environment: the JSON result."""
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {options.device}: CUDA is not available here")
    if options.train_dtype is None:
        options.train_dtype = "bf16" if device.type == "cuda" else "fp32"
    start = time.perf_counter()
    objectives = {name: check_objective(name, options) for name in options.objectives}
    return {
        "check": "loss_parity",
        "device": str(device),
        "device_name": device_name(device),
        "size": options.size,
        "tolerances": TOLERANCES,
        "objectives": objectives,
        "failures": [f for r in objectives.values() for f in r["failures"]],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "wall_s": time.perf_counter() - start,
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the checks, prints and writes the JSON; returns 1 if any failed."""
    options = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.info(f"arguments: {vars(options)}")
    result = run(options)
    text = json.dumps(result, indent=1)
    if options.output:
        Path(options.output).parent.mkdir(parents=True, exist_ok=True)
        Path(options.output).write_text(text + "\n")
    print(text, flush=True)
    for failure in result["failures"]:
        logging.error(f"FAILED: {failure}")
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
