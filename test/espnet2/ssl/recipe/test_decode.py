"""espnet2/ssl/recipe/decode.py and espnet2/bin/ssl_decode.py: several sets and models
decoded in one process by ESPnet's own inference, written as asr_inference writes them.

The models are tiny CTC models of ESPnet's ASRTask (test/espnet2/ssl/targets/conf/
asr_tiny.yaml) with seeded random weights, saved as a config.yaml and a .pth, as
asr_train leaves them; the audio is seeded noise and chirps written as wav files.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet2.bin.ssl_decode import main as ssl_decode_main
from espnet2.ssl.recipe.decode import (
    DecodeError,
    DecodeJob,
    decode_jobs,
    decode_options,
)
from espnet2.tasks.asr import ASRTask

REPO_ROOT = Path(__file__).resolve().parents[4]
ASR_CONFIG = REPO_ROOT / "test/espnet2/ssl/targets/conf/asr_tiny.yaml"
TOKENS = ["<blank>", "<unk>", "<space>", "A", "B", "C", "<sos/eos>"]
CTC_OPTIONS = ["--batch_size", "1", "--beam_size", "3", "--ctc_weight", "1.0"]
CTC_OPTIONS += ["--lm_weight", "0.0", "--ngram_weight", "0.0", "--penalty", "0.0"]


def write_model(folder: Path, seed: int) -> DecodeJob:
    """A tiny CTC model's config.yaml and model.pth in ``folder`` (no set yet)."""
    args = ASRTask.get_parser().parse_args(
        ["--config", str(ASR_CONFIG), "--token_list", "none", "--normalize", "none"]
    )
    args.token_list, args.token_type = TOKENS, "char"
    torch.manual_seed(seed)
    model = ASRTask.build_model(args)
    folder.mkdir(parents=True)
    torch.save(model.state_dict(), folder / "model.pth")
    with (folder / "config.yaml").open("w") as f:
        yaml.safe_dump(vars(args), f)
    return DecodeJob(str(folder / "config.yaml"), str(folder / "model.pth"), "", "")


def write_set(folder: Path, count: int, seed: int) -> Path:
    """``count`` wav files of 0.5-1.5 s (noise and a chirp) and their wav.scp."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = []
    for n in range(count):
        length = int(rng.integers(8000, 24000))
        time = np.arange(length) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 600 * time) * time)
        audio += 0.1 * rng.standard_normal(length)
        path = folder / f"utt{seed}_{n}.wav"
        soundfile.write(path, audio.astype(np.float32), 16000)
        lines.append(f"utt{seed}_{n} {path}\n")
    (folder / "wav.scp").write_text("".join(sorted(lines)))
    return folder / "wav.scp"


def job_on(model: DecodeJob, wav_scp: Path, out_dir: Path) -> DecodeJob:
    return DecodeJob(model.config, model.model, str(wav_scp), str(out_dir))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two models and two sets (5 and 3 utterances)."""
    root = tmp_path_factory.mktemp("decode")
    models = [write_model(root / f"model{seed}", seed) for seed in (0, 1)]
    sets = [write_set(root / "dev", 5, 10), write_set(root / "test", 3, 11)]
    return root, models, sets


