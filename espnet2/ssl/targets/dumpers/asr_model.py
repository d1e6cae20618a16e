"""Encoder states of an ESPnet ASR model (``ASRTask``) as features for k-means.

Chen et al. ("Reducing Barriers to SSL: HuBERT Pre-training with Academic
Compute", Interspeech 2023, arXiv:2306.06672) skip HuBERT's MFCC iteration by
clustering the encoder of a supervised ASR model. This dumper loads a model trained
by ``espnet2.bin.asr_train`` and runs exactly what ``ESPnetASRModel.encode`` runs
(frontend, normalisation, pre-encoder, encoder, post-encoder) in eval mode.

The frame rate is that of the encoder output: the frontend hop times the encoder's
input subsampling, e.g. 10 ms fbank frames with ``input_layer: conv2d`` (4x) give
25 Hz, half the 50 Hz of a wav2vec 2.0 CNN; labels made from them must be repeated
to the SSL model's frame rate. ``layer`` picks the output of one encoder block
(1..num_blocks, taken with a forward hook before any final LayerNorm and before an
inter-CTC conditioning term is added); None is the final output.

Utterances are only batched with others of equal length: the STFT frontend pads
each utterance's end by reflection, which a padded batch replaces with zeros.
"""

import logging
from typing import Dict, Optional, Tuple

import torch
from typeguard import typechecked

from espnet2.ssl.frame_geometry import model_frame_rate
from espnet2.ssl.targets.dumpers.base import (
    FeatureDumpError,
    Hz,
    ModelDumper,
    check_layer,
)

TRAINER = "espnet2.bin.asr_train"


def _block_output(output) -> torch.Tensor:
    """The hidden states (B, T, D) in an encoder block's ``(x, mask)`` output.

    Conformer-style blocks with relative positions return ``((x, pos_emb), mask)``.
    """
    hidden = output[0] if isinstance(output, tuple) else output
    return hidden[0] if isinstance(hidden, tuple) else hidden


class ASRDumper(ModelDumper):
    """Encoder output (or one encoder block's output) of an ``ASRTask`` model."""

    name = "asr"
    task = "espnet2.tasks.asr:ASRTask"
    trainer = TRAINER

    @typechecked
    def __init__(
        self,
        model: torch.nn.Module,
        layer: Optional[int] = None,
        device: str = "auto",
        source: Optional[Dict[str, Optional[str]]] = None,
    ):
        """Wraps a loaded model.

        Args:
            model: An ``ESPnetASRModel`` (anything with ``encode`` and ``encoder``).
            layer: Encoder block whose output to dump, 1..num_blocks (needs an
                encoder with an ``encoders`` block list: transformer, conformer,
                branchformer, e_branchformer); None for the final encoder output.
            device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:N]``.
            source: Where the model came from (see ``load_model_files``).
        """
        super().__init__(device)
        if not hasattr(model, "encode") or getattr(model, "encoder", None) is None:
            raise FeatureDumpError(
                f"{type(model).__name__} has no encoder. Fix: pass a model trained "
                f"by {TRAINER}."
            )
        self.source = dict(source or {})
        self.model = model.to(self.device).eval()
        where = self.source.get("model_file") or self.source.get("packed_model")
        blocks = getattr(self.model.encoder, "encoders", None)
        if layer is not None and blocks is None:
            raise FeatureDumpError(
                f"the {type(self.model.encoder).__name__} of '{where}' has no block "
                "list to take a layer from. Fix: leave --layer out (final output)."
            )
        self.num_layers = None if blocks is None else len(blocks)
        check_layer(layer, self.num_layers or 0, where or type(model).__name__)
        self.layer = layer
        logging.info(
            f"asr features: layer {layer or 'final'} of {self.num_layers}, "
            f"{self.dim} dims, {self.frame_rate} Hz"
        )

    @property
    def dim(self) -> int:
        """Output size of the post-encoder (final output) or of the encoder."""
        postencoder = getattr(self.model, "postencoder", None)
        if self.layer is None and postencoder is not None:
            return postencoder.output_size()
        return self.model.encoder.output_size()

    @property
    def frame_rate(self) -> Optional[Hz]:
        """Encoder frames per second (25 for 10 ms fbank and 4x subsampling).

        None when unknown: a frontend without ``hop_length``, an unknown input
        layer, or a post-encoder (which may resample) on the final output.
        """
        postencoder = getattr(self.model, "postencoder", None)
        if self.layer is None and postencoder is not None:
            return None
        return model_frame_rate(
            self.model.frontend, self.model.encoder, self.sample_rate
        )

    def _forward(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, T, D) and frames (B,) as ``model.encode`` gives them."""
        from espnet.nets.pytorch_backend.transformer.subsampling import (
            TooShortUttError,
        )

        captured = []
        handle = None
        if self.layer is not None:
            block = self.model.encoder.encoders[self.layer - 1]
            handle = block.register_forward_hook(
                lambda module, inputs, output: captured.append(_block_output(output))
            )
        try:
            encoded, lengths = self.model.encode(speech, speech_lengths)
        except TooShortUttError as err:
            raise FeatureDumpError(
                f"{speech.shape[1]} samples are too short for the encoder's "
                f"subsampling ({err.actual_size} frontend frames, it needs "
                f"{err.limit}). Fix: remove such short utterances in data "
                "preparation (e.g. ssl.sh --min_wav_duration)."
            ) from None
        finally:
            if handle is not None:
                handle.remove()
        if isinstance(encoded, tuple):  # (final, intermediate outputs)
            encoded = encoded[0]
        return (captured[0] if captured else encoded), lengths


build_asr_dumper = ASRDumper.from_files  # the registry's entry (and its options)
