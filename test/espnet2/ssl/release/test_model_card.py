"""The architecture part of the model card, read from the shipped training configs."""

from pathlib import Path

import pytest
import yaml

from espnet2.ssl.release.model_card import _architecture_lines, architecture

ROOT = Path(__file__).resolve().parents[4]
TUNING = ROOT / "egs2" / "librispeech" / "ssl2" / "conf" / "tuning"


def _config(name):
    return yaml.safe_load((TUNING / name).read_text(encoding="utf-8"))


def test_a_summary_mixing_card_names_every_layer_of_both_branches():
    arch = architecture(_config("train_ssl_wav2vec2_summary_mixing_base.yaml"))
    assert arch["encoder"] == "summary_mixing"
    assert arch["mixer"] == "summary_mixing"
    assert arch["local_units"] == [768, 768]  # hidden [768] + output 768
    assert arch["summary_units"] == [768, 768]
    assert arch["mixer_layer_norm"] is True
    lines = _architecture_lines({**arch, "parameters": 158053505})
    assert "| local_units | [768, 768] |" in lines
    assert "| parameters | 158.05 M |" in lines


@pytest.mark.parametrize(
    "name", ["train_ssl_hubert_base.yaml", "train_ssl_wav2vec2_base.yaml"]
)
def test_a_transformer_card_has_no_summary_mixing_rows(name):
    arch = architecture(_config(name))
    assert arch["objective"] in ("hubert", "wav2vec2")
    assert not {"local_units", "summary_units", "mixer_layer_norm"} & set(arch)
