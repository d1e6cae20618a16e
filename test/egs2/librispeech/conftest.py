"""Fixtures: a LibriSpeech-shaped corpus (and Libri-light's librispeech_finetuning/)
made of espeak-ng speech, and a temporary copy of the recipe to run it on.

The corpus is tiny (one to three utterances per folder) but has the real layout:
``LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter, and
``librispeech_finetuning/{1h/{0..5},9h}/{clean,other}/<speaker>/<chapter>/...``.
"""

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
import soundfile

from espnet2.ssl.synth.espeak import Voice, resample_audio, synthesize

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE_RATE = 16000
SENTENCES = (
    "THE OLD KEY WAS LYING ON THE KITCHEN TABLE ALL MORNING",
    "SHE WALKED ALONG THE RIVER UNTIL THE SUN WENT DOWN",
    "MY BROTHER NEVER LIKED THE LONG WINTER EVENINGS IN TOWN",
)
SHORT_SECONDS = 1.0  # below run.sh's --min_wav_duration 2
# part -> [(utterance id, sentence index, short)]; ids are LibriSpeech's own scheme
LIBRISPEECH: Dict[str, List[Tuple[str, int, bool]]] = {
    "train-clean-100": [
        ("103-1240-0000", 0, False),
        ("103-1240-0001", 1, True),
        ("1034-121119-0000", 2, False),
    ],
    "train-clean-360": [("14-208-0000", 1, False)],
    "train-other-500": [("20-205-0000", 2, False)],
    "dev-clean": [("84-121123-0000", 0, False), ("174-50561-0000", 1, False)],
    "dev-other": [("116-288045-0000", 2, False)],
    "test-clean": [("1089-134686-0000", 0, True)],
    "test-other": [("1688-142285-0000", 1, False)],
}
# Libri-light folds: one speaker and one utterance each
FOLDS = [f"1h/{fold}/{kind}" for fold in range(6) for kind in ("clean", "other")]
FOLDS += ["9h/clean", "9h/other"]


def librilight_id(index: int) -> str:
    """The utterance id placed in fold number ``index`` of FOLDS."""
    return f"{200 + index}-{1000 + index}-{index:04d}"


def fold_ids(prefix: str) -> List[str]:
    """Ids of the Libri-light folds whose path starts with ``prefix``, sorted."""
    return sorted(
        librilight_id(i) for i, fold in enumerate(FOLDS) if fold.startswith(prefix)
    )


def part_ids(*parts: str) -> List[str]:
    """Ids of the LibriSpeech parts, sorted."""
    return sorted(utt for part in parts for utt, _, _ in LIBRISPEECH[part])


@pytest.fixture(scope="session")
def speech() -> List[np.ndarray]:
    """One 16 kHz float32 clip (S,) per sentence, espeak-ng voice en+m1."""
    clips = []
    for sentence in SENTENCES:
        result = synthesize(sentence.lower() + ".", Voice("en+m1", rate=150))
        clips.append(resample_audio(result.audio, result.sample_rate, SAMPLE_RATE))
    assert all(len(clip) > 2.2 * SAMPLE_RATE for clip in clips)
    return clips


def write_chapter(folder: Path, entries: List[Tuple[str, str, np.ndarray]]) -> None:
    """FLAC files and the chapter's .trans.txt in ``folder/<spk>/<chapter>/``."""
    spk, chapter = entries[0][0].split("-")[:2]
    chapter_dir = folder / spk / chapter
    chapter_dir.mkdir(parents=True, exist_ok=True)
    with open(chapter_dir / f"{spk}-{chapter}.trans.txt", "a") as trans:
        for utt, text, audio in entries:
            soundfile.write(chapter_dir / f"{utt}.flac", audio, SAMPLE_RATE)
            trans.write(f"{utt} {text}\n")


def build_corpus(root: Path, speech: List[np.ndarray]) -> Path:
    """Write LibriSpeech/ and librispeech_finetuning/ under ``root``; return root."""
    for part, utterances in LIBRISPEECH.items():
        chapters: Dict[str, list] = {}
        for utt, index, short in utterances:
            audio = speech[index][: int(SHORT_SECONDS * SAMPLE_RATE)] if short else None
            audio = speech[index] if audio is None else audio
            chapter = utt.rsplit("-", 1)[0]
            chapters.setdefault(chapter, []).append((utt, SENTENCES[index], audio))
        for entries in chapters.values():
            write_chapter(root / "LibriSpeech" / part, entries)
    for index, fold in enumerate(FOLDS):
        entry = (librilight_id(index), SENTENCES[index % 3], speech[index % 3])
        write_chapter(root / "librispeech_finetuning" / fold, [entry])
    return root


@pytest.fixture(scope="session")
def make_corpus(speech) -> Callable[[Path], Path]:
    """``make_corpus(root) -> root`` with the tiny corpus written under it."""
    return lambda root: build_corpus(root, speech)


def copy_recipe(root: Path) -> Path:
    """A copy of egs2/librispeech/ssl2 under ``root`` with its own TEMPLATE files.

    ssl.sh, path.sh and utils/ are copied (not linked to this checkout), so that an
    edit of egs2/TEMPLATE/ssl2 in progress cannot change a running test; tools/ and
    espnet2/ are linked so that path.sh finds the environment and the overlay.
    """
    template = root / "egs2" / "TEMPLATE" / "ssl2"
    template.mkdir(parents=True)
    for name in ("ssl.sh", "path.sh"):
        shutil.copy2(REPO_ROOT / "egs2/TEMPLATE/ssl2" / name, template / name)
    shutil.copytree(REPO_ROOT / "egs2/TEMPLATE/ssl2/utils", template / "utils")
    shutil.copytree(
        REPO_ROOT / "egs2/librispeech/ssl2",
        root / "egs2/librispeech/ssl2",
        symlinks=True,  # ssl.sh -> ../../TEMPLATE/ssl2/ssl.sh: the copy above
        ignore=shutil.ignore_patterns("data", "downloads", "dump", "exp"),
    )
    for link in ("tools", "espnet2"):
        (root / link).symlink_to(REPO_ROOT / link)
    return root / "egs2/librispeech/ssl2"


@pytest.fixture(scope="session")
def make_recipe() -> Callable[[Path], Path]:
    """``make_recipe(root) -> recipe folder``, see ``copy_recipe``."""
    return copy_recipe


@pytest.fixture(scope="session")
def layout() -> SimpleNamespace:
    """The corpus's contents for assertions (test modules cannot import conftest)."""
    return SimpleNamespace(
        librispeech=LIBRISPEECH,
        folds=FOLDS,
        sentences=SENTENCES,
        librilight_id=librilight_id,
        fold_ids=fold_ids,
        part_ids=part_ids,
    )
