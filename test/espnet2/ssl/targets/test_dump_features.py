"""Tests for espnet2/ssl/targets/dump.py: sharded, resumable Kaldi feature dumps.

The audio is real synthesised speech (espeak-ng, espnet2/ssl/synth/corpus.py).
"""

import math
from pathlib import Path
from typing import List

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import torchaudio
import yaml

from espnet2.fileio.kaldi_data_dir import DataDirError
from espnet2.ssl.frame_geometry import kaldi_frame_count
from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus
from espnet2.ssl.targets.dump import dump_features, shard_ranges
from espnet2.ssl.targets.dumpers import FeatureDumpError, MfccDumper


@pytest.fixture(scope="module")
def wav_scp(tmp_path_factory) -> Path:
    """The train set of a ~20 s synthesised corpus (8 utterances)."""
    root = tmp_path_factory.mktemp("corpus")
    config = SynthCorpusConfig(
        seed=3, train_minutes=0.3, labeled_minutes=0.1, dev_minutes=0.1,
        test_minutes=0.1,
    )  # fmt: skip
    build_corpus(config, root / "data", root / "audio", show_progress=False)
    return root / "data" / "train" / "wav.scp"


def scp_entries(path: Path) -> List[List[str]]:
    return [line.split(maxsplit=1) for line in path.read_text().splitlines()]


def write_scp(path: Path, entries) -> Path:
    path.write_text("".join(f"{utt} {audio}\n" for utt, audio in entries))
    return path


class RecordingMfcc(MfccDumper):
    """The real MFCC dumper, recording each utterance it computes (by length).

    With ``fail_at`` it raises after computing that many utterances, as a job
    killed midway would stop.
    """

    def __init__(self, fail_at: int = -1):
        super().__init__()
        self.seen: List[int] = []
        self.fail_at = fail_at

    def _forward(self, speech, speech_lengths):
        if len(self.seen) == self.fail_at:
            raise KeyError("simulated crash")
        self.seen.extend(speech_lengths.tolist())
        return super()._forward(speech, speech_lengths)


def test_mfcc_dump_equals_torchaudio_called_directly_on_the_audio(wav_scp, tmp_path):
    summary = dump_features(wav_scp, tmp_path / "mfcc", MfccDumper(), nj=3)
    feats = kaldiio.load_scp(str(tmp_path / "mfcc" / "feats.scp"))
    entries = scp_entries(wav_scp)
    assert list(feats.keys()) == [utt for utt, _ in entries]  # wav.scp order
    total = 0
    for utt, audio_path in entries:
        audio, rate = soundfile.read(audio_path, dtype="float32")
        wave = torch.from_numpy(audio).unsqueeze(0)  # (1, S)
        cepstra = torchaudio.compliance.kaldi.mfcc(wave, sample_frequency=rate).T
        deltas = torchaudio.functional.compute_deltas(cepstra, win_length=5)
        accel = torchaudio.functional.compute_deltas(deltas, win_length=5)
        expected = torch.cat([cepstra, deltas, accel]).T.numpy()  # (T, 39)
        assert expected.shape[0] == kaldi_frame_count(len(audio))
        np.testing.assert_allclose(feats[utt], expected, rtol=0, atol=1e-6)
        total += expected.shape[0]
    frames = dict(line.split() for line in (tmp_path / "mfcc/utt2num_frames").open())
    assert {utt: int(n) for utt, n in frames.items()} == {
        utt: feats[utt].shape[0] for utt in feats
    }
    info = yaml.safe_load((tmp_path / "mfcc" / "feats.yaml").read_text())
    assert info["feature_type"] == "mfcc" and info["layer"] is None
    assert (info["dim"], info["frame_rate"], info["nj"]) == (39, 100.0, 3)
    assert (summary.num_utterances, summary.num_frames) == (len(entries), total)
    assert info["num_frames"] == total


@pytest.mark.parametrize("num_items,nj", [(8, 3), (8, 8), (5, 1), (7, 2)])
def test_shards_are_contiguous_in_order_and_differ_by_at_most_one(num_items, nj):
    ranges = shard_ranges(num_items, nj)
    assert [i for r in ranges for i in r] == list(range(num_items))
    sizes = [len(r) for r in ranges]
    assert len(ranges) == nj and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def test_more_shards_than_utterances_is_an_error(wav_scp, tmp_path):
    with pytest.raises(FeatureDumpError, match="--nj between 1 and 8"):
        dump_features(wav_scp, tmp_path, MfccDumper(), nj=9)


