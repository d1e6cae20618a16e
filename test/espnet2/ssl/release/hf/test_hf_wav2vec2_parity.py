"""espnet2/ssl/release/hf/wav2vec2.py, keys.py and
espnet2/bin/ssl_hf_convert.py:
our wav2vec 2.0 model equals transformers' Wav2Vec2ForPreTraining given the same
weights, audio, mask and negatives; its exported folder also loads as Wav2Vec2Model
with the same hidden states; the conversion round-trips bitwise; bad inputs are
named.

Relative error = max |ours - HF| / max |HF| over the compared (valid) entries.
Everything runs in float64 except what both models compute in float32 by design:
the cosine logits and the cross entropy (HF casts to float32 too).
"""

import copy
import functools
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
import yaml
from espnet.nets.pytorch_backend.nets_utils import make_pad_mask
from tiny_configs import merged, recipe_config, tiny_config
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model
from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices

from espnet2.bin import ssl_hf_convert
from espnet2.ssl.release.hf import keys as hf_wav2vec2_keys
from espnet2.ssl.release.hf.keys import (
    PARAMS,
    espnet_to_hf_state_dict,
    hf_to_espnet_state_dict,
)
from espnet2.ssl.release.hf.wav2vec2 import (
    build_espnet_model,
    espnet_config_from_hf,
    from_hf,
    hf_config_from_espnet,
    hf_negatives_to_espnet,
    to_hf,
)
from espnet2.tasks.ssl import SSLTask

REPO_ROOT = Path(__file__).resolve().parents[5]
BASE_CONFIG = (
    REPO_ROOT / "egs2/librispeech/ssl2/conf/tuning/train_ssl_wav2vec2_base.yaml"
)
FLOAT64_TOLERANCE = 1e-10  # measured <= 6e-16 (CNN features, targets: exactly 0)
FLOAT32_TOLERANCE = 1e-5  # measured <= 3e-7 (logits, loss; float32 models too)
PERPLEXITY_TOLERANCE = 1e-4  # fairseq's 1e-7 smoothing (HF has none): <= 2e-6
NUM_NEGATIVES = 10
# wav2vec 2.0 BASE options (egs2/librispeech/ssl2/conf/tuning/
# train_ssl_wav2vec2_base.yaml) at tiny sizes: 2 layers, G=2, V=8, K=10. Built on the
# recipe's tiny config at test sizes (test/helpers/tiny_configs.py).
RECIPE_LOSS = recipe_config("wav2vec2")["loss"][0]["conf"]
TINY_BASE = tiny_config(
    "wav2vec2",
    token_list=["<unk>"],
    encoder_conf=dict(layer_drop_rate=0.05, apply_layer_drop=True),
    loss=[
        dict(
            name="wav2vec2",
            conf=merged(
                RECIPE_LOSS,
                dict(
                    feature_size=16,
                    final_dim=12,
                    num_negatives=NUM_NEGATIVES,
                    cross_sample_negatives=0,
                    temperature_decay=0.999995,
                ),
            ),
        )
    ],
    util=[
        dict(
            name="mask",
            conf=dict(
                mask_prob=0.65, mask_length=4, min_masks=2, require_same_masks=True
            ),
        )
    ],
)
CNN_SHAPES = TINY_BASE["frontend_conf"]["shapes"]  # BASE's kernels, 16 channels
# wav2vec 2.0 LARGE (LV-60) form: LayerNorm CNN with bias, pre-LN encoder (HF
# do_stable_layer_norm).
TINY_LARGE = copy.deepcopy(TINY_BASE)
TINY_LARGE["frontend_conf"].update(norm_mode="layer_norm", bias=True)
TINY_LARGE["encoder_conf"].update(normalize_before=True, embed_layer_norm=False)

CASES = {
    "base_equal_lengths": (TINY_BASE, (8000, 8000), False),
    "base_padded_attention_mask": (TINY_BASE, (8000, 5600, 6400), True),
    "large_padded_attention_mask": (TINY_LARGE, (8000, 5600, 6400), True),
}


