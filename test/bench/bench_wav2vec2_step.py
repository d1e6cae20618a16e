"""Benchmark: one wav2vec 2.0 pretraining step, ours vs Hugging Face, side by side.

One training step = forward + backward + AdamW update, on a batch of 4 utterances of
4 s random audio (16 kHz, no padding), both models in train mode (dropouts, layer
drop and Gumbel noise on), at two sizes:

* ``base``: ours is built from ``conf/tuning/train_ssl_wav2vec2_base.yaml`` through
  ESPnet's real ``SSLTask`` (``use_flash_attn: false`` on CPU); the reference is
  ``transformers.Wav2Vec2ForPreTraining`` with the same architecture (95 M params).
* ``small``: the same YAML with a 256-channel CNN (same kernels and strides), a
  256-dim, 8-block, 4-head encoder with 1024 FFN units; quantizer, projection and
  loss settings unchanged (2 x 320 codebook, 256 dims, 100 negatives). About 8.3 M
  parameters on both sides.

Both models are configured from the same (resized) YAML: architecture, dropouts,
layer drop 0.05, codebook, 100 negatives, masks (mask_prob 0.65, mask_length 10,
min_masks 2) and AdamW with its ``optim_conf`` (lr 5e-4). Ours draws its mask and
negatives inside the model; Hugging Face's are drawn by its own
``_compute_mask_indices`` and ``_sample_negative_indices`` inside the timed step
(its data collator's work), and their time is reported as ``hf_mask_s``. Hugging
Face uses SDPA attention (``--hf_attention``); on a CPU in training, with attention
dropout, PyTorch runs SDPA's math path (explicit softmax), as ESPnet does.

Differences that remain, by design of each implementation: Hugging Face quantizes
and scores all B * T frames (ours only the masked ones), computes a gradient for the
waveform, and has no feature penalty; ours trims every utterance to the batch's
smallest mask (fairseq ``require_same_masks``), so it scores ~5-10 % fewer frames.

Method (test/bench/README.md): one process, warm-up, then the two models alternate
(ABBA order) for ``--repeats`` steps each; the median step time gives audio seconds
per wall second; FLOPs of one forward + backward are counted with
``torch.utils.flop_counter.FlopCounterMode`` and divided by the step time and by the
best float32 matrix-multiply rate measured here (``torch.mm`` 2048^3 and the same
product as a 1x1 ``conv1d``, which goes through oneDNN; probed at the start and
the end, the best counts): the MFU. ``cpu_share`` (process CPU time over wall time
x threads) tells whether other processes took the CPUs during a step.

On a GPU (``--device cuda``, e.g. with ``--dtype bf16`` for bf16 autocast around the
forward, as ESPnet's trainer runs it; backward and AdamW outside): each timed step
starts and ends with ``torch.cuda.synchronize``, the CUDA allocator's peak is reset
before each step and its ``max_memory_allocated`` recorded (``cuda_peak_mb``: the
parameters, AdamW's state and the batch included), the peak rate is a ``--dtype``
matrix product of ``--peak_size`` (8192 on CUDA), and no RSS or contention is read
(``contended`` is None). ``--batch_size`` and ``--audio_seconds`` set the batch
(default 4 x 4 s; the GPU check also runs 6 x 15.6 s, fairseq's longest crop).
``--sizes tiny`` (64 channels and dims, 2 blocks, 2 heads) is a smoke test.

Run from the repository root:
``tools/venv/bin/python test/bench/bench_wav2vec2_step.py``
(on a GPU: ``--device cuda --dtype bf16 --sizes base``).
Writes one JSON line per (model, size), a summary line of ratios, and
``bench/results/wav2vec2_step.json``. ``--profile N`` also writes torch.profiler
tables of N steps per model to ``bench/results/wav2vec2_step_profile_<size>.txt``.
"""

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import yaml
from bench_env import (
    MB,
    cpu_flags,
    device_facts,
    device_peak_mb,
    loadavg,
    read_status_kib,
    reset_device_peak,
    reset_peak_rss,
    synchronize,
)
from torch.utils.flop_counter import FlopCounterMode

