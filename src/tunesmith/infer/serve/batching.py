"""`MicroBatcher`: concurrent `/predict` requests merged into one model call.

One model call on 32 texts costs far less than 32 calls on one text each, so requests that
arrive together wait up to `max_wait_ms` and run as one `Predictor.predict_texts` call. The
model runs in a worker thread (the event loop keeps taking requests meanwhile), one call at a
time: torch already spreads a call over every core, and a fast tokenizer used by two threads at
once fails ("Already borrowed").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Predictor.predict_texts(texts, pairs) -> one {"label", "scores"} record per text, in order.
PredictFn = Callable[[list[str], list[str] | None], list[dict[str, Any]]]


@dataclass
class _Job:
    texts: list[str]
    pairs: list[str | None]
    future: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher:
    """Queued requests, run by one worker task as merged `predict` calls, one call at a time.

    A batch starts with the oldest request and takes the next ones while they fit in
    `max_batch_size` texts and arrive within `max_wait_s` of its start; a larger request runs
    alone. `max_batch_size=1` runs every request as its own call.
    """

    def __init__(self, predict: PredictFn, max_batch_size: int, max_wait_s: float) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()

    async def submit(self, texts: list[str], pairs: list[str | None]) -> list[dict[str, Any]]:
        job = _Job(texts, pairs)
        await self.queue.put(job)
        return await job.future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        held: _Job | None = None  # taken from the queue, but too big for the batch before it
        while True:
            first = held or await self.queue.get()
            held = None
            batch, size = [first], len(first.texts)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size:
                if self.queue.empty():
                    try:
                        job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                else:  # already waiting: taken even when the deadline has passed
                    job = self.queue.get_nowait()
                if size + len(job.texts) > self.max_batch_size:
                    held = job
                    break
                batch.append(job)
                size += len(job.texts)
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        pairs = [p for job in batch for p in job.pairs]
        try:
            rows = await asyncio.to_thread(self._predict_rows, texts, pairs)
        except Exception as e:
            if len(batch) > 1:  # one bad request must not fail the others merged with it
                for job in batch:
                    await self._run_batch([job])
            elif not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        start = 0
        for job in batch:
            if not job.future.done():  # its client may have gone away meanwhile
                job.future.set_result(rows[start : start + len(job.texts)])
            start += len(job.texts)

    def _predict_rows(self, texts: list[str], pairs: list[str | None]) -> list[dict[str, Any]]:
        """Single texts and pairs take one call each: a dataset has a pair column or not."""
        out: list[dict[str, Any]] = [{} for _ in texts]
        single = [i for i, p in enumerate(pairs) if p is None]
        paired = [i for i, p in enumerate(pairs) if p is not None]
        if single:
            rows = self.predict([texts[i] for i in single], None)
            for i, row in zip(single, rows, strict=True):
                out[i] = row
        if paired:
            rows = self.predict([texts[i] for i in paired], [pairs[i] for i in paired])
            for i, row in zip(paired, rows, strict=True):
                out[i] = row
        return out
