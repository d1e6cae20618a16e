"""Our espnet2/text/phoneme_tokenizer.py behaves as ESPnet 202511's own file.

ESPnet's file is loaded by path under another module name. Its top-level
``import g2p_en`` would try ``nltk.download`` (no nltk data here), so a stand-in
``g2p_en`` sits in ``sys.modules`` while it loads and while the tests run (pytest's
``MonkeyPatch`` restores it). Backends that are installed (``jamo``, ``pypinyin``) run
for real; the others (pyopenjtalk, phonemizer, g2pk, ice-g2p and g2p_en, whose data
are missing) are replaced in ``sys.modules`` by recording stand-ins, so that every
``g2p_type`` is compared: both files must call the backends identically and treat
their answers identically.
"""

import importlib.util
import inspect
import pickle
import random
import sys
import types
from importlib import metadata
from pathlib import Path
from typing import Dict, List

import pytest

from espnet2.text import phoneme_tokenizer as ours

REPO_ROOT = Path(__file__).resolve().parents[3]
ESPNET_FILE = Path(
    metadata.distribution("espnet").locate_file("espnet2/text/phoneme_tokenizer.py")
)
ESPNET_NAME = "espnet_202511_phoneme_tokenizer"  # ESPnet's file, loaded by path

TEXTS = [
    "hello world",
    "hello   world  <noise> again",
    "<noise>hi[laughter] there<noise>",
    "안녕하세요, 세계! <noise> 반가워요.",
    "你好，世界。<noise>我们 去 学校",
    "绿色 女 略 学 月 云 远 jun qun xue",
    "",
    "   ",
    "a<nois<noise>b",
]
SYMBOLS = ["<noise>", "[laughter]", "<nois"]
INSTALLED = {
    name
    for name in ["pyopenjtalk", "phonemizer", "g2pk", "ice_g2p"]
    if importlib.util.find_spec(name) is not None
}
REAL_BACKEND_TYPES = [
    None,
    "korean_jaso",
    "korean_jaso_no_space",
    "pypinyin_g2p",
    "pypinyin_g2p_phone",
    "pypinyin_g2p_phone_without_prosody",
]
if "pyopenjtalk" in INSTALLED:
    REAL_BACKEND_TYPES += [t for t in ours.g2p_choices if t and "pyopenjtalk" in t]
if "phonemizer" in INSTALLED:
    REAL_BACKEND_TYPES += [t for t in ours.g2p_choices if t and "espeak_ng" in t]
    REAL_BACKEND_TYPES.remove("espeak_ng_ukrainian")  # ESPnet builds none for it


class Calls:
    """What the stand-in backends were asked, in order."""

    log: List[tuple] = []


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


class _G2pEn:
    """Stand-in ``g2p_en.G2p``: upper-case letters, " " between words."""

    def __init__(self):
        Calls.log.append(("g2p_en.G2p",))

    def __call__(self, text):
        return list(" ".join(word.upper() for word in text.split()))


class _G2pk:
    def __call__(self, text, descriptive, group_vowels, to_syl):
        Calls.log.append(("g2pk", text, descriptive, group_vowels, to_syl))
        return f"{text}|{int(descriptive)}{int(group_vowels)}{int(to_syl)}"


class _Separator:
    def __init__(self, word, syllable, phone):
        self.word, self.syllable, self.phone = word, syllable, phone


class _Backend:
    def __init__(self, **options):
        self.options = {k: v for k, v in options.items() if k != "logger"}
        Calls.log.append(("phonemizer", sorted(self.options.items())))

    def phonemize(self, texts, separator, strip, njobs):
        Calls.log.append(("phonemize", texts, strip, njobs))
        phone, word = separator.phone or "", separator.word or "|"
        words = [phone.join(w) + ("" if strip else phone) for w in texts[0].split()]
        return [self.options["language"] + " " + word.join(words)]


class _Transcriber:
    def __init__(self, **options):
        Calls.log.append(("ice_g2p", sorted(options.items())))

    def transcribe(self, text):
        return " ".join(reversed(text.split()))


def synthetic_labels(rng: random.Random, num_phones: int) -> List[str]:
    """HTS full-context labels with random phones, accents and missing fields."""
    labels = [_label(rng, "sil")]
    for _ in range(num_phones):
        labels.append(_label(rng, rng.choice("a I k N cl U o pau e".split())))
    return labels + [_label(rng, "sil")]


def _label(rng: random.Random, phone: str) -> str:
    if rng.random() < 0.15:
        accent = "/A:xx+xx+xx"
    else:
        a1, a2, a3 = rng.randint(-3, 2), rng.randint(1, 4), rng.randint(1, 4)
        accent = f"/A:{a1}+{a2}+{a3}"
    question, f1, f2 = (
        rng.choice(["0", "1", "xx"]),
        rng.randint(1, 4),
        rng.randint(1, 4),
    )
    return (
        f"xx^xx-{phone}+x=x{accent}/B:xx-xx_xx/E:xx_xx!{question}_xx-xx"
        f"/F:{f1}_{f2}#0_xx@1_1|1_5/G:xx_xx%xx_xx_xx"
    )


