"""Benchmark: a wav2vec 2.0 training step, SummaryMixing vs self-attention, 2-32 s.

One training step = forward + backward + AdamW update of the whole model (wav2vec 2.0
CNN, projection, 12-block encoder, quantizer and contrastive loss), in train mode, on
``--batch_size`` utterances (default 2) of seeded random audio (0.1 * randn, 16 kHz)
cropped to each length in ``--crops`` (seconds, no padding). Every model is built
through ESPnet's real ``SSLTask`` from
``egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_summary_mixing_base.yaml``
(``--size base``: 512-channel CNN, 768 wide, 12 blocks, 8 heads, FFN 3072) or a
reduced copy (``--size small``: 256-channel CNN, 256 wide, 8 blocks, 4 heads, FFN
1024, local and summary units [256]); the variants differ only in the encoder:

* ``summary_mixing``: the YAML as is (SummaryMixing Conformer, linear time);
* ``self_attention``: the same encoder class and block with the mixer swapped for
  ESPnet's relative-position multi-head attention (``mixer: self_attention``,
  ``pos_enc_layer_type: rel_pos``, attention dropout 0.1): the reference of the
  issue's target;
* ``espnet_conformer``: ESPnet 202511's own ``ConformerEncoder`` at the same width,
  depth, heads, FFN, kernel and activation (rel_selfattn, latest rel_pos, macaron,
  convolution module, explicit softmax attention): what an ESPnet user would
  otherwise train;
* ``summary_mixing_lite`` (only with ``--variants``): the summary without the local
  branch;
* ``sdpa_attention`` (only with ``--variants``): the same block with plain
  multi-head self-attention through torch's ``scaled_dot_product_attention``
  (``mixer: self_attention``, the YAML's absolute positions, ``use_sdpa: true``,
  attention dropout 0.1): the fastest attention of the same block on a GPU;
* ``transformer`` (only with ``--variants``, ``--size base``): wav2vec 2.0 BASE as is
  (``train_ssl_wav2vec2_base.yaml``, post-LN transformer, 95 M parameters), for the
  cost of sequence length (crop) of the standard model:
  ``--variants transformer --crops 1 2 4 8 16``.

Layer drop is set to 0 in every variant (the YAML has 0.05), so every step runs every
block and the step times vary less. Each step ends with ``zero_grad(set_to_none=True)``
(as ESPnet's trainer), so idle variants hold no gradients.

Subnormal floats: on this random audio, after about 10 updates the variants with
ESPnet's attention start producing subnormal (denormal) floats, and their steps on an
x86 CPU become 2-4x slower and erratic (self-attention at 8 s: 11-13 s per step
instead of 5.6-6 s; SummaryMixing is not affected). GPUs process subnormals at full
speed, so by default (``--denormals flush``) the benchmark sets
``torch.set_flush_denormal(True)`` (flush-to-zero and denormals-are-zero) for every
variant; ``--denormals keep`` measures the CPU's default behaviour.

Method (BENCH.md): one process, ``torch.set_num_threads(--threads)``. At each crop
the variants run ``--warmup`` steps each, then ``--repeats`` timed steps each in
alternating (ABBA) order; the median step time is reported, with the process's CPU
time over wall time x threads (``cpu_share``; ``contended`` below 0.9: other
processes took the CPUs) and the RSS growth of each timed step (``VmHWM`` after
``clear_refs`` minus ``VmRSS`` at the step's start; it depends on malloc's caching).
After all timings, each variant and crop runs one warm-up step (AdamW's state then
exists, as in a long run) and two untimed steps:

* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over a forward + backward
  (``count_flops`` of ``bench_wav2vec2_step.py``: matmuls and convolutions; ESPnet's
  attention does explicit matmuls, so its T^2 terms are counted);
* peak tensor memory: ``torch.profiler`` with ``profile_memory=True`` records every
  CPU tensor allocation (+ bytes) and free (- bytes) with its time. The running sum
  of these records in time order is the memory held by tensors above the step's
  start (frees of older tensors are not recorded), and its maximum is the step's
  peak (activations, gradients, AdamW's temporaries): ``step_peak_tensor_mb``.
  The step starts with the gradients already freed (``zero_grad(set_to_none=True)``,
  as ESPnet's trainer leaves them), so what is live at its start is the
  parameters, AdamW's two moments and the batch (``static_mb``);
  ``peak_tensor_mb`` = static + step peak is what a GPU's ``max_memory_allocated``
  would report. The measure is checked at start-up on tensors of known size
  (``memory_check`` in the summary).

With both ``summary_mixing`` and ``self_attention``, the issue's target is checked at
16 s against ``self_attention``: time ratio <= 0.75
and step peak memory ratio <= 0.70 (the paper reports 18 % / 23 % less on GPU);
growth with length is reported as successive time ratios (linear = the crop ratio,
2.0) and a least-squares line time = a + b * crop per variant.

On a GPU (``--device cuda``, ``--dtype bf16`` for bf16 autocast around the forward):
steps are timed between ``torch.cuda.synchronize`` calls, each timed step records the
CUDA allocator's ``max_memory_allocated`` (``cuda_peak_mb_max``), and the memory
measure replaces the profiler's records by the allocator: ``peak_tensor_mb`` is the
measured step's ``max_memory_allocated``, ``step_peak_tensor_mb`` that minus what was
allocated at its start; no RSS is read and ``contended`` is None. ``--size tiny``
(64 wide, 2 blocks, 2 heads) is a smoke test.

Run from the repository root:
``tools/venv/bin/python test/bench/bench_summary_mixing.py`` (about 35 min on 2
idle cores; on a GPU, e.g. ``--device cuda --dtype bf16 --crops 16 32 --variants
summary_mixing sdpa_attention self_attention``). Writes one JSON line per (variant,
crop), a summary line of ratios, and ``bench/results/summary_mixing_step.json``.
"""