def reference_text(job: DecodeJob, out: Path) -> str:
    """ESPnet's asr_inference command on the whole set, its 1-best text sorted."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "espnet2.bin.asr_inference", "--ngpu", "0"]
    command += ["--data_path_and_name_and_type", f"{job.wav_scp},speech,sound"]
    command += ["--asr_train_config", job.config, "--asr_model_file", job.model]
    command += ["--output_dir", str(out), *CTC_OPTIONS]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (out / "1best_recog" / "text").read_text().splitlines()
    return "".join(f"{line}\n" for line in sorted(lines))


@pytest.mark.recipe
def test_every_job_writes_the_text_espnets_asr_inference_writes(setup, tmp_path):
    root, models, sets = setup
    jobs = [
        job_on(model, wav_scp, tmp_path / f"m{m}_{wav_scp.parent.name}")
        for m, model in enumerate(models)
        for wav_scp in sets
    ]
    texts = decode_jobs(jobs, decode_options(CTC_OPTIONS), nj=2)
    assert [str(t) for t in texts] == [f"{job.out_dir}/text" for job in jobs]
    for job in jobs[::3]:  # model 0 on dev, model 1 on test
        expected = reference_text(job, tmp_path / f"ref_{Path(job.out_dir).name}")
        assert Path(job.out_dir, "text").read_text() == expected
    assert Path(jobs[0].out_dir, "text").read_text().count("\n") == 5


def test_each_set_is_split_round_robin_into_nj_shards_with_a_log_each(setup, tmp_path):
    root, models, sets = setup
    job = job_on(models[0], sets[0], tmp_path / "out")
    decode_jobs([job], decode_options(CTC_OPTIONS), nj=2)
    logdir = tmp_path / "out" / "logdir"
    assert (logdir / "keys.1.scp").read_text().split() == [
        "utt10_0",
        "utt10_2",
        "utt10_4",
    ]
    assert (logdir / "keys.2.scp").read_text().split() == ["utt10_1", "utt10_3"]
    for n in (1, 2):
        assert (logdir / f"output.{n}" / "1best_recog" / "token").is_file()
        assert "decoding" in (logdir / f"decode.{n}.log").read_text()


def test_more_workers_than_utterances_give_one_shard_per_utterance(setup, tmp_path):
    root, models, sets = setup
    job = job_on(models[1], sets[1], tmp_path / "out")
    decode_jobs([job], decode_options(CTC_OPTIONS), nj=8)
    assert sorted(p.name for p in (tmp_path / "out/logdir").glob("keys.*")) == [
        "keys.1.scp",
        "keys.2.scp",
        "keys.3.scp",
    ]
    assert (tmp_path / "out" / "text").read_text().count("\n") == 3


def test_a_second_run_replaces_the_output_of_the_first(setup, tmp_path):
    root, models, sets = setup
    out = tmp_path / "out"
    decode_jobs([job_on(models[0], sets[0], out)], decode_options(CTC_OPTIONS), nj=2)
    decode_jobs([job_on(models[0], sets[1], out)], decode_options(CTC_OPTIONS), nj=2)
    keys = [line.split()[0] for line in (out / "text").read_text().splitlines()]
    assert keys == ["utt11_0", "utt11_1", "utt11_2"]
    assert not (out / "logdir" / "output.3").exists()


def test_a_missing_model_file_fails_naming_the_shards_log(setup, tmp_path):
    root, models, sets = setup
    broken = DecodeJob(models[0].config, str(tmp_path / "none.pth"), "", "")
    job = job_on(broken, sets[1], tmp_path / "out")
    with pytest.raises(DecodeError, match=r"decode\.1\.log: FileNotFoundError"):
        decode_jobs([job], decode_options(CTC_OPTIONS), nj=1)
    assert "none.pth" in (tmp_path / "out/logdir/decode.1.log").read_text()
    assert not (tmp_path / "out" / "text").exists()


def test_an_empty_set_fails_naming_the_file(setup, tmp_path):
    root, models, sets = setup
    (tmp_path / "wav.scp").write_text("")
    job = job_on(models[0], tmp_path / "wav.scp", tmp_path / "out")
    with pytest.raises(DecodeError, match=r"wav\.scp: no utterances to decode"):
        decode_jobs([job], decode_options(CTC_OPTIONS), nj=2)


def test_a_missing_set_fails_naming_the_file(setup, tmp_path):
    root, models, sets = setup
    job = job_on(models[0], tmp_path / "none" / "wav.scp", tmp_path / "out")
    with pytest.raises(DecodeError, match=r"none/wav\.scp: no such file"):
        decode_jobs([job], decode_options(CTC_OPTIONS), nj=2)


def test_the_command_line_passes_the_options_after_the_separator(setup, tmp_path):
    root, models, sets = setup
    model = models[0]
    ssl_decode_main(
        [
            "--nj",
            "1",
            "--job",
            model.config,
            model.model,
            str(sets[1]),
            str(tmp_path / "a"),
        ]
        + ["--", *CTC_OPTIONS, "--nbest", "2"]
    )
    assert (tmp_path / "a/logdir/output.1/2best_recog/text").is_file()
    assert (tmp_path / "a/text").read_text().count("\n") == 3


def test_the_command_line_reports_a_failed_shard_with_exit_status_1(
    setup, tmp_path, capsys
):
    root, models, sets = setup
    job = ["--job", models[0].config, str(tmp_path / "none.pth"), str(sets[1])]
    with pytest.raises(SystemExit) as exit_info:
        ssl_decode_main([*job, str(tmp_path / "out"), "--", *CTC_OPTIONS])
    assert exit_info.value.code == 1
    assert "ssl_decode: error: decoding failed; see" in capsys.readouterr().err
