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
from tunesmith.config import LANGUAGE_MODEL_TASKS, Config, DataConfig, LanguageModelConfig
from tunesmith.errors import UserError
from tunesmith.tasks import LabelSpec, SequenceClassification, Task
from tunesmith.tasks.classification import encode_labels, infer_labels
from tunesmith.tasks.language_modeling import LanguageModeling, check_messages, find_columns


@dataclass
class PreparedData:
    task: Task
    train: Dataset  # tokenized, with `length` (and `labels` where the rows carry them)
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
    ds: Dataset, task: Task, tokenizer, max_length: int, cache_dir: Path
) -> tuple[Dataset, bool]:
    """Tokenize with `Dataset.map(batched=True)`; a second run with the same data, tokenizer and
    settings reads the Arrow file instead. Returns (dataset, whether it came from the cache)."""
    # The chat template and end-of-text token live outside the tokenizer's JSON.
    key = _cache_key(ds, tokenizer, max_length, task, tokenizer.chat_template, tokenizer.eos_token)
    cache_file = cache_dir / f"{key}.arrow"
    hit = cache_file.exists()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenized = ds.map(
        task.tokenize_function(tokenizer, max_length),
        batched=True,
        # Classification keeps its encoded labels; language-model samples make their own, and
        # grouped texts change the row count, so every raw column goes.
        remove_columns=[c for c in ds.column_names if c not in task.kept_columns],
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
    stratify = "labels" if labels.kind == "classification" else None
    return _held_out_and_sampled(splits, d, seed, stratify), columns, labels


def _held_out_and_sampled(
    splits: dict[str, Dataset], d: DataConfig, seed: int, stratify: str | None
) -> dict[str, Dataset]:
    """Validation held out of train when missing (seeded), then the sample limits applied."""
    if "validation" not in splits:
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
    return splits


def language_model_splits(
    d: DataConfig, seed: int, task: str, settings: LanguageModelConfig
) -> tuple[dict[str, Dataset], LanguageModeling]:
    """Raw files -> checked text (or prompt/completion, or chat) columns -> held-out validation
    -> samples, for the language-model tasks."""
    splits = data.load_splits(d)
    source = {name: getattr(d, name) or f"data.dataset={d.dataset}[{name}]" for name in splits}
    columns, chat = find_columns(splits["train"], task, d.text_column, source["train"])
    for name, ds in splits.items():
        if find_columns(ds, task, d.text_column, source[name]) != (columns, chat):
            raise UserError(f"{source[name]}: its columns differ from the training data's")
        if chat:
            check_messages(ds, columns.text, source[name])
        else:
            splits[name] = data.check_texts(ds, columns, source[name], d.drop_empty)
    splits = _held_out_and_sampled(splits, d, seed, stratify=None)
    return splits, LanguageModeling(task, columns, settings, chat)


def prepare_data(
    cfg: Config, tokenizer: PreTrainedTokenizerBase, accelerator: Accelerator
) -> PreparedData:
    """Splits, tokenized through the on-disk cache, plus a summary for metrics.json."""
    d = cfg.data
    task: Task
    if cfg.task in LANGUAGE_MODEL_TASKS:
        splits, task = language_model_splits(d, cfg.train.seed, cfg.task, cfg.lm)
    else:
        splits, columns, labels = labelled_splits(d, cfg.train.seed, cfg.task, cfg.label_names)
        task = SequenceClassification(columns, labels)
    task.prepare_tokenizer(tokenizer)
    cache_dir = Path(d.cache_dir or default_cache_dir() / "tokenized").expanduser()
    tokenized, hits = {}, []
    with accelerator.main_process_first():
        for name, ds in splits.items():
            tokenized[name], hit = tokenize_cached(ds, task, tokenizer, d.max_length, cache_dir)
            hits.append(hit)
    dropped = {}
    for name, ds in tokenized.items():
        if "predicted" in ds.column_names:  # causal samples whose completion was cut off whole
            kept = ds.filter(lambda n: n > 0, input_columns="predicted")
            dropped[name], tokenized[name] = len(ds) - len(kept), kept
            if not len(kept):
                raise UserError(
                    f"{name}: no sample keeps a completion token within data.max_length="
                    f"{d.max_length}; raise data.max_length"
                )
        if name != "train":  # training masks afresh every epoch
            tokenized[name] = task.fix_eval_masks(tokenized[name], tokenizer, cfg.train.seed)
    columns = task.columns
    grouped = cfg.task == "masked-lm" and cfg.lm.group_texts
    summary = {
        "columns": {"text": columns.text, "text_pair": columns.text_pair, "label": columns.label},
        "task": task.kind,
        "labels": list(task.labels.names) if isinstance(task, SequenceClassification) else [],
        "rows": {name: len(ds) for name, ds in splits.items()},
        "samples": {name: len(ds) for name, ds in tokenized.items()},
        "tokens": {name: int(sum(ds["length"])) for name, ds in tokenized.items()},
        # Rows that reached data.max_length were (almost always) cut short by truncation.
        "truncated_rows": {
            name: 0 if grouped else int((np.asarray(ds["length"]) >= d.max_length).sum())
            for name, ds in tokenized.items()
        },
        "tokenization": "cached" if all(hits) else "computed",
    }
    if any(dropped.values()):
        summary["dropped_without_completion"] = dropped
    if isinstance(task, SequenceClassification) and task.labels.kind == "classification":
        summary["majority_baseline"] = metrics.majority_baseline(
            np.asarray(tokenized["train"]["labels"]),
            np.asarray(tokenized["validation"]["labels"]),
            task.labels.num_labels,
        )
    return PreparedData(
        task, tokenized["train"], tokenized["validation"], tokenized.get("test"), summary
    )
