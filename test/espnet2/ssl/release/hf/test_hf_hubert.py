"""espnet2/ssl/release/hf/hubert.py and espnet2/bin/ssl_hf_convert.py: our HuBERT
exports to
a transformers HubertModel folder whose hidden states equal ours, round-trips
bitwise, imports a folder without our head, and names what it refuses.

Hidden states: HF's ``hidden_states[0]`` is the encoder input after the positional
conv (and, post-LN, the encoder's layer_norm); ``inference_encode`` has no such
output. HF's ``hidden_states[i]`` (i >= 1) is layer i's output: our
``layers[i - 1]``. Pre-LN (``do_stable_layer_norm``), in transformers 4.57: the last
entry of the list is after the final layer_norm, like ``last_hidden_state`` (our
final output, after ``after_norm``), so our ``layers[-1]`` has no HF twin. Post-LN:
both are our ``layers[-1]``, which is also our final output.

The GroupNorm of the BASE CNN's first layer normalises each channel over all frames,
padded ones included, so an utterance in a padded batch gives other features than
alone, in both models alike. So utterances are compared alone, and a padded batch
is compared with the same padded batch (HF given ``attention_mask``).
"""

import copy
import json
import logging
from pathlib import Path
from typing import Dict

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_configs import tiny_config
from transformers import HubertConfig, HubertModel

from espnet2.bin import ssl_hf_convert
from espnet2.bin.pack import main as pack_main
from espnet2.ssl.release.hf import hubert as hf_hubert
from espnet2.ssl.release.hf.keys import ESPNET_BUFFERS, EXTRAS_ATTRIBUTE
from espnet2.ssl.release.hf.wav2vec2 import NotExpressibleError, build_espnet_model
from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[5]
NUM_CLASSES = 12
TOLERANCE = 1e-4  # absolute, float32; measured <= 1.0e-6
LENGTHS = (8000, 5600, 6400)  # samples; 24, 17 and 19 frames


def tiny_hubert(**sections) -> Dict:
    """The recipe's tiny HuBERT at test sizes (test/helpers/tiny_configs.py), with
    ``NUM_CLASSES`` classes; ``sections`` update its parts."""
    config = tiny_config("hubert", **sections)
    config["loss"][0]["conf"].update(num_classes=NUM_CLASSES, final_dim=8)
    config["token_list"] = [str(i) for i in range(NUM_CLASSES)] + ["<unk>"]
    return config


FORMS = {
    "base": tiny_hubert(),
    # HuBERT LARGE: LayerNorm CNN with bias, pre-LN encoder (do_stable_layer_norm)
    "large": tiny_hubert(
        frontend_conf=dict(norm_mode="layer_norm", bias=True),
        encoder_conf=dict(normalize_before=True, embed_layer_norm=False),
    ),
    # HF feat_proj_layer_norm: false
    "no_feature_norm": tiny_hubert(model_conf=dict(feature_layer_norm=False)),
}


