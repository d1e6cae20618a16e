"""ESPnet's phoneme tokenizers, with ``g2p_en`` imported when it is first used.

Replaces ``espnet2/text/phoneme_tokenizer.py`` of ESPnet 202511 (PyPI
``espnet==202511``; CONTRIBUTING.md lists it). ESPnet's file imports ``g2p_en`` at
module top, and ``g2p_en/g2p.py`` calls ``nltk.download`` at import when the nltk data
(``averaged_perceptron_tagger_eng``, ``cmudict``) are missing. Every ESPnet task imports
this module (``g2p_choices``), and so does ``espnet2/text/build_tokenizer.py``
(``PhonemeTokenizer``): each training, inference or dumping process tried to reach
raw.githubusercontent.com on start-up (a refused connection in the log, or a hang on an
offline node) and spent about 0.5 s importing nltk.

Here ``G2p_en`` imports ``g2p_en`` the first time it converts a text (ESPnet already
built ``g2p_en.G2p()`` at that point). Everything else is ESPnet's: the names, the
``g2p_choices`` list and its order, the options and defaults of every class, and what
each ``g2p_type`` returns. The ``elif`` chain over ``g2p_type`` became a table
(``_G2P_BUILDERS``); the espeak-ng languages are data (``_ESPEAK_NG_LANGUAGES``).
Quirks kept on purpose: ``espeak_ng_ukrainian`` is listed in ``g2p_choices`` but raises
``NotImplementedError`` (ESPnet builds no g2p for it), ``g2p_is_north`` is built but not
listed, and ``G2pk``'s argument keeps ESPnet's spelling ``descritive``.
"""

import logging
import re
import warnings
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Union

import jamo
from packaging.version import parse as V
from typeguard import typechecked

from espnet2.text.abs_tokenizer import AbsTokenizer

g2p_choices = [
    None,
    "g2p_en",
    "g2p_en_no_space",
    "pyopenjtalk",
    "pyopenjtalk_kana",
    "pyopenjtalk_accent",
    "pyopenjtalk_accent_with_pause",
    "pyopenjtalk_prosody",
    "pypinyin_g2p",
    "pypinyin_g2p_phone",
    "pypinyin_g2p_phone_without_prosody",
    "espeak_ng_arabic",
    "espeak_ng_german",
    "espeak_ng_french",
    "espeak_ng_spanish",
    "espeak_ng_russian",
    "espeak_ng_greek",
    "espeak_ng_finnish",
    "espeak_ng_hungarian",
    "espeak_ng_dutch",
    "espeak_ng_english_us_vits",
    "espeak_ng_hindi",
    "espeak_ng_italian",
    "espeak_ng_ukrainian",
    "espeak_ng_polish",
    "g2pk",
    "g2pk_no_space",
    "g2pk_explicit_space",
    "korean_jaso",
    "korean_jaso_no_space",
    "g2p_is",
]

# One full-context label: phoneme (p3), accent field /A: and the F field's last number.
_ACCENT_LABEL = re.compile(r"\-(.*?)\+.*?\/A:([0-9\-]+).*?\/F:.*?_([0-9]+)")
_MISSING_FEATURE = -50  # value of a full-context feature that a label lacks


def split_by_space(text) -> List[str]:
    """Splits ``text`` at single spaces; three spaces in a row stand for a space.

    Args:
        text (str): Tokens separated by " "; "   " encodes a " " token.

    Returns:
        List[str]: The tokens (a three-space run gives a " " token).
    """
    if "   " not in text:
        return text.split(" ")
    marked = text.replace("   ", " <space> ")
    return [token.replace("<space>", " ") for token in marked.split(" ")]


def pyopenjtalk_g2p(text) -> List[str]:
    """Japanese phonemes of ``text`` from ``pyopenjtalk.g2p`` (imported here)."""
    import pyopenjtalk

    return pyopenjtalk.g2p(text, kana=False).split(" ")


def pyopenjtalk_g2p_kana(text) -> List[str]:
    """Katakana characters of ``text`` from ``pyopenjtalk.g2p(kana=True)``."""
    import pyopenjtalk

    return list(pyopenjtalk.g2p(text, kana=True))


def _extract_fullcontext_label(text):
    """HTS full-context labels of ``text`` (pyopenjtalk's API before/after 0.3.0)."""
    import pyopenjtalk

    if V(pyopenjtalk.__version__) >= V("0.3.0"):
        return pyopenjtalk.make_label(pyopenjtalk.run_frontend(text))
    return pyopenjtalk.run_frontend(text)[1]


