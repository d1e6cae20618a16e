"""A small English grammar that generates transcripts for the synthetic corpus.

Sentences are statements, questions and commands about people, places, objects,
animals, food, colours, times and numbers. Every sentence is a transcript ready for
character CTC: upper-case words from a closed vocabulary (:func:`vocabulary`, over
300 words) separated by single spaces, using only the letters A-Z and the apostrophe.
Numbers are spelled out in British style, with "AND" before the last two digits:
2041 is "TWO THOUSAND AND FORTY ONE", 115 is "ONE HUNDRED AND FIFTEEN".

All randomness comes from an injected ``random.Random``, so a seed fixes the
sentences. Templates are written as text with ``{slot}`` fields; a slot is either a
word list (``{colour}``) or a generator function (``{number}``, ``{time}``).

Example:
    >>> rng = random.Random(0)
    >>> draw_sentences(2, rng)  # e.g. ['MEET ME AT THE BAKERY AT HALF PAST SEVEN', ...]
"""

import itertools
import random
import re
from typing import (
    Callable,
    Collection,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Sequence,
    Set,
    Tuple,
)

# ---------------------------------------------------------------- numbers

_UNITS = (
    "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN "
    "FOURTEEN FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN"
).split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_NUMBER_WORDS = (
    frozenset(_UNITS) | frozenset(_TENS[2:]) | {"HUNDRED", "THOUSAND", "AND"}
)
MAX_NUMBER = 9999


def _below_hundred(n: int) -> List[str]:
    """Spell 0 < n < 100 as words ("FORTY ONE")."""
    if n < 20:
        return [_UNITS[n]]
    tens, units = divmod(n, 10)
    return [_TENS[tens]] + ([_UNITS[units]] if units else [])


