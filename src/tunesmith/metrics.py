"""Metrics as thin wrappers over scikit-learn and scipy: no network, no `evaluate` downloads."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# scikit-learn and scipy are imported where a metric is computed: together ~1 s, which
# `tunesmith predict` on one line (no metric at all) should not wait for.

# Metrics where smaller is better; every other metric is maximised when picking the best model.
LOWER_IS_BETTER = frozenset({"mse", "loss", "perplexity"})


# Multi-label: the decision thresholds tried per label, and how many positive validation rows a
# label needs before it gets its own (rarer ones take the one threshold best for all labels).
THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)
MIN_POSITIVES_TO_TUNE = 5
# A label keeps its own threshold only when its F1 there beats, by this much, the F1 of marking
# it on every row (2p / (1 + p) at base rate p): a label the model has not learnt would otherwise
# get the lowest threshold, "almost always", which is the F1-best choice when nothing is known.
BASE_RATE_MARGIN = 0.1


@dataclass
class Evaluation:
    """A split's scores; `finite` is False when the model's outputs were NaN/inf (such a model
    is never picked or exported); `logits` are the per-row outputs where a task has them;
    `details` what metrics.json shows beside the scores (per-label figures)."""

    scores: dict[str, float]
    finite: bool
    logits: np.ndarray | None = None
    details: dict | None = None
    note: str | None = None  # a line for the user about what fitting on this split decided


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


def calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the gap between confidence (the top probability) and
    accuracy, averaged over equal-width confidence bins weighted by their rows."""
    confidence = probabilities.max(-1)
    correct = (probabilities.argmax(-1) == labels).astype(np.float64)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    # sum over bins of (rows/N) * |mean confidence - accuracy| = |sum gaps per bin| / N
    gaps = np.bincount(which, confidence, bins) - np.bincount(which, correct, bins)
    return float(np.abs(gaps).sum() / len(labels))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimizes the log loss of softmax(logits / T) (Guo et al., 2017:
    temperature scaling), searched in [0.05, 20]. T > 1 softens overconfident probabilities,
    T < 1 sharpens underconfident ones; the argmax, hence every label, stays the same."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = logits.astype(np.float64)
    rows = np.arange(len(labels))

    def log_loss(log_t: float) -> float:
        return float(-log_softmax(logits / math.exp(log_t), axis=-1)[rows, labels].mean())

    best = minimize_scalar(log_loss, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return math.exp(best.x)


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


def multi_label_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Micro-, macro- and samples-averaged F1 and subset accuracy (every label of a row right)
    of 0/1 matrices, rows x labels."""
    from sklearn import metrics as skm

    def f1(average: str, empty: float = 0.0) -> float:
        return float(skm.f1_score(labels, predictions, average=average, zero_division=empty))

    return {
        "micro_f1": f1("micro"),
        "macro_f1": f1("macro"),
        # A row with no label, predicted with none, is right: F1 1, not sklearn's default 0.
        "samples_f1": f1("samples", empty=1.0),
        "subset_accuracy": float(skm.accuracy_score(labels, predictions)),
    }


def per_label(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict:
    """Each label's (or class's) precision, recall, F1 and support (its positive rows), from
    0/1 matrices (multi-label) or class ids; a class no row has or gets still has its entry."""
    from sklearn import metrics as skm

    p, r, f, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=list(range(len(names))), average=None, zero_division=0
    )
    return {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(names)
    }


def tune_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each label's threshold (see `threshold_tuning`)."""
    return threshold_tuning(probabilities, labels)[0]


def threshold_tuning(
    probabilities: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, shared): per label the grid threshold with the best F1 on these rows; labels
    with fewer than MIN_POSITIVES_TO_TUNE positives, or whose best F1 does not beat their
    base-rate F1 by BASE_RATE_MARGIN, take the single threshold with the best micro-F1 (shared
    is True for them)."""
    labels = labels.astype(bool)
    above = probabilities[:, :, None] >= THRESHOLD_GRID[None, None, :]  # rows x labels x grid
    tp = (above & labels[:, :, None]).sum(0)
    fp = (above & ~labels[:, :, None]).sum(0)
    fn = (~above & labels[:, :, None]).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        micro = np.nan_to_num(2 * tp.sum(0) / (2 * tp.sum(0) + fp.sum(0) + fn.sum(0)))
    overall = THRESHOLD_GRID[micro.argmax()]
    tuned = THRESHOLD_GRID[f1.argmax(1)]
    base_rate = labels.mean(0) if len(labels) else np.zeros(labels.shape[1])
    base_rate_f1 = 2 * base_rate / (1 + base_rate)
    shared = (labels.sum(0) < MIN_POSITIVES_TO_TUNE) | (f1.max(1) < base_rate_f1 + BASE_RATE_MARGIN)
    return np.where(shared, overall, tuned), shared


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
