"""k-means for HuBERT targets: sample frames, fit (faiss or scikit-learn), assign.

The pipeline never holds all features in memory (ESPnet's ``learn_kmeans.py``
``np.concatenate``s every matrix, espnet/espnet#5613):

1. :func:`espnet2.ssl.targets.sampling.sample_frames` picks a seeded share of the
   utterances and at most ``max_frames`` of their frames, reading one utterance
   at a time (re-exported here).
2. :func:`fit_faiss` (Lloyd iterations, ``faiss.Kmeans``) or :func:`fit_sklearn`
   (``MiniBatchKMeans`` with the settings of ESPnet's recipe as defaults) returns
   the centroids and the inertia, which both backends define the same way
   (:func:`compute_inertia`: exact squared L2 to the nearest centroid, summed in
   float64 over the sample), so the two can be compared.
3. :class:`KMeansModel` keeps the centroids with their metadata
   (``centroids.npy`` + ``kmeans.yaml``) and assigns each frame its nearest
   centroid; :func:`apply_kmeans` streams a ``feats.scp`` and assigns frames in
   batches concatenated across utterances.

References:
    W.-N. Hsu et al., "HuBERT", arXiv:2106.07447 (k-means targets on MFCC, then on
    layer features; fit on a 10 % subset).
    fairseq ``examples/hubert/simple_kmeans/learn_kmeans.py`` and
    ``dump_km_label.py``, as vendored by ESPnet
    (``egs2/TEMPLATE/asr1/pyscripts/utils/learn_kmeans.py`` @ 1e043bb7:
    ``MiniBatchKMeans(init="k-means++", max_iter=100, batch_size=10000, tol=0,
    max_no_improvement=100, n_init=20, reassignment_ratio=0, compute_labels=False,
    init_size=None)``; ``pyscripts/feats/dump_km_label.py`` @ 0ffbccb2: argmin of
    ``|x|^2 - 2 x C + |C|^2``, one utterance at a time).
    J. Johnson et al., "Billion-scale similarity search with GPUs" (faiss);
    ``faiss.Kmeans`` in faiss 1.15 (``max_points_per_centroid`` 256 by default
    subsamples the training set; here the same default, logged, and None for every
    frame).
"""

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import yaml
from typeguard import typechecked

from espnet2.ssl.targets.labels import atomic_path
from espnet2.ssl.targets.sampling import (  # noqa: F401 (re-exported)
    choose_utterances,
    iter_features,
    read_feats_info,
    read_scp_keys,
    sample_frames,
)
from espnet2.ssl.utils.plain_values import plain_tree
from espnet2.utils.cpu import cpu_flags

PathLike = Union[str, Path]
CENTROIDS_FILE = "centroids.npy"
KMEANS_YAML = "kmeans.yaml"
# faiss's own initialisations (ClusteringInitMethod); "k-means++" is scikit-learn's
FAISS_INIT_METHODS = {"random": 0, "faiss-k-means++": 1, "afk-mc2": 2}
MAX_POINTS_PER_CENTROID = 256  # faiss's default: Lloyd on a k x 256 subsample
# AVX-512 subsets OpenBLAS's SkylakeX kernels use (see import_faiss)
SKYLAKEX_CPU_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
LLOYD_TOL = 5e-5  # Lloyd stops when an iteration improves its objective by less
# k-means++ sample sizes (see fit_faiss): MFCC-like features vs SSL layer features
INIT_SIZE_LOW_DIM, INIT_SIZE_HIGH_DIM, LOW_DIM = 200_000, 60_000, 100
# scores per assignment chunk (rows x clusters): 4 M float32 = 16 MB (as fast as
# or faster than 0.5-2 M and 16 M on 2 cores, 1M x 39 / k 100 and 200k x 768 / k 500)
ASSIGN_CHUNK_SCORES = 1 << 22
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