def number_to_words(n: int) -> str:
    """Spell an integer from 0 to 9999 in upper-case English words.

    British style: "AND" joins the hundreds or thousands to a remainder below 100
    (101 -> "ONE HUNDRED AND ONE", 2041 -> "TWO THOUSAND AND FORTY ONE",
    2300 -> "TWO THOUSAND THREE HUNDRED"). No hyphens ("FORTY ONE").

    Args:
        n: The number, 0 <= n <= 9999.

    Returns:
        The words separated by single spaces.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NUMBER:
        raise ValueError(
            f"number_to_words takes an int in [0, {MAX_NUMBER}], got {n!r}"
        )
    if n == 0:
        return _UNITS[0]
    thousands, rest = divmod(n, 1000)
    hundreds, below = divmod(rest, 100)
    words: List[str] = []
    if thousands:
        words += [_UNITS[thousands], "THOUSAND"]
    if hundreds:
        words += [_UNITS[hundreds], "HUNDRED"]
    if below:
        words += (["AND"] if words else []) + _below_hundred(below)
    return " ".join(words)


def _number(rng: random.Random) -> str:
    """A number from 2 to 9999, small numbers more likely (log-uniform-ish)."""
    magnitude = rng.choice((10, 100, 1000, 10000))
    return number_to_words(rng.randrange(2, magnitude))


def _count(rng: random.Random) -> str:
    """A small count from 2 to 30 (for "{count} {plural}")."""
    return number_to_words(rng.randrange(2, 31))


def _time(rng: random.Random) -> str:
    """A clock time: "SEVEN O'CLOCK", "HALF PAST TEN", "NINE OH FIVE", ..."""
    hour = number_to_words(rng.randrange(1, 13))
    minute = rng.randrange(0, 60)
    style = rng.randrange(4)
    if style == 0:
        return f"{hour} O'CLOCK"
    if style == 1:
        return f"{rng.choice(('HALF PAST', 'QUARTER PAST', 'QUARTER TO'))} {hour}"
    if minute == 0:
        return f"{hour} O'CLOCK"
    if minute < 10:
        return f"{hour} OH {number_to_words(minute)}"
    return f"{hour} {number_to_words(minute)}"


_TIME_WORDS = frozenset({"O'CLOCK", "HALF", "PAST", "QUARTER", "TO", "OH"})

# ---------------------------------------------------------------- word lists

_WORD_LISTS: Dict[str, Tuple[str, ...]] = {
    "person": tuple(
        "ANNA BEN CLARA DAVID EMMA FRANK GRACE HARRY ISABEL JACK KATE LIAM LUCY MARK "
        "NORA OLIVER PETER RACHEL SAM SOPHIE TOM VICTOR WENDY ZOE ALICE GEORGE HELEN "
        "JAMES LAURA MARIA NATHAN PAUL RUTH SIMON".split()
    ),
    "relative": tuple("SISTER BROTHER MOTHER FATHER AUNT UNCLE COUSIN FRIEND".split()),
    "city": tuple(
        "LONDON PARIS BERLIN MADRID ROME VIENNA DUBLIN OSLO LISBON PRAGUE BOSTON "
        "CHICAGO DENVER SEATTLE TORONTO SYDNEY TOKYO CAIRO".split()
    ),
    "place": tuple(
        "STATION LIBRARY MARKET MUSEUM PARK BRIDGE HARBOUR CASTLE CHURCH SCHOOL "
        "HOSPITAL HOTEL THEATRE GARDEN BEACH FOREST VILLAGE AIRPORT STADIUM".split()
    ),
    "shop": (
        "BAKERY", "BUTCHER", "PHARMACY", "BOOKSHOP", "SUPERMARKET", "FLORIST",
        "POST OFFICE", "TOY SHOP",
    ),  # fmt: skip
    "room": tuple(
        "KITCHEN BEDROOM BATHROOM HALLWAY ATTIC CELLAR GARAGE OFFICE".split()
    ),
    "furniture": tuple("TABLE CHAIR SHELF BED SOFA DESK CUPBOARD BENCH".split()),
    "object": tuple(
        "BOOK LAMP CUP BOTTLE KEY PHONE CAMERA CLOCK WATCH BASKET BLANKET BOX "
        "UMBRELLA LADDER HAMMER PENCIL LETTER TICKET MAP GUITAR KETTLE MIRROR "
        "WALLET JACKET HAT SCARF BICYCLE PAINTING RADIO CANDLE".split()
    ),
    "plural": tuple(
        "BOOKS CUPS BOTTLES KEYS CHAIRS TICKETS LETTERS PENCILS APPLES ORANGES EGGS "
        "STAMPS COINS PLATES CANDLES SHIRTS SHOES BOXES FLOWERS STONES".split()
    ),
    "colour": tuple(
        "RED GREEN BLUE YELLOW BLACK WHITE BROWN ORANGE PURPLE PINK GREY SILVER "
        "GOLDEN".split()
    ),
    "adjective": tuple(
        "OLD NEW BIG SMALL HEAVY LIGHT BROKEN SHINY DUSTY TINY HUGE STRANGE "
        "BEAUTIFUL FAMOUS QUIET NOISY".split()
    ),
    "animal": tuple(
        "CAT DOG HORSE RABBIT FOX OWL DUCK GOAT SHEEP MOUSE BEAR TIGER MONKEY "
        "PARROT SNAKE FROG".split()
    ),
    "food": tuple(
        "BREAD SOUP CHEESE RICE PASTA SALAD CAKE PIE PIZZA COFFEE TEA MILK HONEY "
        "CHOCOLATE PORRIDGE".split()
    ),
    "taste": tuple("SWEET SALTY BITTER SOUR DELICIOUS STRANGE WONDERFUL".split()),
    "day": tuple("MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY SUNDAY".split()),
    "month": tuple(
        "JANUARY FEBRUARY MARCH APRIL MAY JUNE JULY AUGUST SEPTEMBER OCTOBER "
        "NOVEMBER DECEMBER".split()
    ),
    "part_of_day": tuple("MORNING AFTERNOON EVENING NIGHT".split()),
    "vehicle": tuple("TRAIN BUS FERRY PLANE TRAM COACH".split()),
    "chore": tuple("CLEAN WASH PAINT FIX MOVE CHECK OPEN CLOSE LOCK FIND".split()),
    "activity": tuple("SWIM READ DANCE SING COOK TRAVEL CYCLE WALK GARDEN".split()),
    "event": tuple("PARTY MEETING CONCERT WEDDING PICNIC LESSON MATCH".split()),
    "ordinal": tuple(
        "FIRST SECOND THIRD FOURTH FIFTH SIXTH SEVENTH EIGHTH NINTH TENTH".split()
    ),
    "direction": tuple("LEFT RIGHT".split()),
}

_GENERATORS: Dict[str, Callable[[random.Random], str]] = {
    "number": _number,
    "count": _count,
    "time": _time,
}

# ---------------------------------------------------------------- templates

# (kind, template); kind "question" ends with "?" when spoken, others with ".".
_TEMPLATES: Tuple[Tuple[str, str], ...] = (
    ("statement", "{person} PUT THE {colour} {object} ON THE {furniture}"),
    ("statement", "THE {animal} IS SLEEPING UNDER THE {furniture}"),
    ("statement", "{person} BOUGHT {count} {plural} AT THE {shop}"),
    ("statement", "THE {vehicle} TO {city} LEAVES AT {time}"),
    ("statement", "THERE ARE {number} {plural} IN THE {place}"),
    ("statement", "MY {relative} LIVES IN {city} NEAR THE {place}"),
    ("statement", "{person} AND {person} WALKED TO THE {place} ON {day} {part_of_day}"),
    ("statement", "THE {food} TASTES {taste} TODAY"),
    ("statement", "THE {adjective} {animal} JUMPED OVER THE {colour} {furniture}"),
    ("statement", "ROOM {number} IS ON THE {ordinal} FLOOR"),
    ("statement", "{person} LIKES TO {activity} IN {month}"),
    ("statement", "WE NEED {count} {plural} FOR THE {event} ON {day}"),
    ("statement", "{person} FOUND A {adjective} {object} IN THE {room}"),
    ("statement", "THE {event} STARTS AT {time} ON {day}"),
    ("statement", "{person} PAID {number} POUNDS FOR THE {adjective} {object}"),
    ("statement", "I SAW A {colour} {animal} NEAR THE {place} LAST {day}"),
    ("statement", "{person} WILL MEET HER {relative} IN {city} IN {month}"),
    ("statement", "IT'S {time} AND THE {shop} IS CLOSED"),
    (
        "statement",
        "AFTER THE {event} {person} AND {person} TOOK THE {vehicle} BACK TO {city}",
    ),
    (
        "statement",
        "{person} SAID THAT THE {adjective} {object} WAS IN THE {room} NEAR THE "
        "{furniture}",
    ),
    ("statement", "IF IT RAINS ON {day} WE WILL MEET AT THE {place} AT {time}"),
    (
        "question",
        "DID {person} REMEMBER TO BRING THE {colour} {object} TO THE {event} ON {day}",
    ),
    ("question", "WHERE DID {person} LEAVE THE {adjective} {object}"),
    ("question", "WHAT TIME DOES THE {shop} OPEN ON {day}"),
    ("question", "DID YOU SEE THE {adjective} {animal} NEAR THE {place}"),
    ("question", "HOW MANY {plural} DID {person} FIND IN THE {room}"),
    ("question", "WHO GAVE {person} THE {food}"),
    ("question", "WHEN WILL THE {vehicle} ARRIVE IN {city}"),
    ("question", "IS THE {object} {colour} OR {colour}"),
    ("question", "CAN YOU {chore} THE {object} BEFORE {time}"),
    ("question", "DOES {person} WANT {food} OR {food} FOR DINNER"),
    ("question", "WHY IS THE {object} IN THE {room}"),
    ("command", "PLEASE BRING ME THE {colour} {object} FROM THE {room}"),
    ("command", "CALL {person} AND ASK ABOUT THE {object}"),
    ("command", "DON'T FORGET TO {chore} THE {object} BEFORE {time}"),
    ("command", "MEET ME AT THE {place} AT {time}"),
    ("command", "TURN {direction} AT THE {place} AND WALK {count} METRES"),
    ("command", "PUT {count} {plural} IN THE {colour} BOX"),
    ("command", "OPEN THE {object} AND COUNT TO {number}"),
    ("command", "TAKE THE {vehicle} TO {city} ON {day} {part_of_day}"),
)

_SLOT_RE = re.compile(r"\{(\w+)\}")
# First words of the question templates; no other template starts with one of them.
QUESTION_STARTS = frozenset(
    t.split()[0] for kind, t in _TEMPLATES if kind == "question"
)


def _fill(template: str, rng: random.Random) -> str:
    """Replace each ``{slot}`` in ``template`` by a draw from its list or generator."""

    def draw(match: "re.Match[str]") -> str:
        slot = match.group(1)
        if slot in _GENERATORS:
            return _GENERATORS[slot](rng)
        return rng.choice(_WORD_LISTS[slot])

    return _SLOT_RE.sub(draw, template)


def generate_sentence(rng: random.Random) -> str:
    """Generate one transcript from a random template.

    Args:
        rng: Source of all randomness (seeded by the caller).

    Returns:
        Upper-case words (A-Z and ') separated by single spaces, 4 to 15 words.
    """
    _, template = rng.choice(_TEMPLATES)
    return _fill(template, rng)


def sentence_stream(
    rng: random.Random,
    exclude: Collection[str] = (),
    max_tries_per_sentence: int = 1000,
) -> Iterator[str]:
    """Yield distinct transcripts forever, none of them in ``exclude``.

    Args:
        rng: Source of all randomness; the same seed gives the same sequence.
        exclude: Sentences never to yield (e.g. the held-out ones); copied.
        max_tries_per_sentence: Consecutive repeated draws allowed before giving up.

    Yields:
        New sentences in the order drawn.

    Raises:
        RuntimeError: If the grammar cannot produce a new sentence any more.
    """
    seen: Set[str] = set(exclude)
    while True:
        for _ in range(max_tries_per_sentence):
            sentence = generate_sentence(rng)
            if sentence not in seen:
                break
        else:
            raise RuntimeError(
                f"the grammar produced no new sentence in {max_tries_per_sentence} "
                f"draws after {len(seen)} distinct ones; ask for less audio"
            )
        seen.add(sentence)
        yield sentence


def draw_sentences(
    num_sentences: int, rng: random.Random, exclude: Collection[str] = ()
) -> List[str]:
    """Draw ``num_sentences`` distinct transcripts, none of them in ``exclude``.

    Args:
        num_sentences: How many sentences to return.
        rng: Source of all randomness; the same seed gives the same list.
        exclude: Sentences that must not be drawn (e.g. held-out ones).

    Returns:
        The sentences in the order drawn.

    Raises:
        RuntimeError: If the grammar cannot produce enough new sentences.
    """
    return list(itertools.islice(sentence_stream(rng, exclude), num_sentences))


def speech_prompt(sentence: str) -> str:
    """Turn a transcript into the text given to the synthesiser.

    Lower case (so espeak does not spell all-capital words letter by letter) with a
    final "?" for questions and "." otherwise, which sets the intonation.

    Args:
        sentence: A transcript from this grammar.

    Returns:
        The prompt, e.g. ``"where did anna leave the old key?"``.
    """
    first_word = sentence.split(" ", 1)[0]
    mark = "?" if first_word in QUESTION_STARTS else "."
    return sentence.lower() + mark


def templates() -> Sequence[Tuple[str, str]]:
    """Return the ``(kind, template)`` pairs; kind is statement, question or command."""
    return _TEMPLATES


def vocabulary() -> FrozenSet[str]:
    """Return every word the grammar can produce.

    Returns:
        The literal words of the templates, all word-list entries (split into
        words), the number words and the clock-time words.
    """
    words: Set[str] = set(_NUMBER_WORDS) | set(_TIME_WORDS)
    for _, template in _TEMPLATES:
        words.update(w for w in _SLOT_RE.sub(" ", template).split())
    for entries in _WORD_LISTS.values():
        for entry in entries:
            words.update(entry.split())
    return frozenset(words)
