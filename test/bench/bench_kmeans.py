"""Benchmark: k-means for HuBERT targets, faiss vs scikit-learn MiniBatchKMeans.

On the same synthetic features, at two sizes:

* ``mfcc``: 1,000,000 x 39 frames, k = 100 (HuBERT iteration 1: MFCC targets);
* ``hubert``: 200,000 x 768 frames, k = 500 (iteration 2: layer features).

The features are a seeded Gaussian mixture with four times more components than
k (random means, per-component diagonal scales, Dirichlet weights), float32, so
k-means has structure to find but no exact answer.

Methods (``--methods``):

* ``faiss``: our :func:`espnet2.ssl.targets.kmeans.fit_faiss` with its defaults
  (greedy k-means++ on 200,000 frames up to 100 dims, 60,000 above; then faiss
  Lloyd iterations on a k x 256 subsample until the objective improves by less
  than 5e-5 per iteration, ``--faiss_niter`` at most; ``nredo`` 1);
* ``sklearn_espnet``: ``MiniBatchKMeans`` with ESPnet's recipe settings
  (k-means++, ``n_init`` 20, ``max_iter`` 100, ``batch_size`` 10000, ``tol`` 0,
  ``max_no_improvement`` 100, ``reassignment_ratio`` 0), as ``learn_kmeans.py``;
* ``sklearn_fast``: ``MiniBatchKMeans`` with the fastest settings found that
  reach about the same inertia (``SKLEARN_FAST``: ``n_init`` 3,
  ``max_no_improvement`` 50; see test/bench/README.md).

Each (size, method, repeat) runs in its own child process, so the peak resident
memory (``VmHWM``, reset with ``/proc/self/clear_refs`` before each phase) belongs
to that run alone; the child generates the data, warms the library up on a tiny
fit, then times the fit, then the assignment of every frame: for ``faiss`` our
exact :meth:`KMeansModel.assign` (what ``ssl_kmeans apply`` runs) and, for
reference, faiss's ``IndexFlatL2.search``; for scikit-learn its ``predict``.
The inertia (sum of squared distances to the nearest centroid, float64) is
computed the same way for every method, on the fitted points, untimed.
Methods alternate within each repeat (rotated order); medians are reported.

Run from the repository root:
``tools/venv/bin/python test/bench/bench_kmeans.py``.
Writes one JSON line per (size, method), a summary line of ratios, and
``bench/results/kmeans.json``.
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from bench_env import cpu_flags, loadavg, read_status_kib, reset_peak_rss

REPO_ROOT = Path(__file__).resolve().parents[2]
# above this share of wall time x threads spent waiting for a CPU, other processes
# took the CPUs (CPU time over wall time cannot tell: MiniBatchKMeans is partly
# serial, so its CPU share stays near 0.6 on an idle machine)
CONTENDED_WAIT_SHARE = 0.1
SIZES = {
    "mfcc": dict(frames=1_000_000, dim=39, k=100),
    "hubert": dict(frames=200_000, dim=768, k=500),
}
ESPNET_SKLEARN = dict(
    init="k-means++",
    n_init=20,
    max_iter=100,
    batch_size=10000,
    tol=0.0,
    max_no_improvement=100,
    reassignment_ratio=0.0,
)
# the fastest settings found within about 0.5 % of ESPnet's inertia (README)
SKLEARN_FAST = dict(ESPNET_SKLEARN, n_init=3, max_no_improvement=50)
METHODS = ("faiss", "sklearn_espnet", "sklearn_fast")
COMPONENTS_PER_CLUSTER = 4
GENERATE_CHUNK = 100_000  # rows generated at a time (bounded temporaries)


# ---------------------------------------------------------------- environment
def runqueue_wait_s() -> float:
    """Seconds this process's threads have waited for a CPU (``schedstat``)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended, or no schedstats
    return total / 1e9


def environment(threads: int) -> Dict:
    """Versions, thread count and CPU of this run."""
    import sklearn
    import torch

    from espnet2.ssl.targets.kmeans import import_faiss

    faiss = import_faiss()

    return {
        "threads": threads,
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
    }


