"""Short-text sets train exactly as before data.max_length=auto and train.rows_per_step.

    python benchmarks/short_texts_unchanged.py --before /tmp/old/src [--steps 30]

`--before` is the `src` folder of a checkout from before the change (e.g. `git worktree add
/tmp/old 34994e9`). On MRPC (pairs), emotion and the demo's tweets, the same default run
(builtin:minilm-l6, `train.max_steps` steps, no evaluation) trains once with each code; the
exported weights are compared element by element, and the new run's decisions (the length auto
chose, the micro-batches per optimizer step) are shown. The same weights from the same batches
mean the same accuracy and, the steps being the same computation, the same samples/s. Writes
benchmarks/results/short_texts_unchanged.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import results  # benchmarks/results.py, beside this script
from safetensors.torch import load_file

from tunesmith.demo import _data

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {
    "mrpc": [f"data.train={DATA / 'mrpc' / 'train.csv'}"],
    "emotion": [f"data.train={DATA / 'emotion' / 'train.csv'}"],
    "tweets": [f"data.{k}={v}" for k, v in _data(3000).items()],
}


def train(src: Path | None, data: list[str], out: Path, steps: int) -> None:
    env = dict(os.environ)
    if src is not None:  # the older code first on the path, before the installed one
        env["PYTHONPATH"] = str(src)
    command = [
        sys.executable, "-m", "tunesmith", "train", *data,
        f"output_dir={out}", f"train.max_steps={steps}", "train.evals_per_epoch=0",
        "train.method=fine-tune",
    ]  # fmt: skip
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="src of the older checkout")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    log = results.Transcript()
    log(f"{args.steps} optimizer steps each; older code from {args.before}")
    columns = ("auto chose", "accumulation", "rows/step", "max |diff|")
    log(f"{'data':8s} " + " ".join(f"{c:>12s}" for c in columns))
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in SETS.items():
            old, new = Path(tmp) / f"{name}-old", Path(tmp) / f"{name}-new"
            train(args.before, data, old, args.steps)
            train(None, data, new, args.steps)
            a = load_file(old / "model" / "model.safetensors")
            b = load_file(new / "model" / "model.safetensors")
            assert a.keys() == b.keys()
            diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
            d = json.loads((new / "decisions.json").read_text(encoding="utf-8"))
            log(
                f"{name:8s} {d['max_length']['value']:>12d} "
                f"{d['train']['gradient_accumulation_steps']:>12d} {d['rows_per_step']:>12.1f} "
                f"{diff:>12.2e}"
            )
    print(log.save("short_texts_unchanged", "Short-text sets train as before"))


if __name__ == "__main__":
    main()
