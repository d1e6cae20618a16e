"""espnet2/ssl/release/fairseq/ (checkpoint.py, config.py, keys.py, convert.py) and the
loader of espnet2/ssl/model_files.py: fairseq wav2vec 2.0 and
HuBERT checkpoints import without fairseq, equal to the Hugging Face import of the
same weights, and what is refused is named.

The checkpoints (test/helpers/fairseq_builders.py) are in fairseq's own key
layout and config fields (fairseq @ 3d262bb2 ``Wav2Vec2Model`` / ``HubertModel``;
``cfg`` dict style of fairseq-hydra-train and ``args`` Namespace style of 2020's
fairseq-train), with random weights at tiny sizes. The reference is independent of
the importer: the test's own key map (:func:`reference_hf_state`) and HF config
(:func:`reference_hf_config`) load the same tensors into transformers'
``Wav2Vec2ForPreTraining`` / ``HubertModel``, which is saved and imported by
``ssl_hf_convert --from_hf``. Both ESPnet models must give identical
``inference_encode`` outputs (every layer and the final output) and identical
weights; the HF model's own hidden states are compared too.

With ``task.normalize: true`` (LARGE) the fairseq import normalises the waveform in
its frontend, so the HF side gets the normalised waveform (one utterance at a time).
In transformers 4.57 a stable-layer-norm (pre-LN) encoder's last ``hidden_states``
entry is after its final LayerNorm: it is compared with our final output.
"""

import argparse
import copy
import os
import sys
import types
from pathlib import Path
from typing import Dict, List

import fairseq_builders as builders
import numpy as np
import omegaconf
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2ForPreTraining,
)

from espnet2.bin import ssl_hf_convert
from espnet2.ssl.model_files import InertObject
from espnet2.ssl.release.fairseq.checkpoint import (
    FairseqCheckpointError,
    read_fairseq_checkpoint,
)
from espnet2.ssl.release.fairseq.config import conv_layers
from espnet2.ssl.release.fairseq.convert import import_fairseq
from espnet2.ssl.release.hf.wav2vec2 import NotExpressibleError
from espnet2.tasks.ssl import SSLTask

EXACT = 0.0  # the same weights through the same mapping: bitwise equal outputs
HF_TOLERANCE = 1e-4  # absolute, float32, against transformers' own forward
LENGTHS = (8000, 5600)  # samples: 399 and 279 frames (stride 20)


checkpoint_dict, model_fields = builders.checkpoint_dict, builders.model_fields
NUM_CLASSES, CONV_BASE = builders.NUM_CLASSES, builders.CONV_BASE


# ------------------------------------------------------ independent reference


def reference_hf_config(kind: str, large: bool):
    """The transformers config of the same network, written field by field."""
    fields = model_fields(kind, large)
    layers = builders.CONV_LAYERS[fields["conv_feature_layers"]]
    common = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, hidden_act="gelu",
        conv_dim=[c for c, _, _ in layers], conv_kernel=[k for _, k, _ in layers],
        conv_stride=[s for _, _, s in layers], conv_bias=large,
        feat_extract_norm="layer" if large else "group", do_stable_layer_norm=large,
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
        mask_time_prob=0.65, mask_time_length=10, layer_norm_eps=1e-5,
    )  # fmt: skip
    if kind == "wav2vec2":
        return Wav2Vec2Config(
            **common, num_codevector_groups=2, num_codevectors_per_group=8,
            codevector_dim=12, proj_codevector_dim=12, num_negatives=10,
        )  # fmt: skip
    return HubertConfig(**common, feat_proj_layer_norm=True)


