"""Step checkpoints of a run in progress: saving one, choosing the one to resume from, and
restoring weights, optimizer, schedule, RNG and counters from it.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from accelerate.utils import gather_object

from tunesmith.config import Config, config_to_dict
from tunesmith.errors import UserError
from tunesmith.runfolder import checkpoint, layout
from tunesmith.training.state import Progress, TrainingRun, say


def resume_point(cfg: Config, output_dir: Path) -> Path | None:
    """The step folder to continue from, or None for a fresh run (whose output_dir is checked)."""
    if cfg.resume is None:
        layout.check_output_dir(output_dir, cfg.overwrite)
        return None
    if (output_dir / layout.METRICS).exists():
        raise UserError(f"output_dir={output_dir} holds a finished run; there is nothing to resume")
    if cfg.resume == "auto":
        found = checkpoint.find_resumable(output_dir, functools.partial(say, None))
        if found is None:
            say(None, f"no intact checkpoint in {output_dir}; starting from scratch")
            layout.check_output_dir(output_dir, overwrite=True)  # a file, or not creatable
        return found
    folder = Path(cfg.resume)
    problem = checkpoint.verify(folder)
    if problem:
        raise UserError(
            f"resume={folder}: {problem}; use resume=auto to take the newest intact one"
        )
    return folder


def restore(run: TrainingRun, folder: Path) -> Progress:
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
    say(
        run.accelerator,
        f"resuming from {folder} at step {progress.step}"
        + (
            f"; the current config wins over the checkpoint's: {'; '.join(changes)}"
            if changes
            else ""
        ),
    )
    return progress


def _config_changes(saved: dict, current: dict, prefix: str = "") -> list[str]:
    changes = []
    for key, value in current.items():
        old = saved.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            changes += _config_changes(old, value, f"{prefix}{key}.")
        elif old != value and key not in ("resume", "overwrite"):
            changes.append(f"{prefix}{key}: {old!r} -> {value!r}")
    return changes


def save_checkpoint(run: TrainingRun, progress: Progress) -> None:
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
