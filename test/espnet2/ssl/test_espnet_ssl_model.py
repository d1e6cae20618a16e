"""espnet2/ssl/espnet_model.py: the replaced ESPnetSSLModel (built by SSLTask)."""

import json
import math

import pytest
import torch

from espnet2.tasks.ssl import SSLTask


def test_masking_does_not_overwrite_the_preencoder_output_losses_read(
    build_ssl_model, ssl_configs, audio_batch
):
    model, _ = build_ssl_model(ssl_configs["hubert"])
    model.required_inputs = set(model.required_inputs) | {"preencoder"}
    model.eval()
    speech, lengths = audio_batch()
    data = model.encode(speech, lengths, seeds=[1, 2])
    fresh = {}
    model._encoder_input(speech, lengths, fresh)
    masked = data["mask_info"]["mask_m"]
    assert bool(masked.any())
    assert torch.equal(data["preencoder"], fresh["preencoder"])


def test_features_penalty_is_the_mean_square_of_the_raw_cnn_output_on_valid_frames(
    build_ssl_model, ssl_configs, audio_batch
):
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    model.eval()
    speech, lengths = audio_batch()
    data = model.encode(speech, lengths, seeds=[1, 2])
    raw, raw_lengths = model.frontend(speech, lengths)
    expected = torch.cat([raw[b, :n] for b, n in enumerate(raw_lengths)]).pow(2)
    assert torch.allclose(data["features_penalty"], expected.mean())
    normed = model.feature_norm(raw)
    assert torch.allclose(data["features"], normed)


