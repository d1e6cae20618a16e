"""The SSL collate: ESPnet's HuBERT collate plus fixed-length crops.

``crop_seconds: null`` (default) is ESPnet 202511's behaviour unchanged: training
batches are cropped to their shortest utterance, validation batches are padded.
``crop_seconds: X`` crops every utterance longer than X seconds to X seconds, in
training at a random frame-aligned offset and in validation at a fixed (centred) one,
and cuts its frame labels in step (``espnet2/ssl/data/crop.py``). Utterances shorter
than
the crop follow ``short_utterances``:

* ``pad``: kept whole and padded (``speech_lengths`` holds their true length);
* ``drop``: removed from the batch, with a warning that names them. A batch with
  none left is an error: filter the data first (``min_wav_duration``).

``augmentation: {...}`` perturbs every training utterance (noise, speed, volume;
``espnet2/ssl/data/augment.py``) before the crop, so crops are of the perturbed audio,
and
adds ``batch["augmented"]``, (B,) int64 bit flags of what was applied. Validation and
collect-stats batches are never augmented and have no such key.

Examples that the dataset skipped as bad (``--bad_utterances skip``,
``espnet2/ssl/data/checked_dataset.py``) arrive as ``(uid, {})`` and are removed first;
a batch with none left is an error that names them.

References: Y. Gao et al., arXiv:2209.15575 (sequence-length truncation for SSL);
ESPnet 202511 ``espnet2/train/collate_fn.py`` (``HuBERTCollateFn``).
"""

import inspect
import logging
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from typeguard import typechecked

from espnet2.ssl.data.augment import AUGMENTED_KEY, WaveformAugmentation
from espnet2.ssl.data.crop import crop_offset, crop_utterance
from espnet2.train.collate_fn import HuBERTCollateFn

SHORT_UTTERANCES = ("pad", "drop")
# WaveformAugmentation options that the collate sets from the model's geometry
_AUGMENTATION_SET_BY_COLLATE = (
    "sample_rate",
    "frame_field",
    "frame_stride",
    "generator",
)


