"""Everything a run is built from, once, from a validated Config: the accelerator and precision,
the data and model with the method's settings, what is frozen, the batches, the optimizer and
schedule; a fresh run also lays out output_dir and records its decisions.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from tunesmith.compute import hardware
from tunesmith.compute.batching import TokenBudgetBatchSampler
from tunesmith.compute.inference import model_inputs
from tunesmith.compute.kernels import train_attention_core_in_fp32, use_fast_dropout
from tunesmith.config import Config, TrainConfig, config_to_dict, save_config
from tunesmith.errors import UserError
from tunesmith.models import add_lora, freeze, layer_count, load_tokenizer
from tunesmith.preprocess import PreparedData, prepare_data
from tunesmith.runfolder import checkpoint, layout
from tunesmith.runfolder.log import flat_config
from tunesmith.tasks import Task, few_shot
from tunesmith.tasks.few_shot import Method
from tunesmith.training.optim import build_optimizer, build_scheduler
from tunesmith.training.state import TrainingRun, eval_max_tokens, say

# A target of rows per step is met when within this share of it: 3.99 rows a micro-batch make 2
# micro-batches a step for a target of 8, not 3.
ROWS_PER_STEP_SLACK = 0.05


def build(cfg: Config, fresh: bool) -> TrainingRun:
    """Data, model, optimizer and schedule on Accelerate; a fresh run also lays out output_dir.
    The steps keep the order the RNG is drawn in: seed, tokenizer, data, model, few-shot head,
    LoRA, sampler, loader, optimizer, prepare."""
    t = cfg.train
    accelerator, precision, precision_reason = start_accelerator(cfg)
    set_seed(t.seed)
    tokenizer = load_tokenizer(cfg.model)
    prepared = prepare_data(cfg, tokenizer, accelerator)
    task, method = prepared.task, prepared.method
    metric = metric_for_best(t, task)
    model = task.load_model(cfg.model, t.attention_dropout)
    # Lengths in multiples of 8 suit GPU tensor cores; on CPUs the extra padding cost more
    # (8% of throughput on MiniLM) than the rounder shapes gained.
    pad_multiple = 1 if accelerator.device.type == "cpu" else 8
    if method.few_shot:
        t = apply_few_shot(cfg, t, model, prepared, tokenizer, accelerator, pad_multiple, fresh)
    model, frozen = model_to_train(cfg, t, model, task, accelerator, precision)
    open_output_dir(cfg, t, accelerator, fresh)
    sampler, train_loader = make_loader(t, prepared, task, tokenizer, pad_multiple)
    t, rows_per_step = resolve_accumulation(t, sampler, task, accelerator.num_processes)
    optimizer = make_optimizer(cfg, t, model, method)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch, total_steps, scheduler = make_schedule(t, optimizer, train_loader)
    batch = announce(
        cfg,
        t,
        accelerator,
        prepared,
        precision,
        precision_reason,
        frozen,
        rows_per_step,
        total_steps,
    )
    eval_interval = t.eval_every_steps or (
        math.ceil(steps_per_epoch / t.evals_per_epoch) if t.evals_per_epoch else None
    )
    run = TrainingRun(
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
        record_decisions(run, frozen, batch, rows_per_step, pad_multiple)
    return run


def start_accelerator(cfg: Config) -> tuple[Accelerator, str, str]:
    """A fresh Accelerator in the precision chosen for this hardware: (it, the precision, why)."""
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
        say(
            accelerator,
            f"{sharded[0]} in Accelerate needs GPUs; these CPU processes run plain "
            f"data parallel (DDP over gloo) instead",
        )
    return accelerator, precision, precision_reason


def metric_for_best(t: TrainConfig, task: Task) -> str:
    """train.metric_for_best, or the task's default; one of the task's metrics."""
    metric = t.metric_for_best or task.default_metric
    if metric not in task.metric_names:
        raise UserError(
            f"train.metric_for_best={metric} is not one of {', '.join(task.metric_names)}"
        )
    return metric


def apply_few_shot(
    cfg: Config,
    t: TrainConfig,
    model: torch.nn.Module,
    prepared: PreparedData,
    tokenizer: PreTrainedTokenizerBase,
    accelerator: Accelerator,
    pad_multiple: int,
    fresh: bool,
) -> TrainConfig:
    """The few-shot method's mean-pooling layer and, on a fresh run, its head fitted on the
    embeddings; returns the settings the method trains with."""
    task = prepared.task
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
        say(
            accelerator,
            f"few-shot: head fitted on the embeddings of {len(prepared.train)} rows "
            f"(training accuracy {fitted:.3f}); now end to end for few_shot.epochs="
            f"{t.epochs:g} (train.epochs and train.learning_rate are fine-tune's)",
        )
    return t


def model_to_train(
    cfg: Config,
    t: TrainConfig,
    model: torch.nn.Module,
    task: Task,
    accelerator: Accelerator,
    precision: str,
) -> tuple[torch.nn.Module, str]:
    """LoRA adapters, or the model with train.freeze_* applied; then the CPU speed paths.
    Returns the model and what is frozen, in words."""
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
        say(
            accelerator,
            f"{type(base).__name__} takes no position_ids, so packed samples attend "
            f"to each other; set lm.packing=false for exact per-sample attention",
        )
    if accelerator.device.type == "cpu":
        use_fast_dropout(model)
        if precision == "bf16":
            train_attention_core_in_fp32(base)
    return model, frozen


def open_output_dir(cfg: Config, t: TrainConfig, accelerator: Accelerator, fresh: bool) -> None:
    """A fresh run's output_dir laid out with its config.yaml; then the trackers, if any."""
    if accelerator.is_main_process and fresh:
        checkpoint.prepare_output_dir(Path(cfg.output_dir))
        save_config(cfg, Path(cfg.output_dir) / layout.CONFIG)
    accelerator.wait_for_everyone()
    if t.report_to:  # event files in output_dir/tensorboard
        accelerator.init_trackers("tensorboard", flat_config(config_to_dict(cfg)))


