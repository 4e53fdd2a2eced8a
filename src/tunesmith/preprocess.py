"""From raw splits to tokenized, cached splits a task can train on.

Order matters and is the same for every run: columns are found and texts checked on every split,
labels are decided from train and encoded everywhere, validation is held out (stratified,
seeded) when missing, samples are drawn, and only then is anything tokenized.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from tunesmith import data, metrics
from tunesmith.config import Config, DataConfig
from tunesmith.tasks import LabelSpec, SequenceClassification
from tunesmith.tasks.classification import encode_labels, infer_labels


@dataclass
class PreparedData:
    task: SequenceClassification
    train: Dataset  # tokenized, with `labels` and `length`
    validation: Dataset
    test: Dataset | None
    summary: dict


def default_cache_dir() -> Path:
    """~/.cache/tunesmith, or $TUNESMITH_CACHE_DIR."""
    return Path(os.environ.get("TUNESMITH_CACHE_DIR", Path.home() / ".cache" / "tunesmith"))


def _cache_key(ds: Dataset, tokenizer: PreTrainedTokenizerBase, *parts: object) -> str:
    # The tokenizer's own JSON, minus the truncation/padding state that each call rewrites.
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None), spec.pop("padding", None)
    tokenizer_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    text = "|".join([ds._fingerprint, tokenizer_hash, *map(str, parts)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tokenize_cached(
    ds: Dataset, task: SequenceClassification, tokenizer, max_length: int, cache_dir: Path
) -> tuple[Dataset, bool]:
    """Tokenize with `Dataset.map(batched=True)`; a second run with the same data, tokenizer and
    settings reads the Arrow file instead. Returns (dataset, whether it came from the cache)."""
    key = _cache_key(ds, tokenizer, max_length, task.columns)
    cache_file = cache_dir / f"{key}.arrow"
    hit = cache_file.exists()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenized = ds.map(
        task.tokenize_function(tokenizer, max_length),
        batched=True,
        remove_columns=[c for c in ds.column_names if c != "labels"],
        cache_file_name=str(cache_file),
        new_fingerprint=key,
        load_from_cache_file=True,
        desc="tokenizing",
    )
    return tokenized, hit


def labelled_splits(
    d: DataConfig, seed: int, task: str = "auto", label_names: list[str] | None = None
) -> tuple[dict[str, Dataset], data.Columns, LabelSpec]:
    """Raw files -> checked columns and labels -> held-out validation -> samples. Training and
    the run report both call this, so they always see the same rows."""
    splits = data.load_splits(d)
    source = {name: getattr(d, name) or f"data.dataset={d.dataset}[{name}]" for name in splits}
    columns = data.detect_columns(splits["train"], d, source["train"])
    for name, ds in splits.items():
        data.detect_columns(ds, d, source[name])  # the same columns must exist in every split
        splits[name] = data.check_texts(ds, columns, source[name], d.drop_empty)
    labels = infer_labels(splits["train"], columns.label, task, label_names, source["train"])
    for name in splits:
        splits[name] = encode_labels(splits[name], columns.label, labels, source[name])
    if "validation" not in splits:
        stratify = "labels" if labels.kind == "classification" else None
        try:
            held = splits["train"].train_test_split(
                test_size=d.validation_fraction, seed=seed, stratify_by_column=stratify
            )
        except ValueError:  # a class too rare to stratify: fall back to a plain seeded split
            held = splits["train"].train_test_split(test_size=d.validation_fraction, seed=seed)
        splits["train"], splits["validation"] = held["train"], held["test"]
    for name, limit in (("train", d.max_train_samples), ("validation", d.max_validation_samples)):
        if limit is not None and len(splits[name]) > limit:
            splits[name] = splits[name].shuffle(seed=seed).select(range(limit))
    return splits, columns, labels


def prepare_data(
    cfg: Config, tokenizer: PreTrainedTokenizerBase, accelerator: Accelerator
) -> PreparedData:
    """Labelled splits, tokenized through the on-disk cache, plus a summary for metrics.json."""
    d = cfg.data
    splits, columns, labels = labelled_splits(d, cfg.train.seed, cfg.task, cfg.label_names)
    task = SequenceClassification(columns, labels)
    cache_dir = Path(d.cache_dir or default_cache_dir() / "tokenized").expanduser()
    tokenized, hits = {}, []
    with accelerator.main_process_first():
        for name, ds in splits.items():
            tokenized[name], hit = tokenize_cached(ds, task, tokenizer, d.max_length, cache_dir)
            hits.append(hit)
    summary = {
        "columns": {"text": columns.text, "text_pair": columns.text_pair, "label": columns.label},
        "task": labels.kind,
        "labels": list(labels.names),
        "rows": {name: len(ds) for name, ds in tokenized.items()},
        # Rows that reached data.max_length were (almost always) cut short by truncation.
        "truncated_rows": {
            name: int((np.asarray(ds["length"]) >= d.max_length).sum())
            for name, ds in tokenized.items()
        },
        "tokenization": "cached" if all(hits) else "computed",
    }
    if labels.kind == "classification":
        summary["majority_baseline"] = metrics.majority_baseline(
            np.asarray(tokenized["train"]["labels"]),
            np.asarray(tokenized["validation"]["labels"]),
            labels.num_labels,
        )
    return PreparedData(
        task, tokenized["train"], tokenized["validation"], tokenized.get("test"), summary
    )
