"""`train.report_to=tensorboard`: Accelerate's tracker writes event files into the run folder."""

from __future__ import annotations

import importlib.util

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tunesmith.cli import main
from tunesmith.config import load_config
from tunesmith.errors import UserError


def test_tensorboard_event_files_hold_loss_and_validation(tiny_model, sentiment_csv, tmp_path):
    train, validation = sentiment_csv
    out = tmp_path / "run"
    args = [
        "train",
        f"model={tiny_model}",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        "train.epochs=1",
        "train.micro_batch_size=16",
        "train.learning_rate=5e-3",
        "train.logging_steps=1",
        "train.evals_per_epoch=2",
        "train.report_to=tensorboard",
        "train.method=fine-tune",  # evals_per_epoch and the learning rate are the course's
    ]
    assert main(args) == 0

    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"loss", "learning_rate", "epoch", "validation/accuracy"} <= set(tags)
    loss_steps = [e.step for e in events.Scalars("loss")]
    assert loss_steps == list(range(1, len(loss_steps) + 1))  # every optimizer step, once
    accuracy = events.Scalars("validation/accuracy")
    assert len(accuracy) == 2 and accuracy[-1].step == loss_steps[-1]
    assert all(0.0 <= e.value <= 1.0 for e in accuracy)

    # overwrite=true replaces the old run's event files instead of mixing two runs' curves.
    assert main([*args, "overwrite=true"]) == 0
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1


def test_report_to_is_checked(monkeypatch):
    with pytest.raises(UserError, match=r"train\.report_to must be tensorboard or none"):
        load_config(None, ["data.train=x.csv", "train.report_to=wandb"])
    assert load_config(None, ["data.train=x.csv", "train.report_to=none"]).train.report_to is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"tunesmith\[tensorboard\]"):
        load_config(None, ["data.train=x.csv", "train.report_to=tensorboard"])
