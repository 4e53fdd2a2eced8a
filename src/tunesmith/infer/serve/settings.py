"""How `tunesmith serve` runs, with every default in one place: `ServeSettings`.

Torch- and FastAPI-free, so the CLI builds its `serve` flags' defaults from it at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """The server's address, request batching, body limit and precision (the `serve` flags)."""

    # Interface to listen on; 0.0.0.0 accepts other machines.
    host: str = "127.0.0.1"
    # TCP port to listen on.
    port: int = 8000
    # Most texts merged into one model call.
    max_batch_size: int = 32
    # How long a batch waits for more requests after its first, in milliseconds.
    max_wait_ms: float = 5.0
    # False runs every request as its own model call (--no-batching).
    batching: bool = True
    # Larger request bodies get 413.
    max_body_bytes: int = 1 << 20
    # Number format of the forward pass, as in hardware.inference_placement.
    precision: str = "auto"
