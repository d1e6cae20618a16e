"""The model card of a packed SSL model: what it is, how it was trained, how it scores.

The facts are read from the files a recipe run leaves, never typed by hand:

- the objective and the architecture from the training ``config.yaml``, the
  parameter count from the model built by ``SSLTask``;
- the optimizer updates and the hours of audio seen from the model's own buffers
  (``num_updates``, ``seen_audio.seen_samples``: exact, summed over all GPUs);
- the batch (``batch_type``, ``batch_bins``, ``accum_grad``, the planned
  ``batch_seconds``) and the schedule from the config;
- the pretraining data (utterances, hours) from the data dir's ``utt2num_samples``;
- HuBERT's targets (k-means k, features, label quality against phone alignments)
  from the targets dir the config's labels come from;
- the last validation scores from ``train.log``;
- the fine-tuning results from the ASR experiments' ``RESULTS.md``.

:func:`collect_facts` gathers them into a JSON-able dict (``model_card.json``) and
:func:`render_card` writes the markdown ``README.md``, with the YAML front matter the
Hugging Face hub reads (``library_name: espnet``, license, language, tags), as
ESPnet's own hub uploads carry (``egs2/TEMPLATE/asr1/scripts/utils/
TEMPLATE_HF_Readme.md`` of ESPnet, read for the fields only).
"""

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
import yaml

PathLike = Union[str, Path]
LABELS_NAME = "text"  # the data name HuBERT's frame labels are read under
VALID_RESULTS = re.compile(r"(\d+)epoch results: .*\[valid\] (.*)$")
BINS_BATCH_TYPES = ("numel", "length")  # ESPnet batch types sized by batch_bins
KMEANS_FIELDS = (
    "n_clusters",
    "dim",
    "feature_type",
    "layer",
    "sample_frames",
    "backend",
)
# what the card says each objective (a loss name of the config) trains the encoder for
OBJECTIVE_DESCRIPTIONS = {
    "hubert": "masked prediction of k-means cluster labels of the masked frames "
    "(HuBERT, arXiv:2106.07447)",
    "wav2vec2": "contrastive prediction of the quantized CNN features of the masked "
    "frames (wav2vec 2.0, arXiv:2006.11477)",
    "reconstruction": "generative: L1 reconstruction of the masked time spans and "
    "frequency bands of the encoder input frames, e.g. log-mel filterbanks (TERA, "
    "arXiv:2007.06028)",
}
ENCODER_FIELDS = (
    "num_blocks",
    "output_size",
    "attention_heads",
    "linear_units",
    "pos_enc_layer_type",
    "mixer",
    "local_units",  # SummaryMixing: every layer of each branch, the last its output
    "summary_units",
    "mixer_layer_norm",
)


class ModelCardError(ValueError):
    """A file the model card is made from is missing or unreadable."""


def _read_yaml(path: Path) -> Dict[str, Any]:
    """The mapping in a YAML file, or a ModelCardError naming it."""
    if not path.is_file():
        raise ModelCardError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ModelCardError(f"{path}: not a YAML mapping")
    return data


def training_counts(model: torch.nn.Module, sample_rate: int) -> Dict[str, Any]:
    """Optimizer updates and audio seen, from the model's buffers.

    Args:
        model: An ``ESPnetSSLModel`` loaded from a checkpoint of
            ``espnet2.bin.ssl_train``.
        sample_rate: Samples per second of the training audio (Hz).

    Returns:
        ``updates`` (int or None) and ``hours_seen`` (float or None: None for a model
        trained before the counters existed).
    """
    state = model.state_dict()
    updates = state.get("num_updates")
    seen = state.get("seen_audio.seen_samples")
    return {
        "updates": None if updates is None else int(updates.sum()),
        "hours_seen": None if seen is None else int(seen.sum()) / sample_rate / 3600,
    }


def count_parameters(model: torch.nn.Module) -> Dict[str, int]:
    """Parameters of the whole model and of its encoder (what fine-tuning keeps).

    Args:
        model: An ``ESPnetSSLModel``.

    Returns:
        ``parameters`` and ``encoder_parameters`` (numbers of scalars).
    """
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "encoder_parameters": sum(p.numel() for p in model.encoder.parameters()),
    }