def with_conf(section: str, **overrides) -> Dict:
    """TINY_BASE with ``overrides`` in ``section`` ("" = top level)."""
    config = copy.deepcopy(TINY_BASE)
    if section == "loss":
        config["loss"][0]["conf"].update(overrides)
    elif section == "util":
        config["util"][0]["conf"].update(overrides)
    else:
        (config[section] if section else config).update(overrides)
    return config


def randomized_model(config: Dict, dtype: torch.dtype = torch.float64):
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
    return model.to(dtype).eval()


def audio(lengths: Tuple[int, ...], dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    """Zero-padded waveforms (B, S), lengths (B,) and HF's attention mask (B, S)."""
    generator = torch.Generator().manual_seed(2)
    speech = torch.zeros(len(lengths), max(lengths), dtype=dtype)
    for b, n in enumerate(lengths):
        speech[b, :n] = 0.1 * torch.randn(n, generator=generator, dtype=dtype)
    speech_lengths = torch.tensor(lengths)
    attention_mask = torch.arange(max(lengths))[None, :] < speech_lengths[:, None]
    return speech, speech_lengths, attention_mask.long()


def mask_and_negatives(model, frame_lengths: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """A span mask (B, T) on valid frames and HF negatives (B, T, K) into B * T."""
    num_frames = int(frame_lengths.max())
    generator = torch.Generator().manual_seed(3)
    mask = model.util_modules["mask"].compute_mask(
        frame_lengths, num_frames, generator=generator
    )
    state = np.random.get_state()
    np.random.seed(4)  # HF's sampler draws from numpy's global generator
    negatives = _sample_negative_indices(
        (len(frame_lengths), num_frames), NUM_NEGATIVES, mask.numpy()
    )
    np.random.set_state(state)
    return mask, torch.from_numpy(negatives).long()


def keep(captured: Dict, key: str, value: torch.Tensor) -> torch.Tensor:
    """Store ``value`` under ``key`` and return it (to wrap a method)."""
    captured[key] = value
    return value


def run_ours(model, speech, speech_lengths, mask, hf_negatives) -> Dict:
    """Our forward with the given mask and negatives; captured intermediates."""
    loss_func, captured = model.losses[0], {}
    hooks = [
        model.frontend.register_forward_hook(
            lambda module, args, out: captured.update(cnn=out[0])
        ),
        loss_func.project_q.register_forward_hook(
            lambda module, args, out: captured.update(targets=out)
        ),
    ]
    compute_logits = loss_func._contrastive_logits
    loss_func._contrastive_logits = lambda *args: keep(
        captured, "logits", compute_logits(*args)
    )
    try:
        with torch.no_grad():
            data = model.encode(speech, speech_lengths, mask=mask)
            inputs = {k: data[k] for k in loss_func.required_inputs}
            negatives = hf_negatives_to_espnet(hf_negatives, mask)
            _, stats = loss_func(**inputs, negative_indices=negatives)
    finally:
        del loss_func._contrastive_logits
        for hook in hooks:
            hook.remove()
    return dict(captured, layers=data["encoder_output"], stats=stats)


def run_hf(hf_model, speech, attention_mask, mask, negatives) -> Dict:
    """HF's forward with the given mask and negatives; captured intermediates."""
    captured = {}
    hooks = [
        hf_model.wav2vec2.feature_extractor.register_forward_hook(
            lambda module, args, out: captured.update(cnn=out.transpose(1, 2))
        ),  # (B, C, T) -> (B, T, C)
        hf_model.wav2vec2.register_forward_hook(
            lambda module, args, out: captured.update(final=out.last_hidden_state)
        ),
    ]
    compute_logits = hf_model.compute_contrastive_logits
    hf_model.compute_contrastive_logits = lambda *args: keep(
        captured, "logits", compute_logits(*args)  # (1 + K, B, T); -inf set later
    )
    try:
        with torch.no_grad():
            out = hf_model(
                speech,
                attention_mask=attention_mask,
                mask_time_indices=mask,
                sampled_negative_indices=negatives,
                output_hidden_states=True,
            )
    finally:
        del hf_model.compute_contrastive_logits
        for hook in hooks:
            hook.remove()
    return dict(captured, out=out)


@functools.lru_cache(maxsize=None)
def parity_run(case: str) -> Dict:
    """Both models on one case: outputs, HF model, mask, negatives, valid frames."""
    config, lengths, use_attention_mask = CASES[case]
    model = randomized_model(config)
    hf_model = to_hf(model, config)
    speech, speech_lengths, attention_mask = audio(lengths, torch.float64)
    frame_lengths = hf_model._get_feat_extract_output_lengths(speech_lengths)
    mask, negatives = mask_and_negatives(model, frame_lengths)
    ours = run_ours(model, speech, speech_lengths, mask, negatives)
    attention_mask = attention_mask if use_attention_mask else None
    hf = run_hf(hf_model, speech, attention_mask, mask, negatives)
    valid = ~make_pad_mask(frame_lengths, maxlen=mask.shape[1])
    return dict(
        ours=ours, hf=hf, hf_model=hf_model, mask=mask, negatives=negatives, valid=valid
    )


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours.double() - theirs.double()).abs().max() / theirs.abs().max()).item()


