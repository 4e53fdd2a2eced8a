"""The training engine: build the data, model and optimizer from a validated Config, then run one
plain PyTorch loop on Accelerate. The same code runs on one CPU, one GPU or many processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
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
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from tunesmith import checkpoint, data, hardware, metrics, tracking
from tunesmith.batching import TokenBudgetBatchSampler, padding_share
from tunesmith.config import Config, save_config
from tunesmith.errors import UserError
from tunesmith.models import load_sequence_classifier, load_tokenizer
from tunesmith.optim import build_optimizer, build_scheduler
from tunesmith.predict import infer_logits, model_inputs
from tunesmith.tasks import SequenceClassification
from tunesmith.tasks.classification import encode_labels, infer_labels


@dataclass
class PreparedData:
    task: SequenceClassification
    train: Dataset  # tokenized, with `labels` and `length`
    validation: Dataset
    test: Dataset | None
    summary: dict


def default_cache_dir() -> Path:
    """~/.cache/tunesmith, or $TUNESMITH_CACHE_DIR."""
    return Path(os.environ.get("TUNESMITH_CACHE_DIR", Path.home() / ".cache" / "tunesmith"))


def _cache_key(ds: Dataset, tokenizer: PreTrainedTokenizerBase, *parts: object) -> str:
    # The tokenizer's own JSON, minus the truncation/padding state that each call rewrites.
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec.pop("truncation", None), spec.pop("padding", None)
    tokenizer_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    text = "|".join([ds._fingerprint, tokenizer_hash, *map(str, parts)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tokenize_cached(
    ds: Dataset, task: SequenceClassification, tokenizer, max_length: int, cache_dir: Path
) -> tuple[Dataset, bool]:
    """Tokenize with `Dataset.map(batched=True)`; a second run with the same data, tokenizer and
    settings reads the Arrow file instead. Returns (dataset, whether it came from the cache)."""
    key = _cache_key(ds, tokenizer, max_length, task.columns)
    cache_file = cache_dir / f"{key}.arrow"
    hit = cache_file.exists()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenized = ds.map(
        task.tokenize_function(tokenizer, max_length),
        batched=True,
        remove_columns=[c for c in ds.column_names if c != "labels"],
        cache_file_name=str(cache_file),
        new_fingerprint=key,
        load_from_cache_file=True,
        desc="tokenizing",
    )
    return tokenized, hit


def prepare_data(
    cfg: Config, tokenizer: PreTrainedTokenizerBase, accelerator: Accelerator
) -> PreparedData:
    """Raw files -> checked columns and labels -> held-out split -> tokenized, cached splits."""
    d = cfg.data
    splits = data.load_splits(d)
    source = {name: getattr(d, name) or f"data.dataset={d.dataset}[{name}]" for name in splits}
    columns = data.detect_columns(splits["train"], d, source["train"])
    for name, ds in splits.items():
        data.detect_columns(ds, d, source[name])  # the same columns must exist in every split
        splits[name] = data.check_texts(ds, columns, source[name], d.drop_empty)
    labels = infer_labels(
        splits["train"], columns.label, cfg.task, cfg.label_names, source["train"]
    )
    for name in splits:
        splits[name] = encode_labels(splits[name], columns.label, labels, source[name])
    if "validation" not in splits:
        stratify = "labels" if labels.kind == "classification" else None
        try:
            held = splits["train"].train_test_split(
                test_size=d.validation_fraction, seed=cfg.train.seed, stratify_by_column=stratify
            )
        except ValueError:  # a class too rare to stratify: fall back to a plain seeded split
            held = splits["train"].train_test_split(
                test_size=d.validation_fraction, seed=cfg.train.seed
            )
        splits["train"], splits["validation"] = held["train"], held["test"]
    for name, limit in (("train", d.max_train_samples), ("validation", d.max_validation_samples)):
        if limit is not None and len(splits[name]) > limit:
            splits[name] = splits[name].shuffle(seed=cfg.train.seed).select(range(limit))

    task = SequenceClassification(columns, labels)
    cache_dir = Path(d.cache_dir or default_cache_dir() / "tokenized").expanduser()
    tokenized, hits = {}, []
    with accelerator.main_process_first():
        for name, ds in splits.items():
            tokenized[name], hit = tokenize_cached(ds, task, tokenizer, d.max_length, cache_dir)
            hits.append(hit)
    summary = {
        "columns": {"text": columns.text, "text_pair": columns.text_pair, "label": columns.label},
        "task": labels.kind,
        "labels": list(labels.names),
        "rows": {name: len(ds) for name, ds in tokenized.items()},
        "tokenization": "cached" if all(hits) else "computed",
    }
    if labels.kind == "classification":
        summary["majority_baseline"] = metrics.majority_baseline(
            np.asarray(tokenized["train"]["labels"]),
            np.asarray(tokenized["validation"]["labels"]),
            labels.num_labels,
        )
    return PreparedData(
        task, tokenized["train"], tokenized["validation"], tokenized.get("test"), summary
    )


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


def train(cfg: Config) -> dict:
    """Fine-tune as `cfg` says; returns what `output_dir/metrics.json` holds."""
    t = cfg.train
    checkpoint.check_output_dir(Path(cfg.output_dir), cfg.overwrite)
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
    output_dir = Path(cfg.output_dir)
    if accelerator.is_main_process:
        checkpoint.prepare_output_dir(output_dir, cfg.overwrite)
        save_config(cfg, output_dir / "config.yaml")
    log = tracking.MetricsLog(output_dir / "metrics.jsonl")

    collate = DataCollatorWithPadding(tokenizer)
    lengths = np.asarray(prepared.train["length"])
    sampler = TokenBudgetBatchSampler(
        lengths, t.max_tokens_per_batch, shuffle=True, seed=t.seed, batch_size=t.micro_batch_size
    )
    train_loader = DataLoader(
        model_inputs(prepared.train), batch_sampler=sampler, collate_fn=collate
    )
    optimizer = build_optimizer(model, t.learning_rate, t.weight_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / t.gradient_accumulation_steps)
    total_steps = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    # Not passed to accelerator.prepare: it would step the schedule once per process per step.
    scheduler = build_scheduler(optimizer, total_steps, t.warmup_ratio)
    batch_desc = (
        f"{t.micro_batch_size} rows"
        if t.micro_batch_size
        else f"<= {t.max_tokens_per_batch} tokens"
    )
    accelerator.print(
        f"tunesmith: {task.labels.kind}, rows {prepared.summary['rows']}, "
        f"labels {list(task.labels.names)}; "
        f"precision {precision} ({precision_reason}); micro-batch {batch_desc} x "
        f"{t.gradient_accumulation_steps} accumulation x {accelerator.num_processes} process(es); "
        f"{total_steps} optimizer steps"
    )

    step, epoch, best_value, best_state, best_step, stale = 0, 0, None, None, 0, 0
    running_loss, running_micro, samples, real_tokens, train_seconds = 0.0, 0, 0, 0, 0.0
    progress = tqdm(total=total_steps, disable=not accelerator.is_main_process, desc="training")
    done = False
    while not done:
        sampler.set_epoch(epoch)
        model.train()
        tick = time.perf_counter()
        for batch in train_loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and t.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            running_loss += loss.item()
            running_micro += 1
            samples += batch["input_ids"].shape[0]
            real_tokens += int(batch["attention_mask"].sum())
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            progress.update(1)
            end_of_epoch = step % steps_per_epoch == 0
            evaluate_now = step == total_steps or (
                step % t.eval_every_steps == 0 if t.eval_every_steps else end_of_epoch
            )
            record: dict = {}
            if step % t.logging_steps == 0 or evaluate_now:
                lr = scheduler.get_last_lr()[0]
                record = {
                    "step": step,
                    "epoch": round(step / steps_per_epoch, 4),
                    "loss": running_loss / running_micro,
                    "learning_rate": lr,
                }
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                running_loss, running_micro = 0.0, 0
            if evaluate_now:
                train_seconds += time.perf_counter() - tick
                scores, _ = evaluate_split(
                    accelerator,
                    model,
                    task,
                    prepared.validation,
                    collate,
                    t.eval_max_tokens_per_batch,
                )
                record["validation"] = scores
                if metrics.is_better(metric, scores[metric], best_value):
                    best_value, best_step, stale = scores[metric], step, 0
                    # A CPU copy of the best weights: the export must be the best, not the last.
                    best_state = {
                        k: v.detach().to("cpu", copy=True)
                        for k, v in accelerator.unwrap_model(model).state_dict().items()
                    }
                else:
                    stale += 1
                progress.write(f"step {step}: validation {_fmt(scores)}")
                model.train()
                tick = time.perf_counter()
            if record and accelerator.is_main_process:
                log.write(record)
            early_stop = t.early_stopping_patience is not None and stale > t.early_stopping_patience
            if step >= total_steps or early_stop:
                done = True
                break
        else:
            train_seconds += time.perf_counter() - tick
        epoch += 1
    progress.close()

    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:
        unwrapped.load_state_dict(best_state)
    # Measured again on the exported weights, so metrics.json describes exactly model/.
    validation, val_logits = evaluate_split(
        accelerator, model, task, prepared.validation, collate, t.eval_max_tokens_per_batch
    )
    result = {"validation": validation, "best_step": best_step, "metric_for_best": metric}
    if prepared.test is not None:
        result["test"], _ = evaluate_split(
            accelerator, model, task, prepared.test, collate, t.eval_max_tokens_per_batch
        )
    samples, real_tokens = (
        int(x)
        for x in accelerator.reduce(
            torch.tensor([samples, real_tokens], device=accelerator.device), reduction="sum"
        ).tolist()
    )
    result.update(
        {
            "baseline": {"majority_class": prepared.summary.get("majority_baseline")},
            "train": {
                "optimizer_steps": step,
                "epochs": round(step / steps_per_epoch, 4),
                "samples": samples,
                "real_tokens": real_tokens,
                "seconds": round(train_seconds, 2),
                "samples_per_second": round(samples / max(train_seconds, 1e-9), 2),
                "real_tokens_per_second": round(real_tokens / max(train_seconds, 1e-9), 1),
                "padding_share": round(padding_share(lengths, sampler.batches()), 4),
                "processes": accelerator.num_processes,
            },
            "data": prepared.summary,
            "precision": precision,
            "precision_reason": precision_reason,
            "hardware": hardware.describe(),
        }
    )
    if accelerator.is_main_process:
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
