"""The run folder's layout: its names, whether it holds a run, and where its model is.

Torch-free on purpose: the CLI checks an `output_dir` or a model folder with it before the heavy
imports (torch, transformers, datasets take seconds), so a mistyped path is answered at once.

    output_dir/  model/ (+ tunesmith.json)  metrics.json (written last: finished)
                 metrics.jsonl  config.yaml
                 checkpoints/step-NNNNNNNN/  checkpoints/best.safetensors
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunesmith.errors import UserError

MODEL = "model"
METRICS = "metrics.json"  # written last: its presence means the run finished
METRICS_LOG = "metrics.jsonl"
CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
STEP_PREFIX = "step-"
META_FILE = "tunesmith.json"  # in model/: how the exported model was trained


def step_folders(run_dir: Path) -> list[Path]:
    """The finished step checkpoints, oldest first (a `.tmp` folder is a save cut short)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(STEP_PREFIX) and not p.name.endswith(".tmp")
    ]
    return sorted(found, key=lambda p: p.name)


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse an output_dir that cannot hold a run, or that holds one (finished or not) unless
    `overwrite`: a run is never replaced by a command that forgot `--resume`."""
    if path.exists() and not path.is_dir():
        raise UserError(f"output_dir={path} is a file, not a folder; pick another output_dir")
    if not overwrite and (path / METRICS).exists():
        raise UserError(
            f"output_dir={path} already holds a finished run; pick another output_dir or set "
            f"overwrite=true"
        )
    steps = step_folders(path)
    if not overwrite and steps:
        raise UserError(
            f"output_dir={path} holds an unfinished run (checkpoint {steps[-1].name}); continue "
            f"it with --resume auto, or start again with overwrite=true"
        )
    log = path / METRICS_LOG
    earlier = (path / MODEL).exists() or (path / CHECKPOINTS / "best.safetensors").exists()
    if not overwrite and (earlier or (log.is_file() and log.stat().st_size > 0)):
        raise UserError(
            f"output_dir={path} holds an earlier run's files; pick another output_dir or set "
            f"overwrite=true"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"output_dir={path} cannot be created ({e.strerror}); pick a folder you can write to"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output_dir={path} is not writable; pick a folder you can write to")


def resolve_model_dir(path: str | Path) -> Path:
    """A model folder, or a run folder holding `model/`."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such folder; give a run folder or an exported model folder")
    for folder in (path / MODEL, path):
        # adapter_config.json: a LoRA adapter exported unmerged (lora.merge=false)
        if any((folder / name).is_file() for name in ("config.json", "adapter_config.json")):
            return folder
    if (path / CHECKPOINTS).is_dir() and not (path / METRICS).exists():
        raise UserError(
            f"{path}: an unfinished run (no model/ yet); finish it with tunesmith train ... "
            f"output_dir={path} --resume auto"
        )
    raise UserError(f"{path}: not a model folder (no config.json) nor a run folder (no model/)")


def read_meta(model_dir: Path) -> dict:
    """The exported model's tunesmith.json (task, columns, max_length); {} for other folders."""
    meta_path = model_dir / META_FILE
    return json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
