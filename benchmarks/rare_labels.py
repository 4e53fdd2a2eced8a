"""Rare labels: class weights on or off, on two multi-label sets and a skewed single-label one.

    python benchmarks/rare_labels.py [--data goemotions reuters] [--arms none balanced] [--epochs N]
                                     [--log benchmarks/results/rare_labels.jsonl] [KEY=VALUE ...]

Each arm trains builtin:minilm-l6 with the defaults but for train.class_weights (`none`: every
label weighs 1; `balanced`: each label's positives weigh negatives / positives, see
docs/several-labels.md) on ../shared/data/<set>: GoEmotions (28 labels, 2 epochs as the issue
asks, its own validation split) and Reuters-21578 (90 topics, a long tail, the default 3 epochs,
validation held out of train); and emotion (6 classes, surprise 4% of rows, 1 epoch; its own
validation split). Scores: test macro-F1, and micro-F1 at the thresholds tuned on validation
(multi-label) or accuracy (single-label). Every run appends a line to --log with the CPU it ran
on; the table beside the log (rare_labels.md) gives each set and arm's mean over the runs in the
log. The multi-label default is decided on both multi-label sets together (docs/defaults.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import results  # benchmarks/results.py, beside this script

from tunesmith.compute import hardware

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLITS = {"train": "train", "validation": "validation", "test": "test"}
SETS = {  # name -> (split -> file, epochs)
    "goemotions": ({k: f"{v}.jsonl" for k, v in SPLITS.items()}, 2.0),
    "reuters": ({"train": "train.jsonl", "test": "test.jsonl"}, 3.0),
    "emotion": ({k: f"{v}.csv" for k, v in SPLITS.items()}, 1.0),
}


def run_arm(
    data: str, arm: str, root: Path, overrides: list[str], epochs: float | None = None
) -> dict:
    files, default_epochs = SETS[data]
    epochs = epochs or default_epochs
    out = root / f"{data}-{arm}"
    command = [
        sys.executable, "-m", "tunesmith", "train",
        *(f"data.{split}={DATA / data / name}" for split, name in files.items()),
        f"train.epochs={epochs}",
        f"train.class_weights={arm}",
        f"output_dir={out}",
        "overwrite=true",
        *overrides,
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    decisions = json.loads((out / "decisions.json").read_text(encoding="utf-8"))
    shared = m.get("validation_details", {}).get("labels_on_shared_threshold", [])
    return {
        "data": data,
        "arm": arm,
        "overrides": overrides,
        "epochs": epochs,
        "test_macro_f1": m["test"]["macro_f1"],
        # Multi-label: micro-F1 (and macro-F1 at a fixed 0.5); single-label: accuracy.
        "test_micro_f1": m["test"].get("micro_f1", m["test"].get("accuracy")),
        "test_macro_f1_at_0.5": (m.get("test_details") or {})
        .get("at_threshold_0.5", {})
        .get("macro_f1"),
        "labels": len(decisions["labels"]),
        "labels_on_shared_threshold": len(shared),
        "max_length": decisions["max_length"]["value"],
        "precision": m["precision"],
        "optimizer_steps": m["train"]["optimizer_steps"],
        "train_seconds": m["train"]["seconds"],
        "wall_seconds": round(wall, 1),
        "cpu": hardware.describe()["cpu"],
        "cpu_flags": hardware.describe()["cpu_flags"],
    }


def table(log: Path) -> list[str]:
    runs = results.read_log(log)
    lines = [
        "| data | class_weights | epochs | overrides | runs | test macro-F1 | "
        "test micro-F1 (accuracy) | macro-F1 at 0.5 | "
        "labels on the shared threshold | max_length | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def key(r: dict) -> tuple:  # runs of other epochs or overrides are other arms
        return r["data"], r["arm"], r["epochs"], " ".join(r.get("overrides", []))

    for data, arm, epochs, overrides in dict.fromkeys(map(key, runs)):
        mine = [r for r in runs if key(r) == (data, arm, epochs, overrides)]
        mean = functools.partial(results.mean, mine)
        at_half = [r["test_macro_f1_at_0.5"] for r in mine if r["test_macro_f1_at_0.5"] is not None]
        lines.append(
            f"| {data} | {arm} | {epochs:g} | {overrides or '-'} | {len(mine)} | "
            f"{mean('test_macro_f1'):.4f} | "
            f"{mean('test_micro_f1'):.4f} | "
            f"{f'{statistics.mean(at_half):.4f}' if at_half else '-'} | "
            f"{mean('labels_on_shared_threshold'):.0f} of {mine[0]['labels']} | "
            f"{mine[0]['max_length']} | {mean('train_seconds'):.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--arms", nargs="+", default=["none", "balanced"])
    parser.add_argument("--log", type=Path, default=results.RESULTS / "rare_labels.jsonl")
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/tunesmith-rare-labels"))
    parser.add_argument("--epochs", type=float, help="instead of each set's own (above)")
    parser.add_argument("overrides", nargs="*", help="tunesmith train KEY=VALUE overrides")
    args = parser.parse_args()
    for data in args.data:
        for arm in args.arms:
            record = run_arm(data, arm, args.output_dir, args.overrides, args.epochs)
            with args.log.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    lines = [*results.header("Rare labels: class weights in multi-label runs"), *table(args.log)]
    print(f"wrote {results.write(args.log.stem, lines, args.log.parent)}")


if __name__ == "__main__":
    main()
