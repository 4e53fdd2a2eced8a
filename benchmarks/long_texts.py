"""Long texts: how much of a text a classifier keeps, and which part, on long-text sets.

    python benchmarks/long_texts.py [--data bbc_news 20newsgroups] [--arms ...] [--seeds 1]
                                    [--epochs 1] [--log benchmarks/results/long_texts.jsonl]

Each arm fine-tunes builtin:minilm-l6 with the defaults but for data.max_length and
data.truncation, on ../shared/data/<set>/train.csv (validation held out of it as the defaults
do), and scores test.csv with the exported model: accuracy and macro-F1 on every test text, and
accuracy on the texts longer than the model's 512 positions (where every arm loses something).
Arms: `auto` (the defaults: data.max_length=auto), `auto-head+tail`, `128` (the first 128
tokens, the old default), `256`, `384`, `512` (the first N; 512 is MiniLM's limit), `512-tail`
(the last 512), `N-head+tail` (the first quarter and the last three quarters: at 512 the first
128 and the last 382, Sun et al. 2019), `chunk` (data.long_texts=chunk: windows of auto's
length over the whole text, every one trained on, a text's answer the mean of its windows'
logits; the same model is also scored with max pooling, as `chunk-max-pooled`), `chunk-512`.
`course` is the course's chapter 3 recipe on the `Trainer` at its own settings (tokenizer
truncation=True, i.e. 512 tokens; 8 rows a batch; 5e-5; fp32, the Trainer's CPU default) on
the same training rows. Every run appends a line to --log
with the CPU it ran on; the table beside the log (long_texts.md) gives each data set and arm's
mean over the seeds in the log.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import results  # benchmarks/results.py, beside this script
from datasets import Dataset
from sklearn.metrics import accuracy_score, f1_score

from tunesmith.api import train
from tunesmith.compute import hardware
from tunesmith.infer import Predictor
from tunesmith.models import load_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARMS = {  # name -> (data.max_length, data.truncation, data.long_texts)
    "auto": ("auto", "head", "truncate"),  # the defaults
    "auto-head+tail": ("auto", "head+tail", "truncate"),
    "128": (128, "head", "truncate"),
    "256": (256, "head", "truncate"),
    "256-head+tail": (256, "head+tail", "truncate"),
    "384": (384, "head", "truncate"),
    "512": (512, "head", "truncate"),
    "512-tail": (512, "tail", "truncate"),
    "512-head+tail": (512, "head+tail", "truncate"),
    "chunk": ("auto", "head", "chunk"),  # windows of auto's length, mean of their logits
    "chunk-512": (512, "head", "chunk"),
}
# A chunked model is also scored with each other pooling (the model is the same: only how
# its windows' logits combine differs), as arm "<arm>-<pooling>-pooled".
OTHER_POOLINGS = ("max",)
MODEL_POSITIONS = 512
COURSE = "course"  # the course's recipe on the Trainer: truncation=True (512), 8 rows, 5e-5, fp32


def run_arm(data: str, arm: str, seed: int, epochs: float, root: Path) -> list[dict]:
    if arm == COURSE:
        return [run_course(data, seed, epochs, root)]
    max_length, truncation, long_texts = ARMS[arm]
    out = root / f"{data}-{arm}-{seed}"
    started = time.perf_counter()
    result = train(
        {
            "model": "builtin:minilm-l6",
            "output_dir": str(out),
            "data": {
                "train": str(DATA / data / "train.csv"),
                "max_length": max_length,
                "truncation": truncation,
                "long_texts": long_texts,
            },
            "train": {"epochs": epochs, "seed": seed},
        }
    )
    wall = time.perf_counter() - started
    decisions = json.loads((out / "decisions.json").read_text(encoding="utf-8"))
    test = pd.read_csv(DATA / data / "test.csv")
    predictor = Predictor(out)
    training = {
        "train_rows_cut": result["data"]["truncated_rows"]["train"],
        "train_rows": result["data"]["rows"]["train"],
        "train_samples": result["data"]["samples"]["train"],  # chunk: windows
        "optimizer_steps": result["train"]["optimizer_steps"],
        "rows_per_step": decisions["rows_per_step"],
        "max_length": decisions["max_length"]["value"],
        "train_seconds": result["train"]["seconds"],
        "wall_seconds": round(wall, 1),
    }
    records = []
    poolings = [predictor.meta["pooling"], *OTHER_POOLINGS] if long_texts == "chunk" else [None]
    for pooling in poolings:
        if pooling is not None:
            predictor.meta["pooling"] = pooling  # the same model's windows, combined otherwise
        predicted = [p["label"] for p in predictor.predict_texts(test["text"].tolist())]
        name = arm if pooling in (None, "mean") else f"{arm}-{pooling}-pooled"
        records.append(_scores(data, name, seed, epochs, test, predicted) | training)
    return records


def run_course(data: str, seed: int, epochs: float, root: Path) -> dict:
    """The course's chapter 3 recipe on the Trainer, on the training rows tunesmith trains on
    (its held-out validation left out), scored on the same test rows."""
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunesmith.config import config_from_dict
    from tunesmith.models import resolve_model
    from tunesmith.preprocess import task_splits

    cfg = config_from_dict(
        {"data": {"train": str(DATA / data / "train.csv")}, "train": {"seed": seed}}
    )
    made = task_splits(cfg)
    names = list(made.task.labels.names)
    tokenizer = load_tokenizer("builtin:minilm-l6")
    train_rows = made.splits["train"].map(
        lambda b: tokenizer(b["text"], truncation=True), batched=True
    )
    train_rows = train_rows.select_columns(
        ["input_ids", "token_type_ids", "attention_mask", "labels"]
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model("builtin:minilm-l6"), num_labels=len(names)
    )
    args = TrainingArguments(
        output_dir=str(root / f"{data}-course-{seed}"),
        num_train_epochs=epochs,
        per_device_train_batch_size=8,
        learning_rate=5e-5,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        per_device_eval_batch_size=64,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    started = time.perf_counter()
    seconds = trainer.train().metrics["train_runtime"]
    test = pd.read_csv(DATA / data / "test.csv")
    encoded = Dataset.from_dict(dict(tokenizer(test["text"].tolist(), truncation=True)))
    logits = trainer.predict(encoded).predictions
    predicted = [names[i] for i in np.asarray(logits).argmax(-1)]
    wall = time.perf_counter() - started
    return _scores(data, COURSE, seed, epochs, test, predicted) | {
        "train_rows_cut": int(sum(len(ids) >= MODEL_POSITIONS for ids in train_rows["input_ids"])),
        "train_rows": len(train_rows),
        "optimizer_steps": -(-len(train_rows) // 8),
        "rows_per_step": 8.0,
        "max_length": MODEL_POSITIONS,
        "train_seconds": round(seconds, 2),
        "wall_seconds": round(wall, 1),
    }


def _scores(
    data: str, arm: str, seed: int, epochs: float, test: pd.DataFrame, predicted: list
) -> dict:
    lengths = np.asarray(
        [
            len(ids)
            for ids in load_tokenizer("builtin:minilm-l6")(test["text"].tolist())["input_ids"]
        ]
    )
    right = np.asarray(predicted) == test["label"].to_numpy()
    long_rows = lengths > MODEL_POSITIONS
    return {
        "data": data,
        "arm": arm,
        "seed": seed,
        "epochs": epochs,
        "test_accuracy": float(accuracy_score(test["label"], predicted)),
        "test_macro_f1": float(f1_score(test["label"], predicted, average="macro")),
        "long_test_rows": int(long_rows.sum()),
        "long_test_accuracy": float(right[long_rows].mean()) if long_rows.any() else None,
        "cpu": hardware.describe()["cpu"],
        "cpu_flags": hardware.describe()["cpu_flags"],
    }


def table(log: Path) -> list[str]:
    runs = results.read_log(log)
    lines = [
        "| data | arm | max_length | seeds | test accuracy | macro-F1 | accuracy on texts > 512 "
        "tokens (rows) | train rows cut | rows per step | optimizer steps | train s | "
        "train time / 512's |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for data in dict.fromkeys(r["data"] for r in runs):
        full = [r["train_seconds"] for r in runs if r["data"] == data and r["arm"] == "512"]
        pooled = [f"{a}-{p}-pooled" for a in ARMS if ARMS[a][2] == "chunk" for p in OTHER_POOLINGS]
        for arm in [*ARMS, *pooled, COURSE]:
            mine = [r for r in runs if r["data"] == data and r["arm"] == arm]
            if not mine:
                continue
            mean = functools.partial(results.mean, mine)

            cut = mean("train_rows_cut") / mean("train_rows")
            ratio = f"{mean('train_seconds') / statistics.mean(full):.2f}" if full else "-"
            length = mine[0].get("max_length", ARMS.get(arm, ["-"])[0])  # older lines lack it
            if "chunk" in arm:
                cut = 0.0  # windows: every token trained on
            lines.append(
                f"| {data} | {arm} | {length} | {len(mine)} | "
                f"{mean('test_accuracy'):.4f} | {mean('test_macro_f1'):.4f} | "
                f"{mean('long_test_accuracy'):.4f} ({mine[0]['long_test_rows']}) | {cut:.0%} | "
                f"{mean('rows_per_step'):.1f} | {mean('optimizer_steps'):.0f} | "
                f"{mean('train_seconds'):.0f} | {ratio} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["bbc_news", "20newsgroups"])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=[*ARMS, COURSE])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--log", type=Path, default=results.RESULTS / "long_texts.jsonl")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tunesmith-long-texts-"))
    for data in args.data:
        for seed in range(args.seeds):
            for arm in args.arms:
                for record in run_arm(data, arm, seed, args.epochs, root):
                    with args.log.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    print(json.dumps(record), flush=True)
    lines = [*results.header("Long texts: how much of a text, and which part"), *table(args.log)]
    path = results.write(args.log.stem, lines, args.log.parent)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
