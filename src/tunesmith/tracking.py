"""What a run reports: metrics.jsonl lines and the PNG plots. Called on the main process only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay


class MetricsLog:
    """Appends one JSON object per logged optimizer step to `metrics.jsonl`.

    A resumed run keeps the lines up to its checkpoint's step and drops later ones (written after
    the checkpoint, before the interruption), so every step appears exactly once.
    """

    def __init__(self, path: Path, keep_through_step: int = 0) -> None:
        self.path = path
        self.records: list[dict] = []
        if keep_through_step and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the interruption
                    continue
                if record.get("step", 0) <= keep_through_step:
                    self.records.append(record)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
        os.replace(tmp, path)

    def write(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def plot_training_curves(records: list[dict], metric: str, path: Path) -> None:
    """Training loss per logged step, and the validation metric on a second axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r["step"] for r in records if "loss" in r]
    ax.plot(steps, [r["loss"] for r in records if "loss" in r], label="train loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    evals = [r for r in records if "validation" in r]
    if evals:
        ax2 = ax.twinx()
        ax2.plot(
            [r["step"] for r in evals],
            [r["validation"][metric] for r in evals],
            "o-",
            color="tab:orange",
            label=f"validation {metric}",
        )
        ax2.set_ylabel(f"validation {metric}")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    ax.set_title("Training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, names: list[str], path: Path
) -> None:
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 1.2 * len(names) + 2.5))
    ConfusionMatrixDisplay.from_predictions(
        labels,
        predictions,
        labels=list(range(len(names))),
        display_labels=names,
        ax=ax,
        colorbar=False,
        xticks_rotation=45 if len(names) > 4 else "horizontal",
    )
    ax.set_title("Validation confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