@pytest.mark.parametrize("case", CASES)
def test_cnn_features_before_layer_norm_match_hugging_face(case):
    run = parity_run(case)
    ours, hf = run["ours"]["cnn"], run["hf"]["cnn"]
    assert ours.dtype == torch.float64
    assert relative_error(ours[run["valid"]], hf[run["valid"]]) <= FLOAT64_TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_every_encoder_layer_output_matches_hugging_face(case):
    run = parity_run(case)
    ours, theirs = run["ours"]["layers"], list(run["hf"]["out"].hidden_states[1:])
    if run["hf_model"].config.do_stable_layer_norm:
        # our last entry is the final output (after after_norm); HF's hidden
        # states end with the last layer's output before its final layer_norm
        theirs[-1] = run["hf"]["final"]
    assert len(ours) == len(theirs) == 2
    for index, (mine, hf) in enumerate(zip(ours, theirs)):
        error = relative_error(mine[run["valid"]], hf[run["valid"]])
        assert error <= FLOAT64_TOLERANCE, f"layer {index}: {error}"


@pytest.mark.parametrize("case", CASES)
def test_quantized_targets_on_masked_frames_match_hugging_face(case):
    run = parity_run(case)
    ours = run["ours"]["targets"]  # (N, F), masked frames in (b, t) order
    theirs = run["hf"]["out"].projected_quantized_states[run["mask"]]  # (N, F)
    assert ours.dtype == torch.float64
    assert relative_error(ours, theirs) <= FLOAT64_TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_contrastive_logits_on_masked_frames_match_hugging_face(case):
    run = parity_run(case)
    ours = run["ours"]["logits"]  # (N, 1 + K)
    theirs = run["hf"]["logits"][:, run["mask"]].T  # (1 + K, N) -> (N, 1 + K)
    blocked = torch.isinf(theirs)  # negatives equal to the positive
    assert blocked.any(), "the case should exercise HF's neg_is_pos"
    assert torch.equal(torch.isinf(ours), blocked)
    assert relative_error(ours[~blocked], theirs[~blocked]) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_contrastive_loss_matches_hugging_faces_summed_loss(case):
    run = parity_run(case)
    stats = run["ours"]["stats"]
    ours = torch.tensor(stats["loss_contrastive"] * stats["num_masked_frames"])
    assert stats["num_masked_frames"] == run["mask"].sum().item()
    assert relative_error(ours, run["hf"]["out"].contrastive_loss) <= FLOAT32_TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_code_perplexity_matches_hugging_faces_eval_perplexity(case):
    # In eval, HF's codevector_perplexity (and so its diversity_loss) is the
    # perplexity of the argmax codes: our code_perplexity, up to fairseq's 1e-7
    # smoothing. Our diversity loss uses prob_perplexity in eval too, as fairseq.
    run = parity_run(case)
    ours = torch.tensor(run["ours"]["stats"]["code_perplexity"])
    theirs = run["hf"]["out"].codevector_perplexity
    assert relative_error(ours, theirs) <= PERPLEXITY_TOLERANCE


