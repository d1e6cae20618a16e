"""ESPnet's encoder-only SSL model, with the fixes the wav2vec 2.0 objective needs.

Replaces ``espnet2/ssl/espnet_model.py`` of ESPnet 202511 (CONTRIBUTING.md lists it).
Every constructor argument and method of ESPnet's ``ESPnetSSLModel`` keeps working
(HuBERT configs train as before); what changes:

* masking no longer overwrites the unmasked features losses read (``preencoder``);
* ``features`` (the CNN output after an optional LayerNorm, fairseq's quantizer input)
  and ``features_penalty`` (fairseq ``features_pen``: mean square of the raw CNN
  output) can be requested by a loss;
* ``feature_grad_mult`` scales the gradient reaching the CNN (fairseq
  ``feature_grad_mult``; 0 freezes it);
* ``num_updates`` counts optimizer updates, not forward passes: the SSL task hooks
  the optimizer, so schedules (Gumbel temperature) are right under ``accum_grad`` and
  skipped steps, and the count is saved in checkpoints;
* validation masks are deterministic: each utterance's mask is seeded from its audio;
* ``seen_audio`` counts the audio trained on (all ranks, saved in checkpoints) and the
  training stats report ``seen_hours``, ``batch_seconds`` and ``update_seconds``;
* the training stats' ``num_masked_frames`` and ``sample_size`` are those of the global
  batch (summed over ranks); the loss weight stays the rank's own ``sample_size``;
* a training micro-batch reads nothing on the host (see "Host syncs" below) and
  makes one collective: the batch's samples and the ``GLOBAL_COUNTS`` travel in one
  all_reduce.
* ``frames`` (the features right before the preencoder, unmasked: the targets of the
  ``reconstruction`` loss) can be requested by a loss, and the ``freq_mask`` util
  masks channel blocks of those features before the preencoder (training and
  validation, never ``inference_encode``), its (B, F) mask in ``frequency_mask``.

References: wav2vec 2.0 (Baevski et al., 2020, arXiv:2006.11477); fairseq
``fairseq/models/wav2vec/wav2vec2.py`` @ 3d262bb2 (``Wav2Vec2Model.forward``); TERA
(A. T. Liu, S.-W. Li, H.-y. Lee, IEEE/ACM TASLP 2021, arXiv:2007.06028) for the
frequency masking and the reconstruction targets.

Host syncs: on a GPU every read of a device value on the host stalls the step until
the queued kernels finish. In training the stats stay 0-dim tensors (the trainer
reads them when it logs), the update count for the schedules is mirrored in a Python
int (re-read from the ``num_updates`` buffer once after ``load_state_dict`` or
``train()``), the waveforms are not trimmed to ``speech_lengths.max()`` (ESPnet's
"for data-parallel" slice: DDP ranks collate their own batches, already trimmed;
DataParallel, whose replicas lose our buffer updates anyway, is not supported), padding
masks come from the lengths on the device, and the span masks are drawn on the
device. ``test/espnet2/ssl/train/test_host_syncs.py`` counts what is left.
"""

import contextlib
import logging
from typing import Dict, List, Optional, Set, Tuple, Union

import torch
from typeguard import typechecked

from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.ssl.data.augment import AUGMENTED_KEY, augmentation_stats
from espnet2.ssl.loss.abs_loss import AbsSSLLoss
from espnet2.ssl.train.seen_audio import SeenAudio, global_sum
from espnet2.ssl.utils.grad_multiply import scale_grad
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel

MASK_UTILS = ("block_mask", "mask")  # block masking wins when both are configured
# training counts logged for the global batch (summed over ranks); the loss weight
# stays this rank's sample_size
GLOBAL_COUNTS = ("num_masked_frames", "sample_size")


def padding_mask(lengths: torch.Tensor, max_frames: int) -> torch.Tensor:
    """(B, T) bool, True on padded frames, built on the lengths' device.

    ESPnet's ``make_pad_mask(lengths, maxlen=T)`` without its host reads (a
    ``tolist`` or an assert on ``lengths.max()``, each a sync on a GPU).

    Args:
        lengths: Valid frames per utterance (B,).
        max_frames: T of the padded batch (longer lengths count as T).

    Returns:
        (B, T) bool mask, True = padding.
    """
    frames = torch.arange(max_frames, device=lengths.device)  # (T,)
    return frames[None, :] >= lengths[:, None]


