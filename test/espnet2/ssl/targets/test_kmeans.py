"""espnet2/ssl/targets/kmeans.py and sampling.py: sampling, faiss and scikit-learn
k-means on real kaldiio files, exact assignment, saving, streaming application."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple

import kaldiio
import numpy as np
import pytest

from espnet2.ssl.targets.kmeans import (
    SKYLAKEX_CPU_FLAGS,
    KMeansModel,
    apply_kmeans,
    choose_utterances,
    compute_inertia,
    cpu_flags,
    default_init_size,
    fit_faiss,
    fit_sklearn,
    greedy_kmeans_plusplus,
    read_scp_keys,
    sample_frames,
)

DIM = 8
NUM_CLUSTERS = 6
NUM_UTTS = 24


def write_scp(root: Path, feats: Dict[str, np.ndarray], name: str = "feats") -> Path:
    """Write ``{utt: (T, D)}`` with kaldiio; returns the scp path."""
    root.mkdir(parents=True, exist_ok=True)
    ark, scp = root / f"{name}.ark", root / f"{name}.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        for utt, matrix in feats.items():
            writer(utt, matrix)
    return scp


def gaussian_mixture(
    seed: int = 0,
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray]:
    """Utterances of well-separated clusters: ``(feats, true labels, means)``."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(NUM_CLUSTERS, DIM)) * 30.0  # spread 30, noise 1
    feats, labels = {}, {}
    for i in range(NUM_UTTS):
        truth = rng.integers(0, NUM_CLUSTERS, size=int(rng.integers(20, 90)))
        noise = rng.normal(size=(len(truth), DIM))
        feats[f"utt{i:02d}"] = (means[truth] + noise).astype(np.float32)
        labels[f"utt{i:02d}"] = truth
    return feats, labels, means


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    feats, labels, _ = gaussian_mixture()
    return write_scp(tmp_path_factory.mktemp("mix"), feats), feats, labels


