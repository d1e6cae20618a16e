"""espnet2.ssl.recipe.finetune_config: what stage 7 gives ESPnet's espnet_ssl ASR
frontend.

The models are real ESPnet SSL models (the tiny mini_synth HuBERT built by SSLTask),
packed by ``espnet2.bin.pack`` and loaded by ESPnet's own ``ESPnetSSLFrontend``,
through ``espnet_model_zoo`` for the zip.
"""

from pathlib import Path

import pytest
import torch
import yaml

from espnet2.bin.pack import main as pack_main
from espnet2.bin.ssl_recipe_config import main as recipe_config_main
from espnet2.ssl.recipe.finetune_config import (
    UNPACKED_DIR,
    UNTRAINED_MODEL,
    write_untrained_model,
    write_with_frontend_model,
)
from espnet2.ssl.recipe.pretrain_config import RecipeConfigError

REPO_ROOT = Path(__file__).resolve().parents[4]
CONF = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
SSL_CONFIG = CONF / "train_ssl_hubert_tiny.yaml"
ASR_CONFIG = CONF / "train_asr_ctc_tiny.yaml"


def write_train_config(directory: Path) -> Path:
    """The config.yaml ssl_train would write for the tiny HuBERT (50 classes)."""
    from espnet2.tasks.ssl import SSLTask

    tokens = directory / "tokens.txt"
    tokens.write_text("".join(f"{i}\n" for i in range(50)) + "<unk>\n")
    args = SSLTask.get_parser().parse_args(
        ["--config", str(SSL_CONFIG), "--token_list", str(tokens)]
        + ["--token_type", "word", "--output_dir", str(directory / "exp")]
    )
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(vars(args), sort_keys=False))
    return path


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu")


def frontend(path_or_url: str):
    """ESPnet's own espnet_ssl frontend loading ``path_or_url``."""
    from espnet2.asr.frontend.espnet_ssl import ESPnetSSLFrontend

    return ESPnetSSLFrontend(frontend_conf={"path_or_url": path_or_url})


def assert_upstream_equals(front, weights: dict) -> None:
    loaded = front.upstream.state_dict()
    shared = [k for k in weights if k in loaded]
    assert len(shared) > 10
    for key in shared:
        assert torch.equal(loaded[key], weights[key]), key


@pytest.fixture(scope="module")
def train_config(tmp_path_factory) -> Path:
    return write_train_config(tmp_path_factory.mktemp("ssl"))