def _accent_phones(text, with_pause: bool) -> List[str]:
    """Phoneme, F-field number and accent of each label; "pau" for pauses if asked."""
    phones = []
    for label in _extract_fullcontext_label(text):
        if with_pause and label.split("-")[1].split("+")[0] == "pau":
            phones.append("pau")
            continue
        found = _ACCENT_LABEL.findall(label)
        if len(found) == 1:
            phoneme, accent, f_number = found[0]
            phones += [phoneme, f_number, accent]
    return phones


def pyopenjtalk_g2p_accent(text) -> List[str]:
    """Japanese phonemes, each followed by its two accent numbers (pauses dropped).

    Args:
        text (str): Japanese text.

    Returns:
        List[str]: ``[phoneme, F-field number, A-field accent, phoneme, ...]``.
    """
    return _accent_phones(text, with_pause=False)


def pyopenjtalk_g2p_accent_with_pause(text) -> List[str]:
    """As ``pyopenjtalk_g2p_accent``, with a "pau" token for each pause label."""
    return _accent_phones(text, with_pause=True)


def _numeric_feature_by_regex(regex, s):
    """The integer that ``regex``'s group 1 finds in label ``s``, else -50."""
    match = re.search(regex, s)
    if match is None:
        return _MISSING_FEATURE
    return int(match.group(1))


def _silence_marks(index: int, num_labels: int, label: str) -> List[str]:
    """Marks of a silence: "^" first; "$" (statement) or "?" (question) last."""
    assert index == 0 or index == num_labels - 1
    if index == 0:
        return ["^"]
    if index == num_labels - 1:
        question = _numeric_feature_by_regex(r"!(\d+)_", label)
        return {0: ["$"], 1: ["?"]}.get(question, [])
    return []


def _prosody_marks(phoneme: str, label: str, next_label: str) -> List[str]:
    """Mark after a phone: "#" (phrase border), "]" (pitch fall) or "[" (rise)."""
    accent = _numeric_feature_by_regex(r"/A:([0-9\-]+)\+", label)  # a1
    position = _numeric_feature_by_regex(r"\+(\d+)\+", label)  # a2
    position_back = _numeric_feature_by_regex(r"\+(\d+)/", label)  # a3
    num_morae = _numeric_feature_by_regex(r"/F:(\d+)_", label)  # f1
    next_position = _numeric_feature_by_regex(r"\+(\d+)\+", next_label)
    if position_back == 1 and next_position == 1 and phoneme in "aeiouAEIOUNcl":
        return ["#"]
    if accent == 0 and next_position == position + 1 and position != num_morae:
        return ["]"]
    if position == 1 and next_position == 2:
        return ["["]
    return []


def pyopenjtalk_g2p_prosody(text: str, drop_unvoiced_vowels: bool = True) -> List[str]:
    """Extract phoneme + prosody symbol sequence from input full-context labels.

    The algorithm follows `Prosodic features control by symbols as input of
    sequence-to-sequence acoustic modeling for neural TTS`
    (https://doi.org/10.1587/transinf.2020EDP7104) with r9y9's tweaks, as ESPnet's.

    Args:
        text (str): Input text.
        drop_unvoiced_vowels (bool): whether to write unvoiced vowels (A, E, I, O, U)
            as their voiced ones.

    Returns:
        List[str]: Phonemes with "^" (start), "$"/"?" (end), "_" (pause), "#"
        (accent phrase border), "[" (pitch rise) and "]" (pitch fall).

    Examples:
        >>> from espnet2.text.phoneme_tokenizer import pyopenjtalk_g2p_prosody
        >>> pyopenjtalk_g2p_prosody("こんにちは。")
        ['^', 'k', 'o', '[', 'N', 'n', 'i', 'ch', 'i', 'w', 'a', '$']
    """
    labels = _extract_fullcontext_label(text)
    phones = []
    for index, label in enumerate(labels):
        phoneme = re.search(r"\-(.*?)\+", label).group(1)
        if drop_unvoiced_vowels and phoneme in "AEIOU":
            phoneme = phoneme.lower()
        if phoneme == "sil":
            phones += _silence_marks(index, len(labels), label)
        elif phoneme == "pau":
            phones.append("_")
        else:
            phones.append(phoneme)
            phones += _prosody_marks(phoneme, label, labels[index + 1])
    return phones


