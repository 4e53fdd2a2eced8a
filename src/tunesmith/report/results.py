"""The 'Validation results' and 'Worst-predicted validation examples' sections: the model
predicts the validation rows again (`score`), and the page gets its scores, per-class tables, a
confusion matrix or a regressor's scatter, and the rows it got most wrong."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith import metrics
from tunesmith.report.html import Figures, _note, _p, _shorten, _table
from tunesmith.report.run import FinishedRun, Splits

WORST_EXAMPLES = 10
LENGTH_EDGES = (64, 128, 256, 512, 1024)  # token-length buckets of the by-length table


@dataclass
class Scored:
    """A classifier's predictions on the validation rows, its classes in a given order."""

    names: list[str]
    labels: np.ndarray  # class ids; multi-label: 0/1, rows x labels
    probabilities: np.ndarray  # rows x classes: softmax; multi-label: each label's sigmoid
    predictions: np.ndarray  # class ids; multi-label: 0/1 at each label's threshold
    thresholds: np.ndarray | None  # multi-label: the tuned ones saved in model/tunesmith.json

    @property
    def multi(self) -> bool:
        return self.thresholds is not None

    def scores(self) -> dict[str, float]:
        if self.multi:
            return metrics.multi_label_metrics(self.labels, self.predictions)
        return metrics.classification_metrics(self.labels, self.predictions, len(self.names))

    def per_class(self) -> dict[str, dict]:
        """Precision, recall, F1, support (and the threshold) per class, as metrics.json holds a
        multi-label run's validation_details."""
        report = metrics.per_label(self.labels, self.predictions, self.names)
        if self.multi:
            for name, threshold in zip(self.names, self.thresholds, strict=True):
                report[name]["threshold"] = float(threshold)
        return report


def score(predictor: Any, splits: Splits, names: list[str] | None = None) -> Scored:
    """`predictor`'s model on the validation rows, with the classes in `names`' order (its own
    by default; the rows' label ids must follow the same order)."""
    own = list(predictor.labels.names)
    names = names or own
    order = [own.index(n) for n in names]
    validation = splits.datasets["validation"]
    logits = predictor.logits(validation, splits.columns)[:, order].astype(np.float64)
    labels = np.asarray(validation["labels"])
    task = predictor.task(splits.columns)
    probabilities = task.probabilities(logits)
    if task.multi:
        thresholds = np.asarray(predictor.thresholds)[order]
        predictions = (probabilities >= thresholds).astype(int)
        return Scored(names, labels.astype(int), probabilities, predictions, thresholds)
    return Scored(names, labels, probabilities, probabilities.argmax(-1), None)


def _class_results(
    run: FinishedRun, scored: Scored, splits: Splits, figures: Figures, predictor: Any
) -> tuple[str, str]:
    """The 'Validation results' and 'Worst-predicted validation examples' sections of a
    classifier, single- or multi-label."""
    from tunesmith.runfolder import plots

    parts = [_metrics_table(run.metrics), *_recomputed_note(run, scored.scores())]
    names, labels, predictions = scored.names, scored.labels, scored.predictions
    if scored.multi:
        parts.append(_per_class_table(scored.per_class(), "Per label, at its tuned threshold"))
    else:
        parts.append(
            figures.add(
                "confusion_matrix",
                lambda p: plots.plot_confusion_matrix(labels, predictions, names, p),
                "validation confusion matrix",
            )
        )
        parts.append(_per_class_table(scored.per_class(), "Per class"))
    parts.append(_by_length(scored, splits, predictor))
    return "\n".join(parts), _worst(scored, splits)


def token_lengths(ds: Any, columns: Any, tokenizer: Any) -> np.ndarray:
    """Untruncated token counts (special tokens included), so a cut at max_length shows."""
    texts = [str(t) for t in ds[columns.text]]
    pairs = [str(t) for t in ds[columns.text_pair]] if columns.text_pair else None
    encoded = tokenizer(texts, pairs, truncation=False, verbose=False)
    return np.asarray([len(ids) for ids in encoded["input_ids"]])


