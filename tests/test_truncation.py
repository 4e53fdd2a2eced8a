"""data.truncation: which tokens of a long text a classifier keeps, in training and prediction."""

from __future__ import annotations

import json

import pytest
from conftest import FILLER, POSITIVE, sentiment_rows, write_csv
from datasets import Dataset
from transformers import BertTokenizerFast

from tunesmith.cli import main
from tunesmith.infer import Predictor
from tunesmith.tasks.truncation import allowances, tokenizer_keeping

WORDS = FILLER + POSITIVE  # 18 distinct words, one token each in the tiny vocabulary


@pytest.fixture(scope="module")
def tokenizer(tiny_model) -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(tiny_model)


def words_of(tokenizer, ids: list[int]) -> list[str]:
    return tokenizer.convert_ids_to_tokens(ids)


def test_head_and_tail_keep_the_first_quarter_and_the_last_three(tokenizer):
    encode = tokenizer_keeping(tokenizer, 10, "head+tail")  # 8 tokens between [CLS] and [SEP]

    ids = encode([" ".join(WORDS)], None)["input_ids"][0]

    assert words_of(tokenizer, ids) == ["[CLS]", *WORDS[:2], *WORDS[-6:], "[SEP]"]


def test_tail_keeps_the_end(tokenizer):
    ids = tokenizer_keeping(tokenizer, 6, "tail")([" ".join(WORDS)], None)["input_ids"][0]

    assert words_of(tokenizer, ids) == ["[CLS]", *WORDS[-4:], "[SEP]"]


def test_texts_that_fit_are_tokenized_as_the_tokenizer_does(tokenizer):
    texts, pairs = ["good movie", " ".join(WORDS[:5])], ["bad", "the plot"]
    expected = tokenizer(texts, pairs, truncation=True, max_length=32)

    for truncation in ("head", "tail", "head+tail"):
        got = tokenizer_keeping(tokenizer, 32, truncation)(texts, pairs)
        assert {k: got[k] for k in ("input_ids", "token_type_ids", "attention_mask")} == {
            k: expected[k] for k in ("input_ids", "token_type_ids", "attention_mask")
        }


def test_a_pair_cuts_its_longer_text_first(tokenizer):
    assert allowances(30, 4, 20) == (16, 4)
    assert allowances(4, 30, 20) == (4, 16)
    assert allowances(30, 30, 21) == (11, 10)
    encoded = tokenizer_keeping(tokenizer, 12, "head+tail")([" ".join(WORDS)], ["bad sad"])

    tokens = words_of(tokenizer, encoded["input_ids"][0])

    # 12 - 3 special tokens = 9: the short text keeps its 2, the long one 7 (2 head + 5 tail).
    assert tokens == ["[CLS]", *WORDS[:2], *WORDS[-5:], "[SEP]", "bad", "sad", "[SEP]"]
    assert encoded["token_type_ids"][0] == [0] * 9 + [1] * 3


def test_an_unknown_truncation_is_one_line_naming_the_setting(tmp_path, capsys):
    train = write_csv(tmp_path / "train.csv", sentiment_rows(20))

    assert main(["train", f"data.train={train}", "data.truncation=middle"]) == 2

    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "data.truncation must be one of head, tail, head+tail, got 'middle'" in error


def test_prediction_cuts_as_training_did(tiny_model, tmp_path):
    # Each row's own words at its end, after more filler than 24 tokens hold.
    filler = " ".join(FILLER * 3)
    rows = [{"text": f"{filler} {r['text']}", "label": r["label"]} for r in sentiment_rows(60)]
    train = write_csv(tmp_path / "train.csv", rows)
    out = tmp_path / "run"
    args = [f"model={tiny_model}", f"data.train={train}", f"output_dir={out}"]
    extra = ["data.max_length=24", "data.truncation=head+tail", "train.method=fine-tune"]
    assert main(["train", *args, *extra, "train.max_steps=2"]) == 0

    meta = json.loads((out / "model" / "tunesmith.json").read_text(encoding="utf-8"))
    decisions = json.loads((out / "decisions.json").read_text(encoding="utf-8"))
    predictor = Predictor(out)

    assert meta["truncation"] == decisions["task"]["truncation"] == "head+tail"
    columns = predictor.columns_for(Dataset.from_list(rows[:1]), "rows", need_label=False)
    tokenize = predictor.task(columns).tokenize_function(predictor.tokenizer, 24)
    ids = tokenize({"text": [rows[0]["text"]]})["input_ids"][0]
    assert len(ids) == 24
    # The row's last word, beyond the first 24 tokens, is what prediction sees before [SEP].
    assert predictor.tokenizer.convert_ids_to_tokens(ids)[-2] == rows[0]["text"].split()[-1]
