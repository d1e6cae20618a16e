"""How much audio the model has been trained on: hours seen, seconds per update.

The batch-size study measures an SSL budget in hours of speech seen, batch seconds x
updates ("The effect of batch size on contrastive self-supervised speech
representation learning", arXiv:2402.13723; nanow2v2
``plot/ft_asr_against_steps/step_vs_hours_seen.py``). Here the
count is exact: every training forward adds the valid samples of its batch (after
cropping, without padding), summed over all ranks, so every rank holds the global
count. The counters are buffers of the model, so they are saved in every checkpoint
and restored on resume. A forward whose update is later skipped (non-finite
gradient) still counts: the audio was seen.

Nothing here reads the device in a training step: ``add``/``add_samples`` update the
buffers on their device and ``step_stats`` returns tensors; only ``seen_hours`` and
``update_seconds`` (called by the trainer at update boundaries and for logs) read
them on the host.
"""

from typing import Dict

import torch
import torch.distributed as dist

COUNTERS = ("seen_samples", "pending_samples", "last_update_samples")
# the trainer's log of hours seen and updates after each epoch, one JSON a line
SEEN_AUDIO_LOG = "seen_audio.jsonl"


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over all ranks (itself when not distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


class SeenAudio(torch.nn.Module):
    """Counters of audio samples seen in training, in (1,) int64 buffers.

    * ``seen_samples``: everything seen so far (all ranks);
    * ``pending_samples``: seen since the last optimizer update (micro-batches of
      ``accum_grad``);
    * ``last_update_samples``: what the last completed update was computed on.
    """

    def __init__(self, sample_rate: int = 16000):
        """Args: sample_rate: Samples per second of the audio counted (Hz)."""
        super().__init__()
        self.sample_rate = sample_rate
        for name in COUNTERS:
            self.register_buffer(name, torch.zeros(1, dtype=torch.int64))

    def add(self, speech_lengths: torch.Tensor) -> torch.Tensor:
        """Counts a training batch (one all_reduce when distributed).

        Args:
            speech_lengths: Valid samples per utterance (B,) of this rank's batch.

        Returns:
            The batch's samples over all ranks, (1,) int64 on the buffers' device
            (a tensor: no host read).
        """
        samples = global_sum(speech_lengths.sum().to(self.seen_samples).reshape(1))
        self.add_samples(samples)
        return samples

    def add_samples(self, samples: torch.Tensor) -> None:
        """Counts samples already summed over all ranks (no collective here).

        Args:
            samples: 0-dim or (1,) count of samples, integer or float (rounded), on
                the buffers' device; e.g. one entry of a vector the SSL model
                reduces together with its other counts.
        """
        if samples.is_floating_point():
            samples = samples.round()
        samples = samples.to(self.seen_samples).reshape(1)
        self.seen_samples.add_(samples)
        self.pending_samples.add_(samples)

    def step_stats(self, batch_samples: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The seen-audio stats of a training step, as 0-dim float64 tensors.

        Args:
            batch_samples: The batch's samples over all ranks (0-dim or (1,)).

        Returns:
            ``batch_seconds`` (the batch, all ranks), ``update_seconds`` (the last
            completed update) and ``seen_hours`` (everything so far).
        """
        rate = float(self.sample_rate)
        return dict(
            batch_seconds=batch_samples.double().reshape(()) / rate,
            update_seconds=self.last_update_samples.double().reshape(()) / rate,
            seen_hours=self.seen_samples.double().reshape(()) / rate / 3600,
        )

    def close_update(self) -> None:
        """Called after each optimizer update: the pending audio made that update."""
        self.last_update_samples.copy_(self.pending_samples)
        self.pending_samples.zero_()

    def seen_hours(self) -> float:
        """Hours of audio seen so far, all ranks together."""
        return int(self.seen_samples) / self.sample_rate / 3600

    def update_seconds(self) -> float:
        """Seconds of audio behind the last completed update (0 before the first)."""
        return int(self.last_update_samples) / self.sample_rate

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints from before this counter existed load with zero counts."""
        for name in COUNTERS:
            state_dict.setdefault(prefix + name, torch.zeros(1, dtype=torch.int64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
