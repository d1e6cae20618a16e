"""Import a fairseq wav2vec 2.0 or HuBERT pretraining checkpoint as our SSL model.

The path is fairseq -> transformers names -> ours, so that one mapping leads to
ESPnet (:mod:`espnet2.ssl.release.hf.wav2vec2`, :mod:`espnet2.ssl.release.hf.hubert`):

1. :func:`~espnet2.ssl.release.fairseq.checkpoint.read_fairseq_checkpoint` reads the
file
   safely (no code from it runs; see there);
2. :func:`~espnet2.ssl.release.fairseq.config.to_hf_config` translates the config to a
   transformers ``Wav2Vec2Config`` / ``HubertConfig`` (refusing, by name, every
   fairseq field value our model cannot express);
3. :func:`~espnet2.ssl.release.fairseq.keys.to_hf_state_dict` renames every tensor to
its
   transformers key (a missing or left-over key is an error);
4. the HF import's config translation and key tables build our model through
   ``SSLTask`` and copy the tensors (float32; fp16 checkpoints are cast exactly).

No transformers model is instantiated. What differs from importing the HF folder
that transformers' own conversion scripts would write:

- ``task.normalize: true`` (fairseq normalised each waveform to zero mean and unit
  variance: wav2vec 2.0 and HuBERT LARGE) becomes ``frontend_conf.normalize_audio:
  true``. ESPnet's ``CNNFrontend`` normalises over the whole (B, S) batch tensor,
  padding included: equal to fairseq for one utterance, not for a padded batch;
- the HuBERT head is not imported. fairseq scores the cosine similarity between
  ``final_proj(x)`` and each row of ``label_embs_concat`` (divided by
  ``logit_temp``); ESPnet's ``HuBERTDecoder`` scores a linear layer, which cannot
  express a cosine. Its tensors are logged as not imported and a new head is
  initialised from ``seed`` (as ``ssl_hf_convert --from_hf`` does for a folder
  without our head), by default with fairseq's number of classes (rows of
  ``label_embs_concat``) and ``final_dim``. Everything else is copied bitwise, and
  every layer's output equals the HF import of the same weights.

References:
    A. Baevski, H. Zhou, A. Mohamed, M. Auli, "wav2vec 2.0", NeurIPS 2020,
    arXiv:2006.11477. W.-N. Hsu et al., "HuBERT", IEEE/ACM TASLP 2021,
    arXiv:2106.07447. fairseq @ 3d262bb2 (commit
    3d262bb25690e4eb2e7d3c1309b1e9c406ca4b99) ``fairseq/models/hubert/hubert.py``
    (``HubertModel.compute_nce``, ``label_embs_concat``, ``untie_final_proj``),
    ``fairseq/tasks/audio_pretraining.py`` (``normalize``). Read for facts only; no
    code copied.
"""

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from typeguard import typechecked

from espnet2.ssl.espnet_model import ESPnetSSLModel
from espnet2.ssl.release.fairseq.checkpoint import (
    FairseqCheckpoint,
    config_value,
    fail,
    read_fairseq_checkpoint,
)
from espnet2.ssl.release.fairseq.config import (
    final_dim,
    label_sets,
    normalize_audio,
    to_hf_config,
)
from espnet2.ssl.release.fairseq.keys import (
    LABEL_EMBEDDINGS,
    check_keys,
    to_hf_state_dict,
)
from espnet2.ssl.release.hf import hubert as hf_hubert
from espnet2.ssl.release.hf import wav2vec2 as hf_wav2vec2
from espnet2.ssl.release.hf.wav2vec2 import build_espnet_model

PathLike = Union[str, Path]


def _num_classes(checkpoint: FairseqCheckpoint) -> int:
    """fairseq's number of HuBERT classes, when there is one label set."""
    path = checkpoint.path
    if LABEL_EMBEDDINGS not in checkpoint.state:
        raise fail(
            path,
            f"no {LABEL_EMBEDDINGS} (trained without label dictionaries), so the "
            "number of classes of the new HuBERT head is unknown",
            "pass --num_classes K (the k of the labels you will train on)",
        )
    rows = int(checkpoint.state[LABEL_EMBEDDINGS].shape[0])
    untied = config_value(checkpoint.model_cfg, "untie_final_proj", False, path)
    sets = label_sets(checkpoint)
    projected = int(checkpoint.state["final_proj.weight"].shape[0])
    if (sets or 1) != 1 or (untied and projected != final_dim(checkpoint)):
        raise fail(
            path,
            f"fairseq's head predicts several label sets ({rows} classes in all); "
            "our HuBERT head predicts one",
            "pass --num_classes K (the k of the labels you will train on)",
        )
    return rows


