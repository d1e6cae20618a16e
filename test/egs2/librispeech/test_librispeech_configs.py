"""egs2/librispeech/ssl2/conf: the BASE pretraining configs and the 10 h CTC config;
the GPU settings (attention, plots, cuDNN) of every training config, mini_synth's too.

Every config is read by ESPnet's own parser (unknown keys fail there) and built by
its task's ``build_model``; the BASE models on the meta device (shapes only).
"""

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from espnet.nets.pytorch_backend.transformer.attention import MultiHeadedAttention

from espnet2.schedulers.tristage_lr import TristageLR
from espnet2.ssl.recipe.pretrain_config import write_with_num_classes
from espnet2.tasks.asr import ASRTask
from espnet2.tasks.ssl import SSLTask, encoder_choices

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF = REPO_ROOT / "egs2/librispeech/ssl2/conf/tuning"
HUBERT = CONF / "train_ssl_hubert_base.yaml"
WAV2VEC2 = CONF / "train_ssl_wav2vec2_base.yaml"
RECONSTRUCTION = CONF / "train_ssl_reconstruction_base.yaml"
ASR = CONF / "train_asr_ctc_base_10h.yaml"
TINY_HUBERT = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning/train_ssl_hubert_tiny.yaml"
MINI_SYNTH_CONF = REPO_ROOT / "egs2/mini_synth/ssl2/conf/tuning"
PRETRAINING = sorted(CONF.glob("train_ssl_*.yaml")) + sorted(
    MINI_SYNTH_CONF.glob("train_ssl_*_tiny.yaml")
)
TRAINING = sorted(REPO_ROOT.glob("egs2/*/ssl2/conf/tuning/train_*.yaml"))
NGPU = 8  # run.sh --ngpu
LIBRISPEECH_960_SECONDS = 960.9 * 3600  # 100.6 + 363.6 + 496.7 h
FAIRSEQ_MAX_TOKENS = 1_400_000  # samples per GPU in fairseq's BASE pretraining


def ssl_args(config: Path, num_classes: int = 100):
    args = SSLTask.get_parser().parse_args(
        ["--config", str(config), "--token_list", "none", "--token_type", "word"]
    )
    args.token_list = [str(i) for i in range(num_classes)] + ["<unk>"]
    return args


def build_on_meta(config: Path, num_classes: int = 100) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only, nothing allocated
        return SSLTask.build_model(ssl_args(config, num_classes))


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load(config: Path) -> dict:
    return yaml.safe_load(config.read_text())


def test_hubert_base_has_the_95m_parameters_of_hubert_base():
    model = build_on_meta(HUBERT)
    assert 94_000_000 < num_params(model) < 95_500_000  # fairseq: 94.7 M
    assert model.encoder.output_size() == 768 and len(model.encoder.encoders) == 12


def test_hubert_and_wav2vec2_base_share_the_cnn_projection_and_transformer():
    hubert, wav2vec2 = build_on_meta(HUBERT), build_on_meta(WAV2VEC2)
    assert 94_500_000 < num_params(wav2vec2) < 95_500_000  # fairseq: 95.0 M
    for name in ("frontend", "preencoder", "encoder", "feature_norm"):
        shapes = {k: v.shape for k, v in getattr(hubert, name).state_dict().items()}
        assert shapes == {
            k: v.shape for k, v in getattr(wav2vec2, name).state_dict().items()
        }, name


def test_reconstruction_base_is_hubert_bases_transformer_on_80_log_mel():
    hubert, reconstruction = build_on_meta(HUBERT), build_on_meta(RECONSTRUCTION)
    shapes = {k: v.shape for k, v in reconstruction.encoder.state_dict().items()}
    assert shapes == {k: v.shape for k, v in hubert.encoder.state_dict().items()}
    assert reconstruction.preencoder.linear_out.in_features == 80
    assert reconstruction.losses[0].frame_size == 80
    # HuBERT BASE less its CNN (4.2 M) and its label head
    assert 90_000_000 < num_params(reconstruction) < 91_000_000
    base, other = load(HUBERT), load(RECONSTRUCTION)
    for key in ("encoder_conf", "batch_bins", "accum_grad", "optim_conf"):
        assert other[key] == base[key], key
    assert other["scheduler_conf"] == base["scheduler_conf"]