# ---------------------------------------------------------------- data
def gaussian_mixture(frames: int, dim: int, k: int, seed: int) -> np.ndarray:
    """(frames, dim) float32 from a mixture of ``4 k`` diagonal Gaussians."""
    rng = np.random.default_rng(seed)
    components = COMPONENTS_PER_CLUSTER * k
    means = rng.normal(size=(components, dim)).astype(np.float32) * 2.0
    scales = rng.uniform(0.3, 1.0, size=(components, dim)).astype(np.float32)
    weights = rng.dirichlet(np.full(components, 2.0))
    out = np.empty((frames, dim), dtype=np.float32)
    for begin in range(0, frames, GENERATE_CHUNK):
        rows = min(GENERATE_CHUNK, frames - begin)
        which = rng.choice(components, size=rows, p=weights)
        noise = rng.standard_normal(size=(rows, dim), dtype=np.float32)
        out[begin : begin + rows] = means[which] + scales[which] * noise
    return out


# ---------------------------------------------------------------- child
def fit(method: str, x: np.ndarray, k: int, niter: int, seed: int):
    """Centroids (k, D) and the library object used for its own assignment."""
    if method == "faiss":
        from espnet2.ssl.targets.kmeans import fit_faiss

        centroids, _ = fit_faiss(x, k, niter=niter, nredo=1, seed=seed)
        return centroids, None
    from sklearn.cluster import MiniBatchKMeans

    options = ESPNET_SKLEARN if method == "sklearn_espnet" else SKLEARN_FAST
    model = MiniBatchKMeans(
        n_clusters=k, random_state=seed, compute_labels=False, **options
    )
    model.fit(x)
    return np.ascontiguousarray(model.cluster_centers_, np.float32), model


def native_assign(method: str, x: np.ndarray, centroids: np.ndarray, model):
    """The library's own assignment: faiss ``IndexFlatL2.search`` or ``predict``."""
    if method == "faiss":
        from espnet2.ssl.targets.kmeans import import_faiss

        index = import_faiss().IndexFlatL2(centroids.shape[1])
        index.add(centroids)
        return index.search(x, 1)[1][:, 0]
    return model.predict(x)


def timed(fn, threads: int) -> Dict:
    """Runs ``fn``: wall seconds, CPU and wait shares, the peak RSS of this phase."""
    rss_start = read_status_kib("VmRSS")
    peak_reset = reset_peak_rss()
    wait_start = runqueue_wait_s()
    cpu_start, start = time.process_time(), time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {
        "value": value,
        "s": seconds,
        "cpu_share": cpu / (seconds * threads),
        "wait_share": (runqueue_wait_s() - wait_start) / (seconds * threads),
        "peak_rss_mb": read_status_kib("VmHWM") / 1024,
        "rss_growth_mb": (read_status_kib("VmHWM") - rss_start) / 1024,
        "peak_is_per_phase": peak_reset,
    }


def run_child(spec: Dict) -> Dict:
    """One (size, method) run in this process; returns its measurements."""
    import torch
    from threadpoolctl import threadpool_limits

    from espnet2.ssl.targets.kmeans import KMeansModel, compute_inertia, import_faiss

    faiss = import_faiss()

    threads, method = spec["threads"], spec["method"]
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    with threadpool_limits(limits=threads):
        x = gaussian_mixture(spec["frames"], spec["dim"], spec["k"], spec["data_seed"])
        warm = x[:2000]
        fit(method, warm, 8, 2, 0)  # load and start the library's threads
        fitted = timed(lambda: fit(method, x, spec["k"], spec["niter"], 0), threads)
        centroids, model = fitted["value"]
        inertia = compute_inertia(x, centroids)
        ours = KMeansModel(centroids)
        if method == "faiss":
            applied = timed(lambda: ours.assign(x), threads)
        else:
            applied = timed(lambda: native_assign(method, x, centroids, model), threads)
        native = timed(lambda: native_assign(method, x, centroids, model), threads)
    agree = float(np.mean(native["value"] == ours.assign(x)))
    return {
        "fit_s": fitted["s"],
        "apply_s": applied["s"],
        "native_apply_s": native["s"],
        "inertia": inertia,
        "inertia_per_frame": inertia / len(x),
        "fit_peak_rss_mb": fitted["peak_rss_mb"],
        "fit_rss_growth_mb": fitted["rss_growth_mb"],
        "apply_peak_rss_mb": applied["peak_rss_mb"],
        "apply_rss_growth_mb": applied["rss_growth_mb"],
        "data_mb": x.nbytes / 2**20,
        "native_agrees_with_exact": agree,
        "sklearn_steps": getattr(model, "n_steps_", 0),
        "cpu_share": fitted["cpu_share"],
        "wait_share": max(fitted["wait_share"], applied["wait_share"]),
        "peak_is_per_phase": fitted["peak_is_per_phase"],
    }


