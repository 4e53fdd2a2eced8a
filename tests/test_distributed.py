"""Two CPU processes on gloo through `tunesmith train --num-processes 2` (accelerate launch)."""

from __future__ import annotations

import json

import pytest
from conftest import FILLER, sentiment_rows, write_csv
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from tunesmith.cli import main
from tunesmith.compute.inference import infer_logits
from tunesmith.data import read_table
from tunesmith.infer import Predictor


@pytest.mark.parametrize("method", ["fine-tune", "few-shot"])
def test_two_processes_take_equal_steps_and_match_single_process_metrics(
    method, tiny_model, sentiment_csv, tmp_path, capfd
):
    """Either method: auto would take few-shot for these 120 rows a class, and SetFit, the tool
    few-shot users leave, trains on one device (setfit #293, #541)."""
    train, validation = sentiment_csv
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--num-processes",
            "2",
            f"model={tiny_model}",
            f"data.train={train}",
            f"data.validation={validation}",
            f"output_dir={out}",
            f"train.method={method}",
            "train.epochs=2",
            "few_shot.epochs=2",
            "data.max_length=32",
            "train.max_tokens_per_batch=96",  # many batches, an odd count per epoch
            "few_shot.batch_size=24",  # the few-shot path's batches: 11 of its 248 rows
            "train.learning_rate=5e-3",
            "train.freeze_word_embeddings=false",
        ]
    )
    assert code == 0, capfd.readouterr().err[-2000:]
    captured = capfd.readouterr()
    assert "x 2 process(es)" in captured.err  # the effective batch is printed
    assert captured.out.count("output_dir") == 1  # one result line, from the main process
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["method"]["name"] == method
    steps = metrics["train"]["steps_per_process"]
    assert metrics["train"]["processes"] == 2
    assert steps == [metrics["train"]["optimizer_steps"]] * 2
    assert metrics["train"]["samples"] >= 2 * 240  # every row of both epochs, across ranks
    models = sorted(p.parent for p in tmp_path.rglob("config.json") if "step" not in str(p))
    assert models == [out / "model"]
    single = Predictor(out).evaluate(read_table(validation))
    for name in ("accuracy", "f1", "mcc"):
        assert single[name] == pytest.approx(metrics["validation"][name], abs=1e-9)
    assert single["rows"] == 60


def test_every_rank_runs_the_same_number_of_evaluation_batches(tiny_model):
    """Sharded engines gather weights in each forward: a rank that stops early hangs the rest."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    texts = [" ".join(["good"] * (1 + i % 9)) for i in range(23)]
    ds = Dataset.from_dict({"text": texts}).map(
        lambda b: {**tokenizer(b["text"]), "length": [len(t.split()) + 2 for t in b["text"]]},
        batched=True,
        remove_columns=["text"],
    )
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    collate = DataCollatorWithPadding(tokenizer)
    seen, counts = [], []
    for rank in range(3):
        calls.clear()
        indices, logits = infer_logits(model, ds, collate, 24, rank, 3)  # 24 tokens: many batches
        counts.append(len(calls))
        seen += indices.tolist()
        assert len(logits) == len(indices)
    assert len(set(counts)) == 1 and counts[0] > 1
    assert sorted(seen) == list(range(23))  # each row once, padding passes dropped


def test_two_processes_train_chunked_long_rows_with_auto_length_and_accumulation(
    wide_model, tmp_path, capfd
):
    """The long-text modes together on two ranks: auto picks a length past 128, each text
    becomes windows of it, micro-batches accumulate to 4 rows a step, and the evaluation the
    ranks share pools each text's windows as one process does."""
    rows = sentiment_rows(48, seed=3)
    for i, row in enumerate(rows):
        row["text"] = " ".join([*FILLER * (24 + i % 8), row["text"]])  # 290-380 words
    train = write_csv(tmp_path / "train.csv", rows[:36])
    validation = write_csv(tmp_path / "validation.csv", rows[36:])
    out = tmp_path / "run"
    args = [f"model={wide_model}", f"data.train={train}", f"data.validation={validation}"]
    args += ["data.long_texts=chunk", "train.method=fine-tune", "train.epochs=1"]
    code = main(["train", "--num-processes", "2", *args, f"output_dir={out}"])
    assert code == 0, capfd.readouterr().err[-2000:]

    decisions = json.loads((out / "decisions.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert 128 < decisions["max_length"]["value"] <= 256  # the longest auto picks on a CPU
    assert decisions["long_texts"]["windows"]["train"] == 2 * 36  # two windows a text
    assert decisions["rows_per_step"] >= 3.8
    assert metrics["train"]["steps_per_process"] == [metrics["train"]["optimizer_steps"]] * 2
    single = Predictor(out).evaluate(read_table(validation))
    assert single["rows"] == 12
    assert single["accuracy"] == pytest.approx(metrics["validation"]["accuracy"], abs=1e-9)
