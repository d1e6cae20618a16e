"""Packing an SSL model for the ESPnet model zoo and the Hugging Face hub.

A packed model is the zip of ESPnet's ``espnet2/main_funcs/pack_funcs.py`` (a
``meta.yaml`` naming the files, the files at their paths relative to the recipe),
so ``espnet_model_zoo``'s ``ModelDownloader().download_and_unpack(zip_or_name)`` and
ESPnet's ``frontend: espnet_ssl`` unpack it as they do ESPnet's own SSL packs
(``espnet2.bin.pack ssl``). Beside ``ssl_train_config`` and ``ssl_model_file`` its
``meta.yaml`` names, for a HuBERT model, ``token_list`` (the k-means token list) and
``kmeans_centroids``, so the unpacked dict gives their paths too. Under the
experiment dir, the archive holds:

- ``config.yaml``, the checkpoint, ``README.md`` (the model card) and
  ``model_card.json`` (its facts);
- ``targets/tokens.txt``, ``targets/kmeans/{centroids.npy,kmeans.yaml}`` and
  ``targets/quality.json`` (HuBERT: the k-means the labels came from, the label
  quality when the corpus has phone alignments).

The hub folder is the archive extracted as it is (``meta.yaml`` at the top, paths
relative), which is what ``ModelDownloader`` expects of a hub repository
(``_unpack_cache_dir_for_huggingfase``), with the card as the top ``README.md``
and, where ``espnet2.bin.ssl_hf_convert`` could export the model, the
``transformers`` files beside it, so ``from_pretrained(<repo>)`` loads it too.
"""

import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

from espnet2.ssl.release.model_card import PathLike, labels_dir

TARGETS_DIR = "targets"  # in the experiment dir: what the labels were made with
TARGET_FILES = {  # meta.yaml key (None: an option file) -> path in a targets dir
    "token_list": "tokens.txt",
    "kmeans_centroids": "kmeans/centroids.npy",
    None: ("kmeans/kmeans.yaml", "quality.json"),
}
CARD_FILES = ("README.md", "model_card.json")


class PackError(ValueError):
    """A file to pack is missing, or an archive is not a packed SSL model."""


def _copy(src: Path, dst: Path) -> Path:
    """Copy ``src`` to ``dst`` through a temporary name (a kill leaves no half)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def copy_targets(config: Dict, exp_dir: PathLike) -> Dict[Optional[str], List[Path]]:
    """Copy the token list, k-means and label quality of a HuBERT model into the exp.

    Args:
        config: The training config (its labels name the targets dir).
        exp_dir: The experiment dir; receives ``targets/``.

    Returns:
        The copies by ``meta.yaml`` key (``None``: option files); empty for a model
        trained without labels.

    Raises:
        PackError: The labels' targets dir lacks its token list or centroids.
    """
    source = labels_dir(config)
    if source is None:
        return {}
    out = Path(exp_dir) / TARGETS_DIR
    copies: Dict[Optional[str], List[Path]] = {None: []}
    for key, names in TARGET_FILES.items():
        for name in [names] if isinstance(names, str) else names:
            if not (source / name).is_file():
                if key is None:
                    continue  # optional: quality needs phone alignments
                raise PackError(
                    f"{source / name}: no such file, but the model's labels come "
                    f"from {source}. Fix: re-run the recipe stage that made them "
                    "(3, or 5 for later iterations)."
                )
            copies.setdefault(key, []).append(_copy(source / name, out / name))
    return copies


def pack_model(
    config_file: PathLike,
    model_file: PathLike,
    extras: Dict[Optional[str], List[Path]],
    outpath: PathLike,
) -> Path:
    """Write the zip (written to a temporary name, then renamed).

    Args:
        config_file: The experiment's ``config.yaml``.
        model_file: The checkpoint to pack.
        extras: Files by ``meta.yaml`` key (:func:`copy_targets`; ``None``: files
            packed without a key, e.g. the card).
        outpath: The zip to write.
    """
    from espnet2.main_funcs.pack_funcs import pack

    files = {"ssl_model_file": model_file}
    files.update({k: v[0] for k, v in extras.items() if k is not None})
    outpath = Path(outpath)
    tmp = outpath.with_name(f".{outpath.stem}.tmp{os.getpid()}.zip")
    try:
        pack(
            files=files,
            yaml_files={"ssl_train_config": config_file},
            outpath=tmp,
            option=[str(p) for p in extras.get(None, [])],
        )
        os.replace(tmp, outpath)
    finally:
        tmp.unlink(missing_ok=True)
    logging.info(f"packed {model_file} into {outpath}")
    return outpath


def _safe_members(archive: zipfile.ZipFile, zip_path: PathLike) -> List[str]:
    """The member names, refusing any that would land outside the target dir."""
    names = archive.namelist()
    for name in names:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts:
            raise PackError(
                f"{zip_path}: member '{name}' is not a relative path inside the "
                "archive; repack the model with espnet2.bin.ssl_pack pack."
            )
    if "meta.yaml" not in names:
        raise PackError(
            f"{zip_path}: no meta.yaml; not a packed model. Fix: pack it with "
            "python -m espnet2.bin.ssl_pack pack (recipe stage 6)."
        )
    return names


def write_hub_folder(
    zip_path: PathLike,
    out_dir: PathLike,
    card: str,
    transformers_dir: Optional[PathLike] = None,
) -> Path:
    """Lay out a Hugging Face hub repository of a packed model in ``out_dir``.

    Args:
        zip_path: The packed model.
        out_dir: Replaced by the archive's files, the card as ``README.md`` and the
            files of ``transformers_dir`` (if any) at the top.
        card: The model card text.
        transformers_dir: A ``save_pretrained`` folder of the same model, or None.

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(work, members=_safe_members(archive, zip_path))
        if transformers_dir is not None:
            for item in Path(transformers_dir).iterdir():
                shutil.copyfile(item, work / item.name)
        (work / "README.md").write_text(card, encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def upload_command(out_dir: PathLike, hf_repo: str) -> str:
    """The command that uploads a hub folder (it needs the network and a token).

    ``hf upload`` (huggingface_hub's CLI) creates the repository when it does not
    exist and resumes an interrupted upload when run again.
    """
    return f"hf auth login  # once\nhf upload {hf_repo} {out_dir} . --repo-type model"


def hub_files(out_dir: PathLike) -> List[str]:
    """The files of a hub folder, relative to it, sorted (for the log)."""
    root = Path(out_dir)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