def purity(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of frames whose cluster's majority true label is their own."""
    hits = sum(np.bincount(truth[predicted == c]).max() for c in np.unique(predicted))
    return hits / len(truth)


def brute_force(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """argmin_k sum_d (x - c_k)^2 in float64, lowest index on ties."""
    diff = x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]
    return (diff**2).sum(axis=2).argmin(axis=1)


# ---------------------------------------------------------------- sampling
def test_sample_is_seeded_and_draws_only_frames_of_the_chosen_utterances(mixture):
    scp, feats, _ = mixture
    first = sample_frames(scp, fraction=0.25, max_frames=100, seed=3)
    again = sample_frames(scp, fraction=0.25, max_frames=100, seed=3)
    other = sample_frames(scp, fraction=0.25, max_frames=100, seed=4)
    assert first.shape == (100, DIM) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    chosen = choose_utterances(read_scp_keys(scp), 0.25, seed=3)
    assert len(chosen) == 6  # ceil(0.25 * 24), as ESPnet's --percent
    pool = {row.tobytes() for utt in chosen for row in feats[utt]}
    assert all(row.tobytes() in pool for row in first)
    assert len({row.tobytes() for row in first}) == 100  # without replacement


def test_sample_without_cap_is_every_frame_of_the_chosen_utterances(mixture):
    scp, feats, _ = mixture
    sample = sample_frames(scp, fraction=0.5, max_frames=None, seed=1)
    chosen = choose_utterances(read_scp_keys(scp), 0.5, seed=1)
    np.testing.assert_array_equal(sample, np.concatenate([feats[u] for u in chosen]))
    full = sample_frames(scp, fraction=1.0, max_frames=10**9, seed=1)
    np.testing.assert_array_equal(full, np.concatenate(list(feats.values())))


def test_sample_is_the_same_with_or_without_utt2num_frames(tmp_path):
    feats, _, _ = gaussian_mixture(seed=5)
    scp = write_scp(tmp_path, feats)
    without = sample_frames(scp, fraction=0.5, max_frames=150, seed=2)
    lines = [f"{utt} {len(m)}\n" for utt, m in feats.items()]
    (tmp_path / "utt2num_frames").write_text("".join(lines))
    np.testing.assert_array_equal(
        without, sample_frames(scp, fraction=0.5, max_frames=150, seed=2)
    )


def test_sample_refuses_a_wrong_utt2num_frames(tmp_path):
    feats, _, _ = gaussian_mixture(seed=5)
    scp = write_scp(tmp_path, feats)
    lines = [f"{utt} {len(m) + (utt == 'utt03')}\n" for utt, m in feats.items()]
    (tmp_path / "utt2num_frames").write_text("".join(lines))
    with pytest.raises(ValueError, match="'utt03' has .* utt2num_frames says"):
        sample_frames(scp, fraction=1.0, max_frames=None, seed=0)


def test_nan_in_features_names_the_utterance_and_the_scp(tmp_path):
    feats, _, _ = gaussian_mixture()
    feats["utt07"][3, 2] = np.nan
    scp = write_scp(tmp_path, feats)
    pattern = f"utterance 'utt07' in {scp}: 1 of .* NaN or Inf"
    with pytest.raises(ValueError, match=pattern):
        sample_frames(scp, fraction=1.0, max_frames=None, seed=0)
    model = KMeansModel(np.zeros((2, DIM), dtype=np.float32))
    with pytest.raises(ValueError, match=pattern):
        list(apply_kmeans(model, scp))


def test_features_of_another_dimension_are_refused(tmp_path):
    feats, _, _ = gaussian_mixture()
    feats["utt05"] = np.ones((10, DIM + 1), dtype=np.float32)
    scp = write_scp(tmp_path, feats)
    with pytest.raises(ValueError, match=f"'utt05' in {scp}: .*dimension 9, exp"):
        sample_frames(scp, fraction=1.0, max_frames=None, seed=0)


@pytest.mark.filterwarnings("ignore:An error happend when loading")  # kaldiio's
def test_unreadable_ark_names_the_utterance(tmp_path):
    feats, _, _ = gaussian_mixture()
    scp = write_scp(tmp_path, feats)
    (tmp_path / "feats.ark").unlink()
    with pytest.raises(ValueError, match="cannot read the features of utterance"):
        sample_frames(scp, fraction=1.0, max_frames=None, seed=0)


# ---------------------------------------------------------------- fitting
def test_faiss_recovers_well_separated_clusters(mixture):
    scp, feats, labels = mixture
    sample = sample_frames(scp, fraction=1.0, max_frames=None, seed=0)
    centroids, inertia = fit_faiss(sample, NUM_CLUSTERS, seed=0)  # defaults
    assert centroids.shape == (NUM_CLUSTERS, DIM) and centroids.dtype == np.float32
    model = KMeansModel(centroids)
    for utt in feats:
        assert purity(model.assign(feats[utt]), labels[utt]) == 1.0
    assert len(np.unique(model.assign(sample))) == NUM_CLUSTERS
    assert inertia / len(sample) < 1.2 * DIM  # noise variance 1 per dimension


def test_sklearn_recovers_well_separated_clusters(mixture):
    scp, feats, labels = mixture
    sample = sample_frames(scp, fraction=1.0, max_frames=None, seed=0)
    centroids, inertia = fit_sklearn(sample, NUM_CLUSTERS, seed=0, n_init=3)
    truth = np.concatenate(list(labels.values()))
    predicted = KMeansModel(centroids).assign(np.concatenate(list(feats.values())))
    assert purity(predicted, truth) == 1.0
    assert len(np.unique(predicted)) == NUM_CLUSTERS
    assert inertia / len(sample) < 1.2 * DIM


def test_inertia_is_the_sum_of_squared_distances_to_the_nearest_centroid():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5)).astype(np.float32)
    centroids = rng.normal(size=(7, 5)).astype(np.float32)
    nearest = brute_force(x, centroids)
    expected = ((x.astype(np.float64) - centroids[nearest]) ** 2).sum()
    assert compute_inertia(x, centroids) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("fit", [fit_faiss, fit_sklearn], ids=["faiss", "sklearn"])
def test_more_clusters_than_sampled_frames_is_a_clear_error(fit):
    x = np.zeros((12, DIM), dtype=np.float32)
    with pytest.raises(
        ValueError,
        match="20 clusters .* only 12 were sampled; .*"
        "--fraction or --max_frames, or lower --n_clusters",
    ):
        fit(x, 20)


def test_faiss_greedy_init_beats_faiss_random_init_on_separated_clusters():
    """faiss's random init merges far-apart clusters (seed 0 here); ours does not."""
    feats, _, _ = gaussian_mixture(seed=1)
    x = np.concatenate(list(feats.values()))
    _, ours = fit_faiss(x, NUM_CLUSTERS, seed=0)
    _, random = fit_faiss(x, NUM_CLUSTERS, seed=0, init="random")
    assert ours / len(x) < 1.2 * DIM < random / len(x)


def test_greedy_kmeans_plusplus_puts_one_centre_in_each_separated_cluster():
    feats, labels, _ = gaussian_mixture(seed=2)
    x = np.concatenate(list(feats.values()))
    truth = np.concatenate(list(labels.values()))
    centres = greedy_kmeans_plusplus(x, NUM_CLUSTERS, init_size=len(x), seed=0)
    rows = [int(np.flatnonzero((x == c).all(axis=1))[0]) for c in centres]
    assert sorted(truth[rows]) == list(range(NUM_CLUSTERS))  # rows of x, one each


