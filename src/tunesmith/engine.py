"""The training engine: build the data, model and optimizer from a validated Config, then run one
plain PyTorch loop on Accelerate. The same code runs on one CPU, one GPU or many processes.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import gather_object, set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding

from tunesmith import checkpoint, hardware, metrics, tracking
from tunesmith.batching import TokenBudgetBatchSampler, padding_share
from tunesmith.config import Config, config_to_dict, save_config
from tunesmith.errors import Interrupted, UserError
from tunesmith.models import load_sequence_classifier, load_tokenizer
from tunesmith.optim import build_optimizer, build_scheduler
from tunesmith.predict import infer_logits, model_inputs
from tunesmith.preprocess import prepare_data
from tunesmith.tasks import SequenceClassification


def evaluate_split(
    accelerator: Accelerator,
    model: torch.nn.Module,
    task: SequenceClassification,
    ds: Dataset,
    collate: DataCollatorWithPadding,
    max_tokens: int,
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics and input-ordered logits; each process runs a share of the batches, then all
    shares are gathered, so every row is counted exactly once whatever the process count."""
    # The unwrapped model: a DDP forward may sync buffers, and ranks run different batch counts.
    indices, logits = infer_logits(
        accelerator.unwrap_model(model),
        ds,
        collate,
        max_tokens,
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.autocast,
    )
    shares = gather_object([(indices, logits)])
    ordered = np.empty((len(ds), logits.shape[-1]), dtype=np.float32)
    for share_indices, share_logits in shares:
        ordered[share_indices] = share_logits
    return task.compute_metrics(ordered, np.asarray(ds["labels"])), ordered


