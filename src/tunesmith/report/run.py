"""A finished run as the report reads it: its metrics.json, metrics.jsonl and config.yaml, and
its labelled splits remade by the very function training used."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import UserError
from tunesmith.runfolder.layout import CONFIG, METRICS, METRICS_LOG, read_decisions, read_log


@dataclass
class FinishedRun:
    """A run folder that training finished, as read back (engine.Run is one being trained)."""

    path: Path
    metrics: dict
    records: list[dict]  # metrics.jsonl
    config: dict  # config.yaml, as plain YAML: readable even if config keys changed since


def load_run(path: str | Path) -> FinishedRun:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"{path}: no such folder")
    if not (path / METRICS).is_file():
        raise UserError(f"{path}: not a finished run (no metrics.json)")
    metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
    config_path = path / CONFIG
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    return FinishedRun(path, metrics, read_log(path / METRICS_LOG), config or {})


def _kind(run: FinishedRun) -> str | None:
    return run.metrics.get("data", {}).get("task")


@dataclass
class Splits:
    """The raw splits as training saw them, with a `labels` column, and their text columns."""

    datasets: dict[str, Any]  # split name -> datasets.Dataset
    columns: Any  # data.Columns


def load_splits(run: FinishedRun) -> Splits:
    """The run's labelled splits, made by the very function training used, with the method
    training recorded (deciding it again could pick another and so other validation rows)."""
    from tunesmith.config import Config, DataConfig, FewShotConfig, TrainConfig
    from tunesmith.preprocess import task_splits
    from tunesmith.tasks.few_shot import Method

    # Field by field, not through config validation: a run's config.yaml stays readable when
    # config keys change later.
    def known(cls: type, section: str) -> Any:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in run.config.get(section, {}).items() if k in names})

    t = run.config.get("train", {})
    train = TrainConfig(seed=t.get("seed", TrainConfig.seed), class_weights=t.get("class_weights"))
    cfg = Config(
        task=run.config.get("task", "auto"),
        label_names=run.config.get("label_names"),
        data=known(DataConfig, "data"),
        train=train,
        few_shot=known(FewShotConfig, "few_shot"),
    )
    # Runs from before decisions.json recorded their method in metrics.json alone.
    method = read_decisions(run.path).get("method") or run.metrics.get("data", {}).get("method")
    made = task_splits(cfg, Method(**method) if method else None)
    kept = {n: made.splits[n] for n in ("train", "validation", "test") if n in made.splits}
    return Splits(kept, made.task.columns)
