"""data.long_texts=chunk: every window of a long text trained on, one answer per text."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    FILLER,
    POSITIVE,
    assert_same_weights,
    own_caches,
    resume_from_first_checkpoint,
    sentiment_rows,
    write_csv,
)
from test_serve import Server
from transformers import BertTokenizerFast, pipeline

from tunesmith.cli import main
from tunesmith.infer import Predictor
from tunesmith.infer.serve import ServeSettings, create_app
from tunesmith.tasks.windows import pool, tokenizer_windowing

WINDOW, STRIDE = 24, 6  # data.max_length and data.stride of the runs below: 22 text tokens


def long_rows(n: int, seed: int) -> list[dict]:
    """Sentiment rows behind 0-60 filler words: many pass one window, the word at their end."""
    rng = random.Random(seed)
    return [
        {
            **r,
            "text": " ".join(rng.choice(FILLER) for _ in range(rng.randint(0, 60)))
            + " "
            + r["text"],
        }
        for r in sentiment_rows(n, seed)
    ]


def windows_of(words: int, window: int = WINDOW - 2, stride: int = STRIDE) -> int:
    """Windows of `window` text tokens, each repeating `stride`, that a text of `words` needs."""
    return 1 if words <= window else 1 + math.ceil((words - window) / (window - stride))


@pytest.fixture(scope="module")
def tokenizer(tiny_model) -> BertTokenizerFast:
    return BertTokenizerFast.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def chunked_run(tiny_model, tmp_path_factory) -> Path:
    """The tiny BERT fine-tuned on long rows in windows of 24 tokens."""
    root = tmp_path_factory.mktemp("chunked")
    train = write_csv(root / "train.csv", long_rows(64, seed=1))
    validation = write_csv(root / "validation.csv", long_rows(24, seed=2))
    args = [f"model={tiny_model}", f"data.train={train}", f"data.validation={validation}"]
    args += ["data.long_texts=chunk", f"data.max_length={WINDOW}", f"data.stride={STRIDE}"]
    args += ["train.method=fine-tune", "train.epochs=1", "train.learning_rate=5e-3"]
    with own_caches(root):
        assert main(["train", *args, f"output_dir={root / 'run'}"]) == 0
    return root / "run"


def test_windows_hold_every_token_and_repeat_the_stride(tokenizer):
    words = [FILLER[i % len(FILLER)] for i in range(50)] + ["good"]
    encoded, sources = tokenizer_windowing(tokenizer, WINDOW, STRIDE)([" ".join(words)], None)
    pieces = [tokenizer.convert_ids_to_tokens(ids)[1:-1] for ids in encoded["input_ids"]]

    assert len(pieces) == windows_of(len(words)) and sources == [0] * len(pieces)
    assert encoded["window"] == list(range(len(pieces)))
    assert all(len(ids) <= WINDOW for ids in encoded["input_ids"])
    rebuilt = pieces[0] + [t for p in pieces[1:] for t in p[STRIDE:]]
    assert rebuilt == words  # each later window starts with the last STRIDE tokens before it
    assert all(a[-STRIDE:] == b[:STRIDE] for a, b in itertools.pairwise(pieces))


def test_a_pair_keeps_its_shorter_text_in_every_window(tokenizer):
    long = " ".join(FILLER * 4)  # 48 tokens
    encoded, sources = tokenizer_windowing(tokenizer, WINDOW, STRIDE)(["bad day", "a"], [long, "b"])

    tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in encoded["input_ids"]]
    assert sources.count(0) > 1 and sources.count(1) == 1
    assert all(t[:4] == ["[CLS]", "bad", "[UNK]", "[SEP]"] for t in tokens[:-1])
    assert all(len(t) <= WINDOW for t in tokens)


def test_pooling_takes_each_texts_windows():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.0, 5.0], [2.0, 2.0]], np.float32)
    window = np.array([0, 1, 0, 0])  # texts of 2, 1 and 1 windows

    assert pool(logits, window, "mean").tolist() == [[2.0, -1.0], [0.0, 5.0], [2.0, 2.0]]
    assert pool(logits, window, "max").tolist() == [[3.0, 0.0], [0.0, 5.0], [2.0, 2.0]]


def test_training_sees_every_window(chunked_run):
    decisions = json.loads((chunked_run / "decisions.json").read_text())
    metrics = json.loads((chunked_run / "metrics.json").read_text())
    rows = long_rows(64, seed=1)
    expected = sum(windows_of(len(r["text"].split())) for r in rows)

    assert decisions["long_texts"] == {
        "mode": "chunk",
        "stride": STRIDE,
        "pooling": "mean",
        "windows": {"train": expected, "validation": metrics["data"]["samples"]["validation"]},
    }
    assert expected > len(rows) and decisions["truncated_rows"]["train"] == 0
    assert metrics["train"]["samples"] == expected  # one epoch: every window once


def test_predict_and_evaluate_answer_once_per_text(chunked_run, tmp_path, capsys):
    rows = long_rows(12, seed=3)
    data = write_csv(tmp_path / "test.csv", rows)
    predictor = Predictor(chunked_run)

    predictions = predictor.predict_texts([r["text"] for r in rows])
    assert main(["predict", str(chunked_run), "--data", str(data)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["evaluate", str(chunked_run), "--data", str(data)]) == 0
    evaluated = json.loads(capsys.readouterr().out)

    assert len(predictions) == len(printed) == evaluated["rows"] == len(rows)
    assert [p["label"] for p in printed] == [p["label"] for p in predictions]
    right = [p["label"] == r["label"] for p, r in zip(predictions, rows, strict=True)]
    assert evaluated["accuracy"] == pytest.approx(np.mean(right))


def test_a_texts_answer_pools_its_windows(chunked_run):
    predictor = Predictor(chunked_run)
    text = long_rows(40, seed=4)[-1]["text"]
    encoded, _ = tokenizer_windowing(predictor.tokenizer, WINDOW, STRIDE)([text], None)
    windows = [predictor.tokenizer.decode(ids[1:-1]) for ids in encoded["input_ids"]]

    whole = predictor.predict_texts([text])[0]["scores"]
    one_each = predictor.predict_texts(windows)  # each window fits: one window, no pooling
    assert len(windows) > 1
    # Log-probabilities are the logits less a constant per window: their mean's softmax is the
    # softmax of the mean logits.
    names = ("negative", "positive")
    mean = np.log([[p["scores"][n] for n in names] for p in one_each]).mean(0)
    expected = np.exp(mean - np.logaddexp.reduce(mean))
    assert [whole[n] for n in names] == pytest.approx(expected.tolist(), abs=5e-3)  # bf16 batches


def test_serve_answers_once_per_text(chunked_run):
    predictor = Predictor(chunked_run)
    texts = [r["text"] for r in long_rows(6, seed=5)]
    want = Predictor(chunked_run).predict_texts(texts)
    with Server(create_app(predictor, ServeSettings(max_batch_size=8, max_wait_ms=5))) as s:
        status, body = s.predict([{"text": t} for t in texts])

    assert status == 200 and len(body["predictions"]) == len(texts)
    assert [p["label"] for p in body["predictions"]] == [w["label"] for w in want]


def test_pipeline_sees_a_chunked_exports_first_window(chunked_run):
    """What the docs promise: transformers.pipeline loads the export and, with truncation, answers
    for the text's first window, not the whole text."""
    predictor = Predictor(chunked_run)
    text = " ".join(FILLER * 5) + " " + POSITIVE[0]
    head = predictor.tokenizer(text, truncation=True, max_length=WINDOW)["input_ids"]
    first = predictor.tokenizer.decode(head[1:-1])
    classify = pipeline("text-classification", model=str(chunked_run / "model"), top_k=None)

    got = {s["label"]: s["score"] for s in classify([text], truncation=True, max_length=WINDOW)[0]}
    want = predictor.predict_texts([first])[0]["scores"]
    assert got == pytest.approx(want, abs=2e-2)  # pipeline runs fp32, tunesmith's default may not


