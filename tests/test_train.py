"""End to end through the real entry points on a tiny random BERT: files, metrics, exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import own_caches, score_tolerance, sentiment_rows, write_csv
from transformers import pipeline

from tunesmith import api
from tunesmith.cli import main
from tunesmith.compute import hardware

# Enough steps for the tiny model to learn the one-word rule of the sentiment data; its random
# word embeddings hold nothing worth freezing.
LEARN = (
    "train.epochs=4",
    "train.micro_batch_size=16",
    "train.learning_rate=5e-3",
    "train.freeze_word_embeddings=false",
)


def run_train(model: Path, train: Path, validation: Path | None, out: Path, *extra: str) -> dict:
    args = [
        "train",
        f"model={model}",
        f"data.train={train}",
        f"output_dir={out}",
        "train.logging_steps=1",
        # The course's recipe: these few hundred rows would otherwise take the few-shot path
        # (tests/test_few_shot.py).
        "train.method=fine-tune",
        *extra,
    ]
    if validation is not None:
        args.append(f"data.validation={validation}")
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def learned(tiny_model, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(validation file, run folder, metrics) of one LEARN run, which several tests read."""
    root = tmp_path_factory.mktemp("learned")
    train = write_csv(root / "train.csv", sentiment_rows(240, seed=1))
    validation = write_csv(root / "validation.csv", sentiment_rows(60, seed=2))
    with own_caches(root):
        result = run_train(tiny_model, train, validation, root / "run", *LEARN)
    return validation, root / "run", result


def test_train_writes_a_complete_run_folder(learned):
    _, out, result = learned

    assert {
        "model",
        "metrics.json",
        "metrics.jsonl",
        "config.yaml",
        "training_curves.png",
        "confusion_matrix.png",
    } <= {p.name for p in out.iterdir()}
    assert {"accuracy", "f1", "mcc"} <= set(result["validation"])
    assert result["validation"]["accuracy"] > 0.9  # one sentiment word decides the label
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines]
    assert steps == sorted(set(steps)) and all("loss" in line for line in lines)
    assert steps[-1] == result["train"]["optimizer_steps"]
    assert lines[0]["loss"] > lines[-1]["loss"]
    assert "learning_rate: 0.005" in (out / "config.yaml").read_text()
    assert json.loads((out / "model" / "config.json").read_text())["id2label"] == {
        "0": "negative",
        "1": "positive",
    }


@pytest.mark.bf16
def test_exported_model_agrees_with_pipeline_and_predict(learned, tmp_path, capsys):
    validation, out, result = learned

    preds = tmp_path / "preds.jsonl"
    assert main(["predict", str(out), "--data", str(validation), "--out", str(preds)]) == 0
    ours = [json.loads(line) for line in preds.read_text().splitlines()]
    texts = [row["text"] for row in sentiment_rows(60, seed=2)]
    assert len(ours) == len(texts)
    classifier = pipeline("text-classification", model=str(out / "model"), device="cpu")
    theirs = classifier(texts, batch_size=16)  # fp32: the reference
    # `predict` runs in what auto picks here: bf16 on CPUs that compute it natively.
    tolerance = score_tolerance(hardware.inference_placement("auto").precision)
    for mine, hf in zip(ours, theirs, strict=True):
        assert mine["scores"][hf["label"]] == pytest.approx(hf["score"], abs=tolerance)
        if hf["score"] > 0.5 + tolerance:  # not a near-tie, which rounding may tip either way
            assert mine["label"] == hf["label"]
        assert sum(mine["scores"].values()) == pytest.approx(1.0, abs=1e-5)

    # evaluate on the validation file reproduces the run's validation metrics exactly
    scores_file = tmp_path / "scores.json"
    assert (
        main(["evaluate", str(out / "model"), "--data", str(validation), "--out", str(scores_file)])
        == 0
    )
    scores = json.loads(scores_file.read_text())
    for key, value in result["validation"].items():
        assert scores[key] == pytest.approx(value, abs=1e-9)

    # int8 (every linear layer quantized) and bf16 (emulated here, still correct): the same
    # labels on this easy data; the choice is named on stderr
    from tunesmith.infer import Predictor

    for precision in ("int8", "bf16"):
        argv = ["evaluate", str(out), "--data", str(validation), "--precision", precision]
        assert main([*argv, "--out", str(scores_file)]) == 0
        assert f"inference on cpu in {precision} (" in capsys.readouterr().err
        assert json.loads(scores_file.read_text())["accuracy"] == pytest.approx(scores["accuracy"])
    model = Predictor(out, precision="int8").model
    assert not any(type(m) is torch.nn.Linear for m in model.modules())


