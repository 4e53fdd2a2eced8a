"""The run's PNG plots: training curves, the confusion matrix, and the figures of
`tunesmith report`. Called on the main process only."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay


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
    # Above the axes, where it can never cover the curves.
    lines = ax.get_lines() + (ax2.get_lines() if evals else [])
    ax.legend(
        lines,
        [line.get_label() for line in lines],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=2,
        frameon=False,
    )
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


# ---- figures for `tunesmith report` ----


def plot_loss_and_learning_rate(records: list[dict], path: Path) -> None:
    """Training loss and learning rate per logged step, side by side (no shared legend box to
    cover the lines)."""
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 3.5))
    logged = [r for r in records if "loss" in r]
    loss_ax.plot([r["step"] for r in logged], [r["loss"] for r in logged], color="tab:blue")
    loss_ax.set_title("training loss")
    with_lr = [r for r in records if "learning_rate" in r]
    lr_ax.plot(
        [r["step"] for r in with_lr], [r["learning_rate"] for r in with_lr], color="tab:green"
    )
    lr_ax.set_title("learning rate")
    for ax in (loss_ax, lr_ax):
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no step 2.5
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_validation_metrics(records: list[dict], path: Path) -> None:
    """Each validation metric per evaluated step, one panel each (their scales differ)."""
    evals = [r for r in records if "validation" in r]
    names = list(evals[0]["validation"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    steps = [r["step"] for r in evals]
    for ax, name in zip(axes[0], names, strict=True):
        ax.plot(steps, [r["validation"].get(name, np.nan) for r in evals], "o-", markersize=3)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_label_distribution(
    counts: dict[str, np.ndarray], rows: dict[str, int], names: list[str], path: Path
) -> None:
    """Share of each split's rows per class (multi-label: rows carrying the label, so a split's
    bars may sum past 1), side by side: splits of different sizes stay comparable."""
    fig, ax = plt.subplots(figsize=(min(3 + 0.6 * len(names) * len(counts), 14), 4))
    x = np.arange(len(names))
    width = 0.8 / len(counts)
    shares = {split: c / max(rows[split], 1) for split, c in counts.items()}
    for i, (split, share) in enumerate(shares.items()):
        ax.bar(x + (i - (len(counts) - 1) / 2) * width, share, width, label=split)
    if len(names) > 6:  # slanted, each name ending at its tick, so long names do not collide
        ax.set_xticks(x, names, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(x, names)
    ax.set_ylabel("share of rows")
    ax.set_title("Label distribution per split")
    # Headroom above the tallest bar for a one-row legend, so the legend never covers a bar.
    tallest = max(float(share.max()) for share in shares.values())
    ax.set_ylim(0, tallest * 1.25)
    ax.legend(ncol=len(counts), loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_cooccurrence(matrix: np.ndarray, names: list[str], path: Path) -> None:
    """Training rows carrying both labels of each pair, a heatmap; the diagonal (rows carrying
    the label at all) would swamp the colour scale, so it is grey and only written in."""
    k = len(names)
    side = min(max(4.0, 0.45 * k + 2.5), 16)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    diagonal = np.eye(k, dtype=bool)
    together = np.ma.masked_where(diagonal, matrix)
    cmap = plt.get_cmap("Blues").with_extremes(bad="#e6e6e6")
    top = max(int(together.max()) if together.count() else 0, 1)
    image = ax.imshow(together, cmap=cmap, vmin=0, vmax=top)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="rows with both labels")
    if k <= 30:  # beyond that the numbers no longer fit their cells
        size = 9 if k <= 12 else 6
        for i, j in np.ndindex(k, k):
            dark = not diagonal[i, j] and matrix[i, j] > 0.6 * top
            ax.text(
                j,
                i,
                f"{int(matrix[i, j]):,}",
                ha="center",
                va="center",
                fontsize=size,
                color="white" if dark else "black",
                style="italic" if diagonal[i, j] else "normal",
            )
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.set_title("Label co-occurrence in training rows\n(diagonal, grey: rows with the label)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_value_histograms(values: dict[str, np.ndarray], path: Path) -> None:
    """Regression targets per split as overlaid density histograms."""
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.histogram_bin_edges(np.concatenate(list(values.values())), bins=30)
    for split, split_values in values.items():
        ax.hist(split_values, bins=bins, density=True, histtype="step", linewidth=1.5, label=split)
    ax.set_xlabel("label value")
    ax.set_ylabel("density")
    ax.set_title("Label distribution per split")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_token_lengths(lengths: np.ndarray, max_length: int, path: Path) -> None:
    """Untruncated token counts of the training texts, with the truncation point marked."""
    fig, ax = plt.subplots(figsize=(7, 4))
    longest = int(lengths.max())
    # One bar per token count when the range is small, else 50 bins.
    span = longest - int(lengths.min()) + 1
    bins = np.arange(lengths.min(), longest + 2) - 0.5 if span <= 50 else 50
    ax.hist(lengths, bins=bins, color="tab:blue")
    ax.set_ylim(top=ax.get_ylim()[1] * 1.3)  # room for the legend or note above the bars
    if max_length <= 2 * longest:
        ax.set_xlim(0, max(max_length, longest) * 1.05)
        truncated = float((lengths > max_length).mean())
        ax.axvline(
            max_length,
            color="tab:red",
            linestyle="--",
            label=f"max_length={max_length} ({truncated:.1%} of rows longer)",
        )
        ax.legend(loc="upper left")
    else:
        # Far right of every row, the cut would squeeze the bars into a sliver: name it instead.
        ax.set_xlim(0, longest * 1.1 + 1)
        ax.text(
            0.98,
            0.95,
            f"max_length={max_length} →\n(no row reaches it)",
            transform=ax.transAxes,
            ha="right",
            va="top",
            color="tab:red",
        )
    ax.set_xlabel("tokens per row (special tokens included)")
    ax.set_ylabel("rows")
    ax.set_title("Token lengths of the training texts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_regression_scatter(labels: np.ndarray, predictions: np.ndarray, path: Path) -> None:
    """Predicted against true values on validation; the diagonal is a perfect model."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(labels, predictions, s=10, alpha=0.6)
    low = float(min(labels.min(), predictions.min()))
    high = float(max(labels.max(), predictions.max()))
    ax.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted value")
    ax.set_title("Validation predictions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
