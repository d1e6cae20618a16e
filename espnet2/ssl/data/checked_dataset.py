"""ESPnet's training dataset with every example checked (``--bad_utterances``).

``SSLTask.build_dataset`` wraps the ``ESPnetDataset`` of ESPnet's sequence iterator
(its default ``iterator_type``) in :class:`CheckedDataset`, which checks each example
when it is loaded, with the rules of :mod:`espnet2.ssl.data.example_check`:

* before reading: the utterance has a line in the labels (when there are labels);
  its audio header is readable, a WAV is as long as its header says, the sample rate
  is the model's, one channel, not empty;
* after reading: 1-D, not empty, every sample the header declares was read, no NaN
  or infinite sample, and one label per CNN frame.

``bad_utterances="error"`` (the default) raises :class:`BadUtteranceError`, which
names the data file, the utterance, the problem and the fix. ``"skip"`` logs a
warning that names the utterance and why, with the running count of skipped examples
of this process (its DataLoader workers together; one count per GPU rank), and
returns ``(uid, {})``, which ``SSLCollateFn`` drops from the batch. Nothing is
skipped silently. :meth:`CheckedDataset.check_before_training` runs the checks that
need no decoding on every utterance before the first step
(``--check_data_before_training``).
"""

import logging
import multiprocessing
import time
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import soundfile
from typeguard import typechecked

from espnet2.fileio.audio_check import NONFINITE_FIX, nonfinite_problem
from espnet2.fileio.kaldi_data_dir import DataDirError
from espnet2.ssl.data.example_check import (
    UNREADABLE_FIX,
    ExampleRules,
    Problem,
    header_problem,
    label_count_problem,
    missing_label_problem,
    samples_problem,
)
from espnet2.ssl.targets.labels import listing
from espnet2.train.dataset import AbsDataset, ESPnetDataset

BAD_UTTERANCES = ("error", "skip")
SKIP_HINT = " To train without the bad utterances instead, pass --bad_utterances skip."


class BadUtteranceError(DataDirError):
    """A bad training example; the message reads
    ``<data file>: utterance '<utt>': <problem>. Fix: <fix>``."""


