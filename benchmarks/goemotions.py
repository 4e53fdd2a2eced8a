"""GoEmotions (28 labels, several per comment) with builtin:minilm-l6 and the defaults.

    python benchmarks/goemotions.py [--epochs 2] [--name goemotions] [KEY=VALUE ...]

Trains on ../shared/data/goemotions (train, validation; thresholds tuned on validation) and
reports test micro- and macro-F1 with the tuned thresholds and at a fixed 0.5. The published
baseline (BERT-base, 12 layers) is macro-F1 0.46. KEY=VALUE pairs go to `tunesmith train` as
overrides of the defaults. Writes benchmarks/results/NAME.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import results  # benchmarks/results.py, beside this script

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-length", type=int, default=64)  # comments are short
    parser.add_argument("--output-dir", default="/tmp/tunesmith-bench/goemotions")
    parser.add_argument("--name", default="goemotions", help="results file, benchmarks/results/")
    parser.add_argument("overrides", nargs="*", help="tunesmith train KEY=VALUE overrides")
    args = parser.parse_args()
    command = [
        sys.executable, "-m", "tunesmith", "train",
        f"data.train={DATA / 'train.jsonl'}",
        f"data.validation={DATA / 'validation.jsonl'}",
        f"data.test={DATA / 'test.jsonl'}",
        f"data.max_length={args.max_length}",
        f"train.epochs={args.epochs}",
        f"output_dir={args.output_dir}",
        "overwrite=true",
        *args.overrides,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    m = json.loads((Path(args.output_dir) / "metrics.json").read_text(encoding="utf-8"))
    tuned, fixed = m["test"], m["test_details"]["at_threshold_0.5"]
    log = results.Transcript()
    settings = " ".join(args.overrides) or "defaults"
    log(f"{args.epochs:g} epoch(s), max_length {args.max_length}, {settings}")
    log(f"precision {m['precision']}")
    log(f"{'test, thresholds':22s} {'macro-F1':>8s} {'micro-F1':>8s} {'samples-F1':>10s}")
    for name, scores in (("tuned on validation", tuned), ("fixed 0.5", fixed)):
        log(
            f"{name:22s} {scores['macro_f1']:8.4f} {scores['micro_f1']:8.4f} "
            f"{scores['samples_f1']:10.4f}"
        )
    log(f"published BERT-base macro-F1 0.46; this run {tuned['macro_f1'] - 0.46:+.3f} from it")
    log(f"train {m['train']['samples_per_second']} samples/s, wall {wall:.0f} s")
    log(json.dumps({"test": tuned, "test_at_0.5": fixed, "train": m["train"], "wall": wall}))
    print(log.save(args.name, "GoEmotions, 28 labels, builtin:minilm-l6"))


if __name__ == "__main__":
    main()
