"""espnet2.bin.spm_train: the sentencepiece trainer ESPnet's recipes call."""

import pytest
import sentencepiece

from espnet2.bin.spm_train import main, parse_options

TEXT = [
    "GRACE WILL MEET HER MOTHER IN PARIS IN SEPTEMBER",
    "WHY IS THE UMBRELLA IN THE GARAGE",
    "JAMES AND LIAM WALKED TO THE CASTLE ON WEDNESDAY AFTERNOON",
] * 4


def test_trains_a_model_with_the_given_vocabulary_size(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text("\n".join(TEXT) + "\n")
    main(
        [f"--input={text}", "--vocab_size=30", "--model_type=unigram",
         f"--model_prefix={tmp_path / 'bpe'}", "--character_coverage=1.0"]
    )  # fmt: skip
    model = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    assert model.get_piece_size() == 30
    pieces = model.encode("THE GARAGE", out_type=str)
    assert "".join(pieces).replace("\u2581", " ").strip() == "THE GARAGE"


def test_options_are_key_value_pairs():
    assert parse_options(["--input=a b.txt", "--vocab_size=5"]) == {
        "input": "a b.txt",
        "vocab_size": "5",
    }
    for bad in (["--vocab_size", "5"], ["vocab_size=5"], ["--=5"]):
        with pytest.raises(ValueError, match="--key=value"):
            parse_options(bad)


def test_bad_options_exit_with_status_1_and_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["--vocab_size", "30"])
    assert err.value.code == 1
    assert "spm_train: error" in capsys.readouterr().err
    text = tmp_path / "tiny.txt"
    text.write_text("AB\n")
    with pytest.raises(SystemExit) as err:  # more pieces than the text can give
        main([f"--input={text}", "--vocab_size=500", f"--model_prefix={tmp_path}/m"])
    assert err.value.code == 1
    assert "Vocabulary size" in capsys.readouterr().err
