"""What the labels are and how a split carries them: classes, several labels per row
(multi-label) or a score, decided from the training labels, then encoded in every split as the
model wants them (class ids, multi-hot rows or floats), with train.class_weights resolved.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Value

from tunesmith.config import Config, DataConfig
from tunesmith.data import Columns
from tunesmith.errors import UserError, rows_shown
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


# train.class_weights=auto per label kind: multi-label runs weigh rare labels up, single-label
# runs weigh nothing (each measured on two sets: benchmarks/results/rare_labels.md).
AUTO_CLASS_WEIGHTS = {"multi_label": "balanced", "classification": None}


def weights_setting(
    setting: dict[str, float] | str | None, kind: str
) -> tuple[dict[str, float] | str | None, str]:
    """train.class_weights with auto resolved for this label kind, and how it was set, in words
    for the startup line."""
    if setting == "auto":
        chosen = AUTO_CLASS_WEIGHTS.get(kind)
        return chosen, f"auto: {chosen or 'none'} for {kind}"
    return setting, setting if isinstance(setting, str) else "train.class_weights"


def class_weights(
    setting: dict[str, float] | str | None, labels: LabelSpec, train_ids: list
) -> tuple[float, ...] | None:
    """train.class_weights (auto resolved by `weights_setting`) as one weight per class id:
    balanced gives each class rows / (classes x its rows), as scikit-learn's "balanced" does; a
    mapping names classes. For multi-label they are BCE's positive weights: balanced is each
    label's negatives over its positives."""
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


def decide_labels(train: Dataset, column: str | None, cfg: Config, source: str) -> LabelSpec:
    """The labels training decides on: label sets (several per row) when train gives them,
    else classes or a regression, from the values."""
    sets = multi_label.label_sets(train, column, cfg.data, source)
    if sets is not None:
        return LabelSpec("multi_label", multi_label.label_names(sets, cfg.data, source))
    return infer_labels(train, column, cfg.task, cfg.label_names, source)


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