class CheckedDataset(AbsDataset):
    """An ``ESPnetDataset`` with ``speech`` (and optionally ``text`` labels) whose
    examples are checked when loaded; ``dataset[uid]`` returns ``(uid, data)`` as
    ESPnet's does, or ``(uid, {})`` for an example skipped as bad."""

    @typechecked
    def __init__(
        self,
        dataset: ESPnetDataset,
        rules: ExampleRules,
        bad_utterances: str = "error",
        name: str = "training",
    ):
        """Wraps the dataset.

        Args:
            dataset: ESPnet's dataset; its ``speech`` data is a ``wav.scp`` (type
                ``sound``) or features (only checked for NaN/inf), its optional
                ``text`` data the frame labels.
            rules: The model's sample rate, CNN and label downsampling.
            bad_utterances: ``error`` (raise) or ``skip`` (warn, count, leave out).
            name: What the data is for, in messages (``training``, ``validation``).
        """
        if bad_utterances not in BAD_UTTERANCES:
            raise ValueError(
                f"bad_utterances must be one of {BAD_UTTERANCES}, "
                f"got {bad_utterances!r}"
            )
        self.dataset, self.rules, self.name = dataset, rules, name
        self.bad_utterances = bad_utterances
        self.wav_scp, speech_type = dataset.debug_info["speech"]
        self.sound = speech_type == "sound"
        self.labels_file = dataset.debug_info.get("text", (None,))[0]
        self.known_bad: Dict[str, BadUtteranceError] = {}
        self.skipped = multiprocessing.Value("q", 0)  # shared with loader workers

    def has_name(self, name) -> bool:
        """True when the wrapped dataset has data ``name`` (ESPnet's interface)."""
        return self.dataset.has_name(name)

    def names(self) -> Tuple[str, ...]:
        """The wrapped dataset's data names, e.g. ``("speech", "text")``."""
        return self.dataset.names()

    def __iter__(self):
        return iter(self.dataset)

    def __repr__(self) -> str:
        return f"CheckedDataset(bad_utterances={self.bad_utterances}, {self.dataset})"

    def __getitem__(self, uid: str) -> Tuple[str, Dict[str, np.ndarray]]:
        """``(uid, data)`` of a good example; for a bad one, raises
        :class:`BadUtteranceError` (``error``) or returns ``(uid, {})`` (``skip``)."""
        try:
            return self._load(uid)
        except BadUtteranceError as err:
            if self.bad_utterances == "error":
                raise
            self._count_skipped(err)
            return uid, {}

    def check_before_training(self, keys: Optional[Iterable[str]] = None) -> List[str]:
        """Check every utterance's header and label count (no decoding, no NaN check).

        With ``error``, every bad utterance is logged and the first raised (with the
        count of the others); with ``skip``, each is logged and then skipped when
        loaded.

        Args:
            keys: The utterances to check; None: all of the dataset.

        Returns:
            The ids of the bad utterances, sorted.
        """
        start, bad = time.perf_counter(), []
        keys = sorted(self.dataset if keys is None else keys)
        for uid in keys:
            try:
                self._check_header_and_label_count(uid)
            except BadUtteranceError as err:
                bad.append(err)
        logging.info(
            f"checked the audio headers and labels of {len(keys)} {self.name} "
            f"utterances in {time.perf_counter() - start:.1f} s: {len(bad)} bad"
        )
        if bad and self.bad_utterances == "error":
            raise self._first_of(bad)
        for err in bad:
            logging.warning(
                f"will skip bad {self.name} utterance '{err.utt}' (--bad_utterances "
                f"skip): {err.path}: {err.problem}"
            )
            self.known_bad[err.utt] = err
        return [err.utt for err in bad]

    def _first_of(self, bad: List[BadUtteranceError]) -> BadUtteranceError:
        """The first error, naming the others (each is logged in full)."""
        if len(bad) == 1:
            return bad[0]
        for err in bad:
            logging.error(str(err))
        first, others = bad[0], [err.utt for err in bad[1:]]
        problem = (
            f"{first.problem}; {len(others)} more bad {self.name} utterances are "
            f"logged above: {listing(others)}"
        )
        return BadUtteranceError(first.path, problem, first.fix, utt=first.utt)

    def _load(self, uid: str) -> Tuple[str, Dict[str, np.ndarray]]:
        if uid in self.known_bad:
            raise self.known_bad[uid]
        header_samples = self._check_before_reading(uid)
        try:
            uid, data = self.dataset[uid]
        except soundfile.SoundFileError as err:  # a damaged compressed file
            problem = f"cannot decode audio file '{self._audio_path(uid)}': {err}"
            error = self._error(uid, Problem(problem, UNREADABLE_FIX), self.wav_scp)
            raise error from err
        self._check_after_reading(uid, data, header_samples)
        return uid, data

    def _check_before_reading(self, uid: str) -> Optional[int]:
        """Label line present, audio header good; returns the header's samples."""
        if self.labels_file is not None and uid not in self._labels():
            raise self._error(
                uid, missing_label_problem(self.wav_scp), self.labels_file
            )
        path = self._audio_path(uid)
        if path is None:
            return None
        problem, info = header_problem(path, self.rules)
        if problem is not None:
            raise self._error(uid, problem, self.wav_scp)
        return info.frames

    def _check_header_and_label_count(self, uid: str) -> None:
        header_samples = self._check_before_reading(uid)
        if header_samples is not None and self.labels_file is not None:
            num_labels = len(str(self._labels()[uid]).split())
            self._check_label_count(uid, num_labels, header_samples)

    def _check_after_reading(
        self, uid: str, data: Dict[str, np.ndarray], header_samples: Optional[int]
    ) -> None:
        speech = data["speech"]
        if self.sound:
            problem = samples_problem(speech, header_samples)
        else:  # features: only the NaN/inf check applies
            sentence = nonfinite_problem(speech)
            problem = None if sentence is None else Problem(sentence, NONFINITE_FIX)
        if problem is not None:
            path = self._audio_path(uid)
            if path is not None:
                problem = Problem(f"{problem.problem} (file '{path}')", problem.fix)
            raise self._error(uid, problem, self.wav_scp)
        if self.sound and "text" in data:
            self._check_label_count(uid, len(data["text"]), len(speech))

    def _check_label_count(self, uid: str, num_labels: int, num_samples: int) -> None:
        problem = label_count_problem(num_labels, num_samples, self.rules)
        if problem is not None:
            raise self._error(uid, problem, self.labels_file)

    def _labels(self):
        return self.dataset.loader_dict["text"]

    def _audio_path(self, uid: str) -> Optional[str]:
        """The audio file of ``uid`` (None for features or multi-file entries)."""
        reader = getattr(self.dataset.loader_dict["speech"], "loader", None)
        if not self.sound or not hasattr(reader, "get_path"):
            return None
        path = reader.get_path(uid)
        return path if isinstance(path, str) else None

    def _error(self, uid: str, problem: Problem, data_file: str) -> BadUtteranceError:
        return BadUtteranceError(
            data_file, problem.problem, problem.fix + SKIP_HINT, utt=uid
        )

    def _count_skipped(self, err: BadUtteranceError) -> None:
        with self.skipped.get_lock():
            self.skipped.value += 1
            total = self.skipped.value
        logging.warning(
            f"skipped bad {self.name} utterance '{err.utt}' (--bad_utterances skip; "
            f"{self.name} skips so far: {total}): {err.path}: {err.problem}"
        )
