"""An s3prl upstream for ESPnet SSL checkpoints (``SSLTask``), for SUPERB probing.

It follows s3prl 0.4.18's upstream interface (``s3prl/upstream/interfaces.py``:
``UpstreamBase`` and the ``Featurizer`` of ``run_downstream.py``; the hub entry
convention of ``s3prl/upstream/*/hubconf.py``) and the SUPERB protocol (Yang et al.,
"SUPERB: Speech processing Universal PERformance Benchmark", arXiv:2105.01051): a
frozen upstream gives every layer's hidden states and the downstream learns a
softmax-weighted sum of them.

Any ``SSLTask`` model loads: wav2vec 2.0 / HuBERT transformers, conformer,
e_branchformer and SummaryMixing encoders. ``forward`` takes a list of 1-D 16 kHz
waveforms and returns ``hidden_states``, ``num_blocks + 1`` tensors (B, T, D), as
s3prl's hubert and wav2vec2 upstreams number them:

- layer 0: the input of the first encoder block, i.e. the frontend output after
  ``feature_norm``, ``normalize``, the preencoder (projection) and the encoder's own
  input layer and positional embedding (for wav2vec 2.0: after the positional
  convolution and its LayerNorm);
- layer ``L`` in 1..num_blocks: the output of the L-th encoder block, the per-layer
  outputs of ``ESPnetSSLModel.inference_encode``.

``last_hidden_state`` is the encoder's final output (after the final LayerNorm of
pre-LN encoders: conformer, e_branchformer, SummaryMixing). Frame ``t`` of
utterance ``b`` is its own output, whatever else is in the batch: the batch is
padded together only when the model is padding-invariant
(``espnet2.ssl.targets.dumpers.ssl_model.padding_invariance``), else utterances of
equal length run together (the GroupNorm CNN of wav2vec 2.0 / HuBERT BASE normalises
over time, and no other encoder than the wav2vec 2.0 transformer with
``zero_padded_frames`` is known to ignore padding). Frames beyond an utterance's own
frame count are zeros.

s3prl's featurizers take frame counts from the downsample rate (320 samples for the
wav2vec 2.0 CNN), not from the model: ``Featurizer`` keeps ``round(S / 320)`` frames
and ``S3PRLUpstream`` reports ``ceil(S / 320)``, usually one more than the CNN's
``floor((S - 400) / 320) + 1``, as for s3prl's own wav2vec2 and hubert upstreams.
That extra frame is a zero frame here (or, for the longest utterance under
``S3PRLUpstream``, a copy of its last frame).

Usage::

    from s3prl.upstream.interfaces import Featurizer
    from espnet2.ssl.release.s3prl.upstream import espnet_ssl_local

    upstream = espnet_ssl_local("exp/ssl_hubert_tiny/valid.loss.best.pth")  # + yaml
    upstream = espnet_ssl_local("exp/ssl_hubert_tiny/ssl_hubert_tiny.zip")  # packed
    featurizer = Featurizer(upstream, upstream_device="cpu")
    with torch.no_grad():
        feats = featurizer(wavs, upstream(wavs))  # a list of (T_b, D), one per wav

By name, s3prl finds upstreams on ``s3prl.hub`` (it imports unpatched with this
repository's pins). ``register_on_s3prl_hub()`` adds ``espnet_ssl_local`` there; in
this environment the name is there anyway, as the overlay's ``espnet2.asr.frontend``
package adds it when ``s3prl.hub`` is imported (``espnet2/ssl/release/s3prl/hub.py``),
and
ESPnet's tasks and s3prl's hub (its ``espnet_hubert`` upstream) both import that
package. So these take ``ckpt`` (``-k``: the packed archive, or the ``.pth`` with its
``config.yaml`` beside it or given by ``-g``):

- ``s3prl.nn.S3PRLUpstream("espnet_ssl_local", path_or_url=ckpt)``;
- ESPnet's ``frontend: s3prl`` with ``frontend_conf: {frontend_conf: {upstream:
  espnet_ssl_local, path_or_url: ckpt}, multilayer_feature: true}``;
- ``run_downstream.py -m train -u espnet_ssl_local -k ckpt -d <task> ...``, run from
  its folder (its configs are relative paths). This launcher registers explicitly
  rather than through s3prl's ``espnet_hubert`` import::

    # run_superb.py, beside run_downstream.py
    import runpy
    from espnet2.ssl.release.s3prl.upstream import register_on_s3prl_hub

    register_on_s3prl_hub()
    runpy.run_module("s3prl.run_downstream", run_name="__main__")
"""