def utterance_seeds(speech: torch.Tensor, speech_lengths: torch.Tensor) -> List[int]:
    """A seed per utterance that depends only on its audio samples.

    Args:
        speech: Waveforms (B, S), padded with anything.
        speech_lengths: Valid samples per utterance (B,).

    Returns:
        B integers in [0, 2**31): the same utterance gives the same seed in every
        epoch and in any batch.
    """
    seeds = []
    for wave, length in zip(speech.detach().float().cpu(), speech_lengths.tolist()):
        quantised = torch.round(wave[:length] * 32768).to(torch.int64)
        weights = torch.arange(length, dtype=torch.int64) % 7919 + 1
        seeds.append(int(((quantised * weights).sum() + length * 104729) % (2**31)))
    return seeds


@contextlib.contextmanager
def _seeded_rng(seed: int, device: torch.device):
    """Runs the block with torch's generators seeded, then restores their state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class ESPnetSSLModel(AbsESPnetModel):
    """An encoder-only SSL model: frontend -> preencoder -> mask -> encoder -> losses.

    Objectives: HuBERT (``hubert``), wav2vec 2.0 (``wav2vec2``), masked frame
    reconstruction (``reconstruction``, TERA-style); several losses can be combined
    by listing them under ``loss:`` in the training config.
    """

    @typechecked
    def __init__(
        self,
        frontend: Optional[AbsFrontend],
        specaug: Optional[AbsSpecAug],
        normalize: Optional[AbsNormalize],
        preencoder: Optional[AbsPreEncoder],
        encoder: AbsEncoder,
        losses: List[AbsSSLLoss],
        util_attributes: Set[str],
        required_inputs: Set[str],
        util_modules: torch.nn.ModuleDict,
        token_list: Union[Tuple[str, ...], List[str]] = None,
        extract_feats_in_collect_stats: bool = True,
        feature_grad_mult: float = 1.0,
        feature_layer_norm: bool = False,
        input_dropout: float = 0.0,
        sample_rate: int = 16000,
        **kwargs,
    ):
        """Builds the model from modules made by ``SSLTask.build_model``.

        Args:
            frontend: Waveform -> features, e.g. the wav2vec 2.0 CNN.
            specaug: Optional augmentation of the features (training only).
            normalize: Optional feature normalisation.
            preencoder: Optional projection to the encoder size (fairseq
                ``post_extract_proj``; its dropout is fairseq ``dropout_input``).
            encoder: The context network.
            losses: The SSL objectives.
            util_attributes: Utilities the losses need (e.g. ``{"mask"}``).
            required_inputs: Data keys the losses read (see ``encode``).
            util_modules: The utility modules, keyed by attribute.
            token_list: Label vocabulary (HuBERT targets).
            extract_feats_in_collect_stats: Read by ESPnet's collect-stats stage.
            feature_grad_mult: Gradient scale for the frontend output. fairseq
                ``feature_grad_mult``; BASE = 0.1; 0 freezes the frontend.
            feature_layer_norm: LayerNorm over the frontend output before the
                preencoder and the quantizer (fairseq ``layer_norm`` after the
                feature extractor); use with ``frontend_conf.normalize_output: false``.
            input_dropout: Dropout on the preencoder output, before masking. fairseq
                ``dropout_input``; BASE = 0.1 (ESPnet's preencoder dropout acts on
                its input instead).
            sample_rate: Audio samples per second, for the seen-audio statistics
                (set by the task from ``frontend_conf.fs``).
            **kwargs: Ignored (ESPnet passes e.g. ``vocab_size``).
        """
        super().__init__()
        self.token_list = list(token_list or [])
        self.frontend = frontend
        self.specaug = specaug
        self.normalize = normalize
        self.preencoder = preencoder
        self.encoder = encoder
        self.losses = torch.nn.ModuleList(losses)
        self.util_attributes = util_attributes
        self.required_inputs = required_inputs
        self.util_modules = util_modules
        self.feature_grad_mult = feature_grad_mult
        self.input_dropout = torch.nn.Dropout(input_dropout)
        self.feature_norm = None
        if feature_layer_norm:
            if frontend is None:
                raise ValueError("feature_layer_norm needs a frontend")
            self.feature_norm = torch.nn.LayerNorm(frontend.output_size())
        trainable_frontend = feature_grad_mult != 0.0 and any(
            p.requires_grad for p in (() if frontend is None else frontend.parameters())
        )
        if "frames" in required_inputs and (trainable_frontend or feature_layer_norm):
            logging.warning(
                "A loss reconstructs the encoder input frames, but they come from a "
                f"trainable {type(frontend).__name__} (feature_grad_mult="
                f"{feature_grad_mult}, feature_layer_norm={feature_layer_norm}): "
                "the encoder can lower the loss by collapsing its targets. Set "
                "model_conf.feature_grad_mult: 0 and feature_layer_norm: false, or "
                "use frontend: default (log-mel)."
            )
        # forward passes in training (ESPnet's counter, kept for compatibility)
        self.register_buffer("global_step", torch.tensor([0]))
        # optimizer updates, counted by a hook that SSLTask.build_optimizers installs
        self.register_buffer("num_updates", torch.tensor([0]))
        self.update_hook_installed = False
        # host copies of num_updates and global_step (None: read them once)
        self._host_updates: Optional[int] = 0
        self._host_forwards: Optional[int] = 0
        self.seen_audio = SeenAudio(sample_rate)

    def count_optimizer_updates(self, optimizer: torch.optim.Optimizer) -> None:
        """Makes ``optimizer`` count its updates in ``num_updates`` (a post-step hook).

        Called by ``SSLTask.build_optimizers``. Only real steps are counted: not the
        micro-batches of ``accum_grad``, nor steps skipped for non-finite gradients.
        """
        optimizer.register_step_post_hook(lambda *_: self._count_update())
        self.update_hook_installed = True

    def _count_update(self) -> None:
        self.num_updates.add_(1)
        if self._host_updates is not None:
            self._host_updates += 1
        self.seen_audio.close_update()

    def _host_counts(self) -> Tuple[int, int]:
        """(num_updates, global_step) as Python ints, read from the buffers only the
        first time after ``load_state_dict`` or ``train()`` (one host sync)."""
        if self._host_updates is None or self._host_forwards is None:
            self._host_updates = int(self.num_updates)
            self._host_forwards = int(self.global_step)
        return self._host_updates, self._host_forwards

    def train(self, mode: bool = True) -> "ESPnetSSLModel":
        """``torch.nn.Module.train``; also re-reads the update count at the next
        forward (ESPnet calls it at every epoch start), in case a buffer was set.

        Args:
            mode: Training (True) or evaluation mode.

        Returns:
            The model.
        """
        self._host_updates = self._host_forwards = None
        return super().train(mode)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Loads as torch does; the update count is re-read at the next forward."""
        self._host_updates = self._host_forwards = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _step_schedules(self) -> None:
        """Sets every loss/util schedule (e.g. Gumbel temperature) to the update count.

        Without the optimizer hook (e.g. DeepSpeed) the count falls back to training
        forward passes, which is wrong under ``accum_grad > 1`` (logged once).
        """
        updates, forwards = self._host_counts()
        if not self.update_hook_installed and self.training:
            if updates == 0 and forwards == 1:
                logging.warning(
                    "No optimizer hook: num_updates counts forward passes "
                    "(wrong under accum_grad > 1)."
                )
            self.num_updates.copy_(self.global_step)
            updates = self._host_updates = forwards
        for name, module in self.util_modules.items():
            if name == "ema":  # ESPnet's EMA util also takes the encoder
                module.step(updates, self.encoder)
            elif hasattr(module, "step"):
                module.step(updates)
        for loss_func in self.losses:
            if hasattr(loss_func, "step"):
                loss_func.step(updates)

    def collect_feats(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor = None,
        text_lengths: torch.Tensor = None,
        **kwargs,
    ) -> Dict[str, torch.Tensor]:
        """Frontend features for ESPnet's collect-stats stage."""
        feats, feats_lengths = self._extract_feats(speech, speech_lengths)
        return {"feats": feats, "feats_lengths": feats_lengths}

    def forward(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor = None,
        text_lengths: torch.Tensor = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """Computes every loss.

        Args:
            speech: Waveforms (B, S) float, padded.
            speech_lengths: Valid samples (B,) long.
            text: Frame labels (B, L) long (HuBERT), padded with -1.
            text_lengths: (B,) long.
            **kwargs: ``augmented`` (B,) int64 bit flags of the collate's
                augmentation (training only) add the stats ``aug_share`` (any) and
                ``aug_{noise,speed,volume}_share``; others (``utt_id``) are ignored.

        Returns:
            The loss (a mean per sample; ``stats["sample_size"]`` is its weight when
            a loss reports one, else the batch size), the stats, and the weight.
        """
        assert speech.shape[0] == speech_lengths.shape[0], speech.shape
        augmented = kwargs.pop(AUGMENTED_KEY, None)
        if "ema" in self.util_modules:  # moved here to avoid NCCL issues (ESPnet)
            self.util_modules["ema"].update_device_and_type(speech.device, speech.dtype)
        self._step_schedules()
        if self.training:
            total_loss, stats = self._losses(speech, speech_lengths, text, text_lengths)
        else:  # deterministic: same masks and negatives in every validation epoch
            seeds = utterance_seeds(speech, speech_lengths)
            with _seeded_rng(sum(seeds) % (2**31), speech.device):
                total_loss, stats = self._losses(
                    speech, speech_lengths, text, text_lengths, seeds
                )
        stats["loss"] = total_loss.detach()
        if augmented is not None:
            stats.update(augmentation_stats(augmented))
        weight = stats.get("sample_size", speech.shape[0])  # this rank's own
        if self.training:
            samples = self._sum_counts_over_ranks(stats, speech_lengths.sum())
            self.seen_audio.add_samples(samples)
            stats.update(self.seen_audio.step_stats(samples))
        total_loss, stats, weight = force_gatherable(
            (total_loss, stats, weight), total_loss.device
        )
        if self.training:
            self.global_step = self.global_step + 1
            self._host_forwards += 1
        return total_loss, stats, weight

    @staticmethod
    def _sum_counts_over_ranks(
        stats: Dict, batch_samples: torch.Tensor
    ) -> torch.Tensor:
        """Sums the batch's samples and the ``GLOBAL_COUNTS`` over all ranks in one
        all_reduce, without reading them on the host.

        This rank's ``GLOBAL_COUNTS`` in ``stats`` are replaced by their sums (0-dim
        float64 tensors), so the log shows the counts of the global batch, as one
        process with the combined batch would. Training only: ESPnet's attention
        plots run eval forwards on rank 0 alone, where a collective would wait
        forever.

        Args:
            stats: The step's stats (tensors or Python numbers).
            batch_samples: This rank's valid audio samples, 0-dim, on the device.

        Returns:
            The samples of the global batch, 0-dim float64 on the same device.
        """
        keys = [key for key in GLOBAL_COUNTS if key in stats]
        counts = [batch_samples.detach().double().reshape(())]
        for key in keys:
            counts.append(
                torch.as_tensor(stats[key], device=batch_samples.device)
                .detach()
                .double()
                .reshape(())
            )
        total = global_sum(torch.stack(counts))  # (1 + len(keys),) float64
        stats.update(zip(keys, total[1:].unbind()))
        return total[0]

    def _losses(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: Optional[torch.Tensor],
        text_lengths: Optional[torch.Tensor],
        seeds: Optional[List[int]] = None,
    ) -> Tuple[torch.Tensor, Dict]:
        """Encodes and sums the losses; returns (loss, merged stats)."""
        data = self.encode(speech, speech_lengths, text, text_lengths, seeds=seeds)
        data["text"], data["text_lengths"] = text, text_lengths
        total_loss, stats = 0.0, {}
        for loss_func in self.losses:
            loss, stats_i = loss_func(**{k: data[k] for k in loss_func.required_inputs})
            total_loss = total_loss + loss
            stats.update(stats_i)
        return total_loss, stats

    def _extract_feats(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frontend: (B, S) waveforms -> (B, T, C) features and (B,) lengths."""
        assert speech_lengths.dim() == 1, speech_lengths.shape
        if not self.training:  # for data-parallel; a host read (module docstring)
            speech = speech[:, : speech_lengths.max()]
        if self.frontend is None:
            return speech, speech_lengths
        return self.frontend(speech, speech_lengths)

    def _features(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor, data: Dict
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frontend with gradient scale, penalty and LayerNorm (fairseq order).

        Returns:
            Features (B, T, C) after ``feature_norm`` and their lengths (B,); fills
            ``data`` with the keys a loss asked for.
        """
        if self.feature_grad_mult == 0.0:
            with torch.no_grad():
                feats, lengths = self._extract_feats(speech, speech_lengths)
        else:
            feats, lengths = self._extract_feats(speech, speech_lengths)
            feats = scale_grad(feats, self.feature_grad_mult)
        if "features_penalty" in self.required_inputs:
            valid = ~padding_mask(lengths, feats.shape[1]).to(feats.device)  # (B, T)
            squares = feats.float().pow(2).mean(-1)  # (B, T)
            squares = torch.where(valid, squares, 0.0)
            data["features_penalty"] = squares.sum() / valid.sum().clamp(min=1)
        if "frontend" in self.required_inputs:
            data["frontend"], data["frontend_lengths"] = feats, lengths
        if self.feature_norm is not None:
            feats = self.feature_norm(feats)
        if "features" in self.required_inputs:
            data["features"], data["features_lengths"] = feats, lengths
        return feats, lengths

    def _encoder_input(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        data: Dict,
        frequency_masking: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Frontend, augmentation, normalisation and preencoder: (B, T, D), (B,).

        Args:
            speech: Waveforms (B, S).
            speech_lengths: Valid samples (B,).
            data: Filled with the keys the losses ask for: ``frames`` (B, T, F)
                and ``frames_lengths`` (B,), the features right before the
                preencoder (unmasked), and ``frequency_mask`` (B, F) bool or None.
            frequency_masking: Apply the ``freq_mask`` util to the features before
                the preencoder (``encode`` does, in training and validation;
                ``inference_encode`` never does).

        Returns:
            The encoder input (B, T, D) and its lengths (B,).
        """
        feats, lengths = self._features(speech, speech_lengths, data)
        if self.specaug is not None and self.training:
            feats, lengths = self.specaug(feats, lengths)
        if self.normalize is not None:
            feats, lengths = self.normalize(feats, lengths)
        if "frames" in self.required_inputs:
            data["frames"], data["frames_lengths"] = feats, lengths
        if frequency_masking and "freq_mask" in self.util_attributes:
            masker = self.util_modules["freq_mask"]
            feats, data["frequency_mask"] = masker(feats, lengths)
        elif "frequency_mask" in self.required_inputs:
            data["frequency_mask"] = None
        if self.preencoder is not None:
            feats, lengths = self.preencoder(feats, lengths)
            if "preencoder" in self.required_inputs:
                data["preencoder"], data["preencoder_lengths"] = feats, lengths
        return self.input_dropout(feats), lengths

    def _mask_util(self) -> Optional[torch.nn.Module]:
        """The masking utility in use, if any."""
        for name in MASK_UTILS:
            if name in self.util_attributes:
                return self.util_modules[name]
        return None

    def encode(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        text: torch.Tensor = None,
        text_lengths: torch.Tensor = None,
        use_final_output: bool = True,
        mask: Optional[torch.Tensor] = None,
        seeds: Optional[List[int]] = None,
    ) -> Dict:
        """Runs everything up to the encoder and collects what the losses read.

        Args:
            speech: Waveforms (B, S).
            speech_lengths: Valid samples (B,).
            text: Unused here (kept for ESPnet's signature).
            text_lengths: Unused here.
            use_final_output: Use the encoder's final output as the last layer.
            mask: Optional explicit time mask (B, T) bool (parity tests).
            seeds: Optional per-utterance mask seeds (deterministic masks).

        Returns:
            ``encoder_output`` (list of (B, T, D) per layer), ``encoder_output_lengths``
            (B,), ``mask_info`` (when masking), and the requested ``frontend``,
            ``features``, ``features_penalty``, ``preencoder`` entries.
        """
        data = {}
        x, lengths = self._encoder_input(
            speech, speech_lengths, data, frequency_masking=True
        )
        pad_masks = padding_mask(lengths, x.shape[1]).to(x.device)
        if "ema" in self.util_attributes:
            with torch.no_grad():
                ema_out, ema_lengths, _ = self.util_modules["ema"](
                    x, lengths, masks=pad_masks, return_all_hs=True
                )
            data["ema_output"], data["ema_output_lengths"] = ema_out[1], ema_lengths
        masker = self._mask_util()
        if masker is not None:
            kwargs = {} if mask is None and seeds is None else dict(mask=mask)
            if seeds is not None:
                kwargs["seeds"] = seeds
            x, data["mask_info"] = masker(x, pad_masks, **kwargs)
        hidden, lengths, _ = self.encoder(
            x, lengths, masks=pad_masks, return_all_hs=True
        )
        final, layers = hidden
        data["encoder_output"] = layers[:-1] + [final] if use_final_output else layers
        data["encoder_output_lengths"] = lengths
        return data

    def inference_encode(
        self,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        use_mask: bool = False,
        use_final_output: bool = True,
    ) -> Tuple[torch.Tensor, List[torch.Tensor], torch.Tensor]:
        """Encodes for downstream use (ESPnet's ``espnet_ssl`` frontend, features).

        Args:
            speech: Waveforms (B, S).
            speech_lengths: Valid samples (B,).
            use_mask: Mask the input (fine-tuning augmentation, training only).
            use_final_output: Kept for ESPnet's signature.

        Returns:
            Final output (B, T, D), per-layer outputs [(B, T, D)], lengths (B,).
        """
        x, lengths = self._encoder_input(speech, speech_lengths, {})
        pad_masks = padding_mask(lengths, x.shape[1]).to(x.device)
        masker = self._mask_util()
        if self.training and use_mask and masker is not None:
            x, _ = masker(x, pad_masks)
        hidden, lengths, _ = self.encoder(
            x, lengths, masks=pad_masks, return_all_hs=True
        )
        return hidden[0], hidden[1], lengths
