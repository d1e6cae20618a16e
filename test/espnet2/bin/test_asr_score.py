"""Tests for espnet2/bin/asr_score.py: ``score`` files and ``report`` Markdown, in
process and as ``python -m``, and every bad input as one message with exit status 1."""

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

from espnet2.bin.asr_score import main

REPO_ROOT = Path(__file__).resolve().parents[3]
REF = "u1 A B C D\nu2 HELLO WORLD\nu3 GOOD\n"
HYP = "u1 A X C\nu2 HELLO WORLD\nu3 GOOD DAY\n"  # 1 sub, 1 del, 1 ins of 7 words


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def score(tmp_path: Path, ref: str, hyp: str, out_dir: Path) -> None:
    """Run ``score`` on the two transcripts (written under ``tmp_path``)."""
    ref_path = write(tmp_path / "ref.txt", ref)
    hyp_path = write(tmp_path / "hyp.txt", hyp)
    main(
        ["score", "--ref", str(ref_path), "--hyp", str(hyp_path)]
        + [
            "--out_dir",
            str(out_dir),
        ]
    )


def run_failing(args: List[str], capsys) -> str:
    """``main(args)`` must exit with status 1 and no traceback; returns stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "asr_score: error: " in err
    return err


# ---------------------------------------------------------------- score
def test_score_writes_result_json_with_wer_and_cer_counts(tmp_path, capsys):
    out = tmp_path / "score"
    score(tmp_path, REF, HYP, out)
    result = json.loads((out / "result.json").read_text())
    assert result["ref"] == str(tmp_path / "ref.txt")
    assert result["hyp"] == str(tmp_path / "hyp.txt")
    assert result["wer"] == {
        "num_utts": 3,
        "num_ref_tokens": 7,
        "correct": 5,
        "substitutions": 1,
        "deletions": 1,
        "insertions": 1,
        "sentence_errors": 2,
        "error_rate": pytest.approx(300 / 7),
        "sentence_error_rate": pytest.approx(200 / 3),
    }
    # characters: 7 + 11 + 4 = 22; u1 B->X, two deletions; u3 " DAY" 4 insertions
    cer = result["cer"]
    assert cer["num_ref_tokens"] == 22
    assert (cer["substitutions"], cer["deletions"], cer["insertions"]) == (1, 2, 4)
    assert capsys.readouterr().out == (
        "WER 42.86 % (S/D/I 1/1/1 of 7 words) "
        "CER 31.82 % (S/D/I 1/2/4 of 22 characters)\n"
    )


def test_score_writes_readable_alignments_and_no_temporary_files(tmp_path):
    out = tmp_path / "score"
    score(tmp_path, REF, HYP, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "cer_alignment.txt",
        "result.json",
        "wer_alignment.txt",
    ]
    wer = (out / "wer_alignment.txt").read_text()
    assert wer.startswith(
        "id: u1\n"
        "Scores: (#C #S #D #I) 2 1 1 0\n"
        "REF:  A B C D\n"
        "HYP:  A X C ***\n"
        "Eval:   S   D\n\n"
        "id: u2\n"
    )
    assert "REF:  GOOD ***\nHYP:  GOOD DAY\nEval:      I\n" in wer
    cer = (out / "cer_alignment.txt").read_text()
    assert "HYP:  A <space> X <space> C ***     ***\n" in cer
    assert "REF:  G O O D ***     *** *** ***\n" in cer


def test_an_empty_hypothesis_line_scores_as_deletions(tmp_path):
    out = tmp_path / "score"
    score(tmp_path, "u1 A B\nu2 C\n", "u1\nu2 C\n", out)
    wer = json.loads((out / "result.json").read_text())["wer"]
    assert (wer["deletions"], wer["error_rate"]) == (2, pytest.approx(200 / 3))


def test_score_runs_as_a_module(tmp_path):
    ref, hyp = write(tmp_path / "r", REF), write(tmp_path / "h", HYP)
    result = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.asr_score", "score"]
        + ["--ref", str(ref), "--hyp", str(hyp), "--out_dir", str(tmp_path / "s")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("WER 42.86 % ")
    assert "asr_score arguments: {" in result.stderr


# ---------------------------------------------------------------- bad input
BAD_INPUTS = {
    "missing hypothesis": (
        REF,
        "u1 A\n",
        "hyp.txt: no hypothesis for utterance 'u2', 'u3' (2 in all) of ",
    ),
    "hypothesis not in the reference": (
        REF,
        HYP + "u9 EXTRA\n",
        "hyp.txt: utterance 'u9' (1 in all) not in the reference ",
    ),
    "duplicate reference id": (
        REF + "u2 AGAIN\n",
        HYP,
        "ref.txt:4: utterance 'u2' appears again (first on line 2)",
    ),
    "duplicate hypothesis id": (
        REF,
        HYP + "u1 AGAIN\n",
        "hyp.txt:4: utterance 'u1' appears again (first on line 1)",
    ),
}


@pytest.mark.parametrize("ref, hyp, message", BAD_INPUTS.values(), ids=BAD_INPUTS)
def test_a_bad_text_file_names_file_utterance_and_fix(
    tmp_path, capsys, ref, hyp, message
):
    out = tmp_path / "score"
    with pytest.raises(SystemExit):
        score(tmp_path, ref, hyp, out)
    err = capsys.readouterr().err
    assert f"asr_score: error: {tmp_path}/{message}" in err and "Fix: " in err
    assert not out.exists()


@pytest.mark.parametrize("missing", ["--ref", "--hyp"])
def test_a_missing_text_file_is_named(tmp_path, capsys, missing):
    paths = {"--ref": write(tmp_path / "r", REF), "--hyp": write(tmp_path / "h", HYP)}
    paths[missing] = tmp_path / "absent.txt"
    args = ["score", "--out_dir", str(tmp_path / "s")]
    err = run_failing(args + [str(x) for kv in paths.items() for x in kv], capsys)
    assert f"{tmp_path}/absent.txt: cannot read the file" in err
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- report
SETS = ("test_a", "test_b")


@pytest.fixture
def two_systems(tmp_path) -> Tuple[Path, Path]:
    """exp dirs of two systems, each with both sets scored by ``score``."""
    perfect, noisy = tmp_path / "exp_perfect", tmp_path / "exp_noisy"
    for exp, hyp in ((perfect, REF), (noisy, HYP)):
        for test_set in SETS:
            score(tmp_path, REF, hyp, exp / f"decode_{test_set}" / "score")
    return perfect, noisy


def test_report_tables_hold_every_system_and_set_in_percent(
    tmp_path, two_systems, capsys
):
    perfect, noisy = two_systems
    output = tmp_path / "RESULTS.md"
    main(
        ["report", "--system", f"perfect={perfect}", "--system", f"noisy={noisy}"]
        + ["--sets", *SETS, "--output", str(output), "--title", "LibriSpeech"]
        + ["--description", "fine-tuned on 10 h", "--description", "beam 10"]
    )
    lines = output.read_text().splitlines()
    assert lines[:5] == ["# LibriSpeech", "", "- fine-tuned on 10 h", "- beam 10", ""]
    header = "| system | set | Snt | Wrd | Corr | Sub | Del | Ins | Err | S.Err |"
    assert lines.count(header) == 2
    wer_rows = [line for line in lines if line.startswith("| noisy | test_b | 3 | 7 ")]
    # WER: 5/7 correct, 1 sub, 1 del, 1 ins of 7; 2 of 3 sentences wrong
    assert (
        wer_rows[0]
        == "| noisy | test_b | 3 | 7 | 71.4 | 14.3 | 14.3 | 14.3 | 42.9 | 66.7 |"
    )
    perfect_row = "| perfect | test_a | 3 | 7 | 100.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |"
    assert perfect_row in lines
    cer_row = "| noisy | test_a | 3 | 22 | 86.4 | 4.5 | 9.1 | 18.2 | 31.8 | 66.7 |"
    assert lines.index(cer_row) > lines.index("## CER (characters)")
    assert lines[-4:] == [
        "| set | perfect WER | noisy WER | perfect CER | noisy CER |",
        "| --- | --- | --- | --- | --- |",
        "| test_a | 0.0 | 42.9 | 0.0 | 31.8 |",
        "| test_b | 0.0 | 42.9 | 0.0 | 31.8 |",
    ]


def test_report_of_phone_transcripts_is_a_per_table_without_cer(tmp_path, two_systems):
    _, noisy = two_systems  # its "words" stand for phones here
    output = tmp_path / "RESULTS.md"
    main(
        ["report", "--unit", "phone", "--system", f"probe={noisy}", "--sets", *SETS]
        + ["--output", str(output), "--title", "probe"]
    )
    lines = output.read_text().splitlines()
    heading = "## PER (phones; the WER of the phone transcripts)"
    assert lines.index(heading) == 2
    assert (
        "| system | set | Snt | Phn | Corr | Sub | Del | Ins | Err | S.Err |" in lines
    )
    row = "| probe | test_a | 3 | 7 | 71.4 | 14.3 | 14.3 | 14.3 | 42.9 | 66.7 |"
    assert row in lines
    assert not any("CER" in line or "WER (words)" in line for line in lines)
    assert lines[-4:] == [
        "| set | probe PER |",
        "| --- | --- |",
        "| test_a | 42.9 |",
        "| test_b | 42.9 |",
    ]


def test_report_without_a_scored_set_says_to_run_stage_8(tmp_path, two_systems, capsys):
    perfect, _ = two_systems
    output = tmp_path / "RESULTS.md"
    args = ["report", "--system", f"p={perfect}", "--sets", "test_a", "test_c"]
    err = run_failing(args + ["--output", str(output)], capsys)
    assert f"{perfect}/decode_test_c/score/result.json: no such file" in err
    assert "run stage 8" in err
    assert not output.exists()


def test_report_rejects_a_result_json_without_counts(tmp_path, capsys):
    result = write(tmp_path / "exp/decode_t/score/result.json", '{"wer": {}}\n')
    args = ["report", "--system", f"s={tmp_path / 'exp'}", "--sets", "t"]
    err = run_failing(args + ["--output", str(tmp_path / "R.md")], capsys)
    assert f"{result}: not a result.json of asr_score" in err


def test_report_rejects_a_system_without_a_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--system", "exp", "--sets", "t", "--output", "R.md"])
    assert exit_info.value.code == 2
    assert "expected NAME=EXPDIR, got 'exp'" in capsys.readouterr().err


def test_an_empty_reference_with_insertions_reports_an_infinite_rate(tmp_path):
    exp = tmp_path / "exp"
    score(tmp_path, "u1\n", "u1 UH\n", exp / "decode_t" / "score")
    result = json.loads((exp / "decode_t/score/result.json").read_text())
    assert result["wer"]["insertions"] == 1 and result["wer"]["error_rate"] is None
    output = tmp_path / "R.md"
    main(["report", "--system", f"s={exp}", "--sets", "t", "--output", str(output)])
    row = "| s | t | 1 | 0 | 0.0 | 0.0 | 0.0 | inf | inf | 100.0 |"
    assert row in output.read_text().splitlines()


def test_report_rejects_two_systems_of_the_same_name(two_systems, tmp_path, capsys):
    perfect, noisy = two_systems
    args = ["report", "--system", f"a={perfect}", "--system", f"a={noisy}"]
    args += ["--sets", "test_a", "--output", str(tmp_path / "R.md")]
    assert "--system names repeat: ['a', 'a']" in run_failing(args, capsys)
