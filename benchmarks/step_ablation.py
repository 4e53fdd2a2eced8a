"""What each speed path is worth: training steps of MiniLM on MRPC batches, the variants timed
round-robin in one process (same batches, 10-second turns), so machine drift hits all alike.

    python benchmarks/step_ablation.py                        # the default variants
    python benchmarks/step_ablation.py "512" "512 fast frozen" "1024 fast frozen layers=2"

A variant is a token budget followed by options: `fast` (FastDropout and attention dropout 0,
so PyTorch's fused attention runs), `frozen` (word embeddings fixed), `layers=N` (embeddings and
the bottom N layers fixed), `pad8` (lengths padded to multiples of 8).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from train_speed import MRPC, generated_pairs
from transformers import DataCollatorWithPadding

from tunesmith.compute import hardware
from tunesmith.compute.batching import TokenBudgetBatchSampler
from tunesmith.compute.kernels import use_fast_dropout
from tunesmith.models import freeze, load_sequence_classifier, load_tokenizer

DEFAULT_VARIANTS = (
    "512",
    "512 fast",
    "512 fast frozen",
    "512 fast frozen pad8",
    "512 fast frozen layers=2",
    "1024",
    "1024 fast frozen",
)
TURN_SECONDS, TURNS = 10.0, 4


def main(variants: list[str]) -> None:
    import csv
    import tempfile
    from pathlib import Path

    model_name = "builtin:minilm-l6"
    tokenizer = load_tokenizer(model_name)
    source = MRPC if (MRPC / "train.csv").is_file() else generated_pairs(Path(tempfile.mkdtemp()))
    with (source / "train.csv").open(encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    encoded = tokenizer(
        [r["sentence1"] for r in table], [r["sentence2"] for r in table], truncation=True
    )
    rows = [
        {**{k: encoded[k][i] for k in encoded}, "labels": int(table[i]["label"])}
        for i in range(len(table))
    ]
    lengths = np.array([len(r["input_ids"]) for r in rows])
    arms = [make_arm(v, model_name, tokenizer, lengths) for v in variants]
    for arm in arms:  # warm-up turn, not counted
        run_turn(arm, rows, 5.0, count=False)
    for _ in range(TURNS):
        for arm in arms:
            run_turn(arm, rows, TURN_SECONDS)
    print(f"machine: {hardware.describe()}")
    base = arms[0]["samples"] / arms[0]["seconds"]
    for arm in arms:
        rate = arm["samples"] / arm["seconds"]
        print(f"{arm['name']:28s} {rate:6.1f} samples/s  x{rate / base:.2f}")


def make_arm(variant: str, model_name: str, tokenizer, lengths: np.ndarray) -> dict:
    budget, *options = variant.split()
    fast = "fast" in options
    model = load_sequence_classifier(model_name, 0.0 if fast else None, num_labels=2).train()
    layers = next((int(o.split("=")[1]) for o in options if o.startswith("layers=")), 0)
    freeze(model, "frozen" in options, layers)
    if fast:
        use_fast_dropout(model)
    params = [p for p in model.parameters() if p.requires_grad]
    multiple = 8 if "pad8" in options else 1
    sampler = TokenBudgetBatchSampler(
        lengths, int(budget), shuffle=True, seed=1, pad_to_multiple_of=multiple
    )
    return {
        "name": variant,
        "model": model,
        "params": params,
        "optimizer": torch.optim.AdamW(params, lr=5e-5, fused=True),
        "batches": sampler.batches(),
        "collate": DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple),
        "next": 0,
        "seconds": 0.0,
        "samples": 0,
    }


def run_turn(arm: dict, rows: list[dict], seconds: float, count: bool = True) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        indices = arm["batches"][arm["next"] % len(arm["batches"])]
        arm["next"] += 1
        start = time.perf_counter()
        batch = arm["collate"]([rows[i] for i in indices])
        arm["model"](**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(arm["params"], 1.0)
        arm["optimizer"].step()
        arm["optimizer"].zero_grad(set_to_none=True)
        if count:
            arm["seconds"] += time.perf_counter() - start
            arm["samples"] += len(indices)


if __name__ == "__main__":
    main(sys.argv[1:] or list(DEFAULT_VARIANTS))
