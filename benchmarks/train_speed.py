"""Training speed side by side, in one run, on the same model, data and machine:

  course        the course recipe on the HF Trainer: fp32, 8 random rows per batch,
                DataCollatorWithPadding, lr 5e-5, no warmup
  best_trainer  the fastest Trainer settings for this machine: group_by_length, 32 per batch,
                lr 1e-4 with 10% warmup, bf16 only where it is native, else fp32
  tunesmith     tunesmith's defaults (evaluated once, at the end, like the others)

    python benchmarks/train_speed.py                      # 1 epoch each
    python benchmarks/train_speed.py --time-to-accuracy   # also: course 3 epochs vs tunesmith
                                                          # until it reaches course's accuracy

Each arm runs in its own process, one after another, so peak memory is per arm and no arm
inherits another's threads or caches. The matmul peak (the fastest of MiniLM's layer shapes, in
the precision each arm used) is measured before and after the arms and the higher value is used.
Model FLOP/s = 6 x non-embedding parameters x real (unpadded) tokens per second.

Data: `../shared/data/mrpc` when present, else generated sentence pairs. The last line printed
is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import results  # benchmarks/results.py, beside this script

REPO = Path(__file__).resolve().parent.parent
MRPC = REPO.parent / "shared" / "data" / "mrpc"
ARMS = ("course", "best_trainer", "tunesmith")


# ---- data ---------------------------------------------------------------------------------


def generated_pairs(folder: Path, seed: int = 0) -> Path:
    """Paraphrase-like pairs: label 1 when the second sentence reuses most of the first's words."""
    import csv

    words = "the a company said its shares rose fell percent on monday after report market"
    words += " government officials announced plan new year price investors quarter profit"
    words += " sales city police court judge people week told statement million billion state"
    vocabulary = words.split(" ")
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 3000), ("validation", 400)):
        with (folder / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sentence1", "sentence2", "label"])
            for _ in range(n):
                first = [rng.choice(vocabulary) for _ in range(rng.randint(8, 30))]
                label = rng.random() < 0.6
                if label:
                    second = [w for w in first if rng.random() > 0.2]
                    second += [rng.choice(vocabulary) for _ in range(rng.randint(0, 4))]
                else:
                    second = [rng.choice(vocabulary) for _ in range(rng.randint(8, 30))]
                writer.writerow([" ".join(first), " ".join(second), int(label)])
    return folder


def first_rows(data: Path, rows: int, folder: Path) -> Path:
    lines = (data / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "train.csv").write_text("".join(lines[: rows + 1]), encoding="utf-8")
    (folder / "validation.csv").write_bytes((data / "validation.csv").read_bytes())
    return folder


# ---- the matmul peak ------------------------------------------------------------------------


def matmul_peak(hidden: int, intermediate: int, precision: str, seconds: float = 0.4) -> float:
    """GFLOP/s of the fastest forward or backward product of the model's layer shapes."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    rows_options = (512, 2048) if device == "cpu" else (8192, 32768)
    best = 0.0
    for rows in rows_options:
        for k, n in ((hidden, hidden), (hidden, intermediate), (intermediate, hidden)):
            x = torch.randn(rows, k, device=device, dtype=dtype)
            w = torch.randn(n, k, device=device, dtype=dtype)
            grad = torch.randn(rows, n, device=device, dtype=dtype)
            products = (lambda: x @ w.t(), lambda: grad @ w, lambda: grad.t() @ x)  # noqa: B023
            for product in products:
                rates = []
                for _ in range(3):
                    product()
                    if device == "cuda":
                        torch.cuda.synchronize()
                    count, start = 0, time.perf_counter()
                    while time.perf_counter() - start < seconds / 3:
                        product()
                        count += 1
                    if device == "cuda":
                        torch.cuda.synchronize()
                    rates.append(2 * rows * k * n * count / (time.perf_counter() - start) / 1e9)
                best = max(best, statistics.median(rates))
    return best


def native_bf16() -> bool:
    import torch

    from tunesmith.compute import hardware

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return any(f in hardware.cpu_flags() for f in hardware.NATIVE_BF16_CPU_FLAGS)


# ---- one arm, in a child process ------------------------------------------------------------


def run_arm(arm: str, data: Path, model: str, epochs: float, target: float | None) -> dict:
    """Train one arm; its wall time excludes loading and evaluation."""
    if arm == "tunesmith":
        return run_tunesmith(data, model, epochs, target)
    return run_trainer(arm, data, model, epochs)


def run_trainer(arm: str, data: Path, model_name: str, epochs: float) -> dict:
    import numpy as np
    import torch
    from datasets import load_dataset
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunesmith.models import resolve_model

    path = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = load_dataset(
        "csv", data_files={s: str(data / f"{s}.csv") for s in ("train", "validation")}
    )
    tokenized = raw.map(
        lambda b: tokenizer(b["sentence1"], b["sentence2"], truncation=True, max_length=128),
        batched=True,
    ).rename_column("label", "labels")
    tokenized = tokenized.remove_columns(["sentence1", "sentence2"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if arm == "course":
        settings = dict(per_device_train_batch_size=8, learning_rate=5e-5)
        precision = "fp32"
    else:
        precision = "bf16" if native_bf16() else "fp32"
        settings = dict(
            per_device_train_batch_size=32,
            learning_rate=1e-4,
            warmup_steps=0.1,  # a float below 1 is a ratio of the steps in transformers 5
            train_sampling_strategy="group_by_length",
            bf16=precision == "bf16",
        )
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=epochs,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            seed=42,
            use_cpu=not torch.cuda.is_available(),
            per_device_eval_batch_size=64,
            **settings,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=tokenized["train"],
            data_collator=DataCollatorWithPadding(tokenizer),
            processing_class=tokenizer,
        )
        seconds = trainer.train().metrics["train_runtime"]
        logits = trainer.predict(tokenized["validation"]).predictions
    predictions = np.asarray(logits).argmax(-1)
    labels = np.asarray(tokenized["validation"]["labels"])
    rows = len(tokenized["train"])
    real_tokens = sum(len(ids) for ids in tokenized["train"]["input_ids"]) * epochs
    return {
        "seconds": seconds,
        "samples_per_s": rows * epochs / seconds,
        "real_tokens_per_s": real_tokens / seconds,
        "precision": precision,
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions)),
    }


def run_tunesmith(data: Path, model: str, epochs: float, target: float | None) -> dict:
    from tunesmith import api

    overrides = {
        "model": model,
        "data__train": str(data / "train.csv"),
        "data__validation": str(data / "validation.csv"),
        "train__epochs": epochs,
        "checkpoint__at_epoch_end": False,
    }
    if target is None:  # one evaluation, at the end, like the Trainer arms
        overrides["train__eval_every_steps"] = 10**9
    else:  # evaluate often and stop at the target; evaluation time is not train time
        overrides["train__evals_per_epoch"] = 12
        overrides["train__stop_at_metric"] = target
    with tempfile.TemporaryDirectory() as tmp:
        result = api.train(output_dir=str(Path(tmp) / "run"), **overrides)
    t = result["train"]
    return {
        "seconds": t["seconds"],
        "samples_per_s": t["samples_per_second"],
        "real_tokens_per_s": t["real_tokens_per_second"],
        "precision": result["precision"],
        "accuracy": result["validation"]["accuracy"],
        "f1": result["validation"]["f1"],
        "epochs_trained": t["epochs"],
        "padding_share": t["padding_share"],
    }


def non_embedding_params(model) -> int:
    import torch

    embedding = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def child(args: argparse.Namespace) -> None:
    result = run_arm(args.arm, Path(args.data), args.model, args.epochs, args.target)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def spawn(arm: str, data: Path, model: str, epochs: float, target: float | None = None) -> dict:
    command = [sys.executable, __file__, "--arm", arm, "--data", str(data), "--model", model]
    command += ["--epochs", str(epochs)] + (["--target", str(target)] if target else [])
    print(f"== {arm}: {epochs} epoch(s)" + (f", until accuracy {target:.4f}" if target else ""))
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the parent: peaks, arms, ratios ----------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--time-to-accuracy", action="store_true")
    parser.add_argument("--data", help="folder with train.csv and validation.csv (MRPC columns)")
    parser.add_argument("--model", default="builtin:minilm-l6")
    parser.add_argument("--arms", default=",".join(ARMS), help="a subset, for quick checks")
    parser.add_argument(
        "--train-rows", type=int, help="the first N training rows, for quick checks"
    )
    parser.add_argument("--name", default="train_speed", help="results/NAME.md, one per CPU kind")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    log = results.Transcript()
    if args.arm:
        return child(args)

    from tunesmith.compute import hardware
    from tunesmith.models import load_sequence_classifier

    if args.data:
        data, data_name = Path(args.data), args.data
    elif (MRPC / "train.csv").is_file():
        data, data_name = MRPC, "mrpc"
    else:
        data, data_name = generated_pairs(Path(tempfile.mkdtemp()) / "pairs"), "generated pairs"
    if args.train_rows:
        data = first_rows(data, args.train_rows, Path(tempfile.mkdtemp()))
        data_name += f" (first {args.train_rows} training rows)"
    model = load_sequence_classifier(args.model, num_labels=2)  # counted here once, for all arms
    shapes = (model.config.hidden_size, model.config.intermediate_size)
    params = non_embedding_params(model)
    del model
    precisions = {"fp32"} | ({"bf16"} if native_bf16() else set())
    peaks_before = {p: matmul_peak(*shapes, p) for p in sorted(precisions)}
    machine = hardware.describe()
    log(f"machine: {json.dumps(machine)}")
    log(f"matmul peak before, GFLOP/s: {peaks_before}")

    arms = [a for a in args.arms.split(",") if a]
    by_arm = {arm: spawn(arm, data, args.model, args.epochs) for arm in arms}
    if args.time_to_accuracy:
        course3 = spawn("course", data, args.model, 3)
        reach = spawn("tunesmith", data, args.model, 3, target=course3["accuracy"])
    peaks_after = {p: matmul_peak(*shapes, p) for p in sorted(precisions)}
    peaks = {p: max(peaks_before[p], peaks_after[p]) for p in precisions}
    log(f"matmul peak after, GFLOP/s: {peaks_after}")

    header = f"{'arm':14s} {'samples/s':>9s} {'tokens/s':>9s} {'wall s':>7s} {'prec':>5s} "
    log(header + f"{'GFLOP/s':>8s} {'of peak':>7s} {'acc':>6s} {'F1':>6s} {'RSS MB':>7s}")
    for arm, r in by_arm.items():
        r["model_gflops"] = 6 * params * r["real_tokens_per_s"] / 1e9
        r["peak_fraction"] = r["model_gflops"] / peaks[r["precision"]]
        log(
            f"{arm:14s} {r['samples_per_s']:9.1f} {r['real_tokens_per_s']:9.0f} "
            f"{r['seconds']:7.0f} {r['precision']:>5s} {r['model_gflops']:8.1f} "
            f"{r['peak_fraction']:7.0%} {r['accuracy']:6.4f} {r['f1']:6.4f} {r['peak_rss_mb']:7.0f}"
        )
    summary: dict = {
        "data": data_name,
        "model": args.model,
        "epochs": args.epochs,
        "machine": machine,
        "cpu_flags": machine["cpu_flags"],
        "device": machine.get("gpu", machine["cpu"]),
        "non_embedding_params": params,
        "matmul_peak_gflops": {"before": peaks_before, "after": peaks_after},
        **by_arm,
    }
    if "tunesmith" in by_arm:
        c = by_arm["tunesmith"]
        summary["peak_fraction"] = c["peak_fraction"]
        summary["precision"] = c["precision"]
        for arm, key in (("course", "ratio_vs_course"), ("best_trainer", "ratio_vs_best_trainer")):
            if arm in by_arm:
                summary[key] = c["samples_per_s"] / by_arm[arm]["samples_per_s"]
                log(f"tunesmith / {arm}: {summary[key]:.2f}x samples/s")
    if args.time_to_accuracy:
        summary["time_to_accuracy"] = {"course_3_epochs": course3, "tunesmith_to_target": reach}
        summary["time_to_accuracy_ratio"] = course3["seconds"] / reach["seconds"]
        log(
            f"time to accuracy {course3['accuracy']:.4f}: course {course3['seconds']:.0f} s "
            f"(3 epochs), tunesmith {reach['seconds']:.0f} s ({reach['epochs_trained']} epochs, "
            f"reached {reach['accuracy']:.4f}): {summary['time_to_accuracy_ratio']:.2f}x"
        )
    log(json.dumps(summary))
    print(log.save(args.name, "Training speed: course recipe, fastest Trainer, tunesmith"))


if __name__ == "__main__":
    main()
