"""Never lose a run: kill, resume, and end exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import own_caches, sentiment_rows, write_csv
from safetensors.torch import load_file

from tunesmith.cli import main
from tunesmith.runfolder import checkpoint

SETTINGS = (
    "train.micro_batch_size=8",
    "train.epochs=2",
    "train.learning_rate=3e-3",
    "train.logging_steps=1",
    "checkpoint.every_steps=3",
    "checkpoint.keep_last=2",
    "train.method=fine-tune",  # the course's loop; test_few_shot.py resumes the few-shot path
)


def train_args(tiny_model: Path, data: tuple[Path, Path], out: Path) -> list[str]:
    train, validation = data
    return [
        "train",
        f"model={tiny_model}",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        *SETTINGS,
    ]


def logged_steps(out: Path) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tunesmith", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_steps(proc: subprocess.Popen, out: Path, steps: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    jsonl = out / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= steps:
            return
        time.sleep(0.005)
    raise AssertionError(f"the run ended or stalled before step {steps}: {proc.poll()}")


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_file(a / "model/model.safetensors"), load_file(b / "model/model.safetensors")
    assert left.keys() == right.keys()
    for key in left:
        assert (left[key] - right[key]).abs().max().item() <= 1e-6, key


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume-data")
    return (
        write_csv(root / "train.csv", sentiment_rows(240, seed=1)),
        write_csv(root / "validation.csv", sentiment_rows(60, seed=2)),
    )


@pytest.fixture(scope="module")
def reference(tiny_model, data, tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must end up equal to: trained once."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    with own_caches(out.parent):
        assert main(train_args(tiny_model, data, out)) == 0
    return out


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_model, data, tmp_path, reference):
    out = tmp_path / "killed"
    kill_at = random.Random().randint(4, 55)  # any step of the 60, chosen afresh each run
    proc = start(train_args(tiny_model, data, out))
    wait_for_steps(proc, out, kill_at)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()

    assert main([*train_args(tiny_model, data, out), "--resume", "auto"]) == 0
    assert_same_weights(reference, out)
    assert logged_steps(out) == list(range(1, 61)), f"killed after step {kill_at}"
    resumed = json.loads((out / "metrics.json").read_text())
    assert (
        resumed["validation"] == json.loads((reference / "metrics.json").read_text())["validation"]
    )


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(
    tiny_model, data, tmp_path, reference, capsys
):
    out = tmp_path / "terminated"
    proc = start(train_args(tiny_model, data, out))
    wait_for_steps(proc, out, 10)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume auto" in err
    newest = checkpoint.step_folders(out)[-1]
    assert checkpoint.verify(newest) is None
    stopped_at = int(newest.name.removeprefix(checkpoint.STEP_PREFIX))
    assert logged_steps(out)[-1] == stopped_at  # the signal's step was checkpointed, off-schedule

    # An explicit step folder, and a changed setting that does not touch the weights.
    args = [*train_args(tiny_model, data, out), "train.logging_steps=2"]
    assert main([*args, "--resume", str(newest)]) == 0
    assert (
        f"resuming from {newest} at step {stopped_at}; the current config wins over the "
        f"checkpoint's: train.logging_steps: 1 -> 2"
    ) in capsys.readouterr().err
    assert_same_weights(reference, out)


def test_truncated_newest_checkpoint_falls_back_to_previous(
    tiny_model, data, tmp_path, reference, capsys
):
    out = tmp_path / "damaged"
    proc = start(train_args(tiny_model, data, out))
    wait_for_steps(proc, out, 20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    folders = checkpoint.step_folders(out)
    assert len(folders) == 2  # keep_last=2
    weights = folders[-1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert "model.safetensors" in checkpoint.verify(folders[-1])

    (folders[-1].parent / "step-00000099.tmp").mkdir()  # a save that a kill cut short
    assert main([*train_args(tiny_model, data, out), "--resume", "auto"]) == 0
    printed = capsys.readouterr().err
    assert "checkpoint step-00000099.tmp was cut short while saving; skipped" in printed
    assert f"checkpoint {folders[-1].name} is damaged (model.safetensors has" in printed
    assert f"resuming from {folders[-2]}" in printed
    assert_same_weights(reference, out)
    assert logged_steps(out) == list(range(1, 61))


def test_resume_refuses_a_finished_run(tiny_model, data, reference, capsys):
    assert main([*train_args(tiny_model, data, reference), "--resume", "auto"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.fixture
def nan_on_third_forward(monkeypatch):
    """The third training forward pass returns a NaN loss, as a bad batch would."""
    from transformers import BertForSequenceClassification

    forward = BertForSequenceClassification.forward
    calls = {"training": 0}

    def patched(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls["training"] += 1
            if calls["training"] == 3:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(BertForSequenceClassification, "forward", patched)


def test_nonfinite_loss_stops_naming_the_step(
    tiny_model, data, tmp_path, capsys, nan_on_third_forward
):
    out = tmp_path / "nan"
    assert main(train_args(tiny_model, data, out)) == 2
    err = capsys.readouterr().err
    assert "loss is nan at optimizer step 3" in err and "training rows" in err, err
    assert not (out / "metrics.json").exists()


def test_nonfinite_loss_skipped_when_asked(tiny_model, data, tmp_path, nan_on_third_forward):
    out = tmp_path / "skip"
    args = [*train_args(tiny_model, data, out), "train.on_nonfinite_loss=skip"]
    assert main(args) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["train"]["skipped_nonfinite_steps"] == 1
    assert result["train"]["optimizer_steps"] == 60


def test_a_diverged_model_is_never_kept_or_exported(tiny_model, data, tmp_path, capsys):
    out = tmp_path / "diverged"
    args = [
        *train_args(tiny_model, data, out),
        "train.learning_rate=1e30",
        "train.max_grad_norm=0",
        "train.warmup_ratio=0",
        "train.on_nonfinite_loss=skip",
        "train.max_steps=6",
    ]
    assert main(args) == 2
    assert "NaN/inf" in capsys.readouterr().err
    assert not checkpoint.best_weights(out).exists()
    assert not (out / "model").exists() and not (out / "metrics.json").exists()


def test_out_of_memory_names_the_budget_to_lower(tiny_model, data, tmp_path, capsys, monkeypatch):
    from transformers import BertForSequenceClassification

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(BertForSequenceClassification, "forward", out_of_memory)
    assert main([*train_args(tiny_model, data, tmp_path / "oom")]) == 2
    err = capsys.readouterr().err
    assert "out of memory at optimizer step 1" in err
    assert "train.micro_batch_size (now 8)" in err and "gradient_accumulation_steps" in err