def test_greedy_kmeans_plusplus_is_seeded_and_samples_init_size_rows():
    x = np.random.default_rng(0).normal(size=(5000, 3)).astype(np.float32)
    first = greedy_kmeans_plusplus(x, 10, init_size=100, seed=4)
    np.testing.assert_array_equal(first, greedy_kmeans_plusplus(x, 10, 100, 4))
    assert not np.array_equal(first, greedy_kmeans_plusplus(x, 10, 100, 5))
    # init_size is raised to 3 k: 10 clusters draw from at least 30 rows
    assert len(np.unique(greedy_kmeans_plusplus(x, 10, 5, 0), axis=0)) == 10


def test_greedy_kmeans_plusplus_survives_duplicate_frames():
    x = np.zeros((50, 4), dtype=np.float32)  # potential 0 after the first centre
    assert greedy_kmeans_plusplus(x, 3, 50, 0).shape == (3, 4)


def test_the_init_sample_shrinks_with_the_dimension():
    assert default_init_size(39) == 200_000 and default_init_size(768) == 60_000


def lloyd_iterations(caplog, **options) -> Tuple[int, float]:
    """Iterations of one fit_faiss run (from its debug log) and its inertia."""
    x = np.random.default_rng(5).normal(size=(4000, 6)).astype(np.float32)
    caplog.clear()
    with caplog.at_level("DEBUG"):
        _, inertia = fit_faiss(x, 16, niter=40, seed=0, **options)
    stops = [r.getMessage() for r in caplog.records if "converged" in r.getMessage()]
    return (int(stops[0].split()[-2]) if stops else 40), inertia


def test_a_loose_tolerance_stops_lloyd_earlier(caplog):
    tight_iterations, tight = lloyd_iterations(caplog, tol=0.0)
    loose_iterations, loose = lloyd_iterations(caplog, tol=0.05)
    assert loose_iterations < tight_iterations
    assert tight <= loose


def test_nredo_keeps_the_lowest_inertia():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    runs = [fit_faiss(x, 20, niter=5, seed=s, init="random")[1] for s in (7, 8, 9)]
    _, best = fit_faiss(x, 20, niter=5, nredo=3, seed=7, init="random")
    assert best == min(runs)