def test_diversity_loss_matches_hugging_faces_training_quantizer():
    # HF computes the softmax perplexity only in training; the Gumbel noise does
    # not enter it, so the train-mode quantizer gives the same diversity loss.
    run = parity_run("base_padded_attention_mask")
    hf_model = run["hf_model"]
    speech, _, attention_mask = audio(
        CASES["base_padded_attention_mask"][1], torch.float64
    )
    hf_model.quantizer.train()
    try:
        with torch.no_grad():
            out = hf_model(
                speech,
                attention_mask=attention_mask,
                mask_time_indices=run["mask"],
                sampled_negative_indices=run["negatives"],
            )
    finally:
        hf_model.quantizer.eval()
    stats = run["ours"]["stats"]
    ours = torch.tensor(stats["loss_diversity"] * stats["num_masked_frames"])
    assert relative_error(ours, out.diversity_loss) <= PERPLEXITY_TOLERANCE


def test_hugging_face_needs_the_attention_mask_for_a_padded_batch():
    # Without attention_mask HF attends to padded frames (it zeroes them and
    # masks attention only when given one), so ours (which always uses the
    # lengths) agrees with HF on padded batches only with attention_mask. The
    # group-norm CNN sees the padding in both models alike (features above).
    run = parity_run("base_padded_attention_mask")
    speech, _, _ = audio(CASES["base_padded_attention_mask"][1], torch.float64)
    with torch.no_grad():
        out = run["hf_model"](speech, mask_time_indices=run["mask"])
    with_mask = run["hf"]["out"].projected_states
    valid = run["valid"]
    assert relative_error(out.projected_states[valid], with_mask[valid]) > 1e-3


# ----------------------------------------------------------------- round trips


def assert_identical(state: Dict, expected: Dict) -> None:
    assert set(state) == set(expected)
    for key, tensor in expected.items():
        assert state[key].dtype == tensor.dtype, key
        assert torch.equal(state[key], tensor), key


@pytest.mark.parametrize("config", [TINY_BASE, TINY_LARGE], ids=["base", "large"])
def test_ours_to_hf_to_ours_gives_an_identical_state_dict(config):
    model = randomized_model(config, torch.float32)
    model.global_step.fill_(1234)
    model.num_updates.fill_(617)
    model.seen_audio.seen_samples.fill_(16000 * 3600 * 700)  # 700 h
    model.seen_audio.last_update_samples.fill_(16000 * 90)
    back, _ = from_hf(to_hf(model, config))
    assert_identical(back.state_dict(), model.state_dict())


def hf_model_from_scratch(**overrides) -> Wav2Vec2ForPreTraining:
    """A tiny HF pretraining model with HF's own random init (no ESPnet values)."""
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=[16] * 7,
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        codevector_dim=12,
        proj_codevector_dim=12,
        num_codevectors_per_group=8,
        mask_time_prob=0.65,
        **overrides,
    )
    torch.manual_seed(0)
    return Wav2Vec2ForPreTraining(config).eval()


@pytest.mark.parametrize(
    "overrides",
    [{}, dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)],
    ids=["base", "large"],
)
def test_hf_to_ours_to_hf_gives_an_identical_state_dict_and_config(overrides):
    hf_model = hf_model_from_scratch(**overrides)
    model, config = from_hf(hf_model)
    back = to_hf(model, config)
    assert_identical(back.state_dict(), hf_model.state_dict())
    got, want = back.config.to_dict(), hf_model.config.to_dict()
    buffers = got.pop(hf_wav2vec2_keys.EXTRAS_ATTRIBUTE)["buffers"]
    assert buffers == dict.fromkeys(hf_wav2vec2_keys.ESPNET_BUFFERS, 0)
    assert got == want


# Fields of an HF config that no option of ours determines (a CTC head's, HF-only)
HF_ONLY_FIELDS = dict(
    final_dropout=0.3,
    feat_extract_dropout=0.2,
    vocab_size=40,
    ctc_loss_reduction="mean",
    ctc_zero_infinity=True,
    use_weighted_layer_sum=True,
    classifier_proj_size=64,
)