def randomized_model(config: Dict):
    """Our model with every parameter random (norms and biases too), eval mode."""
    torch.manual_seed(0)
    model = build_espnet_model(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.copy_(0.1 * noise)
            elif name.endswith("original0"):  # weight-norm magnitudes
                param.mul_(0.5 + noise.abs())
            elif param.dim() == 1 and "mask" not in name:  # norm scales
                param.mul_(1.0 + 0.2 * noise)
        model.global_step.fill_(1234)
        model.num_updates.fill_(617)
        model.seen_audio.seen_samples.fill_(16000 * 3600)
    return model.eval()


def cli(*args) -> None:
    ssl_hf_convert.main([str(arg) for arg in args])


def write_espnet(config: Dict, model, folder: Path) -> Path:
    """config.yaml and model.pth in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(model.state_dict(), folder / "model.pth")
    return folder


def to_hf_args(folder: Path, out_dir: Path) -> list:
    return ["--to_hf", "--ssl_train_config", folder / "config.yaml"] + [
        "--ssl_model_file",
        folder / "model.pth",
        "--out_dir",
        out_dir,
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """form -> (our model, ESPnet folder, HF folder), exported once by the CLI."""
    cache = {}

    def export(form: str):
        if form not in cache:
            root = tmp_path_factory.mktemp(form)
            model = randomized_model(FORMS[form])
            espnet_dir = write_espnet(FORMS[form], model, root / "espnet")
            cli(*to_hf_args(espnet_dir, root / "hf"))
            cache[form] = model, espnet_dir, root / "hf"
        return cache[form]

    return export


def load_hubert(hf_dir: Path) -> HubertModel:
    hf_model, info = HubertModel.from_pretrained(
        hf_dir, local_files_only=True, output_loading_info=True
    )
    problems = ("missing_keys", "unexpected_keys", "mismatched_keys")
    assert not any(info[kind] for kind in problems), info
    return hf_model.float().eval()


def audio(lengths) -> tuple:
    """Zero-padded waveforms (B, S) float32, lengths (B,), attention mask (B, S)."""
    generator = torch.Generator().manual_seed(2)
    speech = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        speech[b, :n] = 0.1 * torch.randn(n, generator=generator)
    speech_lengths = torch.tensor(lengths)
    attention_mask = torch.arange(max(lengths))[None, :] < speech_lengths[:, None]
    return speech, speech_lengths, attention_mask.long()


def layer_pairs(layers, final, hidden_states, hf_config) -> list:
    """(ours, HF's) per layer: HF's ``hidden_states[1:]`` against our ``layers``;
    pre-LN, HF's last entry is after the final layer_norm (our ``final``)."""
    theirs = list(hidden_states[1:])
    if hf_config.do_stable_layer_norm:
        return list(zip(layers[:-1], theirs[:-1])) + [(final, theirs[-1])]
    return list(zip(layers, theirs))


def max_layer_differences(model, hf_model, lengths, attention_mask: bool) -> list:
    """max |ours - HF| over valid frames: every layer, then the final output."""
    speech, speech_lengths, mask = audio(lengths)
    with torch.no_grad():
        final, layers, frames = model.inference_encode(speech, speech_lengths)
        out = hf_model(
            speech,
            attention_mask=mask if attention_mask else None,
            output_hidden_states=True,
        )
    assert len(out.hidden_states) == len(layers) + 1
    pairs = layer_pairs(layers, final, out.hidden_states, hf_model.config)
    pairs.append((final, out.last_hidden_state))
    valid = torch.arange(final.shape[1])[None, :] < frames[:, None]  # (B, T)
    return [(ours - theirs)[valid].abs().max().item() for ours, theirs in pairs]


def assert_identical(state: Dict, expected: Dict) -> None:
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert state[key].dtype == tensor.dtype, key
        assert torch.equal(state[key], tensor), key


# --------------------------------------------------------------- hidden states


def test_export_is_a_hubert_folder_with_our_head_beside_it(exported):
    _, _, hf_dir = exported("base")
    config = HubertConfig.from_pretrained(hf_dir, local_files_only=True)
    assert config.model_type == "hubert"
    head = load_file(str(hf_dir / hf_hubert.HEAD_FILE))
    assert head["label_embeddings.weight"].shape == (NUM_CLASSES, 8)
    assert sorted(head) == [
        "final_proj.bias",
        "final_proj.weight",
        "label_embeddings.bias",
        "label_embeddings.weight",
    ]
    load_hubert(hf_dir)  # asserts no missing, unexpected or mismatched key


@pytest.mark.parametrize("form", FORMS)
def test_every_layer_equals_inference_encode_for_each_utterance_alone(exported, form):
    model, _, hf_dir = exported(form)
    hf_model = load_hubert(hf_dir)
    for length in LENGTHS:
        errors = max_layer_differences(model, hf_model, (length,), False)
        assert max(errors) <= TOLERANCE, (length, errors)


@pytest.mark.parametrize("form", ["base", "large"])
def test_every_layer_equals_inference_encode_on_a_padded_batch(exported, form):
    model, _, hf_dir = exported(form)
    errors = max_layer_differences(model, load_hubert(hf_dir), LENGTHS, True)
    assert max(errors) <= TOLERANCE, errors


# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("form", FORMS)
def test_ours_to_hf_to_ours_through_the_cli_restores_config_and_weights(
    exported, tmp_path, form
):
    model, _, hf_dir = exported(form)
    cli("--from_hf", hf_dir, "--out_dir", tmp_path)
    back, args = SSLTask.build_model_from_file(
        tmp_path / "config.yaml", tmp_path / "model.pth"
    )
    assert_identical(back.state_dict(), model.state_dict())
    config = vars(args)
    for section in ("frontend_conf", "preencoder_conf", "encoder_conf", "model_conf"):
        expected = FORMS[form][section]
        assert {key: config[section][key] for key in expected} == expected
    for key in ("loss", "util"):
        conf, expected = config[key][0]["conf"], FORMS[form][key][0]["conf"]
        assert {k: conf[k] for k in expected} == expected
    assert config["token_list"] == FORMS[form]["token_list"]


def test_hf_with_our_head_to_ours_to_hf_is_identical(exported):
    _, _, hf_dir = exported("large")
    hf_model, head = hf_hubert.load_folder(hf_dir)
    again, again_head = hf_hubert.to_hf(*hf_hubert.from_hf(hf_model, head))
    assert_identical(again.state_dict(), hf_model.state_dict())
    assert_identical(again_head, head)
    got, want = again.config.to_dict(), hf_model.config.to_dict()
    for written_by_save_pretrained in ("_name_or_path", "architectures", "dtype"):
        got.pop(written_by_save_pretrained), want.pop(written_by_save_pretrained)
    assert got == want


def hubert_from_scratch(**overrides) -> HubertModel:
    """A tiny HubertModel with HF's own init and no ESPnet values (no head)."""
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=[16] * 7,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        **overrides,
    )
    torch.manual_seed(0)
    return HubertModel(config).eval()


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)],
    ids=["base", "large"],
)
def test_hf_without_head_to_ours_to_hf_is_identical(overrides):
    hf_model = hubert_from_scratch(**overrides)
    model, config = hf_hubert.from_hf(hf_model, num_classes=7)
    again, head = hf_hubert.to_hf(model, config)
    assert_identical(again.state_dict(), hf_model.state_dict())
    assert head["label_embeddings.weight"].shape == (7, hf_hubert.DEFAULT_FINAL_DIM)
    got, want = again.config.to_dict(), hf_model.config.to_dict()
    buffers = got.pop(EXTRAS_ATTRIBUTE)["buffers"]
    assert buffers == dict.fromkeys(ESPNET_BUFFERS, 0)
    assert got == want