def spawn(spec: Dict) -> Dict:
    """Runs :func:`run_child` in a fresh interpreter with the thread variables set."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(spec["threads"])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"child {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- parent
def run_size(size: str, args: argparse.Namespace) -> Dict[str, Dict]:
    """All methods at ``size``, ``--repeats`` times each in rotated order."""
    shape = SIZES[size]
    frames = max(int(shape["frames"] * args.scale), 2 * shape["k"])
    runs: Dict[str, List[Dict]] = {m: [] for m in args.methods}
    for repeat in range(args.repeats):
        shift = repeat % len(args.methods)
        for method in args.methods[shift:] + args.methods[:shift]:
            spec = dict(
                method=method,
                frames=frames,
                dim=shape["dim"],
                k=shape["k"],
                niter=args.faiss_niter,
                threads=args.threads,
                data_seed=args.seed,
            )
            runs[method].append(spawn(spec))
            logging.info(f"{size} {method} repeat {repeat}: {runs[method][-1]}")
    return {m: summarise(size, m, frames, shape, r) for m, r in runs.items()}


def summarise(size: str, method: str, frames: int, shape: Dict, runs: List) -> Dict:
    """Medians over the repeats of one (size, method)."""
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    options = {
        "faiss": None,
        "sklearn_espnet": ESPNET_SKLEARN,
        "sklearn_fast": SKLEARN_FAST,
    }[method]
    return {
        "bench": "kmeans",
        "size": size,
        "method": method,
        "frames": frames,
        "dim": shape["dim"],
        "k": shape["k"],
        "options": options,
        **{f"{key}_median": value for key, value in median.items()},
        "fit_s_all": [round(r["fit_s"], 3) for r in runs],
        "apply_s_all": [round(r["apply_s"], 3) for r in runs],
        "inertia_all": [r["inertia"] for r in runs],
        "contended": median["wait_share"] > CONTENDED_WAIT_SHARE,
    }


def ratios(by_method: Dict[str, Dict]) -> Dict[str, float]:
    """faiss vs each scikit-learn setting: time ratios (>1: faiss faster), inertia."""
    out = {}
    if "faiss" not in by_method:
        return out
    faiss = by_method["faiss"]
    for name, other in by_method.items():
        if name == "faiss":
            continue
        out[f"fit_s_{name}_over_faiss"] = other["fit_s_median"] / faiss["fit_s_median"]
        out[f"apply_s_{name}_over_faiss"] = (
            other["apply_s_median"] / faiss["apply_s_median"]
        )
        out[f"inertia_faiss_over_{name}"] = (
            faiss["inertia_median"] / other["inertia_median"]
        )
    if "sklearn_fast" in by_method and "sklearn_espnet" in by_method:
        out["inertia_sklearn_fast_over_sklearn_espnet"] = (
            by_method["sklearn_fast"]["inertia_median"]
            / by_method["sklearn_espnet"]["inertia_median"]
        )
    return out


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per method (minutes each)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiplies the number of frames (k unchanged); " "0.01 for a smoke run",
    )
    parser.add_argument("--faiss_niter", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument(
        "--output", default=str(REPO_ROOT / "bench/results/kmeans.json")
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.info(f"arguments: {vars(args)}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    load_start, start = loadavg(), time.perf_counter()
    results = {size: run_size(size, args) for size in args.sizes}
    for by_method in results.values():
        for result in by_method.values():
            print(json.dumps(result), flush=True)
    summary = {
        "bench": "kmeans",
        "summary": True,
        "ratios": {size: ratios(r) for size, r in results.items()},
        "contended": any(r["contended"] for m in results.values() for r in m.values()),
        "scale": args.scale,
        "repeats": args.repeats,
        "faiss_niter": args.faiss_niter,
        "wall_s": time.perf_counter() - start,
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        **environment(args.threads),
    }
    print(json.dumps(summary), flush=True)
    if summary["contended"]:
        logging.warning(
            f"other processes shared the CPUs (wait_share > {CONTENDED_WAIT_SHARE}; "
            f"loadavg {loadavg()}): rerun on an idle machine"
        )
    with open(args.output, "w") as f:
        json.dump({"summary": summary, "results": results}, f, indent=1)
    logging.info(f"written {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
