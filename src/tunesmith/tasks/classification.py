"""Single-sentence and sentence-pair classification (2..N classes) and regression.

Both use `AutoModelForSequenceClassification`: classification with one logit per class and
cross-entropy, regression with one output and mean squared error (`problem_type="regression"`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, Value
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from tunesmith import data, metrics
from tunesmith.config import Config, DataConfig
from tunesmith.data import Columns
from tunesmith.errors import UserError, rows_shown
from tunesmith.inference import infer_logits
from tunesmith.metrics import Evaluation
from tunesmith.models import load_sequence_classifier, scale_output_layer
from tunesmith.tasks import multi_label


@dataclass(frozen=True)
class LabelSpec:
    """What the labels are: one class of `names` per row, several (multi_label), or a float."""

    kind: str  # "classification", "multi_label" or "regression"
    names: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return {0: "score"} if self.kind == "regression" else dict(enumerate(self.names))

    @property
    def has_classes(self) -> bool:
        """Whether texts go into named classes (single- or multi-label), as opposed to a score."""
        return self.kind != "regression"

    @classmethod
    def of_export(cls, model_config: Any, meta: dict[str, Any]) -> LabelSpec:
        """An exported classifier's labels: the kind its tunesmith.json records, or for a folder
        from elsewhere the one its config's problem_type implies."""
        kind = meta.get("task")
        if kind not in LABEL_KINDS:
            problem = model_config.problem_type
            kind = {"regression": "regression", "multi_label_classification": "multi_label"}
            kind = kind.get(problem, "classification")
        if kind == "regression":
            return cls(kind)
        return cls(kind, tuple(model_config.id2label[i] for i in range(model_config.num_labels)))


LABEL_KINDS = ("classification", "multi_label", "regression")


def _reject_empty_labels(values: list, column: str, source: str) -> None:
    missing = [
        i for i, v in enumerate(values) if v is None or (isinstance(v, float) and math.isnan(v))
    ]
    if missing:
        raise UserError(
            f"{source}: column {column} has {len(missing)} empty label(s) "
            f"(rows {rows_shown(missing)}); fill or remove those rows"
        )


def class_weights(
    setting: dict[str, float] | str | None, labels: LabelSpec, train_ids: list
) -> tuple[float, ...] | None:
    """train.class_weights as one weight per class id: balanced gives each class
    rows / (classes x its rows), as scikit-learn's "balanced" does; a mapping names classes.
    For multi-label they are BCE's positive weights: balanced is each label's negatives over
    its positives."""
    if setting is None:
        return None
    if labels.kind == "regression":
        raise UserError("train.class_weights weighs classes; these labels are a regression")
    if labels.kind == "multi_label" and setting == "balanced":
        # BCE's pos_weight: a label's positives weigh its negatives / positives.
        rows = np.asarray(train_ids)
        positives = rows.sum(0)
        return tuple(float((len(rows) - p) / p) if p else 1.0 for p in positives)
    if setting == "balanced":
        counts = np.bincount(np.asarray(train_ids), minlength=labels.num_labels)
        total = counts.sum()
        # A class with no training row never enters the loss; its weight does not matter.
        return tuple(float(total / (len(counts) * c)) if c else 1.0 for c in counts)
    unknown = [name for name in setting if name not in labels.names]
    if unknown:
        raise UserError(
            f"train.class_weights names {', '.join(map(repr, unknown))}, not among the classes "
            f"{', '.join(labels.names)}"
        )
    return tuple(float(setting.get(name, 1.0)) for name in labels.names)


