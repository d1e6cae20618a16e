"""Tests of the cluster-quality measures (espnet2/ssl/targets/quality.py)."""

import logging
import math
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import pytest

from espnet2.fileio.kaldi_data_dir import DataDirError
from espnet2.ssl.targets.quality import (
    cluster_quality,
    joint_counts,
    label_quality,
    quality_from_counts,
    read_labels,
    read_num_samples,
)

# Two utterances of 0.1 s (1600 samples: 4 frames of 20 ms) and 0.12 s (5 frames).
CTM = [
    "u1 1 0.000 0.050 a",  # centres 12.5, 32.5 ms
    "u1 1 0.050 0.050 'b",  # centres 52.5, 72.5 ms
    "u2 1 0.020 0.040 c",  # frame 0 (12.5 ms) before it: silence
    "u2 1 0.060 0.060 _:",  # pause: silence
]
UTT2DUR = ["u1 0.1000000", "u2 0.1200000"]
REFERENCE = {"u1": ["a", "a", "b", "b"], "u2": ["sil", "c", "c", "sil", "sil"]}


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_labels(path: Path, labels: Dict[str, Sequence[int]]) -> Path:
    lines = [" ".join([utt] + [str(x) for x in seq]) for utt, seq in labels.items()]
    return write_lines(path, lines)


@pytest.fixture
def files(tmp_path) -> Dict[str, Path]:
    return {
        "ctm": write_lines(tmp_path / "phones.ctm", CTM),
        "utt2dur": write_lines(tmp_path / "utt2dur", UTT2DUR),
        "utt2num_samples": write_lines(
            tmp_path / "utt2num_samples", ["u1 1600", "u2 1920"]
        ),
    }


def test_perfect_labels_score_one_whatever_the_cluster_ids():
    phones = ["a", "a", "b", "c", "c", "c"]
    quality = cluster_quality([7, 7, -3, 42, 42, 42], phones)
    assert quality.phone_purity == quality.cluster_purity == quality.pnmi == 1.0
    assert (quality.num_frames, quality.num_clusters_used, quality.num_phones) == (
        6,
        3,
        3,
    )


def test_labels_independent_of_the_phones_score_pnmi_zero():
    # Every (phone, cluster) pair equally often: p(y, z) = p(y) p(z) exactly.
    phones = ["a", "a", "b", "b"] * 3
    clusters = [0, 1, 0, 1] * 3
    quality = cluster_quality(clusters, phones)
    assert quality.pnmi == pytest.approx(0.0, abs=1e-12)
    assert quality.phone_purity == quality.cluster_purity == 0.5


def test_random_labels_score_pnmi_near_zero():
    rng = np.random.default_rng(0)
    phones = rng.integers(0, 10, 20000)
    quality = cluster_quality(rng.integers(0, 20, 20000), phones)
    assert 0 <= quality.pnmi < 0.01
    assert quality.cluster_purity < 0.1 < quality.phone_purity < 0.15


def test_a_cluster_merging_two_phones_scores_as_computed_by_hand():
    # p(a, 0) = 1/2, p(b, 0) = 1/4, p(c, 1) = 1/4
    quality = cluster_quality([0, 0, 0, 1], ["a", "a", "b", "c"])
    assert quality.phone_purity == 0.75  # 1/2 (cluster 0 is a) + 1/4 (cluster 1)
    assert quality.cluster_purity == 1.0  # no phone is split
    # H(y) = 1.5 bits; H(y|z) = 3/4 * H(1/3, 2/3) = 3/4 (log2 3 - 2/3) bits
    assert quality.pnmi == pytest.approx(4 / 3 - math.log2(3) / 2, rel=1e-12)


def test_splitting_a_phone_keeps_pnmi_one_and_lowers_cluster_purity():
    quality = cluster_quality([0, 1, 2, 2], ["a", "a", "b", "b"])
    assert quality.pnmi == 1.0 and quality.phone_purity == 1.0
    assert quality.cluster_purity == 0.75  # 1/4 (a's best cluster) + 1/2 (b)


def test_scores_do_not_depend_on_the_names_of_clusters_or_phones():
    rng = np.random.default_rng(1)
    phones = rng.integers(0, 8, 5000)
    clusters = (phones * 3 + rng.integers(0, 4, 5000)) % 17  # related, not equal
    quality = cluster_quality(clusters, phones)
    renamed = cluster_quality(rng.permutation(17)[clusters], [f"p{y}" for y in phones])
    assert 0.1 < quality.pnmi < 0.9
    for field in ("phone_purity", "cluster_purity", "pnmi"):
        assert getattr(renamed, field) == pytest.approx(getattr(quality, field))


def test_quality_from_counts_reads_rows_as_phones_and_columns_as_clusters():
    counts = joint_counts([5, 5, 9], ["x", "y", "y"])[0]
    assert counts.tolist() == [[1, 0], [1, 1]]  # rows x, y; columns 5, 9
    quality = quality_from_counts(counts)
    assert quality.phone_purity == pytest.approx(2 / 3)  # cluster 5: 1/2, 9: 1
    assert quality.cluster_purity == pytest.approx(2 / 3)  # x: 1, y: 1/2


def test_one_phone_only_leaves_pnmi_undefined():
    assert math.isnan(cluster_quality([0, 1, 2], ["a", "a", "a"]).pnmi)


@pytest.mark.parametrize(
    "clusters, phones, message",
    [([0, 1], ["a"], "2 cluster labels but 1 phones"), ([], [], "no frames")],
)
def test_cluster_quality_rejects_unpaired_or_empty_input(clusters, phones, message):
    with pytest.raises(ValueError, match=message):
        cluster_quality(clusters, phones)