import argparse
import copy
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml
from bench_env import (
    device_facts,
    device_peak_mb,
    loadavg,
    reset_device_peak,
    synchronize,
)
from bench_wav2vec2_step import (
    CONTENDED_CPU_SHARE,
    DTYPES,
    REPO_ROOT,
    SAMPLE_RATE,
    OursStep,
    alternate,
    build_ours,
    environment,
)
from torch.utils.flop_counter import FlopCounterMode

from espnet2.ssl.frame_geometry import cnn_frame_count
from espnet2.ssl.study.flops import CPU_SDPA_FLOPS
from espnet2.ssl.study.memory import check_memory_measure, tensor_memory

SM_YAML = (
    "egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_summary_mixing_base.yaml"
)
W2V2_YAML = "egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_base.yaml"
# --size small and tiny as overrides: (CNN channels, width, heads, FFN, blocks)
SIZES = {
    "small": dict(channels=256, dim=256, heads=4, ffn=1024, blocks=8),
    "tiny": dict(channels=64, dim=64, heads=2, ffn=128, blocks=2),  # smoke test
}
VARIANTS = ("summary_mixing", "self_attention", "espnet_conformer")
REFERENCES = ("self_attention", "espnet_conformer")  # ratio denominators
TARGET_VARIANT, TARGET_REFERENCE = "summary_mixing", "self_attention"
TARGET_CROP, TARGET_TIME, TARGET_MEMORY = 16.0, 0.75, 0.70  # the target
MB = 2**20


# ---------------------------------------------------------------- configs
def load_config(size: str) -> Dict:
    """The SummaryMixing BASE YAML as a dict (``small``, ``tiny``: resized), layer
    drop 0."""
    with open(REPO_ROOT / SM_YAML) as f:
        conf = yaml.safe_load(f)
    enc = conf["encoder_conf"]
    enc["layer_drop_rate"] = 0.0
    if size in SIZES:
        arch = SIZES[size]
        shapes = conf["frontend_conf"]["shapes"]
        conf["frontend_conf"]["shapes"] = [
            [arch["channels"], k, s] for _, k, s in shapes
        ]
        conf["preencoder_conf"]["output_size"] = arch["dim"]
        conf["loss"][0]["conf"]["feature_size"] = arch["channels"]
        enc.update(
            output_size=arch["dim"],
            attention_heads=arch["heads"],
            linear_units=arch["ffn"],
            num_blocks=arch["blocks"],
            local_units=[arch["dim"]],
            summary_units=[arch["dim"]],
        )
    return conf