from espnet2.ssl.study.flops import CPU_SDPA_FLOPS
from espnet2.ssl.study.planner import build_model_from_config as build_ours

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_YAML = "egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_base.yaml"
SAMPLE_RATE = 16000
AUDIO_SECONDS = 4.0  # default --audio_seconds
BATCH_SIZE = 4  # default --batch_size
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CONTENDED_CPU_SHARE = 0.9  # below this median share, other processes took the CPUs
# The sizes as overrides of the BASE YAML: (CNN channels, D, heads, FFN, blocks)
SIZES = {
    "base": dict(channels=512, dim=768, heads=12, ffn=3072, blocks=12),
    "small": dict(channels=256, dim=256, heads=4, ffn=1024, blocks=8),
    "tiny": dict(channels=64, dim=64, heads=2, ffn=128, blocks=2),  # smoke test
}


# ---------------------------------------------------------------- environment
def allocator() -> str:
    """The malloc in use: jemalloc/tcmalloc when preloaded, else glibc."""
    with open("/proc/self/maps") as f:
        maps = f.read()
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in maps:
            conf = os.environ.get("MALLOC_CONF", "")
            return f"{name} (LD_PRELOAD; MALLOC_CONF={conf!r})"
    return "glibc malloc (default)"


def environment() -> Dict:
    """What a result depends on: versions, threads, CPU flags, allocator."""
    import transformers

    import espnet2.ssl.espnet_model as ours_module

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": cpu_flags(),
        "allocator": allocator(),
        "loadavg_end": loadavg(),
        "ours_model_file": os.path.relpath(ours_module.__file__, REPO_ROOT),
    }


# ---------------------------------------------------------------- peak rate
def best_rate(fn: Callable[[], torch.Tensor], flops: float, repeats: int) -> float:
    """Best GFLOP/s of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


def matmul_peak(
    size: int = 2048,
    repeats: int = 10,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> Dict[str, float]:
    """GFLOP/s of a size^3 product as ``torch.mm`` and as a 1x1 conv1d.

    Args:
        size: Matrix side.
        repeats: Timed runs (the best counts).
        device: Where to multiply (CUDA: timed between synchronisations).
        dtype: Element type (float32 on a CPU; bf16 for bf16 autocast on a GPU).

    Returns:
        ``mm_gflops``, ``conv1x1_gflops`` and their maximum ``peak_gflops``.
    """
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    x = torch.randn(1, size, size, device=device, dtype=dtype)  # (N, C_in, L)
    w = torch.randn(size, size, 1, device=device, dtype=dtype)  # (C_out, C_in, 1)
    flops = 2.0 * size**3

    def synced(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        return lambda: (fn(), synchronize(device))

    with torch.no_grad():
        mm = best_rate(synced(lambda: torch.mm(a, b)), flops, repeats)
        conv = best_rate(
            synced(lambda: torch.nn.functional.conv1d(x, w)), flops, repeats
        )
    return {"mm_gflops": mm, "conv1x1_gflops": conv, "peak_gflops": max(mm, conv)}


# ---------------------------------------------------------------- models
def load_config(size: str) -> Dict:
    """The BASE YAML as a dict, resized to ``size`` (see SIZES).

    Both models are configured from it, so a change in the YAML reaches both.
    """
    with open(REPO_ROOT / BASE_YAML) as f:
        conf = yaml.safe_load(f)
    arch = SIZES[size]
    shapes = conf["frontend_conf"]["shapes"]
    conf["frontend_conf"]["shapes"] = [[arch["channels"], k, s] for _, k, s in shapes]
    conf["preencoder_conf"]["output_size"] = arch["dim"]
    conf["encoder_conf"].update(
        output_size=arch["dim"],
        attention_heads=arch["heads"],
        linear_units=arch["ffn"],
        num_blocks=arch["blocks"],
        use_flash_attn=False,  # CPU: ESPnet's explicit softmax attention
    )
    conf["loss"][0]["conf"]["feature_size"] = arch["channels"]
    return conf


def mask_conf(conf: Dict) -> Dict:
    """The ``mask`` util's settings (mask_prob, mask_length, min_masks)."""
    util = next(u for u in conf["util"] if u["name"] == "mask")["conf"]
    return {k: util[k] for k in ("mask_prob", "mask_length", "min_masks")}