def test_the_recipe_writes_its_k_into_the_hubert_config(tmp_path):
    write_with_num_classes(HUBERT, 500, tmp_path / "train_config.yaml")
    model = build_on_meta(tmp_path / "train_config.yaml", num_classes=500)
    assert model.losses[0].decoder.label_embeddings.out_features == 500


@pytest.mark.parametrize(
    "config, reference_gpus", [(HUBERT, 32), (WAV2VEC2, 64), (RECONSTRUCTION, 32)]
)
def test_an_update_on_8_gpus_sees_the_audio_of_the_reference_gpus(
    config, reference_gpus
):
    conf = load(config)
    assert conf["batch_type"] == "numel"  # batch_bins counts samples
    assert conf["batch_bins"] // NGPU == FAIRSEQ_MAX_TOKENS  # per GPU and step
    per_update = conf["batch_bins"] * conf["accum_grad"]
    assert per_update == FAIRSEQ_MAX_TOKENS * reference_gpus
    assert conf["use_amp"] is True  # bf16 autocast where the GPU supports it


@pytest.mark.parametrize("config", [HUBERT, WAV2VEC2, RECONSTRUCTION])
def test_max_epoch_covers_the_400k_update_schedule(config):
    conf = load(config)
    seconds_per_update = conf["batch_bins"] * conf["accum_grad"] / 16000
    updates = conf["max_epoch"] * LIBRISPEECH_960_SECONDS / seconds_per_update
    assert conf["scheduler_conf"]["warmup_steps_list"][-1] == 400_000
    assert 0.97 * 400_000 < updates < 1.05 * 400_000


def test_asr_config_leaves_the_packed_model_to_stage_7():
    conf = load(ASR)
    assert conf["frontend"] == "espnet_ssl"
    assert conf["frontend_conf"]["frontend_conf"] == {"path_or_url": None}
    assert conf["encoder"] is None and conf["decoder"] is None
    assert conf["model_conf"]["ctc_weight"] == 1.0
    assert conf["init"] is None  # chainer init would lose the pretrained weights
    assert conf["freeze_param"] == ["frontend.upstream.frontend"]
    # one update = fairseq base_10h: 3.2M samples x 2 GPUs x update_freq 4
    assert conf["batch_bins"] * conf["accum_grad"] == 3_200_000 * 2 * 4
    assert conf["num_iters_per_epoch"] * conf["max_epoch"] == 20_000


def test_asr_schedule_is_fairseqs_tri_stage_over_20k_updates():
    conf = load(ASR)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=conf["optim_conf"]["lr"])
    scheduler = TristageLR(optimizer, **conf["scheduler_conf"])
    lrs = []
    for _ in range(20_000):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(5e-7, rel=0.1)  # init_lr_scale 0.01
    assert max(lrs) == pytest.approx(5e-5) and lrs[2000] == pytest.approx(5e-5)
    assert lrs[9999] == pytest.approx(5e-5)  # end of the hold stage
    assert lrs[-1] == pytest.approx(2.5e-6, rel=1e-3)  # final_lr_scale 0.05


def test_asr_config_builds_a_ctc_model_on_a_packed_ssl_model(tmp_path):
    # a tiny HuBERT stands in for the packed BASE model stage 7 puts here
    args = ssl_args(TINY_HUBERT, num_classes=50)
    torch.save(SSLTask.build_model(args).state_dict(), tmp_path / "model.pth")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    tokens = ["<blank>", "<unk>", "<space>", "A", "B", "<sos/eos>"]
    (tmp_path / "tokens.txt").write_text("\n".join(tokens) + "\n")
    asr_args = ASRTask.get_parser().parse_args(
        ["--config", str(ASR), "--token_list", str(tmp_path / "tokens.txt")]
        + ["--token_type", "char"]
    )
    asr_args.frontend_conf["frontend_conf"]["path_or_url"] = str(tmp_path / "model.pth")
    model = ASRTask.build_model(asr_args)
    mask = model.frontend.upstream.util_modules["mask"]
    assert (mask.mask_prob, mask.mask_channel_prob, mask.mask_channel_length) == (
        0.65,
        0.5,
        64,
    )
    assert model.frontend.freeze_encoder_steps == 10_000 and model.encoder is None
    speech = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))
    text = torch.tensor([[3, 2, 4], [4, 3, -1]])
    loss, stats, _ = model(
        speech, torch.tensor([32000, 24000]), text, torch.tensor([3, 2])
    )
    assert torch.isfinite(loss) and stats["loss_ctc"] > 0


