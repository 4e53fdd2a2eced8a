"""What differs between the three kinds of labels a sequence classifier learns: one class per
row (softmax, cross-entropy), several labels per row (a sigmoid and a threshold each, binary
cross-entropy) or a score (one output, mean squared error). `SequenceClassification` asks its
`label_kind` rather than branching on the kind: the head's problem_type, logits to probabilities,
predictions, metrics and records, the loss with class weights, and what validation teaches after
training (a temperature, or the thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset

from tunesmith import metrics
from tunesmith.metrics import Evaluation
from tunesmith.models import scale_output_layer
from tunesmith.tasks.labels import LabelSpec

# Fewer validation rows fit a temperature to noise (benchmarks/README.md, calibration).
MIN_ROWS_FOR_TEMPERATURE = 50


class LabelKind(Protocol):
    problem_type: str  # the head's problem_type in AutoModelForSequenceClassification
    default_metric: str
    metric_names: tuple[str, ...]
    stratify_column: str | None  # held-out validation keeps this column's balance
    weights_are: str  # what train.class_weights are to this loss

    def describe(self) -> str: ...

    def meta(self, label_format: dict[str, Any] | None) -> dict[str, Any]: ...

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]: ...

    def weighted_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, class_weights: tuple[float, ...]
    ) -> torch.Tensor: ...

    def weighted_loss_items(
        self, labels: torch.Tensor, class_weights: tuple[float, ...]
    ) -> float: ...

    def probabilities(self, logits: np.ndarray) -> np.ndarray: ...

    def predictions(self, logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray: ...

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]: ...

    def details(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None: ...

    def format_predictions(self, logits: np.ndarray) -> list[dict[str, Any]]: ...

    def fit(
        self, evaluation: Evaluation, labels: np.ndarray, model: torch.nn.Module
    ) -> tuple[dict[str, Any], Evaluation]: ...

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Path) -> None: ...


def label_kind_of(
    labels: LabelSpec, thresholds: tuple[float, ...] | None, temperature_scaling: bool
) -> LabelKind:
    """The kind `labels` are, with what it keeps: multi-label its thresholds, single-label
    whether to fit a temperature."""
    if labels.kind == "multi_label":
        return MultiLabel(labels.names, thresholds)
    if labels.kind == "regression":
        return Regression()
    return SingleLabel(labels.names, temperature_scaling)


@dataclass(frozen=True)
class SingleLabel:
    """One class of `names` per row: the softmax over one logit per class, cross-entropy."""

    names: tuple[str, ...]
    temperature_scaling: bool = False  # fit a temperature on validation after training

    problem_type = "single_label_classification"
    default_metric = "accuracy"
    metric_names = ("accuracy", "f1", "macro_f1", "mcc")
    stratify_column = "labels"  # held-out validation keeps the class balance of train
    weights_are = "class weights"

    def describe(self) -> str:
        count = len(self.names)
        return "classification" + (f", labels {list(self.names)}" if count else "")

    def meta(self, label_format: dict[str, Any] | None) -> dict[str, Any]:
        return {}

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]:
        """The majority class's scores: the floor to beat."""
        if "validation" not in tokenized:
            return {}
        baseline = metrics.majority_baseline(
            np.asarray(tokenized["train"]["labels"]),
            np.asarray(tokenized["validation"]["labels"]),
            len(self.names),
        )
        return {"majority_baseline": baseline}

    def weighted_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, class_weights: tuple[float, ...]
    ) -> torch.Tensor:
        """Cross-entropy weighted by the row's class (PyTorch's weighted mean: the sum of
        weighted losses over the sum of the weights)."""
        weight = torch.tensor(class_weights, device=logits.device)
        return F.cross_entropy(logits.float(), labels, weight=weight)

    def weighted_loss_items(self, labels: torch.Tensor, class_weights: tuple[float, ...]) -> float:
        """The rows' summed weight: what the weighted mean divides by."""
        weight = torch.tensor(class_weights, device=labels.device)
        return float(weight[labels].sum())

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """The softmax over the classes, in the logits' dtype."""
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)

    def predictions(self, logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        return logits.argmax(-1)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        predictions = self.predictions(logits, labels)
        return metrics.classification_metrics(labels, predictions, len(self.names))

    def details(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
        """The calibration error, where every logit is finite."""
        if not np.isfinite(logits).all():
            return None
        probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        return {"calibration_error": metrics.calibration_error(probabilities, labels)}

    def format_predictions(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """The class name and every class's probability."""
        names = self.names
        probabilities = self.probabilities(logits)
        return [
            {
                "label": names[int(p.argmax())],
                "scores": {n: float(x) for n, x in zip(names, p, strict=True)},
            }
            for p in probabilities
        ]

    def fit(
        self, evaluation: Evaluation, labels: np.ndarray, model: torch.nn.Module
    ) -> tuple[dict[str, Any], Evaluation]:
        """A temperature, divided into the output layer's weights, so the exported folder gives
        calibrated probabilities in `pipeline` too; the same labels and scores, the calibration
        error on the rows that fitted it beside the one before."""
        enough_rows = len(labels) >= MIN_ROWS_FOR_TEMPERATURE
        if not self.temperature_scaling or not enough_rows:
            return {}, evaluation
        temperature = metrics.fit_temperature(evaluation.logits, labels)
        scale_output_layer(model, 1.0 / temperature, len(self.names))
        logits = evaluation.logits / temperature
        probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        details = {
            "calibration_error": metrics.calibration_error(probabilities, labels),
            "calibration_error_before_temperature": evaluation.details["calibration_error"],
            "temperature": round(temperature, 4),
        }
        return {"temperature": temperature}, replace(evaluation, logits=logits, details=details)

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Path) -> None:
        from tunesmith.runfolder import plots  # matplotlib: ~1 s that prediction never needs

        plots.plot_confusion_matrix(
            np.asarray(ds["labels"]),
            self.predictions(evaluation.logits),
            list(self.names),
            output_dir / "confusion_matrix.png",
        )


@dataclass(frozen=True)
class MultiLabel:
    """Any of `names` per row: a sigmoid per label, decided at its threshold, and binary
    cross-entropy (BCE with logits, one per label)."""

    names: tuple[str, ...]
    # Each label's decision threshold, tuned on validation after training; until then every
    # evaluation tunes its own (what the best model is picked by).
    thresholds: tuple[float, ...] | None = None

    problem_type = "multi_label_classification"
    default_metric = "macro_f1"  # which rare labels move as much as common ones
    metric_names = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy")
    stratify_column = None
    weights_are = "positive weights"

    def describe(self) -> str:
        count = len(self.names)
        return f"multi-label, {count} labels" + (f" {list(self.names)}" * (count <= 10))

    def meta(self, label_format: dict[str, Any] | None) -> dict[str, Any]:
        """How the labels were given (label_delimiter, label_columns), for evaluate, and the
        tuned thresholds."""
        meta = dict(label_format or {})
        if self.thresholds is not None:
            meta["thresholds"] = dict(zip(self.names, self.thresholds, strict=True))
        return meta

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]:
        """Each label's training rows, and each split's rows that carry none of the labels."""
        counts = np.asarray(tokenized["train"]["labels"]).sum(0)
        found: dict[str, Any] = {"label_rows": dict(zip(self.names, map(int, counts), strict=True))}
        none = {
            name: int((np.asarray(ds["labels"]).sum(1) == 0).sum())
            for name, ds in tokenized.items()
        }
        if any(none.values()):
            found["rows_without_labels"] = none
        return found

    def weighted_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, class_weights: tuple[float, ...]
    ) -> torch.Tensor:
        """Binary cross-entropy with each label's positive weight."""
        weight = torch.tensor(class_weights, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), labels, pos_weight=weight)

    def weighted_loss_items(self, labels: torch.Tensor, class_weights: tuple[float, ...]) -> float:
        """The rows (times the labels: the same per row): positive weights leave the mean's
        divisor as it is."""
        return len(labels)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Each label's sigmoid, in float64."""
        return _sigmoid(logits)

    def predictions(self, logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """0/1 rows at the thresholds; `labels` lets an evaluation during training tune them on
        itself."""
        probabilities = _sigmoid(logits)
        return (probabilities >= self._thresholds(probabilities, labels)).astype(int)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        predictions = self.predictions(logits, labels)
        return metrics.multi_label_metrics(labels.astype(int), predictions)

    def details(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
        """Per label: threshold, precision, recall, F1, support; and the scores at a fixed 0.5,
        to show what tuning the thresholds gained."""
        probabilities, labels = _sigmoid(logits), labels.astype(int)
        thresholds = self._thresholds(probabilities, labels)
        names = list(self.names)
        report = metrics.per_label(labels, (probabilities >= thresholds).astype(int), names)
        for name, threshold in zip(names, thresholds, strict=True):
            report[name]["threshold"] = float(threshold)
        fixed = metrics.multi_label_metrics(labels, (probabilities >= 0.5).astype(int))
        return {"per_label": report, "at_threshold_0.5": fixed}

    def format_predictions(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """The labels at or above their thresholds and every label's probability."""
        names = self.names
        probabilities = self.probabilities(logits)
        chosen = probabilities >= self._thresholds(probabilities, None)
        return [
            {
                "labels": [n for n, c in zip(names, row, strict=True) if c],
                "scores": {n: float(x) for n, x in zip(names, p, strict=True)},
            }
            for p, row in zip(probabilities, chosen, strict=True)
        ]

    def fit(
        self, evaluation: Evaluation, labels: np.ndarray, model: torch.nn.Module
    ) -> tuple[dict[str, Any], Evaluation]:
        """Each label's threshold; the evaluation as it was, with a note naming the labels
        that take the shared threshold."""
        tuned, shared = metrics.threshold_tuning(_sigmoid(evaluation.logits), labels)
        names = [n for n, on_shared in zip(self.names, shared, strict=True) if on_shared]
        note = None
        if names:
            shown = ", ".join(names[:12]) + (f" and {len(names) - 12} more" * (len(names) > 12))
            note = (
                f"{len(names)} of {len(self.names)} labels take the shared threshold "
                f"{tuned[shared][0]:.2f} (too few validation positives, or their own threshold's "
                f"F1 did not beat marking them on every row by {metrics.BASE_RATE_MARGIN}): {shown}"
            )
        details = {**(evaluation.details or {}), "labels_on_shared_threshold": names}
        fitted = replace(evaluation, details=details, note=note)
        return {"thresholds": tuple(float(t) for t in tuned)}, fitted

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Path) -> None:
        """No figure: the per-label table in validation_details says it."""

    def _thresholds(self, probabilities: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if self.thresholds is not None:
            return np.asarray(self.thresholds)
        if labels is not None:  # an evaluation during training: tuned on itself
            return metrics.tune_thresholds(probabilities, labels)
        return np.full(probabilities.shape[1], 0.5)


@dataclass(frozen=True)
class Regression:
    """A score per row: one output, mean squared error; no classes, so no probabilities and
    no class weights."""

    problem_type = "regression"
    default_metric = "pearson"
    metric_names = ("pearson", "spearman", "mse")
    stratify_column = None
    weights_are = "class weights"

    def describe(self) -> str:
        return "regression"

    def meta(self, label_format: dict[str, Any] | None) -> dict[str, Any]:
        return {}

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]:
        return {}

    def weighted_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, class_weights: tuple[float, ...]
    ) -> torch.Tensor:
        raise TypeError("class weights weigh classes; a regression has none")

    def weighted_loss_items(self, labels: torch.Tensor, class_weights: tuple[float, ...]) -> float:
        raise TypeError("class weights weigh classes; a regression has none")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        raise TypeError("a regression's outputs are scores, not probabilities")

    def predictions(self, logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """The values."""
        return logits.reshape(-1)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        predictions = self.predictions(logits, labels)
        return metrics.regression_metrics(labels.astype(np.float64), predictions)

    def details(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
        return None

    def format_predictions(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """The score."""
        return [{"label": float(v), "scores": {"score": float(v)}} for v in logits.reshape(-1)]

    def fit(
        self, evaluation: Evaluation, labels: np.ndarray, model: torch.nn.Module
    ) -> tuple[dict[str, Any], Evaluation]:
        """Nothing to learn after training."""
        return {}, evaluation

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Path) -> None:
        """No figure."""


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