# ---------------------------------------------------------------- fitting
def _check_sample(x: np.ndarray, n_clusters: int) -> None:
    """Refuse a sample that cannot give ``n_clusters`` clusters."""
    if x.ndim != 2 or x.dtype != np.float32:
        raise ValueError(f"expected (N, D) float32 frames, got {x.dtype} {x.shape}")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if len(x) < n_clusters:
        raise ValueError(
            f"k-means with {n_clusters} clusters needs at least {n_clusters} frames, "
            f"but only {len(x)} were sampled; raise --fraction or --max_frames, "
            "or lower --n_clusters"
        )


def fit_faiss(
    x: np.ndarray,
    n_clusters: int,
    niter: int = 50,
    nredo: int = 1,
    seed: int = 0,
    init: str = "k-means++",
    init_size: Optional[int] = None,
    max_points_per_centroid: Optional[int] = MAX_POINTS_PER_CENTROID,
    tol: float = LLOYD_TOL,
) -> Tuple[np.ndarray, float]:
    """k-means with faiss: greedy k-means++, then faiss Lloyd iterations.

    Args:
        x: Sampled frames (N, D) float32.
        n_clusters: k.
        niter: Most Lloyd iterations per run (faiss's default is 25).
        nredo: Runs from seeds ``seed``, ``seed + 1``, ...; the lowest inertia
            is kept.
        seed: Seed of the initialisation, the subsample and faiss.
        init: ``k-means++``: greedy k-means++ (:func:`greedy_kmeans_plusplus`,
            2 + log k candidates per centre) on ``init_size`` seeded random
            frames. faiss's own initialisations are ``faiss-k-means++``,
            ``random`` (its default) and ``afk-mc2``; they reached 3.6 %, 6 %
            and 6 % more inertia than ``k-means++`` on the benchmark's mixture
            (test/bench/bench_kmeans.py, 100k x 39, k 100), and ``random`` often
            merges two well-separated clusters.
        init_size: Frames for ``k-means++``; at least 3 k. The default
            (:func:`default_init_size`) is 200,000 frames up to
            ``LOW_DIM`` dimensions and 60,000 above: k-means++ reads its whole
            sample once per centre, and on the benchmark's mixtures a larger
            sample is the main lever on the final inertia (768-d, k 500: 30,000
            frames gave 1961-1973 per frame over three seeds, 60,000 gave
            1947-1955, for 4 s and 12 s of initialisation).
        tol: Stop a run when Lloyd's objective improves by less than this share
            in one iteration. With 5e-5 the benchmark's 768-d, k 500 runs stop
            after 10-11 iterations and its 39-d, k 100 runs after 20-27; going on
            to 1e-5 changed their final inertia by less than 0.02 %.
        max_points_per_centroid: Lloyd iterations run on a seeded subsample of
            ``k`` times this many frames (faiss's default 256, logged); None uses
            every frame. On 1,000,000 x 39, k 100 (test/bench/bench_kmeans.py)
            256 took 0.25 s against 18.7 s for every frame, at 0.14 % more
            inertia (still below scikit-learn's with ESPnet's settings); the
            inertia returned is always on all of ``x``.

    Returns:
        Centroids (k, D) float32 and the inertia (:func:`compute_inertia`).
    """
    _check_sample(x, n_clusters)
    if init not in FAISS_INIT_METHODS and init != "k-means++":
        raise ValueError(f"init must be k-means++ or one of {list(FAISS_INIT_METHODS)}")
    if len(x) < 39 * n_clusters:
        logging.warning(
            f"{len(x)} frames for {n_clusters} clusters: fewer than 39 "
            "per cluster (faiss's advice)"
        )
    if max_points_per_centroid is None:
        max_points_per_centroid = math.ceil(len(x) / n_clusters) + 1
    elif len(x) > n_clusters * max_points_per_centroid:
        logging.info(
            f"faiss uses {n_clusters * max_points_per_centroid} of "
            f"{len(x)} frames (max_points_per_centroid)"
        )
    x = np.ascontiguousarray(x)
    best: Optional[Tuple[np.ndarray, float]] = None
    for run_seed in range(seed, seed + nredo):
        start = None
        if init == "k-means++":
            size = init_size or default_init_size(x.shape[1])
            start = greedy_kmeans_plusplus(x, n_clusters, size, run_seed)
        centroids = _faiss_lloyd(
            x, n_clusters, niter, tol, run_seed, init, start, max_points_per_centroid
        )
        inertia = compute_inertia(x, centroids)
        if best is None or inertia < best[1]:
            best = (centroids, inertia)
    return best


