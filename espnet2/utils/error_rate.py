"""Word and character error counts of hypotheses against references.

Follows the counts that ESPnet's ``asr.sh`` reports in ``RESULTS.md`` through NIST
sclite (``sclite -r ref.trn trn -h hyp.trn trn -i rm -o all stdout``): ``Snt``
(utterances), ``Wrd`` (reference tokens), ``Corr``, ``Sub``, ``Del``, ``Ins``, ``Err``
(Sub + Del + Ins) and ``S.Err`` (utterances with at least one error). The tokens are
ESPnet's: words split at whitespace (``tokenize_text.py --token_type word``), and
characters with the space as a token (``--token_type char``, ``<space>``). The
alignment is a Levenshtein alignment with unit costs, written for this project; as in
sclite, the error count S + D + I of an utterance is its edit distance.
"""

import math
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, Path]
Tokenizer = Callable[[str], List[str]]
AlignedPair = Tuple[Optional[str], Optional[str]]  # (ref token, hyp token); None: gap
SPACE_TOKEN = "<space>"
GAP = "***"  # what sclite prints for the missing side of a deletion or insertion
MAX_LISTED = 5  # utterance ids named in one error message


class ScoringInputError(ValueError):
    """A reference or hypothesis file the scorer cannot use, with the fix."""


# ---------------------------------------------------------------- tokenisers
def word_tokens(text: str) -> List[str]:
    """Words: ``text`` split at runs of whitespace (ESPnet's ``--token_type word``).

    Args:
        text: One transcript.

    Returns:
        The words; empty for a blank transcript.
    """
    return text.split()


def char_tokens(text: str) -> List[str]:
    """Characters, with each run of whitespace as one ``<space>`` token.

    ESPnet's ``asr.sh`` scores CER on ``tokenize_text.py --token_type char``, which
    turns each space into ``<space>``, so the spaces between words count as tokens
    (and their errors as errors). ESPnet makes one token per space character; here a
    run of whitespace is one token, which is the same for transcripts with single
    spaces (what ESPnet's text cleaners write) and keeps a doubled space in a
    hypothesis from counting as an insertion. Leading and trailing whitespace is
    dropped.

    Args:
        text: One transcript.

    Returns:
        The characters, e.g. ``"a bc"`` -> ``["a", "<space>", "b", "c"]``.
    """
    tokens: List[str] = []
    for index, word in enumerate(text.split()):
        if index:
            tokens.append(SPACE_TOKEN)
        tokens.extend(word)
    return tokens


TOKENIZERS: Dict[str, Tokenizer] = {"word": word_tokens, "char": char_tokens}