def test_label_quality_matches_the_hand_made_reference(files, tmp_path):
    ids = {"a": 0, "b": 1, "c": 2, "sil": 3}
    perfect = {utt: [ids[p] for p in phones] for utt, phones in REFERENCE.items()}
    labels = write_labels(tmp_path / "labels", perfect)
    for lengths in ({"utt2dur": files["utt2dur"]}, {}):
        quality = label_quality(labels, files["ctm"], **lengths)
        assert (quality.pnmi, quality.phone_purity, quality.num_frames) == (1, 1, 9)
        assert quality.num_phones == 4


def test_label_quality_keeps_stress_and_pauses_apart_when_asked(files, tmp_path):
    labels = write_labels(tmp_path / "labels", {"u1": [0] * 4, "u2": [0] * 5})
    merged = label_quality(labels, files["ctm"], files["utt2dur"])
    kept = label_quality(
        labels, files["ctm"], files["utt2dur"], merge_stress=False, silence="SIL"
    )
    apart = label_quality(
        labels, files["ctm"], files["utt2dur"], pauses_as_silence=False
    )
    assert merged.num_phones == kept.num_phones == 4  # a b c sil / a 'b c SIL
    assert apart.num_phones == 5  # a b c sil _:


def test_label_quality_accepts_one_frame_more_or_less(files, tmp_path):
    short = {"u1": [0, 0, 1], "u2": [3, 2, 2, 3, 3, 3]}  # 3 of 4, 6 of 5 frames
    quality = label_quality(
        write_labels(tmp_path / "labels", short), files["ctm"], files["utt2dur"]
    )
    assert quality.num_frames == 3 + 5 and quality.pnmi == 1.0


@pytest.mark.parametrize("lengths", ["utt2dur", "utt2num_samples"])
def test_label_quality_names_the_utterance_whose_label_count_is_wrong(
    files, tmp_path, lengths
):
    # u2 at 100 Hz: 10 labels for 5 frames
    labels = write_labels(tmp_path / "labels", {"u1": [0] * 4, "u2": [0] * 10})
    with pytest.raises(
        DataDirError, match=f"10 labels, but \\S*{lengths} gives"
    ) as info:
        label_quality(labels, files["ctm"], **{lengths: files[lengths]})
    assert f"{labels}: utterance 'u2': " in str(info.value)
    assert "50 Hz" in str(info.value)


def test_label_quality_without_lengths_rejects_labels_shorter_than_the_ctm(
    files, tmp_path
):
    labels = write_labels(tmp_path / "labels", {"u1": [0], "u2": [0] * 5})
    with pytest.raises(DataDirError, match="1 labels, but the CTM's last segment"):
        label_quality(labels, files["ctm"])


@pytest.mark.parametrize(
    "labels, missing_from",
    [
        ({"u1": [0] * 4}, "labels"),
        ({"u1": [0] * 4, "u2": [0] * 5, "u3": [0] * 5}, "phones.ctm"),
    ],
)
def test_label_quality_rejects_utterances_in_one_file_only(
    files, tmp_path, labels, missing_from
):
    path = write_labels(tmp_path / "labels", labels)
    pattern = f"1 utterance\\(s\\) missing from \\S*{missing_from}: "
    with pytest.raises(DataDirError, match=pattern) as info:
        label_quality(path, files["ctm"], files["utt2dur"])
    assert "--common_only true" in str(info.value)


def test_common_only_scores_the_shared_utterances_and_logs_counts(
    files, tmp_path, caplog
):
    path = write_labels(tmp_path / "labels", {"u2": [3, 2, 2, 3, 3], "u9": [1]})
    with caplog.at_level(logging.INFO):
        quality = label_quality(path, files["ctm"], files["utt2dur"], common_only=True)
    assert quality.num_frames == 5 and quality.pnmi == 1.0
    assert "scoring the 1 utterances" in caplog.text
    assert "skipping 1 only in the labels and 1 only in the CTM" in caplog.text


def test_a_missing_duration_names_the_lengths_file(files, tmp_path):
    write_lines(files["utt2dur"], ["u1 0.1"])
    labels = write_labels(tmp_path / "labels", {"u1": [0] * 4, "u2": [0] * 5})
    with pytest.raises(DataDirError, match="utt2dur: utterance 'u2': utterance miss"):
        label_quality(labels, files["ctm"], files["utt2dur"])


def test_read_labels_names_file_and_line_of_a_bad_label(tmp_path):
    path = write_lines(tmp_path / "labels", ["u1 1 2 3", "u2 4 x 6"])
    with pytest.raises(DataDirError, match="not an integer") as info:
        read_labels(path)
    assert str(info.value).startswith(f"{path}:2: utterance 'u2': ")
    write_lines(path, ["u1 1", "u1 2"])
    with pytest.raises(DataDirError, match="repeated utterance"):
        read_labels(path)


def test_read_num_samples_prefers_samples_and_checks_values(files):
    assert read_num_samples(files["utt2dur"], files["utt2num_samples"]) == {
        "u1": 1600,
        "u2": 1920,
    }
    assert read_num_samples(files["utt2dur"], sample_rate=8000) == {
        "u1": 800,
        "u2": 960,
    }
    write_lines(files["utt2dur"], ["u1 0.1", "u2 -1"])
    with pytest.raises(DataDirError, match="bad value '-1'"):
        read_num_samples(files["utt2dur"])