def default_init_size(dim: int) -> int:
    """Frames for k-means++ by feature dimension: 200,000 up to ``LOW_DIM``, else
    60,000 (each centre reads the whole sample: 30 MB at 39-d, 180 MB at 768-d)."""
    return INIT_SIZE_LOW_DIM if dim <= LOW_DIM else INIT_SIZE_HIGH_DIM


def import_faiss() -> Any:
    """``import faiss``, with OpenBLAS on fast kernels and without misleading logs.

    The faiss-cpu 1.15.1 wheel bundles OpenBLAS 0.3.15, which predates recent
    Xeons (Sapphire Rapids): it does not recognise them and falls back to
    generic kernels, so faiss's distance GEMMs (search, Lloyd iterations) ran 6x
    slower there (128k x 768 against 500 centroids: 2.8 s, 0.45 s with its
    SkylakeX kernels). When the CPU has the AVX-512 instructions those kernels
    need and ``OPENBLAS_CORETYPE`` is unset, it is set to ``SkylakeX`` before
    faiss (and with it OpenBLAS) is loaded. The loader's INFO lines ("Could not
    load library with AVX2 support") are silenced: faiss-cpu >= 1.12 wheels are
    one library with dynamic SIMD dispatch.
    """
    if "faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ:
        if SKYLAKEX_CPU_FLAGS <= cpu_flags():
            os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
            logging.debug("OPENBLAS_CORETYPE=SkylakeX for faiss's OpenBLAS")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def greedy_kmeans_plusplus(
    x: np.ndarray, n_clusters: int, init_size: int, seed: int
) -> np.ndarray:
    """Greedy k-means++ centres of a seeded subsample of ``x``.

    k-means++ (Arthur and Vassilvitskii, 2007) draws each new centre with
    probability proportional to the squared distance to the nearest centre so
    far; the greedy variant (scikit-learn's ``kmeans_plusplus``) draws
    ``2 + floor(ln k)`` candidates and keeps the one that lowers the potential
    (the sum of those squared distances) most. Distances are float32 matmuls in
    torch (about 5x faster than scikit-learn's at 30000 x 768, k 500); the
    potential and the sampling use float64.

    Args:
        x: Frames (N, D) float32.
        n_clusters: k.
        init_size: Frames to draw from (raised to ``3 k`` if smaller, as
            ``MiniBatchKMeans`` does).
        seed: Seed of the subsample and of the draws.

    Returns:
        Initial centroids (k, D) float32, rows of ``x``.
    """
    size = min(len(x), max(init_size, 3 * n_clusters))
    rows = np.random.default_rng(seed).choice(len(x), size=size, replace=False)
    points = torch.from_numpy(np.ascontiguousarray(x[np.sort(rows)], np.float32))
    generator = torch.Generator().manual_seed(seed)
    sq = (points * points).sum(dim=1)  # (N,)
    trials = 2 + int(math.log(n_clusters))
    chosen = [int(torch.randint(len(points), (1,), generator=generator))]
    closest = _sq_distances(points, sq, torch.tensor(chosen))[0]  # (N,)
    for _ in range(1, n_clusters):
        candidates = _draw(closest, trials, generator)  # (trials,)
        dist = torch.minimum(_sq_distances(points, sq, candidates), closest)
        potentials = dist.sum(dim=1, dtype=torch.float64)  # (trials,)
        best = int(potentials.argmin())
        chosen.append(int(candidates[best]))
        closest = dist[best]
    return points[chosen].numpy().copy()


