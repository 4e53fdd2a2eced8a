"""Class weights for skewed classes: resolved from the setting, applied in the loss."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import sentiment_rows, write_csv
from transformers import AutoModelForSequenceClassification, BertTokenizerFast

from tunesmith.cli import main
from tunesmith.data import Columns
from tunesmith.errors import UserError
from tunesmith.tasks import LabelSpec, SequenceClassification
from tunesmith.tasks.labels import class_weights

CLASSES = LabelSpec("classification", ("negative", "neutral", "positive"))


def test_balanced_weights_are_rows_over_classes_times_class_rows():
    ids = [0] * 6 + [1] * 3 + [2] * 1  # 10 rows: skewed
    weights = class_weights("balanced", CLASSES, ids)
    assert weights == pytest.approx((10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)))


def test_named_weights_and_their_mistakes():
    assert class_weights({"positive": 3.0}, CLASSES, [0, 1, 2]) == (1.0, 1.0, 3.0)
    assert class_weights(None, CLASSES, [0, 1, 2]) is None
    with pytest.raises(UserError, match="'postive', not among the classes negative, neutral"):
        class_weights({"postive": 3.0}, CLASSES, [0, 1, 2])
    with pytest.raises(UserError, match="regression"):
        class_weights("balanced", LabelSpec("regression"), [])


def test_the_weighted_loss_is_computed_as_specified(tiny_model):
    """By hand: -sum_i w[y_i] log softmax(z_i)[y_i] / sum_i w[y_i]."""
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    texts = ["good film", "bad plot", "a film", "awful"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([2, 0, 1, 0])
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    weights = (0.5, 2.0, 4.0)
    task = SequenceClassification(Columns("text", None, "label"), CLASSES, weights)
    loss = task.loss(model, batch)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    log_probs = torch.log_softmax(logits, -1)[torch.arange(4), batch["labels"]]
    w = torch.tensor(weights)[batch["labels"]]
    assert loss.item() == pytest.approx((-(w * log_probs).sum() / w.sum()).item(), rel=1e-6)
    assert task.loss_items(batch) == pytest.approx(w.sum().item())
    unweighted = SequenceClassification(Columns("text", None, "label"), CLASSES)
    assert unweighted.loss(model, batch).item() == pytest.approx(-log_probs.mean().item(), rel=1e-6)


def test_a_run_with_balanced_weights_names_them(tiny_model, tmp_path, capsys):
    rows = sentiment_rows(60, seed=3)
    skewed = [r for r in rows if r["label"] == "negative"] + [
        r for r in rows if r["label"] == "positive"
    ][:8]
    train = write_csv(tmp_path / "train.csv", skewed)
    out = tmp_path / "run"
    # fine-tune: so few rows would take the few-shot path, which holds no validation out.
    args = [
        f"model={tiny_model}",
        f"data.train={train}",
        f"output_dir={out}",
        "train.method=fine-tune",
    ]
    assert main(["train", *args, "train.max_steps=2", "train.class_weights=balanced"]) == 0
    err = capsys.readouterr().err
    negatives = sum(r["label"] == "negative" for r in skewed)
    expected = len(skewed) / (2 * negatives)
    assert f"class weights (balanced) {{negative: {expected:.3g}, positive:" in err
    assert json.loads((out / "metrics.json").read_text())["validation"]["accuracy"] >= 0
    assert main(["train", *args, "overwrite=true", "train.class_weights={neutral: 2}"]) == 2
    assert "'neutral', not among the classes negative, positive" in capsys.readouterr().err