def test_cli_round_trip_keeps_every_field_of_the_source_config_json(tmp_path):
    hf_model_from_scratch(**HF_ONLY_FIELDS).save_pretrained(tmp_path / "source")
    ssl_hf_convert.main(
        ["--from_hf", str(tmp_path / "source"), "--out_dir", str(tmp_path / "espnet")]
    )
    kept = yaml.safe_load((tmp_path / "espnet/config.yaml").read_text())[
        "hf_config_fields"
    ]
    assert {key: kept[key] for key in HF_ONLY_FIELDS} == HF_ONLY_FIELDS
    assert "hidden_size" not in kept  # encoder_conf.output_size says it
    ssl_hf_convert.main(
        ["--to_hf", "--ssl_train_config", str(tmp_path / "espnet/config.yaml")]
        + ["--ssl_model_file", str(tmp_path / "espnet/model.pth")]
        + ["--out_dir", str(tmp_path / "again")]
    )
    source, again = (
        json.loads((tmp_path / name / "config.json").read_text())
        for name in ("source", "again")
    )
    again.pop(hf_wav2vec2_keys.EXTRAS_ATTRIBUTE)
    assert again == source


def test_kept_hf_fields_never_override_what_our_options_determine():
    config = copy.deepcopy(TINY_BASE)
    config["hf_config_fields"] = {"final_dropout": 0.3, "hidden_size": 999}
    hf_config = hf_config_from_espnet(config)
    assert hf_config.final_dropout == 0.3
    assert hf_config.hidden_size == TINY_BASE["encoder_conf"]["output_size"]


def test_config_round_trip_keeps_every_option_we_set():
    config = espnet_config_from_hf(hf_config_from_espnet(TINY_BASE))
    for section in ("frontend_conf", "preencoder_conf", "encoder_conf", "model_conf"):
        assert {k: config[section][k] for k in TINY_BASE[section]} == TINY_BASE[section]
    for key in ("loss", "util"):
        conf, expected = config[key][0]["conf"], TINY_BASE[key][0]["conf"]
        assert {k: conf[k] for k in expected} == expected


def test_inert_layer_drop_rate_survives_the_round_trip():
    config = with_conf("encoder_conf", layer_drop_rate=0.2, apply_layer_drop=False)
    hf_config = hf_config_from_espnet(config)
    assert hf_config.layerdrop == 0.0
    encoder_conf = espnet_config_from_hf(hf_config)["encoder_conf"]
    assert (encoder_conf["layer_drop_rate"], encoder_conf["apply_layer_drop"]) == (
        0.2,
        False,
    )


def test_legacy_weight_norm_names_convert_like_parametrization_names():
    state = hf_model_from_scratch().state_dict()
    legacy = {
        key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): value
        for key, value in state.items()
    }
    assert legacy.keys() != state.keys()
    assert_identical(hf_to_espnet_state_dict(legacy), hf_to_espnet_state_dict(state))


def list_or_value(config: Wav2Vec2Config, field: str):
    value = getattr(config, field)
    return list(value) if isinstance(value, tuple) else value


def test_base_config_gives_the_parameter_shapes_of_hf_wav2vec2_base():
    with BASE_CONFIG.open() as f:
        base = yaml.safe_load(f)
    hf_config = hf_config_from_espnet({**base, "token_list": ["<unk>"]})
    for field in ("hidden_size", "num_hidden_layers", "conv_dim", "codevector_dim"):
        assert getattr(hf_config, field) == list_or_value(Wav2Vec2Config(), field)
    with torch.device("meta"):  # shapes only, nothing allocated
        ours = build_espnet_model({**base, "token_list": ["<unk>"]})
        hf = Wav2Vec2ForPreTraining(Wav2Vec2Config(mask_time_prob=0.65))
    converted = espnet_to_hf_state_dict(ours.state_dict())
    assert {k: v.shape for k, v in converted.items()} == {
        k: v.shape for k, v in hf.state_dict().items()
    }


# ------------------------------------------------------------------------- CLI


