"""A few labelled rows per class: which method runs and why, the mean-pooling layer, the export
that `pipeline` loads, tiny and paired data, and resume."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    NEGATIVE,
    POSITIVE,
    assert_same_weights,
    own_caches,
    pair_rows,
    resume_from_first_checkpoint,
    score_tolerance,
    sentence,
    write_csv,
)
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForMaskedLM,
    pipeline,
)

from tunesmith import models
from tunesmith.cli import main
from tunesmith.config import FewShotConfig
from tunesmith.data import Columns
from tunesmith.errors import UserError
from tunesmith.infer import Predictor
from tunesmith.tasks import LabelSpec, SequenceClassification, few_shot


def balanced_rows(per_class: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = [
        {"text": sentence(rng, words), "label": label}
        for label, words in (("positive", POSITIVE), ("negative", NEGATIVE))
        for _ in range(per_class)
    ]
    rng.shuffle(rows)
    return rows


def train_args(model: Path, train: Path, out: Path, *extra: str) -> list[str]:
    return ["train", f"model={model}", f"data.train={train}", f"output_dir={out}", *extra]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory) -> Path:
    """8 rows per class, nothing else given: the path a new user gets."""
    root = tmp_path_factory.mktemp("few-shot")
    train = write_csv(root / "train.csv", balanced_rows(8, seed=1))
    test = write_csv(root / "test.csv", balanced_rows(20, seed=2))
    with own_caches(root):
        argv = train_args(tiny_model, train, root / "run", f"data.test={test}")
        assert main([*argv, "few_shot.learning_rate=1e-3"]) == 0
    return root / "run"


def test_auto_takes_few_shot_up_to_the_threshold_only():
    settings = FewShotConfig(max_rows_per_class=10)

    def choose(requested: str, kind: str, rows: list[int], blocker: str | None = None):
        return few_shot.choose_method(requested, kind, rows, settings, blocker)

    assert choose("auto", "classification", [8, 10, 12]).few_shot
    above = choose("auto", "classification", [11, 12, 40])
    assert above.name == "fine-tune" and above.reason == "12 training rows per class > 10"
    assert choose("few-shot", "classification", [500, 500]).few_shot
    assert not choose("fine-tune", "classification", [2, 2]).few_shot
    assert not choose("auto", "regression", []).few_shot
    with pytest.raises(UserError, match="single-label classification; this data is multi_label"):
        choose("few-shot", "multi_label", [])
    # Where the path cannot train the run, auto keeps the course's recipe and says why.
    blocked = choose("auto", "classification", [8, 8], blocker="lora.r=4: LoRA ...")
    assert blocked.name == "fine-tune"
    assert blocked.reason == "8 training rows per class <= 10, but lora.r=4: LoRA ..."
    with pytest.raises(UserError, match=r"train\.method=few-shot: lora\.r=4: LoRA \.\.\.; use"):
        choose("few-shot", "classification", [8, 8], blocker="lora.r=4: LoRA ...")


def test_what_blocks_the_path_is_lora_or_a_model_without_a_bert_pooler(tiny_model, tmp_path):
    bert = models.classifier_layout(str(tiny_model))
    assert few_shot.blocked_by(0, bert) is None
    assert few_shot.blocked_by(4, bert).startswith("lora.r=4: LoRA adapters would move")
    assert few_shot.blocked_by(0, None) is None  # unreadable: the model loader says why
    distilbert = tiny_distilbert(tiny_model, tmp_path / "distilbert")
    reason = "DistilBertForSequenceClassification is not a BERT-style encoder with a pooler"
    assert few_shot.blocked_by(0, models.classifier_layout(str(distilbert))) == reason
    # End to end: 8 rows per class on DistilBERT train by the course's recipe, and say why.
    train = write_csv(tmp_path / "train.csv", balanced_rows(8, seed=1))
    argv = train_args(distilbert, train, tmp_path / "run", "train.max_steps=1")
    assert main(argv) == 0
    method = json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]["method"]
    limit = FewShotConfig().max_rows_per_class
    assert method["name"] == "fine-tune"
    assert method["reason"] == f"8 training rows per class <= {limit}, but {reason}"


def tiny_distilbert(tiny_model: Path, out: Path) -> Path:
    """tiny_model's vocabulary and sizes in a DistilBERT, which has no pooler."""
    config = DistilBertConfig(
        vocab_size=BertTokenizerFast.from_pretrained(tiny_model).vocab_size,
        dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64,
    )  # fmt: skip
    DistilBertForMaskedLM(config).save_pretrained(out)
    BertTokenizerFast.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_the_run_says_which_method_and_why(run, tiny_model, tmp_path, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["method"] == {
        "name": "few-shot",
        "reason": f"8 training rows per class <= {FewShotConfig().max_rows_per_class}; "
        "each class name joins the training rows 4 times",
    }
    # Nothing held out of 16 rows and 2 x 4 named: every one trains, the last step is exported.
    assert metrics["data"]["rows"] == {"train": 24, "test": 40}
    assert "validation" not in metrics and metrics["best_step"] == 20
    assert "calibration_error" in metrics["test_details"]
    # Above the threshold: the course's recipe, validation held out as always.
    train = write_csv(tmp_path / "train.csv", balanced_rows(8, seed=1))
    argv = train_args(tiny_model, train, tmp_path / "run", "few_shot.max_rows_per_class=7")
    assert main([*argv, "train.max_steps=1"]) == 0
    assert "method fine-tune (8 training rows per class > 7)" in capsys.readouterr().err
    assert "validation" in json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_the_method_counts_the_rows_data_max_train_samples_leaves(tiny_model, tmp_path):
    train = write_csv(tmp_path / "train.csv", balanced_rows(40, seed=3))
    limits = ("few_shot.max_rows_per_class=20", "data.max_train_samples=16", "train.max_steps=1")
    assert main(train_args(tiny_model, train, tmp_path / "run", *limits)) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 40 rows a class in the file, 16 rows sampled: few-shot, nothing held out, names joined.
    assert metrics["data"]["method"]["name"] == "few-shot"
    assert metrics["data"]["rows"] == {"train": 16 + 2 * 4}


def test_class_names_join_the_rows_only_where_they_are_words():
    assert few_shot.names_are_words(["joy", "Sci/Tech", "très bien"])
    assert not few_shot.names_are_words(["0", "1"])
    assert not few_shot.names_are_words(["LABEL_0", "LABEL_1"])
    assert not few_shot.names_are_words(["joy", "2"])
    rows = Dataset.from_dict({"text": ["a", "b"], "label": ["joy", "fear"], "labels": [1, 0]})
    grown = few_shot.with_label_names(rows, "text", ["fear", "joy"], 2, "{}")
    assert grown["text"] == ["a", "b", "fear", "fear", "joy", "joy"]
    assert grown["labels"] == [1, 0, 0, 0, 1, 1]
    assert grown.features == rows.features
    templated = few_shot.with_label_names(rows, "text", ["fear", "joy"], 1, "about {}.")
    assert templated["text"] == ["a", "b", "about fear.", "about joy."]


def test_the_pooling_layer_passes_on_the_masked_mean(tiny_model):
    """Position 0 of the added layer is the LayerNorm of the mean over the real tokens of the
    layer below (the [CLS] state it adds is 1e3 times smaller), so padding changes nothing."""
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    texts = ["good", "the film was quite bad and the plot was poor"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        below = model.bert(**batch).last_hidden_state
        few_shot.add_mean_pooling_layer(model)
        pooled = []
        hook = model.bert.pooler.register_forward_hook(lambda m, a, o: pooled.append(a[0][:, 0]))
        padded = model(**batch).logits
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
        hook.remove()
    mask = batch["attention_mask"].unsqueeze(-1)
    mean = (below * mask).sum(1) / mask.sum(1)
    expected = torch.nn.functional.layer_norm(mean, mean.shape[-1:], eps=1e-12)
    assert torch.allclose(pooled[0], expected, atol=5e-3)
    assert torch.allclose(padded, alone, atol=1e-5)
    assert model.config.num_hidden_layers == 3


def test_a_smaller_probe_c_starts_the_head_softer(tiny_model):
    """The head starts as the probe: more regularization, smaller weights and logits, so the
    end-to-end phase still has a loss to learn from."""
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    names = ("negative", "positive")
    task = SequenceClassification(
        Columns("text", None, "label"), LabelSpec("classification", names)
    )
    rows = balanced_rows(8, seed=4)
    train = Dataset.from_dict(
        {"text": [r["text"] for r in rows], "labels": [names.index(r["label"]) for r in rows]}
    ).map(task.tokenize_function(tokenizer, max_length=64), batched=True)
    head_norms = []
    for c in (0.01, 100.0):
        model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
        few_shot.add_mean_pooling_layer(model)
        few_shot.fit_head(model, train, task.eval_collator(tokenizer, 1), 512, None, c, seed=0)
        head_norms.append(model.classifier.weight.norm().item())
    assert head_norms[0] < head_norms[1] / 10


@pytest.mark.bf16
def test_the_export_loads_in_pipeline_with_our_labels_and_scores(run):
    texts = [r["text"] for r in balanced_rows(10, seed=5)]
    predictor = Predictor(run)
    ours = predictor.predict_texts(texts)
    theirs = pipeline("text-classification", model=str(run / "model"), device="cpu")(
        texts, top_k=None
    )
    tolerance = score_tolerance(predictor.placement.precision)  # theirs: fp32
    for mine, hf in zip(ours, theirs, strict=True):
        assert {h["label"]: pytest.approx(h["score"], abs=tolerance) for h in hf} == mine["scores"]
        best = max(hf, key=lambda h: h["score"])
        if best["score"] - min(h["score"] for h in hf) > 2 * tolerance:  # not a near-tie
            assert mine["label"] == best["label"]


def test_two_rows_per_class_finish(tiny_model, tmp_path):
    train = write_csv(tmp_path / "train.csv", balanced_rows(2, seed=3))
    assert main(train_args(tiny_model, train, tmp_path / "run")) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["method"]["name"] == "few-shot"
    assert metrics["train"]["optimizer_steps"] == 10  # 10 epochs of one batch: 4 rows, 2 x 4 named


def test_sentence_pairs_and_a_large_validation_set(tiny_model, tmp_path):
    # Named classes, yet no name joins the rows: a name is no sentence pair.
    rows = [{**r, "label": "same" if r["label"] else "different"} for r in pair_rows(400, seed=3)]
    same = [r for r in rows if r["label"] == "same"]
    different = [r for r in rows if r["label"] == "different"]
    train = same[:6] + different[:6]
    train_csv = write_csv(tmp_path / "train.csv", train)
    validation = write_csv(tmp_path / "validation.csv", rows[100:300])
    argv = train_args(tiny_model, train_csv, tmp_path / "run", f"data.validation={validation}")
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["data"]["method"]["name"] == "few-shot"
    assert metrics["data"]["rows"] == {"train": 12, "validation": 200}
    assert 0.0 <= metrics["validation_details"]["calibration_error"] <= 1.0
    predicted = Predictor(tmp_path / "run").predict_texts(["good film"], ["great plot"])
    names = metrics["data"]["labels"]
    assert set(predicted[0]["scores"]) == set(names) and predicted[0]["label"] in names


@pytest.mark.parametrize("pick_best_step", [False, True])
def test_a_validation_file_scores_the_last_step_unless_asked_to_pick(
    tiny_model, tmp_path, pick_best_step
):
    train = write_csv(tmp_path / "train.csv", balanced_rows(8, seed=1))
    validation = write_csv(tmp_path / "validation.csv", balanced_rows(10, seed=2))
    argv = train_args(
        tiny_model,
        train,
        tmp_path / "run",
        f"data.validation={validation}",
        f"few_shot.pick_best_step={str(pick_best_step).lower()}",
    )
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    steps = metrics["train"]["optimizer_steps"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    evaluated = [r["step"] for r in map(json.loads, lines) if "validation" in r]
    if pick_best_step:  # 2 batches an epoch, 4 evaluations asked for: every step
        assert evaluated == list(range(1, steps + 1))
    else:
        assert evaluated == [steps] and metrics["best_step"] == steps


def test_resume_is_exact(run, tmp_path):
    """From an epoch-end checkpoint before the end, the run ends with the same weights."""
    resume_from_first_checkpoint(run, tmp_path / "run")
    assert_same_weights(run, tmp_path / "run")


def test_the_report_of_a_run_without_validation_says_why_it_has_no_predictions(run, tmp_path):
    from tunesmith.report import write_report

    page = write_report(run, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Predictions need the validation rows: the run held none out (few-shot" in page


def test_calibration_error_by_hand():
    """Two bins used: 0.9 confidence with 1 of 2 right (gap 0.4), 0.6 with 2 of 2 (gap 0.4);
    ECE = 2/4 * 0.4 + 2/4 * 0.4."""
    from tunesmith.metrics import calibration_error

    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 1])
    assert calibration_error(probabilities, labels) == pytest.approx(0.4)
