"""The run folder on disk: made ready before training, filled atomically at the end.

A run folder counts as finished when it holds `metrics.json`; that file is written last, and the
exported model is written to a temporary folder and renamed into place, so a crash never leaves
a folder that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.errors import UserError

META_FILE = "tunesmith.json"  # how the exported model was trained: task, columns, max_length


def _holds_run(path: Path) -> bool:
    return (path / "metrics.json").exists() or (path / "model").exists()


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse to silently replace a finished run (checked before any work starts)."""
    if _holds_run(path) and not overwrite:
        raise UserError(
            f"output_dir={path} already holds a run; pick another output_dir or set overwrite=true"
        )


def prepare_output_dir(path: Path, overwrite: bool) -> None:
    """Clear a finished run's files when `overwrite` is set, and create the folder."""
    check_output_dir(path, overwrite)
    if _holds_run(path):
        for name in ("model", "metrics.json", "metrics.jsonl", "config.yaml"):
            target = path / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def export_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, path: Path, meta: dict
) -> None:
    """A `save_pretrained` folder (safetensors) that `transformers.pipeline` loads as is."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / META_FILE, meta)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def read_meta(model_dir: Path) -> dict:
    meta_path = model_dir / META_FILE
    return json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
