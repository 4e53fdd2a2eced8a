"""`data.max_length=auto`: how many tokens of each row a classifier keeps, chosen from the training
rows' token lengths, the model's position limit and the device.

Short texts keep 128 tokens, as every run did before auto existed: their rows fit, and nothing
changes. Longer texts get the shortest length that holds most rows whole, up to the model's
limit, and on a CPU up to 256, past which each point of accuracy cost far more time than the
points before it (attention's cost grows with the square of the length): docs/data.md has the
measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHORT = 128  # the length short-text sets keep, and the floor of every choice
STEP = 64  # candidate lengths: 128, 192, 256, ... up to the model's limit
ROWS_WHOLE = 0.9  # the share of training rows a length should hold without a cut
# The longest length auto picks per device; GPUs: the model's limit (not measured: no GPU was
# lent; a token costs them far less time).
LONGEST = {"cpu": 256}


@dataclass(frozen=True)
class LengthChoice:
    max_length: int
    reason: str  # for the startup line and decisions.json
    # Measured on the training rows when auto chose; None for a length given (or a language
    # model's), where no row was measured at any other length.
    rows_cut: float | None = None  # share of training rows longer than max_length
    tokens_cut: float | None = None  # share of their tokens (up to the model's limit) cut


def choose_max_length(lengths: np.ndarray, limit: int, device_type: str) -> LengthChoice:
    """The length auto keeps for training rows of these token `lengths` (special tokens
    included; rows at `limit` may be longer), at most `limit` (the model's positions, or a
    smaller token budget per micro-batch)."""
    lengths = np.asarray(lengths)
    longest = min(limit, LONGEST.get(device_type, limit))
    short = min(SHORT, longest)
    wanted = float(np.quantile(lengths, ROWS_WHOLE)) if len(lengths) else 0.0
    candidates = [*range(short, longest, STEP), longest]
    chosen = next((c for c in candidates if c >= wanted), longest)
    rows_cut = float((lengths > chosen).mean()) if len(lengths) else 0.0
    tokens_cut = 1.0 - float(np.minimum(lengths, chosen).sum()) / max(1, int(lengths.sum()))
    held = f"{1 - rows_cut:.0%} of training rows whole"
    if chosen >= wanted:
        why = f"{held} at {short}" if chosen == short else f"the shortest length holding {held}"
    elif longest < limit:
        why = f"{held}; {longest} is the longest auto picks on a {device_type}"
    else:
        why = f"the model's limit; {held}"
    return LengthChoice(chosen, why, rows_cut, tokens_cut)
