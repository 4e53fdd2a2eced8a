"""Gradient accumulation: micro-batches weighted by their loss items, so a window of unequal
micro-batches updates like one batch of all their rows; and a non-finite loss on one process
handled by all of them together."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from conftest import sentiment_rows
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertTokenizerFast,
    DataCollatorWithPadding,
    GPT2Config,
    GPT2LMHeadModel,
)

from tunesmith.config import LanguageModelConfig
from tunesmith.data import Columns
from tunesmith.tasks import LabelSpec, LanguageModeling, SequenceClassification
from tunesmith.tasks.language_modeling import IGNORE
from tunesmith.training import loop


def classification_case(tiny_model: Path):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    rows = sentiment_rows(8, seed=5)
    batch = DataCollatorWithPadding(tokenizer)(
        [{**tokenizer(r["text"]), "labels": int(r["label"] == "positive")} for r in rows]
    )
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    task = SequenceClassification(
        Columns("text", None, "label"), LabelSpec("classification", ("negative", "positive"))
    )
    return model, task, batch


def masked_lm_case(tiny_model: Path):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 30, (8, 12), generator=generator)
    labels = torch.full_like(input_ids, IGNORE)
    for row in range(8):  # 1, 2, ... predicted tokens: the rows weigh differently
        labels[row, : row + 1] = input_ids[row, : row + 1]
        input_ids[row, : row + 1] = 4  # [MASK]
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    task = LanguageModeling("masked-lm", Columns("text", None, None), LanguageModelConfig())
    return AutoModelForMaskedLM.from_pretrained(tiny_model), task, batch


def causal_lm_case(tiny_model: Path):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=2, n_positions=32)
    model = GPT2LMHeadModel(config)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, 40, (8, 10), generator=generator)
    labels = input_ids.clone()
    # Prompts (not learned) of 0 tokens in the first micro-batch, 8 down to 4 in the second: the
    # first token, never predicted, counts in one micro-batch and not in the other.
    for row in range(3, 8):
        labels[row, : 11 - row] = IGNORE
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}
    task = LanguageModeling("causal-lm", Columns("text", None, None), LanguageModelConfig())
    return model, task, batch


def weighted_classification_case(tiny_model: Path):
    """Class weights make rows weigh unequally, as the classes of skewed data are meant to."""
    model, task, batch = classification_case(tiny_model)
    return model, dataclasses.replace(task, class_weights=(0.3, 2.5)), batch


@pytest.mark.parametrize(
    "case",
    [classification_case, weighted_classification_case, masked_lm_case, causal_lm_case],
)
def test_unequal_micro_batches_give_the_gradient_of_one_batch(case, tiny_model):
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True)
    model, task, batch = case(tiny_model)
    model.float().eval()  # no dropout: the two windows see the same function

    def window_gradients(window: list[dict]) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss, nonfinite = loop.accumulate_window(accelerator, model, task, window)
        assert nonfinite is None
        return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    whole_loss, whole = window_gradients([batch])
    parts = [{k: v[:3] for k, v in batch.items()}, {k: v[3:] for k, v in batch.items()}]
    split_loss, split = window_gradients(parts)
    assert split_loss == pytest.approx(whole_loss, abs=1e-6)
    assert whole.keys() == split.keys() and whole
    for name, grad in whole.items():
        torch.testing.assert_close(split[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_loss_items_are_what_each_task_averages_over(tiny_model):
    labels = torch.tensor([[IGNORE, 5, 6, IGNORE], [7, IGNORE, IGNORE, IGNORE]])
    settings = LanguageModelConfig()
    masked = LanguageModeling("masked-lm", Columns("text", None, None), settings)
    causal = LanguageModeling("causal-lm", Columns("text", None, None), settings)
    assert masked.loss_items({"labels": labels}) == 3
    assert causal.loss_items({"labels": labels}) == 2  # the first token is never predicted
    _, classifier, batch = classification_case(tiny_model)
    assert classifier.loss_items(batch) == 8


# ---- two processes on gloo, started here as torchrun would ----


def two_processes(
    tmp_path: Path, script: str, args: list[str], **env: str
) -> tuple[list[int], list[str]]:
    """(exit codes, stderr texts) of `script` run as rank 0 and rank 1."""
    path = tmp_path / "worker.py"
    path.write_text(script)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs, logs = [], [tmp_path / f"rank{rank}.err" for rank in range(2)]
    for rank in range(2):
        ranks = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        with logs[rank].open("w") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(path), *args],
                    env={**os.environ, **ranks, "LOCAL_WORLD_SIZE": "2", **rendezvous, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    try:
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:  # a hang fails the test, and the processes do not outlive it
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return codes, [log.read_text() for log in logs]


# Rank 0 accumulates rows 0-2 and 3, rank 1 rows 4 and 5-7; each writes its largest distance
# from the gradient of one batch of all 8 rows on one process.
GRADIENT_WORKER = """
import json, os, sys
import torch
from accelerate import Accelerator
from tunesmith.training import loop