def reference_hf_state(state: Dict[str, torch.Tensor], kind: str) -> Dict:
    """The test's own fairseq -> transformers key map (explicit per module)."""
    base = "wav2vec2." if kind == "wav2vec2" else ""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("feature_extractor.conv_layers."):
            i, module = parts[2], "conv" if parts[3] == "0" else "layer_norm"
            new = f"feature_extractor.conv_layers.{i}.{module}.{parts[-1]}"
        elif key.startswith("encoder.layers."):
            i, rest = parts[2], ".".join(parts[3:])
            rest = rest.replace("self_attn_layer_norm", "layer_norm")
            rest = rest.replace("self_attn.", "attention.")
            rest = rest.replace("fc1", "feed_forward.intermediate_dense")
            rest = rest.replace("fc2", "feed_forward.output_dense")
            new = f"encoder.layers.{i}.{rest}"
        elif key.startswith("encoder.pos_conv.0."):
            g_or_v = {"weight_g": "weight_g", "weight_v": "weight_v", "bias": "bias"}
            new = f"encoder.pos_conv_embed.conv.{g_or_v[parts[-1]]}"
        else:
            new = {"layer_norm": "feature_projection.layer_norm",
                   "post_extract_proj": "feature_projection.projection",
                   "mask_emb": "masked_spec_embed", "encoder": "encoder"}.get(
                       parts[0], None)  # fmt: skip
            if new is None:
                continue  # heads below
            new = new + key[len(parts[0]) :]
        out[base + new] = value
    if kind == "wav2vec2":
        out["quantizer.codevectors"] = state["quantizer.vars"]
        for name, hf in (
            ("quantizer.weight_proj", "quantizer.weight_proj"),
            ("project_q", "project_q"),
            ("final_proj", "project_hid"),
        ):
            for param in ("weight", "bias"):
                out[f"{hf}.{param}"] = state[f"{name}.{param}"]  # fmt: skip
    if "post_extract_proj.weight" not in state:  # fairseq: no projection
        out[base + "feature_projection.projection.weight"] = torch.eye(32)
        out[base + "feature_projection.projection.bias"] = torch.zeros(32)
    return out


def reference_hf_model(kind: str, large: bool, state: Dict):
    """The transformers model with the checkpoint's weights (strict load)."""
    config = reference_hf_config(kind, large)
    model = (Wav2Vec2ForPreTraining if kind == "wav2vec2" else HubertModel)(config)
    hf_state = reference_hf_state(state, kind)
    pos_conv = "encoder.pos_conv_embed.conv."
    base = "wav2vec2." if kind == "wav2vec2" else ""
    for name, new in (("weight_g", "original0"), ("weight_v", "original1")):
        hf_state[f"{base}{pos_conv}parametrizations.weight.{new}"] = hf_state.pop(
            f"{base}{pos_conv}{name}"
        )
    model.load_state_dict(hf_state, strict=True)
    return model.eval()


# ---------------------------------------------------------------- fixtures


CASES = {
    # like wav2vec_small.pt (2020, argparse) and wav2vec_vox_new.pt / hubert_*.pt
    "wav2vec2_base_args": ("wav2vec2", False, "args"),
    "wav2vec2_large_cfg": ("wav2vec2", True, "cfg"),
    "hubert_base_cfg": ("hubert", False, "cfg"),
    "hubert_large_args": ("hubert", True, "args"),
}


