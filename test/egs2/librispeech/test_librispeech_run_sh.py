"""egs2/librispeech/ssl2/run.sh, stages 1-2, on a tiny LibriSpeech-shaped corpus.

The corpus (conftest.py) has every LibriSpeech part and Libri-light fold with one to
three espeak-ng utterances; the recipe runs in a temporary copy, so data/, dump/ and
downloads/ land in the copy. Nothing leaves the machine: the recipe reads the corpus
with --download false, and the download test serves archives of it on 127.0.0.1.
"""

import http.server
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile

from espnet2.fileio.kaldi_data_dir import read_two_column_file, validate_data_dir
from espnet2.train.dataset import sound_loader

pytestmark = pytest.mark.recipe

SHORT_UTT = "103-1240-0001"  # 1 s, in train-clean-100 and below --min_wav_duration 2
TEST_SETS = ("dev_clean", "dev_other", "test_clean", "test_other")


def data_opts(corpus: Path, *extra: str) -> str:
    return " ".join(
        ["--librispeech_dir", str(corpus), "--librilight_dir", str(corpus)]
        + ["--download", "false", *extra]
    )


def run(recipe: Path, corpus: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1"  # the download test's server
    return subprocess.run(
        ["./run.sh", "--stage", "1", "--stop_stage", "2"]
        + ["--local_data_opts", data_opts(corpus), *args],
        cwd=recipe,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def expected(layout) -> Dict[str, List[str]]:
    """Set name -> the utterance ids it must hold, sorted."""
    return {
        "train_960": layout.part_ids(
            "train-clean-100", "train-clean-360", "train-other-500"
        ),
        "dev": layout.part_ids("dev-clean", "dev-other"),
        "dev_clean": layout.part_ids("dev-clean"),
        "dev_other": layout.part_ids("dev-other"),
        "test_clean": layout.part_ids("test-clean"),
        "test_other": layout.part_ids("test-other"),
        "train_10min": layout.fold_ids("1h/0/"),
        "train_1h": layout.fold_ids("1h/"),
        "train_10h": layout.fold_ids(""),
    }


@pytest.fixture(scope="module")
def transcripts(layout) -> Dict[str, str]:
    """Utterance id -> its transcript, for every utterance of the corpus."""
    text = {
        utt: layout.sentences[index]
        for utterances in layout.librispeech.values()
        for utt, index, _ in utterances
    }
    for index in range(len(layout.folds)):
        text[layout.librilight_id(index)] = layout.sentences[index % 3]
    return text


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, make_corpus, make_recipe):
    root = tmp_path_factory.mktemp("librispeech")
    corpus = make_corpus(root / "corpus")
    recipe = make_recipe(root / "repo")
    return recipe, corpus, run(recipe, corpus)


def ids(path: Path) -> List[str]:
    return [line.id for line in read_two_column_file(path)]


def test_stage_1_writes_every_set_with_the_librispeech_ids(
    prepared, expected, transcripts
):
    recipe, _, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    for dset, utts in expected.items():
        data = recipe / "data" / dset
        validate_data_dir(data)  # sorted, consistent, readable 16 kHz audio
        assert ids(data / "wav.scp") == utts
        text = {x.id: x.value for x in read_two_column_file(data / "text")}
        assert text == {utt: transcripts[utt] for utt in utts}
        speakers = [x.value for x in read_two_column_file(data / "utt2spk")]
        assert speakers == [utt.split("-")[0] for utt in utts]


def test_wav_scp_lists_absolute_flac_paths_that_espnets_sound_reader_reads(prepared):
    recipe, corpus, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    data = recipe / "data" / "train_960"
    loader = sound_loader(str(data / "wav.scp"), float_dtype="float32")
    durations = {x.id: float(x.value) for x in read_two_column_file(data / "utt2dur")}
    for entry in read_two_column_file(data / "wav.scp"):
        path = Path(entry.value)
        assert path.is_absolute() and path.suffix == ".flac"
        assert path.is_relative_to(corpus / "LibriSpeech")
        audio = loader[entry.id]
        reference, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000 and np.array_equal(audio, reference)
        assert durations[entry.id] == pytest.approx(len(audio) / 16000, abs=1e-4)


def test_libri_light_sets_are_made_of_the_documented_folds(prepared, layout):
    recipe, corpus, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    finetuning = corpus / "librispeech_finetuning"
    for dset, prefix in (
        ("train_10min", "1h/0/"),
        ("train_1h", "1h/"),
        ("train_10h", ""),
    ):
        wav_scp = read_two_column_file(recipe / "data" / dset / "wav.scp")
        # <fold>/<speaker>/<chapter>/<utt>.flac
        folds = sorted(
            str(Path(x.value).parents[2].relative_to(finetuning)) for x in wav_scp
        )
        assert folds == sorted(f for f in layout.folds if f.startswith(prefix))


def test_dev_is_dev_clean_plus_dev_other(prepared):
    recipe, _, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("wav.scp", "text", "utt2spk", "utt2dur"):
        lines = [
            line
            for part in ("dev_clean", "dev_other")
            for line in (recipe / "data" / part / name).read_text().splitlines()
        ]
        assert (recipe / "data/dev" / name).read_text().splitlines() == sorted(lines)


def test_stage_2_filters_the_training_sets_and_keeps_the_test_sets_whole(
    prepared, expected
):
    recipe, _, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    dump = recipe / "dump" / "raw"
    train = [utt for utt in expected["train_960"] if utt != SHORT_UTT]
    assert ids(dump / "train_960/wav.scp") == train
    filtered = (dump / "train_960/filtered_utts").read_text()
    assert filtered.startswith(f"{SHORT_UTT} 1.000 shorter than min_seconds=2")
    for dset in ("train_10h", "dev") + TEST_SETS:
        assert ids(dump / dset / "wav.scp") == expected[dset]  # test_clean's 1 s too
        assert ids(dump / dset / "utt2num_samples") == expected[dset]


def test_a_second_run_does_no_work(prepared):
    recipe, corpus, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    watched = [recipe / "data/train_960/wav.scp", recipe / "dump/raw/train_960/wav.scp"]
    before = [path.stat().st_mtime_ns for path in watched]
    again = run(recipe, corpus)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Stage 1: already done with the same options" in again.stderr
    # stage 1, then stage 2's seven sets
    assert again.stderr.count("already done with the same options; skipping") == 8
    assert "prepare_librispeech" not in again.stderr
    assert [path.stat().st_mtime_ns for path in watched] == before


def test_data_sh_keeps_data_when_only_its_other_options_change(prepared):
    recipe, corpus, result = prepared
    assert result.returncode == 0, result.stderr[-3000:]
    wav_scp = recipe / "data/train_960/wav.scp"
    before = wav_scp.stat().st_mtime_ns
    other = data_opts(corpus, "--nj", "2")
    again = run(recipe, corpus, "--stop_stage", "1", "--local_data_opts", other)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already prepared from the same folders" in again.stderr
    assert wav_scp.stat().st_mtime_ns == before


def damage_a_flac(corpus: Path) -> str:
    path = corpus / "LibriSpeech/dev-other/116/288045/116-288045-0000.flac"
    path.write_bytes(b"this is not audio" * 100)
    return "116-288045-0000"


def empty_a_transcript(corpus: Path) -> str:
    trans = corpus / "LibriSpeech/test-other/1688/142285/1688-142285.trans.txt"
    trans.write_text("1688-142285-0000 \n")
    return "1688-142285-0000"


def copy_a_speaker_into_another_part(corpus: Path) -> str:
    src = corpus / "LibriSpeech/train-clean-100/1034"
    shutil.copytree(src, corpus / "LibriSpeech/train-other-500/1034")
    return "1034-121119-0000"  # now twice in train_960


@pytest.mark.parametrize(
    "damage", [damage_a_flac, empty_a_transcript, copy_a_speaker_into_another_part]
)
def test_bad_input_stops_stage_1_naming_the_utterance(
    damage, tmp_path, make_corpus, make_recipe
):
    corpus = make_corpus(tmp_path / "corpus")
    recipe = make_recipe(tmp_path / "repo")
    utt = damage(corpus)
    result = run(recipe, corpus)
    assert result.returncode != 0
    assert f"utterance '{utt}'" in result.stderr and "Fix:" in result.stderr
    assert not (recipe / "dump").exists() and not (recipe / "exp").exists()


@pytest.mark.parametrize(
    "missing, option, what",
    [
        ("LibriSpeech/train-clean-360", "--librispeech_dir", "LibriSpeech part"),
        ("librispeech_finetuning", "--librilight_dir", "--librilight false"),
    ],
)
def test_a_missing_part_offline_names_the_folder_and_both_fixes(
    missing, option, what, tmp_path, make_corpus, make_recipe
):
    corpus = make_corpus(tmp_path / "corpus")
    recipe = make_recipe(tmp_path / "repo")
    shutil.rmtree(corpus / missing)
    result = run(recipe, corpus)
    assert result.returncode == 1
    assert f"neither {corpus / missing} nor downloads/" in result.stderr
    assert f"{option} <folder" in result.stderr and "--download true" in result.stderr
    assert what in result.stderr
    assert not (recipe / "data" / "train_960").exists()


@pytest.fixture
def archive_server(tmp_path):
    """An HTTP server on 127.0.0.1; yields (its folder, its url, requested paths)."""
    folder = tmp_path / "srv"
    folder.mkdir()
    requested: List[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", requested
    server.shutdown()
    thread.join()


@pytest.mark.skipif(
    not (shutil.which("wget") or shutil.which("curl")), reason="no wget or curl"
)
def test_missing_parts_are_downloaded_and_extracted_once(
    archive_server, tmp_path, make_corpus, make_recipe, layout
):
    srv, url, requested = archive_server
    corpus = make_corpus(tmp_path / "corpus")
    for part in layout.librispeech:  # OpenSLR's archives hold LibriSpeech/<part>/
        with tarfile.open(srv / f"{part}.tar.gz", "w:gz") as tar:
            tar.add(corpus / "LibriSpeech" / part, f"LibriSpeech/{part}")
    with tarfile.open(srv / "librispeech_finetuning.tgz", "w:gz") as tar:
        tar.add(corpus / "librispeech_finetuning", "librispeech_finetuning")
    recipe = make_recipe(tmp_path / "repo")
    opts = f"--librispeech_url {url} --librilight_url {url}/librispeech_finetuning.tgz"
    first = run(recipe, corpus, "--stop_stage", "1", "--local_data_opts", opts)
    assert first.returncode == 0, first.stderr[-3000:]
    assert len(requested) == 8  # the seven LibriSpeech parts and Libri-light
    downloads = (recipe / "downloads").resolve()
    for entry in read_two_column_file(recipe / "data/train_10h/wav.scp"):
        assert Path(entry.value).is_relative_to(downloads / "librispeech_finetuning")
    assert not list(downloads.glob(".extract_*"))  # temporary folders are gone
    # other options make stage 1 run data.sh again; nothing is fetched again
    again = run(
        recipe, corpus, "--stop_stage", "1", "--local_data_opts", opts + " --nj 2"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(requested) == 8 and "Downloading" not in again.stderr
