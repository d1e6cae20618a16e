"""Benchmark: a wav2vec 2.0 training step, SummaryMixing vs self-attention, 2-32 s.

One training step = forward + backward + AdamW update of the whole model (wav2vec 2.0
CNN, projection, 12-block encoder, quantizer and contrastive loss), in train mode, on
``--batch_size`` utterances of random audio cropped to each length in ``--crops``
(seconds, no padding). Every model is built through ESPnet's real ``SSLTask`` from
``egs2/librispeech/ssl1/conf/tuning/train_ssl_wav2vec2_summary_mixing_base.yaml``
(``--size base``: 768 wide, 12 blocks, 8 heads, FFN 3072) or a reduced copy
(``--size small``); the variants differ only in the encoder:

* ``summary_mixing``: the YAML as is (SummaryMixing Conformer, linear time);
* ``self_attention``: the same encoder class and block with the mixer swapped for
  ESPnet's relative-position multi-head attention (``mixer: self_attention``,
  ``pos_enc_layer_type: rel_pos``, attention dropout 0.1): the reference;
* ``espnet_conformer``: ESPnet 202511's own ``ConformerEncoder`` at the same width,
  depth, heads, FFN, kernel and activation (rel_selfattn, latest rel_pos, macaron,
  explicit softmax attention): what an ESPnet user would otherwise train;
* ``summary_mixing_lite`` (only with ``--variants``): the summary without the local
  branch.

Layer drop is 0 in every variant, so every step runs every block.

Method (BENCH.md): one process, ``torch.set_num_threads(--threads)``; at each crop the
variants run ``--warmup`` steps, then ``--repeats`` timed steps each in alternating
(ABBA) order; the median step time is reported. One extra, untimed step per variant
and crop counts FLOPs (``torch.utils.flop_counter.FlopCounterMode``: matmuls and
convolutions, forward and backward) and the peak memory of live tensors:
torch.profiler with ``profile_memory=True`` attributes every CPU allocation and free
to the op (or ``[memory]`` record) it happens in; summing their ``self`` memory in
start-time order gives the bytes held by tensors over the step, and its maximum
above the start is the step's peak (allocations freed inside one op count as their
net). Parameters and AdamW state (measured after the warm-up, as in a long run) are
added to give the peak a GPU would report. RSS growth over a timed step (VmHWM
after ``clear_refs`` minus VmRSS at the start) is reported beside it; it depends on
malloc's caching.

Run from the repository root:
``tools/venv/bin/python test/bench/bench_summary_mixing.py`` (about 15 min on 2
idle cores). Writes one JSON line per (variant, crop), a summary line of ratios, and
``bench/results/summary_mixing_step.json``.
"""

import argparse
import copy
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import yaml
from bench_env import loadavg
from bench_wav2vec2_step import (
    CONTENDED_CPU_SHARE,
    CPU_SDPA_FLOPS,
    REPO_ROOT,
    SAMPLE_RATE,
    OursStep,
    alternate,
    build_ours,
    environment,
)
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

SM_YAML = (
    "egs2/librispeech/ssl1/conf/tuning/train_ssl_wav2vec2_summary_mixing_base.yaml"
)
# --size small as overrides: (CNN channels, width, heads, FFN, blocks)
SMALL = dict(channels=256, dim=256, heads=4, ffn=1024, blocks=8)
VARIANTS = ("summary_mixing", "self_attention", "espnet_conformer")
REFERENCE = "self_attention"
TARGET_CROP, TARGET_TIME, TARGET_MEMORY = 16.0, 0.75, 0.70  # the target