def test_predict_reads_stdin_lines(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    out = tmp_path / "run"
    run_train(tiny_model, train, validation, out, "train.max_steps=2")
    proc = subprocess.run(
        [sys.executable, "-m", "tunesmith", "predict", str(out)],
        input="a good film\nthe plot was awful\n",
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 2 and all(r["label"] in ("negative", "positive") for r in rows)


def test_sentence_pairs_get_token_type_ids(tiny_model, pair_csv, tmp_path):
    train, validation = pair_csv
    out = tmp_path / "run"
    result = run_train(tiny_model, train, validation, out, "train.max_steps=3")
    assert result["data"]["columns"] == {
        "text": "sentence1",
        "text_pair": "sentence2",
        "label": "label",
    }
    from tunesmith.infer import Predictor

    predictor = Predictor(out)
    encoded = predictor.tokenizer("a b", "c d")
    assert set(encoded["token_type_ids"]) == {0, 1}
    preds = predictor.predict_texts(["the film was good"], ["a great plot"])
    assert preds[0]["label"] in ("0", "1")


def test_regression_on_float_labels(tiny_model, tmp_path):
    rows = [
        {"sentence": r["text"], "score": (4.5 if r["label"] == "positive" else 0.5) + i % 3 / 10}
        for i, r in enumerate(sentiment_rows(120, seed=5))
    ]
    train = write_csv(tmp_path / "sts.csv", rows)
    out = tmp_path / "run"
    result = run_train(
        tiny_model, train, None, out, "train.max_steps=8", "train.learning_rate=3e-3"
    )
    assert result["data"]["task"] == "regression"
    assert {"pearson", "spearman", "mse"} <= set(result["validation"])
    assert result["data"]["rows"]["validation"] == 12  # 10% held out
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


def test_held_out_validation_is_stratified_and_seeded(tiny_model, tmp_path):
    rows = [
        {"text": r["text"], "label": "negative" if i % 4 else "positive"}
        for i, r in enumerate(sentiment_rows(200, seed=6))
    ]
    train = write_csv(tmp_path / "train.csv", rows)
    a = run_train(tiny_model, train, None, tmp_path / "a", "train.max_steps=1")
    b = run_train(tiny_model, train, None, tmp_path / "b", "train.max_steps=1")
    assert a["data"]["rows"] == {"train": 180, "validation": 20}
    # 25% positive overall -> exactly 5 of the 20 held-out rows when stratified
    assert a["baseline"]["majority_class"]["accuracy"] == pytest.approx(15 / 20)
    assert a["validation"] == b["validation"]


def test_tokenization_is_cached_between_runs(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    first = run_train(tiny_model, train, validation, tmp_path / "a", "train.max_steps=1")
    second = run_train(tiny_model, train, validation, tmp_path / "b", "train.max_steps=1")
    assert first["data"]["tokenization"] == "computed"
    assert second["data"]["tokenization"] == "cached"


def test_gradient_accumulation_counts_optimizer_steps(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv  # 240 rows
    result = run_train(
        tiny_model,
        train,
        validation,
        tmp_path / "run",
        "train.epochs=1",
        "train.micro_batch_size=8",
        "train.gradient_accumulation_steps=3",
    )
    assert result["train"]["samples"] == 240
    assert result["train"]["optimizer_steps"] == 10  # 30 micro-batches / 3


def test_same_seed_same_weights(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    a = run_train(tiny_model, train, validation, tmp_path / "a", "train.max_steps=4")
    b = run_train(tiny_model, train, validation, tmp_path / "b", "train.max_steps=4")
    assert a["validation"] == b["validation"]
    assert (tmp_path / "a/model/model.safetensors").read_bytes() == (
        tmp_path / "b/model/model.safetensors"
    ).read_bytes()


def test_python_api(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    result = api.train(
        {"model": str(tiny_model), "output_dir": str(tmp_path / "run")},
        data__train=str(train),
        data__validation=str(validation),
        train__max_steps=2,
    )
    assert "accuracy" in result["validation"]
    assert len(api.predict(tmp_path / "run", validation)) == 60
    assert api.evaluate(tmp_path / "run", validation)["rows"] == 60


def test_exported_model_is_the_best_evaluation(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    out = tmp_path / "run"
    result = run_train(tiny_model, train, validation, out, *LEARN, "train.eval_every_steps=5")
    evals = [
        r
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if "validation" in r
    ]
    assert [r["step"] for r in evals] == list(range(5, 61, 5))
    best = max(r["validation"]["accuracy"] for r in evals)
    first_best = next(r["step"] for r in evals if r["validation"]["accuracy"] == best)
    assert result["best_step"] == first_best
    assert result["validation"]["accuracy"] == best


def test_a_final_best_evaluation_is_not_run_again(tiny_model, sentiment_csv, tmp_path, monkeypatch):
    from tunesmith.training import state

    calls = []
    real = state.evaluate_split
    monkeypatch.setattr(state, "evaluate_split", lambda *a, **k: calls.append(1) or real(*a, **k))
    train, validation = sentiment_csv
    out = tmp_path / "run"
    # one evaluation, at the last step: the best by definition, and the exported weights
    steps = ("train.max_steps=3", "train.eval_every_steps=3")
    result = run_train(tiny_model, train, validation, out, *steps)
    assert len(calls) == 1 and result["best_step"] == 3
    scores = out / "exported.json"
    assert main(["evaluate", str(out), "--data", str(validation), "--out", str(scores)]) == 0
    exported = json.loads(scores.read_text())
    for key, value in result["validation"].items():
        assert exported[key] == pytest.approx(value, abs=1e-9)


def test_early_stopping_patience(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    out = tmp_path / "run"
    result = run_train(
        tiny_model,
        train,
        validation,
        out,
        "train.micro_batch_size=16",
        "train.epochs=20",
        "train.eval_every_steps=2",
        "train.early_stopping_patience=1",
        "train.metric_for_best=mcc",
    )
    evals = [
        r
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if "validation" in r
    ]
    assert result["train"]["optimizer_steps"] < 300  # stopped long before 20 epochs
    assert evals[-1]["step"] - result["best_step"] == 2 * 2  # two evaluations without progress


def test_truncation_is_counted_and_reported(tiny_model, sentiment_csv, tmp_path, capsys):
    train, validation = sentiment_csv
    result = run_train(
        tiny_model,
        train,
        validation,
        tmp_path / "run",
        "train.max_steps=1",
        "data.max_length=6",
        "train.max_tokens_per_batch=64",
    )
    truncated = result["data"]["truncated_rows"]
    assert 0 < truncated["train"] < 240 and truncated["validation"] > 0
    assert "cut to data.max_length=6" in capsys.readouterr().err