def conformer_config(enc: Dict) -> Dict:
    """ESPnet ``ConformerEncoder`` options at the width and depth of ``enc``."""
    return dict(
        output_size=enc["output_size"],
        attention_heads=enc["attention_heads"],
        linear_units=enc["linear_units"],
        num_blocks=enc["num_blocks"],
        dropout_rate=enc["dropout_rate"],
        positional_dropout_rate=enc["positional_dropout_rate"],
        attention_dropout_rate=0.1,
        input_layer=None,  # the preencoder already projects to the width
        normalize_before=True,
        macaron_style=True,
        rel_pos_type="latest",
        pos_enc_layer_type="rel_pos",
        selfattention_layer_type="rel_selfattn",
        activation_type=enc["activation_type"],
        use_cnn_module=True,
        cnn_module_kernel=enc["cnn_module_kernel"],
        layer_drop_rate=0.0,
        use_flash_attn=False,  # CPU: explicit softmax attention
    )


def variant_config(conf: Dict, variant: str) -> Dict:
    """``conf`` with the encoder of ``variant`` (see the module docstring)."""
    conf = copy.deepcopy(conf)
    enc = conf["encoder_conf"]
    if variant in ("summary_mixing", "summary_mixing_lite"):
        enc["mixer"] = variant
    elif variant == "self_attention":
        enc.update(
            mixer="self_attention",
            pos_enc_layer_type="rel_pos",
            attention_dropout_rate=0.1,
        )
    elif variant == "sdpa_attention":
        enc.update(mixer="self_attention", attention_dropout_rate=0.1, use_sdpa=True)
    elif variant == "espnet_conformer":
        conf["encoder"] = "conformer"
        conf["encoder_conf"] = conformer_config(enc)
    elif variant == "transformer":
        if enc["output_size"] != 768:
            raise SystemExit("the transformer variant exists only with --size base")
        with open(REPO_ROOT / W2V2_YAML) as f:
            conf = yaml.safe_load(f)
        conf["encoder_conf"].update(layer_drop_rate=0.0, use_flash_attn=False)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return conf


# ---------------------------------------------------------------- memory
def tensor_bytes(tensors: List[torch.Tensor]) -> int:
    """Bytes of the tensors' elements."""
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_step(step: "Step", seed: int) -> Dict[str, float]:
    """FLOPs of one training step and the peak tensor memory (MB) of the next.

    The first step counts FLOPs, creates AdamW's state (the steps are fresh) and
    leaves what a step leaves behind; the gradients are then freed and the seed
    reset, so every variant's measured step draws the same masks. Returns
    ``gflop_step``, ``static_mb`` (parameters, buffers, batch), ``adamw_state_mb``,
    ``retained_mb`` (other tensors the previous step left live, e.g. ESPnet's
    attention keeps its last weights in ``self.attn``), ``step_peak_tensor_mb``
    (the peak above all of these) and ``peak_tensor_mb`` (the sum: the peak a
    GPU's ``max_memory_allocated`` would report).
    """
    if step.device.type == "cuda":
        return measure_step_cuda(step, seed)
    counter = FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS)

    def first_step() -> None:
        with counter:
            step()  # ends with the gradients freed
        torch.manual_seed(seed)

    live, peak = tensor_memory(first_step, step)
    static, state_bytes = resident_bytes(step)
    return {
        "gflop_step": counter.get_total_flops() / 1e9,
        "static_mb": static / MB,
        "adamw_state_mb": state_bytes / MB,
        "retained_mb": (live - state_bytes) / MB,
        "step_peak_tensor_mb": peak / MB,
        "peak_tensor_mb": (static + live + peak) / MB,
    }


def resident_bytes(step: "Step") -> Tuple[int, int]:
    """Bytes of the parameters, buffers and batch, and of AdamW's state tensors."""
    model = step.model
    static = tensor_bytes([*model.parameters(), *model.buffers(), step.speech])
    state = [t for s in step.optimizer.state.values() for t in s.values()]
    return static, tensor_bytes([t for t in state if torch.is_tensor(t)])