def save(raw, path: Path, legacy: bool = False) -> Path:
    torch.save(raw, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """case -> (fairseq import, HF-folder import, HF model), each built once."""
    cache = {}

    def build(case: str):
        if case not in cache:
            kind, large, style = CASES[case]
            root = tmp_path_factory.mktemp(case)
            raw = checkpoint_dict(kind, large, style)
            model, config = import_fairseq(save(raw, root / "x.pt"))
            hf_model = reference_hf_model(kind, large, raw["model"])
            hf_model.save_pretrained(root / "hf")
            extra = ["--num_classes", str(NUM_CLASSES), "--final_dim", "8"]
            extra = extra if kind == "hubert" else []
            ssl_hf_convert.main(
                ["--from_hf", str(root / "hf"), "--out_dir", str(root / "e"), *extra]
            )
            via_hf, _ = SSLTask.build_model_from_file(
                root / "e/config.yaml", root / "e/model.pth"
            )
            cache[case] = (model, config, via_hf.eval(), hf_model, large)
        return cache[case]

    return build


def waveforms(lengths) -> List[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]


def encode(model, wave: torch.Tensor) -> List[torch.Tensor]:
    """Every layer's output then the final output, (1, T, D) each."""
    with torch.no_grad():
        final, layers, _ = model.inference_encode(wave[None], torch.tensor([len(wave)]))
    return [*layers, final]


def hf_encode(hf_model, wave: torch.Tensor, large: bool) -> List[torch.Tensor]:
    """HF's layer outputs and last hidden state, ordered as :func:`encode`."""
    base = getattr(hf_model, "wav2vec2", hf_model)
    with torch.no_grad():
        out = base(wave[None], output_hidden_states=True)
    layers = list(out.hidden_states[1:])
    if large:  # the last entry is after the final LayerNorm: our final output
        layers = layers[:-1] + [None]
    return layers + [out.last_hidden_state]


def max_differences(ours: List, theirs: List) -> List[float]:
    return [
        float("nan") if b is None else (a - b).abs().max().item()
        for a, b in zip(ours, theirs)
    ]


# ----------------------------------------------------------- parity (numbers)


@pytest.mark.parametrize("case", CASES)
def test_every_layer_equals_the_hf_import_of_the_same_weights(imported, case):
    model, _, via_hf, hf_model, large = imported(case)
    for wave in waveforms(LENGTHS):
        reference = F.layer_norm(wave, wave.shape) if large else wave
        ours, theirs = encode(model, wave), encode(via_hf, reference)
        assert len(ours) == 3  # 2 layers + final
        assert max(max_differences(ours, theirs)) <= EXACT, case
        against_hf = max_differences(ours, hf_encode(hf_model, reference, large))
        assert max(d for d in against_hf if d == d) <= HF_TOLERANCE, against_hf


@pytest.mark.parametrize("case", CASES)
def test_weights_equal_the_hf_import_bitwise(imported, case):
    model, _, via_hf, _, _ = imported(case)
    ours, theirs = model.state_dict(), via_hf.state_dict()
    assert set(ours) == set(theirs)
    differing = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    # fairseq's update count travels, HF has none; a HuBERT head is new on both
    # sides, from the same seed
    assert differing == ["num_updates"]
    assert int(ours["num_updates"]) == 1234


def test_wav2vec2_loss_and_masking_options_come_from_fairseq(imported):
    _, config, _, _, _ = imported("wav2vec2_base_args")
    loss = config["loss"][0]["conf"]
    assert (loss["max_temperature"], loss["min_temperature"]) == (2.0, 0.25)
    assert loss["temperature_decay"] == 0.999
    assert (loss["diversity_weight"], loss["feature_penalty_weight"]) == (0.2, 5.0)
    assert (loss["num_negatives"], loss["cross_sample_negatives"]) == (10, 2)
    assert (loss["num_groups"], loss["num_entries"], loss["final_dim"]) == (2, 8, 12)
    mask = config["util"][0]["conf"]
    assert (mask["mask_prob"], mask["mask_length"], mask["min_masks"]) == (0.65, 10, 2)
    assert config["model_conf"]["feature_grad_mult"] == 1.0
    assert config["encoder_conf"]["layer_drop_rate"] == 0.05
    assert config["frontend_conf"]["normalize_audio"] is False


def test_large_models_normalise_the_waveform_in_the_frontend(imported):
    model, config, _, _, _ = imported("hubert_large_args")
    assert config["frontend_conf"]["normalize_audio"] is True
    assert config["model_conf"]["feature_grad_mult"] == 0.1
    wave = 10.0 * waveforms([4000])[0]  # variance 1: LayerNorm's eps is negligible
    for ours, scaled in zip(encode(model, wave), encode(model, 3.0 * wave + 0.5)):
        torch.testing.assert_close(ours, scaled, atol=1e-4, rtol=0)


def test_hubert_gets_a_new_head_with_fairseqs_classes_and_says_so(tmp_path, caplog):
    raw = checkpoint_dict("hubert", False, "cfg")
    path = save(raw, tmp_path / "h.pt")
    model, config = import_fairseq(path, seed=3)
    assert config["loss"][0]["conf"]["num_classes"] == NUM_CLASSES
    assert config["loss"][0]["conf"]["final_dim"] == 8
    assert config["token_list"] == [str(i) for i in range(NUM_CLASSES)] + ["<unk>"]
    note = "fairseq's HuBERT head (final_proj.bias (8,), final_proj.weight (8, 32), "
    assert note + "label_embs_concat (10, 8)) is not imported" in caplog.text
    other, _ = import_fairseq(path, num_classes=4, head_dim=6, seed=3)
    decoder = other.losses[0].decoder
    assert decoder.label_embeddings.weight.shape == (4, 6)


def test_hubert_without_label_embeddings_needs_num_classes(tmp_path):
    raw = checkpoint_dict("hubert", False, "cfg")
    del raw["model"]["label_embs_concat"]
    path = save(raw, tmp_path / "h.pt")
    with pytest.raises(FairseqCheckpointError, match="pass --num_classes K"):
        import_fairseq(path)
    model, config = import_fairseq(path, num_classes=5)
    assert config["loss"][0]["conf"]["num_classes"] == 5


def test_hubert_with_several_label_sets_needs_num_classes(tmp_path):
    raw = checkpoint_dict("hubert", False, "cfg")
    raw["cfg"]["task"]["labels"] = ["km", "phn"]
    with pytest.raises(FairseqCheckpointError, match="several label sets"):
        import_fairseq(save(raw, tmp_path / "h.pt"))


# ------------------------------------------------- real checkpoints' extras


def fake_fairseq_dictionary(monkeypatch):
    """A class pickled as ``fairseq.data.dictionary.Dictionary`` (fairseq absent)."""
    modules = ["fairseq", "fairseq.data", "fairseq.data.dictionary"]
    for name in modules:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    cls = type("Dictionary", (), {"__module__": "fairseq.data.dictionary"})
    monkeypatch.setattr(sys.modules["fairseq.data.dictionary"], "Dictionary", cls,
                        raising=False)  # fmt: skip
    dictionary = cls()
    dictionary.symbols = ["<s>", "<pad>", "</s>", "<unk>", "0", "1"]
    dictionary.indices = {s: i for i, s in enumerate(dictionary.symbols)}
    return dictionary


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy_format"])
def test_omegaconf_cfg_numpy_and_dictionaries_load_inert(tmp_path, monkeypatch, legacy):
    raw = checkpoint_dict("hubert", False, "cfg")
    reference = import_fairseq(save(raw, tmp_path / "plain.pt"))[0].state_dict()
    raw["cfg"] = omegaconf.OmegaConf.create(raw["cfg"])  # before March 2021
    raw["task_state"] = {"dictionaries": [fake_fairseq_dictionary(monkeypatch)]}
    raw["extra_state"]["best"] = np.float64(2.5)
    raw["extra_state"]["meters"] = np.arange(3)
    path = save(raw, tmp_path / "full.pt", legacy=legacy)
    monkeypatch.undo()  # fairseq is gone again before anything is read
    assert "fairseq" not in sys.modules
    checkpoint = read_fairseq_checkpoint(path)
    assert checkpoint.model_cfg["conv_feature_layers"] == CONV_BASE
    assert checkpoint.task_cfg["labels"] == ["km"]
    state = import_fairseq(path)[0].state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference)


