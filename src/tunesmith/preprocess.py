"""From raw splits to tokenized, cached splits a task can train on.

Order matters and is the same for every run: columns are found and texts checked on every split,
labels are decided from train and encoded everywhere, validation is held out (stratified,
seeded) when missing, samples are drawn, and only then is anything tokenized.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from accelerate import Accelerator
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from tunesmith import data
from tunesmith.config import Config, DataConfig
from tunesmith.models import position_limit
from tunesmith.tasks import Task, few_shot, task_class
from tunesmith.tasks.few_shot import Method
from tunesmith.tasks.lengths import LengthChoice, choose_max_length
from tunesmith.tasks.windows import default_stride


@dataclass
class PreparedData:
    task: Task
    method: Method
    train: Dataset  # tokenized, with `length` (and `labels` where the rows carry them)
    validation: Dataset | None  # None: few-shot without a validation file
    test: Dataset | None
    summary: dict
    validation_source: dict  # where validation came from (decisions.json)
    max_length: LengthChoice  # data.max_length, resolved: every later step reads this one


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


@dataclass
class TaskSplits:
    splits: dict[str, Dataset]  # raw rows with a `labels` column (classification)
    task: Task
    method: Method
    validation: dict  # where validation came from, for decisions.json


def task_splits(cfg: Config, recorded: Method | None = None) -> TaskSplits:
    """Raw files -> the task's checked columns (and labels) -> the training method -> held-out
    validation -> samples -> (few-shot) class names as extra training rows. Training decides the
    method; the run report passes the one training `recorded`, so both see the same rows."""
    d = cfg.data
    splits = data.load_splits(d)
    sources = {name: getattr(d, name) or f"data.dataset={d.dataset}[{name}]" for name in splits}
    splits, task = task_class(cfg.task).from_splits(splits, sources, cfg)
    # Decided on the rows training would see without a hold-out (data.max_train_samples
    # applied), unless a finished run recorded it.
    method = recorded or few_shot.decide_method(
        cfg, _sampled(splits["train"], d.max_train_samples, cfg.train.seed), task
    )
    # A few rows per class are all needed for training; a validation set of a handful would
    # only pick the exported step by noise, so few-shot holds none out.
    hold_out = not method.few_shot
    given = "validation" in splits
    splits, stratified_by = _held_out_and_sampled(
        splits, d, cfg.train.seed, task.stratify_column, hold_out
    )
    validation = _validation_source(d, given, hold_out, cfg.train.seed, stratified_by)
    copies = cfg.few_shot.label_name_rows
    # method.few_shot implies single-label classification, so the task has class names.
    if (
        method.few_shot
        and copies
        and task.columns.text_pair is None
        and few_shot.names_are_words(task.labels.names)
    ):
        splits["train"] = few_shot.with_label_names(
            splits["train"],
            task.columns.text,
            task.labels.names,
            copies,
            cfg.few_shot.label_name_template,
        )
        if recorded is None:
            reason = f"{method.reason}; each class name joins the training rows {copies} times"
            method = dataclasses.replace(method, reason=reason)
    return TaskSplits(splits, task, method, validation)


def _validation_source(
    d: DataConfig, given: bool, hold_out: bool, seed: int, stratified_by: str | None
) -> dict:
    if given:
        return {"source": d.validation or f"data.dataset={d.dataset}[validation]"}
    if not hold_out:
        return {"source": None, "why": "few-shot holds no rows out of a few per class"}
    return {
        "source": "held out of train",
        "fraction": d.validation_fraction,
        "seed": seed,
        "stratified_by": stratified_by,
    }


def _held_out_and_sampled(
    splits: dict[str, Dataset], d: DataConfig, seed: int, stratify: str | None, hold_out: bool
) -> tuple[dict[str, Dataset], str | None]:
    """Validation held out of train when missing and `hold_out` (seeded), then the sample
    limits applied; and the column the hold-out kept the balance of, if any."""
    kept_balance_of = None
    if "validation" not in splits and hold_out:
        kept_balance_of = stratify
        try:
            held = splits["train"].train_test_split(
                test_size=d.validation_fraction, seed=seed, stratify_by_column=stratify
            )
        except ValueError:  # a class too rare to stratify: fall back to a plain seeded split
            held = splits["train"].train_test_split(test_size=d.validation_fraction, seed=seed)
            kept_balance_of = None
        splits["train"], splits["validation"] = held["train"], held["test"]
    for name, limit in (("train", d.max_train_samples), ("validation", d.max_validation_samples)):
        if name in splits:
            splits[name] = _sampled(splits[name], limit, seed)
    return splits, kept_balance_of


def _sampled(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most `limit` rows: the head of a seeded shuffle, the same sample every time."""
    if limit is None or len(ds) <= limit:
        return ds
    return ds.shuffle(seed=seed).select(range(limit))