import contextlib
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from s3prl.upstream.interfaces import UpstreamBase
from torch.nn.utils.rnn import pad_sequence
from typeguard import typechecked

from espnet2.ssl.frame_geometry import encoder_subsampling, frontend_hop
from espnet2.ssl.model_files import ModelFileError, PathLike, load_model_files
from espnet2.ssl.targets.dumpers.ssl_model import TRAINER, padding_invariance

HUB_NAME = "espnet_ssl_local"
# Suffixes espnet2.main_funcs.pack_funcs.Archiver reads.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tbz2", ".txz")
TAR_SUFFIXES = ((".tar", ".gz"), (".tar", ".bz2"), (".tar", ".xz"))


class SSLUpstreamError(ModelFileError):
    """A model file, archive or s3prl setup the upstream cannot use; the message
    names the file and the fix."""


class ESPnetSSLUpstream(UpstreamBase):
    """An ``ESPnetSSLModel`` as an s3prl upstream (``hidden_states`` of every layer).

    Attributes:
        model: The wrapped model; its train/eval mode is respected (s3prl calls
            ``eval()`` unless the upstream is fine-tuned).
        padding_invariant: Whether utterances of different lengths share a padded
            batch (:func:`padding_invariance`); else equal lengths run together.
        batching_reason: Why, in words.
        source: Where the model came from (``load_model_files``).
    """

    @typechecked
    def __init__(
        self,
        model: torch.nn.Module,
        source: Optional[Dict[str, Optional[str]]] = None,
    ):
        """Wraps a loaded model.

        Args:
            model: An ``ESPnetSSLModel`` (``inference_encode`` and an encoder whose
                blocks are ``encoder.encoders``).
            source: Where it came from, for messages (``model_file`` or
                ``packed_model``).
        """
        super().__init__()
        self.source = dict(source or {})
        where = self.source.get("model_file") or self.source.get("packed_model")
        self._where = where or type(model).__name__
        _check_model(model, self._where)
        self.model = model
        self.padding_invariant, self.batching_reason = padding_invariance(model)
        self._downsample_rate = _downsample_rate(model, self._where)

    @property
    def num_layers(self) -> int:
        """Hidden states per forward: num_blocks + 1 (layer 0 is the blocks' input)."""
        return len(self.model.encoder.encoders) + 1

    @property
    def hidden_sizes(self) -> List[int]:
        """The width D of each layer (the encoder's ``output_size()``)."""
        return [self.model.encoder.output_size()] * self.num_layers

    @property
    def downsample_rates(self) -> List[int]:
        """Input samples per frame of each layer (320 for the wav2vec 2.0 CNN)."""
        return [self._downsample_rate] * self.num_layers

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        """s3prl's interface: input samples per frame of a returned feature.

        Args:
            key: The feature (``hidden_states``, ``last_hidden_state``); all share
                one rate.

        Returns:
            Samples per frame: the frontend hop times the encoder subsampling.
        """
        return self._downsample_rate

    def forward(self, wavs: List[torch.Tensor]) -> Dict[str, object]:
        """Encodes a list of waveforms, each utterance as if it were alone.

        Args:
            wavs: B waveforms (S_b,), float, 16 kHz, on any device.

        Returns:
            ``hidden_states``: num_blocks + 1 tensors (B, T, D) with
            ``T = max_b T_b``, T_b the frames of utterance b (its
            ``inference_encode`` lengths), zeros on frames ``>= T_b``;
            ``last_hidden_state``: the encoder's final output (B, T, D), zeros
            likewise.
        """
        if len(wavs) == 0 or any(wav.dim() != 1 for wav in wavs):
            raise SSLUpstreamError(
                f"{HUB_NAME}: expected a non-empty list of 1-D waveforms, got "
                f"{[tuple(wav.shape) for wav in wavs]}. Fix: pass one (S,) tensor "
                "per utterance, as s3prl's runner does."
            )
        lengths = [len(wav) for wav in wavs]
        per_utt: List[List[torch.Tensor]] = [[] for _ in wavs]
        for group in self._groups(lengths):
            states, frames = self._encode_group([wavs[i] for i in group])
            for row, index in enumerate(group):
                per_utt[index] = [h[row, : frames[row]] for h in states]
        layers = [
            pad_sequence([utt[k] for utt in per_utt], batch_first=True)  # (B, T, D)
            for k in range(self.num_layers + 1)
        ]
        return {"hidden_states": layers[:-1], "last_hidden_state": layers[-1]}

    def _groups(self, lengths: List[int]) -> List[List[int]]:
        """Indices run together: all when padding-invariant, else equal lengths."""
        if self.padding_invariant:
            return [list(range(len(lengths)))]
        groups = defaultdict(list)
        for index, length in enumerate(lengths):
            groups[length].append(index)
        return list(groups.values())

    def _encode_group(
        self, wavs: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[int]]:
        """Layers 0..num_blocks and the final output, each (G, T, D); frames (G,)."""
        device = next(self.model.parameters()).device
        lengths = torch.tensor([len(wav) for wav in wavs], device=device)
        speech = pad_sequence(wavs, batch_first=True).to(device)  # (G, S)
        with _first_block_input(self.model.encoder) as captured:
            final, layers, frames = self.model.inference_encode(speech, lengths)
        if len(captured) != 1 or len(layers) != self.num_layers - 1:
            raise SSLUpstreamError(
                f"{HUB_NAME}: the encoder of '{self._where}' ran {len(layers)} of "
                f"{self.num_layers - 1} blocks (layer drop in training mode). Fix: "
                "call upstream.eval(), or set layer_drop_rate: 0 in encoder_conf."
            )
        return [captured[0], *layers, final], frames.tolist()