def _hubert_head_note(head: Dict[str, Any]) -> str:
    """The log's reason why fairseq's HuBERT head is not imported."""
    shapes = ", ".join(f"{key} {tuple(head[key].shape)}" for key in sorted(head))
    return (
        f"fairseq's HuBERT head ({shapes}) is not imported: it scores the cosine "
        f"similarity of final_proj(x) with each label embedding, and ESPnet's "
        f"HuBERT head scores a linear layer"
    )


def _train_config(
    checkpoint: FairseqCheckpoint,
    hf_config: Any,
    num_classes: Optional[int],
    head_dim: Optional[int],
) -> Dict[str, Any]:
    """Our training config (model part) from the HF config and the task options."""
    if checkpoint.model_type == "wav2vec2":
        if num_classes is not None or head_dim is not None:
            raise fail(
                checkpoint.path,
                "--num_classes / --final_dim set a new HuBERT head, and this is a "
                "wav2vec2 checkpoint",
                "drop them (wav2vec 2.0's quantizer and projections are imported)",
            )
        train_config = hf_wav2vec2.espnet_config_from_hf(hf_config)
    else:
        num_classes = _num_classes(checkpoint) if num_classes is None else num_classes
        head_dim = final_dim(checkpoint) if head_dim is None else head_dim
        train_config = hf_hubert.espnet_config_from_hf(hf_config, num_classes, head_dim)
    if normalize_audio(checkpoint):
        logging.info(
            f"{checkpoint.path}: fairseq normalised each waveform (task.normalize): "
            "frontend_conf.normalize_audio: true"
        )
        train_config["frontend_conf"]["normalize_audio"] = True
    return train_config


def _load_weights(
    model: ESPnetSSLModel,
    checkpoint: FairseqCheckpoint,
    hf_config: Any,
    seed: int,
) -> None:
    """Copy the checkpoint's tensors into ``model`` (HuBERT: with a new head)."""
    hf_state, head = to_hf_state_dict(checkpoint)  # checks every key
    dtypes = sorted({str(t.dtype) for t in hf_state.values() if t.is_floating_point()})
    if dtypes != ["torch.float32"]:
        logging.info(f"{checkpoint.path}: {dtypes} tensors cast to float32")
    try:
        if checkpoint.model_type == "wav2vec2":
            hf_wav2vec2.load_hf_state(model, hf_state, hf_config)
        else:
            note = _hubert_head_note(head)
            hf_hubert.load_hf_state(model, hf_state, hf_config, None, seed, note)
    except RuntimeError as err:  # load_state_dict: a shape that does not fit
        reason = next((x.strip() for x in str(err).splitlines() if "size" in x), err)
        raise fail(
            checkpoint.path,
            f"a tensor does not fit the checkpoint's own config ({reason})",
            "pass the checkpoint with the config it was trained with",
        ) from None


@typechecked
def import_fairseq(
    path: PathLike,
    num_classes: Optional[int] = None,
    head_dim: Optional[int] = None,
    seed: int = 0,
) -> Tuple[ESPnetSSLModel, Dict[str, Any]]:
    """A fairseq ``Wav2Vec2Model`` / ``HubertModel`` checkpoint as our SSL model.

    Args:
        path: The fairseq ``.pt`` checkpoint.
        num_classes: HuBERT: classes of the new head; None = fairseq's (rows of
            ``label_embs_concat``, one label set only).
        head_dim: HuBERT: projection size of the new head; None = fairseq's
            ``final_dim``.
        seed: HuBERT: seed of the new head's initialisation.

    Returns:
        Our model (float32, eval mode) built through ``SSLTask``, and its training
        config (model part;
        :func:`~espnet2.ssl.release.hf.wav2vec2.complete_train_config`
        completes it for ``config.yaml``).

    Raises:
        FairseqCheckpointError: Naming the file, the problem and the fix.
        NotExpressibleError: Naming a fairseq config field our model cannot express.
    """
    checkpoint = read_fairseq_checkpoint(path)
    hf_config = to_hf_config(checkpoint)
    check_keys(checkpoint)  # before the head's shapes are read
    train_config = _train_config(checkpoint, hf_config, num_classes, head_dim)
    model = build_espnet_model(train_config)
    _load_weights(model, checkpoint, hf_config, seed)
    return model.eval(), train_config
