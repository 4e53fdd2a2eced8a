"""Temperature scaling (train.temperature_scaling): test calibration with and without it.

    python benchmarks/calibration.py [--data ag_news emotion tweets] [--seeds 3]

Each run trains tunesmith on N rows per class with a validation file of V rows per class, and
scores 2,000 test rows with the exported model (temperature folded in) and, undoing the fitted
temperature T, without it: expected calibration error (15 bins) and log loss; the labels, hence
accuracy, are the same either way. Two settings: the few-shot path (N = 8) with V = 4, 16 and 64,
and fine-tuning (N = 256, V = 64). The rule's floor of 50 validation rows is lowered to 0 here,
so the smallest validation sets show what the floor avoids. Training rows are the seeded samples
of benchmarks/few_shot.py at seeds from 100 (the few-shot benchmark scores seeds 0-9); the
validation rows come from rows the sample left (emotion: its validation split), and the test
rows from the rest: emotion's test split, 2,000 other AG News rows, 2,000 other tweets.
The log keeps runs of the few-shot path from before few_shot.pick_best_step=false, when it
exported its best-scoring step, as method `few-shot-best-step` (same splits, so their accuracy
compares with the last step's run for run).
Every run is appended to --log (results/calibration.jsonl) and skipped when rerun, so two
processes can split the data sets; prints a line per run and per setting over the whole log, and
a JSON last line; writes results/calibration.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import few_shot  # benchmarks/few_shot.py, beside this script: the data and the samples
import numpy as np
import pandas as pd
import results
import torch

import tunesmith.tasks.label_kinds as label_kinds

TEST_ROWS = 2000
SETTINGS = [("few-shot", 8, 4), ("few-shot", 8, 16), ("few-shot", 8, 64), ("fine-tune", 256, 64)]


def splits(name: str, n: int, v: int, seed: int) -> tuple[pd.DataFrame, ...]:
    """Train (N per class), validation (V per class) and 2,000 test rows, disjoint."""
    pool, test_rows = few_shot.load(name)
    rows, test = few_shot.sample(pool, test_rows, n, seed)
    rest = pool.drop(index=rows.index)
    if name == "emotion":
        source = pd.read_csv(few_shot.DATA / "emotion" / "validation.csv")
    else:
        source = rest
    validation = pd.concat([g.sample(v, random_state=seed) for _, g in source.groupby("label")])
    if name != "emotion":  # AG News and the tweets: test rows from what is left
        test = rest.drop(index=validation.index).sample(TEST_ROWS, random_state=seed)
    return rows, validation, test


def run(name: str, method: str, n: int, v: int, seed: int) -> dict:
    rows, validation, test = splits(name, n, v, seed)
    scored = few_shot.run_tunesmith(rows, test, n, seed, method, validation=validation)
    temperature = scored.result["validation_details"]["temperature"]
    # log softmax(z / T) * T = z - const per row, so its softmax is softmax(z): T undone
    log_scaled = np.log(scored.probabilities.astype(np.float64))
    unscaled = torch.softmax(torch.from_numpy(log_scaled * temperature), -1).numpy()
    truth = test["label"].tolist()
    with_t = few_shot.scores(truth, scored)
    without = few_shot.scores(truth, scored._replace(probabilities=unscaled))
    return {
        "data": name, "method": method, "n": n, "v": v, "seed": seed,
        "accuracy": with_t["accuracy"], "temperature": temperature,
        "ece_before": without["ece"], "ece": with_t["ece"],
        "log_loss_before": without["log_loss"], "log_loss": with_t["log_loss"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["ag_news", "emotion", "tweets"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--log", type=Path, default=results.RESULTS / "calibration.jsonl")
    args = parser.parse_args()
    label_kinds.MIN_ROWS_FOR_TEMPERATURE = 0  # see the docstring
    lines = args.log.read_text(encoding="utf-8").splitlines() if args.log.exists() else []
    records = [json.loads(line) for line in lines]
    key = ("data", "method", "n", "v", "seed")
    finished = {tuple(r[k] for k in key) for r in records}
    for method, n, v in SETTINGS:
        for name in args.data:
            for seed in range(100, 100 + args.seeds):
                if (name, method, n, v, seed) in finished:
                    continue
                record = run(name, method, n, v, seed)
                print(json.dumps(record), flush=True)
                with args.log.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                records.append(record)
    log = results.Transcript()
    log("mean over seeds: ECE and log loss without -> with the temperature (better: seeds)")
    frame = pd.DataFrame(records)
    for (method, n, v, name), group in frame.groupby(["method", "n", "v", "data"], sort=False):
        better = int((group.log_loss < group.log_loss_before).sum())
        log(f"{method:9s} N={n:3d} V={v:2d} {name:8s} accuracy {group.accuracy.mean():.4f} "
            f"T {statistics.median(group.temperature):.2f} (median) "
            f"ECE {group.ece_before.mean():.3f} -> {group.ece.mean():.3f} "
            f"log loss {group.log_loss_before.mean():.3f} -> {group.log_loss.mean():.3f} "
            f"(better on {better} of {len(group)})")  # fmt: skip
    log(json.dumps(records))
    print(log.save("calibration", "Temperature scaling: test calibration with and without"))


if __name__ == "__main__":
    main()
