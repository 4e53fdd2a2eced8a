"""Metrics as thin wrappers over scikit-learn and scipy: no network, no `evaluate` downloads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# scikit-learn and scipy are imported where a metric is computed: together ~1 s, which
# `tunesmith predict` on one line (no metric at all) should not wait for.

# Metrics where smaller is better; every other metric is maximised when picking the best model.
LOWER_IS_BETTER = frozenset({"mse", "loss", "perplexity"})


@dataclass
class Evaluation:
    """A split's scores; `finite` is False when the model's outputs were NaN/inf (such a model
    is never picked or exported); `logits` are the per-row outputs where a task has them."""

    scores: dict[str, float]
    finite: bool
    logits: np.ndarray | None = None


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict:
    """Accuracy, F1 (binary on class 1 for two classes, macro otherwise) and MCC."""
    from sklearn import metrics as skm

    average = "binary" if num_classes == 2 else "macro"
    return {
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "f1": float(skm.f1_score(labels, predictions, average=average, zero_division=0)),
        "macro_f1": float(skm.f1_score(labels, predictions, average="macro", zero_division=0)),
        "mcc": float(skm.matthews_corrcoef(labels, predictions)),
    }


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Pearson and Spearman correlations and mean squared error."""
    from scipy import stats
    from sklearn import metrics as skm

    constant = np.ptp(labels) == 0 or np.ptp(predictions) == 0  # correlation undefined
    return {
        "pearson": 0.0 if constant else float(stats.pearsonr(labels, predictions)[0]),
        "spearman": 0.0 if constant else float(stats.spearmanr(labels, predictions)[0]),
        "mse": float(skm.mean_squared_error(labels, predictions)),
    }


def majority_baseline(train_labels: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """What always predicting the most frequent training class scores on `labels`."""
    majority = np.bincount(train_labels, minlength=num_classes).argmax()
    return classification_metrics(labels, np.full_like(labels, majority), num_classes)


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` improves on `best`; NaN/inf never does, so a broken model is never kept."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def language_model_metrics(loss_sum: float, tokens: int) -> dict:
    """Mean loss per predicted token and its exponential, the perplexity (over tokens, so a
    batch of 10 tokens weighs a tenth of one of 100)."""
    loss = loss_sum / max(tokens, 1)
    return {
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "loss": loss,
        "predicted_tokens": tokens,
    }