def test_cli_round_trip_keeps_every_field_of_the_source_config_json(tmp_path):
    hf_only = dict(final_dropout=0.3, feat_extract_dropout=0.2, vocab_size=40)
    hubert_from_scratch(**hf_only).save_pretrained(tmp_path / "source")
    cli(
        "--from_hf",
        tmp_path / "source",
        "--out_dir",
        tmp_path / "o",
        "--num_classes",
        7,
    )
    config = yaml.safe_load((tmp_path / "o/config.yaml").read_text())
    assert config["hf_config_fields"] == hf_only
    cli("--to_hf", "--ssl_train_config", tmp_path / "o/config.yaml",
        "--ssl_model_file", tmp_path / "o/model.pth",
        "--out_dir", tmp_path / "again")  # fmt: skip
    source, again = (
        json.loads((tmp_path / name / "config.json").read_text())
        for name in ("source", "again")
    )
    again.pop(EXTRAS_ATTRIBUTE)
    assert again == source


def test_cli_imports_a_folder_without_head_with_a_new_seeded_head(tmp_path, caplog):
    hf_model = hubert_from_scratch()
    hf_model.save_pretrained(tmp_path / "hf")
    with caplog.at_level(logging.WARNING):
        cli(
            "--from_hf",
            tmp_path / "hf",
            "--out_dir",
            tmp_path / "o",
            "--num_classes",
            7,
        )
    assert "a new one is initialised (num_classes=7" in caplog.text
    model, args = SSLTask.build_model_from_file(
        tmp_path / "o/config.yaml", tmp_path / "o/model.pth"
    )
    assert args.token_list == [str(i) for i in range(7)] + ["<unk>"]
    same_seed, _ = hf_hubert.from_hf(hf_model, num_classes=7, seed=0)
    assert_identical(model.state_dict(), same_seed.state_dict())
    other_seed, _ = hf_hubert.from_hf(hf_model, num_classes=7, seed=1)
    key = "losses.0.decoder.label_embeddings.weight"
    assert not torch.equal(other_seed.state_dict()[key], model.state_dict()[key])


