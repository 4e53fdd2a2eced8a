"""Several labels per text: reading label sets in the forms users have, and encoding them.

A split's label sets come from a column of lists (JSON Lines, or JSON list text in a CSV cell),
from a delimited string column (`data.label_delimiter`), or from one 0/1 column per label
(`data.label_columns`). The model sees a multi-hot float row per text and learns one sigmoid
output per label with binary cross-entropy (`problem_type="multi_label_classification"`).
"""

from __future__ import annotations

import json
from typing import Any

from datasets import Dataset, Sequence, Value

from tunesmith.config import DataConfig
from tunesmith.errors import UserError


def label_sets(
    ds: Dataset, column: str | None, d: DataConfig, source: str
) -> list[list[str]] | None:
    """Each row's labels when the split is multi-label, else None (one label per row)."""
    if d.label_columns:
        return _from_binary_columns(ds, d.label_columns, source)
    if column is None:
        return None
    values = ds[column]
    if all(isinstance(v, list) for v in values):
        sets = values
    elif d.label_delimiter is not None:
        sets = [
            [part.strip() for part in str(v).split(d.label_delimiter) if part.strip()]
            if v is not None
            else []
            for v in values
        ]
    elif values and all(isinstance(v, str) and v.lstrip().startswith("[") for v in values):
        sets = [_json_list(v, i, column, source) for i, v in enumerate(values)]
    else:
        return None
    bad = [i for i, labels in enumerate(sets) if not all(isinstance(x, str | int) for x in labels)]
    if bad:
        raise UserError(
            f"{source}: column {column} row {bad[0] + 1} holds {sets[bad[0]]!r}; a label list "
            f"holds names or numbers"
        )
    # An empty set says "none of the labels", as a row of 0/1 columns may: in toxicity data most
    # rows are so.
    return [[str(x) for x in labels] for labels in sets]


def _json_list(value: str, row: int, column: str, source: str) -> list:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise UserError(
            f"{source}: column {column} row {row + 1} is not a valid JSON list ({e.msg} at "
            f'character {e.pos + 1}): {value[:60]!r}; write it like ["joy", "love"]'
        ) from None
    if not isinstance(parsed, list):
        raise UserError(f"{source}: column {column} row {row + 1} is not a JSON list: {value!r}")
    return parsed


def _from_binary_columns(ds: Dataset, columns: list[str], source: str) -> list[list[str]]:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise UserError(
            f"{source}: data.label_columns names {', '.join(missing)}, not a column here "
            f"(columns: {', '.join(ds.column_names)})"
        )
    sets: list[list[str]] = [[] for _ in range(len(ds))]
    for column in columns:
        for i, value in enumerate(ds[column]):
            flag = _zero_or_one(value)
            if flag is None:
                raise UserError(
                    f"{source}: column {column} row {i + 1} holds {value!r}; a label column "
                    f"holds 0 or 1"
                )
            if flag:
                sets[i].append(column)
    return sets


def _zero_or_one(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


def label_names(sets: list[list[str]], d: DataConfig, source: str) -> tuple[str, ...]:
    """The labels in id order: data.label_columns' order, else sorted."""
    if d.label_columns:
        return tuple(d.label_columns)
    names = tuple(sorted({label for labels in sets for label in labels}))
    if not names:
        raise UserError(f"{source}: no row carries a label (every label set is empty)")
    return names


def encode_label_sets(
    ds: Dataset, sets: list[list[str]], names: tuple[str, ...], column: str | None, source: str
) -> Dataset:
    """Add `labels`: a multi-hot float row per text; a label unseen in training is an error."""
    index = {name: i for i, name in enumerate(names)}
    for i, labels in enumerate(sets):
        unseen = [label for label in labels if label not in index]
        if unseen:
            raise UserError(
                f"{source}: row {i + 1} has label {unseen[0]!r}, which no training row has "
                f"({len(names)} labels there); fix it or add training examples of it"
            )
    rows = []
    for labels in sets:
        row = [0.0] * len(names)
        for label in labels:
            row[index[label]] = 1.0
        rows.append(row)
    drop = [c for c in dict.fromkeys([column, "labels"]) if c and c in ds.column_names]
    return ds.remove_columns(drop).add_column("labels", rows, feature=Sequence(Value("float32")))