# Fewer validation rows fit a temperature to noise (benchmarks/README.md, calibration).
MIN_ROWS_FOR_TEMPERATURE = 50
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _reject_mixed_kinds(values: list, column: str, source: str) -> None:
    """Numbers and names in one column (`0, 1, yes, 0.5`) are a slip, not four classes: a CSV
    reader hands them all over as names, which would train on them silently."""
    kinds: dict[str, list[int]] = {"numbers": [], "names": []}
    for i, v in enumerate(values):
        name = isinstance(v, str) and not NUMBER.fullmatch(v.strip())
        kinds["names" if name else "numbers"].append(i)
    if kinds["numbers"] and kinds["names"]:
        parts = []
        for kind, rows in sorted(kinds.items()):
            distinct = list(dict.fromkeys(repr(values[i]) for i in rows))
            shown = ", ".join(distinct[:4]) + (", ..." if len(distinct) > 4 else "")
            parts.append(f"{kind} {shown} (rows {rows_shown(rows)})")
        raise UserError(
            f"{source}: column {column} mixes {' and '.join(parts)}; use one kind of label "
            f"throughout"
        )


def infer_labels(
    ds: Dataset, column: str, task: str, label_names: list[str] | None, source: str
) -> LabelSpec:
    """Decide classification vs regression and the class names from the training labels."""
    feature = ds.features[column]
    values = ds[column]
    _reject_empty_labels(values, column, source)
    kinds = {type(v) for v in values}
    if kinds - {int, float, str, bool}:
        raise UserError(
            f"{source}: column {column} holds {sorted(k.__name__ for k in kinds)}; "
            f"labels must be numbers or names"
        )
    _reject_mixed_kinds(values, column, source)
    if task == "regression":
        if str in kinds:
            raise UserError(f"{source}: task=regression needs numeric labels in column {column}")
        return LabelSpec("regression")
    numeric = kinds <= {int, float, bool}
    if numeric and not all(float(v).is_integer() for v in values):
        if task == "classification":
            raise UserError(
                f"{source}: column {column} has fractional labels; task=classification needs "
                f"whole numbers or names (or use task=regression)"
            )
        return LabelSpec("regression")
    if len(set(values)) < 2:
        raise UserError(
            f"{source}: column {column} holds a single class ({values[0]!r}); classification "
            f"needs at least two"
        )
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
    elif numeric:
        ints = [int(v) for v in values]
        if min(ints) < 0:
            raise UserError(f"{source}: column {column} has negative class ids; ids start at 0")
        names = [str(i) for i in range(max(ints) + 1)]
    else:
        names = sorted(set(values))
    if label_names is not None:
        if numeric and len(label_names) != len(names):
            raise UserError(
                f"label_names has {len(label_names)} names but the labels have {len(names)} ids"
            )
        names = label_names if numeric or isinstance(feature, ClassLabel) else names
    return LabelSpec("classification", tuple(str(n) for n in names))


def encode_split(
    ds: Dataset, columns: Columns, labels: LabelSpec, d: DataConfig, source: str
) -> Dataset:
    """A split's `labels` column as the model wants it: class ids, floats, or multi-hot rows."""
    if labels.kind != "multi_label":
        return encode_labels(ds, columns.label, labels, source)
    sets = multi_label.label_sets(ds, columns.label, d, source)
    if sets is None:
        raise UserError(
            f"{source}: its labels are one per row, while training had several per row (lists, "
            f"data.label_delimiter or data.label_columns); give them in the same form"
        )
    return multi_label.encode_label_sets(ds, sets, labels.names, columns.label, source)


