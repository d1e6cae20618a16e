"""The ssl and asr dumpers on checkpoints trained by ESPnet's real entry points.

A tiny wav2vec 2.0 (egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml)
is trained for one epoch by ``espnet2.bin.ssl_train`` and a tiny CTC model
(conf/asr_tiny.yaml) by ``espnet2.bin.asr_train`` (collect-stats, then training
with global MVN), both on about 20 s of synthesised speech; the dumpers read
their checkpoints and an archive made by ``espnet2.bin.pack``.
"""

import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count
from espnet2.ssl.model_files import ModelFileError
from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus
from espnet2.ssl.targets.dump import dump_features
from espnet2.ssl.targets.dumpers import get_dumper

REPO_ROOT = Path(__file__).resolve().parents[4]
SSL_CONFIG = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_wav2vec2_tiny.yaml"
ASR_CONFIG = Path(__file__).parent / "conf" / "asr_tiny.yaml"

pytestmark = pytest.mark.recipe


def run_module(cwd: Path, module: str, *args: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", module, *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A directory with data/{train,train_labeled,dev,test} (about 20 s of train)."""
    root = tmp_path_factory.mktemp("trained")
    config = SynthCorpusConfig(
        seed=3, train_minutes=0.3, labeled_minutes=0.1, dev_minutes=0.1,
        test_minutes=0.1,
    )  # fmt: skip
    build_corpus(config, root / "data", root / "audio", show_progress=False)
    return root


def write_speech_shape(wav_scp: Path, shape_file: Path) -> None:
    """ESPnet's speech_shape: ``<utt> <num_samples>`` per line."""
    lines = []
    for line in wav_scp.read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        lines.append(f"{utt} {soundfile.info(path).frames}\n")
    shape_file.write_text("".join(lines))


@pytest.fixture(scope="module")
def ssl_exp(root) -> Path:
    """exp/ of a one-epoch espnet2.bin.ssl_train run (tiny wav2vec 2.0)."""
    (root / "tokens.txt").write_text("<unk>\n")
    common = ["--token_list", "tokens.txt", "--token_type", "word", "--ngpu", "0"]
    common += ["--use_preprocessor", "true", "--config", str(SSL_CONFIG)]
    common += ["--train_data_path_and_name_and_type", "data/train/wav.scp,speech,sound"]
    common += ["--valid_data_path_and_name_and_type", "data/dev/wav.scp,speech,sound"]
    for data in ("train", "dev"):  # what collect-stats would write, 15 s faster
        write_speech_shape(root / "data" / data / "wav.scp", root / f"{data}.shape")
    run_module(
        root, "espnet2.bin.ssl_train", *common, "--output_dir", "ssl_exp",
        "--train_shape_file", "train.shape", "--valid_shape_file", "dev.shape",
        "--max_epoch", "1",
        "--use_tensorboard", "false", "--use_matplotlib", "false",
    )  # fmt: skip
    return root / "ssl_exp"


def write_char_tokens(text: Path, tokens: Path) -> None:
    """ESPnet's char token list: <blank>, <unk>, <space>, the characters, <sos/eos>."""
    chars = set()
    for line in text.read_text().splitlines():
        chars.update(line.split(maxsplit=1)[1].replace(" ", ""))
    listing = ["<blank>", "<unk>", "<space>", *sorted(chars), "<sos/eos>"]
    tokens.write_text("".join(token + "\n" for token in listing))


@pytest.fixture(scope="module")
def asr_exp(root) -> Path:
    """exp/ of a one-epoch espnet2.bin.asr_train run (tiny CTC, global MVN)."""
    write_char_tokens(root / "data/train_labeled/text", root / "chars.txt")
    common = ["--token_list", "chars.txt", "--token_type", "char", "--ngpu", "0"]
    common += ["--use_preprocessor", "true", "--config", str(ASR_CONFIG)]
    for mode, data in (("train", "train_labeled"), ("valid", "dev")):
        flag = f"--{mode}_data_path_and_name_and_type"
        common += [flag, f"data/{data}/wav.scp,speech,sound"]
        common += [flag, f"data/{data}/text,text,text"]
    run_module(
        root, "espnet2.bin.asr_train", *common, "--collect_stats", "true",
        "--normalize", "none", "--output_dir", "asr_stats",
        "--train_shape_file", "data/train_labeled/wav.scp",
        "--valid_shape_file", "data/dev/wav.scp",
    )  # fmt: skip
    shapes = []
    for mode in ("train", "valid"):
        for name in ("speech_shape", "text_shape"):
            shapes += [f"--{mode}_shape_file", f"asr_stats/{mode}/{name}"]
    run_module(
        root, "espnet2.bin.asr_train", *common, *shapes, "--output_dir", "asr_exp",
        "--normalize_conf", "stats_file=asr_stats/train/feats_stats.npz",
        "--use_tensorboard", "false", "--use_matplotlib", "false",
    )  # fmt: skip
    return root / "asr_exp"


def read_batch(wav_scp: Path, count: int):
    """The first ``count`` utterances of ``wav_scp`` as (B, S) and lengths (B,)."""
    paths = [line.split()[1] for line in wav_scp.read_text().splitlines()[:count]]
    audio = [soundfile.read(path, dtype="float32")[0] for path in paths]
    lengths = torch.tensor([len(a) for a in audio])
    speech = torch.zeros(count, int(lengths.max()))
    for row, samples in enumerate(audio):
        speech[row, : len(samples)] = torch.from_numpy(samples)
    return speech, lengths


def test_ssl_dumper_reads_the_trained_weights_and_gives_cnn_frames(root, ssl_exp):
    from espnet2.tasks.ssl import SSLTask

    dumper = get_dumper(
        "ssl", model_file=str(ssl_exp / "1epoch.pth"), layer=2, device="cpu"
    )
    assert (dumper.dim, dumper.frame_rate, dumper.num_layers) == (96, 50.0, 3)
    assert not dumper.padding_invariant  # the BASE CNN's GroupNorm
    speech, lengths = read_batch(root / "data/train/wav.scp", 4)
    feats = dumper.extract(speech, lengths)
    model, _ = SSLTask.build_model_from_file(
        ssl_exp / "config.yaml", ssl_exp / "1epoch.pth", "cpu"
    )
    model.eval()
    for row, length in enumerate(lengths.tolist()):
        assert feats[row].shape == (cnn_frame_count(length, WAV2VEC2_CNN_SHAPES), 96)
        with torch.no_grad():
            _, layers, _ = model.inference_encode(
                speech[row : row + 1, :length], lengths[row : row + 1]
            )
        np.testing.assert_allclose(feats[row], layers[1][0].numpy(), atol=1e-5)


def test_ssl_dump_of_a_packed_model_equals_the_dump_of_its_files(
    root, ssl_exp, monkeypatch
):
    from espnet2.bin.pack import main as pack

    monkeypatch.chdir(root)  # pack stores paths relative to the working directory
    pack(
        ["ssl", "--ssl_train_config", "ssl_exp/config.yaml",
         "--ssl_model_file", "ssl_exp/1epoch.pth", "--outpath", "packed/ssl.zip"]
    )  # fmt: skip
    wav_scp = root / "data/dev/wav.scp"
    summaries = []
    for name, source in (
        ("files", {"model_file": "ssl_exp/1epoch.pth"}),
        ("packed", {"packed_model": "packed/ssl.zip"}),
    ):
        dumper = get_dumper("ssl", layer=1, device="cpu", **source)
        summaries.append(dump_features(wav_scp, root / f"dump_{name}", dumper))
    assert summaries[0].num_frames == summaries[1].num_frames > 0
    files = kaldiio.load_scp(str(root / "dump_files/feats.scp"))
    packed = kaldiio.load_scp(str(root / "dump_packed/feats.scp"))
    for utt, matrix in files.items():
        np.testing.assert_array_equal(packed[utt], matrix)
    info = yaml.safe_load((root / "dump_packed/feats.yaml").read_text())
    assert info["packed_model"] == "packed/ssl.zip" and info["layer"] == 1
    assert len(info["model_sha256"]) == 64 and info["frame_rate"] == 50.0


def test_a_config_that_does_not_match_the_model_file_is_an_error(ssl_exp, asr_exp):
    with pytest.raises(ModelFileError, match="do not fit the model.*Fix: pass"):
        get_dumper(
            "ssl",
            config_file=str(ssl_exp / "config.yaml"),
            model_file=str(asr_exp / "1epoch.pth"),
        )
    with pytest.raises(ModelFileError, match="trainer state"):
        get_dumper("ssl", model_file=str(ssl_exp / "checkpoint.pth"))


def test_missing_encoder_weights_are_an_error_not_random_features(ssl_exp, tmp_path):
    # ESPnet's build_model_from_file loads with strict=False and would go on
    state = torch.load(ssl_exp / "1epoch.pth", map_location="cpu")
    del state["encoder.encoders.2.feed_forward.w_1.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ModelFileError, match="lacks 1 weights.*w_1.weight"):
        get_dumper(
            "ssl",
            config_file=str(ssl_exp / "config.yaml"),
            model_file=str(tmp_path / "partial.pth"),
        )


def test_asr_dumper_gives_what_model_encode_gives(root, asr_exp, monkeypatch):
    from espnet2.tasks.asr import ASRTask

    monkeypatch.chdir(root)  # config.yaml names the stats file relative to root
    model, _ = ASRTask.build_model_from_file(
        asr_exp / "config.yaml", asr_exp / "1epoch.pth", "cpu"
    )
    model.eval()
    dumper = get_dumper("asr", model_file=str(asr_exp / "1epoch.pth"), device="cpu")
    assert (dumper.dim, dumper.frame_rate) == (32, 25.0)
    speech, lengths = read_batch(root / "data/test/wav.scp", 2)
    feats = dumper.extract(speech, lengths)
    for row, length in enumerate(lengths.tolist()):
        with torch.no_grad():
            encoded, frames = model.encode(
                speech[row : row + 1, :length], lengths[row : row + 1]
            )
        assert feats[row].shape == (int(frames[0]), 32)
        np.testing.assert_allclose(feats[row], encoded[0].numpy(), atol=1e-5)
    layer = get_dumper("asr", model_file=str(asr_exp / "1epoch.pth"), layer=1)
    assert layer.extract(speech, lengths)[0].shape == feats[0].shape


def test_asr_config_with_a_missing_stats_file_says_where_to_run(
    root, asr_exp, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the relative stats path does not resolve here
    with pytest.raises(ModelFileError, match="does not exist.*relative to the"):
        get_dumper("asr", model_file=str(asr_exp / "1epoch.pth"))


class NotWeights:
    """A pickled Python object: what a malicious or wrong file could hold."""


def test_a_model_file_holding_python_objects_is_refused_unread(ssl_exp, tmp_path):
    state = torch.load(ssl_exp / "1epoch.pth", map_location="cpu")
    state["payload"] = NotWeights()
    torch.save(state, tmp_path / "objects.pth")
    (tmp_path / "noise.pth").write_bytes(b"not a checkpoint at all")
    for name in ("objects.pth", "noise.pth"):
        with pytest.raises(ModelFileError, match="as weights only.*are refused"):
            get_dumper(
                "ssl",
                config_file=str(ssl_exp / "config.yaml"),
                model_file=str(tmp_path / name),
            )
