"""The training loop: micro-batches accumulate into optimizer steps, with evaluation, logging,
checkpoints and stopping (early, at a target, or on a signal) on step boundaries.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from tunesmith import metrics
from tunesmith.errors import Interrupted, UserError
from tunesmith.metrics import Evaluation
from tunesmith.runfolder import checkpoint
from tunesmith.runfolder.log import MetricsLog, tracker_scalars
from tunesmith.tasks import Task
from tunesmith.training.resume import save_checkpoint
from tunesmith.training.state import Progress, TrainingRun, fmt, say


def fit(run: TrainingRun, progress: Progress, log: MetricsLog | None) -> Evaluation | None:
    """The training loop: micro-batches accumulate into optimizer steps; logging, evaluation and
    checkpoints happen on optimizer-step boundaries only. Returns the last evaluation when it
    was the best and no step followed it: the exported model's, which finish need not redo."""
    t, accelerator, model, optimizer = run.train, run.accelerator, run.model, run.optimizer
    every = run.cfg.checkpoint.every_steps
    running_loss, running_steps, done = 0.0, 0, False
    final: Evaluation | None = None
    bar = tqdm(
        total=run.total_steps,
        initial=progress.step,
        desc="training",
        disable=not accelerator.is_main_process,
    )
    with StopRequest() as stop:
        while progress.step < run.total_steps and not done:
            # Through the prepared loader: Accelerate re-sets the sampler's epoch from its own
            # iteration count when iterating, which after a resume would restart at epoch 0.
            run.train_loader.set_epoch(progress.epoch)
            run.sampler.set_epoch(progress.epoch)
            run.sampler.skip_batches(progress.micro_in_epoch * accelerator.num_processes)
            model.train()
            tick = time.perf_counter()
            for window, end_of_epoch in _windows(run, t.gradient_accumulation_steps):
                loss, nonfinite = accumulate_window(accelerator, model, run.data.task, window)
                if nonfinite is None:
                    if t.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                    optimizer.step()
                    running_loss, running_steps = running_loss + loss, running_steps + 1
                elif t.on_nonfinite_loss == "skip":
                    # Every process drops this update (no optimizer.step); the schedule and the
                    # step count go on, so evaluations, checkpoints and the end stay as planned.
                    progress.skipped_nonfinite += 1
                else:  # on every process, so none is left waiting in a collective
                    raise UserError(_nonfinite_message(nonfinite, progress, run))
                optimizer.zero_grad(set_to_none=True)
                progress.micro_in_epoch += len(window)
                for batch in window:
                    samples, real_tokens = _sizes(batch)
                    progress.samples += samples
                    progress.real_tokens += real_tokens
                run.scheduler.step()
                progress.step += 1
                bar.update(1)
                if end_of_epoch:
                    progress.epoch, progress.micro_in_epoch = progress.epoch + 1, 0
                last_step = progress.step == run.total_steps
                evaluate_now = run.data.validation is not None and (
                    last_step or (run.eval_interval and progress.step % run.eval_interval == 0)
                )
                record: dict = {}
                if progress.step % t.logging_steps == 0 or evaluate_now:
                    record = {
                        "step": progress.step,
                        "epoch": round(progress.step / run.steps_per_epoch, 4),
                        # The mean of the steps' losses since the last record (NaN when all
                        # were skipped); each step's is the mean over its window's loss items.
                        "loss": running_loss / running_steps if running_steps else math.nan,
                        "learning_rate": run.scheduler.get_last_lr()[0],
                    }
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}", lr=f"{record['learning_rate']:.2e}"
                    )
                    running_loss, running_steps = 0.0, 0
                progress.train_seconds += (
                    time.perf_counter() - tick
                )  # evaluation and saving excluded
                final = None
                if evaluate_now:
                    evaluation = evaluate_and_keep_best(run, progress)
                    final = evaluation if progress.best_step == progress.step else None
                    record["validation"] = evaluation.scores
                    if accelerator.is_main_process:
                        say(None, f"step {progress.step}: validation {fmt(record['validation'])}")
                    model.train()
                if record and log is not None:
                    log.write(record)
                    if accelerator.trackers:
                        accelerator.log(tracker_scalars(record), step=progress.step)
                stop_now = _agreed(accelerator, stop.signum)
                if (
                    stop_now
                    or (every and progress.step % every == 0)
                    or (end_of_epoch and run.cfg.checkpoint.at_epoch_end)
                ):
                    save_checkpoint(run, progress)
                if stop_now:
                    bar.close()
                    raise Interrupted(stop.signum or signal.SIGTERM, progress.step, run.output_dir)
                patience = t.early_stopping_patience
                done = (
                    last_step
                    or (patience is not None and progress.stale_evals > patience)
                    or _target_reached(run, progress)
                )
                tick = time.perf_counter()
                if done:
                    break
    bar.close()
    return final


