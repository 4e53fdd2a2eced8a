"""The training recipe, top to bottom: setup (`build`) -> resume (`restore`, on --resume) ->
the loop (`fit`) -> `finish`. One plain PyTorch loop on Accelerate: the same code runs on one
CPU, one GPU or many processes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.config import Config
from tunesmith.errors import UserError
from tunesmith.runfolder import layout
from tunesmith.runfolder.log import MetricsLog
from tunesmith.training.finish import finish
from tunesmith.training.loop import fit
from tunesmith.training.resume import restore, resume_point
from tunesmith.training.setup import build
from tunesmith.training.state import Progress, TrainingRun, fmt, say


def train(cfg: Config) -> dict:
    """Fine-tune as `cfg` says; returns what `output_dir/metrics.json` holds."""
    resume_from = resume_point(cfg, Path(cfg.output_dir))
    run = build(cfg, fresh=resume_from is None)
    progress = restore(run, resume_from) if resume_from else Progress()
    if run.data.task.evaluate_before_training and progress.step == 0:
        progress.before_training = run.evaluate(run.data.validation).scores
        say(run.accelerator, f"before training: {fmt(progress.before_training)}")
    log = None
    if run.accelerator.is_main_process:
        log = MetricsLog(run.output_dir / layout.METRICS_LOG, keep_through_step=progress.step)
    try:
        return finish(run, progress, log, fit(run, progress, log))
    except torch.OutOfMemoryError:
        raise UserError(_out_of_memory_message(run, progress)) from None


def _out_of_memory_message(run: TrainingRun, progress: Progress) -> str:
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