# ---------------------------------------------------------------- alignment
@dataclass(frozen=True)
class Alignment:
    """A minimum-edit alignment of one hypothesis against its reference.

    Attributes:
        pairs: Aligned (ref, hyp) tokens in order; ``(r, None)`` is a deletion,
            ``(None, h)`` an insertion, ``(r, h)`` a match (r == h) or substitution.
        correct: Reference tokens matched.
        substitutions: Reference tokens replaced by another token.
        deletions: Reference tokens missing from the hypothesis.
        insertions: Hypothesis tokens with no reference token.
    """

    pairs: Tuple[AlignedPair, ...]
    correct: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions (the edit distance)."""
        return self.substitutions + self.deletions + self.insertions


def _distance_matrix(ref_ids: np.ndarray, hyp_ids: np.ndarray) -> np.ndarray:
    """Edit distances of all prefixes, one vectorised row per reference token.

    Row i holds the distances of ``ref[:i]`` to ``hyp[:j]`` for every j. Within a row,
    ``D[i, j] = min_k (best[k] + j - k)`` over ``k <= j`` (insertions run left to
    right), which is ``j + cummin(best - k)``.

    Args:
        ref_ids: (N,) int token ids of the reference.
        hyp_ids: (M,) int token ids of the hypothesis.

    Returns:
        (N + 1, M + 1) int distances.
    """
    num_ref, num_hyp = len(ref_ids), len(hyp_ids)
    columns = np.arange(num_hyp + 1)
    dist = np.empty((num_ref + 1, num_hyp + 1), dtype=np.int32)
    dist[0] = columns
    best = np.empty(num_hyp + 1, dtype=np.int32)
    for i in range(1, num_ref + 1):
        previous = dist[i - 1]
        best[0] = i
        np.minimum(
            previous[:-1] + (hyp_ids != ref_ids[i - 1]),  # match or substitution
            previous[1:] + 1,  # deletion
            out=best[1:],
        )
        dist[i] = np.minimum.accumulate(best - columns) + columns
    return dist


def _backtrace(
    dist: List[List[int]], ref: Sequence[str], hyp: Sequence[str]
) -> Alignment:
    """Walk from ``dist``'s last cell to its first, preferring the diagonal, then a
    deletion, then an insertion; pairs are listed in walking order."""
    i, j = len(ref), len(hyp)
    pairs: List[AlignedPair] = []
    counts = {"C": 0, "S": 0, "D": 0, "I": 0}
    while i or j:
        here = dist[i][j]
        if i and j and here == dist[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            counts["C" if ref[i - 1] == hyp[j - 1] else "S"] += 1
            i, j = i - 1, j - 1
            pairs.append((ref[i], hyp[j]))
        elif i and here == dist[i - 1][j] + 1:
            counts["D"] += 1
            i -= 1
            pairs.append((ref[i], None))
        else:
            counts["I"] += 1
            j -= 1
            pairs.append((None, hyp[j]))
    return Alignment(tuple(pairs), counts["C"], counts["S"], counts["D"], counts["I"])


def align(ref: Sequence[str], hyp: Sequence[str]) -> Alignment:
    """Align two token sequences with unit costs (Levenshtein).

    Among the alignments of minimum cost, the one chosen is fixed: reading from the
    start, a match or substitution is preferred, then a deletion, then an insertion
    (so ``"GOOD"`` against ``"GOOD DAY"`` matches ``GOOD`` and inserts ``DAY``).
    Time and memory are O(N * M).

    Args:
        ref: (N,) reference tokens.
        hyp: (M,) hypothesis tokens.

    Returns:
        The alignment with its counts; correct + substitutions + deletions = N and
        correct + substitutions + insertions = M.
    """
    # The distances of the reversed sequences, walked back from their end, visit the
    # original tokens from the start.
    ref_reversed, hyp_reversed = list(reversed(ref)), list(reversed(hyp))
    vocabulary: Dict[str, int] = {}
    ref_ids = [vocabulary.setdefault(t, len(vocabulary)) for t in ref_reversed]
    hyp_ids = [vocabulary.setdefault(t, len(vocabulary)) for t in hyp_reversed]
    dist = _distance_matrix(
        np.array(ref_ids, dtype=np.int32), np.array(hyp_ids, dtype=np.int32)
    )
    return _backtrace(dist.tolist(), ref_reversed, hyp_reversed)


# ---------------------------------------------------------------- aggregates
def percent(count: int, total: int) -> float:
    """``100 * count / total``; with ``total == 0``: 0.0 if count is 0, else inf."""
    if total == 0:
        return 0.0 if count == 0 else math.inf
    return 100.0 * count / total


@dataclass(frozen=True)
class ErrorCounts:
    """sclite-style counts over utterances; ``a + b`` merges two sets of counts.

    Attributes:
        num_utts: Utterances scored (sclite's ``Snt``).
        num_ref_tokens: Reference tokens (``Wrd``; characters for CER).
        correct: Matched reference tokens (``Corr``).
        substitutions: ``Sub``.
        deletions: ``Del``.
        insertions: ``Ins``.
        sentence_errors: Utterances with at least one error (``S.Err``).
    """

    num_utts: int = 0
    num_ref_tokens: int = 0
    correct: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    sentence_errors: int = 0

    @classmethod
    def from_alignment(cls, alignment: Alignment) -> "ErrorCounts":
        """The counts of one utterance."""
        return cls(
            num_utts=1,
            num_ref_tokens=len(alignment.pairs) - alignment.insertions,
            correct=alignment.correct,
            substitutions=alignment.substitutions,
            deletions=alignment.deletions,
            insertions=alignment.insertions,
            sentence_errors=int(alignment.errors > 0),
        )

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "ErrorCounts":
        """The counts of :meth:`to_dict`'s output (its rates are ignored).

        Raises:
            KeyError: A count is missing.
            ValueError: A count is not an integer.
        """
        return cls(**{f.name: int(values[f.name]) for f in fields(cls)})

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        values = [getattr(self, f.name) + getattr(other, f.name) for f in fields(self)]
        return ErrorCounts(*values)

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions (sclite's ``Err``)."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def error_rate(self) -> float:
        """Errors in percent of the reference tokens (WER or CER; can exceed 100).

        With no reference tokens the rate is 0.0 when there is no error (an empty
        hypothesis) and ``math.inf`` otherwise: any insertion into an empty
        reference is infinitely many per reference token.
        """
        return percent(self.errors, self.num_ref_tokens)

    @property
    def sentence_error_rate(self) -> float:
        """Utterances with an error in percent of all (0.0 with no utterance)."""
        return percent(self.sentence_errors, self.num_utts)

    def to_dict(self) -> Dict[str, Union[int, Optional[float]]]:
        """The counts, ``error_rate`` and ``sentence_error_rate`` (None for inf)."""
        result: Dict[str, Union[int, Optional[float]]] = {
            f.name: getattr(self, f.name) for f in fields(self)
        }
        for name in ("error_rate", "sentence_error_rate"):
            value = getattr(self, name)
            result[name] = value if math.isfinite(value) else None
        return result


# ---------------------------------------------------------------- text files
def _decode(path: PathLike) -> str:
    """The file's text, or a :class:`ScoringInputError` saying why it is unusable."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ScoringInputError(
            f"{path}: cannot read the file ({err.strerror or err}). Fix: give the "
            "path of an existing Kaldi-style text file ('utt_id transcript' lines)."
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data.count(b"\n", 0, err.start) + 1
        raise ScoringInputError(
            f"{path}:{line_no}: the line is not valid UTF-8 ({err.reason}). "
            "Fix: re-encode the file as UTF-8 (e.g. with iconv)."
        ) from None


def read_transcripts(path: PathLike) -> Dict[str, str]:
    """Read a Kaldi-style text file: ``utt_id transcript`` per line.

    The transcript may be empty (``utt_id`` alone). Order is kept; no sorting is
    required.

    Args:
        path: The file (UTF-8).

    Returns:
        Utterance id -> transcript (stripped), in file order.

    Raises:
        ScoringInputError: The file is missing or unreadable, not UTF-8, has a blank
            line, or repeats an utterance id.
    """
    transcripts: Dict[str, str] = {}
    first_line: Dict[str, int] = {}
    for line_no, line in enumerate(_decode(path).splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            raise ScoringInputError(
                f"{path}:{line_no}: blank line (expected 'utt_id transcript'). "
                f"Fix: delete it, e.g. `sed -i '/^\\s*$/d' {path}`."
            )
        utt = parts[0]
        if utt in transcripts:
            raise ScoringInputError(
                f"{path}:{line_no}: utterance '{utt}' appears again (first on line "
                f"{first_line[utt]}). Fix: keep one line per utterance."
            )
        transcripts[utt] = parts[1] if len(parts) > 1 else ""
        first_line[utt] = line_no
    return transcripts


def _listed(ids: Sequence[str]) -> str:
    """``'a', 'b', ... (N in all)`` naming at most ``MAX_LISTED`` ids."""
    named = ", ".join(f"'{utt}'" for utt in ids[:MAX_LISTED])
    more = ", ..." if len(ids) > MAX_LISTED else ""
    return f"{named}{more} ({len(ids)} in all)"


def check_same_utterances(
    ref: Dict[str, str], hyp: Dict[str, str], ref_path: PathLike, hyp_path: PathLike
) -> None:
    """Raise unless the hypothesis has exactly the reference's utterances.

    Raises:
        ScoringInputError: Naming the first utterances missing from ``hyp_path`` or
            not in ``ref_path``, how many, and the fix.
    """
    missing = [utt for utt in ref if utt not in hyp]
    if missing:
        raise ScoringInputError(
            f"{hyp_path}: no hypothesis for utterance {_listed(missing)} of "
            f"{ref_path}. Fix: decode every utterance of the test set (an empty "
            "hypothesis is a line with the utterance id alone)."
        )
    extra = [utt for utt in hyp if utt not in ref]
    if extra:
        raise ScoringInputError(
            f"{hyp_path}: utterance {_listed(extra)} not in the reference "
            f"{ref_path}. Fix: score against the text of the set that was decoded."
        )


@dataclass(frozen=True)
class ScoredSet:
    """The scores of one test set in one unit.

    Attributes:
        utterances: (utt_id, alignment) in reference order.
        totals: The counts summed over the utterances.
    """

    utterances: Tuple[Tuple[str, Alignment], ...]
    totals: ErrorCounts


def score_transcripts(
    ref: Dict[str, str], hyp: Dict[str, str], unit: str = "word"
) -> ScoredSet:
    """Align every reference utterance with its hypothesis.

    Args:
        ref: Utterance id -> reference transcript.
        hyp: Utterance id -> hypothesis; must hold every id of ``ref``.
        unit: ``"word"`` (WER) or ``"char"`` (CER).

    Returns:
        Per-utterance alignments in ``ref`` order and their totals.
    """
    tokenize = TOKENIZERS[unit]
    utterances = []
    totals = ErrorCounts()
    for utt, ref_text in ref.items():
        alignment = align(tokenize(ref_text), tokenize(hyp[utt]))
        utterances.append((utt, alignment))
        totals = totals + ErrorCounts.from_alignment(alignment)
    return ScoredSet(tuple(utterances), totals)


def score_text_files(
    ref_path: PathLike, hyp_path: PathLike, unit: str = "word"
) -> ScoredSet:
    """Score a hypothesis text file against a reference text file.

    Args:
        ref_path: Kaldi-style reference ``text`` (``utt_id transcript``).
        hyp_path: The hypotheses in the same format, with the same utterances.
        unit: ``"word"`` (WER) or ``"char"`` (CER).

    Returns:
        Per-utterance alignments in reference order and their totals.

    Raises:
        ScoringInputError: A file is unreadable or malformed, or the two files do
            not hold the same utterances.
    """
    ref, hyp = read_transcripts(ref_path), read_transcripts(hyp_path)
    check_same_utterances(ref, hyp, ref_path, hyp_path)
    return score_transcripts(ref, hyp, unit)


# ---------------------------------------------------------------- printing
def _width(token: str) -> int:
    """Columns a token takes in a terminal (East Asian wide characters take 2)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in token)


def _pad(token: str, width: int) -> str:
    return token + " " * (width - _width(token))


def format_alignment(utt: str, alignment: Alignment) -> str:
    """sclite-like lines for one utterance: id, counts, REF, HYP and Eval.

    Gaps print as ``***``; the ``Eval`` line marks each error with ``S``, ``D`` or
    ``I`` under its column.

    Args:
        utt: The utterance id.
        alignment: Its alignment.

    Returns:
        Five lines ending in ``\\n``.
    """
    columns: Dict[str, List[str]] = {"REF": [], "HYP": [], "Eval": []}
    for ref, hyp in alignment.pairs:
        mark = "I" if ref is None else "D" if hyp is None else "S" if ref != hyp else ""
        ref, hyp = GAP if ref is None else ref, GAP if hyp is None else hyp
        width = max(_width(ref), _width(hyp))
        for key, token in (("REF", ref), ("HYP", hyp), ("Eval", mark)):
            columns[key].append(_pad(token, width))
    a = alignment
    lines = [
        f"id: {utt}",
        f"Scores: (#C #S #D #I) {a.correct} {a.substitutions} {a.deletions} "
        f"{a.insertions}",
        *(
            f"{key + ':':<6}{' '.join(cells)}".rstrip()
            for key, cells in columns.items()
        ),
    ]
    return "\n".join(lines) + "\n"