# ---------------------------------------------------------------- configs
def load_config(size: str) -> Dict:
    """The SummaryMixing BASE YAML as a dict (``small``: resized), layer drop 0."""
    with open(REPO_ROOT / SM_YAML) as f:
        conf = yaml.safe_load(f)
    enc = conf["encoder_conf"]
    enc["layer_drop_rate"] = 0.0
    if size == "small":
        shapes = conf["frontend_conf"]["shapes"]
        conf["frontend_conf"]["shapes"] = [
            [SMALL["channels"], k, s] for _, k, s in shapes
        ]
        conf["preencoder_conf"]["output_size"] = SMALL["dim"]
        conf["loss"][0]["conf"]["feature_size"] = SMALL["channels"]
        enc.update(
            output_size=SMALL["dim"],
            attention_heads=SMALL["heads"],
            linear_units=SMALL["ffn"],
            num_blocks=SMALL["blocks"],
            local_units=[SMALL["dim"]],
            summary_units=[SMALL["dim"]],
        )
    return conf


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
    elif variant == "espnet_conformer":
        conf["encoder"] = "conformer"
        conf["encoder_conf"] = dict(
            output_size=enc["output_size"],
            attention_heads=enc["attention_heads"],
            linear_units=enc["linear_units"],
            num_blocks=enc["num_blocks"],
            dropout_rate=enc["dropout_rate"],
            positional_dropout_rate=enc["positional_dropout_rate"],
            attention_dropout_rate=0.1,
            input_layer=None,
            normalize_before=True,
            macaron_style=True,
            rel_pos_type="latest",
            pos_enc_layer_type="rel_pos",
            selfattention_layer_type="rel_selfattn",
            activation_type=enc["activation_type"],
            use_cnn_module=True,
            cnn_module_kernel=enc["cnn_module_kernel"],
            layer_drop_rate=0.0,
            use_flash_attn=False,
        )
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return conf


# ---------------------------------------------------------------- measurements
def live_tensor_peak_mb(step: OursStep) -> Dict[str, float]:
    """Peak tensor memory (MB) and GFLOPs of one step.

    ``step_peak_tensor_mb``: the peak of live tensors above the step's start
    (gradients and activations); ``static_mb``: parameters and AdamW state, live
    throughout; ``peak_tensor_mb``: their sum, what a GPU's peak memory counts. The
    step is untimed: the profiler and the FLOP counter both slow it.
    """
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(update=True)
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    state = [t for s in step.optimizer.state.values() for t in s.values()]
    static = sum(t.numel() * t.element_size() for t in (*params(step), *state))
    return {
        "step_peak_tensor_mb": peak / 2**20,
        "static_mb": static / 2**20,
        "peak_tensor_mb": (static + peak) / 2**20,
        "gflop_step": counter.get_total_flops() / 1e9,
    }


def params(step: OursStep) -> List[torch.Tensor]:
    """The model's parameters (their gradients are counted in the step's peak)."""
    return list(step.model.parameters())


def summarise(records: List[Dict], audio_seconds: float) -> Dict:
    """Median time, throughput and RSS growth of one variant's timed steps."""
    times = [r["step_s"] for r in records]
    median = statistics.median(times)
    return {
        "step_s_median": median,
        "step_s_all": [round(t, 3) for t in times],
        "audio_s_per_s": audio_seconds / median,
        "cpu_share_median": statistics.median(r["cpu_share"] for r in records),
        "step_rss_growth_mb_median": (
            statistics.median(r["peak_rss_mb"] - r["rss_start_mb"] for r in records)
            if "peak_rss_mb" in records[0]
            else None
        ),
    }


def run_crop(
    models: Dict[str, torch.nn.Module], conf: Dict, crop: float, args
) -> Dict[str, Dict]:
    """All variants at one crop length: ``{variant: result}``."""
    generator = torch.Generator().manual_seed(args.seed)
    samples = int(crop * SAMPLE_RATE)
    speech = 0.1 * torch.randn(args.batch_size, samples, generator=generator)
    steps = []
    for name, model in models.items():
        step = OursStep(model, speech, conf)
        step.name = name
        steps.append(step)
    records = alternate(steps, args.warmup, args.repeats)
    # after the warm-up: AdamW's state exists, as in a long run
    memory = {step.name: live_tensor_peak_mb(step) for step in steps}
    results = {}
    for step in steps:
        results[step.name] = {
            "bench": "summary_mixing_step",
            "variant": step.name,
            "crop_s": crop,
            "batch_size": args.batch_size,
            "params_m": step.num_params / 1e6,
            **summarise(records[step.name], crop * args.batch_size),
            **memory[step.name],
        }
        results[step.name]["contended"] = (
            results[step.name]["cpu_share_median"] < CONTENDED_CPU_SHARE
        )
        print(json.dumps(results[step.name]), flush=True)
    return results