@dataclass
class Progress:
    """The loop's counters; a checkpoint saves them and a resumed run starts from them."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches consumed in `epoch`; the sampler skips them on resume
    best_value: float | None = None
    best_step: int = 0
    stale_evals: int = 0  # evaluations since the last improvement (early stopping)
    samples: int = 0
    real_tokens: int = 0
    train_seconds: float = 0.0
    skipped_nonfinite: int = 0


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


def _resume_point(cfg: Config, output_dir: Path) -> Path | None:
    """The step folder to continue from, or None for a fresh run (whose output_dir is checked)."""
    if cfg.resume is None:
        checkpoint.check_output_dir(output_dir, cfg.overwrite)
        return None
    if (output_dir / "metrics.json").exists():
        raise UserError(f"output_dir={output_dir} holds a finished run; there is nothing to resume")
    if cfg.resume == "auto":
        found = checkpoint.find_resumable(output_dir, print)
        if found is None:
            print(f"tunesmith: no intact checkpoint in {output_dir}; starting from scratch")
        return found
    folder = Path(cfg.resume)
    problem = checkpoint.verify(folder)
    if problem:
        raise UserError(
            f"resume={folder}: {problem}; use resume=auto to take the newest intact one"
        )
    return folder


def _config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    changes = []
    for key, value in current.items():
        old = saved.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            changes += _config_changes(old, value, f"{prefix}{key}.")
        elif old != value and key not in ("resume", "overwrite"):
            changes.append(f"{prefix}{key}: {old!r} -> {value!r}")
    return changes


def train(cfg: Config) -> dict:
    """Fine-tune as `cfg` says; returns what `output_dir/metrics.json` holds."""
    t, output_dir = cfg.train, Path(cfg.output_dir)
    resume_from = _resume_point(cfg, output_dir)
    AcceleratorState._reset_state()  # a second train() in one process must not inherit settings
    precision, precision_reason = hardware.choose_precision(t.precision, torch.cuda.is_available())
    accelerator = Accelerator(
        mixed_precision="no" if precision == "fp32" else precision,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
    )
    set_seed(t.seed)
    tokenizer = load_tokenizer(cfg.model)
    prepared = prepare_data(cfg, tokenizer, accelerator)
    task = prepared.task
    metric = t.metric_for_best or task.default_metric
    if metric not in task.metric_names:
        raise UserError(
            f"train.metric_for_best={metric} is not one of {', '.join(task.metric_names)}"
        )
    model = load_sequence_classifier(cfg.model, **task.model_kwargs())
    if accelerator.is_main_process and resume_from is None:
        checkpoint.prepare_output_dir(output_dir, cfg.overwrite)
        save_config(cfg, output_dir / "config.yaml")
    accelerator.wait_for_everyone()

    collate = DataCollatorWithPadding(tokenizer)
    lengths = np.asarray(prepared.train["length"])
    sampler = TokenBudgetBatchSampler(
        lengths, t.max_tokens_per_batch, shuffle=True, seed=t.seed, batch_size=t.micro_batch_size
    )
    # Its own generator: the global RNG then drives dropout alone, so a resume replays it exactly.
    train_loader = DataLoader(
        model_inputs(prepared.train),
        batch_sampler=sampler,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(t.seed),
    )
    optimizer = build_optimizer(model, t.learning_rate, t.weight_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    # Not passed to accelerator.prepare: it would step the schedule once per process per step.
    scheduler = build_scheduler(optimizer, total_steps, t.warmup_ratio)
    progress = Progress()
    if resume_from is not None:
        state, optimizer_state, scheduler_state, rng_states = checkpoint.load_training_state(
            resume_from
        )
        checkpoint.load_weights(accelerator.unwrap_model(model), resume_from)
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)
        checkpoint.restore_rng(rng_states[accelerator.process_index])
        progress = Progress(**state["progress"])
        changes = _config_changes(state["config"], config_to_dict(cfg))
        accelerator.print(
            f"tunesmith: resuming from {resume_from} at step {progress.step}"
            + (
                f"; the current config wins over the checkpoint's: {'; '.join(changes)}"
                if changes
                else ""
            )
        )
    log = (
        tracking.MetricsLog(output_dir / "metrics.jsonl", keep_through_step=progress.step)
        if accelerator.is_main_process
        else None
    )
    batch_desc = (
        f"{t.micro_batch_size} rows"
        if t.micro_batch_size
        else f"<= {t.max_tokens_per_batch} tokens"
    )
    accelerator.print(
        f"tunesmith: {task.labels.kind}, rows {prepared.summary['rows']}, "
        f"labels {list(task.labels.names)}; precision {precision} ({precision_reason}); "
        f"micro-batch {batch_desc} x {t.gradient_accumulation_steps} accumulation x "
        f"{accelerator.num_processes} process(es); {total_steps} optimizer steps"
    )

    def save_checkpoint() -> None:
        rng_states = gather_object([checkpoint.capture_rng()])
        if accelerator.is_main_process:
            state = {"progress": dataclasses.asdict(progress), "config": config_to_dict(cfg)}
            checkpoint.save_checkpoint(
                output_dir,
                progress.step,
                accelerator.unwrap_model(model),
                optimizer,
                scheduler,
                rng_states,
                state,
                cfg.checkpoint.keep_last,
            )
        accelerator.wait_for_everyone()

    def evaluate_and_keep_best() -> dict[str, float]:
        scores, _ = evaluate_split(
            accelerator, model, task, prepared.validation, collate, t.eval_max_tokens_per_batch
        )
        if metrics.is_better(metric, scores[metric], progress.best_value):
            progress.best_value, progress.best_step, progress.stale_evals = (
                scores[metric],
                progress.step,
                0,
            )
            if accelerator.is_main_process:  # on disk, so a resumed run still exports the best
                best = {"step": progress.step, "validation": scores}
                checkpoint.save_best(output_dir, accelerator.unwrap_model(model), best)
        else:
            progress.stale_evals += 1
        return scores

    running_loss, running_micro = 0.0, 0
    bar = tqdm(
        total=total_steps,
        initial=progress.step,
        disable=not accelerator.is_main_process,
        desc="training",
    )
    stopped_early = False
    with StopRequest() as stop:
        while progress.step < total_steps and not stopped_early:
            sampler.set_epoch(progress.epoch)
            sampler.skip_batches(progress.micro_in_epoch * accelerator.num_processes)
            model.train()
            tick = time.perf_counter()
            for batch in train_loader:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    if torch.isfinite(loss):
                        accelerator.backward(loss)
                    elif t.on_nonfinite_loss == "skip":
                        progress.skipped_nonfinite += 1
                    else:
                        raise UserError(_nonfinite_message(loss, progress, sampler, accelerator))
                    if accelerator.sync_gradients and t.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                running_loss += loss.item() if torch.isfinite(loss) else 0.0
                running_micro += 1
                progress.micro_in_epoch += 1
                progress.samples += batch["input_ids"].shape[0]
                progress.real_tokens += int(batch["attention_mask"].sum())
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                progress.step += 1
                bar.update(1)
                end_of_epoch = accelerator.gradient_state.end_of_dataloader
                if end_of_epoch:
                    progress.epoch, progress.micro_in_epoch = progress.epoch + 1, 0
                last_step = progress.step == total_steps
                evaluate_now = last_step or (
                    progress.step % t.eval_every_steps == 0 if t.eval_every_steps else end_of_epoch
                )
                record: dict = {}
                if progress.step % t.logging_steps == 0 or evaluate_now:
                    lr = scheduler.get_last_lr()[0]
                    record = {
                        "step": progress.step,
                        "epoch": round(progress.step / steps_per_epoch, 4),
                        "loss": running_loss / max(running_micro, 1),
                        "learning_rate": lr,
                    }
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                    running_loss, running_micro = 0.0, 0
                if evaluate_now:
                    progress.train_seconds += time.perf_counter() - tick
                    record["validation"] = evaluate_and_keep_best()
                    bar.write(f"step {progress.step}: validation {_fmt(record['validation'])}")
                    model.train()
                    tick = time.perf_counter()
                if record and log is not None:
                    log.write(record)
                patience = t.early_stopping_patience
                early_stop = patience is not None and progress.stale_evals > patience
                stop_now = _agreed(accelerator, stop.signum)
                every = cfg.checkpoint.every_steps
                if (
                    stop_now
                    or (every and progress.step % every == 0)
                    or (end_of_epoch and cfg.checkpoint.at_epoch_end)
                ):
                    progress.train_seconds += time.perf_counter() - tick
                    save_checkpoint()
                    tick = time.perf_counter()
                if stop_now:
                    bar.close()
                    raise Interrupted(stop.signum or signal.SIGTERM, progress.step, output_dir)
                if last_step or early_stop:
                    stopped_early = early_stop
                    break
            else:
                progress.train_seconds += time.perf_counter() - tick
    bar.close()
    return _finish(
        cfg,
        accelerator,
        model,
        tokenizer,
        prepared,
        collate,
        metric,
        progress,
        sampler,
        lengths,
        log,
        precision,
        precision_reason,
    )


def _agreed(accelerator: Accelerator, signum: int) -> bool:
    """Whether any process was asked to stop; all must leave at the same step or DDP hangs."""
    if accelerator.num_processes == 1:
        return bool(signum)
    flag = torch.tensor([float(bool(signum))], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item())


def _nonfinite_message(
    loss: torch.Tensor,
    progress: Progress,
    sampler: TokenBudgetBatchSampler,
    accelerator: Accelerator,
) -> str:
    position = progress.micro_in_epoch * accelerator.num_processes + accelerator.process_index
    rows = sampler.batches()[position] if position < len(sampler) else []
    shown = ", ".join(str(r + 1) for r in rows[:8]) + (" ..." if len(rows) > 8 else "")
    return (
        f"loss is {loss.item()} at optimizer step {progress.step + 1} (epoch {progress.epoch}, "
        f"micro-batch {progress.micro_in_epoch}, training rows {shown}); lower "
        f"train.learning_rate, check those rows, or set train.on_nonfinite_loss=skip"
    )


def _finish(
    cfg: Config,
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer,
    prepared,
    collate,
    metric: str,
    progress: Progress,
    sampler: TokenBudgetBatchSampler,
    lengths: np.ndarray,
    log: tracking.MetricsLog | None,
    precision: str,
    precision_reason: str,
) -> dict:
    """Export the best weights, measure them again, and write the run folder's files."""
    t, output_dir, task = cfg.train, Path(cfg.output_dir), prepared.task
    unwrapped = accelerator.unwrap_model(model)
    best_dir = output_dir / checkpoint.CHECKPOINTS / "best"
    if (best_dir / "model.safetensors").exists():
        checkpoint.load_weights(unwrapped, best_dir)
    # Measured again on the exported weights, so metrics.json describes exactly model/.
    validation, val_logits = evaluate_split(
        accelerator, model, task, prepared.validation, collate, t.eval_max_tokens_per_batch
    )
    result = {"validation": validation, "best_step": progress.best_step, "metric_for_best": metric}
    if prepared.test is not None:
        result["test"], _ = evaluate_split(
            accelerator, model, task, prepared.test, collate, t.eval_max_tokens_per_batch
        )
    totals = torch.tensor([progress.samples, progress.real_tokens], device=accelerator.device)
    samples, real_tokens = (int(x) for x in accelerator.reduce(totals, reduction="sum").tolist())
    seconds = max(progress.train_seconds, 1e-9)
    result.update(
        {
            "baseline": {"majority_class": prepared.summary.get("majority_baseline")},
            "train": {
                "optimizer_steps": progress.step,
                "epochs": round(progress.epoch + progress.micro_in_epoch / max(len(sampler), 1), 4),
                "samples": samples,
                "real_tokens": real_tokens,
                "seconds": round(progress.train_seconds, 2),
                "samples_per_second": round(samples / seconds, 2),
                "real_tokens_per_second": round(real_tokens / seconds, 1),
                "padding_share": round(padding_share(lengths, sampler.batches()), 4),
                "skipped_nonfinite_micro_batches": progress.skipped_nonfinite,
                "processes": accelerator.num_processes,
            },
            "data": prepared.summary,
            "precision": precision,
            "precision_reason": precision_reason,
            "hardware": hardware.describe(),
        }
    )
    if log is not None:  # the main process
        meta = {
            "task": task.labels.kind,
            "text_column": task.columns.text,
            "text_pair_column": task.columns.text_pair,
            "label_column": task.columns.label,
            "max_length": cfg.data.max_length,
            "base_model": cfg.model,
        }
        checkpoint.export_model(unwrapped, tokenizer, output_dir / "model", meta)
        tracking.plot_training_curves(log.records, metric, output_dir / "training_curves.png")
        if task.labels.kind == "classification":
            tracking.plot_confusion_matrix(
                np.asarray(prepared.validation["labels"]),
                task.predictions(val_logits),
                list(task.labels.names),
                output_dir / "confusion_matrix.png",
            )
        checkpoint.write_json(output_dir / "metrics.json", result)  # last: marks the run finished
    accelerator.wait_for_everyone()
    return result


def _fmt(scores: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in scores.items())