def pypinyin_g2p(text) -> List[str]:
    """Pinyin syllables of Chinese ``text`` with tone numbers (``Style.TONE3``)."""
    from pypinyin import Style, pinyin

    return [syllable[0] for syllable in pinyin(text, style=Style.TONE3)]


def _initial_and_final(syllable: str) -> List[str]:
    """Strict initial and final of a TONE3 syllable, the tone number on the final."""
    from pypinyin.style._utils import get_finals, get_initials

    initial = get_initials(syllable, strict=True)
    if syllable[-1].isdigit():
        final = get_finals(syllable[:-1], strict=True) + syllable[-1]
    elif syllable[-1].isalnum():
        final = get_finals(syllable, strict=True)
    else:
        final = syllable  # punctuation and other non-pinyin text stay whole
    return [initial, final]


def pypinyin_g2p_phone(text) -> List[str]:
    """Initials and tonal finals of Chinese ``text``; empty parts and lone tones go."""
    from pypinyin import Style, pinyin

    return [
        part
        for syllable in pinyin(text, style=Style.TONE3)
        for part in _initial_and_final(syllable[0])
        if len(part) != 0 and not part.isdigit()
    ]


# Finals written with "v" (for "ü") after the initials x, y, j and q.
_UMLAUT_FINALS = {"un": "vn", "uan": "van", "u": "v"}


def pypinyin_g2p_phone_without_prosody(text) -> List[str]:
    """Toneless "initial_final" units of Chinese ``text`` ("ü" written as "v").

    Args:
        text (str): Chinese text.

    Returns:
        List[str]: ``"<initial>_<final>"`` per syllable, or the final alone when the
        syllable has no initial.
    """
    from pypinyin import Style, pinyin
    from pypinyin.style._utils import get_finals, get_initials

    phones = []
    for syllable in pinyin(text, style=Style.NORMAL, strict=False):
        initial = get_initials(syllable[0], strict=False)
        final = get_finals(syllable[0], strict=False)
        if len(initial) == 0:
            phones.append(final)
            continue
        if initial in ["x", "y", "j", "q"]:
            final = _UMLAUT_FINALS.get(final, final)
        if final == "ue":
            final = "ve"
        phones.append(initial + "_" + final)
    return phones


class G2p_en:
    """On behalf of ``g2p_en.G2p``, which is built (and imported) on the first call.

    ``g2p_en.G2p`` cannot be pickled, so it cannot be copied to other processes by
    ``multiprocessing``; this wrapper can until it is first called. Importing
    ``g2p_en`` runs ``nltk.download`` when the nltk data are missing, so it happens
    here, not when this module is imported.

    Args:
        no_space (bool): Drop the " " tokens that separate words.
    """

    def __init__(self, no_space: bool = False):
        self.no_space = no_space
        self.g2p = None

    def __call__(self, text) -> List[str]:
        if self.g2p is None:
            import g2p_en  # first use only: its import may try nltk.download

            self.g2p = g2p_en.G2p()
        phones = self.g2p(text)
        if self.no_space:
            phones = [phone for phone in phones if phone != " "]
        return phones


class G2pk:
    """On behalf of ``g2pk.G2p`` (Korean), which is built on the first call.

    ``g2pk.G2p`` cannot be pickled; this wrapper can until it is first called.

    Args:
        descritive (bool): ``descriptive`` of ``g2pk.G2p`` (ESPnet's spelling).
        group_vowels (bool): ``group_vowels`` of ``g2pk.G2p``.
        to_syl (bool): ``to_syl`` of ``g2pk.G2p``.
        no_space (bool): Drop the " " tokens.
        explicit_space (bool): Write " " tokens as ``space_symbol``.
        space_symbol (str): The token for a space when ``explicit_space``.
    """

    def __init__(
        self,
        descritive=False,
        group_vowels=False,
        to_syl=False,
        no_space=False,
        explicit_space=False,
        space_symbol="<space>",
    ):
        self.descritive = descritive
        self.group_vowels = group_vowels
        self.to_syl = to_syl
        self.no_space = no_space
        self.explicit_space = explicit_space
        self.space_symbol = space_symbol
        self.g2p = None

    def __call__(self, text) -> List[str]:
        if self.g2p is None:
            import g2pk

            self.g2p = g2pk.G2p()
        converted = self.g2p(
            text,
            descriptive=self.descritive,
            group_vowels=self.group_vowels,
            to_syl=self.to_syl,
        )
        phones = list(converted)
        if self.no_space:
            phones = [phone for phone in phones if phone != " "]
        if self.explicit_space:
            phones = [self.space_symbol if p == " " else p for p in phones]
        return phones