def test_feature_grad_mult_scales_the_cnn_gradient(
    build_ssl_model, ssl_configs, audio_batch
):
    speech, lengths = audio_batch()
    grads = {}
    for mult in (1.0, 0.1):
        overrides = {
            "model_conf": {"feature_grad_mult": mult, "feature_layer_norm": True}
        }
        model, _ = build_ssl_model(ssl_configs["wav2vec2"], overrides=overrides)
        model.eval()
        loss, _, _ = model(speech, lengths)
        loss.backward()
        grads[mult] = model.frontend.layers[0].conv.weight.grad.clone()
    assert torch.allclose(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(grads[0.1], grads[1.0], rtol=1e-2)


def test_feature_grad_mult_zero_freezes_the_cnn(
    build_ssl_model, ssl_configs, audio_batch
):
    overrides = {"model_conf": {"feature_grad_mult": 0.0, "feature_layer_norm": True}}
    model, _ = build_ssl_model(ssl_configs["wav2vec2"], overrides=overrides)
    loss, _, _ = model(*audio_batch())
    loss.backward()
    assert model.frontend.layers[0].conv.weight.grad is None
    assert model.encoder.encoders[0].feed_forward.w_1.weight.grad is not None


@pytest.mark.parametrize("accum_grad", [1, 4])
def test_gumbel_temperature_follows_optimizer_updates_under_accum_grad(
    build_ssl_model, ssl_configs, audio_batch, accum_grad
):
    model, args = build_ssl_model(ssl_configs["wav2vec2"])
    args.optim, args.optim_conf = "sgd", {"lr": 0.0}
    optimizer = SSLTask.build_optimizers(args, model)[0]
    speech, lengths = audio_batch()
    num_updates = 3
    for micro_batch in range(1, num_updates * accum_grad + 1):
        loss, _, _ = model(speech, lengths)
        (loss / accum_grad).backward()
        if micro_batch % accum_grad == 0:
            optimizer.step()
            optimizer.zero_grad()
    model(speech, lengths)  # the next forward applies the schedule
    quantizer = model.losses[0].quantizer
    assert int(model.num_updates) == num_updates
    assert quantizer.temperature == pytest.approx(max(2.0 * 0.999995**3, 0.5))
    assert "num_updates" in model.state_dict()


def test_validation_loss_is_the_same_in_every_epoch(
    build_ssl_model, ssl_configs, audio_batch
):
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    model.eval()
    speech, lengths = audio_batch()
    first = model(speech, lengths)[1]["loss"]
    model.train()
    model(speech, lengths)  # a training step in between changes no weights here
    model.eval()
    assert float(model(speech, lengths)[1]["loss"]) == float(first)


def test_a_validation_utterance_gets_the_same_mask_in_any_batch(
    build_ssl_model, ssl_configs, audio_batch
):
    from espnet2.ssl.espnet_model import utterance_seeds

    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    model.eval()
    speech, lengths = audio_batch((8000, 5600))
    alone = model.encode(
        speech[1:, :5600], lengths[1:], seeds=utterance_seeds(speech[1:], lengths[1:])
    )
    paired = model.encode(speech, lengths, seeds=utterance_seeds(speech, lengths))
    t = alone["mask_info"]["mask_m"].shape[1]
    assert torch.equal(
        paired["mask_info"]["mask_m"][1, :t], alone["mask_info"]["mask_m"][0]
    )


def test_hubert_still_trains_through_the_replaced_model(
    build_ssl_model, ssl_configs, audio_batch
):
    model, args = build_ssl_model(ssl_configs["hubert"])
    args.optim, args.optim_conf = "adam", {"lr": 0.003}
    optimizer = SSLTask.build_optimizers(args, model)[0]
    speech, lengths = audio_batch((8000, 8000))
    frames = (8000 - 400) // 320 + 1
    text = torch.arange(frames).repeat(2, 1) % 10
    text_lengths = torch.tensor([frames, frames])
    losses = []
    for _ in range(30):
        loss, stats, weight = model(speech, lengths, text, text_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(stats["loss"].item())
    assert losses[-1] < 0.5 * losses[0]
    assert int(model.num_updates) == 30
    assert math.isfinite(losses[-1])


@pytest.mark.parametrize("lengths", [(400, 8000), (400,), (720, 1040), (3200, 3200)])
def test_short_utterances_give_a_finite_loss_and_gradients(
    build_ssl_model, ssl_configs, audio_batch, lengths
):
    """400 samples is one CNN frame; 720 and 1040 give 2 and 3 frames."""
    model, _ = build_ssl_model(ssl_configs["wav2vec2"])
    for train in (True, False):
        model.train(train)
        loss, stats, weight = model(*audio_batch(lengths))
        assert torch.isfinite(loss).all()
        assert float(weight) == stats["num_masked_frames"]
    loss.backward()
    assert torch.isfinite(model.losses[0].final_proj.weight.grad).all()


COUNTS_RANK_SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from espnet2.tasks.ssl import SSLTask
rank, world, init_file, out = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank,
                        world_size=world)
args = SSLTask.get_parser().parse_args(["--token_list", "none", "--token_type", "word"])
for key, value in json.loads(sys.argv[5]).items():
    setattr(args, key, value)
args.token_list = [str(i) for i in range(10)] + ["<unk>"]
torch.manual_seed(0)
model = SSLTask.build_model(args).train()
shapes, all_reduce = [], dist.all_reduce
def counted(tensor, *rest, **kwargs):
    shapes.append(list(tensor.shape))
    return all_reduce(tensor, *rest, **kwargs)
dist.all_reduce = counted
samples = 8000 * (rank + 1)  # rank 0: 0.5 s, rank 1: 1 s
speech = 0.1 * torch.randn(1, samples, generator=torch.Generator().manual_seed(rank))
loss, stats, weight = model(speech, torch.tensor([samples]))
json.dump(dict(
    shapes=shapes, own=float(weight), masked=float(stats["num_masked_frames"]),
    sample_size=float(stats["sample_size"]), seconds=float(stats["batch_seconds"]),
    seen=int(model.seen_audio.seen_samples), loss=float(stats["loss"]),
    own_loss=float(loss)), open(out, "w"))
dist.destroy_process_group()
"""


@pytest.mark.recipe  # end to end in other processes
def test_with_two_gloo_ranks_the_step_counts_are_summed_in_one_all_reduce(
    run_gloo_ranks, tmp_path, ssl_configs
):
    """Each rank trains one micro-batch of its own length. The batch's samples and
    both counts travel in one all_reduce of 3 values; every rank logs the global
    batch's counts and seconds and adds both ranks' audio to its seen-audio
    counter, while the loss and its weight stay the rank's own."""
    results = run_gloo_ranks(
        COUNTS_RANK_SCRIPT, tmp_path, json.dumps(ssl_configs["wav2vec2"])
    )
    total_masked = sum(result["own"] for result in results)
    assert all(result["own"] > 0 for result in results)
    for result in results:
        assert result["shapes"] == [[3]]  # one collective per micro-batch
        assert result["masked"] == result["sample_size"] == total_masked
        assert result["seconds"] == pytest.approx(1.5)
        assert result["seen"] == 24000
        assert result["loss"] == pytest.approx(result["own_loss"])