def make_loader(
    t: TrainConfig,
    prepared: PreparedData,
    task: Task,
    tokenizer: PreTrainedTokenizerBase,
    pad_multiple: int,
) -> tuple[TokenBudgetBatchSampler, DataLoader]:
    """The length-bucketed token-budget sampler and the training loader that draws from it."""
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
    return sampler, train_loader


def resolve_accumulation(
    t: TrainConfig, sampler: TokenBudgetBatchSampler, task: Task, processes: int
) -> tuple[TrainConfig, float]:
    """train.gradient_accumulation_steps, or when unset, for a classifier, the fewest micro-batches
    that reach train.rows_per_step rows a step on average (within ROWS_PER_STEP_SLACK) over the
    first epoch's batches of all processes; a resume gets the same count, as it gets the same
    batches. Returns the settings and the rows a step then sees."""
    batches = sampler.batches()
    rows_per_micro = sum(len(b) for b in batches) / max(1, len(batches)) * processes
    steps = t.gradient_accumulation_steps
    if steps is None:
        needed = t.rows_per_step / rows_per_micro if task.accumulates_to_rows else 1
        steps = max(1, math.ceil((1 - ROWS_PER_STEP_SLACK) * needed))
        t = dataclasses.replace(t, gradient_accumulation_steps=steps)
    return t, rows_per_micro * steps


def make_optimizer(
    cfg: Config, t: TrainConfig, model: torch.nn.Module, method: Method
) -> torch.optim.Optimizer:
    """AdamW; the few-shot method gives its fitted head a learning rate of its own."""
    head_rate = cfg.few_shot.head_learning_rate if method.few_shot else None
    return build_optimizer(model, t.learning_rate, t.weight_decay, head_rate)


def make_schedule(
    t: TrainConfig, optimizer: torch.optim.Optimizer, train_loader: DataLoader
) -> tuple[int, int, torch.optim.lr_scheduler.LambdaLR]:
    """(optimizer steps per epoch, optimizer steps in all, the learning-rate schedule over
    them)."""
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    # Not passed to accelerator.prepare: it would step the schedule once per process per step.
    scheduler = build_scheduler(optimizer, total_steps, t.warmup_ratio)
    return steps_per_epoch, total_steps, scheduler


