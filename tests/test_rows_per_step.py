"""Long rows still make a batch: with train.gradient_accumulation_steps unset, a classifier's
micro-batches accumulate until an optimizer step sees train.rows_per_step rows on average."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import assert_same_weights, resume_from_first_checkpoint, sentiment_rows, write_csv

from tunesmith.cli import main


def long_rows(n: int, seed: int) -> list[dict]:
    """Rows of 40-60 words: at data.max_length=48 and a 48-token budget, one per micro-batch."""
    rng = random.Random(seed)
    rows = sentiment_rows(n, seed)
    for row in rows:
        row["text"] += " " + " ".join(["the film was"] * rng.randint(14, 20))
    return rows


def train(model: Path, rows: list[dict], out: Path, *extra: str) -> tuple[dict, dict]:
    data = write_csv(out.parent / f"{out.name}.csv", rows)
    args = [
        "train",
        f"model={model}",
        f"data.train={data}",
        f"output_dir={out}",
        "train.method=fine-tune",
        "train.epochs=1",
        "train.evals_per_epoch=0",
        *extra,
    ]
    assert main(args) == 0
    decisions = json.loads((out / "decisions.json").read_text())
    return decisions, json.loads((out / "metrics.json").read_text())


def test_long_rows_accumulate_to_the_rows_target(tiny_model, tmp_path, capsys):
    decisions, metrics = train(
        tiny_model,
        long_rows(96, seed=1),
        tmp_path / "long",
        "data.max_length=48",
        "train.max_tokens_per_batch=48",
    )
    assert decisions["train"]["gradient_accumulation_steps"] == 4  # one row per micro-batch
    assert decisions["rows_per_step"] >= 4
    assert metrics["train"]["optimizer_steps"] == 22  # 86 rows after validation, 4 a step
    assert "x 4 accumulation" in capsys.readouterr().err


def test_short_rows_keep_one_micro_batch_per_step(tiny_model, tmp_path):
    decisions, _ = train(tiny_model, sentiment_rows(96, seed=1), tmp_path / "short")
    assert decisions["train"]["gradient_accumulation_steps"] == 1  # 512 tokens hold 4+ rows
    assert decisions["rows_per_step"] >= 4


def test_a_target_and_a_fixed_count(tiny_model, tmp_path):
    rows = long_rows(96, seed=1)
    fit = ("data.max_length=48", "train.max_tokens_per_batch=48")
    decisions, _ = train(tiny_model, rows, tmp_path / "r8", *fit, "train.rows_per_step=8")
    assert decisions["train"]["gradient_accumulation_steps"] == 8
    decisions, _ = train(
        tiny_model, rows, tmp_path / "g2", *fit, "train.gradient_accumulation_steps=2"
    )
    assert decisions["train"]["gradient_accumulation_steps"] == 2  # a set count is kept


def test_a_run_of_accumulated_long_rows_resumes_exactly(wide_model, tmp_path):
    """auto's length and the accumulation count are decided again on resume: the same ones."""
    rows = long_rows(96, seed=1)
    data = write_csv(tmp_path / "long.csv", rows)
    out = tmp_path / "run"
    args = [
        "train",
        f"model={wide_model}",
        f"data.train={data}",
        f"output_dir={out}",
        "train.method=fine-tune",
        "train.epochs=2",
        "train.max_tokens_per_batch=96",
        "checkpoint.every_steps=5",
    ]
    assert main(args) == 0
    decisions = json.loads((out / "decisions.json").read_text())
    assert decisions["max_length"]["value"] > 64 and decisions["rows_per_step"] >= 3.8
    resume_from_first_checkpoint(out, tmp_path / "resumed")
    assert_same_weights(out, tmp_path / "resumed")
