"""MRPC with tunesmith's defaults: validation and test after configs/mrpc.yaml's 3 epochs.

    python benchmarks/mrpc_quality.py                     # auto precision (bf16 where native)
    python benchmarks/mrpc_quality.py --precision fp32    # or bf16, to compare the two
    python benchmarks/mrpc_quality.py --precision bf16 --emulate   # bf16 on an AVX2-only CPU

Runs `tunesmith train configs/mrpc.yaml` as a user would (one process, its own wall clock) and
writes benchmarks/results/mrpc_quality_PRECISION.md with the machine. The run folder is kept
(--output-dir) for predict_speed.py --model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import results  # benchmarks/results.py, beside this script

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mrpc.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", default="/tmp/tunesmith-bench/mrpc-defaults")
    parser.add_argument(
        "--emulate",
        action="store_true",
        help="bf16's arithmetic through fp32 kernels (emulated_bf16.py), for CPUs without bf16",
    )
    args = parser.parse_args()
    runner = [str(Path(__file__).with_name("emulated_bf16.py"))] if args.emulate else ["-m"]
    command = [
        sys.executable,
        *runner,
        *([] if args.emulate else ["tunesmith"]),
        "train",
        str(CONFIG),
        f"train.precision={args.precision}",
        f"train.epochs={args.epochs}",
        f"train.seed={args.seed}",
        f"output_dir={args.output_dir}",
        "overwrite=true",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    m = json.loads((Path(args.output_dir) / "metrics.json").read_text(encoding="utf-8"))
    val, test, train = m["validation"], m["test"], m["train"]
    log = results.Transcript()
    log(f"precision {m['precision']} ({m['precision_reason']})")
    log(
        f"{'epochs':>6s} {'val acc':>8s} {'val F1':>7s} {'test acc':>9s} {'test F1':>8s} "
        f"{'samples/s':>9s} {'wall s':>7s}"
    )
    log(
        f"{args.epochs:6g} {val['accuracy']:8.4f} {val['f1']:7.4f} {test['accuracy']:9.4f} "
        f"{test['f1']:8.4f} {train['samples_per_second']:9.1f} {wall:7.0f}"
    )
    log(
        json.dumps(
            {
                "precision": m["precision"],
                "epochs": args.epochs,
                "seed": args.seed,
                "validation": val,
                "test": test,
                "train": train,
                "wall_seconds": wall,
            }
        )
    )
    kind = m["precision"] + ("-emulated" if args.emulate else "")
    print(log.save(f"mrpc_quality_{kind}", f"MRPC with the defaults, {kind}"))


if __name__ == "__main__":
    main()
