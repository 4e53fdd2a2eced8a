"""The run's metrics as they are logged: metrics.jsonl lines, TensorBoard scalars, and the config
flattened for TensorBoard's hparams. Torch- and matplotlib-free; called on the main process only."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunesmith.runfolder.layout import read_log


class MetricsLog:
    """Appends one JSON object per logged optimizer step to `metrics.jsonl`.

    A resumed run keeps the lines up to its checkpoint's step and drops later ones (written after
    the checkpoint, before the interruption), so every step appears exactly once.
    """

    def __init__(self, path: Path, keep_through_step: int = 0) -> None:
        self.path = path
        self.records: list[dict] = []
        if keep_through_step:
            kept = read_log(path)  # without a line the interruption cut short
            self.records = [r for r in kept if r.get("step", 0) <= keep_through_step]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
        os.replace(tmp, path)

    def write(self, record: dict) -> None:
        self.records.append(record)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def flat_config(values: dict, prefix: str = "") -> dict:
    """A nested config as `train.epochs`-style keys, as TensorBoard hparams take it (lists as
    text; None values are skipped there)."""
    flat: dict = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = str(value) if isinstance(value, list) else value
    return flat


def tracker_scalars(record: dict) -> dict[str, float]:
    """A metrics.jsonl record's numbers for a tracker, validation metrics as `validation/NAME`."""
    scalars = {k: v for k, v in record.items() if k != "step" and isinstance(v, int | float)}
    scalars.update({f"validation/{k}": v for k, v in record.get("validation", {}).items()})
    return scalars
