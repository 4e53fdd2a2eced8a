"""`tunesmith serve`, split by job: `settings` (ServeSettings, every default), `schemas` (request
and response bodies), `limits` (what one request may hold), `batching` (MicroBatcher) and `app`
(create_app, its error answers, serve).

`create_app` and `serve` load FastAPI and the model's modules on first use, so importing this
package, or its `settings` for the CLI's defaults, stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tunesmith.infer.serve.settings import ServeSettings

if TYPE_CHECKING:
    from tunesmith.infer.serve.app import create_app, serve

__all__ = ["ServeSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):
        return getattr(importlib.import_module("tunesmith.infer.serve.app"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
