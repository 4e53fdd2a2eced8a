"""The training engine: build the data, model and optimizer from a validated Config, then run one
plain PyTorch loop on Accelerate. The same code runs on one CPU, one GPU or many processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, gather_object, set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from tunesmith import checkpoint, few_shot, hardware, metrics, runfolder, tracking
from tunesmith.batching import TokenBudgetBatchSampler, padding_share
from tunesmith.config import Config, TrainConfig, config_to_dict, save_config
from tunesmith.errors import Interrupted, UserError
from tunesmith.inference import model_inputs
from tunesmith.kernels import train_attention_core_in_fp32, use_fast_dropout
from tunesmith.metrics import Evaluation
from tunesmith.models import add_lora, freeze, layer_count, load_tokenizer
from tunesmith.optim import build_optimizer, build_scheduler
from tunesmith.preprocess import PreparedData, prepare_data
from tunesmith.tasks import Task


def evaluate_split(
    accelerator: Accelerator,
    model: torch.nn.Module,
    task: Task,
    ds: Dataset,
    collate: Callable,
    max_tokens: int,
) -> Evaluation:
    """Each process runs a share of the batches (as many forwards as the others), then all shares
    are gathered, so every row is counted exactly once whatever the process count."""
    # DDP's wrapper would broadcast buffers in every forward; sharded engines need theirs.
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        model = accelerator.unwrap_model(model)
    share = task.evaluate_share(
        model,
        ds,
        collate,
        max_tokens,
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.autocast,
    )
    return task.combine(gather_object([share]), ds)


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
    skipped_nonfinite: int = 0  # optimizer steps skipped for a NaN/inf loss on some process
    before_training: dict | None = None  # validation scores of the pretrained weights (LMs)


@dataclass
class Run:
    """What `build` makes once from the config and the loop works with."""

    cfg: Config  # as the user gave it; `train` holds the settings the method trains with
    train: TrainConfig
    setting_keys: dict[str, str]  # train field -> the config key that set it, where not train.*
    accelerator: Accelerator
    tokenizer: PreTrainedTokenizerBase
    data: PreparedData
    metric: str  # picks the exported model
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: TokenBudgetBatchSampler
    train_loader: DataLoader
    eval_collate: Callable
    steps_per_epoch: int
    total_steps: int
    eval_interval: int | None  # optimizer steps between evaluations; None: the last step only
    precision: str
    precision_reason: str

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def evaluate(self, ds: Dataset) -> Evaluation:
        return evaluate_split(
            self.accelerator,
            self.model,
            self.data.task,
            ds,
            self.eval_collate,
            self.eval_max_tokens,
        )

    @property
    def eval_max_tokens(self) -> int:
        return eval_max_tokens(self.train, self.accelerator.device.type)


def eval_max_tokens(t: TrainConfig, device_type: str) -> int:
    """train.eval_max_tokens_per_batch, or the device's default."""
    return t.eval_max_tokens_per_batch or hardware.inference_tokens_per_batch(device_type)


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
        runfolder.check_output_dir(output_dir, cfg.overwrite)
        return None
    if (output_dir / runfolder.METRICS).exists():
        raise UserError(f"output_dir={output_dir} holds a finished run; there is nothing to resume")
    if cfg.resume == "auto":
        found = checkpoint.find_resumable(output_dir, functools.partial(_say, None))
        if found is None:
            _say(None, f"no intact checkpoint in {output_dir}; starting from scratch")
            runfolder.check_output_dir(output_dir, overwrite=True)  # a file, or not creatable
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
    resume_from = _resume_point(cfg, Path(cfg.output_dir))
    run = build(cfg, fresh=resume_from is None)
    progress = restore(run, resume_from) if resume_from else Progress()
    if run.data.task.evaluate_before_training and progress.step == 0:
        progress.before_training = run.evaluate(run.data.validation).scores
        _say(run.accelerator, f"before training: {_fmt(progress.before_training)}")
    log = None
    if run.accelerator.is_main_process:
        log = tracking.MetricsLog(
            run.output_dir / runfolder.METRICS_LOG, keep_through_step=progress.step
        )
    try:
        return finish(run, progress, log, fit(run, progress, log))
    except torch.OutOfMemoryError:
        raise UserError(_out_of_memory_message(run, progress)) from None