def forward_both(model, hf_model) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """[final layer, targets, logits, loss] of ours and HF on one padded batch."""
    speech, speech_lengths, attention_mask = audio((8000, 5600), torch.float32)
    frame_lengths = hf_model._get_feat_extract_output_lengths(speech_lengths)
    mask, negatives = mask_and_negatives(model, frame_lengths)
    ours = run_ours(model, speech, speech_lengths, mask, negatives)
    hf = run_hf(hf_model, speech, attention_mask, mask, negatives)
    valid = ~make_pad_mask(frame_lengths, maxlen=mask.shape[1])
    stats = ours["stats"]
    return (
        [
            ours["layers"][-1][valid],
            ours["targets"],
            ours["logits"],
            torch.tensor(stats["loss_contrastive"] * stats["num_masked_frames"]),
        ],
        [
            hf["out"].hidden_states[-1][valid],
            hf["out"].projected_quantized_states[mask],
            hf["logits"][:, mask].T,
            hf["out"].contrastive_loss,
        ],
    )


def test_cli_converts_both_ways_through_folders_with_equal_outputs(tmp_path):
    model = randomized_model(TINY_BASE, torch.float32)
    model.num_updates.fill_(5)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(TINY_BASE))
    torch.save(model.state_dict(), tmp_path / "model.pth")
    hf_dir, espnet_dir = tmp_path / "hf", tmp_path / "espnet"
    ssl_hf_convert.main(
        ["--to_hf", "--ssl_train_config", str(tmp_path / "config.yaml")]
        + ["--ssl_model_file", str(tmp_path / "model.pth"), "--out_dir", str(hf_dir)]
    )
    hf_model = Wav2Vec2ForPreTraining.from_pretrained(hf_dir, local_files_only=True)
    for ours, theirs in zip(*forward_both(model, hf_model.eval())):
        finite = ~torch.isinf(theirs)
        assert torch.equal(torch.isinf(ours), ~finite)
        assert relative_error(ours[finite], theirs[finite]) <= FLOAT32_TOLERANCE
    ssl_hf_convert.main(["--from_hf", str(hf_dir), "--out_dir", str(espnet_dir)])
    back, _ = SSLTask.build_model_from_file(
        espnet_dir / "config.yaml", espnet_dir / "model.pth"
    )
    assert_identical(back.state_dict(), model.state_dict())
    for ours, again in zip(
        forward_both(model, hf_model)[0], forward_both(back.eval(), hf_model)[0]
    ):
        assert torch.equal(ours, again)


