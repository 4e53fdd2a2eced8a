"""The run folder's layout: its names, whether it holds a run, its log, and listing runs.

Torch-free on purpose: the CLI checks an `output_dir` or a model folder with it before the heavy
imports (torch, transformers, datasets take seconds), so a mistyped path is answered at once.

    output_dir/  model/ (+ tunesmith.json)  metrics.json (written last: finished)
                 metrics.jsonl  config.yaml  decisions.json
                 checkpoints/step-NNNNNNNN/  checkpoints/best.safetensors
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import UserError

MODEL = "model"
METRICS = "metrics.json"  # written last: its presence means the run finished
METRICS_LOG = "metrics.jsonl"
CONFIG = "config.yaml"
# What training decided from the data and the hardware, written as it is decided (by
# training.setup.record_decisions); evaluate, predict, serve and report read it, not decide again.
DECISIONS = "decisions.json"
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


def read_decisions(run_dir: Path) -> dict:
    """The run's decisions.json; {} for a run made before runs recorded their decisions."""
    path = run_dir / DECISIONS
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


@dataclass(frozen=True)
class RunEntry:
    """A run folder: finished (metrics.json) or unfinished (a log or checkpoints only)."""

    path: Path
    modified: float  # metrics.json's mtime when finished, else the newest log/checkpoint mtime
    metrics: dict | None  # None for unfinished runs and unreadable metrics.json
    last_step: int = 0  # unfinished runs: the newest logged or checkpointed step

    @property
    def finished(self) -> bool:
        return (self.path / METRICS).is_file()


def find_runs(directory: str | Path = "runs") -> list[RunEntry]:
    """DIR itself and its direct subfolders that hold a run, newest first."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise UserError(f"{directory}: no such folder")
    candidates = [directory, *sorted(p for p in directory.iterdir() if p.is_dir())]
    entries = [entry for entry in map(_run_entry, candidates) if entry is not None]
    return sorted(entries, key=lambda e: e.modified, reverse=True)


def _run_entry(path: Path) -> RunEntry | None:
    metrics_path = path / METRICS
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            metrics = None
        return RunEntry(path, metrics_path.stat().st_mtime, metrics)
    log, checkpoints = path / METRICS_LOG, path / CHECKPOINTS
    if not (log.is_file() or checkpoints.is_dir()):
        return None
    steps = [r["step"] for r in read_log(log) if isinstance(r.get("step"), int)]
    touched = [p.stat().st_mtime for p in (log, checkpoints) if p.exists()]
    for folder in step_folders(path):
        steps.append(int(folder.name.removeprefix(STEP_PREFIX)))
        touched.append(folder.stat().st_mtime)
    return RunEntry(path, max(touched), None, max(steps, default=0))


def read_log(path: Path) -> list[dict]:
    """metrics.jsonl's records; a line cut short by a crash is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def format_runs(entries: list[RunEntry]) -> list[str]:
    """One aligned line per run: path, task, best metric, test, steps, finish time."""
    rows = []
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.modified))
        if not e.finished:
            rows.append([str(e.path), f"unfinished (last step {e.last_step})", "", "", "", when])
        elif e.metrics is None:
            rows.append([str(e.path), "unreadable metrics.json", "", "", "", when])
        else:
            m = e.metrics
            metric = m.get("metric_for_best", "")
            value = m.get("validation", {}).get(metric)
            test = m.get("test", {}).get(metric)
            rows.append(
                [
                    str(e.path),
                    m.get("data", {}).get("task", ""),
                    f"{metric}={value:.4f}" if value is not None else metric,
                    f"test={test:.4f}" if test is not None else "",
                    f"{m.get('train', {}).get('optimizer_steps', '?')} steps",
                    when,
                ]
            )
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(6)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