# ---- architecture families (arXiv 2409.16295): BASE, small (3 blocks, BASE width),
# slim (12 blocks, half width) for three context networks
FAMILIES = {
    "transformer": "train_ssl_wav2vec2_{}.yaml",
    "summary_mixing": "train_ssl_wav2vec2_summary_mixing_{}.yaml",
    "conformer": "train_ssl_wav2vec2_conformer_{}.yaml",
}


def family_config(family: str, size: str) -> Path:
    if family == "transformer" and size != "base":
        return CONF / f"train_ssl_wav2vec2_transformer_{size}.yaml"
    return CONF / FAMILIES[family].format(size)


@pytest.fixture(scope="module")
def family_params():
    from espnet2.ssl.study.planner import build_model_from_config, parameter_counts

    counts = {}
    for family in FAMILIES:
        for size in ("base", "small", "slim"):
            config = yaml.safe_load(family_config(family, size).read_text())
            counts[family, size] = parameter_counts(build_model_from_config(config))
    return counts


@pytest.mark.parametrize("family", list(FAMILIES))
def test_slim_is_deep_and_narrow_at_about_the_parameters_of_small(
    family, family_params
):
    small, slim = family_params[family, "small"], family_params[family, "slim"]
    base = family_params[family, "base"]
    assert slim["encoder"] == pytest.approx(small["encoder"], rel=0.25)
    assert slim["total"] == pytest.approx(small["total"], rel=0.15)
    assert base["total"] > 2 * small["total"]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("size", ["small", "slim"])
def test_family_configs_differ_from_base_only_in_the_context_network(family, size):
    base = yaml.safe_load(family_config(family, "base").read_text())
    other = yaml.safe_load(family_config(family, size).read_text())
    width = other["encoder_conf"]["output_size"]
    assert other["preencoder_conf"] == {**base["preencoder_conf"], "output_size": width}
    for key in set(base) | set(other):
        if key not in ("encoder_conf", "preencoder_conf"):
            assert other.get(key) == base.get(key), key
    blocks = other["encoder_conf"]["num_blocks"]
    assert (blocks, width) == (
        {"small": 3, "slim": 12}[size],
        {"small": 768, "slim": 384}[size],
    )


# ---- GPU settings: SDPA attention, no attention plots, fast cuDNN


def config_id(config: Path) -> str:
    return f"{config.parent.parent.parent.parent.name}/{config.stem}"


def nested_values(tree, key: str) -> list:
    """Every value stored under ``key`` anywhere in a parsed YAML tree."""
    if isinstance(tree, dict):
        found = [tree[key]] if key in tree else []
        return found + [v for item in tree.values() for v in nested_values(item, key)]
    if isinstance(tree, list):
        return [v for item in tree for v in nested_values(item, key)]
    return []


def test_the_config_lists_hold_every_pretraining_config():
    assert len(PRETRAINING) == 17 and set(PRETRAINING) < set(TRAINING)


@pytest.mark.parametrize("config", TRAINING, ids=config_id)
def test_no_training_config_asks_for_flash_attention_or_attention_plots(config):
    conf = load(config)
    assert True not in nested_values(conf, "use_flash_attn")
    assert conf["num_att_plot"] == 0  # use_sdpa keeps no weights: the plot would fail


@pytest.mark.parametrize("config", PRETRAINING, ids=config_id)
def test_pretraining_uses_sdpa_where_the_encoder_has_it_and_fast_cudnn(config):
    args = ssl_args(config)  # ESPnet's parser: cudnn_* are its arguments
    assert args.cudnn_benchmark is True and args.cudnn_deterministic is False
    encoder_class = encoder_choices.get_class(args.encoder)
    if "use_sdpa" in inspect.signature(encoder_class).parameters:
        assert args.encoder_conf["use_sdpa"] is True
    else:  # ESPnet's conformer: relative-position attention, exact path
        assert args.encoder_conf["selfattention_layer_type"] == "rel_selfattn"


@pytest.mark.parametrize(
    "config",
    [c for c in PRETRAINING if load(c)["encoder"] == "transformer"],
    ids=config_id,
)
def test_every_attention_of_a_transformer_config_runs_sdpa_without_flash(config):
    model = build_on_meta(config)
    modules = [m for m in model.modules() if isinstance(m, MultiHeadedAttention)]
    assert len(modules) == load(config)["encoder_conf"]["num_blocks"]
    assert all(m.use_sdpa and not m.use_flash_attn for m in modules)
