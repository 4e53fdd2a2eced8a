"""Batches that waste little compute on padding: length-bucketed, token-budget micro-batches.

A random batch of 8 MRPC pairs is about a quarter padding; batches of similar lengths are almost
none. Training keeps randomness by shuffling rows into pools, sorting within a pool, and shuffling
the order of the batches; evaluation sorts everything by length. Padding itself is done per batch
by `DataCollatorWithPadding`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def token_budget_batches(
    lengths: Sequence[int] | np.ndarray,
    max_tokens: int,
    order: np.ndarray,
    max_batch_size: int | None = None,
    packed: bool = False,
) -> list[list[int]]:
    """Greedily cut `order` (already pooled and sorted) into batches whose padded size
    (rows x longest row), or with `packed` their summed length (one unpadded row), stays within
    `max_tokens`."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for index in order.tolist():
        length = int(lengths[index])
        grown = max(longest, length)
        cost = total + length if packed else grown * (len(current) + 1)
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (cost > max_tokens or full):
            batches.append(current)
            current, grown, total = [], length, 0
        current.append(index)
        longest, total = grown, total + length
    if current:
        batches.append(current)
    return batches


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Yields lists of row indices; `set_epoch` reshuffles deterministically from the seed.

    With `shuffle=False` the rows are sorted by length once (evaluation and prediction); with a
    fixed `batch_size` every batch has that many rows instead of a token budget. Lengths are
    counted as the collator pads them: rounded up to `pad_to_multiple_of`.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        shuffle: bool,
        seed: int = 0,
        batch_size: int | None = None,
        pool_batches: int = 4,
        pad_to_multiple_of: int = 1,
        packed: bool = False,
    ) -> None:
        self.lengths = -(-np.asarray(lengths) // pad_to_multiple_of) * pad_to_multiple_of
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.batch_size = batch_size
        # Rows are shuffled, then sorted by length within pools of about this many batches: more
        # means less padding, fewer means more varied batches (full sorting costs accuracy).
        self.pool_batches = pool_batches
        self.packed = packed  # a batch becomes one unpadded row: budget its summed length
        self.epoch = 0
        self._skip = 0
        self._batches: list[list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._batches = epoch, None

    def skip_batches(self, count: int) -> None:
        """Start the next pass `count` batches into the epoch: a resume skips here, loading and
        collating nothing, instead of replaying the batches it already trained on."""
        self._skip = count

    def batches(self) -> list[list[int]]:
        if self._batches is None:
            self._batches = self._make_batches()
        return self._batches

    def _make_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            return token_budget_batches(self.lengths, self.max_tokens, order, self.batch_size)
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(n)
        if self.batch_size is not None:  # fixed-size batches in random order (the course's way)
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        mean_rows = max(1, self.max_tokens // max(1, int(self.lengths.mean())))
        pool = mean_rows * self.pool_batches
        batches: list[list[int]] = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += token_budget_batches(
                self.lengths, self.max_tokens, chunk, packed=self.packed
            )
        return [batches[i] for i in rng.permutation(len(batches))]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        yield from self.batches()[skip:]

    def __len__(self) -> int:
        return len(self.batches())


def rank_passes(
    batches: list[list[int]], rank: int, world_size: int
) -> Iterator[tuple[list[int], bool]]:
    """This rank's share of `batches` as (rows, keep) pairs, as many on every rank.

    Sharded models (FSDP, ZeRO-3) gather weights in each forward, so a rank that stopped early
    would leave the others waiting forever: a rank short of batches repeats one (keep=False) and
    drops its output."""
    share = batches[rank::world_size]
    for position in range(-(-len(batches) // world_size)):
        if position < len(share):
            yield share[position], True
        else:
            yield batches[0], False


def padding_share(lengths: np.ndarray, sampler: TokenBudgetBatchSampler) -> float:
    """Fraction of the padded tensors of `sampler`'s batches that is padding, for reporting."""
    batches = sampler.batches()
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(sampler.lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / padded if padded else 0.0