def test_interrupted_shard_is_completed_without_redoing_finished_ones(
    wav_scp, tmp_path
):
    out = tmp_path / "mfcc"
    lengths = [soundfile.info(a).frames for _, a in scp_entries(wav_scp)]
    first, second = shard_ranges(len(lengths), 2)
    crashing = RecordingMfcc(fail_at=len(first) + 1)  # 2nd utterance of shard 2
    with pytest.raises(KeyError, match="simulated crash"):
        dump_features(wav_scp, out, crashing, nj=2, batch_seconds=1.0)
    assert (out / "feats.1.done").exists() and not (out / "feats.2.done").exists()
    assert not (out / "feats.2.ark").exists() and not (out / "feats.scp").exists()
    before = (out / "feats.1.ark").stat()

    resumed = RecordingMfcc()
    summary = dump_features(wav_scp, out, resumed, nj=2, batch_seconds=1.0)
    # shard 2 only, computed longest first
    assert resumed.seen == sorted((lengths[i] for i in second), reverse=True)
    after = (out / "feats.1.ark").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert summary.num_utterances == len(lengths)
    fresh = tmp_path / "fresh"
    dump_features(wav_scp, fresh, MfccDumper(), nj=1)
    resumed_feats = kaldiio.load_scp(str(out / "feats.scp"))
    for utt, matrix in kaldiio.load_scp(str(fresh / "feats.scp")).items():
        np.testing.assert_array_equal(resumed_feats[utt], matrix)

    again = RecordingMfcc()
    dump_features(wav_scp, out, again, nj=2)
    assert again.seen == []  # everything done: nothing recomputed


def test_a_different_dumper_config_redoes_the_shards(wav_scp, tmp_path):
    dump_features(wav_scp, tmp_path, MfccDumper(), nj=2)
    changed = RecordingMfcc()
    changed.delta_window = 7
    dump_features(wav_scp, tmp_path, changed, nj=2)
    assert len(changed.seen) == len(scp_entries(wav_scp))
    info = yaml.safe_load((tmp_path / "feats.yaml").read_text())
    assert info["delta_window"] == 7


def test_shard_argument_runs_one_shard_and_the_last_one_merges(wav_scp, tmp_path):
    assert dump_features(wav_scp, tmp_path, MfccDumper(), nj=3, shard=2) is None
    assert (tmp_path / "feats.2.done").exists()
    assert not (tmp_path / "feats.1.ark").exists()
    assert not (tmp_path / "feats.scp").exists()
    assert dump_features(wav_scp, tmp_path, MfccDumper(), nj=3, shard=3) is None
    summary = dump_features(wav_scp, tmp_path, MfccDumper(), nj=3, shard=1)
    assert summary.num_utterances == len(scp_entries(wav_scp))
    keys = [line.split()[0] for line in (tmp_path / "feats.scp").open()]
    assert keys == [utt for utt, _ in scp_entries(wav_scp)]
    with pytest.raises(FeatureDumpError, match="shard 4 does not exist"):
        dump_features(wav_scp, tmp_path, MfccDumper(), nj=3, shard=4)


def test_missing_audio_file_names_the_utterance_and_the_file(wav_scp, tmp_path):
    entries = scp_entries(wav_scp)[:3]
    entries[1][1] = str(tmp_path / "gone.flac")
    scp = write_scp(tmp_path / "wav.scp", entries)
    with pytest.raises(DataDirError) as err:
        dump_features(scp, tmp_path / "out", MfccDumper())
    message = str(err.value)
    assert f"wav.scp:2: utterance '{entries[1][0]}'" in message
    assert "gone.flac' does not exist" in message and "Fix:" in message


def test_wrong_sample_rate_asks_to_resample_in_data_preparation(tmp_path):
    audio = tmp_path / "a.wav"
    soundfile.write(audio, np.zeros(8000, dtype=np.float32), 8000)
    scp = write_scp(tmp_path / "wav.scp", [("utt1", audio)])
    with pytest.raises(DataDirError, match=r"utterance 'utt1'.*8000 Hz.*resample"):
        dump_features(scp, tmp_path / "out", MfccDumper())


def test_unreadable_audio_is_a_clear_error(tmp_path):
    audio = tmp_path / "a.flac"
    audio.write_bytes(b"not audio at all" * 100)
    scp = write_scp(tmp_path / "wav.scp", [("utt1", audio)])
    with pytest.raises(DataDirError, match=r"utterance 'utt1'.*cannot read audio"):
        dump_features(scp, tmp_path / "out", MfccDumper())


def test_audio_shorter_than_one_frame_is_a_clear_error(tmp_path):
    audio = tmp_path / "a.flac"
    soundfile.write(audio, np.full(300, 0.1, dtype=np.float32), 16000)
    scp = write_scp(tmp_path / "wav.scp", [("utt1", audio)])
    with pytest.raises(DataDirError, match=r"'utt1'.*300 samples.*400"):
        dump_features(scp, tmp_path / "out", MfccDumper())


def test_nan_features_name_the_utterance_and_the_file(tmp_path):
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    wave = np.sin(np.arange(8000) / 10).astype(np.float32) * 0.1
    soundfile.write(good, wave, 16000, subtype="FLOAT")
    wave[4000] = math.nan
    soundfile.write(bad, wave, 16000, subtype="FLOAT")
    scp = write_scp(tmp_path / "wav.scp", [("utt1", good), ("utt2", bad)])
    with pytest.raises(FeatureDumpError) as err:
        dump_features(scp, tmp_path / "out", MfccDumper())
    assert "wav.scp:2: utterance 'utt2'" in str(err.value)
    assert "bad.wav" in str(err.value) and "NaN" in str(err.value)
    assert not (tmp_path / "out" / "feats.1.done").exists()