def announce(
    cfg: Config,
    t: TrainConfig,
    accelerator: Accelerator,
    prepared: PreparedData,
    precision: str,
    precision_reason: str,
    frozen: str,
    rows_per_step: float,
    total_steps: int,
) -> str:
    """The startup line: what trains, how and for how long (after a warning of truncated rows,
    if any). Returns the micro-batch in words, which decisions.json records too."""
    task, method = prepared.task, prepared.method
    batch = (
        f"{t.micro_batch_size} rows"
        if t.micro_batch_size
        else f"<= {t.max_tokens_per_batch} tokens"
    )
    length = prepared.max_length
    truncated = {k: v for k, v in prepared.summary["truncated_rows"].items() if v}
    if length.rows_cut is not None:  # auto measured the rows and chose
        cut = (
            f"training rows longer: {length.rows_cut:.0%}, windowed whole"
            if task.windowed
            else f"training rows cut: {length.rows_cut:.0%}, their tokens cut: "
            f"{length.tokens_cut:.0%}{f' ({cfg.data.truncation} kept)' if truncated else ''}"
        )
        say(
            accelerator,
            f"data.max_length=auto chose {length.max_length} tokens ({length.reason}); {cut}; "
            f"data.max_length=N forces N",
        )
    if task.windowed:
        rows, windows = prepared.summary["rows"], prepared.summary["samples"]
        say(
            accelerator,
            f"data.long_texts=chunk: texts {rows} in windows {windows} of <= {length.max_length} "
            f"tokens, each repeating {task.stride} of the one before; a text's answer is its "
            f"windows' {task.pooling} logits",
        )
    elif truncated:
        say(
            accelerator,
            f"rows cut to data.max_length={length.max_length} by truncation: "
            f"{truncated}; raise data.max_length to keep more of each text",
        )
    engine = f" ({accelerator.distributed_type.value})" if accelerator.num_processes > 1 else ""
    how = f"method {method.name} ({method.reason}); " if task.kind == "classification" else ""
    unlabelled = prepared.summary.get("rows_without_labels", {}).get("train")
    none = f" ({unlabelled} training rows carry none of the labels)" if unlabelled else ""
    say(
        accelerator,
        f"{task.describe()}, rows {prepared.summary['rows']}{none}; {how}"
        f"precision {precision} ({precision_reason}); frozen: {frozen}; "
        f"micro-batch {batch} x {t.gradient_accumulation_steps} accumulation x "
        f"{accelerator.num_processes} process(es){engine} = {rows_per_step:.1f} rows per "
        f"optimizer step on average; {total_steps} optimizer steps",
    )
    return batch


def record_decisions(
    run: TrainingRun, frozen: str, batch: str, rows_per_step: float, pad_multiple: int
) -> None:
    """decisions.json: what this run decided from the data and the hardware, in one place."""
    data, cfg = run.data, run.cfg
    decisions = {
        "task": data.task.meta(),  # kind, columns, label format (as the export records them)
        "labels": data.summary.get("labels", []),
        # Per class (multi-label: each label's positive weight) in the loss; null: all 1.
        "class_weights": _named_weights(data.task),
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
        "max_length": {
            "value": data.max_length.max_length,
            "reason": data.max_length.reason,
            "train_rows_cut": _rounded(data.max_length.rows_cut),
            "train_tokens_cut": _rounded(data.max_length.tokens_cut),
        },
        "truncated_rows": data.summary["truncated_rows"],
        # Chunked: each split's windows (training trains on every one) and how they were made.
        "long_texts": _long_texts(data),
        "precision": {"name": run.precision, "reason": run.precision_reason},
        "frozen": frozen,
        "micro_batch": batch,
        "rows_per_step": round(rows_per_step, 2),
        "pad_to_multiple_of": pad_multiple,
        "eval_max_tokens_per_batch": run.eval_max_tokens,
        "optimizer_steps": run.total_steps,
        "eval_every_steps": run.eval_interval,
    }
    checkpoint.write_json(run.output_dir / layout.DECISIONS, decisions)


def _long_texts(data: PreparedData) -> dict[str, Any]:
    task = data.task
    if not task.windowed:
        return {"mode": "truncate"}
    return {
        "mode": "chunk",
        "stride": task.stride,
        "pooling": task.pooling,
        "windows": data.summary["samples"],
    }


def _rounded(share: float | None) -> float | None:
    return None if share is None else round(share, 4)


def _named_weights(task: Task) -> dict[str, float] | None:
    weights = getattr(task, "class_weights", None)  # classifiers have them
    return None if weights is None else dict(zip(task.labels.names, weights, strict=True))


def _frozen_parts(t: TrainConfig, task: Task, layer_count: int, on_cpu: bool) -> tuple[bool, int]:
    """(word embeddings fixed, bottom layers fixed): train.freeze_* with their unset defaults
    resolved as TrainConfig documents them."""
    words, layers = t.freeze_word_embeddings, t.freeze_layers
    if layers is None:
        layers = layer_count // 3 if on_cpu and task.freezes_bottom_layers_on_cpu else 0
    return (task.freeze_word_embeddings if words is None else words), layers