def encode_labels(ds: Dataset, column: str, spec: LabelSpec, source: str) -> Dataset:
    """Add the `labels` column the model expects: class ids (a ClassLabel) or floats."""
    values = ds[column]
    if spec.kind == "regression":
        bad = [i for i, v in enumerate(values) if not isinstance(v, int | float) or math.isnan(v)]
        if bad:
            raise UserError(
                f"{source}: column {column} has empty or non-numeric labels "
                f"(rows {rows_shown(bad)})"
            )
        encoded: list[Any] = [float(v) for v in values]
        feature = Value("float32")
    else:
        _reject_empty_labels(values, column, source)
        index = {name: i for i, name in enumerate(spec.names)}
        if isinstance(ds.features[column], ClassLabel):
            # Ids as stored: label_names may have renamed the classes, never reordered them.
            encoded = [v if 0 <= v < len(spec.names) else None for v in values]
        elif all(isinstance(v, str) for v in values):
            encoded = [index.get(v) for v in values]
        else:
            encoded = [
                index.get(v)
                if isinstance(v, str)  # mixed names and numbers: look names up, not float(name)
                else int(v)
                if float(v).is_integer() and 0 <= v < len(spec.names)
                else None
                for v in values
            ]
        unseen = [i for i, v in enumerate(encoded) if v is None]
        if unseen:
            seen = ", ".join(spec.names)
            raise UserError(
                f"{source}: label {values[unseen[0]]!r} (rows {rows_shown(unseen)}) never occurs "
                f"in the training labels ({seen}); fix the labels or add examples of it to train"
            )
        feature = ClassLabel(names=list(spec.names))
    drop = [c for c in dict.fromkeys([column, "labels"]) if c in ds.column_names]
    return ds.remove_columns(drop).add_column("labels", encoded, feature=feature)


