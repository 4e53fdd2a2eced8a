"""Values to a typed Config: each value coerced to its field's type, then the whole config
checked, or one UserError that lists every problem found.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import typing
from typing import Any

from tunesmith.config.schema import (
    LANGUAGE_MODEL_TASKS,
    LONG_TEXTS,
    METHODS,
    POOLINGS,
    PRECISIONS,
    TASKS,
    TRUNCATIONS,
    Config,
    field_docs,
)
from tunesmith.errors import UserError


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
    elif typing.get_args(tp) == (int, str):  # `int | str`: a number, or a word such as auto
        try:
            return _coerce(key, value, int)
        except ValueError:
            tp = str
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
    if isinstance(t.class_weights, str) and t.class_weights not in ("auto", "balanced"):
        problems.append(
            f"train.class_weights must be auto, none, balanced or {{class: weight}}, got "
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
    if d.truncation not in TRUNCATIONS:
        problems.append(
            f"data.truncation must be one of {', '.join(TRUNCATIONS)}, got {d.truncation!r}"
        )
    elif d.truncation != "head" and cfg.task in LANGUAGE_MODEL_TASKS:
        problems.append(f"data.truncation={d.truncation} is for classifiers; not task={cfg.task}")
    problems += _long_text_problems(cfg)
    if d.encoding_errors not in ("strict", "replace", "ignore"):
        problems.append("data.encoding_errors must be strict, replace or ignore")
    if not (d.train or d.dataset):
        problems.append("no training data: set data.train=FILE or data.dataset=NAME")
    if not 0.0 < d.validation_fraction < 1.0:
        problems.append("data.validation_fraction must be between 0 and 1 (exclusive)")
    if isinstance(d.max_length, str) and d.max_length != "auto":
        problems.append(f"data.max_length must be auto or a whole number, got {d.max_length!r}")
    positive = {
        "data.max_length": d.max_length if isinstance(d.max_length, int) else None,
        "train.max_tokens_per_batch": t.max_tokens_per_batch,
        "train.eval_max_tokens_per_batch": t.eval_max_tokens_per_batch,
        "train.gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train.rows_per_step": t.rows_per_step,
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
    fixed_length = d.max_length if isinstance(d.max_length, int) else 0
    if t.max_tokens_per_batch < fixed_length and t.micro_batch_size is None:
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


def _long_text_problems(cfg: Config) -> list[str]:
    d = cfg.data
    if d.long_texts not in LONG_TEXTS:
        return [f"data.long_texts must be one of {', '.join(LONG_TEXTS)}, got {d.long_texts!r}"]
    if d.long_texts == "truncate":
        return ["data.stride is for data.long_texts=chunk"] if d.stride is not None else []
    problems = []
    if cfg.task in LANGUAGE_MODEL_TASKS:
        problems.append(f"data.long_texts=chunk is for classifiers; not task={cfg.task}")
    if d.truncation != "head":
        problems.append(
            f"data.truncation={d.truncation} cuts texts that data.long_texts=chunk keeps whole; "
            f"unset one of them"
        )
    if d.pooling not in POOLINGS:
        problems.append(f"data.pooling must be one of {', '.join(POOLINGS)}, got {d.pooling!r}")
    # data.stride is checked against the window when the windows are cut (windows.check_stride):
    # only then are max_length and the tokenizer's special tokens known.
    return problems


def config_from_dict(values: dict[str, Any]) -> Config:
    problems: list[str] = []
    cfg = _build(Config, values, "", problems)
    if not problems:
        problems = _validate(cfg)
    if problems:
        raise UserError("; ".join(problems))
    return cfg
