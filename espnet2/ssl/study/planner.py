"""What an SSL pretraining run costs before it runs: parameters, FLOPs, batch, budget.

The model is built from its training config by ESPnet's ``SSLTask`` and measured:
parameters by counting, FLOPs per second of audio by torch's FLOP counter on one real
training step (forward, and forward + backward) on a crop of ``crop_seconds``, and
the activation memory per second of audio by torch.profiler's allocation records on
the same step (float32). With a device memory, the most audio one device holds is
estimated as (memory - 16 bytes per parameter for weights, gradients and AdamW's two
moments) / activation bytes per second: an estimate for float32 on crops of
``crop_seconds`` (mixed precision holds more; longer utterances cost more per second
with attention). For
transformer encoders the forward count of CNN + projection + encoder is checked
against the analytic count of ``espnet2/ssl/study/flops.py``. The batch comes from
``espnet2/ssl/train/batch_seconds.py``; the budget (hours seen, updates or GPU-hours,
one of
them) gives the other two, with GPU-hours = training FLOPs / sustained device FLOP/s.

References: arXiv:2402.13723 (budget in hours seen = batch seconds x updates; LR
scaling rules); arXiv:2409.16295 (model size vs data size on a compute budget).
"""

import argparse
import logging
from typing import Dict, Optional

import torch

from espnet2.ssl.frame_geometry import cnn_frame_count, config_cnn_shapes
from espnet2.ssl.study.flops import analytic_transformer_flops, count_flops
from espnet2.ssl.study.memory import tensor_memory
from espnet2.ssl.train.batch_seconds import plan_batch, scale_lr


def build_model_from_config(config: Dict) -> torch.nn.Module:
    """An ``ESPnetSSLModel`` built by ``SSLTask`` from a training config dict."""
    from espnet2.tasks.ssl import SSLTask

    args = SSLTask.get_parser().parse_args(["--token_list", "none"])
    for key, value in config.items():
        setattr(args, key, value)
    args.token_list = ["<unk>"]
    args.init = config.get("init")
    return SSLTask.build_model(args)