def measure_step_cuda(step: "Step", seed: int) -> Dict[str, float]:
    """``measure_step`` on a GPU: the CUDA allocator instead of the profiler.

    The measured step's ``max_memory_allocated`` is ``peak_tensor_mb`` and also
    ``cuda_max_memory_allocated_mb``; ``step_peak_tensor_mb`` is that minus what
    was allocated at the step's start (the parameters, buffers, batch, AdamW's state
    and ``retained_mb``).
    """
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        step()  # also creates AdamW's state; ends with the gradients freed
    torch.manual_seed(seed)
    synchronize(step.device)
    start = reset_device_peak(step.device)
    step()
    synchronize(step.device)
    peak = device_peak_mb(step.device) * MB
    static, state_bytes = resident_bytes(step)
    return {
        "gflop_step": counter.get_total_flops() / 1e9,
        "static_mb": static / MB,
        "adamw_state_mb": state_bytes / MB,
        "retained_mb": (start - static - state_bytes) / MB,
        "step_peak_tensor_mb": (peak - start) / MB,
        "peak_tensor_mb": peak / MB,
        "cuda_max_memory_allocated_mb": peak / MB,
    }


# ---------------------------------------------------------------- steps
class Step(OursStep):
    """``OursStep`` that frees the gradients after its update, as ESPnet's trainer."""

    def __call__(self, update: bool = True) -> Dict:
        out = super().__call__(update)
        self.optimizer.zero_grad(set_to_none=True)
        return out


def make_steps(
    models: Dict[str, torch.nn.Module], conf: Dict, crop: float, args
) -> List[Step]:
    """One training step per variant (fresh AdamW) on one seeded batch of ``crop`` s."""
    generator = torch.Generator().manual_seed(args.seed)
    num_samples = int(crop * SAMPLE_RATE)
    speech = 0.1 * torch.randn(args.batch_size, num_samples, generator=generator)
    speech = speech.to(args.device)
    steps = []
    for name, model in models.items():
        step = Step(model, speech, conf, args.dtype)  # speech: (B, S), no padding
        step.name = name
        steps.append(step)
    return steps


def summarise(records: List[Dict], audio_seconds: float) -> Dict:
    """Median time, throughput, CPU share and RSS growth of one variant's steps
    (on a GPU: the largest ``max_memory_allocated``; no RSS, ``contended`` None)."""
    times = [r["step_s"] for r in records]
    median = statistics.median(times)
    cpu_share = statistics.median(r["cpu_share"] for r in records)
    rss_growth = None
    if "peak_rss_mb" in records[0]:
        growths = [r["peak_rss_mb"] - r["rss_start_mb"] for r in records]
        rss_growth = statistics.median(growths)
    result = {
        "step_s_median": median,
        "step_s_all": [round(t, 3) for t in times],
        "audio_s_per_s": audio_seconds / median,
        "cpu_share_median": cpu_share,
        "contended": cpu_share < CONTENDED_CPU_SHARE,
        "step_rss_growth_mb_median": rss_growth,
    }
    if "cuda_peak_mb" in records[0]:
        result["cuda_peak_mb_max"] = max(r["cuda_peak_mb"] for r in records)
        result["contended"] = None
    return result


def time_crop(
    models: Dict[str, torch.nn.Module], conf: Dict, crop: float, args
) -> Dict[str, Dict]:
    """Timed steps of all variants at one crop length: ``{variant: result}``."""
    steps = make_steps(models, conf, crop, args)
    records = alternate(steps, args.warmup, args.repeats)
    results = {}
    for step in steps:
        results[step.name] = {
            "bench": "summary_mixing_step",
            "variant": step.name,
            "size": args.size,
            "crop_s": crop,
            "batch_size": args.batch_size,
            "frames": cnn_frame_count(
                step.speech.size(1), conf["frontend_conf"]["shapes"]
            ),
            "params_m": step.num_params / 1e6,
            **summarise(records[step.name], crop * args.batch_size),
            "loadavg_after": loadavg(),
        }
        logging.info(f"timed: {json.dumps(results[step.name])}")
    return results


