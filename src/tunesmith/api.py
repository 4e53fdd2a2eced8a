"""The Python API: `train`, `evaluate`, `predict`, each a thin call into the engine or predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunesmith.config import (
    Config,
    config_from_dict,
    config_to_dict,
    load_config,
    merge,
    parse_overrides,
)


def train(config: Config | dict | str | Path | None = None, **overrides: Any) -> dict:
    """Fine-tune and return the run's metrics.

    `config` is a Config, a dict of the YAML's shape, or a YAML path; keyword overrides use
    `__` for dots: `train(data__train="a.csv", train__epochs=1)`.
    """
    from tunesmith.training import train as run

    items = [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    if isinstance(config, Config):
        config = config_to_dict(config)
    if isinstance(config, dict):
        cfg = config_from_dict(merge(config, parse_overrides(items)))
    else:
        cfg = load_config(config, items)
    return run(cfg)


def evaluate(model: str | Path, data: str | Path, precision: str = "auto") -> dict:
    """Metrics of an exported model (or run folder) on a labelled file, on the GPU when there is
    one. `precision`: auto (what training would pick on this machine), fp32, bf16, fp16, or int8
    (quantized linear layers: CPU speed, slightly moved logits)."""
    from tunesmith.data import read_table
    from tunesmith.infer import Predictor

    return Predictor(model, precision=precision).evaluate(read_table(data), str(data))


def predict(model: str | Path, data: str | Path, precision: str = "auto") -> list[dict]:
    """One {label, scores} record per row of `data`, in input order; `precision` as in
    evaluate."""
    from tunesmith.data import read_table
    from tunesmith.infer import Predictor

    return Predictor(model, precision=precision).predict(read_table(data), str(data))