class StopRequest:
    """The first SIGINT/SIGTERM asks the loop to checkpoint and leave; a second one exits now."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum:
            raise SystemExit(128 + signum)
        self.signum = signum

    def __enter__(self) -> StopRequest:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (e.g. inside a server): no handlers, no-op
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _windows(run: TrainingRun, size: int) -> Iterator[tuple[list[dict[str, torch.Tensor]], bool]]:
    """(micro-batches of one optimizer step, whether they end the epoch): `size` of them, or
    fewer at the epoch's end. Accelerate's end-of-data flag is read right after each batch: it
    is set as the last one is handed out, and gone once the loader is exhausted."""
    window: list[dict[str, torch.Tensor]] = []
    for batch in run.train_loader:
        window.append(batch)
        end_of_epoch = run.accelerator.gradient_state.end_of_dataloader
        if len(window) == size or end_of_epoch:
            yield window, end_of_epoch
            window = []


@dataclass
class NonFinite:
    """The first micro-batch of a window whose loss was NaN/inf on at least one process."""

    micro_batch: int  # its index in the window
    loss: float | None  # this process's loss; None when only another process's was non-finite


def accumulate_window(
    accelerator: Accelerator, model: torch.nn.Module, task: Task, window: list[dict]
) -> tuple[float, NonFinite | None]:
    """Forward and backward each micro-batch of one optimizer step, leaving the step's gradient
    in `.grad`. Each micro-batch's mean loss is weighted by its share of the loss items (rows,
    their class weights, predicted tokens) of the whole window on all processes, so the gradient
    is the one a single batch of all those rows would give, however unequal the micro-batches.
    Returns the window's loss (the mean over those items) and None; or, when a loss was NaN/inf
    on any process, NaN and where: every process stops at that micro-batch, and the caller drops
    the gradients."""
    items = [task.loss_items(batch) for batch in window]
    total = _summed(accelerator, sum(items))[0] or 1.0  # 0 when nothing is predicted at all
    window_loss = 0.0
    for i, (batch, count) in enumerate(zip(window, items, strict=True)):
        last = i == len(window) - 1
        # Gradients stay on this process until the window's last backward all-reduces them.
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss = task.loss(model, batch)
            if count == 0:  # nothing predicted here: the mean is 0/0, and the weight 0 anyway
                loss = _zero_loss(model)
            # One all-reduce: how many processes saw a NaN/inf loss (all must then take the same
            # path), and the processes' shares of the window's loss.
            bad, share = _summed(
                accelerator, float(not torch.isfinite(loss)), loss.item() * (count / total)
            )
            if bad:
                if last and accelerator.num_processes > 1:
                    # This forward, outside no_sync, armed DDP for a gradient all-reduce in the
                    # next backward; left armed, the next window's first backward, meant to stay
                    # local, would all-reduce instead. A backward through the NaN graph would
                    # spread NaN to every process's gradients, so all run this one instead: a
                    # zero gradient for every trainable parameter, whose hooks then complete the
                    # all-reduce on every process at once. The caller drops these gradients.
                    accelerator.backward(_zero_loss(model))
                return math.nan, NonFinite(i, None if torch.isfinite(loss) else loss.item())
            # DDP averages the processes' gradients: times num_processes makes that a sum.
            # Exactly 1 for one micro-batch on one process, which then runs as it always did.
            weight = count * accelerator.num_processes / total
            accelerator.backward(loss if weight == 1 else loss * weight)
            window_loss += share
    return window_loss, None


def _zero_loss(model: torch.nn.Module) -> torch.Tensor:
    """0, with a backward that reaches every trainable parameter (and its DDP hook)."""
    return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0


def _summed(accelerator: Accelerator, *values: float) -> list[float]:
    """`values` summed over the processes: one small all-reduce, none on a single process."""
    if accelerator.num_processes == 1:
        return list(values)
    sums = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    return accelerator.reduce(sums, reduction="sum").tolist()


def _sizes(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(samples, real tokens) of a micro-batch; a packed one is a single unpadded row in which
    each sample's position ids start again at 0."""
    if "attention_mask" in batch:
        return batch["input_ids"].shape[0], int(batch["attention_mask"].sum())
    return int((batch["position_ids"] == 0).sum()), batch["input_ids"].numel()


def _nonfinite_message(nonfinite: NonFinite, progress: Progress, run: TrainingRun) -> str:
    accelerator = run.accelerator
    micro = progress.micro_in_epoch + nonfinite.micro_batch
    where = f"at optimizer step {progress.step + 1} (epoch {progress.epoch}, micro-batch {micro}"
    if nonfinite.loss is None:
        return (
            f"the loss was non-finite on another process {where}); that process's error names "
            f"the training rows; lower train.learning_rate or set train.on_nonfinite_loss=skip"
        )
    position = micro * accelerator.num_processes + accelerator.process_index
    rows = run.sampler.batches()[position] if position < len(run.sampler) else []
    shown = ", ".join(str(r + 1) for r in rows[:8]) + (" ..." if len(rows) > 8 else "")
    return (
        f"loss is {nonfinite.loss} {where}, training rows {shown}); lower "
        f"train.learning_rate, check those rows, or set train.on_nonfinite_loss=skip"
    )


def evaluate_and_keep_best(run: TrainingRun, progress: Progress) -> Evaluation:
    evaluation = run.evaluate(run.data.validation)
    scores = evaluation.scores
    if evaluation.finite and metrics.is_better(run.metric, scores[run.metric], progress.best_value):
        progress.best_value, progress.best_step = scores[run.metric], progress.step
        progress.stale_evals = 0
        if run.accelerator.is_main_process:  # on disk, so a resumed run still exports the best
            checkpoint.save_best(
                run.output_dir, run.accelerator.unwrap_model(run.model), progress.step
            )
    else:
        progress.stale_evals += 1
    return evaluation


def _agreed(accelerator: Accelerator, signum: int) -> bool:
    """Whether any process was asked to stop; all must leave at the same step or DDP hangs."""
    return bool(_summed(accelerator, float(bool(signum)))[0])


def _target_reached(run: TrainingRun, progress: Progress) -> bool:
    target = run.train.stop_at_metric
    if target is None or progress.best_value is None:
        return False
    return not metrics.is_better(run.metric, target, progress.best_value)
