"""fairseq wav2vec 2.0 / HuBERT checkpoints for the tests, written without fairseq.

Used by test/espnet2/ssl/release/fairseq/test_fairseq_checkpoint.py,
test/espnet2/bin/test_ssl_fairseq_import.py and
test/egs2/TEMPLATE/test_ssl_sh_fairseq.py (``import fairseq_builders``: test/helpers
is on ``sys.path`` through pytest.ini).
It imports only torch, so that a test that only needs a checkpoint file starts fast.

The layout is fairseq's own @ 3d262bb2: the state dict keys and shapes of
``Wav2Vec2Model`` / ``HubertModel`` (``fairseq/models/wav2vec/wav2vec2.py``,
``fairseq/models/hubert/hubert.py``), the config fields of their dataclasses, the
``cfg`` dict of fairseq-hydra-train and the flat ``args`` namespace of 2020's
fairseq-train (strings for ``latent_temp`` and ``loss_weights``).
"""

import argparse
import copy
from typing import Dict

import torch

NUM_CLASSES = 10
CONV_BASE = "[(16, 10, 5)] + [(16, 3, 2)] * 1 + [(16, 2, 2)]"
CONV_LARGE = "[(32, 10, 5), (32, 3, 2), (32, 2, 2)]"  # = encoder size: no projection
CONV_LAYERS = {  # the layers each expression stands for (written out, not evaluated)
    CONV_BASE: [(16, 10, 5), (16, 3, 2), (16, 2, 2)],
    CONV_LARGE: [(32, 10, 5), (32, 3, 2), (32, 2, 2)],
}


def model_fields(kind: str, large: bool) -> Dict:
    """fairseq model config fields (as fairseq writes them) at tiny sizes."""
    fields = dict(
        _name=kind, extractor_mode="layer_norm" if large else "default",
        encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
        encoder_attention_heads=4, activation_fn="gelu", layer_type="transformer",
        dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
        encoder_layerdrop=0.05, dropout_input=0.1, dropout_features=0.1,
        final_dim=12 if kind == "wav2vec2" else 8, layer_norm_first=large,
        conv_feature_layers=CONV_LARGE if large else CONV_BASE, conv_bias=large,
        logit_temp=0.1, target_glu=False, feature_grad_mult=0.1 if large else 1.0,
        mask_length=10, mask_prob=0.65, mask_selection="static", mask_other=0.0,
        no_mask_overlap=False, mask_min_space=1, mask_channel_length=10,
        mask_channel_prob=0.0, mask_channel_selection="static",
        mask_channel_other=0.0, no_mask_channel_overlap=False,
        mask_channel_min_space=1, conv_pos=8, conv_pos_groups=4,
        latent_temp=[2.0, 0.5, 0.999995], checkpoint_activations=False,
        required_seq_len_multiple=2, depthwise_conv_kernel_size=31, attn_type="",
        pos_enc_type="abs", fp16=False,
    )  # fmt: skip
    if kind == "wav2vec2":
        fields.update(
            quantize_targets=True, quantize_input=False, same_quantizer=False,
            quantizer_depth=1, quantizer_factor=3, latent_vars=8, latent_groups=2,
            latent_dim=0, num_negatives=10, negatives_from_everywhere=False,
            cross_sample_negatives=2, codebook_negatives=0, pos_conv_depth=1,
            crop_seq_to_multiple=1, require_same_masks=True, mask_dropout=0.0,
            mask_channel_before=False, max_positions=100000,
            latent_temp=[2.0, 0.25, 0.999],
        )  # fmt: skip
    else:
        fields.update(
            label_rate=50.0, untie_final_proj=False, conv_pos_batch_norm=False,
            skip_masked=False, skip_nomask=False,
        )  # fmt: skip
    return fields