def parameter_counts(model: torch.nn.Module) -> Dict[str, int]:
    """Total and per-part parameter counts (losses include the quantizer)."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for part in ("frontend", "preencoder", "encoder", "losses"):
        module = getattr(model, part, None)
        counts[part] = sum(p.numel() for p in module.parameters()) if module else 0
    return counts


def _batch(config: Dict, crop_seconds: float, sample_rate: int, seed: int = 0):
    """One utterance of random audio (1, S), and random frame labels for HuBERT."""
    generator = torch.Generator().manual_seed(seed)
    samples = int(round(crop_seconds * sample_rate))
    batch = dict(
        speech=0.1 * torch.randn(1, samples, generator=generator),
        speech_lengths=torch.tensor([samples]),
    )
    for loss in config.get("loss", []):
        if "num_classes" in loss.get("conf", {}):
            shapes = config_cnn_shapes(config, "the training config")
            frames = cnn_frame_count(samples, shapes)
            classes = loss["conf"]["num_classes"]
            batch["text"] = torch.randint(classes, (1, frames), generator=generator)
            batch["text_lengths"] = torch.tensor([frames])
    return batch


def measured_flops(
    model: torch.nn.Module, config: Dict, crop_seconds: float, sample_rate: int
) -> Dict[str, float]:
    """FLOPs per audio second of a training forward and a forward + backward.

    Measured on one utterance of ``crop_seconds`` of random audio, in train mode
    (masking and the loss included).
    """
    batch = _batch(config, crop_seconds, sample_rate)
    model.train()
    with torch.no_grad():
        forward = count_flops(lambda: model(**batch))
    training = count_flops(lambda: model(**batch)[0].backward())
    model.zero_grad(set_to_none=True)
    return {
        "forward_per_audio_s": forward / crop_seconds,
        "training_per_audio_s": training / crop_seconds,
    }


BYTES_PER_PARAMETER = 16  # float32 weight, gradient, AdamW's two moments


def activation_memory(
    model: torch.nn.Module, config: Dict, crop_seconds: float, sample_rate: int
) -> Dict[str, float]:
    """Peak tensor memory of a training forward + backward, above the parameters.

    Returns:
        ``step_peak_bytes`` (every tensor the step allocates, gradients included) and
        ``activation_bytes_per_audio_s`` (that minus one gradient per parameter,
        divided by the audio seconds).
    """
    batch = _batch(config, crop_seconds, sample_rate)
    model.train()
    model.zero_grad(set_to_none=True)
    _, peak = tensor_memory(lambda: None, lambda: model(**batch)[0].backward())
    model.zero_grad(set_to_none=True)
    gradients = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "step_peak_bytes": peak,
        "activation_bytes_per_audio_s": max(0, peak - gradients) / crop_seconds,
    }


def max_device_batch_seconds(
    device_memory_gb: float, parameters: int, activation_bytes_per_audio_s: float
) -> float:
    """Audio seconds one device holds beside the model and AdamW (float32)."""
    free = device_memory_gb * 1e9 - BYTES_PER_PARAMETER * parameters
    if free <= 0 or activation_bytes_per_audio_s <= 0:
        raise ValueError(
            f"{device_memory_gb:g} GB cannot hold the {parameters / 1e6:.1f} M "
            f"parameters with gradients and AdamW state "
            f"({BYTES_PER_PARAMETER * parameters / 1e9:.2f} GB)"
        )
    return free / activation_bytes_per_audio_s


def encoder_flops_check(
    model: torch.nn.Module, config: Dict, crop_seconds: float, sample_rate: int
) -> Optional[Dict[str, float]]:
    """Counted vs analytic forward FLOPs of CNN + projection + encoder (transformer).

    Returns None for encoders without an analytic count, and for frontends other
    than the CNN (``wav2vec_cnn``, the default): the analytic count knows only the
    CNN (an STFT frontend such as ``default`` would be counted as a CNN it is not).
    """
    if config.get("encoder") != "transformer":
        return None
    if config.get("frontend", "wav2vec_cnn") != "wav2vec_cnn":
        return None
    batch = _batch(config, crop_seconds, sample_rate)
    speech, lengths = batch["speech"], batch["speech_lengths"]
    model.eval()
    with torch.no_grad():
        counted = count_flops(lambda: model.inference_encode(speech, lengths))
        frames = int(model.inference_encode(speech, lengths)[2][0])
    shapes = config_cnn_shapes(config, "the training config")
    analytic = analytic_transformer_flops(
        int(lengths[0]), frames, shapes, config["encoder_conf"]
    )
    return {
        "counted": counted,
        "analytic": analytic["total"],
        "ratio": counted / analytic["total"],
    }


def budget(
    training_flops_per_audio_s: float,
    update_seconds: float,
    device_tflops: float,
    seen_hours: Optional[float] = None,
    updates: Optional[int] = None,
    gpu_hours: Optional[float] = None,
) -> Dict[str, float]:
    """Hours seen, updates and GPU-hours from whichever one is given.

    Args:
        training_flops_per_audio_s: Forward + backward FLOPs per audio second.
        update_seconds: Audio per optimizer update (s).
        device_tflops: Sustained training throughput of one device (TFLOP/s).
        seen_hours, updates, gpu_hours: Exactly one of them.
    """
    given = [x is not None for x in (seen_hours, updates, gpu_hours)]
    if sum(given) != 1:
        raise ValueError("give exactly one of seen_hours, updates, gpu_hours")
    flops_per_gpu_hour = device_tflops * 1e12 * 3600
    if updates is not None:
        seen_hours = updates * update_seconds / 3600
    elif gpu_hours is not None:
        seen_hours = gpu_hours * flops_per_gpu_hour / training_flops_per_audio_s / 3600
    seen_seconds = seen_hours * 3600
    return {
        "seen_hours": seen_hours,
        "updates": seen_seconds / update_seconds,
        "training_flops": training_flops_per_audio_s * seen_seconds,
        "gpu_hours": training_flops_per_audio_s * seen_seconds / flops_per_gpu_hour,
    }


def plan(config: Dict, args: argparse.Namespace) -> Dict:
    """Everything the planner reports, as a JSON-ready dict."""
    sample_rate = 16000
    torch.manual_seed(args.seed)
    model = build_model_from_config(config)
    logging.info(f"measuring FLOPs on a {args.crop_seconds:g} s crop")
    flops = measured_flops(model, config, args.crop_seconds, sample_rate)
    params = parameter_counts(model)
    memory = activation_memory(model, config, args.crop_seconds, sample_rate)
    device_cap = args.max_device_batch_seconds
    if args.device_memory_gb is not None:
        memory["max_device_batch_seconds"] = max_device_batch_seconds(
            args.device_memory_gb, params["total"],
            memory["activation_bytes_per_audio_s"],
        )  # fmt: skip
        device_cap = device_cap or memory["max_device_batch_seconds"]
    batch = plan_batch(
        args.batch_seconds,
        args.num_devices,
        device_cap,
        sample_rate,
        args.crop_seconds if args.fixed_crops else None,
    )
    reference_lr = config.get("optim_conf", {}).get("lr", 1e-3)
    return {
        "parameters": params,
        "flops": flops,
        "memory": memory,
        "flops_check": encoder_flops_check(
            model, config, args.crop_seconds, sample_rate
        ),
        "batch": batch.as_dict(),
        "budget": budget(
            flops["training_per_audio_s"],
            batch.update_seconds,
            args.device_tflops,
            args.seen_hours,
            args.updates,
            args.gpu_hours,
        ),
        "lr": {
            "reference_lr": reference_lr,
            "reference_batch_seconds": args.lr_reference_batch_seconds,
            "rule": args.lr_scaling,
            "lr": scale_lr(
                reference_lr,
                batch.update_seconds,
                args.lr_reference_batch_seconds,
                args.lr_scaling,
            ),
        },
    }


def markdown(result: Dict) -> str:
    """The plan as a two-column markdown table."""
    params, flops, batch = result["parameters"], result["flops"], result["batch"]
    spend, lr = result["budget"], result["lr"]
    rows = [
        ("parameters", f"{params['total'] / 1e6:.2f} M "
         f"(encoder {params['encoder'] / 1e6:.2f} M)"),
        ("forward GFLOP per audio second", f"{flops['forward_per_audio_s'] / 1e9:.1f}"),
        ("training GFLOP per audio second",
         f"{flops['training_per_audio_s'] / 1e9:.1f}"),
    ]  # fmt: skip
    memory = result["memory"]
    rows.append(("activation MB per audio second (float32)",
                 f"{memory['activation_bytes_per_audio_s'] / 2**20:.0f}"))  # fmt: skip
    if "max_device_batch_seconds" in memory:
        rows.append(("most audio per device (estimate)",
                     f"{memory['max_device_batch_seconds']:.1f} s"))  # fmt: skip
    if result["flops_check"] is not None:
        rows.append(
            ("counted / analytic FLOPs", f"{result['flops_check']['ratio']:.3f}")
        )
    rows += [
        ("devices x accum_grad", f"{batch['num_devices']} x {batch['accum_grad']}"),
        ("per-device micro-batch", f"{batch['device_batch_seconds']:.2f} s"),
        ("ESPnet batch", f"batch_type {batch['batch_type']}, batch_bins "
         f"{batch['batch_bins']}, batch_size {batch['batch_size']}"),
        ("audio per update", f"{batch['update_seconds']:.1f} s "
         f"(target {batch['batch_seconds']:g} s)"),
        ("updates", f"{spend['updates']:.0f}"),
        ("hours seen", f"{spend['seen_hours']:.1f}"),
        ("training PFLOP", f"{spend['training_flops'] / 1e15:.1f}"),
        ("GPU-hours", f"{spend['gpu_hours']:.1f}"),
        ("learning rate", f"{lr['lr']:.3g} ({lr['rule']} from {lr['reference_lr']:g} "
         f"at {lr['reference_batch_seconds']:g} s)"),
    ]  # fmt: skip
    lines = ["| quantity | value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)