def build(cfg: Config, fresh: bool) -> Run:
    """Data, model, optimizer and schedule on Accelerate; a fresh run also lays out output_dir."""
    t = cfg.train
    # A second train() in one process must not inherit the first one's settings (precision,
    # process group). Accelerate offers no public reset; transformers' TrainingArguments makes
    # this same private call.
    AcceleratorState._reset_state()
    precision, precision_reason = hardware.choose_precision(t.precision, torch.cuda.is_available())
    accelerator = Accelerator(
        # cpu=True is what lets Accelerate see a torchrun/accelerate launch on CPUs (gloo).
        cpu=not torch.cuda.is_available(),
        mixed_precision="no" if precision == "fp32" else precision,
        # No gradient_accumulation_steps: accumulate_window groups micro-batches into steps and
        # weights them itself, so Accelerate's backward must not divide the loss again.
        **({"log_with": t.report_to, "project_dir": cfg.output_dir} if t.report_to else {}),
    )
    sharded = [k for k in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{k}") == "true"]
    if sharded and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _say(
            accelerator,
            f"{sharded[0]} in Accelerate needs GPUs; these CPU processes run plain "
            f"data parallel (DDP over gloo) instead",
        )
    set_seed(t.seed)
    tokenizer = load_tokenizer(cfg.model)
    prepared = prepare_data(cfg, tokenizer, accelerator)
    task, method = prepared.task, prepared.method
    metric = t.metric_for_best or task.default_metric
    if metric not in task.metric_names:
        raise UserError(
            f"train.metric_for_best={metric} is not one of {', '.join(task.metric_names)}"
        )
    model = task.load_model(cfg.model, t.attention_dropout)
    # Lengths in multiples of 8 suit GPU tensor cores; on CPUs the extra padding cost more
    # (8% of throughput on MiniLM) than the rounder shapes gained.
    pad_multiple = 1 if accelerator.device.type == "cpu" else 8
    if method.few_shot:
        t = few_shot.train_settings(t, cfg.few_shot)
        few_shot.add_mean_pooling_layer(model)
        if fresh:  # a resumed run loads its head from the checkpoint
            fitted = few_shot.fit_head(
                model,
                prepared.train,
                task.eval_collator(tokenizer, pad_multiple),
                eval_max_tokens(t, accelerator.device.type),
                task.class_weights,
                cfg.few_shot.probe_c,
                t.seed,
            )
            _say(
                accelerator,
                f"few-shot: head fitted on the embeddings of {len(prepared.train)} rows "
                f"(training accuracy {fitted:.3f}); now end to end for few_shot.epochs="
                f"{t.epochs:g} (train.epochs and train.learning_rate are fine-tune's)",
            )
    if cfg.lora.r:
        model = add_lora(model, cfg.lora, task.peft_task_type)
        frozen = "all but the LoRA adapters"
    else:
        count = layer_count(model)
        words, layers = _frozen_parts(t, task, count, accelerator.device.type == "cpu")
        freeze(model, words, layers)
        parts = ["word embeddings"] * words + [f"bottom {layers} of {count} layers"] * bool(layers)
        frozen = ", ".join(parts) or "nothing"
    base = model.get_base_model() if cfg.lora.r else model  # peft's forward takes **kwargs
    if task.packs and "position_ids" not in inspect.signature(base.forward).parameters:
        _say(
            accelerator,
            f"{type(base).__name__} takes no position_ids, so packed samples attend "
            f"to each other; set lm.packing=false for exact per-sample attention",
        )
    if accelerator.device.type == "cpu":
        use_fast_dropout(model)
        if precision == "bf16":
            train_attention_core_in_fp32(base)
    if accelerator.is_main_process and fresh:
        checkpoint.prepare_output_dir(Path(cfg.output_dir))
        save_config(cfg, Path(cfg.output_dir) / runfolder.CONFIG)
    accelerator.wait_for_everyone()
    if t.report_to:  # event files in output_dir/tensorboard
        accelerator.init_trackers("tensorboard", tracking.flat_config(config_to_dict(cfg)))

    sampler = TokenBudgetBatchSampler(
        prepared.train["length"],
        t.max_tokens_per_batch,
        shuffle=True,
        seed=t.seed,
        batch_size=t.micro_batch_size,
        pool_batches=t.bucket_pool_batches,
        pad_to_multiple_of=pad_multiple,
        packed=task.packs,
    )
    # Its own generator: the global RNG then drives dropout alone, so a resume replays it exactly.
    train_loader = DataLoader(
        model_inputs(prepared.train),
        batch_sampler=sampler,
        collate_fn=task.train_collator(tokenizer, pad_multiple),
        generator=torch.Generator().manual_seed(t.seed),
    )
    head_rate = cfg.few_shot.head_learning_rate if method.few_shot else None
    optimizer = build_optimizer(model, t.learning_rate, t.weight_decay, head_rate)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    # Not passed to accelerator.prepare: it would step the schedule once per process per step.
    scheduler = build_scheduler(optimizer, total_steps, t.warmup_ratio)
    batch = (
        f"{t.micro_batch_size} rows"
        if t.micro_batch_size
        else f"<= {t.max_tokens_per_batch} tokens"
    )
    truncated = {k: v for k, v in prepared.summary["truncated_rows"].items() if v}
    if truncated:
        _say(
            accelerator,
            f"rows cut to data.max_length={cfg.data.max_length} by truncation: "
            f"{truncated}; raise data.max_length to keep more of each text",
        )
    engine = f" ({accelerator.distributed_type.value})" if accelerator.num_processes > 1 else ""
    how = f"method {method.name} ({method.reason}); " if task.kind == "classification" else ""
    _say(
        accelerator,
        f"{task.describe()}, rows {prepared.summary['rows']}; {how}"
        f"precision {precision} ({precision_reason}); frozen: {frozen}; "
        f"micro-batch {batch} x {t.gradient_accumulation_steps} accumulation x "
        f"{accelerator.num_processes} process(es){engine}; "
        f"{total_steps} optimizer steps",
    )
    eval_interval = t.eval_every_steps or (
        math.ceil(steps_per_epoch / t.evals_per_epoch) if t.evals_per_epoch else None
    )
    run = Run(
        cfg=cfg,
        train=t,
        setting_keys=few_shot.SETTING_KEYS if method.few_shot else {},
        accelerator=accelerator,
        tokenizer=tokenizer,
        data=prepared,
        metric=metric,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        train_loader=train_loader,
        eval_collate=task.eval_collator(tokenizer, pad_multiple),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        eval_interval=eval_interval,
        precision=precision,
        precision_reason=precision_reason,
    )
    if accelerator.is_main_process and fresh:
        record_decisions(run, frozen, batch, pad_multiple)
    return run


def record_decisions(run: Run, frozen: str, batch: str, pad_multiple: int) -> None:
    """decisions.json: what this run decided from the data and the hardware, in one place."""
    data, cfg = run.data, run.cfg
    decisions = {
        "task": data.task.meta(),  # kind, columns, label format (as the export records them)
        "labels": data.summary.get("labels", []),
        "method": {"name": data.method.name, "reason": data.method.reason},
        # The settings training ran with: the method's own replace some of train.*.
        "train": dataclasses.asdict(run.train),
        "train_settings_set_by": run.setting_keys,
        "metric_for_best": run.metric,
        "validation": data.validation_source,
        "samples": {
            "train": cfg.data.max_train_samples,
            "validation": cfg.data.max_validation_samples,
            "seed": cfg.train.seed,
        },
        "rows": data.summary["rows"],
        "max_length": cfg.data.max_length,
        "truncated_rows": data.summary["truncated_rows"],
        "precision": {"name": run.precision, "reason": run.precision_reason},
        "frozen": frozen,
        "micro_batch": batch,
        "pad_to_multiple_of": pad_multiple,
        "eval_max_tokens_per_batch": run.eval_max_tokens,
        "optimizer_steps": run.total_steps,
        "eval_every_steps": run.eval_interval,
    }
    checkpoint.write_json(run.output_dir / runfolder.DECISIONS, decisions)


def _frozen_parts(t: TrainConfig, task: Task, layer_count: int, on_cpu: bool) -> tuple[bool, int]:
    """(word embeddings fixed, bottom layers fixed): train.freeze_* with their unset defaults
    resolved as TrainConfig documents them."""
    words, layers = t.freeze_word_embeddings, t.freeze_layers
    if layers is None:
        layers = layer_count // 3 if on_cpu and task.freezes_bottom_layers_on_cpu else 0
    return (task.freeze_word_embeddings if words is None else words), layers


def restore(run: Run, folder: Path) -> Progress:
    """Weights, optimizer, schedule, this rank's RNG and the counters of a step folder."""
    state, optimizer_state, scheduler_state, rng_states = checkpoint.load_training_state(folder)
    checkpoint.load_weights(run.accelerator.unwrap_model(run.model), folder / "model.safetensors")
    run.optimizer.load_state_dict(optimizer_state)
    run.scheduler.load_state_dict(scheduler_state)
    checkpoint.restore_rng(rng_states[run.accelerator.process_index])
    scaler_state = checkpoint.load_scaler_state(folder)
    if run.accelerator.scaler is not None and scaler_state is not None:  # fp16 loss scale
        run.accelerator.scaler.load_state_dict(scaler_state)
    progress = Progress(**state["progress"])
    changes = _config_changes(state["config"], config_to_dict(run.cfg))
    _say(
        run.accelerator,
        f"resuming from {folder} at step {progress.step}"
        + (
            f"; the current config wins over the checkpoint's: {'; '.join(changes)}"
            if changes
            else ""
        ),
    )
    return progress


def save_checkpoint(run: Run, progress: Progress) -> None:
    rng_states = gather_object([checkpoint.capture_rng()])  # every rank's generators
    if run.accelerator.is_main_process:
        state = {"progress": dataclasses.asdict(progress), "config": config_to_dict(run.cfg)}
        checkpoint.save_checkpoint(
            run.output_dir,
            progress.step,
            run.accelerator.unwrap_model(run.model),
            run.optimizer,
            run.scheduler,
            rng_states,
            state,
            run.cfg.checkpoint.keep_last,
            run.accelerator.scaler,
        )
    run.accelerator.wait_for_everyone()


def evaluate_and_keep_best(run: Run, progress: Progress) -> Evaluation:
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


def fit(run: Run, progress: Progress, log: tracking.MetricsLog | None) -> Evaluation | None:
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
                        _say(None, f"step {progress.step}: validation {_fmt(record['validation'])}")
                    model.train()
                if record and log is not None:
                    log.write(record)
                    if accelerator.trackers:
                        accelerator.log(tracking.tracker_scalars(record), step=progress.step)
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


def _windows(run: Run, size: int) -> Iterator[tuple[list[dict[str, torch.Tensor]], bool]]:
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


def _target_reached(run: Run, progress: Progress) -> bool:
    target = run.train.stop_at_metric
    if target is None or progress.best_value is None:
        return False
    return not metrics.is_better(run.metric, target, progress.best_value)


def _agreed(accelerator: Accelerator, signum: int) -> bool:
    """Whether any process was asked to stop; all must leave at the same step or DDP hangs."""
    return bool(_summed(accelerator, float(bool(signum)))[0])


def _out_of_memory_message(run: Run, progress: Progress) -> str:
    t = run.train
    budget = (
        f"{run.setting_keys.get('micro_batch_size', 'train.micro_batch_size')} "
        f"(now {t.micro_batch_size})"
        if t.micro_batch_size
        else f"train.max_tokens_per_batch (now {t.max_tokens_per_batch})"
    )
    return (
        f"out of memory at optimizer step {progress.step + 1}: lower {budget} and raise "
        f"train.gradient_accumulation_steps to keep the effective batch, or lower "
        f"train.eval_max_tokens_per_batch (now {run.eval_max_tokens}) if it happened "
        f"while evaluating; checkpoints so far are in {run.output_dir}"
    )


def _nonfinite_message(nonfinite: NonFinite, progress: Progress, run: Run) -> str:
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


def finish(
    run: Run, progress: Progress, log: tracking.MetricsLog | None, final: Evaluation | None
) -> dict:
    """Export the best weights, measure them again unless `final` already did, and write the
    run folder's files."""
    accelerator, task, output_dir = run.accelerator, run.data.task, run.output_dir
    unwrapped = accelerator.unwrap_model(run.model)
    validation, evaluation = run.data.validation, final
    if evaluation is None and validation is not None:
        if checkpoint.best_weights(output_dir).exists():
            checkpoint.load_weights(unwrapped, checkpoint.best_weights(output_dir))
        # Measured again on the exported weights, so metrics.json describes exactly model/.
        evaluation = run.evaluate(validation)
    if evaluation is not None:
        _require_finite(evaluation, progress)
        # What the task learns from validation after training (multi-label thresholds, a
        # temperature): the test split, the export, predict and serve use it.
        task, evaluation = task.fitted(validation, evaluation, unwrapped)
        run.data.task = task
    test = run.evaluate(run.data.test) if run.data.test is not None else None
    result: dict = {"metric_for_best": run.metric}
    if evaluation is None:  # nothing held out: the last step's weights are exported
        result["best_step"] = progress.step
        if test is not None:
            _require_finite(test, progress)
    else:
        result.update({"validation": evaluation.scores, "best_step": progress.best_step})
        if evaluation.details:
            result["validation_details"] = evaluation.details
    if test is not None:
        result["test"] = test.scores
        if test.details:
            result["test_details"] = test.details
    totals = torch.tensor([progress.samples, progress.real_tokens], device=accelerator.device)
    samples, real_tokens = (int(x) for x in accelerator.reduce(totals, reduction="sum").tolist())
    seconds = max(progress.train_seconds, 1e-9)
    lengths = np.asarray(run.data.train["length"])
    if "majority_baseline" in run.data.summary:
        result["baseline"] = {"majority_class": run.data.summary["majority_baseline"]}
    if progress.before_training is not None:
        result["baseline"] = {"before_training": progress.before_training}
    result.update(
        {
            "train": {
                "optimizer_steps": progress.step,
                "epochs": round(
                    progress.epoch + progress.micro_in_epoch / max(len(run.sampler), 1), 4
                ),
                "samples": samples,
                "real_tokens": real_tokens,
                "seconds": round(progress.train_seconds, 2),
                "samples_per_second": round(samples / seconds, 2),
                "real_tokens_per_second": round(real_tokens / seconds, 1),
                "padding_share": 0.0
                if task.packs
                else round(padding_share(lengths, run.sampler), 4),
                "skipped_nonfinite_steps": progress.skipped_nonfinite,
                "processes": accelerator.num_processes,
                "steps_per_process": gather_object([progress.step]),
            },
            "data": run.data.summary,
            "precision": run.precision,
            "precision_reason": run.precision_reason,
            "hardware": hardware.describe(),
        }
    )
    if log is not None:  # the main process
        meta = {**task.meta(), "max_length": run.cfg.data.max_length, "base_model": run.cfg.model}
        if run.cfg.lora.r and run.cfg.lora.merge:
            unwrapped = unwrapped.merge_and_unload()  # a plain transformers model again
        if getattr(unwrapped.config, "use_cache", None) is False:
            unwrapped.config.use_cache = True  # generation from the exported folder uses it
        checkpoint.export_model(unwrapped, run.tokenizer, output_dir / runfolder.MODEL, meta)
        # What validation taught the task after training (thresholds, a temperature) joins the
        # decisions made before it.
        decisions = runfolder.read_decisions(output_dir)
        checkpoint.write_json(output_dir / runfolder.DECISIONS, {**decisions, "task": task.meta()})
        tracking.plot_training_curves(log.records, run.metric, output_dir / "training_curves.png")
        if evaluation is not None:
            task.plots(validation, evaluation, output_dir)
        checkpoint.write_json(
            output_dir / runfolder.METRICS, result
        )  # last: marks the run finished
    accelerator.wait_for_everyone()
    for tracker in accelerator.trackers:  # closes the event files (end_training would also
        tracker.finish()  # tear down the process group, on the main process only)
    return result


def _require_finite(evaluation: Evaluation, progress: Progress) -> None:
    if not evaluation.finite:
        raise UserError(
            f"the model's outputs are NaN/inf after step {progress.step} and no evaluation was "
            f"finite, so nothing is exported; lower train.learning_rate or check the data"
        )


def _say(accelerator: Accelerator | None, message: str) -> None:
    """A status line on stderr, from the main process: stdout carries only the run's result, so
    `tunesmith train ... | jq` works."""
    main = accelerator.is_main_process if accelerator else os.environ.get("RANK", "0") == "0"
    if main:
        tqdm.write(f"tunesmith: {message}", file=sys.stderr)  # above a progress bar, not through it


def _fmt(scores: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in scores.items())