def optim_conf(conf: Dict) -> Dict:
    """``optim_conf`` as AdamW keyword arguments (lr, betas, eps, weight decay)."""
    return {**conf["optim_conf"], "betas": tuple(conf["optim_conf"]["betas"])}


def hf_config_kwargs(conf: Dict) -> Dict:
    """``Wav2Vec2Config`` arguments equal to our YAML, key by key."""
    cnn, enc = conf["frontend_conf"], conf["encoder_conf"]
    loss = conf["loss"][0]["conf"]
    assert cnn["norm_mode"] == "group_norm" and not enc["normalize_before"]
    return dict(
        conv_dim=[c for c, _, _ in cnn["shapes"]],
        conv_kernel=[k for _, k, _ in cnn["shapes"]],
        conv_stride=[s for _, _, s in cnn["shapes"]],
        conv_bias=cnn["bias"],
        feat_extract_norm="group",  # GroupNorm on the first conv only
        feat_extract_activation="gelu",
        hidden_size=enc["output_size"],
        num_hidden_layers=enc["num_blocks"],
        num_attention_heads=enc["attention_heads"],
        intermediate_size=enc["linear_units"],
        hidden_act=enc["ffn_activation"],
        layer_norm_eps=enc["layer_norm_eps"],
        num_conv_pos_embeddings=enc["pos_conv_kernel_size"],
        num_conv_pos_embedding_groups=enc["pos_conv_groups"],
        do_stable_layer_norm=False,  # post-LN, as normalize_before: false
        hidden_dropout=enc["dropout_rate"],
        attention_dropout=enc["attention_dropout_rate"],
        activation_dropout=enc["activation_dropout_rate"],
        layerdrop=enc["layer_drop_rate"],
        feat_proj_dropout=conf["model_conf"]["input_dropout"],
        feat_quantizer_dropout=loss["feature_dropout"],
        num_codevector_groups=loss["num_groups"],
        num_codevectors_per_group=loss["num_entries"],
        codevector_dim=loss["final_dim"],
        proj_codevector_dim=loss["final_dim"],
        num_negatives=loss["num_negatives"],
        contrastive_logits_temperature=loss["logit_temperature"],
        diversity_loss_weight=loss["diversity_weight"],
    )


