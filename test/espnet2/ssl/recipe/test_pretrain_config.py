"""Tests for espnet2/ssl/recipe/pretrain_config.py and espnet2/bin/ssl_recipe_config.py.

Run against the recipe's real configs as well as small hand-written ones.
"""

from pathlib import Path

import pytest
import yaml

from espnet2.bin.ssl_recipe_config import main
from espnet2.ssl.recipe.pretrain_config import (
    RecipeConfigError,
    needs_labels,
    num_blocks,
    write_with_num_classes,
)

REPO_ROOT = Path(__file__).resolve().parents[4]
TUNING = REPO_ROOT / "egs2" / "mini_synth" / "ssl2" / "conf" / "tuning"


def write(path: Path, config) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_hubert_needs_labels_and_wav2vec2_does_not():
    assert needs_labels(TUNING / "train_ssl_hubert_tiny.yaml")
    assert not needs_labels(TUNING / "train_ssl_wav2vec2_tiny.yaml")


def test_num_blocks_reads_the_encoder_conf():
    assert num_blocks(TUNING / "train_ssl_hubert_tiny.yaml") == 3


def test_num_classes_is_set_and_everything_else_kept(tmp_path):
    src = TUNING / "train_ssl_hubert_tiny.yaml"
    out = tmp_path / "sub" / "train_config.yaml"
    write_with_num_classes(src, 7, out)
    before, after = yaml.safe_load(src.read_text()), yaml.safe_load(out.read_text())
    assert after["loss"][0]["conf"]["num_classes"] == 7
    after["loss"][0]["conf"]["num_classes"] = before["loss"][0]["conf"]["num_classes"]
    assert after == before


def test_a_hubert_loss_without_conf_gets_one(tmp_path):
    src = write(tmp_path / "c.yaml", {"loss": [{"name": "hubert"}]})
    write_with_num_classes(src, 5, tmp_path / "o.yaml")
    loss = yaml.safe_load((tmp_path / "o.yaml").read_text())["loss"][0]
    assert loss["conf"] == {"num_classes": 5}


@pytest.mark.parametrize(
    "config, match",
    [
        ({"encoder": "transformer"}, "no 'loss' entry"),
        ({"loss": "hubert"}, "must be a list"),
        ({"loss": [{"conf": {}}]}, "must be a list"),
        ([1, 2], "not a YAML mapping"),
    ],
)
def test_unusable_configs_are_explained(tmp_path, config, match):
    with pytest.raises(RecipeConfigError, match=match):
        needs_labels(write(tmp_path / "c.yaml", config))


def test_setting_num_classes_without_a_label_loss_is_an_error(tmp_path):
    with pytest.raises(RecipeConfigError, match="no loss trains on labels"):
        write_with_num_classes(
            TUNING / "train_ssl_wav2vec2_tiny.yaml", 5, tmp_path / "o.yaml"
        )


def test_missing_num_blocks_asks_for_an_explicit_layer(tmp_path):
    src = write(tmp_path / "c.yaml", {"loss": [{"name": "hubert"}]})
    with pytest.raises(RecipeConfigError, match="--next_target_layer"):
        num_blocks(src)


def test_cli_prints_the_facts_and_fails_cleanly(tmp_path, capsys):
    main(["needs_labels", str(TUNING / "train_ssl_hubert_tiny.yaml")])
    main(["num_blocks", str(TUNING / "train_ssl_hubert_tiny.yaml")])
    assert capsys.readouterr().out.split() == ["true", "3"]
    with pytest.raises(SystemExit) as code:
        main(["needs_labels", str(tmp_path / "missing.yaml")])
    assert code.value.code == 1
    assert "no such config" in capsys.readouterr().err
