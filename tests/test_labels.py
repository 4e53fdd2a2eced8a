"""Labels: classification vs regression, class names and ids, label errors, metrics, predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from tunesmith.config import DataConfig
from tunesmith.data import Columns, detect_columns, read_table
from tunesmith.errors import UserError
from tunesmith.tasks import LabelSpec, SequenceClassification
from tunesmith.tasks.labels import encode_labels, infer_labels

SINGLE = Columns(text="text", text_pair=None, label="label")


def labelled(labels, features: Features | None = None) -> Dataset:
    return Dataset.from_dict(
        {"text": [f"row {i}" for i in range(len(labels))], "label": list(labels)},
        features=features,
    )


def infer(labels, task="auto", label_names=None, source="train.csv") -> LabelSpec:
    return infer_labels(labelled(labels), "label", task, label_names, source)


def user_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- infer_labels


def test_string_labels_are_classes_in_sorted_order():
    spec = infer(["pos", "neg", "neutral", "pos"])
    assert spec == LabelSpec("classification", ("neg", "neutral", "pos"))
    assert spec.num_labels == 3
    assert spec.id2label == {0: "neg", 1: "neutral", 2: "pos"}


def test_string_labels_are_encoded_as_ids():
    ds = labelled(["pos", "neg", "neutral", "pos"])
    spec = infer_labels(ds, "label", "auto", None, "train.csv")
    encoded = encode_labels(ds, "label", spec, "train.csv")
    assert encoded["labels"] == [2, 0, 1, 2]
    assert "label" not in encoded.column_names
    assert encoded["text"] == ds["text"]
    assert encoded.features["labels"] == ClassLabel(names=["neg", "neutral", "pos"])


def test_integer_labels_are_named_by_their_ids():
    spec = infer([2, 0, 1, 0])
    assert spec == LabelSpec("classification", ("0", "1", "2"))
    encoded = encode_labels(labelled([2, 0, 1, 0]), "label", spec, "train.csv")
    assert encoded["labels"] == [2, 0, 1, 0]


def test_label_names_name_integer_labels():
    spec = infer([1, 0, 1], label_names=["negative", "positive"])
    assert spec.names == ("negative", "positive")
    assert spec.id2label == {0: "negative", 1: "positive"}
    assert encode_labels(labelled([1, 0, 1]), "label", spec, "t")["labels"] == [1, 0, 1]


def test_label_names_of_the_wrong_length():
    msg = user_error(infer, [0, 1, 1], label_names=["a", "b", "c"])
    assert "label_names has 3 names" in msg and "2 ids" in msg


def test_class_label_feature_keeps_its_names():
    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    ds = labelled([1, 0, 1], features)
    spec = infer_labels(ds, "label", "auto", None, "hub")
    assert spec.names == ("neg", "pos")
    assert encode_labels(ds, "label", spec, "hub")["labels"] == [1, 0, 1]


def test_boolean_labels_are_two_classes():
    spec = infer([True, False, True])
    assert spec.names == ("0", "1")
    assert encode_labels(labelled([True, False, True]), "label", spec, "t")["labels"] == [1, 0, 1]


def test_fractional_floats_mean_regression_under_auto():
    spec = infer([0.5, 3.2, 4.0, 1.0])
    assert spec == LabelSpec("regression")
    assert spec.num_labels == 1
    encoded = encode_labels(labelled([0.5, 3.2, 4.0, 1.0]), "label", spec, "t")
    assert encoded.features["labels"] == Value("float32")
    assert encoded["labels"] == pytest.approx([0.5, 3.2, 4.0, 1.0])


def test_whole_number_floats_are_classes():
    spec = infer([0.0, 2.0, 1.0, 1.0])
    assert spec == LabelSpec("classification", ("0", "1", "2"))
    encoded = encode_labels(labelled([0.0, 2.0, 1.0, 1.0]), "label", spec, "t")
    assert encoded["labels"] == [0, 2, 1, 1]


def test_task_regression_forces_regression_on_integers():
    spec = infer([1, 2, 3, 4], task="regression")
    assert spec.kind == "regression"
    assert encode_labels(labelled([1, 2, 3, 4]), "label", spec, "t")["labels"] == [1, 2, 3, 4]


def test_task_regression_with_names_is_an_error():
    msg = user_error(infer, ["a", "b"], task="regression")
    assert "train.csv" in msg and "task=regression" in msg and "label" in msg


def test_task_classification_with_fractional_labels_is_an_error():
    msg = user_error(infer, [0.0, 0.5, 1.0], task="classification")
    assert "train.csv" in msg
    assert "fractional" in msg
    assert "task=regression" in msg


def test_task_classification_with_names_and_whole_numbers():
    assert infer(["x", "y"], task="classification").names == ("x", "y")
    assert infer([0, 1], task="classification").names == ("0", "1")


def test_single_class_is_an_error():
    msg = user_error(infer, ["spam", "spam", "spam"])
    assert "train.csv" in msg
    assert "single class" in msg and "'spam'" in msg
    assert "at least two" in msg


def test_single_integer_class_is_an_error_even_with_label_names():
    msg = user_error(infer, [0, 0], label_names=["neg", "pos"])
    assert "single class" in msg


def test_negative_class_ids_are_an_error():
    msg = user_error(infer, [-1, 0, 1])
    assert "train.csv" in msg and "negative" in msg


@pytest.mark.parametrize(
    ("labels", "rows"),
    [
        (["a", None, "b", None], "rows 2, 4"),
        ([0.0, float("nan"), 1.0], "rows 2"),
        ([None, 1, 0], "rows 1"),
    ],
)
def test_missing_labels_name_the_rows(labels, rows):
    msg = user_error(infer, labels)
    assert "train.csv" in msg
    assert "empty label" in msg
    assert rows in msg


def test_missing_label_in_a_csv_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\na,1\nb,\nc,0\n", encoding="utf-8")
    ds = read_table(path)
    msg = user_error(infer_labels, ds, "label", "auto", None, str(path))
    assert str(path) in msg and "rows 2" in msg


def test_mixed_names_and_numbers_are_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"text": "a", "label": "pos"}, {"text": "b", "label": 1}, {"text": "c", "label": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ds = read_table(path)
    msg = user_error(infer_labels, ds, "label", "auto", None, str(path))
    assert str(path) in msg
    assert "mixes names 'pos' (rows 1) and numbers 1, 0 (rows 2, 3)" in msg


# ---------------------------------------------------------------- encode_labels


def test_validation_label_never_seen_in_training():
    spec = infer(["neg", "pos", "neg"])
    val = labelled(["pos", "neutral", "neg", "neutral"])
    msg = user_error(encode_labels, val, "label", spec, "validation.csv")
    assert "validation.csv" in msg
    assert "'neutral'" in msg
    assert "rows 2, 4" in msg
    assert "neg, pos" in msg


def test_validation_class_id_never_seen_in_training():
    spec = infer([0, 1, 0])
    msg = user_error(encode_labels, labelled([0, 2, 1]), "label", spec, "validation.csv")
    assert "validation.csv" in msg and "label 2" in msg and "rows 2" in msg


def test_validation_fractional_label_in_classification():
    spec = infer([0, 1])
    msg = user_error(encode_labels, labelled([0.0, 0.5]), "label", spec, "validation.csv")
    assert "0.5" in msg and "rows 2" in msg


def test_validation_missing_label_names_the_row():
    spec = infer(["neg", "pos"])
    msg = user_error(encode_labels, labelled(["neg", None, "pos"]), "label", spec, "val.csv")
    assert "val.csv" in msg and "rows 2" in msg


def test_validation_names_for_integer_training_labels_with_label_names():
    spec = infer([0, 1, 1], label_names=["neg", "pos"])
    encoded = encode_labels(labelled(["pos", "neg"]), "label", spec, "val.csv")
    assert encoded["labels"] == [1, 0]


def test_regression_validation_with_missing_values():
    spec = infer([0.5, 1.5])
    msg = user_error(
        encode_labels, labelled([0.5, float("nan"), 2.0]), "label", spec, "validation.csv"
    )
    assert "validation.csv" in msg and "rows 2" in msg


def test_existing_labels_column_is_replaced():
    ds = Dataset.from_dict({"text": ["a", "b"], "labels": ["x", "y"]})
    spec = infer_labels(ds, "labels", "auto", None, "t")
    encoded = encode_labels(ds, "labels", spec, "t")
    assert encoded.column_names == ["text", "labels"]
    assert encoded["labels"] == [0, 1]


def test_labels_from_a_csv_file_end_to_end(sentiment_csv):
    train_path, val_path = sentiment_csv
    cfg = DataConfig()
    train = read_table(train_path)
    columns = detect_columns(train, cfg, str(train_path))
    spec = infer_labels(train, columns.label, "auto", None, str(train_path))
    assert spec.names == ("negative", "positive")
    val = encode_labels(read_table(val_path), columns.label, spec, str(val_path))
    raw = read_table(val_path)["label"]
    assert val["labels"] == [spec.names.index(v) for v in raw]


# ---------------------------------------------------------------- SequenceClassification


def task(names=("a", "b", "c")) -> SequenceClassification:
    return SequenceClassification(SINGLE, LabelSpec("classification", tuple(names)))


def one_hot_logits(predictions, num_classes):
    logits = np.zeros((len(predictions), num_classes), dtype=np.float32)
    logits[np.arange(len(predictions)), predictions] = 5.0
    return logits


def test_three_class_macro_f1():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    metrics = task().compute_metrics(one_hot_logits(predictions, 3), labels)
    # Per class F1: 0 -> 1/2, 1 -> 4/5, 2 -> 2/3.
    expected = (0.5 + 0.8 + 2 / 3) / 3
    assert metrics["macro_f1"] == pytest.approx(expected)
    assert metrics["f1"] == pytest.approx(expected)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert set(metrics) == set(task().metric_names)
    assert all(isinstance(v, float) for v in metrics.values())


def test_binary_f1_is_on_the_positive_class():
    labels = np.array([1, 1, 0, 0])
    predictions = np.array([1, 0, 0, 0])
    metrics = task(("neg", "pos")).compute_metrics(one_hot_logits(predictions, 2), labels)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["mcc"] > 0


def test_perfect_classification():
    labels = np.array([0, 1, 2, 1])
    metrics = task().compute_metrics(one_hot_logits(labels, 3), labels)
    assert metrics == pytest.approx({"accuracy": 1.0, "f1": 1.0, "macro_f1": 1.0, "mcc": 1.0})


def test_regression_metrics():
    reg = SequenceClassification(SINGLE, LabelSpec("regression"))
    labels = np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32)
    logits = np.array([[0.1], [1.2], [1.9], [3.5]], dtype=np.float32)
    metrics = reg.compute_metrics(logits, labels)
    assert set(metrics) == {"pearson", "spearman", "mse"}
    assert set(metrics) == set(reg.metric_names)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert 0.9 < metrics["pearson"] <= 1.0
    assert metrics["mse"] == pytest.approx((0.01 + 0.04 + 0.01 + 0.25) / 4, rel=1e-5)


def test_regression_metrics_with_constant_predictions_are_finite():
    reg = SequenceClassification(SINGLE, LabelSpec("regression"))
    metrics = reg.compute_metrics(np.ones((3, 1)), np.array([0.0, 1.0, 2.0]))
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["mse"] == pytest.approx(2 / 3)


def test_default_metric_and_model_kwargs():
    cls = task(("neg", "pos"))
    assert cls.default_metric == "accuracy"
    kwargs = cls.model_kwargs()
    assert kwargs["num_labels"] == 2
    assert kwargs["id2label"] == {0: "neg", 1: "pos"}
    assert kwargs["label2id"] == {"neg": 0, "pos": 1}
    assert kwargs["problem_type"] == "single_label_classification"

    reg = SequenceClassification(SINGLE, LabelSpec("regression"))
    assert reg.default_metric == "pearson"
    assert reg.model_kwargs()["num_labels"] == 1
    assert reg.model_kwargs()["problem_type"] == "regression"


def test_format_predictions_gives_names_and_probabilities():
    cls = task(("neg", "neutral", "pos"))
    logits = np.array([[0.1, 0.2, 3.0], [2.0, 0.0, -1.0], [1000.0, 0.0, -1000.0]])
    records = cls.format_predictions(logits)
    assert [r["label"] for r in records] == ["pos", "neg", "neg"]
    for record in records:
        assert list(record["scores"]) == ["neg", "neutral", "pos"]
        assert sum(record["scores"].values()) == pytest.approx(1.0)
        assert all(0.0 <= p <= 1.0 and math.isfinite(p) for p in record["scores"].values())
        assert max(record["scores"], key=record["scores"].get) == record["label"]
    json.dumps(records)  # plain Python types only


def test_format_predictions_for_regression():
    reg = SequenceClassification(SINGLE, LabelSpec("regression"))
    records = reg.format_predictions(np.array([[0.25], [3.5]], dtype=np.float32))
    assert records == [
        {"label": 0.25, "scores": {"score": 0.25}},
        {"label": 3.5, "scores": {"score": 3.5}},
    ]


def test_tokenize_function_handles_pairs_and_truncation(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    pair = SequenceClassification(
        Columns("sentence1", "sentence2", "label"), LabelSpec("classification", ("0", "1"))
    )
    batch = {"sentence1": ["good movie", "bad"], "sentence2": ["the plot", "awful film was sad"]}
    out = pair.tokenize_function(tokenizer, max_length=6)(batch)
    assert out["length"] == [len(ids) for ids in out["input_ids"]]
    assert out["length"][0] == 6  # [CLS] good movie [SEP] the plot -> 7, truncated to 6
    assert max(out["length"]) <= 6
    assert out["token_type_ids"][1].count(1) >= 1  # the second sentence is marked

    single = task(("0", "1")).tokenize_function(tokenizer, max_length=32)({"text": ["good film"]})
    assert single["length"] == [4]  # [CLS] good film [SEP]
