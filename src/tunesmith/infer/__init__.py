"""Inference on an exported model folder: `predict` (classifiers and regressors),
`language_models` (fill-mask, generate), and `serve/` (the HTTP API over either).

The batched-logits loop they share with training stays in `tunesmith.compute.inference`. The
names below load their modules (torch, transformers) on first use, so importing this package, or
`tunesmith.infer.serve.settings` for the CLI's defaults, stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunesmith.infer.language_models import FillMasker, Generator
    from tunesmith.infer.predict import Predictor, load_for_serving

_HOMES = {
    "FillMasker": "tunesmith.infer.language_models",
    "Generator": "tunesmith.infer.language_models",
    "Predictor": "tunesmith.infer.predict",
    "load_for_serving": "tunesmith.infer.predict",
}

__all__ = ["FillMasker", "Generator", "Predictor", "load_for_serving"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
