"""Typed configuration: YAML plus dotted `key=value` overrides, validated once at the edge.

Every field has a one-line doc (the comment above it); `tunesmith train --help-config` prints them.
Nothing inside tunesmith re-checks these values: once `load_config` returns, the config is trusted.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import UserError

LANGUAGE_MODEL_TASKS = ("masked-lm", "causal-lm")
TASKS = ("auto", "classification", "regression", *LANGUAGE_MODEL_TASKS)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
METHODS = ("auto", "fine-tune", "few-shot")  # train.method; few_shot.py
# Inference adds dynamic int8 linear layers, on CPUs only (hardware.inference_placement).
INFERENCE_PRECISIONS = (*PRECISIONS, "int8")


@dataclass
class DataConfig:
    # Training data: a CSV/TSV/JSON/JSONL/Parquet file or a folder written by `save_to_disk`.
    train: str | None = None
    # Validation data (same formats); held out of `train` when missing and no dataset split has it.
    validation: str | None = None
    # Optional test data, evaluated once at the end with the exported model.
    test: str | None = None
    # A dataset name that `datasets.load_dataset` resolves (Hub name or local folder).
    dataset: str | None = None
    # The dataset's configuration, e.g. `mrpc` for `glue`.
    dataset_config: str | None = None
    # First text column; detected (text, sentence, sentence1, question, premise, ...) when unset.
    text_column: str | None = None
    # Second text column for sentence pairs; detected when unset, `none` for single sentences.
    text_pair_column: str | None = None
    # Label column; detected (label, labels, sentiment, score, target, ...) when unset. A column
    # of lists (JSON lists in a CSV too) means several labels per text (multi-label).
    label_column: str | None = None
    # Multi-label from a delimited string column, e.g. `;` for `billing;urgent`.
    label_delimiter: str | None = None
    # Multi-label from 0/1 columns, one per label, e.g. [toxic, obscene, threat].
    label_columns: list[str] | None = None
    # Share of train held out for validation when no validation split exists (stratified).
    validation_fraction: float = 0.1
    # Tokens per example after truncation.
    max_length: int = 128
    # Drop rows whose text is empty or null instead of stopping with their row numbers.
    drop_empty: bool = False
    # Use at most this many training rows (a seeded sample); all rows when unset.
    max_train_samples: int | None = None
    # Use at most this many validation rows (a seeded sample); all rows when unset.
    max_validation_samples: int | None = None
    # Text encoding of CSV/TSV files.
    encoding: str = "utf-8"
    # What to do with bytes that are not valid in `encoding`: strict, replace or ignore.
    encoding_errors: str = "strict"
    # Where tokenized datasets are cached; $TUNESMITH_CACHE_DIR or ~/.cache/tunesmith when unset.
    cache_dir: str | None = None


@dataclass
class TrainConfig:
    # Passes over the training data (fractions allowed); ignored when max_steps is set.
    epochs: float = 3.0
    # Stop after this many optimizer steps; overrides epochs.
    max_steps: int | None = None
    # Peak learning rate of AdamW: above the course's 5e-5, which learnt less in one epoch with
    # these token-budget batches and no more in three (see docs/defaults.md).
    learning_rate: float = 8e-5
    # Decoupled weight decay, not applied to biases and LayerNorm weights.
    weight_decay: float = 0.01
    # Share of optimizer steps spent warming the learning rate up linearly from 0.
    warmup_ratio: float = 0.1
    # Examples per micro-batch; when unset, batches are filled up to max_tokens_per_batch.
    micro_batch_size: int | None = None
    # Token budget of a length-bucketed micro-batch (padded tokens counted).
    max_tokens_per_batch: int = 512
    # Token-budget batches cut from one shuffled, length-sorted pool of rows: more batches per
    # pool means less padding, fewer means more varied batches.
    bucket_pool_batches: int = 4
    # Micro-batches summed into one optimizer step.
    gradient_accumulation_steps: int = 1
    # Clip the gradient's global norm to this value; 0 disables clipping.
    max_grad_norm: float = 1.0
    # Dropout on attention probabilities, replacing the model's own rate; 0 lets PyTorch run its
    # fused attention kernel (any dropout there forces the slow path); unset keeps the model's.
    attention_dropout: float | None = 0.0
    # Keep the input word-embedding matrix fixed: half of MiniLM's weights, so steps run faster,
    # and classifiers were as accurate without training it (see docs/defaults.md). Unset: fixed for
    # classification, trained for language models (their output layer is that matrix).
    freeze_word_embeddings: bool | None = None
    # Also keep the other embeddings and the bottom N transformer layers fixed, so the backward pass
    # stops above them. Unset: the bottom third when classifying on a CPU (faster steps at about the
    # same accuracy, see docs/defaults.md), else none.
    freeze_layers: int | None = None
    # auto picks bf16 only where the hardware computes it natively, else fp32 (fp16 on old GPUs).
    precision: str = "auto"
    # Seed for weights of new heads, shuffling, held-out split and dropout.
    seed: int = 42
    # Evaluate every N optimizer steps; when unset, evals_per_epoch times per epoch.
    eval_every_steps: int | None = None
    # Evenly spaced evaluations per epoch (and one at the last step); the best one is exported.
    # 0: only the last step is evaluated, and exported.
    evals_per_epoch: int = 4
    # Write a metrics.jsonl line every N optimizer steps.
    logging_steps: int = 10
    # Also log to this tracker via Accelerate: tensorboard (output_dir/tensorboard); unset: none.
    report_to: str | None = None
    # Validation metric that picks the exported model; the task's default when unset.
    metric_for_best: str | None = None
    # Stop after this many evaluations without improvement; never when unset.
    early_stopping_patience: int | None = None
    # Stop as soon as an evaluation reaches this value of metric_for_best (e.g. 0.85 accuracy).
    stop_at_metric: float | None = None
    # Token budget of an evaluation batch (evaluation sorts rows by length); unset: 2,048 on
    # CPUs, where a layer's activations then stay in cache, 8,192 on GPUs.
    eval_max_tokens_per_batch: int | None = None
    # Single-label classifiers with 50+ validation rows: divide the logits by the temperature that
    # fits validation best, folded into the output layer, so labels stay and scores become usable
    # probabilities; it costs little where they were right already (see docs/calibration.md).
    temperature_scaling: bool = True
    # On a NaN/inf loss: stop (naming the step and rows) or skip that optimizer step and count it.
    on_nonfinite_loss: str = "stop"
    # Class weights in a classifier's loss, for skewed classes: none; balanced (each class
    # weighs rows / (classes x its rows)); or {name: weight}, unnamed classes weighing 1.
    class_weights: dict[str, float] | str | None = None
    # How a classifier learns: fine-tune (the course's recipe), few-shot (a head fitted on the
    # sentence embedding, then end to end: for a few rows per class), or auto (few-shot when the
    # median class has at most few_shot.max_rows_per_class training rows).
    method: str = "auto"


@dataclass
class LanguageModelConfig:
    # masked-lm: share of tokens to predict (80% of them become the mask token, 10% random).
    mlm_probability: float = 0.15
    # masked-lm: pick whole words, so every piece of a chosen word is masked together (all of
    # them become the mask token: transformers has no random replacement for whole words).
    whole_word_masking: bool = False
    # masked-lm: concatenate rows and cut them into data.max_length blocks (the course's way);
    # false: one sample per row, truncated.
    group_texts: bool = True
    # causal-lm: loss on the completion (assistant) tokens only, not on the prompt.
    completion_only_loss: bool = True
    # causal-lm: pack each micro-batch into one row without padding; position ids restart per
    # sample so attention stays within it (models that take position_ids, e.g. Llama, GPT-2).
    packing: bool = False


@dataclass
class LoraConfig:
    # LoRA rank through peft; 0 trains all weights (no adapters).
    r: int = 0
    # LoRA scaling numerator (the update is scaled by alpha / r).
    alpha: float = 16.0
    # Dropout on the adapter's input.
    dropout: float = 0.05
    # Module names that get adapters; unset: peft's default for the architecture.
    target_modules: list[str] | None = None
    # Merge the adapters into the exported model (a plain transformers folder); false exports
    # the adapter folder alone (causal-lm only; AutoModelForCausalLM loads it over the base).
    merge: bool = True


@dataclass
class FewShotConfig:
    # train.method=auto takes the few-shot path up to this many training rows in the median class:
    # below it the path beat fine-tuning clearly; above it the gain shrinks for several times the
    # training time (see docs/defaults.md).
    max_rows_per_class: int = 256
    # Passes over the training rows end to end (few rows: many passes); replaces train.epochs.
    epochs: float = 10.0
    # Peak learning rate of the encoder end to end; replaces train.learning_rate.
    learning_rate: float = 5e-5
    # Peak learning rate of the classifier head, which starts from the fitted probe.
    head_learning_rate: float = 5e-4
    # Rows per micro-batch; replaces the token budget (few rows fill few batches).
    batch_size: int = 16
    # Inverse regularization strength (scikit-learn's C) of the logistic regression the head starts
    # from. Below 1 the head starts with softer logits, which leaves the end-to-end phase a loss and
    # the encoder a gradient to learn from (see docs/defaults.md).
    probe_c: float = 0.3
    # Each class's name joins the training rows this many times as a text of its own, when the names
    # are words and the rows single texts: a sentence encoder already knows what "joy" means, which
    # is worth most when rows are few (see docs/few-labels.md). 0: never.
    label_name_rows: int = 4
    # How each class name reads as a training row; {} is the name, e.g. "This text is about {}.".
    # A sentence did no better than the bare name on the benchmark sets, so the name is the default.
    label_name_template: str = "{}"
    # With a validation file, export the best-scoring step, not the last: on a few validation rows
    # per class that score is mostly noise, and the last step did better (see docs/defaults.md).
    # Off: train.evals_per_epoch=0 unless train.eval_every_steps is set.
    pick_best_step: bool = False


@dataclass
class CheckpointConfig:
    # Save a resumable checkpoint every N optimizer steps; unset: only at epoch ends.
    every_steps: int | None = None
    # Also save one at the end of every epoch.
    at_epoch_end: bool = True
    # Step checkpoints kept on disk; the best model is kept apart from these.
    keep_last: int = 2


@dataclass
class Config:
    # Model: `builtin:minilm-l6`, a local folder, or a Hub id.
    model: str = "builtin:minilm-l6"
    # classification, regression, masked-lm, causal-lm, or auto (classification or regression:
    # floats that are not whole numbers mean regression).
    task: str = "auto"
    # Run folder: model/, metrics.json, metrics.jsonl, config.yaml and plots go here.
    output_dir: str = "runs/latest"
    # Replace a finished run already in output_dir.
    overwrite: bool = False
    # Continue an interrupted run: auto (newest intact checkpoint in output_dir) or a step folder.
    resume: str | None = None
    # Label names in id order, for integer labels without names (e.g. [negative, positive]).
    label_names: list[str] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)


def field_docs(cls: type = Config, prefix: str = "") -> dict[str, tuple[str, str, Any]]:
    """Dotted key -> (type, one-line doc, default), read from the comments above each field."""
    import inspect

    source = inspect.getsource(cls).splitlines()
    docs: dict[str, tuple[str, str, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            docs.update(field_docs(hints[f.name], key + "."))
            continue
        line = next(i for i, s in enumerate(source) if s.strip().startswith(f.name + ":"))
        comment: list[str] = []  # every comment line right above the field
        while line > 0 and source[line - 1].strip().startswith("#"):
            line -= 1
            comment.insert(0, source[line].strip().lstrip("# "))
        docs[key] = (_type_name(hints[f.name]), " ".join(comment), f.default)
    return docs


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__


def _is_optional(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise ValueError saying what was expected."""
    if _is_optional(tp):
        # `data.text_pair_column=none` means single sentences; None would mean auto-detect.
        nulls = ("null",) if key == "data.text_pair_column" else ("none", "null")
        if value is None or (isinstance(value, str) and value.lower() in nulls):
            return None
        kinds = [a for a in typing.get_args(tp) if a is not type(None)]
        # `dict[str, float] | str`: the mapping when a mapping was given, else the name.
        tp = kinds[0] if isinstance(value, dict) or len(kinds) == 1 else kinds[-1]
    origin = typing.get_origin(tp)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        key_type, value_type = typing.get_args(tp)
        return {
            _coerce(key, k, key_type): _coerce(f"{key}.{k}", v, value_type)
            for k, v in value.items()
        }
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, list):
            raise ValueError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(key, v, item) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # `overwrite=1` arrives as YAML int 1
            return bool(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        try:
            return int(value)
        except (ValueError, TypeError):
            raise ValueError(f"{key} must be a whole number, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)
        except (ValueError, TypeError, OverflowError):  # OverflowError: a 400-digit YAML int
            raise ValueError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # YAML reads .nan and 1.0e+400 as floats
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, dict | list):
            raise ValueError(f"{key} must be a single value, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in this file, not user input


def _build(cls: type, values: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"  # YAML keys may be numbers, booleans, null or dates
        if name not in names:
            valid = [prefix + n for n in names]
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            if not close:  # a key typed at the wrong level, e.g. `epochs` for `train.epochs`
                close = [k for k in field_docs() if k.rsplit(".", 1)[-1] == name]
            hint = f"; did you mean {close[0]}?" if close else ""
            shown = key if key.isprintable() else repr(key)  # keep the message on one line
            problems.append(f"unknown config key {shown}{hint}")
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                problems.append(f"{key} must be a mapping of {tp.__name__} fields, got {value!r}")
                continue
            kwargs[name] = _build(tp, value, key + ".", problems)
            continue
        try:
            kwargs[name] = _coerce(key, value, tp)
        except ValueError as e:
            problems.append(str(e))
    return cls(**kwargs)


def _validate(cfg: Config) -> list[str]:
    problems = []
    d, t = cfg.data, cfg.train
    if cfg.task not in TASKS:
        problems.append(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if t.precision not in PRECISIONS:
        problems.append(f"train.precision must be one of {', '.join(PRECISIONS)}")
    if t.method not in METHODS:
        problems.append(f"train.method must be one of {', '.join(METHODS)}, got {t.method!r}")
    if t.on_nonfinite_loss not in ("stop", "skip"):
        problems.append("train.on_nonfinite_loss must be stop or skip")
    if isinstance(t.class_weights, str) and t.class_weights != "balanced":
        problems.append(
            f"train.class_weights must be none, balanced or {{class: weight}}, got "
            f"{t.class_weights!r}"
        )
    if isinstance(t.class_weights, dict) and not all(w > 0 for w in t.class_weights.values()):
        problems.append("train.class_weights: every weight must be > 0")
    if t.report_to not in (None, "tensorboard"):
        problems.append(f"train.report_to must be tensorboard or none, got {t.report_to!r}")
    elif t.report_to and importlib.util.find_spec("tensorboard") is None:
        problems.append(
            "train.report_to=tensorboard needs the package: pip install 'tunesmith[tensorboard]'"
        )
    if cfg.checkpoint.keep_last < 1:
        problems.append("checkpoint.keep_last must be >= 1")
    if d.encoding_errors not in ("strict", "replace", "ignore"):
        problems.append("data.encoding_errors must be strict, replace or ignore")
    if not (d.train or d.dataset):
        problems.append("no training data: set data.train=FILE or data.dataset=NAME")
    if not 0.0 < d.validation_fraction < 1.0:
        problems.append("data.validation_fraction must be between 0 and 1 (exclusive)")
    positive = {
        "data.max_length": d.max_length,
        "train.max_tokens_per_batch": t.max_tokens_per_batch,
        "train.eval_max_tokens_per_batch": t.eval_max_tokens_per_batch,
        "train.gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train.logging_steps": t.logging_steps,
        "train.bucket_pool_batches": t.bucket_pool_batches,
        "train.micro_batch_size": t.micro_batch_size,
        "train.max_steps": t.max_steps,
        "train.eval_every_steps": t.eval_every_steps,
        "train.early_stopping_patience": t.early_stopping_patience,
        "checkpoint.every_steps": cfg.checkpoint.every_steps,
        "data.max_train_samples": d.max_train_samples,
        "data.max_validation_samples": d.max_validation_samples,
        "train.epochs": t.epochs,
        "train.learning_rate": t.learning_rate,
        "few_shot.max_rows_per_class": cfg.few_shot.max_rows_per_class,
        "few_shot.epochs": cfg.few_shot.epochs,
        "few_shot.learning_rate": cfg.few_shot.learning_rate,
        "few_shot.head_learning_rate": cfg.few_shot.head_learning_rate,
        "few_shot.batch_size": cfg.few_shot.batch_size,
        "few_shot.probe_c": cfg.few_shot.probe_c,
    }
    problems += [
        f"{k} must be > 0, got {v}" for k, v in positive.items() if v is not None and v <= 0
    ]
    if t.max_tokens_per_batch < d.max_length and t.micro_batch_size is None:
        problems.append(
            f"train.max_tokens_per_batch={t.max_tokens_per_batch} cannot hold one example of "
            f"data.max_length={d.max_length}: raise it or lower data.max_length"
        )
    if t.evals_per_epoch < 0:
        problems.append(f"train.evals_per_epoch must be >= 0, got {t.evals_per_epoch}")
    if cfg.few_shot.label_name_rows < 0:
        problems.append("few_shot.label_name_rows must be >= 0")
    if "{}" not in cfg.few_shot.label_name_template:
        problems.append("few_shot.label_name_template must hold {} where the class name goes")
    if not 0.0 <= t.warmup_ratio < 1.0:
        problems.append("train.warmup_ratio must be in [0, 1)")
    if t.freeze_layers is not None and t.freeze_layers < 0:
        problems.append("train.freeze_layers must be >= 0")
    if t.attention_dropout is not None and not 0.0 <= t.attention_dropout < 1.0:
        problems.append("train.attention_dropout must be in [0, 1)")
    if not 0.0 < cfg.lm.mlm_probability < 1.0:
        problems.append("lm.mlm_probability must be between 0 and 1 (exclusive)")
    if cfg.lora.r < 0 or cfg.lora.alpha <= 0 or not 0.0 <= cfg.lora.dropout < 1.0:
        problems.append("lora.r must be >= 0, lora.alpha > 0 and lora.dropout in [0, 1)")
    if cfg.lora.r and cfg.task == "masked-lm":
        # A fresh masked-LM head (builtin:minilm-l6 ships none) would stay frozen under peft.
        problems.append("lora is for classification, regression and causal-lm; not masked-lm")
    if cfg.lora.r and not cfg.lora.merge and cfg.task != "causal-lm":
        problems.append(
            "lora.merge=false exports an adapter folder that only causal-lm loads back (with "
            "its labels lost otherwise); keep lora.merge=true"
        )
    if d.label_columns is not None and (len(d.label_columns) < 2 or d.label_delimiter):
        problems.append(
            "data.label_columns needs two or more 0/1 columns and no data.label_delimiter"
        )
    if d.label_delimiter == "":
        problems.append("data.label_delimiter must not be empty")
    if cfg.task in LANGUAGE_MODEL_TASKS and cfg.label_names:
        problems.append(f"label_names has no meaning for task={cfg.task}; remove it")
    if t.weight_decay < 0 or t.max_grad_norm < 0:
        problems.append("train.weight_decay and train.max_grad_norm must be >= 0")
    return problems


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=1 c=x` -> {"a": {"b": 1}, "c": "x"}; values are read as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value (e.g. train.epochs=3)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except Exception:  # not only YAMLError: see load_config
            value = raw
        node = tree
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override {item!r} conflicts with an earlier value for {p!r}")
        node[leaf] = value
    return tree


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` laid over `base`, mapping by mapping."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read an optional YAML file, apply overrides, and return a validated Config. Data files and
    a local model named in the file are relative to the file's folder; overrides to the working
    directory."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            if str(path) in field_docs():  # `tunesmith train data.train x.csv`
                raise UserError(f"{path} is a config key, not a config file: write {path}=VALUE")
            raise UserError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as e:
            raise UserError(f"config file {path} cannot be read: {_first_line(e)}") from None
        # PyYAML's constructors raise more than YAMLError on odd input: ValueError for an int of
        # over 4300 digits or `!!int 1e4`, AttributeError for `!!timestamp x`, RecursionError for
        # deep nesting (and a UnicodeDecodeError comes from read_text).
        except Exception as e:
            raise UserError(f"config file {path} is not valid YAML: {_yaml_problem(e)}") from None
        if not isinstance(values, dict):
            raise UserError(f"config file {path} must hold a mapping of keys, not {values!r}")
        values = _relative_to(values, path.parent)
    return config_from_dict(merge(values, parse_overrides(overrides or [])))


def _relative_to(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A YAML file's data files, and a model or dataset folder that exists beside it, as paths
    from the working directory, so the file works from wherever it is run. output_dir stays
    where the command runs."""

    def rebase(value: Any, must_exist: bool) -> Any:
        if not isinstance(value, str) or not value or value.startswith("~"):
            return value
        if Path(value).is_absolute():
            return value
        joined = folder / value
        if not must_exist:
            return str(joined)
        try:
            found = joined.exists()
        except (OSError, ValueError):  # a name no file system holds (too long, a NUL): no path
            found = False
        return str(joined) if found else value

    values = dict(values)
    if "model" in values:  # a Hub id or builtin: name stays as it is
        values["model"] = rebase(values["model"], must_exist=True)
    data = values.get("data")
    if isinstance(data, dict):
        data = dict(data)
        for key in ("train", "validation", "test"):
            if key in data:
                data[key] = rebase(data[key], must_exist=False)
        if "dataset" in data:
            data["dataset"] = rebase(data["dataset"], must_exist=True)
        values["data"] = data
    return values


def check_files(cfg: Config) -> None:
    """Stop on a data file that does not exist, before any heavy import or work."""
    for key in ("train", "validation", "test"):
        value = getattr(cfg.data, key)
        if value and not Path(value).expanduser().exists():
            raise UserError(f"data.{key}={value}: no such file or folder")


def _yaml_problem(e: Exception) -> str:
    """PyYAML's complaint with its line and column, on one line."""
    mark = getattr(e, "problem_mark", None)
    if isinstance(e, yaml.MarkedYAMLError) and mark is not None:
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return _first_line(e)


def config_from_dict(values: dict[str, Any]) -> Config:
    problems: list[str] = []
    cfg = _build(Config, values, "", problems)
    if not problems:
        problems = _validate(cfg)
    if problems:
        raise UserError("; ".join(problems))
    return cfg


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
