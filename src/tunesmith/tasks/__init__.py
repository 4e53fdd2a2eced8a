"""Tasks: how rows are checked, labelled and tokenized, which head the model gets, what its loss
averages over, how logits become predictions and metrics. Neither the engine nor preprocessing
branches on a task's name: they call the `Task` methods below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from tunesmith.data import Columns
from tunesmith.metrics import Evaluation
from tunesmith.tasks.classification import SequenceClassification
from tunesmith.tasks.labels import LabelSpec
from tunesmith.tasks.language_modeling import LanguageModeling


@runtime_checkable
class Task(Protocol):
    """What preprocessing and the engine ask of a task. Each class also has a classmethod
    `from_splits(splits, sources, config)` that finds and checks the columns (and decides the
    labels) on raw splits and returns them with the task."""

    kind: str  # the task's name in metrics.json and the exported tunesmith.json
    columns: Columns
    default_metric: str  # picks the exported model unless train.metric_for_best says otherwise
    metric_names: tuple[str, ...]
    freeze_word_embeddings: bool  # the default of train.freeze_word_embeddings
    freezes_bottom_layers_on_cpu: bool  # the default of train.freeze_layers on CPUs
    kept_columns: tuple[str, ...]  # raw columns that survive tokenization
    packs: bool  # a micro-batch is one unpadded row
    cuts_into_blocks: bool  # samples are fixed blocks of rows: none was truncated
    windowed: bool  # a row becomes one or more windows (data.long_texts=chunk)
    accumulates_to_rows: bool  # unset gradient_accumulation_steps reaches train.rows_per_step
    chooses_max_length: bool  # data.max_length=auto reads the rows' lengths (else 128)
    evaluate_before_training: bool  # the pretrained weights' scores are a baseline
    peft_task_type: str | None
    stratify_column: str | None  # held-out validation keeps this column's balance

    def describe(self) -> str: ...

    def meta(self) -> dict[str, Any]: ...

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None: ...

    def tokenize_function(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Any: ...

    def keep_trainable(self, ds: Dataset, split: str, max_length: int) -> Dataset: ...

    def fix_eval_masks(
        self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, seed: int
    ) -> Dataset: ...

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]: ...

    def load_model(self, name: str, attention_dropout: float | None) -> torch.nn.Module: ...

    def train_collator(self, tokenizer: PreTrainedTokenizerBase, pad_multiple: int) -> Any: ...

    def eval_collator(self, tokenizer: PreTrainedTokenizerBase, pad_multiple: int) -> Any: ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def loss_items(self, batch: dict[str, torch.Tensor]) -> float: ...

    def evaluate_share(
        self,
        model: torch.nn.Module,
        ds: Dataset,
        collate: Any,
        max_tokens: int,
        rank: int,
        world_size: int,
        autocast: Any,
    ) -> Any: ...

    def combine(self, shares: list[Any], ds: Dataset) -> Evaluation: ...

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Path) -> None: ...

    def fitted(
        self, ds: Dataset, evaluation: Evaluation, model: torch.nn.Module
    ) -> tuple[Task, Evaluation]: ...


# The command that answers with a model of each task: classifiers and regressors label rows.
INFERENCE_COMMANDS = {"masked-lm": "fill-mask", "causal-lm": "generate"}


def inference_command(task: str | None) -> str:
    """predict, fill-mask or generate: what a model trained for `task` answers (a folder from
    elsewhere, with no task recorded, is taken for a classifier)."""
    return INFERENCE_COMMANDS.get(task or "", "predict")


def is_language_model(task: str | None) -> bool:
    return task in INFERENCE_COMMANDS


def has_classes(task: str | None) -> bool:
    """Whether a run of `task` (as metrics.json names it) puts texts into named classes."""
    return task in ("classification", "multi_label")


def task_class(task: str) -> type[SequenceClassification] | type[LanguageModeling]:
    """The class for config `task` (auto means classification or regression, which the labels
    decide)."""
    return LanguageModeling if is_language_model(task) else SequenceClassification


__all__ = [
    "LabelSpec",
    "LanguageModeling",
    "SequenceClassification",
    "Task",
    "has_classes",
    "inference_command",
    "is_language_model",
    "task_class",
]