def measure_crop(
    models: Dict[str, torch.nn.Module], conf: Dict, crop: float, args
) -> Dict[str, Dict]:
    """FLOPs and peak memory of all variants at one crop, untimed (``measure_step``)."""
    results = {}
    for step in make_steps(models, conf, crop, args):
        results[step.name] = measure_step(step, args.seed)
        logging.info(f"measured {step.name} at {crop:g} s: {results[step.name]}")
    return results


# ---------------------------------------------------------------- summary
def ratios(results: Dict[float, Dict[str, Dict]], key: str, reference: str) -> Dict:
    """``{crop: {variant: value / reference's value}}`` for result field ``key``;
    None where the reference's value is 0 (an RSS growth of 0: the allocator reused
    pages it kept)."""
    return {
        f"{crop:g}": {
            name: _ratio(r[key], by_variant[reference][key])
            for name, r in by_variant.items()
            if name != reference
        }
        for crop, by_variant in results.items()
    }


def _ratio(value: float, reference: float) -> Optional[float]:
    """``value / reference``, None for a zero reference."""
    return value / reference if reference else None


def all_ratios(results: Dict[float, Dict[str, Dict]], reference: str) -> Dict:
    """Time, memory and FLOP ratios of every variant against ``reference``."""
    keys = {
        "time": "step_s_median",
        "step_peak_memory": "step_peak_tensor_mb",
        "peak_memory_with_static": "peak_tensor_mb",
        "rss_growth": "step_rss_growth_mb_median",
        "flops": "gflop_step",
    }
    if results[next(iter(results))][reference]["step_rss_growth_mb_median"] is None:
        del keys["rss_growth"]  # clear_refs denied: no RSS peaks
    return {name: ratios(results, key, reference) for name, key in keys.items()}


def growth(results: Dict[float, Dict[str, Dict]]) -> Dict[str, Dict[str, float]]:
    """Per variant: step time ratio between successive crops (linear = crop ratio)."""
    crops = sorted(results)
    return {
        name: {
            f"{b:g}s/{a:g}s": results[b][name]["step_s_median"]
            / results[a][name]["step_s_median"]
            for a, b in zip(crops, crops[1:])
        }
        for name in results[crops[0]]
    }


def vs_shortest_crop(results: Dict[float, Dict[str, Dict]]) -> Dict:
    """Per variant and crop: step time per audio second and step peak memory,
    each divided by the shortest crop's (1.0 = as cheap per second of audio)."""
    crops = sorted(results)
    out = {}
    for name in results[crops[0]]:
        first = results[crops[0]][name]
        first_rate = first["step_s_median"] / crops[0]
        out[name] = {
            f"{crop:g}": {
                "time_per_audio_s": results[crop][name]["step_s_median"]
                / crop
                / first_rate,
                "step_peak_memory": results[crop][name]["step_peak_tensor_mb"]
                / first["step_peak_tensor_mb"],
            }
            for crop in crops
        }
    return out


def linear_fit(results: Dict[float, Dict[str, Dict]]) -> Dict[str, Dict[str, float]]:
    """Least-squares time = a + b * crop per variant, and the worst relative error."""
    crops = np.array(sorted(results))
    out = {}
    if len(crops) < 2:
        return out
    for name in results[crops[0]]:
        times = np.array([results[c][name]["step_s_median"] for c in crops])
        slope, intercept = np.polyfit(crops, times, 1)
        residual = np.abs(times - (intercept + slope * crops)) / times
        out[name] = {
            "s_per_crop_s": float(slope),
            "intercept_s": float(intercept),
            "max_relative_residual": float(residual.max()),
        }
    return out


def target(results: Dict[float, Dict[str, Dict]]) -> Dict:
    """The issue's target at 16 s, SummaryMixing against the block with attention."""
    variants = next(iter(results.values()), {})
    if TARGET_CROP not in results or not {TARGET_VARIANT, TARGET_REFERENCE} <= set(
        variants
    ):
        return {"checked": False}
    ours = results[TARGET_CROP][TARGET_VARIANT]
    reference = results[TARGET_CROP][TARGET_REFERENCE]
    time = ours["step_s_median"] / reference["step_s_median"]
    memory = ours["step_peak_tensor_mb"] / reference["step_peak_tensor_mb"]
    with_static = ours["peak_tensor_mb"] / reference["peak_tensor_mb"]
    return {
        "checked": True,
        "crop_s": TARGET_CROP,
        "reference": TARGET_REFERENCE,
        "time_ratio": time,
        "step_peak_memory_ratio": memory,
        "peak_memory_with_static_ratio": with_static,
        "time_met": time <= TARGET_TIME,
        "memory_met": memory <= TARGET_MEMORY,
        "memory_with_static_met": with_static <= TARGET_MEMORY,
    }