sys.path.insert(0, sys.argv[2])
from test_accumulation import classification_case

accelerator = Accelerator(cpu=True)
model, task, batch = classification_case(sys.argv[1])
ddp = accelerator.prepare(model).eval()  # every rank now holds rank 0's weights
single = type(model)(model.config).eval()
single.load_state_dict(ddp.module.state_dict())
single(**batch).loss.backward()
cuts = [(0, 3), (3, 4)] if accelerator.process_index == 0 else [(4, 5), (5, 8)]
window = [{k: v[a:b] for k, v in batch.items()} for a, b in cuts]
loss, nonfinite = loop.accumulate_window(accelerator, ddp, task, window)
distance = max(
    (p.grad - q.grad).abs().max().item()
    for p, q in zip(ddp.module.parameters(), single.parameters(), strict=True)
    if q.grad is not None
)
result = {"distance": distance, "loss": loss, "single": single(**batch).loss.item()}
print(json.dumps(result), file=sys.stderr)
"""


def test_two_processes_accumulate_the_gradient_of_one_batch(tiny_model, tmp_path):
    tests = str(Path(__file__).parent)
    codes, errors = two_processes(tmp_path, GRADIENT_WORKER, [str(tiny_model), tests])
    assert codes == [0, 0], errors
    for text in errors:
        result = json.loads(next(ln for ln in text.splitlines() if ln.startswith('{"distance"')))
        assert result["distance"] < 1e-6
        assert result["loss"] == pytest.approx(result["single"], abs=1e-6)


# `tunesmith train` with rank 1's Nth training loss turned into NaN.
NAN_WORKER = """
import os, sys
from transformers import BertForSequenceClassification
from tunesmith.cli import main

forward = BertForSequenceClassification.forward
calls = [0]

def patched(self, *args, **kwargs):
    out = forward(self, *args, **kwargs)
    if self.training and os.environ["RANK"] == "1":
        calls[0] += 1
        if calls[0] == int(os.environ["NAN_ON_CALL"]):
            out.loss = out.loss * float("nan")
    return out

BertForSequenceClassification.forward = patched
code = main(sys.argv[1:])
# Left alive, the process group sometimes aborted the exit (-6 instead of the code).
import torch.distributed
assert not torch.distributed.is_initialized(), "process group left alive"
sys.exit(code)
"""


def run_two_processes(
    tiny_model: Path, data: tuple[Path, Path], tmp_path: Path, nan_on_call: int, *settings: str
) -> tuple[list[int], list[str], Path]:
    """(exit codes, stderr texts, output_dir) of a 6-step run in 2 processes."""
    train, validation = data
    out = tmp_path / "run"
    args = [
        "train",
        f"model={tiny_model}",
        f"data.train={train}",
        f"data.validation={validation}",
        f"output_dir={out}",
        "train.micro_batch_size=16",
        "train.max_steps=6",
        "train.eval_every_steps=6",
        "train.logging_steps=1",
        *settings,
    ]
    codes, errors = two_processes(tmp_path, NAN_WORKER, args, NAN_ON_CALL=str(nan_on_call))
    return codes, errors, out


def test_nan_on_one_process_stops_every_process(tiny_model, sentiment_csv, tmp_path):
    codes, errors, out = run_two_processes(tiny_model, sentiment_csv, tmp_path, 3)
    assert codes == [2, 2], errors
    assert "loss is nan at optimizer step 3" in errors[1] and "training rows" in errors[1]
    assert "non-finite on another process at optimizer step 3" in errors[0], errors[0]
    assert not (out / "metrics.json").exists()


def test_nan_on_one_process_skips_the_step_on_every_process(tiny_model, sentiment_csv, tmp_path):
    # Two micro-batches per step: rank 1's 4th is the last of step 2's, whose backward would
    # all-reduce the gradients.
    codes, errors, out = run_two_processes(
        tiny_model,
        sentiment_csv,
        tmp_path,
        4,
        "train.gradient_accumulation_steps=2",
        "train.on_nonfinite_loss=skip",
    )
    assert codes == [0, 0], errors
    result = json.loads((out / "metrics.json").read_text())
    assert result["train"]["steps_per_process"] == [6, 6]
    assert result["train"]["skipped_nonfinite_steps"] == 1
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 7))
    # Step 2 was skipped: its logged loss is NaN, every other step's is finite.
    assert [math.isnan(r["loss"]) for r in logged] == [False, True, False, False, False, False]
