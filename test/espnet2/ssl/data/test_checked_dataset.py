"""Tests for espnet2/ssl/data/checked_dataset.py (``--bad_utterances``) through SSLTask.

A fixture writes a data dir of real audio files and frame labels; each case breaks
one utterance in one way, and the dataset ESPnet's iterator would use
(``SSLTask.build_dataset``) must reject it naming the utterance, the data file and
the fix, or, with ``skip``, leave out exactly that one and count it.
"""

import logging
from pathlib import Path
from typing import List

import numpy as np
import pytest
import soundfile
import torch

from espnet2.ssl.data.checked_dataset import BadUtteranceError, CheckedDataset
from espnet2.ssl.data.collate import SSLCollateFn
from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count
from espnet2.tasks.abs_task import IteratorOptions
from espnet2.tasks.ssl import SSLTask

UTTS = ("spk1-u1", "spk1-u2", "spk1-u3", "spk1-u4")
SECONDS = (0.5, 0.7, 0.6, 0.8)
BAD = "spk1-u2"
FS = 16000


def write_wav(path: Path, seconds: float, rate: int = FS, channels: int = 1, **kw):
    rng = np.random.default_rng(len(str(path)))
    wave = 0.1 * rng.standard_normal((int(seconds * rate), channels))  # (S, C)
    wave = wave[:, 0] if channels == 1 else wave
    soundfile.write(path, wave.astype(np.float32), rate, **kw)


def label_line(utt: str, num_labels: int) -> str:
    return " ".join([utt] + [str(i % 10) for i in range(num_labels)])


def frames(seconds: float) -> int:
    return cnn_frame_count(int(seconds * FS), WAV2VEC2_CNN_SHAPES)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """wav.scp (16 kHz mono PCM WAV), labels (one per CNN frame), tokens 0..9."""
    (tmp_path / "audio").mkdir()
    scp, labels = [], []
    for utt, seconds in zip(UTTS, SECONDS):
        write_wav(tmp_path / "audio" / f"{utt}.wav", seconds, subtype="PCM_16")
        scp.append(f"{utt} {tmp_path / 'audio' / utt}.wav")
        labels.append(label_line(utt, frames(seconds)))
    (tmp_path / "wav.scp").write_text("\n".join(scp) + "\n")
    (tmp_path / "labels").write_text("\n".join(labels) + "\n")
    (tmp_path / "tokens.txt").write_text(
        "".join(f"{i}\n" for i in range(10)) + "<unk>\n"
    )
    return tmp_path


def bad_audio(path: Path) -> Path:
    return path / "audio" / f"{BAD}.wav"


def set_labels(path: Path, line):
    """Replace the bad utterance's label line (None: delete it)."""
    lines = (path / "labels").read_text().splitlines()
    lines = [line if x.startswith(BAD + " ") else x for x in lines]
    (path / "labels").write_text("\n".join(x for x in lines if x) + "\n")


