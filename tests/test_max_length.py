"""data.max_length=auto: the length a classifier keeps, chosen from its training rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FILLER, sentiment_rows, write_csv

from tunesmith.cli import main
from tunesmith.tasks.lengths import choose_max_length


def test_short_rows_keep_128():
    choice = choose_max_length(np.full(1000, 60), limit=512, device_type="cpu")
    assert (choice.max_length, choice.rows_cut, choice.tokens_cut) == (128, 0.0, 0.0)


def test_long_rows_get_a_longer_length_up_to_the_devices_longest():
    lengths = np.random.default_rng(0).integers(200, 900, 2000)
    cpu = choose_max_length(lengths, limit=512, device_type="cpu")
    gpu = choose_max_length(lengths, limit=512, device_type="cuda")
    assert 128 < cpu.max_length == 256 < gpu.max_length <= 512
    assert "longest auto picks on a cpu" in cpu.reason
    assert cpu.rows_cut == pytest.approx((lengths > cpu.max_length).mean())


def test_rows_that_fit_a_length_get_the_shortest_such_length():
    lengths = np.r_[np.full(95, 150), np.full(5, 400)]  # 90% hold whole at 192
    choice = choose_max_length(lengths, limit=512, device_type="cpu")
    assert choice.max_length == 192 and choice.rows_cut == 0.05


def test_the_model_limit_bounds_the_choice():
    assert choose_max_length(np.full(10, 60), limit=64, device_type="cpu").max_length == 64
    long = choose_max_length(np.full(10, 500), limit=300, device_type="cuda")
    assert long.max_length == 300 and "limit" in long.reason


def train(model: Path, rows: list[dict], out: Path) -> dict:
    data = write_csv(out.parent / f"{out.name}.csv", rows)
    args = [f"model={model}", f"data.train={data}", f"output_dir={out}", "train.max_steps=1"]
    assert main(["train", *args, "train.method=fine-tune", "train.evals_per_epoch=0"]) == 0
    return json.loads((out / "decisions.json").read_text(encoding="utf-8"))


def test_auto_reads_the_rows(wide_model, tmp_path, capsys):
    short = train(wide_model, sentiment_rows(40), tmp_path / "short")
    filler = " ".join(FILLER * 25)  # 300 words
    long = train(
        wide_model,
        [{**r, "text": f"{r['text']} {filler}"} for r in sentiment_rows(40)],
        tmp_path / "long",
    )
    err = capsys.readouterr().err
    meta = json.loads((tmp_path / "long" / "model" / "tunesmith.json").read_text())

    assert short["max_length"]["value"] == 128
    assert short["max_length"]["train_rows_cut"] == 0.0
    assert 128 < long["max_length"]["value"] == meta["max_length"] <= 512
    assert "data.max_length=auto chose 128 tokens" in err
    assert f"data.max_length=auto chose {long['max_length']['value']} tokens" in err


def test_a_forced_length_is_kept(tiny_model, tmp_path):
    decisions = train(tiny_model, sentiment_rows(40), tmp_path / "forced")
    assert decisions["max_length"]["value"] == 64  # the tiny model's 64 positions
    data = write_csv(tmp_path / "t.csv", sentiment_rows(40))
    out = tmp_path / "n"
    args = [f"model={tiny_model}", f"data.train={data}", f"output_dir={out}"]
    assert main(["train", *args, "data.max_length=24", "train.max_steps=1"]) == 0
    decisions = json.loads((out / "decisions.json").read_text(encoding="utf-8"))
    assert decisions["max_length"] == {
        "value": 24,
        "reason": "data.max_length=24",
        "train_rows_cut": None,  # auto measured nothing: the rows cut are in truncated_rows
        "train_tokens_cut": None,
    }


def test_a_length_that_is_not_a_number_is_one_line(tmp_path, capsys):
    data = write_csv(tmp_path / "t.csv", sentiment_rows(20))
    assert main(["train", f"data.train={data}", "data.max_length=long"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "data.max_length must be auto or a whole number, got 'long'" in error