# ---------------------------------------------------------------- summary
def ratios(results: Dict[float, Dict[str, Dict]], key: str, reference: str) -> Dict:
    """``{crop: {variant: value / reference's value}}`` for result field ``key``."""
    return {
        crop: {
            name: r[key] / by_variant[reference][key]
            for name, r in by_variant.items()
            if name != reference
        }
        for crop, by_variant in results.items()
    }


def growth(results: Dict[float, Dict[str, Dict]]) -> Dict[str, Dict[str, float]]:
    """Per variant: step time ratio between successive crops (linear = crop ratio)."""
    crops = sorted(results)
    out = {}
    for name in results[crops[0]]:
        out[name] = {
            f"{b:g}s/{a:g}s": results[b][name]["step_s_median"]
            / results[a][name]["step_s_median"]
            for a, b in zip(crops, crops[1:])
        }
    return out


def linear_fit(results: Dict[float, Dict[str, Dict]]) -> Dict[str, Dict[str, float]]:
    """Least-squares time = a + b * crop per variant, and the worst relative error."""
    crops = np.array(sorted(results))
    out = {}
    for name in results[crops[0]]:
        times = np.array([results[c][name]["step_s_median"] for c in crops])
        slope, intercept = np.polyfit(crops, times, 1)
        residual = np.abs(times - (intercept + slope * crops)) / times
        out[name] = {
            "s_per_audio_s": float(slope),
            "intercept_s": float(intercept),
            "max_relative_residual": float(residual.max()),
        }
    return out


def target(time_ratio: Dict, memory_ratio: Dict) -> Dict:
    """The issue's target at 16 s against the same block with self-attention."""
    if TARGET_CROP not in time_ratio:
        return {"checked": False}
    time = time_ratio[TARGET_CROP]["summary_mixing"]
    memory = memory_ratio[TARGET_CROP]["summary_mixing"]
    return {
        "checked": True,
        "crop_s": TARGET_CROP,
        "time_ratio": time,
        "memory_ratio": memory,
        "time_met": time <= TARGET_TIME,
        "memory_met": memory <= TARGET_MEMORY,
    }


def summarise_all(results: Dict[float, Dict[str, Dict]], args) -> Dict:
    time_ratio = ratios(results, "step_s_median", REFERENCE)
    memory_ratio = ratios(results, "peak_tensor_mb", REFERENCE)
    step_memory_ratio = ratios(results, "step_peak_tensor_mb", REFERENCE)
    return {
        "bench": "summary_mixing_step",
        "summary": True,
        "size": args.size,
        "reference": REFERENCE,
        "time_ratio_vs_self_attention": time_ratio,
        "peak_tensor_ratio_vs_self_attention": memory_ratio,
        "step_peak_tensor_ratio_vs_self_attention": step_memory_ratio,
        "flop_ratio_vs_self_attention": ratios(results, "gflop_step", REFERENCE),
        "time_growth": growth(results),
        "linear_fit": linear_fit(results),
        "target_16s": target(time_ratio, memory_ratio),
        "contended": any(r["contended"] for m in results.values() for r in m.values()),
        "batch": f"{args.batch_size} x crop s random audio, no padding",
        "warmup": args.warmup,
        "repeats": args.repeats,
        **environment(),
    }


# ---------------------------------------------------------------- main
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size", default="base", choices=["base", "small"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--crops", nargs="+", type=float, default=[2, 4, 8, 16, 32])
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="steps per variant")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", default=str(REPO_ROOT / "bench/results/summary_mixing_step.json")
    )
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.info(f"arguments: {vars(args)}")
    if REFERENCE not in args.variants or "summary_mixing" not in args.variants:
        raise SystemExit(f"--variants must include summary_mixing and {REFERENCE}")
    torch.set_num_threads(args.threads)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    load_start = loadavg()
    conf = load_config(args.size)
    models = {}
    for name in args.variants:
        torch.manual_seed(args.seed)
        models[name] = build_ours(variant_config(conf, name))
    results = {crop: run_crop(models, conf, crop, args) for crop in args.crops}
    summary = summarise_all(results, args)
    summary["loadavg_start"] = load_start
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