def test_a_chunked_run_resumes_exactly(tiny_model, tmp_path):
    data = write_csv(tmp_path / "long.csv", long_rows(48, seed=6))
    out = tmp_path / "run"
    args = [f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"]
    args += ["data.long_texts=chunk", f"data.max_length={WINDOW}", "train.method=fine-tune"]
    assert main(["train", *args, "train.epochs=2", "checkpoint.every_steps=5"]) == 0
    resume_from_first_checkpoint(out, tmp_path / "resumed")
    assert_same_weights(out, tmp_path / "resumed")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("data.stride=24", "data.stride=24 must be at least 0 and smaller than the window"),
        ("data.stride=22", "data.max_length=24 leaves 22 tokens of text per window"),
        ("data.long_texts=split", "data.long_texts must be one of truncate, chunk, got 'split'"),
        ("data.pooling=sum", "data.pooling must be one of mean, max, got 'sum'"),
    ],
)
def test_bad_chunk_settings_get_one_line(tiny_model, tmp_path, capsys, setting, message):
    data = write_csv(tmp_path / "long.csv", long_rows(16, seed=7))
    out = tmp_path / "run"
    args = [f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"]
    args += ["data.long_texts=chunk", f"data.max_length={WINDOW}", setting]

    assert main(["train", *args]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and len(err) == 1
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_stride_needs_chunk(tiny_model, tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", sentiment_rows(8))
    assert main(["train", f"model={tiny_model}", f"data.train={data}", "data.stride=8"]) != 0
    assert "data.stride is for data.long_texts=chunk" in capsys.readouterr().err


def test_a_file_and_a_request_get_the_same_answers(chunked_run, monkeypatch):
    """Many rows go through an Arrow table, a request's few through plain lists: same answers."""
    from tunesmith.infer import predict

    texts = [r["text"] for r in long_rows(10, seed=8)]
    predictor = Predictor(chunked_run, precision="fp32")
    few = predictor.predict_texts(texts)
    monkeypatch.setattr(predict, "PLAIN_COLUMN_ROWS", 0)
    many = predictor.predict_texts(texts)

    for a, b in zip(few, many, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)