# ------------------------------------------------------------------ refusals


@pytest.fixture
def base(tmp_path):
    """A valid wav2vec 2.0 BASE checkpoint dict, and where to save variants."""
    return checkpoint_dict("wav2vec2", False, "cfg"), tmp_path


def refused(raw, tmp_path, error=FairseqCheckpointError, match=""):
    path = save(raw, tmp_path / "bad.pt") if raw is not None else tmp_path / "no.pt"
    with pytest.raises(error, match=match) as info:
        import_fairseq(path)
    message = str(info.value)
    if error is FairseqCheckpointError:
        assert f"'{path}'" in message and "Fix: " in message, message
    return message


class RunsCode:
    """Pickles as a call of os.system (what a malicious checkpoint holds)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_class_that_would_run_code_is_refused_without_running_it(base):
    raw, tmp_path = base
    marker = tmp_path / "ran"
    raw["extra_state"]["evil"] = RunsCode(marker)
    message = refused(raw, tmp_path, match="posix.system|nt.system")
    assert "nothing was loaded" in message and "weights_only=False" in message
    assert not marker.exists()


def test_an_unknown_class_in_an_ignored_section_is_refused_by_name(base):
    import datetime

    raw, tmp_path = base
    raw["extra_state"]["when"] = datetime.datetime(2021, 6, 1)
    refused(raw, tmp_path, match="datetime.datetime")


def test_a_placeholder_in_the_state_dict_is_refused(base):
    raw, tmp_path = base
    raw["model"]["mask_emb"] = np.zeros(32, dtype=np.float32)
    refused(raw, tmp_path, match=r"model\['mask_emb'\] is InertObject")


def test_a_placeholder_in_a_config_field_that_is_read_is_refused(base):
    raw, tmp_path = base
    raw["cfg"]["model"]["dropout"] = np.float64(0.1)
    refused(raw, tmp_path, match="config field dropout is an object of numpy")


@pytest.mark.parametrize(
    "raw, match",
    [
        ([1, 2], "holds a list, not a checkpoint dict"),
        ({"cfg": {}}, "has no 'model' entry"),
        ({"model": {"w": torch.ones(1)}}, "neither a 'cfg' with a 'model' section"),
        ({"model": {"w": torch.ones(1)}, "cfg": {"model": {"_name": "data2vec_audio"}}},
         "fairseq model type 'data2vec_audio' is not converted"),
        ({"model": {"w": torch.ones(1)}, "cfg": {"model": {"_name": "wav2vec_ctc"}}},
         "the pretraining checkpoint it was fine-tuned from"),
        ({"model": [], "args": argparse.Namespace(arch="wav2vec2")},
         "'model' is list, not a state dict"),
    ],
    ids=["not_a_dict", "no_model", "no_config", "unknown_type", "fine_tuned",
         "model_not_a_dict"],
)  # fmt: skip
def test_bad_checkpoints_are_named_with_the_fix(tmp_path, raw, match):
    refused(raw, tmp_path, match=match)


def test_a_missing_file_and_noise_are_named(tmp_path):
    refused(None, tmp_path, match="no such file")
    (tmp_path / "noise.pt").write_bytes(b"\x80\x02not a pickle" * 10)
    with pytest.raises(FairseqCheckpointError, match="noise.pt.*Fix: "):
        import_fairseq(tmp_path / "noise.pt")


def test_a_key_left_over_or_missing_is_named(base):
    raw, tmp_path = base
    variant = copy.deepcopy(raw)
    variant["model"]["encoder.layers.0.self_attn.bias_k"] = torch.zeros(1, 1, 32)
    refused(variant, tmp_path, match=r"'encoder.layers.0.self_attn.bias_k' \(1 left")
    del raw["model"]["encoder.layers.1.fc2.bias"]
    refused(raw, tmp_path, match=r"lacks 'encoder.layers.1.fc2.bias' \(1 missing\)")


def test_a_shape_that_does_not_fit_the_config_is_named(base):
    raw, tmp_path = base
    raw["cfg"]["model"]["encoder_ffn_embed_dim"] = 48
    refused(raw, tmp_path, match="does not fit the checkpoint's own config")


@pytest.mark.parametrize(
    "option, value",
    [
        ("layer_type", "conformer"),
        ("pos_conv_depth", 5),
        ("crop_seq_to_multiple", 2),
        ("activation_fn", "gelu_accurate"),
        ("extractor_mode", "other"),
        ("quantize_input", True),
        ("quantize_targets", False),
        ("target_glu", True),
        ("mask_selection", "normal"),
        ("mask_channel_before", True),
        ("negatives_from_everywhere", True),
        ("codebook_negatives", 5),
        ("latent_dim", 6),
        ("mask_prob", 0.0),
    ],
)
def test_an_option_our_model_cannot_express_is_refused_by_name(base, option, value):
    raw, tmp_path = base
    raw["cfg"]["model"][option] = value
    message = refused(raw, tmp_path, NotExpressibleError, match=f"fairseq {option}=")
    assert "cannot be expressed by ESPnet's SSL model: " in message


def test_a_binary_cross_entropy_criterion_is_refused(base):
    raw, tmp_path = base
    raw["cfg"]["criterion"]["infonce"] = False
    refused(raw, tmp_path, NotExpressibleError, match="criterion.infonce=False")


def test_conv_feature_layers_are_never_evaluated(base):
    raw, tmp_path = base
    marker = tmp_path / "ran"
    raw["cfg"]["model"][
        "conv_feature_layers"
    ] = f"[(16, 10, 5)] + __import__('os').system('touch {marker}')"
    refused(raw, tmp_path, match="is not a list of .channels, kernel, stride")
    assert not marker.exists()
    assert conv_layers("[(4, 3, 2)] * 2 + [(8, 2, 2)]", "x") == [
        [4, 3, 2], [4, 3, 2], [8, 2, 2]
    ]  # fmt: skip


def test_absent_fields_take_fairseqs_defaults(tmp_path, caplog):
    raw = checkpoint_dict("wav2vec2", False, "args")
    for later in (
        "pos_conv_depth",
        "crop_seq_to_multiple",
        "require_same_masks",
        "mask_dropout",
        "mask_channel_before",
        "quantizer_depth",
    ):
        delattr(raw["args"], later)  # fmt: skip
    import logging

    with caplog.at_level(logging.INFO):
        import_fairseq(save(raw, tmp_path / "old.pt"))
    assert "config field pos_conv_depth absent: fairseq's default 1" in caplog.text


def test_inert_objects_keep_their_state_as_data(tmp_path):
    raw = {"x": np.float64(2.5)}
    checkpoint = tmp_path / "n.pt"
    save({"model": {"w": torch.ones(1)}, "args": None, **raw}, checkpoint)
    from espnet2.ssl.model_files import load_with_plain_classes

    loaded = load_with_plain_classes(checkpoint, (), ("numpy.",))
    assert isinstance(loaded["x"], InertObject)
    assert loaded["x"].source.endswith("multiarray.scalar")


def test_a_float16_checkpoint_is_cast_to_float32_exactly(tmp_path):
    raw = checkpoint_dict("wav2vec2", False, "cfg")
    full, _ = import_fairseq(save(raw, tmp_path / "full.pt"))
    raw["model"] = {key: value.half() for key, value in raw["model"].items()}
    half, _ = import_fairseq(save(raw, tmp_path / "half.pt"))
    for key, value in half.state_dict().items():
        assert value.dtype == full.state_dict()[key].dtype, key
        if value.is_floating_point():
            torch.testing.assert_close(value, full.state_dict()[key].half().float())


def test_a_missing_hubert_head_key_is_named_not_a_crash(tmp_path):
    raw = checkpoint_dict("hubert", False, "cfg")
    del raw["model"]["final_proj.weight"]
    refused(raw, tmp_path, match=r"lacks 'final_proj.weight' \(1 missing\)")