def _sq_distances(
    points: torch.Tensor, sq: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor:
    """Squared L2 distances (R, N) from ``points[rows]`` to every point, >= 0."""
    cross = torch.addmm(sq[None, :] + sq[rows, None], points[rows], points.T, alpha=-2)
    return cross.clamp_(min=0.0)


def _draw(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn with probability proportional to ``weights`` (N,)."""
    cumulative = torch.cumsum(weights, dim=0, dtype=torch.float64)  # (N,)
    targets = torch.rand(n, generator=generator, dtype=torch.float64)
    picked = torch.searchsorted(cumulative, targets * cumulative[-1], right=True)
    return picked.clamp_(max=len(weights) - 1)


def _faiss_lloyd(
    x: np.ndarray,
    n_clusters: int,
    niter: int,
    tol: float,
    seed: int,
    init: str,
    start: Optional[np.ndarray],
    max_points_per_centroid: int,
) -> np.ndarray:
    """One faiss run from ``start`` (or faiss's ``init``): centroids (k, D).

    Lloyd iterations (faiss's assignment, mean update and empty-cluster
    splitting, one ``train`` call each) on a seeded subsample of ``k x
    max_points_per_centroid`` frames, until the objective improves by less than
    ``tol`` (relative) or after ``niter`` iterations.
    """
    faiss = import_faiss()
    rows = n_clusters * max_points_per_centroid
    if len(x) > rows:
        picked = np.random.default_rng(seed).choice(len(x), size=rows, replace=False)
        x = np.ascontiguousarray(x[np.sort(picked)])
    centroids, previous = start, math.inf
    for iteration in range(niter):
        kmeans = faiss.Kmeans(
            x.shape[1],
            n_clusters,
            niter=1,
            nredo=1,
            seed=seed + iteration,
            verbose=False,
            spherical=False,
            init_method=FAISS_INIT_METHODS.get(init, 0),
            min_points_per_centroid=1,
            max_points_per_centroid=len(x) // n_clusters + 1,  # no 2nd subsample
        )
        kmeans.train(x, init_centroids=centroids)
        centroids = np.asarray(kmeans.centroids, dtype=np.float32)
        objective = float(kmeans.obj[-1])  # before this iteration's update
        if previous - objective <= tol * objective:
            logging.debug(f"faiss Lloyd converged after {iteration + 1} iterations")
            break
        previous = objective
    return centroids


def fit_sklearn(
    x: np.ndarray,
    n_clusters: int,
    seed: int = 0,
    init: str = "k-means++",
    n_init: int = 20,
    max_iter: int = 100,
    batch_size: int = 10000,
    tol: float = 0.0,
    max_no_improvement: Optional[int] = 100,
    reassignment_ratio: float = 0.0,
    init_size: Optional[int] = None,
) -> Tuple[np.ndarray, float]:
    """k-means with scikit-learn's ``MiniBatchKMeans``, ESPnet's recipe by default.

    The defaults are ESPnet's ``learn_kmeans.py`` (from fairseq): k-means++,
    ``n_init`` 20, ``max_iter`` 100, ``batch_size`` 10000, ``tol`` 0,
    ``max_no_improvement`` 100, ``reassignment_ratio`` 0, ``init_size`` None
    (scikit-learn then initialises on ``3 * batch_size`` frames).

    Args:
        x: Sampled frames (N, D) float32.
        n_clusters: k.
        seed: ``random_state``.
        init, n_init, max_iter, batch_size, tol, max_no_improvement,
            reassignment_ratio, init_size: ``MiniBatchKMeans`` arguments.

    Returns:
        Centroids (k, D) float32 and the inertia (:func:`compute_inertia`).
    """
    from sklearn.cluster import MiniBatchKMeans

    _check_sample(x, n_clusters)
    kmeans = MiniBatchKMeans(
        n_clusters=n_clusters,
        init=init,
        n_init=n_init,
        max_iter=max_iter,
        batch_size=batch_size,
        tol=tol,
        max_no_improvement=max_no_improvement,
        reassignment_ratio=reassignment_ratio,
        init_size=init_size,
        random_state=seed,
        compute_labels=False,
        verbose=0,
    )
    kmeans.fit(x)
    centroids = np.ascontiguousarray(kmeans.cluster_centers_, dtype=np.float32)
    return centroids, compute_inertia(x, centroids)


def compute_inertia(x: np.ndarray, centroids: np.ndarray) -> float:
    """Sum over frames of the squared L2 distance to the nearest centroid.

    The nearest centroid is exact (:meth:`KMeansModel.assign`); the distances are
    summed in float64. Both backends report this, so their values compare.

    Args:
        x: Frames (N, D) float32.
        centroids: (k, D) float32.

    Returns:
        The inertia (squared feature units, summed over the N frames).
    """
    model = KMeansModel(centroids)
    total = 0.0
    for begin in range(0, len(x), model.chunk_rows):
        chunk = x[begin : begin + model.chunk_rows]
        diff = chunk.astype(np.float64) - model.centroids[model.assign(chunk)]
        total += float(np.einsum("nd,nd->", diff, diff))
    return total


# ---------------------------------------------------------------- model
class KMeansModel:
    """k-means centroids with their metadata, and nearest-centroid assignment."""

    @typechecked
    def __init__(
        self,
        centroids: np.ndarray,
        metadata: Optional[Dict[str, Any]] = None,
        source: str = "the k-means model",
    ):
        """Keep ``centroids`` (k, D) float32 and ``metadata`` (``kmeans.yaml``).

        Args:
            centroids: (k, D), finite.
            metadata: Feature type, layer, backend, sample, seed, inertia, ...
            source: Where the model came from, for error messages.
        """
        if centroids.ndim != 2 or len(centroids) == 0:
            raise ValueError(
                f"{source}: centroids must be (k, D), got {centroids.shape}"
            )
        if not np.isfinite(centroids).all():
            raise ValueError(f"{source}: centroids contain NaN or Inf")
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.metadata = dict(metadata or {})
        self.source = source
        self._c32 = torch.from_numpy(self.centroids)  # (k, D)
        self._c_sq = (self._c32 * self._c32).sum(dim=1)  # (k,)
        self._c_sq_max = float(self._c_sq.max())
        # float32 rounding bound on a score difference, per unit of |x|^2 + |c|^2
        self._tie_factor = 4.0 * (self.dim + 4) * FLOAT32_UNIT_ROUNDOFF
        self._c64 = self._c32.double()  # (k, D), for near ties
        self._c64_sq = (self._c64 * self._c64).sum(dim=1)  # (k,)
        self.chunk_rows = max(1, ASSIGN_CHUNK_SCORES // self.n_clusters)
        # (k, 2): column 0 counts close centroids, column 1 sums their ids
        self._count_and_id = torch.stack(
            [torch.ones(self.n_clusters), torch.arange(self.n_clusters).float()], 1
        )

    @property
    def n_clusters(self) -> int:
        """k."""
        return self.centroids.shape[0]

    @property
    def dim(self) -> int:
        """Feature dimension D."""
        return self.centroids.shape[1]

    def assign(self, x: np.ndarray, name: str = "features") -> np.ndarray:
        """The nearest centroid (squared L2) of every frame.

        Scores ``|c|^2 - 2 x.c`` in float32 (one matmul per chunk); where the best
        two scores are closer than float32 rounding could explain (bound
        ``4 (D + 4) u (|x|^2 + 2 max|c|^2)``, u = 2^-24), the row is scored again
        in float64. The result therefore equals the exact argmin, up to ties
        within float64 rounding (lowest index on exact ties).

        Args:
            x: Frames (T, D) float32.
            name: What ``x`` is, for the error on a wrong dimension.

        Returns:
            Cluster ids (T,) int64 in ``[0, k)``.
        """
        self.check_dim(x, name)
        x = np.ascontiguousarray(x, dtype=np.float32)
        parts = [
            self._assign_chunk(x[begin : begin + self.chunk_rows])
            for begin in range(0, len(x), self.chunk_rows)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def check_dim(self, x: np.ndarray, name: str = "features") -> None:
        """Raise ``ValueError`` naming ``name`` unless ``x`` is (T, D) with our D."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{name} have shape {tuple(x.shape)} but the k-means centroids of "
                f"{self.source} have dimension {self.dim}; use features of the "
                "same type and layer as the k-means was fitted on"
            )

    def _assign_chunk(self, x: np.ndarray) -> np.ndarray:
        """:meth:`assign` on at most ``chunk_rows`` frames (T, D) -> (T,).

        Four passes over the (T, k) scores, none of them a scan with indices: the
        best score per row; an indicator, per score, of being within the rounding
        bound of it; and one matmul of the indicators with ``[1, j]`` that gives,
        per row, how many centroids are that close and (when only one is) its id.
        Rows with more than one close centroid are scored again in float64.
        """
        if self.n_clusters == 1:
            return np.zeros(len(x), dtype=np.int64)
        xt = torch.from_numpy(x)  # (T, D)
        scores = torch.addmm(self._c_sq, xt, self._c32.T, alpha=-2.0)  # (T, k)
        x_sq = torch.linalg.vector_norm(xt, dim=1).square()  # (T,)
        bound = self._tie_factor * (x_sq + 2.0 * self._c_sq_max)  # (T,)
        limit = (scores.amin(dim=1) + bound)[:, None]  # (T, 1)
        close = torch.le(scores, limit, out=scores)  # (T, k) 1.0 or 0.0, in place
        count_and_id = close @ self._count_and_id  # (T, 2)
        labels = count_and_id[:, 1].numpy().astype(np.int64)
        # count 0 only for non-finite input, which the rescoring reports as is
        tied = np.flatnonzero(count_and_id[:, 0].numpy() != 1.0)
        if len(tied):
            labels[tied] = self._exact_nearest(xt[torch.from_numpy(tied)])
        return labels

    def _exact_nearest(self, x: torch.Tensor) -> np.ndarray:
        """Nearest centroid in float64 (R, D) -> (R,): near ties of the float32 pass.

        ``|c|^2 - 2 x.c`` in float64 errs by about 1e-16 D (|x|^2 + |c|^2), far
        below any gap float32 could not resolve.
        """
        x64 = x.double()  # (R, D)
        scores = torch.addmm(self._c64_sq, x64, self._c64.T, alpha=-2.0)  # (R, k)
        return scores.argmin(dim=1).numpy().astype(np.int64)

    def save(self, out_dir: PathLike) -> None:
        """Write ``centroids.npy`` and ``kmeans.yaml`` into ``out_dir``.

        Each file is written to a temporary name and renamed; ``kmeans.yaml`` is
        removed first and written last, so a folder with both files is complete.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / KMEANS_YAML).unlink(missing_ok=True)
        with atomic_path(out / CENTROIDS_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, self.centroids)
        meta = {**self.metadata, "n_clusters": self.n_clusters, "dim": self.dim}
        with atomic_path(out / KMEANS_YAML) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                yaml.safe_dump(plain_tree(meta, yaml_safe=True), f, sort_keys=False)

    @classmethod
    def load(cls, kmeans_dir: PathLike) -> "KMeansModel":
        """Read a folder written by :meth:`save`.

        Raises:
            FileNotFoundError: A file is missing (names it and how to make it).
            ValueError: The files disagree or the centroids are not finite.
        """
        folder = Path(kmeans_dir)
        for name in (CENTROIDS_FILE, KMEANS_YAML):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"k-means folder {folder} has no {name}; fit one with "
                    f"'python -m espnet2.bin.ssl_kmeans fit --out_dir {folder} ...'"
                )
        centroids = np.load(folder / CENTROIDS_FILE, allow_pickle=False)
        with open(folder / KMEANS_YAML, encoding="utf-8") as f:
            metadata = yaml.safe_load(f) or {}
        model = cls(centroids.astype(np.float32), metadata, source=str(folder))
        for key, value in (("n_clusters", model.n_clusters), ("dim", model.dim)):
            if metadata.get(key, value) != value:
                raise ValueError(
                    f"{folder}: {KMEANS_YAML} says {key} "
                    f"{metadata[key]} but {CENTROIDS_FILE} has {value}"
                )
        return model


# ---------------------------------------------------------------- applying
def apply_kmeans(
    model: KMeansModel,
    feats_scp: PathLike,
    batch_frames: int = 20000,
    progress: bool = False,
) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(utt, labels (T,) int64)`` for every utterance of ``feats_scp``.

    Utterances are read one at a time and their frames assigned in batches of
    about ``batch_frames`` frames concatenated across utterances (one matmul per
    batch rather than per utterance); the result equals assigning each utterance
    alone.

    Args:
        model: The k-means model.
        feats_scp: Kaldi scp of ``(T, D)`` features, D equal to ``model.dim``.
        batch_frames: Frames per assignment batch (one long utterance may exceed it).
        progress: Show a tqdm bar over utterances.
    """
    pending: List[Tuple[str, np.ndarray]] = []
    frames = 0
    for utt, feats in iter_features(feats_scp, progress=progress):
        model.check_dim(feats, f"features of utterance '{utt}' in {feats_scp}")
        pending.append((utt, feats))
        frames += len(feats)
        if frames >= batch_frames:
            yield from _assign_batch(model, pending)
            pending, frames = [], 0
    yield from _assign_batch(model, pending)


def _assign_batch(
    model: KMeansModel, batch: List[Tuple[str, np.ndarray]]
) -> Iterator[Tuple[str, np.ndarray]]:
    """Assign the frames of ``batch`` at once and split the labels per utterance."""
    if not batch:
        return
    labels = model.assign(np.concatenate([feats for _, feats in batch]))
    ends = np.cumsum([len(feats) for _, feats in batch])
    for (utt, _), part in zip(batch, np.split(labels, ends[:-1])):
        yield utt, part


def kmeans_metadata(
    feats_scp: PathLike,
    backend: str,
    seed: int,
    sample: Dict[str, int],
    inertia: float,
    options: Dict[str, Any],
    feature_type: Optional[str] = None,
    layer: Optional[int] = None,
) -> Dict[str, Any]:
    """The ``kmeans.yaml`` fields of a fit (the feature fields default to the
    ``feats.yaml`` next to ``feats_scp``).

    Args:
        feats_scp: The features it was fitted on.
        backend: ``faiss`` or ``sklearn``.
        seed: The seed of sampling and fitting.
        sample: ``{"utterances": ..., "frames": ...}`` of the sample.
        inertia: :func:`compute_inertia` on the sample.
        options: The backend's arguments (``niter``, ``nredo``, ...).
        feature_type: Overrides ``feats.yaml``'s.
        layer: Overrides ``feats.yaml``'s.
    """
    info = read_feats_info(feats_scp)
    return {
        "feature_type": feature_type or info.get("feature_type"),
        "layer": layer if layer is not None else info.get("layer"),
        "feature_frame_rate": info.get("frame_rate"),
        "backend": backend,
        "seed": seed,
        "niter": options.get("niter"),
        "nredo": options.get("nredo"),
        "sample_utterances": sample["utterances"],
        "sample_frames": sample["frames"],
        "inertia": inertia,
        "inertia_per_frame": inertia / max(sample["frames"], 1),
        "feats_scp": os.fspath(feats_scp),
        "backend_options": dict(options),
    }