def test_faiss_subsamples_to_256_per_centroid_unless_told_to_use_every_frame():
    """The default (faiss's 256 per centroid) subsamples 3000 points to 512."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3000, 4)).astype(np.float32)
    default, _ = fit_faiss(x, 2, niter=10, seed=0)
    subsampled, _ = fit_faiss(x, 2, niter=10, seed=0, max_points_per_centroid=256)
    every, _ = fit_faiss(x, 2, niter=10, seed=0, max_points_per_centroid=None)
    explicit, _ = fit_faiss(x, 2, niter=10, seed=0, max_points_per_centroid=1500)
    np.testing.assert_array_equal(default, subsampled)  # faiss's 256, seeded
    np.testing.assert_array_equal(every, explicit)  # None: all 3000 frames
    assert not np.array_equal(every, subsampled)


# ---------------------------------------------------------------- model
def test_assign_equals_brute_force_argmin_even_on_near_ties():
    rng = np.random.default_rng(0)
    centroids = (rng.normal(size=(50, 64)) * 3 + 40).astype(np.float32)
    x = (rng.normal(size=(3000, 64)) * 3 + 40).astype(np.float32)
    # points a hair from the midpoint of two centroids: float32 scores cannot
    # tell which is nearer, the float64 pass can
    a, b = rng.integers(0, 50, size=(2, 400))
    b = np.where(a == b, (b + 1) % 50, b)
    offset = rng.choice([-1e-6, 1e-6], size=(400, 1))
    middle = (centroids[a] + centroids[b]) / 2 + offset * (centroids[a] - centroids[b])
    x = np.concatenate([x, middle.astype(np.float32)])
    model = KMeansModel(centroids)
    np.testing.assert_array_equal(model.assign(x), brute_force(x, centroids))
    plain = (centroids**2).sum(1) - 2 * x @ centroids.T  # float32, no second pass
    assert (plain.argmin(1) != brute_force(x, centroids)).any()  # ties are real


def test_assign_handles_one_cluster_and_zero_frames():
    model = KMeansModel(np.ones((1, 3), dtype=np.float32))
    np.testing.assert_array_equal(model.assign(np.zeros((4, 3), np.float32)), 0)
    assert model.assign(np.zeros((0, 3), np.float32)).shape == (0,)


def test_assign_refuses_another_dimension_naming_both():
    model = KMeansModel(np.zeros((4, 39), np.float32), source="exp/km")
    with pytest.raises(
        ValueError,
        match=r"feats of u1 have shape \(5, 768\) but .*" "exp/km have dimension 39",
    ):
        model.assign(np.zeros((5, 768), np.float32), name="feats of u1")


def test_saved_model_loads_identical(tmp_path):
    rng = np.random.default_rng(2)
    centroids = rng.normal(size=(10, DIM)).astype(np.float32)
    meta = {"feature_type": "mfcc", "layer": None, "seed": 4, "inertia": 1.5}
    KMeansModel(centroids, meta).save(tmp_path / "km")
    loaded = KMeansModel.load(tmp_path / "km")
    np.testing.assert_array_equal(loaded.centroids, centroids)
    assert loaded.metadata == {**meta, "n_clusters": 10, "dim": DIM}
    x = rng.normal(size=(200, DIM)).astype(np.float32)
    np.testing.assert_array_equal(loaded.assign(x), brute_force(x, centroids))
    assert sorted(p.name for p in (tmp_path / "km").iterdir()) == [
        "centroids.npy",
        "kmeans.yaml",
    ]  # no temporary file left behind


@pytest.mark.parametrize("missing", ["centroids.npy", "kmeans.yaml"])
def test_load_names_the_missing_file(tmp_path, missing):
    KMeansModel(np.zeros((3, 2), np.float32)).save(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} has no {missing}"):
        KMeansModel.load(tmp_path)


def test_load_refuses_a_yaml_that_disagrees_with_the_centroids(tmp_path):
    KMeansModel(np.zeros((3, 2), np.float32)).save(tmp_path)
    text = (
        (tmp_path / "kmeans.yaml").read_text().replace("n_clusters: 3", "n_clusters: 5")
    )
    (tmp_path / "kmeans.yaml").write_text(text)
    with pytest.raises(ValueError, match="n_clusters 5 but centroids.npy has 3"):
        KMeansModel.load(tmp_path)


# ---------------------------------------------------------------- applying
@pytest.mark.parametrize("batch_frames", [1, 37, 500, 10**7])
def test_streaming_apply_equals_assigning_everything_at_once(mixture, batch_frames):
    scp, feats, _ = mixture
    rng = np.random.default_rng(0)
    model = KMeansModel(rng.normal(size=(9, DIM)).astype(np.float32) * 30)
    streamed = list(apply_kmeans(model, scp, batch_frames=batch_frames))
    assert [utt for utt, _ in streamed] == list(feats)  # scp order
    at_once = model.assign(np.concatenate(list(feats.values())))
    np.testing.assert_array_equal(np.concatenate([lab for _, lab in streamed]), at_once)
    for utt, labels in streamed:
        assert labels.shape == (len(feats[utt]),) and labels.dtype == np.int64


def test_apply_keeps_empty_utterances(tmp_path):
    feats = {"a": np.ones((3, 2), np.float32), "b": np.zeros((0, 2), np.float32)}
    scp = write_scp(tmp_path, feats)
    model = KMeansModel(np.array([[0, 0], [1, 1]], np.float32))
    result = dict(apply_kmeans(model, scp))
    np.testing.assert_array_equal(result["a"], [1, 1, 1])
    assert result["b"].shape == (0,)


def test_apply_refuses_features_of_another_dimension_naming_the_utterance(mixture):
    scp, _, _ = mixture
    model = KMeansModel(np.zeros((3, DIM + 2), np.float32), source="exp/km_dir")
    with pytest.raises(
        ValueError,
        match=f"utterance 'utt00' in {scp} have shape "
        r"\(\d+, 8\) but .*exp/km_dir have dimension 10",
    ):
        list(apply_kmeans(model, scp))


# ---------------------------------------------------------------- faiss import
def coretype_after_import(env_value=None) -> str:
    """OPENBLAS_CORETYPE in a fresh interpreter after import_faiss()."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if env_value is not None:
        env["OPENBLAS_CORETYPE"] = env_value
    code = (
        "import os; from espnet2.ssl.targets.kmeans import import_faiss; "
        "import_faiss(); print(os.environ.get('OPENBLAS_CORETYPE'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[4],
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


def test_faiss_gets_openblas_skylakex_kernels_only_on_avx512_cpus():
    expected = "SkylakeX" if SKYLAKEX_CPU_FLAGS <= cpu_flags() else "None"
    assert coretype_after_import() == expected


def test_a_users_openblas_coretype_is_kept():
    assert coretype_after_import("Haswell") == "Haswell"