def _by_length(scored: Scored, splits: Splits, predictor: Any) -> str:
    """Long texts: validation scores per token-length bucket, so a cut that costs shows."""
    lengths = token_lengths(splits.datasets["validation"], splits.columns, predictor.tokenizer)
    if lengths.max(initial=0) <= LENGTH_EDGES[1]:
        return ""  # short texts: one bucket says nothing the scores above do not
    bucket = np.searchsorted(LENGTH_EDGES, lengths, side="left")
    bounds = [0, *LENGTH_EDGES, math.inf]
    metric = "micro-F1" if scored.multi else "accuracy"
    cut_at = predictor.max_length
    chunked = predictor.meta.get("long_texts") == "chunk"
    rows = []
    for b in np.unique(bucket):
        keep = bucket == b
        low, high = bounds[b] + 1, bounds[b + 1]
        if scored.multi:
            value = metrics.multi_label_metrics(scored.labels[keep], scored.predictions[keep])
            value = value["micro_f1"]
        else:
            value = float((scored.labels[keep] == scored.predictions[keep]).mean())
        cut = "no" if high <= cut_at else "some" if low <= cut_at else "all" if chunked else "yes"
        span = f"{low}-{high}" if high < math.inf else f"{low}+"
        rows.append([span, int(keep.sum()), value, cut])
    if chunked:
        kept = (
            f"reads each row in windows of max_length={cut_at} tokens and pools their answers "
            f"(data.long_texts=chunk, data.pooling={predictor.meta.get('pooling', 'mean')})"
        )
        last = "in several windows"
    else:
        kept = (
            f"keeps max_length={cut_at} tokens of each row (data.truncation="
            f"{predictor.meta.get('truncation', 'head')})"
        )
        last = f"cut at {cut_at}"
    return "\n".join(
        [
            "<h3>By token length</h3>",
            _p(
                f"Validation {metric} per token-length bucket: do long rows do worse? "
                f"The model {kept}."
            ),
            _table(["tokens", "rows", metric, last], rows),
        ]
    )


def _worst(scored: Scored, splits: Splits) -> str:
    """The rows the model got most wrong: the lowest probability on the true class, or for
    multi-label the label furthest from the truth, a true one or an absent one."""
    validation, columns = splits.datasets["validation"], splits.columns
    texts = [[str(t) for t in validation[c]] for c in columns.texts]
    header = ["text", "text pair"][: len(columns.texts)]
    names, labels, probs = scored.names, scored.labels, scored.probabilities
    predictions = scored.predictions
    if scored.multi:
        right = np.where(labels == 1, probs, 1 - probs)  # each label's probability of the truth
        worst_label = right.argmin(1)
        order = np.argsort(right.min(1), kind="stable")[:WORST_EXAMPLES]

        def shown(row: np.ndarray) -> str | None:
            return ", ".join(n for n, x in zip(names, row, strict=True) if x) or None

        def verdict(i: int, j: int) -> str:
            true, chosen = labels[i, j], predictions[i, j]
            wrong = (", missed" if true else ", predicted") if true != chosen else ""
            return f"{names[j]} ({'true' if true else 'not true'}{wrong})"

        header += ["true labels", "predicted", "worst label", "p(worst label)", "its threshold"]
        rows = [
            [
                *(_shorten(t[i]) for t in texts),
                shown(labels[i]),
                shown(predictions[i]),
                verdict(i, j),
                float(probs[i, j]),
                float(scored.thresholds[j]),
            ]
            for i, j in ((i, worst_label[i]) for i in order)
        ]
        explain = (
            f"The {len(order)} validation rows whose worst label is furthest from the truth: a "
            f"true label given the lowest probability, or an absent one the highest."
        )
    else:
        true_prob = probs[np.arange(len(labels)), labels]
        order = np.argsort(true_prob, kind="stable")[:WORST_EXAMPLES]
        header += ["true label", "predicted", "p(true)", "p(predicted)"]
        rows = [
            [
                *(_shorten(t[i]) for t in texts),
                names[labels[i]],
                names[predictions[i]],
                float(true_prob[i]),
                float(probs[i, predictions[i]]),
            ]
            for i in order
        ]
        explain = (
            f"The {len(order)} validation rows with the lowest probability on their true class."
        )
    return _p(explain) + "\n" + _table(header, rows, css="examples")


