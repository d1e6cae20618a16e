"""espnet2/bin/ssl_fairseq_import.py: a fairseq checkpoint becomes config.yaml +
model.pth that ``SSLTask.build_model_from_file`` loads; exit statuses 3 (a field our
model cannot express), 1 (bad input) and 2 (bad options), each with one error line.

The checkpoints are made by test/helpers/fairseq_builders.py
(fairseq's key
layout and config fields).
"""

from pathlib import Path

import fairseq_builders as builders
import pytest
import torch

from espnet2.bin import ssl_fairseq_import
from espnet2.ssl.release.fairseq.convert import import_fairseq
from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[3]


def write_checkpoint(path: Path, kind: str = "hubert", **model_overrides) -> Path:
    raw = builders.checkpoint_dict(kind, False, "cfg")
    raw["cfg"]["model"].update(model_overrides)
    torch.save(raw, path)
    return path


def run_cli_error(capsys, *args) -> tuple:
    """(exit status, stderr lines) of a run that fails."""
    with pytest.raises(SystemExit) as exit_info:
        ssl_fairseq_import.main([str(arg) for arg in args])
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_cli_writes_a_model_that_ssl_task_loads_with_the_same_weights(tmp_path):
    checkpoint = write_checkpoint(tmp_path / "hubert.pt")
    ssl_fairseq_import.main(
        ["--checkpoint", str(checkpoint), "--out_dir", str(tmp_path / "out"),
         "--num_classes", "7", "--seed", "1"]
    )  # fmt: skip
    model, args = SSLTask.build_model_from_file(
        tmp_path / "out/config.yaml", tmp_path / "out/model.pth"
    )
    expected, _ = import_fairseq(checkpoint, num_classes=7, seed=1)
    state, want = model.state_dict(), expected.state_dict()
    assert set(state) == set(want)
    assert all(torch.equal(state[key], want[key]) for key in want)
    assert args.loss[0]["conf"]["num_classes"] == 7
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "config.yaml",
        "model.pth",
    ]


def test_cli_exits_3_naming_a_field_our_model_cannot_express(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "c.pt", layer_type="conformer")
    status, lines = run_cli_error(
        capsys, "--checkpoint", checkpoint, "--out_dir", tmp_path / "out"
    )
    assert status == 3
    assert lines[-1].startswith("ssl_fairseq_import: error: NotExpressibleError: ")
    assert "fairseq layer_type='conformer'" in lines[-1]
    assert "Traceback" not in "\n".join(lines)
    assert not (tmp_path / "out").exists()


def test_cli_exits_1_naming_the_file_and_the_fix(tmp_path, capsys):
    (tmp_path / "noise.pt").write_bytes(b"not a checkpoint")
    status, lines = run_cli_error(
        capsys, "--checkpoint", tmp_path / "noise.pt", "--out_dir", tmp_path / "o"
    )
    assert status == 1
    assert lines[-1].startswith("ssl_fairseq_import: error: FairseqCheckpointError: ")
    assert "noise.pt" in lines[-1] and "Fix: " in lines[-1]


def test_cli_exits_1_for_head_options_of_a_wav2vec2_checkpoint(tmp_path, capsys):
    checkpoint = write_checkpoint(tmp_path / "w.pt", kind="wav2vec2")
    status, lines = run_cli_error(capsys, "--checkpoint", checkpoint, "--out_dir",
                                  tmp_path / "o", "--num_classes", 5)  # fmt: skip
    assert status == 1
    assert "--num_classes / --final_dim set a new HuBERT head" in lines[-1]


@pytest.mark.parametrize(
    "args", [[], ["--checkpoint", "x.pt"], ["--checkpoint", "x.pt", "--out_dir", "o",
                                            "--num_classes", "0"]],
    ids=["nothing", "no_out_dir", "zero_classes"],
)  # fmt: skip
def test_cli_exits_2_on_bad_options(capsys, args):
    status, lines = run_cli_error(capsys, *args)
    assert status == 2
    assert lines[-1].startswith("usage: ") or "error: " in lines[-1]
