"""Hidden states of an ESPnet SSL model (``SSLTask``) as features for k-means.

HuBERT's later iterations cluster a middle layer of the previous model, e.g. layer 6
of 12 for BASE iteration 2 (Hsu et al., "HuBERT", arXiv:2106.07447, section IV-C).
ESPnet's own readers (``ESPnetHubertFeatureReader`` in egs2/TEMPLATE/asr1/pyscripts/
feats/ssl_feature_utils.py) only load ``HubertTask`` checkpoints; this dumper loads
``SSLTask`` ones (``espnet2.bin.ssl_train``) and runs ``inference_encode`` in eval
mode, so nothing is masked or dropped.

Layers are numbered as in HuBERT and fairseq (``output_layer``): layer ``L`` in
``1..num_blocks`` is the output of the L-th encoder block; ``None`` is the encoder's
final output (after its final LayerNorm when the encoder is pre-LN; for post-LN
encoders it equals the last layer).
"""

import logging
from typing import Dict, Optional, Tuple

import torch
from typeguard import typechecked

from espnet2.ssl.frame_geometry import (
    cnn_frame_count,
    conv_shapes,
    encoder_subsampling,
    model_frame_rate,
    receptive_field,
)
from espnet2.ssl.targets.dumpers.base import (
    FeatureDumpError,
    Hz,
    ModelDumper,
    check_layer,
)

TRAINER = "espnet2.bin.ssl_train"
# Per-frame or length-aware modules between the CNN and the encoder.
_FRAMEWISE = ("LinearProjection", "GlobalMVN", "UtteranceMVN")


def padding_invariance(model: torch.nn.Module) -> Tuple[bool, str]:
    """Whether padding a batch leaves every valid output frame unchanged.

    Only a known-safe structure counts as invariant: the wav2vec 2.0 CNN with
    LayerNorms (a GroupNorm over time, as in BASE, sees the padding; so does
    ``normalize_audio``, which normalises the whole padded batch), framewise
    modules up to the encoder, and this repository's wav2vec 2.0 transformer with
    ``zero_padded_frames`` (else its positional convolution sees padded frames).

    Args:
        model: An ``ESPnetSSLModel``.

    Returns:
        (invariant, the reason in words).
    """
    from espnet2.asr.encoder.wav2vec2_transformer_encoder import (
        Wav2Vec2TransformerEncoder,
    )

    frontend, encoder = model.frontend, model.encoder
    if conv_shapes(frontend) is None:
        return False, "the frontend is not the wav2vec 2.0 CNN"
    if any(isinstance(m, torch.nn.GroupNorm) for m in frontend.modules()):
        return False, "the CNN's GroupNorm normalises each channel over time"
    if getattr(frontend, "normalize_audio", False):
        return False, "normalize_audio normalises the whole padded batch"
    for part in (model.normalize, model.preencoder):
        if part is not None and type(part).__name__ not in _FRAMEWISE:
            return False, f"{type(part).__name__} is not known to be framewise"
    if not isinstance(encoder, Wav2Vec2TransformerEncoder):
        return False, f"{type(encoder).__name__} is not known to ignore padding"
    if not encoder.zero_padded_frames:
        return False, "the positional convolution sees padded frames"
    return True, "LayerNorm CNN and a transformer with zero_padded_frames"


class SSLDumper(ModelDumper):
    """Hidden states of one encoder layer of an ``SSLTask`` model (50 Hz for the CNN).

    Utterances of different lengths share a padded batch only when the model is
    padding-invariant (:func:`padding_invariance`); otherwise (e.g. wav2vec 2.0 /
    HuBERT BASE's GroupNorm CNN) only utterances of equal length are batched, so
    every output equals that of the utterance alone.
    """

    name = "ssl"
    task = "espnet2.tasks.ssl:SSLTask"
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
            model: An ``ESPnetSSLModel`` (anything with ``inference_encode``).
            layer: Encoder block whose output to dump, 1..num_blocks; None for the
                encoder's final output. HuBERT BASE iteration 2: 6.
            device: ``auto`` (CUDA if available), ``cpu`` or ``cuda[:N]``.
            source: Where the model came from (see ``load_model_files``), for
                ``describe`` and messages.
        """
        super().__init__(device)
        if not hasattr(model, "inference_encode"):
            raise FeatureDumpError(
                f"{type(model).__name__} has no inference_encode. Fix: pass a model "
                f"trained by {TRAINER}."
            )
        self.source = dict(source or {})
        self.model = model.to(self.device).eval()
        self.num_layers = self._count_layers()
        where = self.source.get("model_file") or self.source.get("packed_model")
        check_layer(layer, self.num_layers, where or type(model).__name__)
        self.layer = layer
        self.shapes = conv_shapes(model.frontend)
        self._invariant, reason = padding_invariance(model)
        logging.info(
            f"ssl features: layer {layer or 'final'} of {self.num_layers}; "
            f"{'padded batches' if self._invariant else 'equal-length batches'} "
            f"({reason})"
        )

    def _count_layers(self) -> int:
        """Encoder blocks: ``len(encoder.encoders)``, else counted on 1 s of zeros."""
        blocks = getattr(self.model.encoder, "encoders", None)
        if blocks is not None:
            return len(blocks)
        speech = torch.zeros(1, self.sample_rate, device=self.device)
        lengths = torch.tensor([self.sample_rate], device=self.device)
        with torch.no_grad():
            _, layers, _ = self.model.inference_encode(speech, lengths)
        return len(layers)

    @property
    def dim(self) -> int:
        """The encoder's output size."""
        return self.model.encoder.output_size()

    @property
    def frame_rate(self) -> Optional[Hz]:
        """Encoder frames per second: 50 for the wav2vec 2.0 CNN (320-sample hop)."""
        return model_frame_rate(
            self.model.frontend, self.model.encoder, self.sample_rate
        )

    @property
    def padding_invariant(self) -> bool:
        """See :func:`padding_invariance`."""
        return self._invariant

    def num_frames(self, num_samples: int) -> Optional[int]:
        """``cnn_frame_count`` of the model's CNN (None for other frontends)."""
        if self.shapes is None or encoder_subsampling(self.model.encoder) != 1:
            return None
        return cnn_frame_count(num_samples, self.shapes)

    def min_samples(self) -> Optional[int]:
        """The CNN's receptive field: 400 samples for wav2vec 2.0's."""
        return None if self.shapes is None else receptive_field(self.shapes)

    def _forward(
        self, speech: torch.Tensor, speech_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, T, D) of the chosen layer and frames (B,)."""
        final, layers, lengths = self.model.inference_encode(speech, speech_lengths)
        hidden = final if self.layer is None else layers[self.layer - 1]
        return hidden, lengths


build_ssl_dumper = SSLDumper.from_files  # the registry's entry (and its options)