def _stand_in_backends(labels: List[str], version: str) -> Dict[str, types.ModuleType]:
    backend = _module("phonemizer.backend", BACKENDS={"espeak": _Backend})
    separator = _module("phonemizer.separator", Separator=_Separator)
    transcriber = _module("ice_g2p.transcriber", Transcriber=_Transcriber)
    pyopenjtalk = _module(
        "pyopenjtalk",
        __version__=version,
        g2p=lambda text, kana: text if kana else " ".join(text),
        run_frontend=lambda text: ("features", labels),
        make_label=lambda features: labels,
    )
    return {
        "g2p_en": _module("g2p_en", G2p=_G2pEn),
        "g2pk": _module("g2pk", G2p=_G2pk),
        "pyopenjtalk": pyopenjtalk,
        "phonemizer": _module("phonemizer", backend=backend, separator=separator),
        "phonemizer.backend": backend,
        "phonemizer.separator": separator,
        "ice_g2p": _module("ice_g2p", transcriber=transcriber),
        "ice_g2p.transcriber": transcriber,
    }


@pytest.fixture(scope="module")
def espnet():
    """ESPnet 202511's phoneme_tokenizer module, loaded beside ours."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "g2p_en", _module("g2p_en", G2p=_G2pEn))
        spec = importlib.util.spec_from_file_location(ESPNET_NAME, ESPNET_FILE)
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, ESPNET_NAME, module)  # typeguard and pickle need it
        spec.loader.exec_module(module)
        yield module


@pytest.fixture
def backends(monkeypatch, espnet):
    """Stand-ins for the backends that are not installed, g2p_en's included."""
    Calls.log = []
    labels = synthetic_labels(random.Random(0), 12)
    for name, module in _stand_in_backends(labels, "0.3.4").items():
        if name.split(".")[0] not in INSTALLED:
            monkeypatch.setitem(sys.modules, name, module)
    return Calls


def _outcome(module, g2p_type, texts, **options):
    """The tokenizer's repr, tokens and backend calls, or the error it raised."""
    Calls.log = []
    try:
        tokenizer = module.PhonemeTokenizer(g2p_type, **options)
        tokens = [tokenizer.text2tokens(text) for text in texts]
    except Exception as error:  # compared between the two files
        return type(error).__name__, str(error), Calls.log
    texts_back = [tokenizer.tokens2text(t) for t in tokens]
    return repr(tokenizer), tokens, texts_back, Calls.log


def test_our_module_is_the_overlay_file_and_espnets_is_the_installed_one(espnet):
    assert (
        Path(ours.__file__).resolve() == REPO_ROOT / "espnet2/text/phoneme_tokenizer.py"
    )
    assert "site-packages" in str(ESPNET_FILE) and ESPNET_FILE.is_file()


def test_g2p_choices_are_espnets_in_the_same_order(espnet):
    assert ours.g2p_choices == espnet.g2p_choices


def test_every_public_name_of_espnets_module_is_kept_but_the_g2p_en_module(espnet):
    theirs = {name for name in vars(espnet) if not name.startswith("_")}
    missing = theirs - set(vars(ours))
    assert missing == {"g2p_en"}, "only the module-level import of g2p_en goes"


def test_every_public_callable_keeps_espnets_signature(espnet):
    for name, value in vars(espnet).items():
        if name.startswith("_") or getattr(value, "__module__", None) != ESPNET_NAME:
            continue
        assert str(inspect.signature(getattr(ours, name))) == str(
            inspect.signature(value)
        ), name
        for attribute, member in vars(value).items() if inspect.isclass(value) else []:
            if callable(member):
                mine = getattr(getattr(ours, name), attribute)
                assert str(inspect.signature(mine)) == str(inspect.signature(member)), (
                    name,
                    attribute,
                )
            elif attribute.isupper():
                assert getattr(getattr(ours, name), attribute) == member


@pytest.mark.parametrize("remove", [False, True], ids=["keep", "remove"])
@pytest.mark.parametrize("g2p_type", REAL_BACKEND_TYPES, ids=str)
def test_installed_backends_give_espnets_tokens(espnet, backends, g2p_type, remove):
    for space_symbol in ["<space>", "▁"]:
        options = dict(
            non_linguistic_symbols=SYMBOLS,
            space_symbol=space_symbol,
            remove_non_linguistic_symbols=remove,
        )
        mine = _outcome(ours, g2p_type, TEXTS, **options)
        assert mine == _outcome(espnet, g2p_type, TEXTS, **options)
        assert len(mine) == 4, f"ESPnet's and our file raised the same: {mine}"


