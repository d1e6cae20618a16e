"""The feature-dumper interface: batched waveforms in, exact per-utterance frames out.

HuBERT's targets are k-means clusters of frame features: MFCCs for the first
iteration, hidden states of the previous model (or of an ASR encoder) after that
(Hsu et al., "HuBERT", arXiv:2106.07447, section III-B; Chen et al., "Reducing
Barriers to SSL", arXiv:2306.06672, for the ASR shortcut). Every feature type is a
:class:`FeatureDumper`: it takes a padded batch of 16 kHz waveforms and returns one
``(T, D)`` float32 matrix per utterance, with exactly the frames the model gives that
utterance alone.

Padding can change the valid frames of some models (a GroupNorm over time in the
first CNN layer, as in wav2vec 2.0 / HuBERT BASE; an STFT with reflection padding at
the end of the signal). A dumper therefore says whether it is ``padding_invariant``;
when it is not, :meth:`FeatureDumper.extract` runs only utterances of equal length
together, so batching never changes a result.
"""

import abc
import importlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from typeguard import typechecked

from espnet2.ssl.model_files import PathLike, load_model_files

Hz = float
SAMPLE_RATE = 16000  # every dumper reads 16 kHz audio


class FeatureDumpError(ValueError):
    """A bad input to feature dumping (model files, options, audio, features).

    The message says what is wrong, where (file, utterance), and how to fix it.
    """


