"""The end of a run: the best weights exported and measured, the task fitted on validation,
the test split, and the run folder's files with `metrics.json` last.
"""

from __future__ import annotations

import numpy as np
import torch
from accelerate.utils import gather_object

from tunesmith.compute import hardware
from tunesmith.compute.batching import padding_share
from tunesmith.errors import UserError
from tunesmith.metrics import Evaluation
from tunesmith.runfolder import checkpoint, layout, plots
from tunesmith.runfolder.log import MetricsLog
from tunesmith.training.state import Progress, TrainingRun, say


def finish(
    run: TrainingRun, progress: Progress, log: MetricsLog | None, final: Evaluation | None
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
        if evaluation.note:
            say(accelerator, evaluation.note)
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
        meta = {
            **task.meta(),
            "max_length": run.data.max_length.max_length,
            "base_model": run.cfg.model,
        }
        if run.cfg.lora.r and run.cfg.lora.merge:
            unwrapped = unwrapped.merge_and_unload()  # a plain transformers model again
        if getattr(unwrapped.config, "use_cache", None) is False:
            unwrapped.config.use_cache = True  # generation from the exported folder uses it
        checkpoint.export_model(unwrapped, run.tokenizer, output_dir / layout.MODEL, meta)
        # What validation taught the task after training (thresholds, a temperature) joins the
        # decisions made before it.
        decisions = layout.read_decisions(output_dir)
        checkpoint.write_json(output_dir / layout.DECISIONS, {**decisions, "task": task.meta()})
        plots.plot_training_curves(log.records, run.metric, output_dir / "training_curves.png")
        if evaluation is not None:
            task.plots(validation, evaluation, output_dir)
        checkpoint.write_json(output_dir / layout.METRICS, result)  # last: marks the run finished
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