def architecture(config: Dict[str, Any]) -> Dict[str, Any]:
    """Objective, frontend, encoder and its sizes from a training config."""
    encoder_conf = config.get("encoder_conf") or {}
    losses = [entry.get("name") for entry in config.get("loss") or []]
    return {
        "objective": "+".join(str(name) for name in losses) or None,
        "frontend": config.get("frontend"),
        "encoder": config.get("encoder"),
        **{f: encoder_conf[f] for f in ENCODER_FIELDS if f in encoder_conf},
    }


def batch_facts(config: Dict[str, Any]) -> Dict[str, Any]:
    """The batch and schedule options of a training config that are in use.

    ``batch_bins`` is shown for the batch types that read it (``numel``,
    ``length``), ``batch_size`` for the others; for ``numel`` (samples) the audio
    per optimizer update, ``update_seconds``, follows from it.
    """
    batch_type = config.get("batch_type", "folded")
    size_key = "batch_bins" if batch_type in BINS_BATCH_TYPES else "batch_size"
    keys = ("batch_type", size_key, "accum_grad", "batch_seconds", "max_seen_hours")
    keys += ("max_epoch", "ngpu", "optim", "scheduler")
    facts = {key: config[key] for key in keys if config.get(key) is not None}
    if batch_type == "numel" and config.get("batch_bins"):
        samples = config["batch_bins"] * config.get("accum_grad", 1)
        facts["update_seconds"] = samples / _sample_rate(config)
    crop = (config.get("collate_fn_conf") or {}).get("crop_seconds")
    if crop is not None:
        facts["crop_seconds"] = crop
    lr = (config.get("optim_conf") or {}).get("lr")
    if lr is not None:
        facts["lr"] = lr
    return facts


def data_facts(data_dir: Optional[PathLike], sample_rate: int) -> Dict[str, Any]:
    """Name, utterances and hours of a data dir (from its ``utt2num_samples``)."""
    if data_dir is None:
        return {}
    counts = Path(data_dir) / "utt2num_samples"
    if not counts.is_file():
        raise ModelCardError(
            f"{counts}: no such file. Fix: pass a data dir written by the recipe's "
            "stage 2 (dump/raw/<set>)."
        )
    samples = [int(line.split()[1]) for line in counts.read_text().splitlines()]
    return {
        "name": Path(data_dir).name,
        "utterances": len(samples),
        "hours": sum(samples) / sample_rate / 3600,
    }


def labels_dir(config: Dict[str, Any]) -> Optional[Path]:
    """The targets dir of a HuBERT config's training labels (``<dir>/<set>/text``)."""
    for entry in config.get("train_data_path_and_name_and_type") or []:
        path, name = entry[0], entry[1]
        if name == LABELS_NAME:
            return Path(path).parent.parent
    return None


def targets_facts(targets: Optional[Path]) -> Dict[str, Any]:
    """k-means size, features and label quality of a targets dir, where present."""
    if targets is None or not targets.is_dir():
        return {}
    facts: Dict[str, Any] = {"dir": str(targets)}
    kmeans = targets / "kmeans" / "kmeans.yaml"
    if kmeans.is_file():
        meta = _read_yaml(kmeans)
        facts["kmeans"] = {k: meta.get(k) for k in KMEANS_FIELDS}
    quality = targets / "quality.json"
    if quality.is_file():
        rows = json.loads(quality.read_text(encoding="utf-8"))["results"]
        facts["quality"] = rows
    return facts


def last_valid_scores(train_log: PathLike) -> Dict[str, Any]:
    """The validation statistics of the last epoch in ESPnet's ``train.log``."""
    path = Path(train_log)
    if not path.is_file():
        return {}
    found = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = VALID_RESULTS.search(line)
        if match:
            found = match
    if found is None:
        return {}
    scores = dict(
        pair.split("=", 1) for pair in found.group(2).split(", ") if "=" in pair
    )
    return {"epoch": int(found.group(1)), **scores}