@pytest.mark.parametrize(
    "g2p_type", [*ours.g2p_choices, "g2p_is_north", "g2p_unknown"], ids=str
)
def test_every_g2p_type_drives_stand_in_backends_as_espnet_does(
    espnet, backends, g2p_type
):
    options = dict(non_linguistic_symbols=SYMBOLS, space_symbol="_")
    texts = ["hello world  <noise>", "ab cd", "へ"]
    mine = _outcome(ours, g2p_type, texts, **options)
    assert mine == _outcome(espnet, g2p_type, texts, **options)
    unsupported = g2p_type in ("g2p_unknown", "espeak_ng_ukrainian")
    assert (len(mine) == 3) == unsupported, mine


@pytest.mark.parametrize("g2p_type", ["g2p_unknown", "espeak_ng_ukrainian"])
def test_an_unsupported_g2p_type_raises_espnets_error(espnet, g2p_type):
    message = f"Not supported: g2p_type={g2p_type}"
    for module in (ours, espnet):
        with pytest.raises(NotImplementedError, match=message):
            module.PhonemeTokenizer(g2p_type)


def test_a_non_string_g2p_type_fails_the_type_check_as_in_espnet(espnet):
    errors = []
    for module in (ours, espnet):
        with pytest.raises(Exception) as caught:
            module.PhonemeTokenizer(3)
        errors.append(type(caught.value))
    assert errors[0] is errors[1]


@pytest.mark.parametrize("version", ["0.3.4", "0.2.0"])
@pytest.mark.parametrize("seed", range(8))
def test_pyopenjtalk_label_functions_match_espnets(monkeypatch, espnet, version, seed):
    labels = synthetic_labels(random.Random(seed), 20)
    for name, module in _stand_in_backends(labels, version).items():
        monkeypatch.setitem(sys.modules, name, module)
    for function in ["pyopenjtalk_g2p_accent", "pyopenjtalk_g2p_accent_with_pause"]:
        text = f"seed {seed}"
        assert getattr(ours, function)(text) == getattr(espnet, function)(text)
    for drop in [True, False]:
        expected = espnet.pyopenjtalk_g2p_prosody("x", drop_unvoiced_vowels=drop)
        assert ours.pyopenjtalk_g2p_prosody("x", drop_unvoiced_vowels=drop) == expected


def test_symbols_read_from_a_file_and_a_missing_file_behave_as_in_espnet(
    espnet, tmp_path
):
    path = tmp_path / "nlsyms.txt"
    path.write_text("<noise>\n[laughter]  \n", encoding="utf-8")
    for symbols in [path, str(path)]:
        options = dict(
            non_linguistic_symbols=symbols, remove_non_linguistic_symbols=True
        )
        assert _outcome(ours, None, TEXTS, **options) == _outcome(
            espnet, None, TEXTS, **options
        )
    missing = tmp_path / "missing.txt"
    for module in (ours, espnet):
        with pytest.warns(UserWarning, match=f"{missing} doesn't exist."):
            tokenizer = module.PhonemeTokenizer(None, non_linguistic_symbols=missing)
        assert tokenizer.non_linguistic_symbols == set()


def test_svs_syllables_use_espnets_table_and_return_fresh_lists(espnet):
    for syllable in ["へ", "くぉっ", "か", "ヴぁ"]:
        mine = ours.PhonemeTokenizer(None).text2tokens_svs(syllable)
        assert mine == espnet.PhonemeTokenizer(None).text2tokens_svs(syllable)
        mine.append("changed")
        assert "changed" not in ours.PhonemeTokenizer(None).text2tokens_svs(syllable)


def test_g2p_en_is_built_on_the_first_call_and_then_reused(backends):
    tokenizer = ours.PhonemeTokenizer("g2p_en_no_space")
    assert tokenizer.g2p.g2p is None and backends.log == []
    assert tokenizer.text2tokens("ab c") == ["A", "B", "C"]
    assert tokenizer.text2tokens("d") == ["D"]
    assert backends.log == [("g2p_en.G2p",)]


@pytest.mark.parametrize("g2p_type", ["g2p_en", "g2p_en_no_space", "g2pk"])
def test_a_g2p_tokenizer_pickles_before_first_use_as_in_espnet(
    espnet, backends, g2p_type
):
    for module in (ours, espnet):
        copy = pickle.loads(pickle.dumps(module.PhonemeTokenizer(g2p_type)))
        assert type(copy) is module.PhonemeTokenizer
        assert repr(copy) == repr(module.PhonemeTokenizer(g2p_type))
        assert copy.g2p.g2p is None
    mine = pickle.loads(pickle.dumps(ours.PhonemeTokenizer(g2p_type)))
    theirs = pickle.loads(pickle.dumps(espnet.PhonemeTokenizer(g2p_type)))
    assert mine.text2tokens("hi you") == theirs.text2tokens("hi you")