def _regression_results(
    run: FinishedRun, predictor: Any, splits: Splits, figures: Figures
) -> tuple[str, str]:
    from tunesmith.runfolder import plots

    validation, columns = splits.datasets["validation"], splits.columns
    labels = np.asarray(validation["labels"]).astype(np.float64)
    predictions = predictor.logits(validation, columns).reshape(-1)
    recomputed = metrics.regression_metrics(labels, predictions)
    parts = [
        _metrics_table(run.metrics),
        *_recomputed_note(run, recomputed),
        figures.add(
            "predictions",
            lambda p: plots.plot_regression_scatter(labels, predictions, p),
            "predicted against true values",
        ),
        _p("A regression run: no confusion matrix or per-class table."),
    ]
    texts = [[str(t) for t in validation[c]] for c in columns.texts]
    errors = np.abs(predictions - labels)
    order = np.argsort(-errors, kind="stable")[:WORST_EXAMPLES]
    header = [*["text", "text pair"][: len(columns.texts)], "true value", "predicted"]
    rows = [
        [
            *(_shorten(t[i]) for t in texts),
            float(labels[i]),
            float(predictions[i]),
            float(errors[i]),
        ]
        for i in order
    ]
    explain = _p(f"The {len(order)} validation rows with the largest absolute error.")
    worst = explain + "\n" + _table([*header, "absolute error"], rows, css="examples")
    return "\n".join(parts), worst


def _without_predictions(run: FinishedRun, problem: str | None) -> tuple[str, str]:
    """The data could not be read: metrics.json's scores (and per-label figures) alone."""
    note = _note(f"Predictions need the validation rows: {problem}")
    parts = [_metrics_table(run.metrics)]
    per_label = run.metrics.get("validation_details", {}).get("per_label")
    if per_label:
        title = "Per label, at its tuned threshold (from metrics.json)"
        parts.append(_per_class_table(per_label, title))
    return "\n".join([*parts, note]), note


def _recomputed_note(run: FinishedRun, recomputed: dict[str, float]) -> list[str]:
    """A note when the best model's metric, recomputed now, is not what training measured."""
    metric = run.metrics.get("metric_for_best", "")
    then = run.metrics.get("validation", {}).get(metric)
    if then is None or abs(recomputed.get(metric, then) - then) <= 1e-3:
        return []
    return [
        _note(
            f"Recomputed now, validation {metric} is {recomputed[metric]:.4f}, not {then:.4f} as "
            f"at training time: the data files or the model changed since."
        )
    ]


def _metrics_table(m: dict) -> str:
    """Validation (and test) scores beside a baseline; multi-label adds validation's scores at a
    fixed 0.5, which shows what tuning the thresholds gained."""
    validation, test = m.get("validation", {}), m.get("test")
    baselines = m.get("baseline") or {}
    baseline = baselines.get("majority_class") or baselines.get("before_training")
    name = "majority baseline" if "majority_class" in baselines else "before training"
    fixed = (m.get("validation_details") or {}).get("at_threshold_0.5")
    header = [
        "metric",
        "validation",
        *(["test"] if test else []),
        *([name] if baseline else []),
        *(["validation at threshold 0.5"] if fixed else []),
    ]
    rows = [
        [
            name,
            value,
            *([test.get(name)] if test else []),
            *([baseline.get(name)] if baseline else []),
            *([fixed.get(name)] if fixed else []),
        ]
        for name, value in validation.items()
    ]
    return _table(header, rows)


def _per_class_table(per_class: dict[str, dict], title: str) -> str:
    """metrics.per_label's figures, with each label's threshold where there is one."""
    thresholds = all("threshold" in r for r in per_class.values())
    header = ["label", "threshold"] if thresholds else ["class"]
    rows = [
        [
            name,
            *([r["threshold"]] if thresholds else []),
            r["precision"],
            r["recall"],
            r["f1"],
            r["support"],
        ]
        for name, r in per_class.items()
    ]
    table = _table([*header, "precision", "recall", "F1", "support"], rows)
    return f"<h3>{html.escape(title)}</h3>\n{table}"