def summarise_all(results: Dict[float, Dict[str, Dict]], args) -> Dict:
    """The summary line: ratios per crop, growth, target, contention, environment."""
    return {
        "bench": "summary_mixing_step",
        "summary": True,
        "size": args.size,
        "batch": f"{args.batch_size} x crop s random audio, no padding",
        "ratios_vs": {
            ref: all_ratios(results, ref) for ref in REFERENCES if ref in args.variants
        },
        "time_growth": growth(results),
        "vs_shortest_crop": vs_shortest_crop(results),
        "linear_fit": linear_fit(results),
        "target_16s": target(results),
        "contended": any(r["contended"] for m in results.values() for r in m.values()),
        "cpu_share_min": min(
            r["cpu_share_median"] for m in results.values() for r in m.values()
        ),
        "layer_drop_rate": 0.0,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "denormals": args.denormals,
        **environment(),
        **device_facts(torch.device(args.device)),
        "dtype": args.dtype,
    }


# ---------------------------------------------------------------- main
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size", default="base", choices=["base", *SIZES])
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=[*VARIANTS, "summary_mixing_lite", "sdpa_attention", "transformer"],
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype",
        default="fp32",
        choices=sorted(DTYPES),
        help="bf16: bf16 autocast around the forward",
    )
    parser.add_argument(
        "--crops", nargs="+", type=float, default=[2, 4, 8, 16, 32], help="seconds"
    )
    parser.add_argument("--batch_size", type=int, default=2, help="utterances")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="steps per variant")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps each")
    parser.add_argument("--seed", type=int, default=0, help="models and audio")
    parser.add_argument(
        "--denormals",
        default="flush",
        choices=["flush", "keep"],
        help="flush: torch.set_flush_denormal(True) (see the module docstring)",
    )
    parser.add_argument(
        "--output", default=str(REPO_ROOT / "bench/results/summary_mixing_step.json")
    )
    return parser


def build_models(conf: Dict, args) -> Dict[str, torch.nn.Module]:
    """``{variant: ESPnetSSLModel}`` built by SSLTask, each from the same seed."""
    models = {}
    for name in args.variants:
        torch.manual_seed(args.seed)
        models[name] = build_ours(variant_config(conf, name))
    return models


def run(args) -> Tuple[Dict[float, Dict[str, Dict]], Dict]:
    """Times every crop, then measures FLOPs and memory: ``(results, memory check)``."""
    on_cpu = torch.device(args.device).type == "cpu"
    memory_check = check_memory_measure() if on_cpu else None  # profiler records
    conf = load_config(args.size)
    models = build_models(conf, args)
    results = {crop: time_crop(models, conf, crop, args) for crop in args.crops}
    for crop in args.crops:  # after all timings: profiling disturbs the allocator
        for name, measured in measure_crop(models, conf, crop, args).items():
            results[crop][name].update(measured)
            print(json.dumps(results[crop][name]), flush=True)
    return results, memory_check


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.info(f"arguments: {vars(args)}")
    torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here")
    if not torch.set_flush_denormal(args.denormals == "flush"):
        raise SystemExit("this CPU cannot flush denormals: use --denormals keep")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    results, memory_check = run(args)
    summary = summarise_all(results, args)
    summary.update(loadavg_start=load_start, memory_check=memory_check)
    print(json.dumps(summary), flush=True)
    if summary["contended"]:
        logging.warning(
            "other processes shared the CPUs (cpu_share_median < "
            f"{CONTENDED_CPU_SHARE}; loadavg {loadavg()}): rerun on an idle machine"
        )
    serialisable = {f"{crop:g}": r for crop, r in results.items()}
    with open(args.output, "w") as f:
        json.dump({"summary": summary, "results": serialisable}, f, indent=1)
    logging.info(f"written {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