def test_untrained_model_is_seeded_and_loads_in_the_frontend(train_config, tmp_path):
    first = write_untrained_model(train_config, tmp_path / "a", seed=0)
    again = write_untrained_model(train_config, tmp_path / "b", seed=0)
    other = write_untrained_model(train_config, tmp_path / "c", seed=1)
    assert first.name == UNTRAINED_MODEL
    assert (tmp_path / "a/config.yaml").read_text() == train_config.read_text()
    a, b, c = state(first), state(again), state(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    key = "encoder.encoders.0.self_attn.linear_q.weight"
    assert not torch.equal(a[key], c[key])
    front = frontend(str(first))  # a .pth next to its config.yaml
    assert front.output_size() == 96
    assert_upstream_equals(front, a)


def test_frontend_model_is_written_into_the_asr_config(train_config, tmp_path):
    model = write_untrained_model(train_config, tmp_path / "m", seed=0)
    out = tmp_path / "asr" / "train_config.yaml"
    write_with_frontend_model(ASR_CONFIG, model, out)
    written = yaml.safe_load(out.read_text())
    original = yaml.safe_load(ASR_CONFIG.read_text())
    assert original["frontend_conf"]["frontend_conf"]["path_or_url"] is None
    assert written["frontend_conf"]["frontend_conf"]["path_or_url"] == str(model)
    written["frontend_conf"]["frontend_conf"]["path_or_url"] = None
    assert written == original  # nothing else changed


def test_asr_config_without_espnet_ssl_frontend_is_refused(tmp_path):
    config = tmp_path / "asr.yaml"
    config.write_text("frontend: default\nencoder: transformer\n")
    model = tmp_path / "model.pth"
    model.write_bytes(b"")
    with pytest.raises(RecipeConfigError, match="frontend: espnet_ssl"):
        write_with_frontend_model(config, model, tmp_path / "out.yaml")


def test_missing_model_names_the_stage_to_run(tmp_path):
    with pytest.raises(RecipeConfigError, match="stage 6"):
        write_with_frontend_model(ASR_CONFIG, tmp_path / "no.zip", tmp_path / "o.yaml")


def pack(train_config: Path, model: Path, zip_path: Path) -> None:
    pack_main(
        ["ssl", "--ssl_train_config", str(train_config), "--ssl_model_file",
         str(model), "--outpath", str(zip_path)]
    )  # fmt: skip


def test_a_zip_is_unpacked_once_and_the_frontend_reads_the_unpacked_model(
    train_config, tmp_path
):
    zip_path = tmp_path / "model.zip"
    first = write_untrained_model(train_config, tmp_path / "first", seed=0)
    pack(tmp_path / "first/config.yaml", first, zip_path)
    out = tmp_path / "asr" / "train_config.yaml"
    write_with_frontend_model(ASR_CONFIG, zip_path, out)
    path = yaml.safe_load(out.read_text())["frontend_conf"]["frontend_conf"][
        "path_or_url"
    ]
    assert path.endswith(".pth") and Path(path).is_relative_to(
        out.parent / UNPACKED_DIR
    )
    assert (Path(path).parent / "config.yaml").is_file()
    assert_upstream_equals(frontend(path), state(first))
    # the zip repacked with other weights (retraining): stage 7 unpacks it again
    second = write_untrained_model(train_config, tmp_path / "second", seed=1)
    zip_path.unlink()
    pack(tmp_path / "second/config.yaml", second, zip_path)
    write_with_frontend_model(ASR_CONFIG, zip_path, out)
    path = yaml.safe_load(out.read_text())["frontend_conf"]["frontend_conf"][
        "path_or_url"
    ]
    assert Path(path).is_relative_to(out.parent / UNPACKED_DIR)
    assert_upstream_equals(frontend(path), state(second))


def test_the_untrained_model_of_a_zip_is_that_of_its_config(train_config, tmp_path):
    # the --asr_baseline of --pretrained_model x.zip: built from the zip's own config,
    # before (or while) the fine-tuning of the zip unpacks it elsewhere
    zip_path = tmp_path / "model.zip"
    trained = write_untrained_model(train_config, tmp_path / "trained", seed=5)
    pack(tmp_path / "trained/config.yaml", trained, zip_path)
    from_zip = write_untrained_model(zip_path, tmp_path / "u", seed=0)
    from_config = write_untrained_model(train_config, tmp_path / "c", seed=0)
    a, b = state(from_zip), state(from_config)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "u" / UNPACKED_DIR).is_dir()
    assert_upstream_equals(frontend(str(from_zip)), a)
    with pytest.raises(RecipeConfigError, match="stage 6"):
        write_untrained_model(tmp_path / "no.zip", tmp_path / "n", seed=0)


def test_a_zip_that_is_not_a_packed_ssl_model_is_refused(tmp_path):
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    with pytest.raises(Exception, match="meta.yaml"):
        write_with_frontend_model(ASR_CONFIG, bad, tmp_path / "asr" / "o.yaml")


def test_cli_set_frontend_model_and_its_errors(train_config, tmp_path, capsys):
    model = write_untrained_model(train_config, tmp_path / "m", seed=0)
    out = tmp_path / "train_config.yaml"
    recipe_config_main(["set_frontend_model", str(ASR_CONFIG), str(model), str(out)])
    assert str(model) in out.read_text()
    with pytest.raises(SystemExit) as err:
        recipe_config_main(
            ["set_frontend_model", str(SSL_CONFIG), str(model), str(out)]
        )
    assert err.value.code == 1
    assert "frontend: espnet_ssl" in capsys.readouterr().err


def test_cli_untrained_model(train_config, tmp_path):
    recipe_config_main(["untrained_model", str(train_config), str(tmp_path / "u")])
    assert (tmp_path / "u" / UNTRAINED_MODEL).is_file()
    assert (tmp_path / "u" / "config.yaml").is_file()


class NotWeights:
    """A pickled Python object: what a malicious or wrong file could hold."""


@pytest.mark.parametrize(
    "content, message",
    [
        ({"w": NotWeights()}, "weights only"),
        ({"w": 1}, "not a model state dict"),
    ],
)
def test_a_packed_zip_whose_checkpoint_is_not_weights_is_refused(
    train_config, tmp_path, content, message
):
    model = write_untrained_model(train_config, tmp_path / "m", seed=0)
    torch.save(content, model)  # same name, other content
    zip_path = tmp_path / "model.zip"
    pack(tmp_path / "m/config.yaml", model, zip_path)
    with pytest.raises(RecipeConfigError, match=message):
        write_with_frontend_model(ASR_CONFIG, zip_path, tmp_path / "asr" / "o.yaml")
