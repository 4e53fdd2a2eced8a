"""Model inputs and batched logits: what training's evaluation, prediction and serving share.

Rows are sorted by length and cut into token-budget batches, so inference pays little padding;
each process of a distributed evaluation runs its share of the batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding

from tunesmith.compute.batching import TokenBudgetBatchSampler, rank_passes

# What the models and collators take; the masked-LM collator reads special_tokens_mask (never
# masked) and offset_mapping (word boundaries, for whole-word masking).
MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "special_tokens_mask",
    "offset_mapping",
)


def model_inputs(ds: Dataset) -> Dataset:
    """Only the columns the model and collator take (drops texts and lengths)."""
    return ds.select_columns([c for c in (*MODEL_INPUTS, "labels") if c in ds.column_names])


def _row_reader(tokenized: Dataset | Mapping[str, list]) -> Callable[[list[int]], list[dict]]:
    """The model inputs of the rows at some indices, from a dataset or from plain columns (a
    request's few rows: no Arrow table to build, no fingerprint to hash)."""
    if isinstance(tokenized, Dataset):
        inputs = model_inputs(tokenized).remove_columns(
            [c for c in ("labels",) if c in tokenized.column_names]
        )
        return inputs.__getitems__
    names = [n for n in MODEL_INPUTS if n in tokenized]  # a dict, or the tokenizer's BatchEncoding
    return lambda indices: [{n: tokenized[n][i] for n in names} for i in indices]


@torch.inference_mode()
def infer_logits(
    model: torch.nn.Module,
    tokenized: Dataset | Mapping[str, list],
    collate: DataCollatorWithPadding,
    max_tokens: int,
    rank: int = 0,
    world_size: int = 1,
    autocast: Any = contextlib.nullcontext,
) -> tuple[np.ndarray, np.ndarray]:
    """(row indices, logits) for this rank's share of length-sorted batches, in batch order;
    `tokenized` is a dataset or plain columns, with `length`."""
    model.eval()
    device = next(model.parameters()).device
    batches = TokenBudgetBatchSampler(tokenized["length"], max_tokens, shuffle=False).batches()
    rows_at = _row_reader(tokenized)
    indices: list[int] = []
    outputs: list[np.ndarray] = []
    for batch_indices, keep in rank_passes(batches, rank, world_size):
        batch = collate(rows_at(batch_indices))
        with autocast():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        if keep:
            outputs.append(logits.float().cpu().numpy())
            indices += batch_indices
    width = outputs[0].shape[-1] if outputs else model.config.num_labels
    return np.asarray(indices, dtype=np.int64), (
        np.concatenate(outputs) if outputs else np.zeros((0, width), np.float32)
    )
