"""espnet2/ssl/targets/labels.py: one label per SSL CNN frame, checks, token list."""

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from espnet2.ssl.frame_geometry import (
    WAV2VEC2_CNN_SHAPES,
    cnn_frame_count,
    kaldi_frame_count,
)
from espnet2.ssl.targets.labels import (
    align_labels,
    atomic_path,
    check_labels,
    label_step,
    read_utt2num_samples,
    utt2num_samples_from_wav_scp,
    write_labels,
    write_token_list,
)
from espnet2.text.token_id_converter import TokenIDConverter

REPO_ROOT = Path(__file__).resolve().parents[4]
TINY_CONFIG = (
    REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml"
)
BOUNDARIES = [399, 400, 401, 719, 720, 721, 1039, 1040, 16000, 16319, 16320, 16640]


# ---------------------------------------------------------------- frame rates
@pytest.mark.parametrize("num_samples", BOUNDARIES)
def test_every_second_100hz_frame_gives_exactly_the_cnn_frame_count(num_samples):
    mfcc_frames = kaldi_frame_count(num_samples)
    labels = np.arange(mfcc_frames)
    expected = cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
    aligned, diff = align_labels(labels, step=2, num_frames=expected)
    assert diff == 0
    np.testing.assert_array_equal(aligned, labels[::2])  # frame 2t for CNN frame t


@pytest.mark.parametrize("num_samples", BOUNDARIES)
def test_50hz_features_give_the_cnn_frame_count_unchanged(num_samples):
    frames = cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
    labels = np.arange(frames)
    aligned, diff = align_labels(labels, step=1, num_frames=frames)
    assert diff == 0
    np.testing.assert_array_equal(aligned, labels)


def test_mfcc_frame_2t_is_computed_from_the_cnn_frame_t_window():
    """Kaldi frame 2t spans samples [320 t, 320 t + 400): the CNN frame t's field."""
    wave = torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    options = dict(sample_frequency=16000, dither=0.0)
    whole = torchaudio.compliance.kaldi.mfcc(wave, **options)  # (T, 13)
    for t in (0, 1, 17, 48):
        window = wave[:, 320 * t : 320 * t + 400]
        alone = torchaudio.compliance.kaldi.mfcc(window, **options)  # (1, 13)
        torch.testing.assert_close(whole[2 * t], alone[0], rtol=1e-4, atol=1e-4)


def test_label_step_is_the_ratio_of_frame_rates():
    assert label_step(100.0, WAV2VEC2_CNN_SHAPES) == 2
    assert label_step(50.0, WAV2VEC2_CNN_SHAPES) == 1
    with pytest.raises(ValueError, match="75.0 Hz is not a whole multiple .* 50 Hz"):
        label_step(75.0, WAV2VEC2_CNN_SHAPES)
    with pytest.raises(ValueError, match="not a whole multiple"):
        label_step(25.0, WAV2VEC2_CNN_SHAPES)


# ---------------------------------------------------------------- tolerance
def test_tolerance_trims_or_pads_by_repeating_the_last_label():
    labels = np.array([5, 6, 7, 8, 9, 1])
    assert align_labels(labels, 1, 6) == (pytest.approx(labels), 0)
    trimmed, diff = align_labels(labels, 1, 4, tolerance=2)
    assert diff == 2 and trimmed.tolist() == [5, 6, 7, 8]
    padded, diff = align_labels(labels, 1, 8, tolerance=2)
    assert diff == -2 and padded.tolist() == [5, 6, 7, 8, 9, 1, 1, 1]
    assert align_labels(labels, 1, 9, tolerance=2) == (None, -3)
    assert align_labels(labels, 1, 5) == (None, 1)  # tolerance 0 by default
    assert align_labels(np.zeros(0, int), 1, 1, tolerance=2) == (None, -1)


# ---------------------------------------------------------------- writing
def mfcc_like_labels(utt2num_samples):
    """Labels at 100 Hz (one per Kaldi frame) per utterance, seeded."""
    rng = np.random.default_rng(0)
    return {
        utt: rng.integers(0, 50, size=kaldi_frame_count(n))
        for utt, n in utt2num_samples.items()
    }


def read_back(path):
    with open(path) as f:
        return {line.split()[0]: [int(t) for t in line.split()[1:]] for line in f}


def test_written_labels_have_one_entry_per_cnn_frame(tmp_path):
    utt2num_samples = {f"u{n}": n for n in BOUNDARIES}
    labels = mfcc_like_labels(utt2num_samples)
    stats = write_labels(
        labels.items(), tmp_path / "text", utt2num_samples, WAV2VEC2_CNN_SHAPES, 2
    )
    written = read_back(tmp_path / "text")
    assert list(written) == list(utt2num_samples)
    for utt, n in utt2num_samples.items():
        assert len(written[utt]) == cnn_frame_count(n, WAV2VEC2_CNN_SHAPES)
        assert written[utt] == labels[utt][::2].tolist()
    assert stats["utterances"] == len(BOUNDARIES) and stats["adjusted"] == 0
    report = check_labels(tmp_path / "text", utt2num_samples, n_clusters=50)
    assert report.ok and report.utterances == len(BOUNDARIES)


