#!/usr/bin/env python3
"""Train a sentencepiece model, as ESPnet's recipes call it.

Usage::

    python -m espnet2.bin.spm_train --input=text.txt --vocab_size=100 \\
        --model_type=unigram --model_prefix=bpe --character_coverage=1.0

ESPnet's ``asr.sh`` runs ``python -m espnet2.bin.spm_train`` for BPE units, and the
``espnet==202511`` wheel does not ship that module; this one fills the gap. Every
``--key=value`` is an option of sentencepiece's trainer (sentencepiece
``doc/options.md``), passed to ``sentencepiece.SentencePieceTrainer.train`` unchanged.
"""

import sys
from typing import Dict, Optional, Sequence

import sentencepiece

from espnet2.utils.tool_logging import exit_with_error

TOOL = "spm_train"


def parse_options(args: Sequence[str]) -> Dict[str, str]:
    """``["--input=a.txt", "--vocab_size=100"]`` -> ``{"input": "a.txt", ...}``.

    Raises:
        ValueError: For an argument that is not ``--key=value``.
    """
    options = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not key.startswith("--") or not sep or len(key) == 2:
            raise ValueError(
                f"'{arg}' is not --key=value (e.g. --vocab_size=100); see "
                "sentencepiece's doc/options.md for the keys"
            )
        options[key[2:]] = value
    return options


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Train with the options in ``cmd`` (default: ``sys.argv[1:]``)."""
    try:
        options = parse_options(sys.argv[1:] if cmd is None else cmd)
        sentencepiece.SentencePieceTrainer.train(**options)
    except (ValueError, RuntimeError, OSError) as err:
        exit_with_error(TOOL, str(err))


if __name__ == "__main__":
    main()