class Jaso:
    """Korean text as jamo (Hangul letters); other characters are dropped.

    Keeps the jamo leads, vowels and tails, the punctuation ``!'(),-.:;?`` and spaces.

    Args:
        space_symbol (str): The token written for a space.
        no_space (bool): Drop spaces instead.
    """

    PUNC = "!'(),-.:;?"
    SPACE = " "

    JAMO_LEADS = "".join(chr(code) for code in range(0x1100, 0x1113))
    JAMO_VOWELS = "".join(chr(code) for code in range(0x1161, 0x1176))
    JAMO_TAILS = "".join(chr(code) for code in range(0x11A8, 0x11C3))

    VALID_CHARS = JAMO_LEADS + JAMO_VOWELS + JAMO_TAILS + PUNC + SPACE

    def __init__(self, space_symbol=" ", no_space=False):
        self.space_symbol = space_symbol
        self.no_space = no_space

    def _text_to_jaso(self, line: str) -> List[str]:
        return list(jamo.hangul_to_jamo(line))

    def _remove_non_korean_characters(self, tokens):
        return [token for token in tokens if token in self.VALID_CHARS]

    def __call__(self, text) -> List[str]:
        graphemes = self._remove_non_korean_characters(self._text_to_jaso(text))
        if self.no_space:
            return [g for g in graphemes if g != " "]
        return [self.space_symbol if g == " " else g for g in graphemes]


class Phonemizer:
    """Phonemizer module for various languages.

    A wrapper of https://github.com/bootphon/phonemizer (imported when built); its
    options are listed in phonemizer's ``phonemizer/phonemize.py``.

    Args:
        backend (str): Key of ``phonemizer.backend.BACKENDS`` ("espeak", ...).
        word_separator (Optional[str]): Written between words.
        syllable_separator (Optional[str]): Written between syllables.
        phone_separator (Optional[str]): Written between phones.
        strip (bool): Drop the separator after the last phone of a word.
        split_by_single_token (bool): Return single characters (spaces as
            "<space>") instead of the whitespace-separated phones.
        **phonemizer_kwargs: Passed to the backend (``language``, ``with_stress``...).
    """

    def __init__(
        self,
        backend,
        word_separator: Optional[str] = None,
        syllable_separator: Optional[str] = None,
        phone_separator: Optional[str] = " ",
        strip=False,
        split_by_single_token: bool = False,
        **phonemizer_kwargs,
    ):
        from phonemizer.backend import BACKENDS
        from phonemizer.separator import Separator

        self.separator = Separator(
            word=word_separator,
            syllable=syllable_separator,
            phone=phone_separator,
        )
        logger = logging.getLogger("phonemizer")
        logger.setLevel(logging.ERROR)  # phonemizer's warnings are noise here
        self.phonemizer = BACKENDS[backend](**phonemizer_kwargs, logger=logger)
        self.strip = strip
        self.split_by_single_token = split_by_single_token

    def __call__(self, text) -> List[str]:
        phonemized = self.phonemizer.phonemize(
            [text], separator=self.separator, strip=self.strip, njobs=1
        )[0]
        if not self.split_by_single_token:
            return phonemized.split()
        # "a: ab" -> ["a", ":", "<space>", "a", "b"]
        return [char.replace(" ", "<space>") for char in phonemized]


class IsG2p:  # pylint: disable=too-few-public-methods
    """Icelandic g2p: a minimal wrapper of https://github.com/grammatek/ice-g2p.

    ice-g2p uses a Bi-LSTM model and a pronunciation dictionary; it does not
    phonemize in several threads.

    Args:
        dialect (str): Stored only (ESPnet does not pass it on).
        syllabify (bool): Stored only.
        word_sep (str): Word separator of the transcriber.
        use_dict (bool): Look words up in the pronunciation dictionary.
    """

    def __init__(
        self,
        dialect: str = "standard",
        syllabify: bool = True,
        word_sep: str = ",",
        use_dict: bool = True,
    ):
        self.dialect = dialect
        self.syllabify = syllabify
        self.use_dict = use_dict
        from ice_g2p.transcriber import Transcriber

        self.transcriber = Transcriber(
            use_dict=self.use_dict,
            syllab_symbol=".",
            stress_label=True,
            word_sep=word_sep,
            lang_detect=True,
        )

    def __call__(self, text) -> List[str]:
        return self.transcriber.transcribe(text).split()