def test_wrong_lengths_are_listed_with_the_difference_and_nothing_is_written(
    tmp_path,
):
    utt2num_samples = {"a": 16000, "b": 16320, "c": 32000}
    labels = mfcc_like_labels(utt2num_samples)
    labels["b"] = labels["b"][:-6]  # 3 CNN frames short
    labels["c"] = np.concatenate([labels["c"], [1, 1]])  # 1 frame long
    (tmp_path / "text").write_text("old complete file\n")
    with pytest.raises(
        ValueError,
        match=r"2 utterances .* b \(47 vs 50, -3\), "
        r"c \(100 vs 99, \+1\).*--tolerance",
    ):
        write_labels(
            labels.items(), tmp_path / "text", utt2num_samples, WAV2VEC2_CNN_SHAPES, 2
        )
    assert (tmp_path / "text").read_text() == "old complete file\n"
    assert [p.name for p in tmp_path.iterdir()] == ["text"]  # no temporary left
    stats = write_labels(
        labels.items(),
        tmp_path / "text",
        utt2num_samples,
        WAV2VEC2_CNN_SHAPES,
        2,
        tolerance=3,
    )
    assert stats["adjusted"] == 2
    assert check_labels(tmp_path / "text", utt2num_samples).ok


def test_missing_features_for_an_utterance_with_audio_is_an_error(tmp_path):
    utt2num_samples = {"a": 16000, "b": 8000, "c": 4000}
    labels = mfcc_like_labels(utt2num_samples)
    del labels["b"]
    with pytest.raises(
        ValueError, match="1 utterances of the audio list got no " "features: b; dump"
    ):
        write_labels(
            labels.items(), tmp_path / "text", utt2num_samples, WAV2VEC2_CNN_SHAPES, 2
        )
    assert not (tmp_path / "text").exists()


def test_features_without_audio_are_skipped(tmp_path):
    utt2num_samples = {"a": 16000}
    labels = mfcc_like_labels({"a": 16000, "z": 8000})
    stats = write_labels(
        labels.items(), tmp_path / "text", utt2num_samples, WAV2VEC2_CNN_SHAPES, 2
    )
    assert stats["skipped"] == 1 and list(read_back(tmp_path / "text")) == ["a"]


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


# ---------------------------------------------------------------- checking
def test_check_reports_every_kind_of_problem(tmp_path):
    utt2num_samples = {"a": 16000, "b": 16000, "c": 16000, "missing": 16000}
    lines = [
        "a " + " ".join(["3"] * 49),
        "b " + " ".join(["3"] * 47),
        "c " + " ".join(["3"] * 48 + ["77"]),
        "extra 1 2",
    ]
    (tmp_path / "text").write_text("\n".join(lines) + "\n")
    report = check_labels(tmp_path / "text", utt2num_samples, n_clusters=50)
    assert not report.ok
    assert report.mismatches == [("b", 47, 49)]
    assert report.missing == ["missing"] and report.extra == ["extra"]
    assert report.bad_tokens == ["c: '77' is not a cluster id 0..49"]
    assert "length b: 47 labels, 49 CNN frames (-2)" in report.lines()


# ---------------------------------------------------------------- inputs
def test_utt2num_samples_comes_from_the_audio_headers(tmp_path):
    lengths = {"a": 400, "b": 16319}
    lines = []
    for utt, n in lengths.items():
        soundfile.write(tmp_path / f"{utt}.flac", np.zeros(n), 16000)
        lines.append(f"{utt} {tmp_path / utt}.flac\n")
    (tmp_path / "wav.scp").write_text("".join(lines))
    assert utt2num_samples_from_wav_scp(tmp_path / "wav.scp") == lengths
    lines = "".join(f"{utt} {n}\n" for utt, n in lengths.items())
    (tmp_path / "utt2num_samples").write_text(lines)
    assert read_utt2num_samples(tmp_path / "utt2num_samples") == lengths
    with pytest.raises(ValueError, match="16000 Hz audio, the SSL model expects"):
        utt2num_samples_from_wav_scp(tmp_path / "wav.scp", sample_rate=8000)
    (tmp_path / "b.flac").unlink()
    with pytest.raises(ValueError, match="wav.scp:2: utterance 'b': cannot read"):
        utt2num_samples_from_wav_scp(tmp_path / "wav.scp")


def test_token_index_is_the_cluster_id_in_espnet(tmp_path):
    write_token_list(tmp_path / "tokens.txt", 5)
    tokens = (tmp_path / "tokens.txt").read_text().splitlines()
    assert tokens == ["0", "1", "2", "3", "4", "<unk>"]
    converter = TokenIDConverter(str(tmp_path / "tokens.txt"), unk_symbol="<unk>")
    assert converter.tokens2ids(["3", "0", "4", "9"]) == [3, 0, 4, 5]
