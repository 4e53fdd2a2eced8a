"""data.long_texts=chunk: a text longer than `data.max_length` becomes overlapping windows that
each fit it, every window a training row with its text's labels, and one answer per text from its
windows' logits pooled (`data.pooling`). Nothing of a text is cut, however long it is.

Each window row carries `window`, its place in its text (0 for the first), so the windows of
one text are the consecutive rows from a 0 to the next: no index survives tokenization for that.
A pair windows its longer text and keeps the other one whole in every window (at most half the
window, its head, when both are long).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from transformers import PreTrainedTokenizerBase

from tunesmith.errors import UserError
from tunesmith.tasks.truncation import append_inputs, whole_text_encoder


def default_stride(max_length: int) -> int:
    """Tokens each window repeats from the one before when data.stride is unset: a quarter of
    the window, so a sentence cut at one window's edge is whole in the next."""
    return max_length // 4


def tokenizer_windowing(
    tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int
) -> Callable[[list[str], list[str] | None], tuple[dict[str, list], list[int]]]:
    """A function (texts, second texts or None) -> (the tokenizer's inputs for every window of
    every text, each window at most `max_length` tokens with the special tokens, and `window`;
    for each window, the position of its text in the batch)."""
    # Windows cut with Encoding.truncate and a stride, as the tokenizer's own overflowing
    # tokens are, then each given its special tokens and segment ids.
    backend, names = whole_text_encoder(tokenizer)

    def windows(texts: list[str], pairs: list[str] | None) -> tuple[dict[str, list], list[int]]:
        budget = max_length - tokenizer.num_special_tokens_to_add(pair=pairs is not None)
        check_stride(stride, budget - budget // 2 if pairs else budget, max_length)
        firsts = backend.encode_batch(texts, add_special_tokens=False)
        seconds = backend.encode_batch(pairs, add_special_tokens=False) if pairs else None
        out: dict[str, list] = {name: [] for name in (*names, "window")}
        sources: list[int] = []
        for i, first in enumerate(firsts):
            second = seconds[i] if seconds is not None else None
            for n, (a, b) in enumerate(_pieces(first, second, budget, stride)):
                append_inputs(out, backend.post_process(a, b, add_special_tokens=True), names)
                out["window"].append(n)
                sources.append(i)
        return out, sources

    return windows


def check_stride(stride: int, window: int, max_length: int) -> None:
    """A stride of the window or more would never move past the first window."""
    if not 0 <= stride < window:
        raise UserError(
            f"data.stride={stride} must be at least 0 and smaller than the window: "
            f"data.max_length={max_length} leaves {window} tokens of text per window; lower "
            f"data.stride (the tokens each window repeats from the one before)"
        )


def _pieces(first, second, budget: int, stride: int) -> list[tuple]:
    """(first, second) encodings of each window: the longer text of a pair in windows, the other
    whole in each (its head, if it passes half the budget)."""
    if second is None:
        return [(piece, None) for piece in _windows(first, budget, stride)]
    swap = len(second) > len(first)
    long, short = (second, first) if swap else (first, second)
    if len(short) > budget // 2:
        short.truncate(budget // 2, direction="right")
        short = type(short).merge([short], growing_offsets=False)  # drops the overflow
    pieces = _windows(long, budget - len(short), stride)
    return [(short, piece) if swap else (piece, short) for piece in pieces]


def _windows(encoding, size: int, stride: int) -> list:
    """`encoding` in windows of `size` tokens, each repeating the `stride` before it."""
    if len(encoding) <= size:
        return [encoding]
    encoding.truncate(size, stride=stride, direction="right")
    rest = encoding.overflowing
    head = type(encoding).merge([encoding], growing_offsets=False)  # without its overflow
    return [head, *rest]


def document_starts(window: np.ndarray) -> np.ndarray:
    """The row of each text's first window."""
    return np.flatnonzero(np.asarray(window) == 0)


def pool(window_logits: np.ndarray, window: np.ndarray, pooling: str) -> np.ndarray:
    """One row of logits per text from its windows' rows (in order): their mean or maximum."""
    starts = document_starts(window)
    reduce = np.maximum if pooling == "max" else np.add
    pooled = reduce.reduceat(window_logits, starts, axis=0)
    if pooling == "mean":
        counts = np.diff(np.append(starts, len(window_logits)))
        pooled = pooled / counts[:, None].astype(pooled.dtype)
    return pooled.astype(window_logits.dtype, copy=False)
