"""What every part of training shares: the run that setup builds once (`TrainingRun`), the
loop's counters that a checkpoint saves (`Progress`), evaluation of a split over all processes,
and the status lines on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from tunesmith.compute import hardware
from tunesmith.compute.batching import TokenBudgetBatchSampler
from tunesmith.config import Config, TrainConfig
from tunesmith.metrics import Evaluation
from tunesmith.preprocess import PreparedData
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
class TrainingRun:
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


def say(accelerator: Accelerator | None, message: str) -> None:
    """A status line on stderr, from the main process: stdout carries only the run's result, so
    `tunesmith train ... | jq` works."""
    main = accelerator.is_main_process if accelerator else os.environ.get("RANK", "0") == "0"
    if main:
        tqdm.write(f"tunesmith: {message}", file=sys.stderr)  # above a progress bar, not through it


def fmt(scores: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in scores.items())