def build_hf(conf: Dict, attention: str) -> torch.nn.Module:
    """``Wav2Vec2ForPreTraining`` with the architecture and dropouts of ``conf``."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    config = Wav2Vec2Config(**hf_config_kwargs(conf), attn_implementation=attention)
    return Wav2Vec2ForPreTraining(config)


# ---------------------------------------------------------------- steps
class TrainStep:
    """One optimiser step of a model on a fixed batch; subclasses run the model."""

    name = ""

    def __init__(
        self,
        model: torch.nn.Module,
        speech: torch.Tensor,
        conf: Dict,
        dtype: str = "fp32",
    ):
        """Moves ``model`` to the device of ``speech`` in train mode, with AdamW and
        ``conf``'s ``optim_conf``; ``dtype`` ``bf16`` runs the forward under bf16
        autocast."""
        self.model = model.to(speech.device).train()
        self.speech = speech  # (B, S) float, no padding
        self.device = speech.device
        self.dtype = dtype
        self.optimizer = torch.optim.AdamW(model.parameters(), **optim_conf(conf))
        self.layer_drop_rate = conf["encoder_conf"]["layer_drop_rate"]
        self.num_params = sum(p.numel() for p in model.parameters())

    def loss(self) -> Dict:
        """Forward pass: ``{"loss": 0-dim tensor, "masked_frames": int, ...}``."""
        raise NotImplementedError

    def autocast(self):
        """bf16 autocast on the step's device for ``dtype`` bf16, else nothing."""
        if self.dtype == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.dtype])

    def set_layer_drop(self, enabled: bool) -> None:
        """Switches layer drop on (configured rate) or off (all layers run)."""
        raise NotImplementedError

    def __call__(self, update: bool = True) -> Dict:
        """Forward, backward and (with ``update``) the AdamW step."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            out = self.loss()
        out.pop("loss").backward()
        if update:
            self.optimizer.step()
        return out


class OursStep(TrainStep):
    """Our ESPnetSSLModel: mask and negatives are drawn inside the model."""

    name = "ours"

    def __init__(
        self,
        model: torch.nn.Module,
        speech: torch.Tensor,
        conf: Dict,
        dtype: str = "fp32",
    ):
        super().__init__(model, speech, conf, dtype)
        model.count_optimizer_updates(self.optimizer)  # as SSLTask.build_optimizers
        self.lengths = torch.full(
            (speech.size(0),), speech.size(1), dtype=torch.long, device=speech.device
        )

    def loss(self) -> Dict:
        loss, stats, _ = self.model(self.speech, self.lengths)
        return {"loss": loss, "masked_frames": int(stats["num_masked_frames"])}

    def set_layer_drop(self, enabled: bool) -> None:
        self.model.encoder.apply_layer_drop = enabled


class HfStep(TrainStep):
    """Hugging Face: its own mask and negative sampling, then the model."""

    name = "hf"

    def __init__(
        self,
        model: torch.nn.Module,
        speech: torch.Tensor,
        conf: Dict,
        dtype: str = "fp32",
    ):
        super().__init__(model, speech, conf, dtype)
        self.mask_conf = mask_conf(conf)
        self.num_frames = int(model._get_feat_extract_output_lengths(speech.size(1)))

    def draw_mask_and_negatives(self):
        """(B, T) bool mask and (B, T, K) long negatives, as HF's collator does."""
        from transformers.models.wav2vec2.modeling_wav2vec2 import (
            _compute_mask_indices,
            _sample_negative_indices,
        )

        shape = (self.speech.size(0), self.num_frames)
        mask = _compute_mask_indices(shape, **self.mask_conf)
        negatives = _sample_negative_indices(
            shape, self.model.config.num_negatives, mask
        )
        return torch.from_numpy(mask), torch.from_numpy(negatives).long()

    def loss(self) -> Dict:
        start = time.perf_counter()
        mask, negatives = self.draw_mask_and_negatives()
        mask_seconds = time.perf_counter() - start
        out = self.model(
            self.speech,
            mask_time_indices=mask.to(self.device),
            sampled_negative_indices=negatives.to(self.device),
        )
        return {
            "loss": out.loss,
            "masked_frames": int(mask.sum()),  # the CPU mask: no device sync
            "hf_mask_s": mask_seconds,
        }

    def set_layer_drop(self, enabled: bool) -> None:
        self.model.config.layerdrop = self.layer_drop_rate if enabled else 0.0


# ---------------------------------------------------------------- FLOPs
def encoder_layer_flops(conf: Dict, frames: int, batch_size: int) -> float:
    """Matmul FLOPs of one encoder block, forward + backward (3x forward).

    Forward: 8 B T D^2 (q, k, v, out) + 4 B T D F (FFN) + 4 B T^2 D (QK^T, AV).
    """
    d, ffn = conf["encoder_conf"]["output_size"], conf["encoder_conf"]["linear_units"]
    bt = batch_size * frames
    forward = bt * (8 * d * d + 4 * d * ffn) + 4 * bt * frames * d
    return 3.0 * forward