def test_cli_reports_a_config_hf_cannot_express_without_a_traceback(tmp_path, capsys):
    config = with_conf("encoder_conf", pos_conv_residual=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(randomized_model(TINY_BASE).state_dict(), tmp_path / "model.pth")
    with pytest.raises(SystemExit) as exit_info:
        ssl_hf_convert.main(
            ["--to_hf", "--ssl_train_config", str(tmp_path / "config.yaml")]
            + ["--ssl_model_file", str(tmp_path / "model.pth")]
            + ["--out_dir", str(tmp_path / "hf")]
        )
    assert exit_info.value.code == 3  # not expressible: a recipe skips the export
    stderr = capsys.readouterr().err
    expected = "ssl_hf_convert: error: NotExpressibleError: encoder_conf.pos_conv_"
    assert expected in stderr
    assert "Traceback" not in stderr


def test_cli_reports_a_missing_hf_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        ssl_hf_convert.main(
            ["--from_hf", str(tmp_path / "absent"), "--out_dir", str(tmp_path / "o")]
        )
    assert exit_info.value.code == 1
    assert "ssl_hf_convert: error: OSError" in capsys.readouterr().err


# ------------------------------------------------- exported folders, float32
# HF's hidden_states[0] is the encoder input after the positional conv (and,
# post-LN, the encoder's layer_norm): inference_encode has no such output; HF's
# hidden_states[i] (i >= 1) is our layers[i - 1]. Pre-LN (transformers 4.57): HF's
# list ends after the final layer_norm, with our final output, as does
# last_hidden_state; our layers[-1] (before after_norm) has no HF twin.
# The group-norm CNN sees the padding (previous section), so utterances are
# compared alone, and a padded batch with the same padded batch.

EXPORT_TOLERANCE = 1e-4  # absolute, float32; measured <= 1.2e-6
EXPORT_LENGTHS = (8000, 5600, 6400)  # samples
HEAD_KEYS = {
    "quantizer.codevectors",
    *(f"{name}.{p}" for name in ("project_q", "project_hid") for p in PARAMS),
    *(f"quantizer.weight_proj.{p}" for p in PARAMS),
}


@pytest.fixture(scope="module")
def exported_wav2vec2(tmp_path_factory):
    """form -> (our float32 model, HF folder), exported once by the CLI."""
    cache = {}

    def export(form: str):
        if form not in cache:
            config = {"base": TINY_BASE, "large": TINY_LARGE}[form]
            root = tmp_path_factory.mktemp(form)
            model = randomized_model(config, torch.float32)
            (root / "config.yaml").write_text(yaml.safe_dump(config))
            torch.save(model.state_dict(), root / "model.pth")
            ssl_hf_convert.main(
                ["--to_hf", "--ssl_train_config", str(root / "config.yaml")]
                + ["--ssl_model_file", str(root / "model.pth")]
                + ["--out_dir", str(root / "hf")]
            )
            cache[form] = model, root / "hf"
        return cache[form]

    return export


@pytest.mark.parametrize(
    "hf_class, left_out",
    [(Wav2Vec2ForPreTraining, set()), (Wav2Vec2Model, HEAD_KEYS)],
    ids=["pretraining", "base_model"],
)
def test_export_loads_with_nothing_missing_and_only_the_head_left_out(
    exported_wav2vec2, hf_class, left_out
):
    _, hf_dir = exported_wav2vec2("base")
    _, info = hf_class.from_pretrained(
        hf_dir, local_files_only=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    assert set(info["unexpected_keys"]) == left_out


def max_layer_differences(model, hf_model, lengths, attention_mask: bool) -> list:
    """max |ours - HF| over valid frames: every layer, then the final output."""
    speech, speech_lengths, mask = audio(lengths, torch.float32)
    with torch.no_grad():
        final, layers, frames = model.inference_encode(speech, speech_lengths)
        out = hf_model(
            speech,
            attention_mask=mask if attention_mask else None,
            output_hidden_states=True,
        )
    assert len(out.hidden_states) == len(layers) + 1
    last = getattr(out, "last_hidden_state", None)  # the pretraining model has none
    theirs = list(out.hidden_states[1:])
    if hf_model.config.do_stable_layer_norm:
        pairs = list(zip(layers[:-1], theirs[:-1])) + [(final, theirs[-1])]
    else:
        pairs = list(zip(layers, theirs))
    if last is not None:
        pairs.append((final, last))
    valid = ~make_pad_mask(frames, maxlen=final.shape[1])
    return [(ours - theirs)[valid].abs().max().item() for ours, theirs in pairs]


@pytest.mark.parametrize("form", ["base", "large"])
@pytest.mark.parametrize(
    "hf_class", [Wav2Vec2ForPreTraining, Wav2Vec2Model], ids=["pretraining", "model"]
)
def test_every_layer_of_the_export_equals_inference_encode(
    exported_wav2vec2, form, hf_class
):
    model, hf_dir = exported_wav2vec2(form)
    hf_model = hf_class.from_pretrained(hf_dir, local_files_only=True).eval()
    assert next(hf_model.parameters()).dtype == torch.float32
    for length in EXPORT_LENGTHS:
        errors = max_layer_differences(model, hf_model, (length,), False)
        assert max(errors) <= EXPORT_TOLERANCE, (length, errors)
    errors = max_layer_differences(model, hf_model, EXPORT_LENGTHS, True)
    assert max(errors) <= EXPORT_TOLERANCE, errors


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    "config, option",
    [
        (with_conf("", encoder="conformer"), "encoder"),
        (with_conf("", specaug="specaug"), "specaug"),
        (with_conf("", normalize="utterance_mvn"), "normalize"),
        (with_conf("frontend_conf", normalize_output=True), "normalize_output"),
        (with_conf("frontend_conf", conv_mode="depth_only"), "conv_mode"),
        (with_conf("preencoder_conf", dropout=0.1), "preencoder_conf.dropout"),
        (with_conf("encoder_conf", normalize_before=True), "normalize_before"),
        (with_conf("encoder_conf", embed_layer_norm=False), "embed_layer_norm"),
        (with_conf("encoder_conf", pos_conv_residual=False), "pos_conv_residual"),
        (with_conf("encoder_conf", layer_norm_eps=1e-12), "layer_norm_eps"),
        (with_conf("encoder_conf", zero_padded_frames=False), "zero_padded_frames"),
        (with_conf("encoder_conf", qk_norm=True), "qk_norm"),
        (with_conf("encoder_conf", ffn_activation="tanh"), "ffn_activation"),
        (with_conf("model_conf", feature_layer_norm=False), "feature_layer_norm"),
        (with_conf("loss", layer=-2), "loss.0.conf.layer"),
        (with_conf("util", mask_prob=0.0), "mask_prob"),
        (with_conf("", loss=[dict(name="hubert", conf={})]), "loss"),
    ],
)
def test_config_hf_cannot_express_is_refused_naming_the_option(config, option):
    with pytest.raises(ValueError, match=option.replace(".", r"\.")):
        hf_config_from_espnet(config)


def test_missing_feature_layer_norm_is_refused_as_the_default():
    config = copy.deepcopy(TINY_BASE)
    del config["model_conf"]["feature_layer_norm"]  # ESPnet's default: False
    with pytest.raises(ValueError, match=r"model_conf\.feature_layer_norm=False"):
        hf_config_from_espnet(config)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(add_adapter=True), "add_adapter"),
        (dict(layer_norm_eps=1e-6), "layer_norm_eps"),
        (dict(proj_codevector_dim=24), "proj_codevector_dim"),
        (dict(feat_extract_activation="relu"), "feat_extract_activation"),
        (dict(apply_spec_augment=False), "apply_spec_augment"),
        (dict(mask_time_prob=0.0), "mask_time_prob"),
    ],
)
def test_hf_config_we_cannot_express_is_refused_naming_the_field(overrides, field):
    config = hf_model_from_scratch().config
    for key, value in overrides.items():
        setattr(config, key, value)
    with pytest.raises(ValueError, match=field):
        espnet_config_from_hf(config)