@dataclass(frozen=True)
class SequenceClassification:
    """Everything task-specific the engine, evaluate and predict need, as plain functions."""

    columns: Columns
    labels: LabelSpec
    class_weights: tuple[float, ...] | None = None  # per class id, in the loss; None: all 1
    # Multi-label: each label's decision threshold, tuned on validation after training; until
    # then every evaluation tunes its own (what the best model is picked by).
    thresholds: tuple[float, ...] | None = None
    # Multi-label: how the labels were given (label_delimiter, label_columns), for evaluate.
    label_format: dict[str, Any] | None = None
    # Single-label: fit a temperature on validation after training (train.temperature_scaling).
    temperature_scaling: bool = False
    # The fitted temperature, already divided into the output layer's weights.
    temperature: float | None = None

    # Unless train.freeze_word_embeddings says otherwise: the step is faster, accuracy the same.
    freeze_word_embeddings = True
    kept_columns = ("labels",)  # the encoded labels survive tokenization
    freezes_bottom_layers_on_cpu = True  # train.freeze_layers unset: see TrainConfig
    packs = False  # one row per sample, padded
    cuts_into_blocks = False  # one sample per row: a row at max_length was truncated
    evaluate_before_training = False  # a fresh head scores chance; the majority class says more
    peft_task_type = "SEQ_CLS"  # peft then trains the fresh head fully, beside the adapters

    @staticmethod
    def exported_thresholds(labels: LabelSpec, meta: dict[str, Any]) -> tuple[float, ...] | None:
        """Multi-label: the thresholds tuned on validation that tunesmith.json holds (0.5 for a
        folder without them, never tuned on the data being predicted); None otherwise."""
        if labels.kind != "multi_label":
            return None
        thresholds = meta.get("thresholds") or dict.fromkeys(labels.names, 0.5)
        return tuple(thresholds[n] for n in labels.names)

    @classmethod
    def from_splits(
        cls, splits: dict[str, Dataset], sources: dict[str, str], cfg: Config
    ) -> tuple[dict[str, Dataset], SequenceClassification]:
        """The text and label columns found on every split and their cells checked; labels
        decided from train (classes or regression) and encoded in every split; class weights
        resolved against the training labels."""
        d = cfg.data
        need_label = not d.label_columns  # 0/1 columns are the labels then
        columns = data.detect_columns(splits["train"], d, sources["train"], need_label)
        if d.label_columns:
            columns = dataclasses.replace(columns, label=None)
        checked = {}
        for name, ds in splits.items():
            data.detect_columns(ds, d, sources[name], need_label)  # the same columns everywhere
            checked[name] = data.check_texts(ds, columns, sources[name], d.drop_empty)
        train, source = checked["train"], sources["train"]
        sets = multi_label.label_sets(train, columns.label, d, source)
        if sets is not None:
            labels = LabelSpec("multi_label", multi_label.label_names(sets, d))
        else:
            labels = infer_labels(train, columns.label, cfg.task, cfg.label_names, source)
        encoded = {
            name: encode_split(ds, columns, labels, d, sources[name])
            for name, ds in checked.items()
        }
        weights = class_weights(cfg.train.class_weights, labels, encoded["train"]["labels"])
        meta = {"label_delimiter": d.label_delimiter, "label_columns": d.label_columns}
        scaling = cfg.train.temperature_scaling
        task = cls(columns, labels, weights, label_format=meta, temperature_scaling=scaling)
        return encoded, task

    @property
    def stratify_column(self) -> str | None:
        """Held-out validation keeps the class balance of train."""
        return "labels" if self.labels.kind == "classification" else None

    @property
    def kind(self) -> str:
        return self.labels.kind

    def describe(self) -> str:
        count = len(self.labels.names)
        if self.labels.kind == "multi_label":
            kind = f"multi-label, {count} labels" + (f" {list(self.labels.names)}" * (count <= 10))
        else:
            kind = self.labels.kind + (f", labels {list(self.labels.names)}" if count else "")
        if self.class_weights is None:
            return kind
        pairs = zip(self.labels.names, self.class_weights, strict=True)
        what = "positive weights" if self.labels.kind == "multi_label" else "class weights"
        return f"{kind}, {what} {{" + ", ".join(f"{n}: {w:.3g}" for n, w in pairs) + "}"

    def meta(self) -> dict[str, Any]:
        """What `tunesmith.json` in the exported folder says about the inputs."""
        meta = {
            "task": self.labels.kind,
            "text_column": self.columns.text,
            "text_pair_column": self.columns.text_pair,
            "label_column": self.columns.label,
        }
        if self.labels.kind == "multi_label":
            meta.update(self.label_format or {})
            if self.thresholds is not None:
                meta["thresholds"] = dict(zip(self.labels.names, self.thresholds, strict=True))
        if self.temperature is not None:  # already in the weights: said, not to be applied again
            meta["temperature_folded_into_weights"] = self.temperature
        return meta

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Nothing to add: encoders come with padding."""

    def load_model(self, name: str, attention_dropout: float | None) -> torch.nn.Module:
        return load_sequence_classifier(name, attention_dropout, **self.model_kwargs())

    def train_collator(self, tokenizer: PreTrainedTokenizerBase, pad_multiple: int) -> Any:
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple)

    eval_collator = train_collator

    def fix_eval_masks(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, seed: int) -> Dataset:
        """Nothing is random in a classification input."""
        return ds

    def keep_trainable(self, ds: Dataset, split: str, max_length: int) -> Dataset:
        """Every tokenized row has a label to learn."""
        return ds

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]:
        """The class names and, for classes, the majority class's scores: the floor to beat;
        for multi-label, each label's training rows."""
        found: dict[str, Any] = {"labels": list(self.labels.names)}
        if self.multi:
            counts = np.asarray(tokenized["train"]["labels"]).sum(0)
            found["label_rows"] = dict(zip(self.labels.names, map(int, counts), strict=True))
        if self.labels.kind == "classification" and "validation" in tokenized:
            found["majority_baseline"] = metrics.majority_baseline(
                np.asarray(tokenized["train"]["labels"]),
                np.asarray(tokenized["validation"]["labels"]),
                self.labels.num_labels,
            )
        return found

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's own loss; with class weights, cross-entropy weighted by the row's class
        (PyTorch's weighted mean: the sum of weighted losses over the sum of the weights)."""
        if self.class_weights is None:
            return model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        weight = torch.tensor(self.class_weights, device=logits.device)
        if self.labels.kind == "multi_label":
            return F.binary_cross_entropy_with_logits(
                logits.float(), batch["labels"], pos_weight=weight
            )
        return F.cross_entropy(logits.float(), batch["labels"], weight=weight)

    def loss_items(self, batch: dict[str, torch.Tensor]) -> float:
        """What the loss is a mean over: the rows (times the labels, for multi-label: the same
        per row), or with class weights for single labels the rows' summed weight."""
        if self.class_weights is None or self.labels.kind == "multi_label":
            return len(batch["labels"])
        weight = torch.tensor(self.class_weights, device=batch["labels"].device)
        return float(weight[batch["labels"]].sum())

    def evaluate_share(
        self,
        model: torch.nn.Module,
        ds: Dataset,
        collate: Any,
        max_tokens: int,
        rank: int,
        world_size: int,
        autocast: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, logits) of this rank's share of the length-sorted batches."""
        return infer_logits(model, ds, collate, max_tokens, rank, world_size, autocast)

    def combine(self, shares: list[tuple[np.ndarray, np.ndarray]], ds: Dataset) -> Evaluation:
        """Every rank's rows back in input order, then the metrics over all of them."""
        width = shares[0][1].shape[-1]
        logits = np.empty((len(ds), width), dtype=np.float32)
        for indices, share_logits in shares:
            logits[indices] = share_logits
        labels = np.asarray(ds["labels"])
        scores = self.compute_metrics(logits, labels)
        details = None
        if self.multi:
            details = self.multi_label_details(logits, labels)
        elif self.labels.kind == "classification" and np.isfinite(logits).all():
            probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
            details = {"calibration_error": metrics.calibration_error(probabilities, labels)}
        # NaN/inf logits still argmax to some class and score; such a model is never the best.
        return Evaluation(scores, bool(np.isfinite(logits).all()), logits, details)

    @property
    def multi(self) -> bool:
        return self.labels.kind == "multi_label"

    def fitted(
        self, ds: Dataset, evaluation: Evaluation, model: torch.nn.Module
    ) -> tuple[SequenceClassification, Evaluation]:
        """After training, what `ds` (validation) teaches, kept for test, the export, predict
        and serve, and `evaluation` as the model then gives it. Multi-label: each label's
        threshold. Single-label: a temperature, divided into the output layer's weights, so the
        exported folder gives calibrated probabilities in `pipeline` too; the same labels and
        scores, the calibration error on the rows that fitted it beside the one before."""
        labels = np.asarray(ds["labels"])
        if self.multi:
            tuned = metrics.tune_thresholds(_sigmoid(evaluation.logits), labels)
            return dataclasses.replace(self, thresholds=tuple(float(t) for t in tuned)), evaluation
        enough_rows = len(labels) >= MIN_ROWS_FOR_TEMPERATURE
        if self.labels.kind != "classification" or not self.temperature_scaling or not enough_rows:
            return self, evaluation
        temperature = metrics.fit_temperature(evaluation.logits, labels)
        scale_output_layer(model, 1.0 / temperature, len(self.labels.names))
        logits = evaluation.logits / temperature
        probabilities = torch.softmax(torch.from_numpy(logits), -1).numpy()
        details = {
            "calibration_error": metrics.calibration_error(probabilities, labels),
            "calibration_error_before_temperature": evaluation.details["calibration_error"],
            "temperature": round(temperature, 4),
        }
        fitted = dataclasses.replace(self, temperature=temperature)
        return fitted, dataclasses.replace(evaluation, logits=logits, details=details)

    def _thresholds(self, probabilities: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        if self.thresholds is not None:
            return np.asarray(self.thresholds)
        if labels is not None:  # an evaluation during training: tuned on itself
            return metrics.tune_thresholds(probabilities, labels)
        return np.full(probabilities.shape[1], 0.5)

    def multi_label_details(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Per label: threshold, precision, recall, F1, support; and the scores at a fixed 0.5,
        to show what tuning the thresholds gained."""
        probabilities, labels = _sigmoid(logits), labels.astype(int)
        thresholds = self._thresholds(probabilities, labels)
        names = list(self.labels.names)
        report = metrics.per_label(labels, (probabilities >= thresholds).astype(int), names)
        for name, threshold in zip(names, thresholds, strict=True):
            report[name]["threshold"] = float(threshold)
        fixed = metrics.multi_label_metrics(labels, (probabilities >= 0.5).astype(int))
        return {"per_label": report, "at_threshold_0.5": fixed}

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Path) -> None:
        from tunesmith import tracking  # matplotlib: ~1 s that prediction never needs

        if self.labels.kind == "classification":
            tracking.plot_confusion_matrix(
                np.asarray(ds["labels"]),
                self.predictions(evaluation.logits),
                list(self.labels.names),
                output_dir / "confusion_matrix.png",
            )

    @property
    def default_metric(self) -> str:
        # Multi-label: macro-F1, which rare labels move as much as common ones.
        return {"classification": "accuracy", "multi_label": "macro_f1"}.get(
            self.labels.kind, "pearson"
        )

    @property
    def metric_names(self) -> tuple[str, ...]:
        if self.labels.kind == "classification":
            return ("accuracy", "f1", "macro_f1", "mcc")
        if self.multi:
            return ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy")
        return ("pearson", "spearman", "mse")

    def tokenize_function(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        """A batched `Dataset.map` function: truncated input ids (no padding) and lengths."""
        text, pair = self.columns.text, self.columns.text_pair

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            second = batch[pair] if pair else None
            encoded = tokenizer(batch[text], second, truncation=True, max_length=max_length)
            encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
            return encoded

        return tokenize

    def model_kwargs(self) -> dict[str, Any]:
        """Head settings for `AutoModelForSequenceClassification.from_pretrained`."""
        kwargs: dict[str, Any] = {
            "num_labels": self.labels.num_labels,
            "id2label": self.labels.id2label,
            "label2id": {v: k for k, v in self.labels.id2label.items()},
        }
        kwargs["problem_type"] = {
            "regression": "regression",
            "multi_label": "multi_label_classification",  # BCE with logits, one per label
        }.get(self.labels.kind, "single_label_classification")
        return kwargs

    def predictions(self, logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Class ids, values, or (multi-label) 0/1 rows at the thresholds; `labels` lets an
        evaluation during training tune them on itself."""
        if self.labels.kind == "regression":
            return logits.reshape(-1)
        if self.multi:
            probabilities = _sigmoid(logits)
            return (probabilities >= self._thresholds(probabilities, labels)).astype(int)
        return logits.argmax(-1)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        predictions = self.predictions(logits, labels)
        if self.labels.kind == "regression":
            return metrics.regression_metrics(labels.astype(np.float64), predictions)
        if self.multi:
            return metrics.multi_label_metrics(labels.astype(int), predictions)
        return metrics.classification_metrics(labels, predictions, self.labels.num_labels)

    def format_predictions(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """One record per row: the label name and every class's probability (or the score);
        multi-label: the labels at or above their thresholds and every label's probability."""
        if self.labels.kind == "regression":
            return [{"label": float(v), "scores": {"score": float(v)}} for v in logits.reshape(-1)]
        names = self.labels.names
        probabilities = self.probabilities(logits)
        if self.multi:
            chosen = probabilities >= self._thresholds(probabilities, None)
            return [
                {
                    "labels": [n for n, c in zip(names, row, strict=True) if c],
                    "scores": {n: float(x) for n, x in zip(names, p, strict=True)},
                }
                for p, row in zip(probabilities, chosen, strict=True)
            ]
        return [
            {
                "label": names[int(p.argmax())],
                "scores": {n: float(x) for n, x in zip(names, p, strict=True)},
            }
            for p in probabilities
        ]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Rows x classes: each label's sigmoid (multi-label, in float64) or the softmax over the
        classes (in the logits' dtype)."""
        if self.multi:
            return _sigmoid(logits)
        shifted = np.exp(logits - logits.max(-1, keepdims=True))
        return shifted / shifted.sum(-1, keepdims=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
