"""GPU check: the results of ``test/gpu/run.sh`` as one markdown page.

Reads ``--out`` (``status.tsv`` and the parts' JSON files: ``a_parity.json``,
``b_wav2vec2_<B>x<S>s.json``, ``c_summary_mixing.json``, ``d_prepare.json``,
``d_recipe.json``), writes ``results.md`` there and prints it. Exit status 1 when a
part failed, ran out of time (status 124 or 137) or reported a failed check.

Run from the repository root: ``tools/venv/bin/python test/gpu/summarise.py --out DIR``.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

MISSING = "-"


def read_json(path: Path) -> Optional[Dict]:
    """The JSON document of ``path``, None if absent."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def read_status(out: Path) -> List[Tuple[str, int, int]]:
    """``(part, exit status, seconds)`` per line of ``status.tsv``."""
    path = out / "status.tsv"
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    return [(name, int(status), int(seconds)) for name, status, seconds in rows]


def fmt(value, digits: int = 4) -> str:
    """A number with ``digits`` significant digits, ``-`` for None."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def table(header: List[str], rows: List[List]) -> List[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return lines


def parity_section(result: Dict) -> List[str]:
    """Part a: eval-loss differences per objective and run, and the training steps."""
    lines = [f"## a. Loss parity ({result['size']}), against CPU float32", ""]
    rows = []
    for name, objective in result["objectives"].items():
        reference = objective["eval"]["cpu_fp32"]
        for run, diffs in objective["relative_difference"].items():
            stats = objective["eval"][run]
            dtype = run.rsplit("_", 1)[1]
            rows.append(
                [name, run, stats["loss"], reference["loss"], diffs["loss"],
                 result["tolerances"][dtype], stats.get("num_masked_frames")]
            )  # fmt: skip
    header = ["objective", "run", "loss", "CPU fp32 loss", "relative difference"]
    lines += table(header + ["tolerance", "masked frames"], rows) + [""]
    rows = [
        [name, o["train"]["dtype"], ", ".join(fmt(x) for x in o["train"]["losses"]),
         o["train"]["num_updates"], o["train"]["seen_samples"],
         o["train"]["expected_seen_samples"], o["train"]["step_s"]]
        for name, o in result["objectives"].items()
    ]  # fmt: skip
    header = ["training", "autocast", "losses", "num_updates", "seen_samples"]
    lines += table(header + ["expected", "s per step"], rows)
    return lines + [""]


def wav2vec2_section(results: List[Dict]) -> List[str]:
    """Part b: ours vs Hugging Face per batch: step time, MFU, peak memory."""
    lines = ["## b. wav2vec 2.0 training step, ours vs Hugging Face (SDPA)", ""]
    rows = []
    for result in results:
        summary = result["summary"]
        for size, by_model in result["results"].items():
            for model, r in by_model.items():
                memory = r.get("cuda_peak_mb_max", r.get("peak_rss_mb_max"))
                rows.append(
                    [summary["batch"].split(" random")[0], size, model,
                     r["step_s_median"], r["audio_s_per_s"], r["mfu"], memory]
                )  # fmt: skip
            ratio = summary["throughput_ratio_ours_over_hf"][size]
            rows.append(["", size, "ours / HF throughput", None, ratio, None, None])
    header = ["batch", "size", "model", "step s", "audio s / s", "MFU"]
    return lines + table(header + ["peak MB"], rows) + [""]


def summary_mixing_section(result: Dict) -> List[str]:
    """Part c: per crop and variant, step time and peak memory."""
    lines = ["## c. SummaryMixing vs attention, same block", ""]
    rows = []
    for crop, by_variant in result["results"].items():
        for variant, r in by_variant.items():
            rows.append(
                [crop, variant, r["step_s_median"], r.get("cuda_peak_mb_max"),
                 r.get("peak_tensor_mb"), r.get("step_peak_tensor_mb")]
            )  # fmt: skip
    header = ["crop s", "variant", "step s", "timed max allocated MB"]
    return lines + table(header + ["peak MB", "step peak MB"], rows) + [""]


def recipe_section(prepare: Optional[Dict], recipe: Optional[Dict]) -> List[str]:
    """Part d: stage times, the training losses and the counters."""
    lines = ["## d. mini_synth stage 4", ""]
    if prepare:
        lines.append(
            f"- stages 1-3 (CPU, background): {fmt(prepare['stages_1_3_s'])} s"
        )
    if recipe:
        lines.append(
            f"- stage 4, ngpu {recipe['ngpu']}, use_amp {recipe['use_amp']}: "
            f"{fmt(recipe['stage_4_s'])} s; training loss per epoch "
            f"{recipe['epoch_losses']}; num_updates {recipe['num_updates']}; "
            f"seen_samples {recipe['seen_samples']}"
        )
    return lines + [""]


def failures_of(out: Path, status: List[Tuple[str, int, int]]) -> List[str]:
    """Every failed part and failed check."""
    failures = [f"part {n}: exit status {s}" for n, s, _ in status if s != 0]
    for name in ("a_parity.json", "d_recipe.json"):
        result = read_json(out / name)
        failures += [f"{name}: {f}" for f in (result or {}).get("failures", [])]
    return failures


def render(out: Path) -> Tuple[str, List[str]]:
    """The page and the failures."""
    status = read_status(out)
    parity = read_json(out / "a_parity.json")
    device = (parity or {}).get("device_name", MISSING)
    lines = [f"# GPU check: {device}", "", f"Results folder: `{out}`", ""]
    lines += table(["part", "exit status", "seconds"], status) + [""]
    if parity:
        lines += [f"torch {parity['torch']}, CUDA {parity['cuda']}", ""]
        lines += parity_section(parity)
    wav2vec2 = [read_json(p) for p in sorted(out.glob("b_wav2vec2_*.json"))]
    if wav2vec2:
        lines += wav2vec2_section(wav2vec2)
    summary_mixing = read_json(out / "c_summary_mixing.json")
    if summary_mixing:
        lines += summary_mixing_section(summary_mixing)
    prepare, recipe = read_json(out / "d_prepare.json"), read_json(
        out / "d_recipe.json"
    )
    if prepare or recipe:
        lines += recipe_section(prepare, recipe)
    failures = failures_of(out, status)
    lines += ["## Failures", ""] + [f"- {f}" for f in failures or ["none"]]
    return "\n".join(lines) + "\n", failures


def main(argv: Optional[List[str]] = None) -> int:
    """Writes and prints ``results.md``; returns 1 if anything failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="run.sh's results folder")
    out = Path(parser.parse_args(argv).out)
    page, failures = render(out)
    (out / "results.md").write_text(page)
    print(page, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