# espeak-ng g2p types built as Phonemizer(language=..., backend="espeak",
# with_stress=True, preserve_punctuation=True). espeak_ng_ukrainian is missing as in
# ESPnet 202511 (listed in g2p_choices, but raises NotImplementedError).
_ESPEAK_NG_LANGUAGES = {
    "espeak_ng_arabic": "ar",
    "espeak_ng_german": "de",
    "espeak_ng_french": "fr-fr",
    "espeak_ng_spanish": "es",
    "espeak_ng_russian": "ru",
    "espeak_ng_greek": "el",
    "espeak_ng_finnish": "fi",
    "espeak_ng_hungarian": "hu",
    "espeak_ng_dutch": "nl",
    "espeak_ng_hindi": "hi",
    "espeak_ng_italian": "it",
    "espeak_ng_polish": "pl",
}
# VITS official implementation-like processing (https://github.com/jaywalnut310/vits).
_ESPEAK_NG_VITS_OPTIONS = dict(
    strip=True, word_separator=" ", phone_separator="", split_by_single_token=True
)

_G2pBuilder = Callable[[str], Callable[[str], List[str]]]  # space_symbol -> g2p


def _espeak_ng(language: str, **options) -> _G2pBuilder:
    """A builder of the espeak-ng ``Phonemizer`` for ``language``."""
    return lambda space_symbol: Phonemizer(
        language=language,
        backend="espeak",
        with_stress=True,
        preserve_punctuation=True,
        **options,
    )


def _function(g2p: Callable[[str], List[str]]) -> _G2pBuilder:
    """A builder that returns the module-level function ``g2p`` itself."""
    return lambda space_symbol: g2p


_G2P_BUILDERS: Dict[Optional[str], _G2pBuilder] = {
    None: _function(split_by_space),
    "g2p_en": lambda space_symbol: G2p_en(no_space=False),
    "g2p_en_no_space": lambda space_symbol: G2p_en(no_space=True),
    "pyopenjtalk": _function(pyopenjtalk_g2p),
    "pyopenjtalk_kana": _function(pyopenjtalk_g2p_kana),
    "pyopenjtalk_accent": _function(pyopenjtalk_g2p_accent),
    "pyopenjtalk_accent_with_pause": _function(pyopenjtalk_g2p_accent_with_pause),
    "pyopenjtalk_prosody": _function(pyopenjtalk_g2p_prosody),
    "pypinyin_g2p": _function(pypinyin_g2p),
    "pypinyin_g2p_phone": _function(pypinyin_g2p_phone),
    "pypinyin_g2p_phone_without_prosody": _function(pypinyin_g2p_phone_without_prosody),
    **{name: _espeak_ng(lang) for name, lang in _ESPEAK_NG_LANGUAGES.items()},
    "espeak_ng_english_us_vits": _espeak_ng("en-us", **_ESPEAK_NG_VITS_OPTIONS),
    "g2pk": lambda space_symbol: G2pk(no_space=False),
    "g2pk_no_space": lambda space_symbol: G2pk(no_space=True),
    "g2pk_explicit_space": lambda space_symbol: G2pk(
        explicit_space=True, space_symbol=space_symbol
    ),
    "korean_jaso": lambda space_symbol: Jaso(space_symbol=space_symbol, no_space=False),
    "korean_jaso_no_space": lambda space_symbol: Jaso(no_space=True),
    "g2p_is": lambda space_symbol: IsG2p(),
    "g2p_is_north": lambda space_symbol: IsG2p(dialect="north"),
}

# Syllables whose phones text2tokens_svs takes from this table, not from the g2p.
_SVS_SYLLABLE_PHONES = {
    "へ": ["h", "e"],
    "は": ["h", "a"],
    "シ": ["sh", "I"],
    "ヴぁ": ["v", "a"],
    "ヴぃ": ["v", "i"],
    "ヴぇ": ["v", "e"],
    "ヴぉ": ["v", "o"],
    "でぇ": ["dy", "e"],
    "くぁ": ["k", "w", "a"],
    "くぃ": ["k", "w", "i"],
    "くぅ": ["k", "w", "u"],
    "くぇ": ["k", "w", "e"],
    "くぉ": ["k", "w", "o"],
    "ぐぁ": ["g", "w", "a"],
    "ぐぃ": ["g", "w", "i"],
    "ぐぅ": ["g", "w", "u"],
    "ぐぇ": ["g", "w", "e"],
    "ぐぉ": ["g", "w", "o"],
    "くぉっ": ["k", "w", "o", "cl"],
}