def collect_facts(
    exp_dir: PathLike,
    model_file: PathLike,
    train_data: Optional[PathLike] = None,
    valid_data: Optional[PathLike] = None,
    results: Sequence[PathLike] = (),
    recipe: Optional[str] = None,
) -> Dict[str, Any]:
    """Everything the card says, as a JSON-able dict (``model_card.json``).

    Args:
        exp_dir: The pretraining experiment (``config.yaml``, ``train.log``).
        model_file: Its packed checkpoint (e.g. ``valid.loss.best.pth``).
        train_data: The pretraining data dir (``dump/raw/<set>``).
        valid_data: The validation data dir.
        results: ``RESULTS.md`` files of fine-tuning experiments (may not exist yet).
        recipe: The recipe it was trained with (``<corpus>/ssl2``).

    Raises:
        ModelCardError: The config or the model file is missing or unreadable.
    """
    from espnet2.ssl.model_files import load_task_model
    from espnet2.tasks.ssl import SSLTask

    exp = Path(exp_dir)
    config = _read_yaml(exp / "config.yaml")
    if not Path(model_file).is_file():
        raise ModelCardError(f"{model_file}: no such model file; train it first")
    fs = _sample_rate(config)
    model, _ = load_task_model(
        SSLTask, exp / "config.yaml", model_file, "espnet2.bin.ssl_train"
    )
    return {
        "name": exp.name,
        "recipe": recipe,
        "model_file": Path(model_file).name,
        "sample_rate": fs,
        "architecture": {**architecture(config), **count_parameters(model)},
        "training": {**training_counts(model, fs), **batch_facts(config)},
        "data": {
            "train": data_facts(train_data, fs),
            "valid": data_facts(valid_data, fs),
        },
        "targets": targets_facts(labels_dir(config)),
        "validation": last_valid_scores(exp / "train.log"),
        "fine_tuning": [str(p) for p in results if Path(p).is_file()],
    }


def _sample_rate(config: Dict[str, Any]) -> int:
    """``frontend_conf.fs`` in Hz (``16k`` is 16000), 16000 when not set."""
    fs = (config.get("frontend_conf") or {}).get("fs", 16000)
    if isinstance(fs, str):
        fs = float(fs[:-1]) * 1000 if fs.lower().endswith("k") else float(fs)
    return int(fs)


def _millions(count: Optional[int]) -> str:
    """A parameter count in millions, 2 decimals."""
    return "?" if count is None else f"{count / 1e6:.2f} M"


def _number(value: Any, digits: int = 3) -> str:
    """A float rounded for a table, anything else as text; None as a dash."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def front_matter(facts: Dict[str, Any], license: str, language: str) -> str:
    """The YAML header the Hugging Face hub reads from a README.md."""
    arch = facts["architecture"]
    tags = ["espnet", "audio", "self-supervised-learning"]
    tags += [str(t) for t in (arch.get("objective"), arch.get("encoder")) if t]
    header = {
        "library_name": "espnet",
        "license": license,
        "language": [language],
        "tags": tags,
        "pipeline_tag": "feature-extraction",
    }
    if facts.get("recipe"):
        header["datasets"] = [facts["recipe"].split("/")[0]]
    return "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n"


def _architecture_lines(arch: Dict[str, Any]) -> List[str]:
    """The architecture table."""
    rows = [("objective", arch.get("objective")), ("frontend", arch.get("frontend"))]
    rows += [("encoder", arch.get("encoder"))]
    rows += [(f, arch[f]) for f in ENCODER_FIELDS if f in arch]
    rows += [("parameters", _millions(arch.get("parameters")))]
    rows += [("encoder parameters", _millions(arch.get("encoder_parameters")))]
    return ["| | |", "|---|---|"] + [f"| {k} | {_number(v)} |" for k, v in rows]


def _training_lines(facts: Dict[str, Any]) -> List[str]:
    """The training table: audio seen, updates, batch, schedule, data."""
    train = dict(facts["training"])
    rows = [
        ("hours of audio seen", _number(train.pop("hours_seen", None), 2)),
        ("optimizer updates", _number(train.pop("updates", None))),
    ]
    rows += [(key, _number(value)) for key, value in train.items()]
    for split, data in facts["data"].items():
        if data:
            text = f"`{data['name']}`: {data['utterances']} utterances, "
            rows.append((f"{split} data", text + f"{data['hours']:.3g} h"))
    return ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]


def _targets_lines(targets: Dict[str, Any]) -> List[str]:
    """HuBERT's k-means and label quality, when the model was trained on labels."""
    if not targets:
        return []
    lines = ["", "## Targets", ""]
    km = targets.get("kmeans") or {}
    lines.append(
        f"k-means: k={km.get('n_clusters')} on {km.get('feature_type')} features"
        + (f" (layer {km['layer']})" if km.get("layer") else "")
        + f", {km.get('sample_frames')} frames ({km.get('backend')}); centroids "
        "in this archive (`targets/kmeans/`), token list `targets/tokens.txt`."
    )
    rows = targets.get("quality") or []
    if rows:
        lines += ["", "Label quality against phone alignments (HuBERT's measures):", ""]
        lines += ["| labels | phone purity | cluster purity | PNMI | frames |"]
        lines += ["|---|---:|---:|---:|---:|"]
        for row in rows:
            values = [row[k] for k in ("phone_purity", "cluster_purity", "pnmi")]
            cells = " | ".join(f"{v:.3f}" for v in values)
            lines.append(f"| {row['name']} | {cells} | {row['num_frames']} |")
    return lines