def prepare_data(
    cfg: Config, tokenizer: PreTrainedTokenizerBase, accelerator: Accelerator
) -> PreparedData:
    """Splits, tokenized through the on-disk cache, plus a summary for metrics.json."""
    d = cfg.data
    made = task_splits(cfg)
    splits, task, method = made.splits, made.task, made.method
    task.prepare_tokenizer(tokenizer)
    cache_dir = Path(d.cache_dir or default_cache_dir() / "tokenized").expanduser()
    tokenized, hits = {}, []
    with accelerator.main_process_first():
        length, train = resolve_max_length(
            cfg, task, tokenizer, splits["train"], cache_dir, accelerator
        )
        if task.windowed and task.stride is None:  # decided once, for the export too
            task = dataclasses.replace(task, stride=default_stride(length.max_length))
        for name, ds in splits.items():
            reused = train if name == "train" else None
            tokenized[name], hit = reused or tokenize_cached(
                ds, task, tokenizer, length.max_length, cache_dir
            )
            hits.append(hit)
    dropped = {}
    for name, ds in tokenized.items():
        kept = task.keep_trainable(ds, name, length.max_length)
        dropped[name] = len(ds) - len(kept)
        if name != "train":  # training masks afresh every epoch; the others are masked once
            kept = task.fix_eval_masks(kept, tokenizer, cfg.train.seed)
        tokenized[name] = kept
    columns = task.columns
    summary = {
        "columns": {"text": columns.text, "text_pair": columns.text_pair, "label": columns.label},
        "task": task.kind,
        "rows": {name: len(ds) for name, ds in splits.items()},
        "samples": {name: len(ds) for name, ds in tokenized.items()},
        "tokens": {name: int(sum(ds["length"])) for name, ds in tokenized.items()},
        # Rows that reached data.max_length were (almost always) cut short by truncation.
        "truncated_rows": {
            name: 0
            if task.cuts_into_blocks
            else int((np.asarray(ds["length"]) >= length.max_length).sum())
            for name, ds in tokenized.items()
        },
        "tokenization": "cached" if all(hits) else "computed",
        **task.summary(tokenized),
    }
    if any(dropped.values()):
        summary["dropped_without_completion"] = dropped
    summary["method"] = {"name": method.name, "reason": method.reason}
    return PreparedData(
        task,
        method,
        tokenized["train"],
        tokenized.get("validation"),
        tokenized.get("test"),
        summary,
        made.validation,
        length,
    )


def resolve_max_length(
    cfg: Config,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    train: Dataset,
    cache_dir: Path,
    accelerator: Accelerator,
) -> tuple[LengthChoice, tuple[Dataset, bool] | None]:
    """data.max_length as given, or for auto, a classifier's length chosen from its training rows
    (tokenized once up to the model's limit, through the cache) and a language model's 128.
    Also the training rows tokenized at the chosen length, with whether they came from the
    cache, where the pass up to the limit already is that (no row is longer), else None."""
    d, t = cfg.data, cfg.train
    if d.max_length != "auto":
        return LengthChoice(int(d.max_length), f"data.max_length={d.max_length}"), None
    limit = position_limit(cfg.model, tokenizer)
    if not task.chooses_max_length:
        return LengthChoice(min(128, limit), "auto: 128 for language models"), None
    if t.micro_batch_size is None:  # a token-budget micro-batch must hold one row
        limit = min(limit, t.max_tokens_per_batch)
    # Windows of a chunked text would hide its length: the rows are measured truncated.
    measured = dataclasses.replace(task, long_texts="truncate") if task.windowed else task
    whole, hit = tokenize_cached(train, measured, tokenizer, limit, cache_dir)
    lengths = np.asarray(whole["length"])
    choice = choose_max_length(lengths, limit, accelerator.device.type)
    # Short texts (every row within the choice) need no second pass over the tokenizer.
    fits = choice.max_length == limit or lengths.max(initial=0) <= choice.max_length
    fits = fits and not task.windowed
    return choice, (whole, hit) if fits else None