def _read_non_linguistic_symbols(
    symbols: Union[None, Path, str, Iterable[str]],
) -> set:
    """The symbol set: a file of one per line (warns if missing), or the iterable."""
    if symbols is None:
        return set()
    if not isinstance(symbols, (Path, str)):
        return set(symbols)
    path = Path(symbols)
    try:
        with path.open("r", encoding="utf-8") as f:
            return set(line.rstrip() for line in f)
    except FileNotFoundError:
        warnings.warn(f"{path} doesn't exist.")
        return set()


class PhonemeTokenizer(AbsTokenizer):
    """Text to phonemes (or other g2p units) by the g2p that ``g2p_type`` names.

    Args:
        g2p_type (Union[None, str]): One of ``g2p_choices`` (or "g2p_is_north");
            None splits at spaces. Others raise ``NotImplementedError``.
        non_linguistic_symbols (Union[None, Path, str, Iterable[str]]): Symbols
            such as "<noise>": a file with one per line, or the symbols.
        space_symbol (str): The token for a space (``korean_jaso``,
            ``g2pk_explicit_space``).
        remove_non_linguistic_symbols (bool): Drop the symbols from the text before
            the g2p runs (else they reach the g2p as they are).
    """

    @typechecked
    def __init__(
        self,
        g2p_type: Union[None, str],
        non_linguistic_symbols: Union[None, Path, str, Iterable[str]] = None,
        space_symbol: str = "<space>",
        remove_non_linguistic_symbols: bool = False,
    ):
        if g2p_type not in _G2P_BUILDERS:
            raise NotImplementedError(f"Not supported: g2p_type={g2p_type}")
        self.g2p = _G2P_BUILDERS[g2p_type](space_symbol)
        self.g2p_type = g2p_type
        self.space_symbol = space_symbol
        self.non_linguistic_symbols = _read_non_linguistic_symbols(
            non_linguistic_symbols
        )
        self.remove_non_linguistic_symbols = remove_non_linguistic_symbols

    def __repr__(self):
        return (
            f"{self.__class__.__name__}("
            f'g2p_type="{self.g2p_type}", '
            f'space_symbol="{self.space_symbol}", '
            f'non_linguistic_symbols="{self.non_linguistic_symbols}"'
            ")"
        )

    def _filter_non_linguistic_symbols(self, line: str) -> str:
        """``line`` with the symbols removed if asked, scanned from the left.

        At each position the first symbol (in set order) that starts there is taken
        whole; else one character is. As in ESPnet, an empty symbol in the set (a
        blank line in the file) matches without advancing and the loop never ends.
        """
        kept = []
        start = 0
        while start < len(line):
            for symbol in self.non_linguistic_symbols:
                if line.startswith(symbol, start):
                    if not self.remove_non_linguistic_symbols:
                        kept.append(symbol)
                    start += len(symbol)
                    break
            else:
                kept.append(line[start])
                start += 1
        return "".join(kept)

    def text2tokens(self, line: str) -> List[str]:
        """The g2p tokens of ``line`` (non-linguistic symbols removed if asked).

        Args:
            line (str): One text.

        Returns:
            List[str]: The g2p's tokens.
        """
        return self.g2p(self._filter_non_linguistic_symbols(line))

    def tokens2text(self, tokens: Iterable[str]) -> str:
        """The tokens concatenated (phonemes are not invertible to text).

        Args:
            tokens (Iterable[str]): Tokens.

        Returns:
            str: Their concatenation.
        """
        return "".join(tokens)

    def text2tokens_svs(self, syllable: str) -> List[str]:
        """Phones of one syllable for singing synthesis, with ESPnet's fixed table.

        Args:
            syllable (str): One syllable (kana).

        Returns:
            List[str]: The table's phones for the syllables it lists, else the g2p's
            (the g2p runs in both cases, as in ESPnet).
        """
        tokens = self.g2p(syllable)
        if syllable in _SVS_SYLLABLE_PHONES:
            tokens = list(_SVS_SYLLABLE_PHONES[syllable])
        return tokens