@contextlib.contextmanager
def _first_block_input(encoder: torch.nn.Module) -> Iterator[List[torch.Tensor]]:
    """Collects the input (B, T, D) of ``encoder.encoders[0]`` while active."""
    captured = []

    def hook(module: torch.nn.Module, args: Tuple) -> None:
        x = args[0]  # (B, T, D), or (x, pos_emb) with relative positions
        captured.append(x[0] if isinstance(x, tuple) else x)

    handle = encoder.encoders[0].register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _check_model(model: torch.nn.Module, where: str) -> None:
    """Raises unless ``model`` has ``inference_encode`` and encoder blocks."""
    if not hasattr(model, "inference_encode"):
        raise SSLUpstreamError(
            f"{HUB_NAME}: '{where}' holds a {type(model).__name__}, which has no "
            f"inference_encode. Fix: pass a model trained by {TRAINER}."
        )
    blocks = getattr(getattr(model, "encoder", None), "encoders", None)
    if not isinstance(blocks, (torch.nn.Sequential, torch.nn.ModuleList)) or not blocks:
        raise SSLUpstreamError(
            f"{HUB_NAME}: the {type(model.encoder).__name__} of '{where}' has no "
            "encoder blocks in `encoders`, so layer 0 (their input) is unknown. Fix: "
            "use an SSLTask encoder (transformer, conformer, e_branchformer, "
            "summary_mixing)."
        )


