"""A run records what training decided once, in decisions.json; the report, predict and serve
read it instead of deciding again."""

from __future__ import annotations

import json

from conftest import sentiment_rows, write_csv

from tunesmith.cli import main
from tunesmith.report import load_run, load_splits


def test_report_keeps_the_method_a_lora_run_trained_with(tiny_model, tmp_path):
    """120 rows per class would take the few-shot path, which holds no validation out; LoRA
    blocks it, so training fine-tuned on a held-out split. Deciding again without the LoRA
    setting, the report chose few-shot and lost the validation rows."""
    train_csv = write_csv(tmp_path / "train.csv", sentiment_rows(240, seed=1))
    out = tmp_path / "run"
    args = [f"model={tiny_model}", f"data.train={train_csv}", f"output_dir={out}", "lora.r=8"]
    assert main(["train", *args, "train.max_steps=2", "train.micro_batch_size=16"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"]["method"]["name"] == "fine-tune"

    splits = load_splits(load_run(out))

    assert set(splits.datasets) == {"train", "validation"}
    assert len(splits.datasets["train"]) == metrics["data"]["rows"]["train"]
    assert len(splits.datasets["validation"]) == metrics["data"]["rows"]["validation"]


def test_a_few_shot_run_records_what_it_decided(tiny_model, tmp_path):
    train_csv = write_csv(tmp_path / "train.csv", sentiment_rows(24, seed=1))
    out = tmp_path / "run"
    args = [f"model={tiny_model}", f"data.train={train_csv}", f"output_dir={out}"]
    assert main(["train", *args, "train.max_steps=2", "few_shot.batch_size=8"]) == 0

    decisions = json.loads((out / "decisions.json").read_text(encoding="utf-8"))

    assert set(decisions) == {
        "task",
        "labels",
        "class_weights",
        "method",
        "train",
        "train_settings_set_by",
        "metric_for_best",
        "validation",
        "samples",
        "rows",
        "max_length",
        "truncated_rows",
        "long_texts",
        "precision",
        "frozen",
        "micro_batch",
        "rows_per_step",
        "pad_to_multiple_of",
        "eval_max_tokens_per_batch",
        "optimizer_steps",
        "eval_every_steps",
    }
    assert decisions["method"]["name"] == "few-shot"
    assert decisions["task"]["task"] == "classification"
    assert decisions["labels"] == ["negative", "positive"]
    assert decisions["validation"]["source"] is None  # few-shot holds none out
    # The settings the few-shot path trained with, and the keys that set them.
    assert decisions["train"]["micro_batch_size"] == 8
    assert decisions["train"]["epochs"] == 10.0
    assert decisions["train_settings_set_by"]["micro_batch_size"] == "few_shot.batch_size"
    assert decisions["precision"]["name"] in ("fp32", "bf16")


def test_out_of_memory_names_the_setting_the_method_trains_with(
    tiny_model, tmp_path, monkeypatch, capsys
):
    """The few-shot path's micro-batch is few_shot.batch_size: lowering train.* would not help."""
    import torch

    from tunesmith.training import engine

    def out_of_memory(*_):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(engine, "fit", out_of_memory)
    train_csv = write_csv(tmp_path / "train.csv", sentiment_rows(24, seed=1))
    args = [f"model={tiny_model}", f"data.train={train_csv}", f"output_dir={tmp_path / 'run'}"]

    assert main(["train", *args, "few_shot.batch_size=8"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "lower few_shot.batch_size (now 8)" in error