def test_unknown_state_dict_key_is_named_in_both_directions():
    model = randomized_model(TINY_BASE)
    state = dict(model.state_dict(), **{"encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match=r"encoder\.extra\.weight"):
        espnet_to_hf_state_dict(state)
    hf_state = dict(to_hf(model, TINY_BASE).state_dict())
    hf_state["wav2vec2.encoder.extra.bias"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"wav2vec2\.encoder\.extra\.bias"):
        hf_to_espnet_state_dict(hf_state)


def test_missing_state_dict_key_is_named_in_both_directions():
    model = randomized_model(TINY_BASE)
    state = dict(model.state_dict())
    del state["encoder.encoders.1.norm2.bias"]
    with pytest.raises(KeyError, match=r"encoder\.encoders\.1\.norm2\.bias"):
        espnet_to_hf_state_dict(state)
    hf_state = dict(to_hf(model, TINY_BASE).state_dict())
    del hf_state["project_q.bias"]
    with pytest.raises(KeyError, match=r"'project_q\.bias'"):
        hf_to_espnet_state_dict(hf_state)


def test_negative_that_is_not_a_masked_frame_is_refused():
    mask = torch.tensor([[True, True, False]])
    negatives = torch.tensor([[[1], [2], [0]]])  # frame 1's negative is unmasked
    with pytest.raises(ValueError, match="not masked"):
        hf_negatives_to_espnet(negatives, mask)
    assert torch.equal(
        hf_negatives_to_espnet(torch.tensor([[[1], [0], [0]]]), mask),
        torch.tensor([[1], [0]]),
    )