def test_cli_exports_a_packed_model_like_its_files(exported, tmp_path):
    _, espnet_dir, hf_dir = exported("base")
    zip_path = tmp_path / "model.zip"
    pack_main(
        ["ssl", "--ssl_train_config", str(espnet_dir / "config.yaml"),
         "--ssl_model_file", str(espnet_dir / "model.pth"), "--outpath", str(zip_path)]
    )  # fmt: skip
    cli("--to_hf", "--ssl_packed_model", zip_path, "--out_dir", tmp_path / "hf")
    for name in ("model.safetensors", hf_hubert.HEAD_FILE):
        assert_identical(
            load_file(str(tmp_path / "hf" / name)), load_file(str(hf_dir / name))
        )


# ------------------------------------------------------------------ bad inputs


def run_cli_error(capsys, *args) -> tuple:
    """(exit status, stderr lines) of a CLI run that fails."""
    with pytest.raises(SystemExit) as exit_info:
        cli(*args)
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


def test_cli_without_num_classes_for_a_folder_without_head_says_how(tmp_path, capsys):
    hubert_from_scratch().save_pretrained(tmp_path / "hf")
    status, lines = run_cli_error(
        capsys, "--from_hf", tmp_path / "hf", "--out_dir", tmp_path / "o"
    )
    assert status == 1
    assert "ssl_hf_convert: error: ValueError" in lines[-1]
    assert "--num_classes" in lines[-1]


def test_cli_reports_a_missing_hf_folder(tmp_path, capsys):
    status, lines = run_cli_error(
        capsys, "--from_hf", tmp_path / "absent", "--out_dir", tmp_path / "o"
    )
    assert status == 1
    assert "ssl_hf_convert: error: OSError" in lines[-1]
    assert "config.json does not exist" in lines[-1]


def with_part(section: str, value) -> Dict:
    config = copy.deepcopy(FORMS["base"])
    if isinstance(value, dict) and isinstance(config.get(section), dict):
        config[section].update(value)
    else:
        config[section] = value
    return config


@pytest.mark.parametrize(
    "config, option",
    [
        (with_part("encoder", "summary_mixing"), "encoder='summary_mixing'"),
        (with_part("encoder", "conformer"), "encoder='conformer'"),
        (with_part("encoder_conf", dict(qk_norm=True)), "encoder_conf.qk_norm=True"),
        (with_part("loss", FORMS["base"]["loss"] * 2), "loss=['hubert', 'hubert']"),
        (with_part("loss", [dict(name="data2vec")]), "loss[0].name='data2vec'"),
    ],
    ids=["summary_mixing", "conformer", "qk_norm", "two_losses", "other_loss"],
)
def test_cli_exits_with_status_3_and_one_line_for_what_hf_cannot_express(
    tmp_path, capsys, config, option
):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "model.pth").write_bytes(b"")  # never read: the config decides
    status, lines = run_cli_error(capsys, *to_hf_args(tmp_path, tmp_path / "hf"))
    assert status == 3
    assert lines[-1].startswith("ssl_hf_convert: error: NotExpressibleError: ")
    assert option in lines[-1]
    assert "Traceback" not in "\n".join(lines)
    assert not (tmp_path / "hf").exists()


def test_hf_config_we_cannot_express_is_refused_naming_the_field():
    config = hubert_from_scratch().config
    config.conv_pos_batch_norm = True
    with pytest.raises(NotExpressibleError, match="conv_pos_batch_norm"):
        hf_hubert.espnet_config_from_hf(config, num_classes=7)


def test_missing_num_classes_is_an_error_not_a_refusal():
    config = copy.deepcopy(FORMS["base"])
    del config["loss"][0]["conf"]["num_classes"]
    with pytest.raises(ValueError, match=r"loss\.0\.conf\.num_classes is required"):
        hf_hubert.hf_config_from_espnet(config)