def _downsample_rate(model: torch.nn.Module, where: str) -> int:
    """Samples per encoder frame: frontend hop times encoder subsampling."""
    hop, factor = frontend_hop(model.frontend), encoder_subsampling(model.encoder)
    if hop is None or factor is None:
        raise SSLUpstreamError(
            f"{HUB_NAME}: the frame rate of '{where}' is unknown "
            f"({type(model.frontend).__name__} frontend, "
            f"{type(model.encoder).__name__} input layer). Fix: use the wav2vec 2.0 "
            "CNN (wav2vec_cnn) or an STFT frontend, and a linear or Conv2dSubsampling "
            "input layer."
        )
    return hop * factor


def is_packed(path: PathLike) -> bool:
    """Whether ``path`` names an ``espnet2.bin.pack`` archive (.zip, .tar.gz, ...)."""
    path = Path(path)
    return path.suffix in ARCHIVE_SUFFIXES or tuple(path.suffixes[-2:]) in TAR_SUFFIXES


@typechecked
def espnet_ssl_local(
    ckpt: Optional[PathLike],
    model_config: Optional[PathLike] = None,
    refresh: bool = False,
) -> ESPnetSSLUpstream:
    """s3prl hub entry: loads an ``SSLTask`` checkpoint as an upstream (on the CPU).

    Called as s3prl calls hub entries: ``espnet_ssl_local(ckpt=..., model_config=...,
    refresh=...)`` (``run_downstream.py -k ... -g ...``, ``S3PRLUpstream``).

    Args:
        ckpt: A model ``.pth`` written by ``espnet2.bin.ssl_train`` (e.g.
            ``valid.loss.best.pth``), or an archive of ``espnet2.bin.pack ssl``;
            None (no ``-k``) is an error.
        model_config: The run's ``config.yaml``; None reads the one next to the
            ``.pth``. Not allowed with an archive (it brings its own).
        refresh: Unused (local files; s3prl passes it to every entry).

    Returns:
        The upstream in eval mode; move it with ``.to(device)``.

    Raises:
        SSLUpstreamError: Missing files, an archive that is not an SSL pack, a
            model file holding Python objects, weights that do not fit the config.
    """
    if ckpt is None:
        raise SSLUpstreamError(
            f"{HUB_NAME} needs a checkpoint. Fix: pass ckpt=<.pth or .zip> "
            "(run_downstream.py: -k, S3PRLUpstream: path_or_url)."
        )
    try:
        if not is_packed(ckpt):
            model, source = load_model_files(
                _ssl_task(), TRAINER, config_file=model_config, model_file=ckpt
            )
        elif model_config is None:
            model, source = load_model_files(_ssl_task(), TRAINER, packed_model=ckpt)
        else:
            raise SSLUpstreamError(
                f"'{ckpt}' is a packed model with its own config. Fix: drop "
                f"model_config '{model_config}' (run_downstream.py: -g)."
            )
    except ModelFileError as err:  # SSLUpstreamError too
        raise SSLUpstreamError(f"{HUB_NAME}: {err}") from None
    return ESPnetSSLUpstream(model, source=source).eval()


def _ssl_task() -> type:
    """``SSLTask``, imported on use (building its tables takes seconds)."""
    from espnet2.tasks.ssl import SSLTask

    return SSLTask


@typechecked
def register_on_s3prl_hub(name: str = HUB_NAME) -> None:
    """Adds :func:`espnet_ssl_local` to ``s3prl.hub`` as ``name``.

    Then ``S3PRLUpstream(name, path_or_url=ckpt)`` and ``run_downstream.py -u name``
    (in the same process) find it.

    Args:
        name: The hub name.

    Raises:
        SSLUpstreamError: ``s3prl.hub`` does not import.
    """
    try:
        from s3prl import hub
    except Exception as err:  # ImportError, or any error of an upstream's import
        raise SSLUpstreamError(
            f"cannot import s3prl.hub ({type(err).__name__}: {err}); s3prl 0.4.18 "
            "imports every upstream there. Fix: install the pinned environment "
            "(make -C tools; tools/requirements.txt), or use espnet_ssl_local with "
            "s3prl.upstream.interfaces.Featurizer directly."
        ) from None
    setattr(hub, name, espnet_ssl_local)