def fairseq_state(fields: Dict, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random tensors under fairseq's keys and shapes for the model ``fields``."""
    gen = torch.Generator().manual_seed(seed)
    state: Dict[str, torch.Tensor] = {}

    def put(key, *shape, scale=0.2, offset=0.0):
        state[key] = offset + scale * torch.randn(*shape, generator=gen)

    layers = CONV_LAYERS[fields["conv_feature_layers"]]
    dim, ffn = fields["encoder_embed_dim"], fields["encoder_ffn_embed_dim"]
    channels_in = 1
    for i, (channels, kernel, _) in enumerate(layers):
        put(f"feature_extractor.conv_layers.{i}.0.weight", channels, channels_in,
            kernel, scale=0.5)  # fmt: skip
        if fields["conv_bias"]:
            put(f"feature_extractor.conv_layers.{i}.0.bias", channels)
        norm = {"default": ".2", "layer_norm": ".2.1"}[fields["extractor_mode"]]
        if fields["extractor_mode"] == "layer_norm" or i == 0:
            put(f"feature_extractor.conv_layers.{i}{norm}.weight", channels,
                offset=1.0)  # fmt: skip
            put(f"feature_extractor.conv_layers.{i}{norm}.bias", channels)
        channels_in = channels
    put("layer_norm.weight", channels_in, offset=1.0)
    put("layer_norm.bias", channels_in)
    if channels_in != dim:
        put("post_extract_proj.weight", dim, channels_in)
        put("post_extract_proj.bias", dim)
    put("mask_emb", dim, scale=1.0)
    kernel, groups = fields["conv_pos"], fields["conv_pos_groups"]
    state["encoder.pos_conv.0.weight_g"] = 0.5 + torch.rand(1, 1, kernel, generator=gen)
    put("encoder.pos_conv.0.weight_v", dim, dim // groups, kernel)
    put("encoder.pos_conv.0.bias", dim)
    for i in range(fields["encoder_layers"]):
        prefix = f"encoder.layers.{i}"
        for name in ("q", "k", "v", "out"):
            put(f"{prefix}.self_attn.{name}_proj.weight", dim, dim)
            put(f"{prefix}.self_attn.{name}_proj.bias", dim)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            put(f"{prefix}.{norm}.weight", dim, offset=1.0)
            put(f"{prefix}.{norm}.bias", dim)
        put(f"{prefix}.fc1.weight", ffn, dim)
        put(f"{prefix}.fc1.bias", ffn)
        put(f"{prefix}.fc2.weight", dim, ffn)
        put(f"{prefix}.fc2.bias", dim)
    put("encoder.layer_norm.weight", dim, offset=1.0)
    put("encoder.layer_norm.bias", dim)
    final = fields["final_dim"]
    if fields["_name"] == "wav2vec2":
        entries = fields["latent_groups"] * fields["latent_vars"]
        put("quantizer.vars", 1, entries, final // fields["latent_groups"], scale=1.0)
        put("quantizer.weight_proj.weight", entries, channels_in)
        put("quantizer.weight_proj.bias", entries)
        put("project_q.weight", final, final)
        put("project_q.bias", final)
    else:
        put("label_embs_concat", NUM_CLASSES, final, scale=1.0)
    put("final_proj.weight", final, dim)
    put("final_proj.bias", final)
    return state


def task_fields(kind: str, large: bool) -> Dict:
    name = "audio_pretraining" if kind == "wav2vec2" else "hubert_pretraining"
    task = dict(_name=name,
                data="/data/manifest", sample_rate=16000, normalize=large,
                enable_padding=False, max_sample_size=250000)  # fmt: skip
    if kind == "hubert":
        task.update(labels=["km"], label_dir="/data/labels", label_rate=50.0)
    return task


CRITERIA = {
    "wav2vec2": dict(_name="wav2vec", infonce=True, loss_weights=[0.2, 5.0],
                     log_keys=["prob_perplexity", "code_perplexity", "temp"]),
    "hubert": dict(_name="hubert", pred_masked_weight=1.0, pred_nomask_weight=0.0,
                   loss_weights=[10.0]),
}  # fmt: skip


def checkpoint_dict(kind: str, large: bool, style: str, updates: int = 1234) -> Dict:
    """A fairseq checkpoint: ``cfg`` (hydra) or flat ``args`` (2020) style."""
    fields, task = model_fields(kind, large), task_fields(kind, large)
    criterion = copy.deepcopy(CRITERIA[kind])
    history = [{"criterion_name": "x", "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": 2.5},
                "num_updates": updates}]  # fmt: skip
    raw = {"model": fairseq_state(fields), "optimizer_history": history,
           "extra_state": {"previous_training_time": 12.5}, "task_state": {},
           "criterion": None, "last_optimizer_state": None}  # fmt: skip
    if style == "cfg":
        raw["args"] = None
        raw["cfg"] = {"_name": None, "common": {"seed": 1}, "model": fields,
                      "task": task, "criterion": criterion}  # fmt: skip
        return raw
    flat = {k: v for k, v in {**task, **criterion, **fields}.items() if k != "_name"}
    flat.update(arch=kind, task=task["_name"], criterion=criterion["_name"])
    flat["latent_temp"] = str(tuple(fields["latent_temp"]))  # old args: strings
    flat["loss_weights"] = str(criterion["loss_weights"])
    raw["args"] = argparse.Namespace(**flat)
    return raw
