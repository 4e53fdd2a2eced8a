"""Several labels per text: the input forms, training with BCE, thresholds tuned on validation
and used everywhere, the export that `pipeline` loads, resume, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    assert_same_weights,
    own_caches,
    resume_from_first_checkpoint,
    tagged_rows,
    write_csv,
    write_jsonl,
)
from datasets import Dataset
from test_serve import Server
from transformers import pipeline

from tunesmith.cli import main
from tunesmith.config import DataConfig
from tunesmith.errors import UserError
from tunesmith.infer import Predictor
from tunesmith.infer.serve import create_app
from tunesmith.metrics import THRESHOLD_GRID, threshold_tuning, tune_thresholds
from tunesmith.tasks.multi_label import label_names, label_sets


@pytest.mark.parametrize(
    ("column", "config", "expected"),
    [
        ([["a", "b"], ["b"]], {}, [["a", "b"], ["b"]]),  # a column of lists (JSON Lines)
        (['["a", "b"]', '["b"]'], {}, [["a", "b"], ["b"]]),  # JSON list text in a CSV cell
        (["a; b", "b"], {"label_delimiter": ";"}, [["a", "b"], ["b"]]),
        (["a", "b"], {}, None),  # one label a row: not multi-label
    ],
    ids=["lists", "json-text", "delimited", "single"],
)
def test_each_input_form_is_detected(column, config, expected):
    ds = Dataset.from_dict({"text": ["x", "y"], "labels": column})
    assert label_sets(ds, "labels", DataConfig(**config), "t.csv") == expected


def test_binary_columns_are_label_sets_and_may_be_empty():
    ds = Dataset.from_dict({"text": ["x", "y", "z"], "toxic": [1, 0, 0], "rude": ["1", "1", "0"]})
    got = label_sets(ds, None, DataConfig(label_columns=["toxic", "rude"]), "t.csv")
    assert got == [["toxic", "rude"], ["rude"], []]


@pytest.mark.parametrize(
    ("column", "config", "expected"),
    [
        (['["a", "b"', '["b"]'], {}, "t.csv: column labels row 1 is not a valid JSON list"),
    ],
    ids=["bad-json"],
)
def test_bad_label_sets_name_file_row_and_column(column, config, expected):
    ds = Dataset.from_dict({"text": ["x", "y"], "labels": column})
    with pytest.raises(UserError, match=re.escape(expected)):
        label_sets(ds, "labels", DataConfig(**config), "t.csv")


@pytest.mark.parametrize(
    ("column", "config"),
    [([["a"], []], {}), (["a", " ; "], {"label_delimiter": ";"}), (['["a"]', "[]"], {})],
    ids=["list", "delimited", "json-text"],
)
def test_an_empty_label_set_means_none_of_the_labels(column, config):
    ds = Dataset.from_dict({"text": ["x", "y"], "labels": column})
    assert label_sets(ds, "labels", DataConfig(**config), "t.csv") == [["a"], []]


def test_label_sets_that_are_all_empty_are_one_line():
    with pytest.raises(UserError, match=r"^t\.csv: no row carries a label"):
        label_names([[], []], DataConfig(), "t.csv")


def test_a_binary_column_holding_a_two():
    ds = Dataset.from_dict({"text": ["x", "y"], "toxic": [1, 2], "rude": [0, 1]})
    with pytest.raises(UserError, match=r"t\.csv: column toxic row 2 holds 2; a label column"):
        label_sets(ds, None, DataConfig(label_columns=["toxic", "rude"]), "t.csv")


def test_a_label_seen_only_in_validation(tiny_model, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", tagged_rows(20, seed=1))
    validation = write_jsonl(
        tmp_path / "validation.jsonl", [{"text": "good film", "labels": ["pos", "neutral"]}]
    )
    args = [f"model={tiny_model}", f"data.train={train}", f"data.validation={validation}"]
    assert main(["train", *args, f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "validation.jsonl: row 1 has label 'neutral', which no training row has" in err


def test_thresholds_are_tuned_per_label_with_a_fallback_for_rare_ones(monkeypatch):
    rng = np.random.default_rng(0)
    labels = np.zeros((200, 3), dtype=int)
    labels[:80, 0] = 1  # common: tuned on its own
    labels[100:160, 1] = 1
    labels[:2, 2] = 1  # rare: takes the one threshold best for all labels together
    probabilities = np.clip(labels * 0.3 + rng.random((200, 3)) * 0.4, 0, 1)
    thresholds = tune_thresholds(probabilities, labels)
    monkeypatch.setattr("tunesmith.metrics.MIN_POSITIVES_TO_TUNE", 10_000)
    overall = tune_thresholds(probabilities, labels)  # every label on the fallback
    assert len(set(overall)) == 1 and thresholds[2] == overall[2]
    assert 0.3 <= thresholds[0] <= 0.45  # between the negatives' top and the positives' floor


def test_a_label_without_signal_takes_the_shared_threshold(monkeypatch):
    """Its own best threshold would be the lowest, "almost always", whose F1 is just that of
    marking it on every row: it falls back to the threshold shared by all labels."""
    rng = np.random.default_rng(0)
    labels = np.zeros((400, 2), dtype=int)
    labels[:120, 0] = 1  # learnt: its probabilities separate
    labels[rng.choice(400, 40, replace=False), 1] = 1  # 10% base rate, noise for probabilities
    probabilities = np.c_[labels[:, 0] * 0.5 + rng.random(400) * 0.45, rng.random(400) * 0.3]

    thresholds, shared = threshold_tuning(probabilities, labels)
    with monkeypatch.context() as m:
        m.setattr("tunesmith.metrics.BASE_RATE_MARGIN", -1.0)  # no fallback for weak labels
        own = tune_thresholds(probabilities, labels)[1]
        m.setattr("tunesmith.metrics.MIN_POSITIVES_TO_TUNE", 10_000)  # every label shared
        overall = tune_thresholds(probabilities, labels)[1]

    assert own == THRESHOLD_GRID[0]  # alone, the noise label gets the degenerate threshold
    assert list(shared) == [False, True]
    assert thresholds[1] != own and thresholds[1] == overall
    assert 0.45 <= thresholds[0] <= 0.5


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("multi-label")
    train = write_jsonl(root / "train.jsonl", tagged_rows(240, seed=1))
    validation = write_jsonl(root / "validation.jsonl", tagged_rows(60, seed=2))
    args = [
        f"model={tiny_model}",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={root / 'run'}",
        "train.epochs=10",  # BCE on two independent labels learns slower than one class
        "train.micro_batch_size=16",
        "train.learning_rate=5e-3",
        "train.freeze_word_embeddings=false",
        "checkpoint.every_steps=40",
    ]
    with own_caches(root):
        assert main(["train", *args]) == 0
    return root / "run"


def test_a_run_learns_and_reports_every_label(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric_for_best"] == "macro_f1"
    assert set(metrics["validation"]) == {"micro_f1", "macro_f1", "samples_f1", "subset_accuracy"}
    # One word decides each label; predicting every label for every row scores 0.78.
    assert metrics["validation"]["macro_f1"] > 0.85
    per_label = metrics["validation_details"]["per_label"]
    assert set(per_label) == {"mention", "neg", "pos"} and per_label["pos"]["support"] > 0
    assert "at_threshold_0.5" in metrics["validation_details"]
    assert metrics["validation_details"]["labels_on_shared_threshold"] == []  # all learnt
    decisions = json.loads((run / "decisions.json").read_text())
    assert set(decisions["class_weights"]) == {"mention", "neg", "pos"}  # auto: balanced
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "mention", "1": "neg", "2": "pos"}


def test_pipeline_scores_equal_ours_and_thresholds_decide(run, capsys):
    meta = json.loads((run / "model" / "tunesmith.json").read_text())
    thresholds = meta["thresholds"]
    assert set(thresholds) == {"mention", "neg", "pos"}
    texts = [r["text"] for r in tagged_rows(20, seed=9)]
    ours = Predictor(run, precision="fp32").predict_texts(texts)
    classifier = pipeline("text-classification", model=str(run / "model"), device="cpu")
    theirs = classifier(texts, top_k=None)
    for mine, hf in zip(ours, theirs, strict=True):
        assert {h["label"]: pytest.approx(h["score"], abs=1e-5) for h in hf} == mine["scores"]
        chosen = [n for n in ("mention", "neg", "pos") if mine["scores"][n] >= thresholds[n]]
        assert mine["labels"] == chosen


def test_serve_and_predict_use_the_thresholds(run, tmp_path, capsys):
    predictor = Predictor(run, precision="fp32")
    shifted = predictor.thresholds
    assert shifted is not None
    data = write_csv(tmp_path / "new.csv", [{"text": "good film"}, {"text": "bad plot"}])
    out = tmp_path / "preds.csv"
    argv = ["predict", str(run), "--data", str(data), "--out", str(out), "--precision", "fp32"]
    assert main(argv) == 0
    header, *rows = out.read_text().splitlines()
    assert header == "row,label,score_mention,score_neg,score_pos"
    expected = predictor.predict_texts(["good film", "bad plot"])
    assert [r.split(",")[1] for r in rows] == [";".join(e["labels"]) for e in expected]
    with Server(create_app(predictor)) as server:
        status, body = server.predict([{"text": "good film"}, {"text": "bad plot"}])
    assert status == 200, body
    assert [p["labels"] for p in body["predictions"]] == [e["labels"] for e in expected]
    assert "label" not in body["predictions"][0]


def test_evaluate_reproduces_the_run(run, tmp_path):
    validation = run.parent / "validation.jsonl"
    scores = Predictor(run).evaluate(Dataset.from_json(str(validation)))
    metrics = json.loads((run / "metrics.json").read_text())["validation"]
    for key, value in metrics.items():
        assert scores[key] == pytest.approx(value, abs=1e-9), key


def test_resume_is_exact(run, tmp_path):
    """From a checkpoint before the end, the run ends with the same weights and thresholds."""
    copy = tmp_path / "run"
    resume_from_first_checkpoint(run, copy)
    assert_same_weights(run, copy)
    meta = [json.loads((r / "model" / "tunesmith.json").read_text()) for r in (run, copy)]
    assert meta[0]["thresholds"] == meta[1]["thresholds"]


def test_rows_with_no_label_train_and_score_as_the_0_1_form(tiny_model, tmp_path, capsys):
    """An empty list is "none of the labels": the same run as all-0 rows in 0/1 columns."""
    rows = tagged_rows(120, seed=5)
    for row in rows[::8]:
        row["labels"] = []
    listed = write_jsonl(tmp_path / "lists.jsonl", rows)
    names = ["mention", "neg", "pos"]
    flags = [{"text": r["text"], **{n: int(n in r["labels"]) for n in names}} for r in rows]
    binary = write_jsonl(tmp_path / "binary.jsonl", flags)
    common = [f"model={tiny_model}", "train.max_steps=4", "train.micro_batch_size=16"]
    assert main(["train", *common, f"data.train={listed}", f"output_dir={tmp_path / 'a'}"]) == 0
    startup = capsys.readouterr().err
    columns = "data.label_columns=[mention,neg,pos]"
    assert (
        main(["train", *common, f"data.train={binary}", columns, f"output_dir={tmp_path / 'b'}"])
        == 0
    )

    a, b = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("a", "b"))
    none = a["data"]["rows_without_labels"]
    assert none == b["data"]["rows_without_labels"]
    assert none["train"] + none["validation"] == len(rows[::8])
    assert f"({none['train']} training rows carry none of the labels)" in startup
    assert a["validation"] == b["validation"]
    assert_same_weights(tmp_path / "a", tmp_path / "b")