def resolve_device(device: str) -> torch.device:
    """Turn a device name into a ``torch.device``.

    Args:
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Returns:
        The device.

    Raises:
        FeatureDumpError: For CUDA when no GPU is visible, or an unknown name.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise FeatureDumpError(
            f"unknown device '{device}'. Fix: use auto, cpu, cuda or cuda:N."
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FeatureDumpError(
            f"device '{device}' was asked for but no CUDA GPU is visible. "
            "Fix: use --device cpu (or auto), or run the job on a GPU node."
        )
    return resolved


def equal_length_groups(lengths: Sequence[int]) -> List[List[int]]:
    """Indices of the batch grouped by length, in order of first appearance.

    Args:
        lengths: Valid samples per utterance (B values).

    Returns:
        Groups of batch indices; all members of a group have the same length.
    """
    groups: Dict[int, List[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(int(length), []).append(index)
    return list(groups.values())


class FeatureDumper(abc.ABC):
    """Extracts frame features from 16 kHz waveforms.

    Subclasses set ``name`` and implement ``dim``, ``frame_rate``, ``describe`` and
    ``_forward``; they may override ``padding_invariant``, ``num_frames`` and
    ``min_samples`` when they know them.

    Attributes:
        name: The registry name (``mfcc``, ``ssl``, ``asr``).
        sample_rate: Input sample rate in Hz (16000).
        device: Where the computation runs.
        bf16: Run ``_forward`` under bf16 autocast on ``device`` (set by the dump
            tool, see ``espnet2/ssl/targets/precision.py``); outputs are float32.
    """

    name: str = ""
    sample_rate: int = SAMPLE_RATE
    bf16: bool = False

    def __init__(self, device: str = "auto"):
        """Resolves the device.

        Args:
            device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
                (see ``resolve_device``).

        Raises:
            FeatureDumpError: For CUDA when no GPU is visible, or an unknown name.
        """
        self.device = resolve_device(device)

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Feature dimension D."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> Optional[Hz]:
        """Frames per second (100 for 10 ms frames), or None when unknown."""

    @property
    def padding_invariant(self) -> bool:
        """Whether valid frames of a padded batch equal those of each utterance."""
        return False

    def num_frames(self, num_samples: int) -> Optional[int]:
        """Frames for an utterance of ``num_samples`` samples, or None if unknown."""
        return None

    def min_samples(self) -> Optional[int]:
        """The fewest samples that give one frame, or None if unknown."""
        return None

    @abc.abstractmethod
    def describe(self) -> Dict:
        """What the features are, for ``feats.yaml`` and the shard done-markers.

        Returns:
            A YAML-safe dict with at least ``feature_type``, ``layer`` (int or None),
            ``dim`` and ``frame_rate``; it names the model files and their checksums,
            never the device.
        """

    @abc.abstractmethod
    def _forward(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Computes the features of a batch already on ``self.device``.

        Args:
            speech: Waveforms (B, S) float, padded with zeros.
            speech_lengths: Valid samples (B,) long.

        Returns:
            Features (B, T, D) and valid frames (B,); padded frames are ignored.
        """

    def extract(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> List[np.ndarray]:
        """Features of every utterance of a batch, trimmed to its true length.

        Args:
            speech: Waveforms (B, S) float in [-1, 1] at 16 kHz, padded with anything.
            speech_lengths: Valid samples per utterance (B,) long.

        Returns:
            B float32 arrays (T_b, D) on the CPU, in batch order; T_b is what the
            model gives the utterance alone (``num_frames`` when it is known).
        """
        if speech.dim() != 2 or speech_lengths.shape != speech.shape[:1]:
            raise ValueError(
                f"expected speech (B, S) and lengths (B,), got {tuple(speech.shape)} "
                f"and {tuple(speech_lengths.shape)}"
            )
        lengths = [int(n) for n in speech_lengths]
        groups = (
            [list(range(len(lengths)))]
            if self.padding_invariant
            else equal_length_groups(lengths)
        )
        outputs: List[Optional[np.ndarray]] = [None] * len(lengths)
        with torch.no_grad():
            for group in groups:
                results = self._extract_group(speech, lengths, group)
                for index, feats in zip(group, results):
                    outputs[index] = feats
        return outputs

    def _extract_group(
        self, speech: torch.Tensor, lengths: Sequence[int], indices: List[int]
    ) -> List[np.ndarray]:
        """Runs the rows ``indices`` of ``speech`` (B', S'); checks and trims them."""
        group_lengths = torch.tensor([lengths[i] for i in indices], dtype=torch.long)
        longest = int(group_lengths.max())
        batch = speech[indices, :longest].float()  # (B', S')
        valid = torch.arange(longest) < group_lengths.unsqueeze(1)  # (B', S')
        batch = batch.masked_fill(~valid, 0.0)  # the contract of _forward
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            feats, feats_lengths = self._forward(
                batch.to(self.device), group_lengths.to(self.device)
            )
        feats = feats.float().cpu()  # (B', T, D): one device-to-host copy
        results = []
        for row, (num_samples, num_frames) in enumerate(
            zip(group_lengths.tolist(), feats_lengths.tolist())
        ):
            expected = self.num_frames(num_samples)
            if expected is not None and expected != num_frames:
                raise RuntimeError(
                    f"{self.name} dumper: the model gave {num_frames} frames for "
                    f"{num_samples} samples, but its frontend implies {expected}"
                )
            matrix = feats[row, :num_frames].numpy()  # (T, D)
            if matrix.shape[0] != num_frames:
                raise RuntimeError(
                    f"{self.name} dumper: the model reports {num_frames} frames "
                    f"but returned {feats.shape[1]}"
                )
            results.append(np.ascontiguousarray(matrix, dtype=np.float32))
        return results


class ModelDumper(FeatureDumper):
    """A dumper of an ESPnet model's encoder: loaded from its files, described by
    its layer and the model files (``SSLDumper``, ``ASRDumper``).

    Subclasses set ``task`` (``module:Class`` of the ESPnet task that builds the
    model) and ``trainer`` (its training entry point, for messages), and keep
    ``layer``, ``num_layers`` and ``source`` (see :func:`load_model_files`).
    """

    task = ""
    trainer = ""
    layer: Optional[int]
    num_layers: Optional[int]
    source: Dict[str, Optional[str]]

    @classmethod
    @typechecked
    def from_files(
        cls,
        config_file: Optional[PathLike] = None,
        model_file: Optional[PathLike] = None,
        packed_model: Optional[PathLike] = None,
        layer: Optional[int] = None,
        device: str = "auto",
    ) -> "ModelDumper":
        """Loads the model (``task``) and wraps it (the registry's ``ssl``/``asr``).

        Args:
            config_file: ``config.yaml`` of the training run (None: next to the
                model).
            model_file: Its ``.pth`` (e.g. ``valid.loss.best.pth``).
            packed_model: Or an archive from ``espnet2.bin.pack``.
            layer: Encoder block 1..num_blocks, or None for the final output.
            device: ``auto``, ``cpu`` or ``cuda[:N]``.

        Returns:
            The dumper.
        """
        module, name = cls.task.split(":")
        task = getattr(importlib.import_module(module), name)  # imported on use
        model, source = load_model_files(
            task, cls.trainer, config_file, model_file, packed_model
        )
        return cls(model, layer=layer, device=device, source=source)

    def describe(self) -> Dict:
        """Feature type, layer, dimension, frame rate and the model files."""
        return {
            "feature_type": self.name,
            "layer": self.layer,
            "num_layers": self.num_layers,
            "dim": self.dim,
            "frame_rate": self.frame_rate,
            "sample_rate": self.sample_rate,
            **self.source,
        }


def check_layer(layer: Optional[int], num_layers: int, source: str) -> None:
    """Raise unless ``layer`` is None (final output) or in 1..``num_layers``.

    Args:
        layer: The requested encoder layer (1 = output of the first block).
        num_layers: The encoder's blocks.
        source: The model, for the message (its file).
    """
    if layer is not None and not 1 <= layer <= num_layers:
        raise FeatureDumpError(
            f"layer {layer} is out of range: the encoder of '{source}' has "
            f"{num_layers} layers. Fix: use --layer 1..{num_layers} (the output of "
            "that encoder block), or leave --layer out for the encoder's final output."
        )