class SSLCollateFn(HuBERTCollateFn):
    """Crops, pads and stacks a batch of ``(utt_id, {"speech", "text"?})``.

    Returns ``(utt_ids, batch)`` with ``batch["speech"]`` (B, S) float padded with 0,
    ``speech_lengths`` (B,) long (samples), with labels ``text`` (B, L) long
    padded with ``int_pad_value`` and ``text_lengths`` (B,) long (frames), and, in
    training with ``augmentation``, ``augmented`` (B,) int64 bit flags (noise 1,
    speed 2, volume 4; 0: none).
    """

    @typechecked
    def __init__(
        self,
        crop_seconds: Optional[float] = None,
        short_utterances: str = "pad",
        frame_field: int = 400,
        frame_stride: int = 320,
        sample_rate: int = 16000,
        label_downsampling: int = 1,
        train: bool = True,
        generator: Optional[torch.Generator] = None,
        augmentation: Optional[dict] = None,
        **kwargs,
    ):
        """Builds the collate.

        Args:
            crop_seconds: Crop length in seconds, or None for ESPnet's crop to the
                shortest utterance of the batch (training only).
            short_utterances: ``pad`` or ``drop`` utterances shorter than the crop.
            frame_field: Receptive field of a model frame (samples; 400 for the
                wav2vec 2.0 CNN).
            frame_stride: Hop between model frames (samples; 320). Crops start at
                multiples of it.
            sample_rate: Audio samples per second.
            label_downsampling: Keep every n-th label (100 Hz MFCC labels for a
                50 Hz model: 2), applied before cropping.
            train: Random crop offsets (training) or fixed ones (validation).
            generator: Random source for the offsets and the augmentation (torch's
                global one when None).
            augmentation: ``WaveformAugmentation`` options (``noise_scp``,
                ``noise_prob``, ``noise_snr_db``, ``speed_prob``, ``speed_factors``,
                ``volume_prob``, ``volume_db``), or None for none; used in training
                only, labels are downsampled before it.
            **kwargs: ``HuBERTCollateFn``'s other options (padding values, noise and
                reverberation, ``window_size``/``window_shift`` in ms, ...).
        """
        if short_utterances not in SHORT_UTTERANCES:
            raise ValueError(
                f"short_utterances must be one of {SHORT_UTTERANCES}, "
                f"got {short_utterances!r}"
            )
        if crop_seconds is not None and crop_seconds * sample_rate < frame_field:
            raise ValueError(
                f"crop_seconds={crop_seconds} is shorter than one model frame "
                f"({frame_field} samples at {sample_rate} Hz)"
            )
        self.augmentation = None
        if train and augmentation is not None:
            self.augmentation = _build_augmentation(
                augmentation, sample_rate, frame_field, frame_stride, generator
            )
        self.crop_samples, self.label_step = None, 1
        if crop_seconds is not None:
            self.crop_samples = int(round(crop_seconds * sample_rate))
            kwargs.update(crop_audio=False)  # ESPnet's crop is off
        if crop_seconds is not None or self.augmentation is not None:
            # labels are downsampled here, before augmentation and crop
            self.label_step, label_downsampling = label_downsampling, 1
        super().__init__(
            label_downsampling=label_downsampling,
            sample_rate=sample_rate / 1000,
            train=train,
            **kwargs,
        )
        self.short_utterances = short_utterances
        self.frame_field = frame_field
        self.frame_stride = frame_stride
        self.generator = generator

    def __call__(
        self, data: Collection[Tuple[str, Dict[str, np.ndarray]]]
    ) -> Tuple[List[str], Dict[str, torch.Tensor]]:
        """Augments (training), crops (``crop_seconds``), then ESPnet's pad, stack."""
        data = drop_skipped(data)
        if self.label_step > 1:
            data = downsample_labels(data, self.label_step)
        flags = None
        if self.augmentation is not None:
            data, flags = self._augment_batch(data)
        if self.crop_samples is not None:
            data = self._crop_batch(data)
        uttids, batch = super().__call__(data)
        if flags is not None:
            batch[AUGMENTED_KEY] = torch.tensor(
                [flags[uid] for uid in uttids], dtype=torch.int64
            )
        return uttids, batch

    def _augment_batch(
        self, data: Sequence[Tuple[str, Dict[str, np.ndarray]]]
    ) -> Tuple[List[Tuple[str, Dict[str, np.ndarray]]], Dict[str, int]]:
        """Every utterance perturbed; its labels follow; flags by utterance id."""
        augmented, flags = [], {}
        for uid, sample in data:
            speech, labels, flags[uid] = self.augmentation(
                sample["speech"], sample.get("text")
            )
            item = dict(sample, speech=speech)
            if labels is not None:
                item["text"] = labels
            augmented.append((uid, item))
        return augmented, flags

    def _crop_batch(
        self, data: Collection[Tuple[str, Dict[str, np.ndarray]]]
    ) -> List[Tuple[str, Dict[str, np.ndarray]]]:
        """Every utterance cropped (or padded/dropped when short), labels in step."""
        cropped, short = [], []
        for uid, sample in data:
            speech, labels = sample["speech"], sample.get("text")
            if len(speech) >= self.crop_samples:
                speech, labels = self._crop(speech, labels)
            else:
                short.append(uid)
                if self.short_utterances == "drop":
                    continue
            item = (
                dict(speech=speech)
                if labels is None
                else dict(speech=speech, text=labels)
            )
            cropped.append((uid, item))
        if short and self.short_utterances == "drop":
            self._report_dropped(short, len(data), kept=bool(cropped))
        return cropped

    def _crop(
        self, speech: np.ndarray, labels: Optional[np.ndarray]
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        offset = crop_offset(
            len(speech),
            self.crop_samples,
            self.frame_stride,
            self.train,
            self.generator,
        )
        return crop_utterance(
            speech,
            labels,
            offset,
            self.crop_samples,
            self.frame_field,
            self.frame_stride,
        )

    def _report_dropped(self, short: List[str], batch_size: int, kept: bool) -> None:
        """Warns about dropped utterances; rejects a batch left empty."""
        seconds = self.crop_samples / (self.sample_rate * 1000)
        names = ", ".join(short[:5]) + (" ..." if len(short) > 5 else "")
        if not kept:
            raise ValueError(
                f"every utterance of this batch ({names}) is shorter than "
                f"crop_seconds={seconds:g} and short_utterances=drop: remove them "
                f"from the data dir (min_wav_duration >= {seconds:g}) or use "
                "short_utterances: pad"
            )
        logging.warning(
            f"dropped {len(short)} of {batch_size} utterances shorter than "
            f"crop_seconds={seconds:g}: {names}"
        )


def _build_augmentation(
    options: dict,
    sample_rate: int,
    frame_field: int,
    frame_stride: int,
    generator: Optional[torch.Generator],
) -> WaveformAugmentation:
    """``WaveformAugmentation(**options)`` at the collate's rate and frame geometry."""
    reserved = sorted(set(options) & set(_AUGMENTATION_SET_BY_COLLATE))
    if reserved:
        raise ValueError(
            f"collate_fn_conf.augmentation must not set {reserved}: they follow the "
            "model (frontend_conf.fs and the CNN's shapes); remove them"
        )
    known = set(inspect.signature(WaveformAugmentation).parameters)
    unknown = sorted(set(options) - known)
    if unknown:
        keys = sorted(known - set(_AUGMENTATION_SET_BY_COLLATE))
        raise ValueError(
            f"collate_fn_conf.augmentation has unknown keys {unknown}; the keys are "
            f"{keys}"
        )
    return WaveformAugmentation(
        **options,
        sample_rate=sample_rate,
        frame_field=frame_field,
        frame_stride=frame_stride,
        generator=generator,
    )


def downsample_labels(
    data: Sequence[Tuple[str, Dict[str, np.ndarray]]], step: int
) -> List[Tuple[str, Dict[str, np.ndarray]]]:
    """Every ``step``-th label of each example (``label_downsampling``).

    Args:
        data: ``(utt_id, {"speech": (S,), "text"?: (L,)})`` examples.
        step: Keep labels 0, step, 2 step, ... (2: 100 Hz MFCC labels, 50 Hz model).

    Returns:
        The examples with ``text`` (ceil(L / step),); those without labels as they
        are.
    """
    return [
        (uid, dict(sample, text=sample["text"][::step]) if "text" in sample else sample)
        for uid, sample in data
    ]


def drop_skipped(
    data: Collection[Tuple[str, Dict[str, np.ndarray]]],
) -> List[Tuple[str, Dict[str, np.ndarray]]]:
    """The batch without the examples skipped as bad (``(uid, {})``).

    Each was logged with its reason and counted when the dataset skipped it.

    Raises:
        ValueError: When every example of the batch was skipped.
    """
    kept = [(uid, sample) for uid, sample in data if sample]
    if data and not kept:
        names = [uid for uid, _ in data]
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise ValueError(
            f"every utterance of this batch ({shown}) is bad and was skipped "
            "(--bad_utterances skip; the warnings above say why), so there is "
            "nothing to train on: remove them from the data dir (utils/fix_data_dir.sh"
            "; `python -m espnet2.bin.validate_data_dir` finds bad audio, "
            "`python -m espnet2.bin.ssl_kmeans check` bad labels)"
        )
    return kept