def count_flops(step: TrainStep, conf: Dict, frames: int) -> Dict[str, float]:
    """FLOPs of one forward + backward with all layers, and the layer-drop mean.

    Counted without layer drop (a fixed graph); the expected FLOPs of a timed step
    subtract the layer-drop rate times the blocks' FLOPs.
    """
    step.set_layer_drop(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
            step(update=False)
    finally:
        step.set_layer_drop(True)
    full = float(counter.get_total_flops())
    blocks = conf["encoder_conf"]["num_blocks"]
    batch_size = step.speech.size(0)
    dropped = (
        step.layer_drop_rate * blocks * encoder_layer_flops(conf, frames, batch_size)
    )
    return {"gflop_all_layers": full / 1e9, "gflop_expected": (full - dropped) / 1e9}


# ---------------------------------------------------------------- timing
def timed(step: TrainStep, rss: bool) -> Dict:
    """One step with its wall time and (with ``rss``) its peak RSS.

    On CUDA the step is timed between two synchronisations, and ``cuda_peak_mb``
    (``max_memory_allocated`` during the step, everything live included) and
    ``cuda_start_mb`` (allocated at its start) are recorded.
    """
    rss_start = read_status_kib("VmRSS") if rss else 0
    synchronize(step.device)
    allocated = reset_device_peak(step.device)
    cpu_start, start = time.process_time(), time.perf_counter()
    out = step()
    synchronize(step.device)
    out["step_s"] = time.perf_counter() - start
    if allocated is not None:
        out["cuda_start_mb"] = allocated / MB
        out["cuda_peak_mb"] = device_peak_mb(step.device)
    # share of the step's wall time x threads that this process was on a CPU
    cpu = time.process_time() - cpu_start
    out["cpu_share"] = cpu / (out["step_s"] * torch.get_num_threads())
    if rss:
        out["rss_start_mb"] = rss_start / 1024
        out["peak_rss_mb"] = read_status_kib("VmHWM") / 1024
    return out


def alternate(steps: List[TrainStep], warmup: int, repeats: int) -> Dict[str, List]:
    """Warm-up, then ABBA-alternated timed steps: ``{name: [per-step dicts]}``."""
    for _ in range(warmup):
        for step in steps:
            step()
    rss = steps[0].device.type == "cpu" and reset_peak_rss()
    records = {step.name: [] for step in steps}
    for i in range(repeats):
        for step in steps if i % 2 == 0 else steps[::-1]:
            if rss:
                reset_peak_rss()
            records[step.name].append(timed(step, rss))
    return records


def summarise(records: List[Dict], step: TrainStep, flops: Dict) -> Dict:
    """The JSON result of one model from its timed steps (MFU: see ``add_mfu``)."""
    times = [r["step_s"] for r in records]
    median = statistics.median(times)
    audio_seconds = step.speech.numel() / SAMPLE_RATE
    result = {
        "params_m": step.num_params / 1e6,
        "step_s_median": median,
        "step_s_all": [round(t, 4) for t in times],
        "audio_s_per_s": audio_seconds / median,
        "masked_frames_mean": statistics.mean(r["masked_frames"] for r in records),
        "cpu_share_median": statistics.median(r["cpu_share"] for r in records),
        **flops,
        "achieved_gflops": flops["gflop_expected"] / median,
    }
    if "hf_mask_s" in records[0]:
        result["hf_mask_s_median"] = statistics.median(r["hf_mask_s"] for r in records)
    if "cuda_peak_mb" in records[0]:
        result["cuda_peak_mb_max"] = max(r["cuda_peak_mb"] for r in records)
        result["cuda_step_growth_mb_median"] = statistics.median(
            r["cuda_peak_mb"] - r["cuda_start_mb"] for r in records
        )
    if "peak_rss_mb" in records[0]:
        result["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in records)
        result["step_rss_growth_mb_median"] = statistics.median(
            r["peak_rss_mb"] - r["rss_start_mb"] for r in records
        )
    return result


# ---------------------------------------------------------------- profile
def profile(steps: List[TrainStep], num_steps: int, path: Path) -> None:
    """Writes torch.profiler op tables (self CPU time) of each model to ``path``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with open(path, "w") as f:
        for step in steps:
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(num_steps):
                    step()
            table = prof.key_averages().table(sort_by="self_cpu_time_total")
            f.write(f"==== {step.name}: {num_steps} steps\n{table[:20000]}\n")
    logging.info(f"profile written to {path}")


# ---------------------------------------------------------------- main
def run_size(size: str, args: argparse.Namespace) -> Dict[str, Dict]:
    """Builds both models at ``size``, counts FLOPs, times them; returns results."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    num_samples = int(args.audio_seconds * SAMPLE_RATE)
    speech = 0.1 * torch.randn(args.batch_size, num_samples)  # (B, S), no padding
    speech = speech.to(args.device)
    conf = load_config(size)
    ours = OursStep(build_ours(conf), speech, conf, args.dtype)
    hf = HfStep(build_hf(conf, args.hf_attention), speech, conf, args.dtype)
    flops = {s.name: count_flops(s, conf, hf.num_frames) for s in (ours, hf)}
    records = alternate([ours, hf], args.warmup, args.repeats)
    results = {}
    for step in (ours, hf):
        results[step.name] = {
            "bench": "wav2vec2_step",
            "model": step.name,
            "size": size,
            "frames": hf.num_frames,
            "batch_size": args.batch_size,
            "audio_seconds": args.audio_seconds,
            **summarise(records[step.name], step, flops[step.name]),
        }
    if args.profile > 0:
        path = Path(args.output).with_name(f"wav2vec2_step_profile_{size}.txt")
        profile([ours, hf], args.profile, path)
    return results


def add_mfu(
    results: Dict[str, Dict[str, Dict]], peak_gflops: float, on_cpu: bool = True
) -> None:
    """Adds ``mfu`` (achieved / peak GFLOP/s) and a contention flag to each result
    (None on a GPU, where the process's CPU share says nothing about contention)."""
    for by_model in results.values():
        for result in by_model.values():
            result["mfu"] = result["achieved_gflops"] / peak_gflops
            contended = result["cpu_share_median"] < CONTENDED_CPU_SHARE
            result["contended"] = contended if on_cpu else None


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sizes", nargs="+", default=["small", "base"], choices=sorted(SIZES)
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=sorted(DTYPES),
        help="bf16: bf16 autocast around the forward (and a bf16 peak probe)",
    )
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--audio_seconds", type=float, default=AUDIO_SECONDS, help="per utterance"
    )
    parser.add_argument(
        "--peak_size",
        type=int,
        default=None,
        help="matrix side of the peak-rate probe (default: 2048 on CPU, 8192 on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="steps per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hf_attention",
        default="sdpa",
        choices=["sdpa", "eager"],
        help="Hugging Face attention implementation",
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="also profile N steps per model"
    )
    parser.add_argument(
        "--output", default=str(REPO_ROOT / "bench/results/wav2vec2_step.json")
    )
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.info(f"arguments: {vars(args)}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    peak_size = args.peak_size or (8192 if device.type == "cuda" else 2048)
    probe = dict(size=peak_size, device=device, dtype=DTYPES[args.dtype])
    peak_start = matmul_peak(**probe)
    results = {size: run_size(size, args) for size in args.sizes}
    peak_end = matmul_peak(**probe)
    # the limit is the best rate seen: a busy moment lowers a probe
    peak = max(peak_start["peak_gflops"], peak_end["peak_gflops"])
    add_mfu(results, peak, on_cpu=device.type == "cpu")
    for by_model in results.values():
        for result in by_model.values():
            print(json.dumps(result), flush=True)
    summary = {
        "bench": "wav2vec2_step",
        "summary": True,
        "throughput_ratio_ours_over_hf": {
            size: r["ours"]["audio_s_per_s"] / r["hf"]["audio_s_per_s"]
            for size, r in results.items()
        },
        "mfu": {f"{s}_{m}": r[m]["mfu"] for s, r in results.items() for m in r},
        "peak_gflops": peak,
        "peak": {"start": peak_start, "end": peak_end},
        "contended": any(r["contended"] for m in results.values() for r in m.values()),
        "batch": f"{args.batch_size} x {args.audio_seconds} s random audio, no padding",
        "hf_attention": args.hf_attention,
        "warmup": args.warmup,
        "loadavg_start": load_start,
        "repeats": args.repeats,
        **environment(),
        **device_facts(device),
        "dtype": args.dtype,
    }
    if device.type == "cuda":
        summary["cuda_peak_mb_ratio_ours_over_hf"] = {
            size: r["ours"]["cuda_peak_mb_max"] / r["hf"]["cuda_peak_mb_max"]
            for size, r in results.items()
        }
    print(json.dumps(summary), flush=True)
    if summary["contended"]:
        logging.warning(
            "other processes shared the CPUs (cpu_share_median < "
            f"{CONTENDED_CPU_SHARE}; loadavg {loadavg()}): times, MFU and ratios "
            "are distorted; rerun on an idle machine or cross-check --threads 1"
        )
    with open(args.output, "w") as f:
        json.dump({"summary": summary, "results": results}, f, indent=1)
    logging.info(f"written {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