def _demoted(markdown: str, levels: int = 2) -> List[str]:
    """Markdown lines with every heading ``levels`` deeper."""
    return [
        "#" * levels + line if line.startswith("#") else line
        for line in markdown.splitlines()
    ]


def _results_lines(results: Sequence[str]) -> List[str]:
    """The fine-tuning RESULTS.md files, headings demoted under one section."""
    lines = ["", "## Fine-tuning results", ""]
    if not results:
        return lines + ["Not fine-tuned yet (the recipe's stages 7-8 score it)."]
    for path in results:
        lines += _demoted(Path(path).read_text(encoding="utf-8")) + [""]
    return lines


def _usage_lines(name: str) -> List[str]:
    """How to load, fine-tune and probe the model."""
    return [
        "",
        "## How to use",
        "",
        "```python",
        "from espnet_model_zoo.downloader import ModelDownloader",
        "from espnet2.tasks.ssl import SSLTask",
        "",
        f'files = ModelDownloader().download_and_unpack("{name}.zip")  # or a hub name',
        "model, args = SSLTask.build_model_from_file(",
        '    files["ssl_train_config"], files["ssl_model_file"]',
        ")",
        "final, layers, lengths = model.inference_encode(speech, speech_lengths)",
        "```",
        "",
        "- Fine-tuning: `frontend: espnet_ssl` with `frontend_conf: {frontend_conf: "
        f"{{path_or_url: {name}.zip}}}}` in an ESPnet ASR config (recipe stage 7).",
        "- SUPERB-style probing: `espnet2.ssl.release.s3prl.upstream` loads this "
        "archive as an s3prl upstream.",
        "- Hugging Face `transformers`: where the architecture allows, "
        "`config.json` and `model.safetensors` beside this card load with "
        "`from_pretrained` (written by `python -m espnet2.bin.ssl_hf_convert`).",
    ]


def _objective_lines(arch: Dict[str, Any]) -> List[str]:
    """What each known objective of the model trains for (none if unknown)."""
    described = [
        f"`{loss}`: {OBJECTIVE_DESCRIPTIONS[loss]}"
        for loss in str(arch.get("objective") or "").split("+")
        if loss in OBJECTIVE_DESCRIPTIONS
    ]
    return ["", "Objective: " + "; ".join(described) + "."] if described else []


def render_card(
    facts: Dict[str, Any], license: str = "cc-by-4.0", language: str = "en"
) -> str:
    """The markdown model card (``README.md``) of :func:`collect_facts`' dict.

    Args:
        facts: The dict of :func:`collect_facts`.
        license: The hub's license identifier.
        language: ISO 639-1 code of the training speech.
    """
    arch, name = facts["architecture"], facts["name"]
    recipe = facts.get("recipe") or "an SSL recipe"
    lines = [front_matter(facts, license, language), f"# {name}", ""]
    lines.append(
        f"A self-supervised speech model ({arch.get('objective')} objective, "
        f"{arch.get('encoder')} encoder) pretrained with ESPnet's `SSLTask` by "
        f"the `{recipe}` recipe; checkpoint `{facts['model_file']}`, "
        f"{facts['sample_rate']} Hz audio."
    )
    lines += _objective_lines(arch)
    notes = facts.get("notes") or []
    lines += [""] + [f"- {note}" for note in notes] if notes else []
    lines += ["", "## Architecture", ""] + _architecture_lines(arch)
    lines += ["", "## Training", ""] + _training_lines(facts)
    lines += _targets_lines(facts["targets"])
    valid = facts["validation"]
    if valid:
        scores = ", ".join(f"{k}={v}" for k, v in valid.items() if k != "epoch")
        lines += ["", "## Validation", "", f"Epoch {valid['epoch']}: {scores}"]
    lines += _results_lines(facts["fine_tuning"]) + _usage_lines(name)
    return "\n".join(lines) + "\n"
