"""Tests for espnet2/bin/ssl_label_quality.py on a tiny synthesised corpus."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

from espnet2.bin.ssl_label_quality import main, markdown_table, parse_named_paths
from espnet2.ssl.frame_geometry import WAV2VEC2_CNN_SHAPES, cnn_frame_count
from espnet2.ssl.synth.corpus import SynthCorpusConfig, build_corpus
from espnet2.ssl.targets.alignments import frame_phones, read_ctm
from espnet2.ssl.targets.quality import ClusterQuality

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_RATE = 16000
TINY = SynthCorpusConfig(
    seed=3, train_minutes=0.3, labeled_minutes=0.1, dev_minutes=0.1, test_minutes=0.1
)


def phone_labels(data_dir: Path) -> Dict[str, List[int]]:
    """Labels that are the reference phones themselves, one id per CNN frame."""
    ctm = read_ctm(data_dir / "phones.ctm")
    ids: Dict[str, int] = {}
    labels = {}
    for line in (data_dir / "utt2dur").read_text(encoding="utf-8").splitlines():
        utt, seconds = line.split()
        num_samples = round(float(seconds) * SAMPLE_RATE)
        num_frames = cnn_frame_count(num_samples, WAV2VEC2_CNN_SHAPES)
        phones = frame_phones(ctm[utt], num_frames)
        labels[utt] = [ids.setdefault(phone, len(ids)) for phone in phones]
    return labels


def write_labels(path: Path, labels: Dict[str, List[int]]) -> Path:
    text = "".join(
        " ".join([utt] + [str(x) for x in seq]) + "\n" for utt, seq in labels.items()
    )
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m espnet2.bin.ssl_label_quality`` with the repository first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "espnet2.bin.ssl_label_quality", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A tiny mini_synth corpus with two labels files beside its data dirs."""
    root = tmp_path_factory.mktemp("mini_synth")
    build_corpus(TINY, root / "data", root / "audio", show_progress=False)
    perfect = phone_labels(root / "data" / "train")
    write_labels(root / "perfect", perfect)
    halved = {utt: [x // 2 for x in seq] for utt, seq in perfect.items()}
    write_labels(root / "halved", halved)  # pairs of phones share a cluster
    return root


def test_labels_made_of_the_reference_phones_score_one_through_the_cli(corpus):
    ctm = "data/train/phones.ctm"
    args = ["--ctm", ctm, "--labels", "phones=perfect", "halved", "--output", "q.json"]
    result = run_cli(args, corpus)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| labels | phone purity | cluster purity | PNMI |")
    assert lines[2].startswith("| phones | 1.0000 | 1.0000 | 1.0000 | ")
    assert lines[3].startswith("| halved | ")
    assert "checking label counts against data/train/utt2dur" in result.stderr
    report = json.loads((corpus / "q.json").read_text(encoding="utf-8"))
    assert report["ctm"] == ctm
    phones, halved = report["results"]
    assert (phones["name"], phones["labels"], phones["pnmi"]) == (
        "phones",
        "perfect",
        1,
    )
    assert phones["num_clusters_used"] == phones["num_phones"] > 20
    assert halved["labels"] == "halved" and halved["cluster_purity"] == 1.0
    assert 0.5 < halved["pnmi"] < 1 and halved["phone_purity"] < 1
    assert halved["num_frames"] == phones["num_frames"]


def test_markdown_output_holds_the_printed_table(corpus, capsys):
    ctm, table = corpus / "data/train/phones.ctm", corpus / "q.md"
    labels = f"x={corpus / 'perfect'}"
    main(["--ctm", str(ctm), "--labels", labels, "--output", str(table)])
    printed = capsys.readouterr().out
    assert table.read_text(encoding="utf-8") == printed
    assert printed.count("\n") == 3


def expect_error(capsys, args: List[str]) -> str:
    """Run main in process; check exit status 1 and return stderr."""
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("ssl_label_quality: error: ") and "Traceback" not in err
    return err


def test_a_malformed_ctm_line_is_reported_with_file_and_line(corpus, tmp_path, capsys):
    ctm = corpus / "data/train/phones.ctm"
    lines = ctm.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0]  # drop the phone
    bad = tmp_path / "phones.ctm"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    err = expect_error(capsys, ["--ctm", str(bad), "--labels", str(corpus / "perfect")])
    assert f"{bad}:3: expected 5 or 6 fields, got 4" in err


def test_a_label_count_mismatch_names_the_utterance(corpus, tmp_path, capsys):
    labels = phone_labels(corpus / "data/train")
    utt = sorted(labels)[1]
    labels[utt] = labels[utt] * 2  # as if written at 100 Hz
    path = write_labels(tmp_path / "labels", labels)
    ctm = str(corpus / "data/train/phones.ctm")
    err = expect_error(capsys, ["--ctm", ctm, "--labels", f"x={path}"])
    assert f"{path}: utterance '{utt}': {len(labels[utt])} labels, but " in err
    assert "utt2dur gives" in err


def test_a_missing_utterance_is_an_error_unless_common_only(corpus, tmp_path, capsys):
    labels = phone_labels(corpus / "data/train")
    dropped = sorted(labels)[0]
    del labels[dropped]
    path = write_labels(tmp_path / "labels", labels)
    args = ["--ctm", str(corpus / "data/train/phones.ctm"), "--labels", str(path)]
    err = expect_error(capsys, args)
    assert f"1 utterance(s) missing from {path}: '{dropped}'" in err
    main(args + ["--common_only", "true"])
    assert "| 1.0000 | 1.0000 | 1.0000 |" in capsys.readouterr().out


def test_a_missing_file_and_a_bad_labels_argument_are_clear_errors(
    corpus, tmp_path, capsys
):
    ctm = str(corpus / "data/train/phones.ctm")
    err = expect_error(capsys, ["--ctm", ctm, "--labels", str(tmp_path / "nope")])
    assert f"cannot read {tmp_path / 'nope'}: No such file" in err
    err = expect_error(capsys, ["--ctm", ctm, "--labels", "=x"])
    assert "write NAME=PATH" in err


def test_parse_named_paths_keeps_order_and_rejects_repeated_names():
    assert parse_named_paths(["a=x=1", "p"]) == [("a", "x=1"), ("p", "p")]
    with pytest.raises(ValueError, match="'a' is given twice"):
        parse_named_paths(["a=x", "a=y"])


def test_markdown_table_formats_one_row_per_labels_file():
    quality = ClusterQuality(0.5, 0.25, 0.123456, 100, 7, 3)
    assert markdown_table({"km": quality}).splitlines()[2] == (
        "| km | 0.5000 | 0.2500 | 0.1235 | 7 | 3 | 100 |"
    )