def _truncate(path):
    data = bad_audio(path).read_bytes()
    bad_audio(path).write_bytes(data[: len(data) // 2])


def _truncate_flac(path):
    """A FLAC (under the .wav name: libsndfile reads by content) cut at 60 %: its
    header is whole, so only decoding finds it."""
    write_wav(bad_audio(path), 0.7, format="FLAC", subtype="PCM_16")
    data = bad_audio(path).read_bytes()
    bad_audio(path).write_bytes(data[: int(0.6 * len(data))])


# (name, damage, data file named, problem words, fix words)
FAULTS = [
    ("truncated", _truncate, "wav.scp", "truncated", "re-create the file"),
    ("truncated flac", _truncate_flac, "wav.scp", "cannot decode", "re-create the"),
    (
        "unreadable",
        lambda p: bad_audio(p).write_bytes(b"not audio" * 100),
        "wav.scp",
        "cannot read audio file",
        "re-create the file",
    ),
    (
        "zero length",
        lambda p: write_wav(bad_audio(p), 0.0, subtype="PCM_16"),
        "wav.scp",
        "no samples (zero length)",
        "re-create the file",
    ),
    (
        "8 kHz",
        lambda p: write_wav(bad_audio(p), 0.7, rate=8000, subtype="PCM_16"),
        "wav.scp",
        "sample rate is 8000 Hz, the model's is 16000 Hz",
        "resample the audio to 16000 Hz",
    ),
    (
        "stereo",
        lambda p: write_wav(bad_audio(p), 0.7, channels=2, subtype="PCM_16"),
        "wav.scp",
        "2 channels, expected 1 (mono)",
        "downmix to mono",
    ),
    (
        "NaN samples",
        lambda p: soundfile.write(
            bad_audio(p), np.full(11200, np.nan, np.float32), FS, subtype="FLOAT"
        ),
        "wav.scp",
        "11200 samples that are NaN or infinite, the first at sample 0",
        "re-create the file from its source",
    ),
    (
        "labels too short",
        lambda p: set_labels(p, label_line(BAD, frames(0.7) - 3)),
        "labels",
        f"has {frames(0.7) - 3} labels but its 11200 samples give {frames(0.7)} CNN "
        "frames (-3)",
        "ssl_kmeans apply",
    ),
    (
        "labels too long",
        lambda p: set_labels(p, label_line(BAD, frames(0.7) + 2)),
        "labels",
        f"give {frames(0.7)} CNN frames (+2)",
        "ssl_kmeans apply",
    ),
    (
        "missing label line",
        lambda p: set_labels(p, None),
        "labels",
        "has audio in",
        "make labels for every utterance",
    ),
]
FAULT_IDS = [case[0] for case in FAULTS]
FAULT_CASES = [case[1:] for case in FAULTS]


def build(data_dir: Path, *options: str, train: bool = True) -> CheckedDataset:
    """The dataset SSLTask builds for ESPnet's sequence iterator."""
    args = SSLTask.get_parser().parse_args(
        ["--token_list", str(data_dir / "tokens.txt"), "--token_type", "word"]
        + list(options)
    )
    files = [(str(data_dir / "wav.scp"), "speech", "sound")]
    files.append((str(data_dir / "labels"), "text", "text"))
    options = IteratorOptions(
        preprocess_fn=SSLTask.build_preprocess_fn(args, train=train),
        collate_fn=None, data_path_and_name_and_type=files, shape_files=[],
        batch_size=4, batch_bins=0, batch_type="unsorted", max_cache_size=0.0,
        max_cache_fd=0, allow_multi_rates=False, distributed=False,
        num_batches=None, num_iters_per_epoch=None, train=train,
    )  # fmt: skip
    dataset = SSLTask.build_dataset(args, options, set(UTTS))
    assert isinstance(dataset, CheckedDataset)
    return dataset


def test_good_examples_load_as_espnet_loads_them(data_dir):
    dataset = build(data_dir)
    for utt, seconds in zip(UTTS, SECONDS):
        uid, data = dataset[utt]
        assert uid == utt and data["speech"].shape == (int(seconds * FS),)
        assert data["text"].shape == (frames(seconds),)
    assert dataset.check_before_training() == []


@pytest.mark.parametrize("damage, data_file, problem, fix", FAULT_CASES, ids=FAULT_IDS)
def test_a_bad_example_is_an_error_naming_the_utterance_the_file_and_the_fix(
    data_dir, damage, data_file, problem, fix
):
    damage(data_dir)
    dataset = build(data_dir)
    with pytest.raises(BadUtteranceError) as err:
        dataset[BAD]
    message = str(err.value)
    assert message.startswith(f"{data_dir / data_file}: utterance '{BAD}': ")
    assert problem in message and "Fix: " in message and fix in err.value.fix
    assert "--bad_utterances skip" in message
    if data_file == "wav.scp":
        assert f"file '{bad_audio(data_dir)}'" in message
    for utt in UTTS:
        if utt != BAD:
            assert dataset[utt][1]["speech"].size > 0


def load_all(dataset: CheckedDataset) -> List:
    return [dataset[utt] for utt in UTTS]


@pytest.mark.parametrize("damage, data_file, problem, fix", FAULT_CASES, ids=FAULT_IDS)
def test_skip_leaves_out_exactly_the_bad_example_and_counts_it(
    data_dir, damage, data_file, problem, fix, caplog
):
    damage(data_dir)
    dataset = build(data_dir, "--bad_utterances", "skip")
    with caplog.at_level(logging.WARNING):
        batch = load_all(dataset)
        batch += load_all(dataset)  # a second epoch skips it again
    assert [uid for uid, data in batch if not data] == [BAD, BAD]
    assert dataset.skipped.value == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and problem in warnings[0]
    assert "training skips so far: 1" in warnings[0]
    assert "training skips so far: 2" in warnings[1]
    ids, tensors = SSLCollateFn(int_pad_value=-1)(batch[:4])
    assert ids == [utt for utt in UTTS if utt != BAD]
    assert tensors["speech"].shape[0] == 3 and tensors["text"].shape[0] == 3


def test_the_check_before_training_rejects_every_bad_header_and_label_at_once(
    data_dir, caplog
):
    """NaN samples need decoding, so only the header and label faults are found."""
    _truncate(data_dir)
    lines = (data_dir / "labels").read_text().splitlines()
    (data_dir / "labels").write_text("\n".join(lines[:-1]) + "\n")  # no spk1-u4
    dataset = build(data_dir)
    with caplog.at_level(logging.ERROR), pytest.raises(BadUtteranceError) as err:
        dataset.check_before_training()
    assert f"utterance '{BAD}': file is truncated" in str(err.value)
    assert "1 more bad training utterances are logged above: spk1-u4" in str(err.value)
    assert any("'spk1-u4': has audio in" in r.getMessage() for r in caplog.records)


def test_the_check_before_training_with_skip_lists_them_and_they_are_skipped(data_dir):
    set_labels(data_dir, label_line(BAD, 1))
    dataset = build(data_dir, "--bad_utterances", "skip")
    assert dataset.check_before_training() == [BAD]
    assert dataset[BAD] == (BAD, {}) and dataset.skipped.value == 1


def test_the_option_runs_the_check_when_the_task_builds_the_dataset(data_dir):
    set_labels(data_dir, None)
    build(data_dir)  # checked only when loaded
    with pytest.raises(BadUtteranceError, match=f"'{BAD}': has audio in"):
        build(data_dir, "--check_data_before_training", "true")


def test_the_skip_count_is_shared_by_the_loader_workers(data_dir):
    """Each worker process skips some; the count is of all of them."""
    write_wav(bad_audio(data_dir), 0.7, channels=2, subtype="PCM_16")
    set_labels(data_dir, None)  # the same utterance, now two problems: one skip
    (data_dir / "audio" / "spk1-u3.wav").write_bytes(b"")
    dataset = build(data_dir, "--bad_utterances", "skip")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[[u] for u in UTTS] * 2,
        num_workers=2,
        collate_fn=lambda batch: [uid for uid, data in batch if not data],
    )
    skipped = sorted(uid for batch in loader for uid in batch)
    assert skipped == sorted([BAD, "spk1-u3"] * 2)
    assert dataset.skipped.value == 4


def test_an_unknown_policy_is_refused(data_dir):
    with pytest.raises(SystemExit):
        build(data_dir, "--bad_utterances", "ignore")


def test_validation_examples_are_checked_and_named_as_validation(data_dir, caplog):
    write_wav(bad_audio(data_dir), 0.7, channels=2, subtype="PCM_16")
    dataset = build(data_dir, "--bad_utterances", "skip", train=False)
    with caplog.at_level(logging.WARNING):
        assert dataset[BAD] == (BAD, {})
    assert "skipped bad validation utterance 'spk1-u2'" in caplog.text


def test_an_error_in_a_loader_worker_reaches_the_main_process_whole(data_dir):
    set_labels(data_dir, None)
    loader = torch.utils.data.DataLoader(
        build(data_dir), batch_sampler=[list(UTTS)], num_workers=1, collate_fn=list
    )
    with pytest.raises(RuntimeError) as err:
        list(loader)
    assert "BadUtteranceError" in str(err.value)
    assert f"{data_dir / 'labels'}: utterance '{BAD}': has audio in" in str(err.value)
