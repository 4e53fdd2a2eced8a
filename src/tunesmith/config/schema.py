"""The config's schema: the typed dataclasses, the allowed values of their string fields, and
`field_docs`, which reads each field's documentation from the comment right above it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

LANGUAGE_MODEL_TASKS = ("masked-lm", "causal-lm")
TASKS = ("auto", "classification", "regression", *LANGUAGE_MODEL_TASKS)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
METHODS = ("auto", "fine-tune", "few-shot")  # train.method; tasks/few_shot.py
# Inference adds dynamic int8 linear layers, on CPUs only (hardware.inference_placement).
INFERENCE_PRECISIONS = (*PRECISIONS, "int8")
TRUNCATIONS = ("head", "tail", "head+tail")  # data.truncation; tasks/truncation.py
LONG_TEXTS = ("truncate", "chunk")  # data.long_texts; chunk: tasks/windows.py
POOLINGS = ("mean", "max")  # data.pooling: a chunked text's answer from its windows' logits


@dataclass
class DataConfig:
    # Training data: a CSV/TSV/JSON/JSONL/Parquet file or a folder written by `save_to_disk`.
    train: str | None = None
    # Validation data (same formats); held out of `train` when missing and no dataset split has it.
    validation: str | None = None
    # Optional test data, evaluated once at the end with the exported model.
    test: str | None = None
    # A dataset name that `datasets.load_dataset` resolves (Hub name or local folder).
    dataset: str | None = None
    # The dataset's configuration, e.g. `mrpc` for `glue`.
    dataset_config: str | None = None
    # First text column; detected (text, sentence, sentence1, question, premise, ...) when unset.
    text_column: str | None = None
    # Second text column for sentence pairs; detected when unset, `none` for single sentences.
    text_pair_column: str | None = None
    # Label column; detected (label, labels, sentiment, score, target, ...) when unset. A column
    # of lists (JSON lists in a CSV too) means several labels per text (multi-label).
    label_column: str | None = None
    # Multi-label from a delimited string column, e.g. `;` for `billing;urgent`.
    label_delimiter: str | None = None
    # Multi-label from 0/1 columns, one per label, e.g. [toxic, obscene, threat].
    label_columns: list[str] | None = None
    # Share of train held out for validation when no validation split exists (stratified).
    validation_fraction: float = 0.1
    # Tokens per example after truncation. auto: 128 where the training rows fit in it; for
    # longer rows the shortest length (in steps of 64) holding 90% of them whole, up to the
    # model's positions, and on a CPU up to 256 (see docs/data.md). Language models: 128.
    max_length: int | str = "auto"
    # Which tokens of a longer text a classifier keeps: head (the start), tail (the end), or
    # head+tail (its first quarter and last three quarters, where reviews and articles often
    # conclude). A pair cuts its longer text first. Prediction cuts as training did.
    truncation: str = "head"
    # What a classifier does with a text longer than max_length: truncate it (as data.truncation
    # says), or chunk it into overlapping windows of max_length tokens, train on every window
    # with the text's labels, and answer once per text from its windows pooled (data.pooling).
    long_texts: str = "truncate"
    # Chunk: tokens each window repeats from the one before (the tokenizer's `stride`), so text
    # cut at a window's edge is whole in the next. Unset: a quarter of max_length.
    stride: int | None = None
    # Chunk: a text's logits from its windows' logits: their mean, or max (each class's
    # strongest window) (see docs/data.md).
    pooling: str = "mean"
    # Drop rows whose text is empty or null instead of stopping with their row numbers.
    drop_empty: bool = False
    # Use at most this many training rows (a seeded sample); all rows when unset.
    max_train_samples: int | None = None
    # Use at most this many validation rows (a seeded sample); all rows when unset.
    max_validation_samples: int | None = None
    # Text encoding of CSV/TSV files.
    encoding: str = "utf-8"
    # What to do with bytes that are not valid in `encoding`: strict, replace or ignore.
    encoding_errors: str = "strict"
    # Where tokenized datasets are cached; $TUNESMITH_CACHE_DIR or ~/.cache/tunesmith when unset.
    cache_dir: str | None = None


@dataclass
class TrainConfig:
    # Passes over the training data (fractions allowed); ignored when max_steps is set.
    epochs: float = 3.0
    # Stop after this many optimizer steps; overrides epochs.
    max_steps: int | None = None
    # Peak learning rate of AdamW: above the course's 5e-5, which learnt less in one epoch with
    # these token-budget batches and no more in three (see docs/defaults.md).
    learning_rate: float = 8e-5
    # Decoupled weight decay, not applied to biases and LayerNorm weights.
    weight_decay: float = 0.01
    # Share of optimizer steps spent warming the learning rate up linearly from 0.
    warmup_ratio: float = 0.1
    # Examples per micro-batch; when unset, batches are filled up to max_tokens_per_batch.
    micro_batch_size: int | None = None
    # Token budget of a length-bucketed micro-batch (padded tokens counted).
    max_tokens_per_batch: int = 512
    # Token-budget batches cut from one shuffled, length-sorted pool of rows: more batches per
    # pool means less padding, fewer means more varied batches.
    bucket_pool_batches: int = 4
    # Micro-batches summed into one optimizer step; unset: classifiers take as many as hold
    # train.rows_per_step rows on average (1 where one micro-batch does), language models 1.
    gradient_accumulation_steps: int | None = None
    # Classifiers: rows an optimizer step sees on average, at least (within 5%), so long rows, one
    # per token-budget micro-batch at max_length=512, still make a batch; short rows (MRPC's pairs:
    # 7 a micro-batch) keep one micro-batch a step (see docs/data.md).
    rows_per_step: int = 4
    # Clip the gradient's global norm to this value; 0 disables clipping.
    max_grad_norm: float = 1.0
    # Dropout on attention probabilities, replacing the model's own rate; 0 lets PyTorch run its
    # fused attention kernel (any dropout there forces the slow path); unset keeps the model's.
    attention_dropout: float | None = 0.0
    # Keep the input word-embedding matrix fixed: half of MiniLM's weights, so steps run faster,
    # and classifiers were as accurate without training it (see docs/defaults.md). Unset: fixed for
    # classification, trained for language models (their output layer is that matrix).
    freeze_word_embeddings: bool | None = None
    # Also keep the other embeddings and the bottom N transformer layers fixed, so the backward pass
    # stops above them. Unset: the bottom third when classifying on a CPU (faster steps at about the
    # same accuracy, see docs/defaults.md), else none.
    freeze_layers: int | None = None
    # auto picks bf16 only where the hardware computes it natively, else fp32 (fp16 on old GPUs).
    precision: str = "auto"
    # Seed for weights of new heads, shuffling, held-out split and dropout.
    seed: int = 42
    # Evaluate every N optimizer steps; when unset, evals_per_epoch times per epoch.
    eval_every_steps: int | None = None
    # Evenly spaced evaluations per epoch (and one at the last step); the best one is exported.
    # 0: only the last step is evaluated, and exported.
    evals_per_epoch: int = 4
    # Write a metrics.jsonl line every N optimizer steps.
    logging_steps: int = 10
    # Also log to this tracker via Accelerate: tensorboard (output_dir/tensorboard); unset: none.
    report_to: str | None = None
    # Validation metric that picks the exported model; the task's default when unset.
    metric_for_best: str | None = None
    # Stop after this many evaluations without improvement; never when unset.
    early_stopping_patience: int | None = None
    # Stop as soon as an evaluation reaches this value of metric_for_best (e.g. 0.85 accuracy).
    stop_at_metric: float | None = None
    # Token budget of an evaluation batch (evaluation sorts rows by length); unset: 2,048 on
    # CPUs, where a layer's activations then stay in cache, 8,192 on GPUs.
    eval_max_tokens_per_batch: int | None = None
    # Single-label classifiers with 50+ validation rows: divide the logits by the temperature that
    # fits validation best, folded into the output layer, so labels stay and scores become usable
    # probabilities; it costs little where they were right already (see docs/calibration.md).
    temperature_scaling: bool = True
    # On a NaN/inf loss: stop (naming the step and rows) or skip that optimizer step and count it.
    on_nonfinite_loss: str = "stop"
    # Class weights in a classifier's loss, for skewed classes: none; balanced (each class
    # weighs rows / (classes x its rows); multi-label: a label's positives weigh its negatives /
    # positives); {name: weight}, unnamed classes weighing 1; or auto: balanced for multi-label
    # runs, none for single-label ones (see docs/defaults.md).
    class_weights: dict[str, float] | str | None = "auto"
    # How a classifier learns: fine-tune (the course's recipe), few-shot (a head fitted on the
    # sentence embedding, then end to end: for a few rows per class), or auto (few-shot when the
    # median class has at most few_shot.max_rows_per_class training rows).
    method: str = "auto"


@dataclass
class LanguageModelConfig:
    # masked-lm: share of tokens to predict (80% of them become the mask token, 10% random).
    mlm_probability: float = 0.15
    # masked-lm: pick whole words, so every piece of a chosen word is masked together (all of
    # them become the mask token: transformers has no random replacement for whole words).
    whole_word_masking: bool = False
    # masked-lm: concatenate rows and cut them into data.max_length blocks (the course's way);
    # false: one sample per row, truncated.
    group_texts: bool = True
    # causal-lm: loss on the completion (assistant) tokens only, not on the prompt.
    completion_only_loss: bool = True
    # causal-lm: pack each micro-batch into one row without padding; position ids restart per
    # sample so attention stays within it (models that take position_ids, e.g. Llama, GPT-2).
    packing: bool = False


@dataclass
class LoraConfig:
    # LoRA rank through peft; 0 trains all weights (no adapters).
    r: int = 0
    # LoRA scaling numerator (the update is scaled by alpha / r).
    alpha: float = 16.0
    # Dropout on the adapter's input.
    dropout: float = 0.05
    # Module names that get adapters; unset: peft's default for the architecture.
    target_modules: list[str] | None = None
    # Merge the adapters into the exported model (a plain transformers folder); false exports
    # the adapter folder alone (causal-lm only; AutoModelForCausalLM loads it over the base).
    merge: bool = True


@dataclass
class FewShotConfig:
    # train.method=auto takes the few-shot path up to this many training rows in the median class:
    # below it the path beat fine-tuning clearly; above it the gain shrinks for several times the
    # training time (see docs/defaults.md).
    max_rows_per_class: int = 256
    # Passes over the training rows end to end (few rows: many passes); replaces train.epochs.
    epochs: float = 10.0
    # Peak learning rate of the encoder end to end; replaces train.learning_rate.
    learning_rate: float = 5e-5
    # Peak learning rate of the classifier head, which starts from the fitted probe.
    head_learning_rate: float = 5e-4
    # Rows per micro-batch; replaces the token budget (few rows fill few batches).
    batch_size: int = 16
    # Inverse regularization strength (scikit-learn's C) of the logistic regression the head starts
    # from. Below 1 the head starts with softer logits, which leaves the end-to-end phase a loss and
    # the encoder a gradient to learn from (see docs/defaults.md).
    probe_c: float = 0.3
    # Each class's name joins the training rows this many times as a text of its own, when the names
    # are words and the rows single texts: a sentence encoder already knows what "joy" means, which
    # is worth most when rows are few (see docs/few-labels.md). 0: never.
    label_name_rows: int = 4
    # How each class name reads as a training row; {} is the name, e.g. "This text is about {}.".
    # A sentence did no better than the bare name on the benchmark sets, so the name is the default.
    label_name_template: str = "{}"
    # With a validation file, export the best-scoring step, not the last: on a few validation rows
    # per class that score is mostly noise, and the last step did better (see docs/defaults.md).
    # Off: train.evals_per_epoch=0 unless train.eval_every_steps is set.
    pick_best_step: bool = False


@dataclass
class CheckpointConfig:
    # Save a resumable checkpoint every N optimizer steps; unset: only at epoch ends.
    every_steps: int | None = None
    # Also save one at the end of every epoch.
    at_epoch_end: bool = True
    # Step checkpoints kept on disk; the best model is kept apart from these.
    keep_last: int = 2


@dataclass
class Config:
    # Model: `builtin:minilm-l6`, a local folder, or a Hub id.
    model: str = "builtin:minilm-l6"
    # classification, regression, masked-lm, causal-lm, or auto (classification or regression:
    # floats that are not whole numbers mean regression).
    task: str = "auto"
    # Run folder: model/, metrics.json, metrics.jsonl, config.yaml and plots go here.
    output_dir: str = "runs/latest"
    # Replace a finished run already in output_dir.
    overwrite: bool = False
    # Continue an interrupted run: auto (newest intact checkpoint in output_dir) or a step folder.
    resume: str | None = None
    # Label names in id order, for integer labels without names (e.g. [negative, positive]).
    label_names: list[str] | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    lm: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)


def field_docs(cls: type = Config, prefix: str = "") -> dict[str, tuple[str, str, Any]]:
    """Dotted key -> (type, doc, default); the doc joins the comment lines above each field."""
    import inspect

    source = inspect.getsource(cls).splitlines()
    docs: dict[str, tuple[str, str, Any]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            docs.update(field_docs(hints[f.name], key + "."))
            continue
        line = next(i for i, s in enumerate(source) if s.strip().startswith(f.name + ":"))
        comment: list[str] = []  # every comment line right above the field
        while line > 0 and source[line - 1].strip().startswith("#"):
            line -= 1
            comment.insert(0, source[line].strip().lstrip("# "))
        docs[key] = (_type_name(hints[f.name]), " ".join(comment), f.default)
    return docs


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if not isinstance(tp, type) else tp.__name__
