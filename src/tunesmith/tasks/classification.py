"""Single-sentence and sentence-pair classification (2..N classes, one or several per text)
and regression, as the `Task` the engine, evaluate and predict use.

All use `AutoModelForSequenceClassification`: classification with one logit per class and
cross-entropy, multi-label with a sigmoid per label and binary cross-entropy, regression with one
output and mean squared error. The labels are decided and encoded in `labels`; what differs
between their kinds, `label_kinds` answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from tunesmith import data
from tunesmith.compute.inference import infer_logits
from tunesmith.config import Config
from tunesmith.data import Columns
from tunesmith.metrics import Evaluation
from tunesmith.models import load_sequence_classifier
from tunesmith.tasks.label_kinds import LabelKind, label_kind_of
from tunesmith.tasks.labels import (
    LabelSpec,
    class_weights,
    decide_labels,
    encode_split,
    weights_setting,
)
from tunesmith.tasks.truncation import tokenizer_keeping
from tunesmith.tasks.windows import default_stride, document_starts, pool, tokenizer_windowing


@dataclass(frozen=True)
class SequenceClassification:
    """Everything task-specific the engine, evaluate and predict need, as plain functions."""

    columns: Columns
    labels: LabelSpec
    class_weights: tuple[float, ...] | None = None  # per class id, in the loss; None: all 1
    class_weights_setting: str = "none"  # how they were chosen, for the startup line
    # Multi-label: each label's decision threshold, tuned on validation after training; until
    # then every evaluation tunes its own (what the best model is picked by).
    thresholds: tuple[float, ...] | None = None
    # Multi-label: how the labels were given (label_delimiter, label_columns), for evaluate.
    label_format: dict[str, Any] | None = None
    # Single-label: fit a temperature on validation after training (train.temperature_scaling).
    temperature_scaling: bool = False
    # The fitted temperature, already divided into the output layer's weights.
    temperature: float | None = None
    # Which tokens of a long text are kept (data.truncation): head, tail or head+tail.
    truncation: str = "head"
    # data.long_texts: truncate, or chunk (overlapping windows, pooled per text: tasks/windows.py)
    long_texts: str = "truncate"
    stride: int | None = None  # chunk: tokens each window repeats; set once max_length is known
    pooling: str = "mean"  # chunk: how a text's windows' logits become its logits

    # Unless train.freeze_word_embeddings says otherwise: the step is faster, accuracy the same.
    freeze_word_embeddings = True
    freezes_bottom_layers_on_cpu = True  # train.freeze_layers unset: see TrainConfig
    packs = False  # one row per sample, padded
    accumulates_to_rows = True  # long rows must not shrink an optimizer step to one row
    chooses_max_length = True  # data.max_length=auto: tasks/lengths.py
    evaluate_before_training = False  # a fresh head scores chance; the majority class says more
    peft_task_type = "SEQ_CLS"  # peft then trains the fresh head fully, beside the adapters

    @property
    def windowed(self) -> bool:
        """Whether a row is one or more windows (chunk), not one truncated sample."""
        return self.long_texts == "chunk"

    @property
    def kept_columns(self) -> tuple[str, ...]:
        """The encoded labels survive tokenization; windows repeat them per window instead."""
        return () if self.windowed else ("labels",)

    @property
    def cuts_into_blocks(self) -> bool:
        """One sample per row, where a row at max_length was truncated; windows cut nothing."""
        return self.windowed

    @staticmethod
    def exported_thresholds(labels: LabelSpec, meta: dict[str, Any]) -> tuple[float, ...] | None:
        """Multi-label: the thresholds tuned on validation that tunesmith.json holds (0.5 for a
        folder without them, never tuned on the data being predicted); None otherwise."""
        if labels.kind != "multi_label":
            return None
        thresholds = meta.get("thresholds") or dict.fromkeys(labels.names, 0.5)
        return tuple(thresholds[n] for n in labels.names)

    @classmethod
    def from_splits(
        cls, splits: dict[str, Dataset], sources: dict[str, str], cfg: Config
    ) -> tuple[dict[str, Dataset], SequenceClassification]:
        """The text and label columns found on every split and their cells checked; labels
        decided from train (classes or regression) and encoded in every split; class weights
        resolved against the training labels."""
        d = cfg.data
        need_label = not d.label_columns  # 0/1 columns are the labels then
        columns = data.detect_columns(splits["train"], d, sources["train"], need_label)
        if d.label_columns:
            columns = dataclasses.replace(columns, label=None)
        checked = {}
        for name, ds in splits.items():
            data.detect_columns(ds, d, sources[name], need_label)  # the same columns everywhere
            checked[name] = data.check_texts(ds, columns, sources[name], d.drop_empty)
        labels = decide_labels(checked["train"], columns.label, cfg, sources["train"])
        encoded = {
            name: encode_split(ds, columns, labels, d, sources[name])
            for name, ds in checked.items()
        }
        setting, how = weights_setting(cfg.train.class_weights, labels.kind)
        weights = class_weights(setting, labels, encoded["train"]["labels"])
        meta = {"label_delimiter": d.label_delimiter, "label_columns": d.label_columns}
        task = cls(
            columns,
            labels,
            weights,
            class_weights_setting=how,
            label_format=meta,
            temperature_scaling=cfg.train.temperature_scaling,
            truncation=d.truncation,
            long_texts=d.long_texts,
            stride=d.stride,
            pooling=d.pooling,
        )
        return encoded, task

    @property
    def label_kind(self) -> LabelKind:
        """Single-label, multi-label or regression: what differs between them."""
        return label_kind_of(self.labels, self.thresholds, self.temperature_scaling)

    @property
    def multi(self) -> bool:
        return self.labels.kind == "multi_label"

    @property
    def stratify_column(self) -> str | None:
        """Held-out validation keeps the class balance of train (single-label)."""
        return self.label_kind.stratify_column

    @property
    def kind(self) -> str:
        return self.labels.kind

    def describe(self) -> str:
        kind = self.label_kind.describe()
        if self.class_weights is None:
            return kind
        what = f"{self.label_kind.weights_are} ({self.class_weights_setting})"
        if len(self.class_weights) > 10:  # a range says enough; decisions.json has them all
            low, high = min(self.class_weights), max(self.class_weights)
            return f"{kind}, {what} {low:.3g} to {high:.3g}"
        pairs = zip(self.labels.names, self.class_weights, strict=True)
        return f"{kind}, {what} {{" + ", ".join(f"{n}: {w:.3g}" for n, w in pairs) + "}"

    def meta(self) -> dict[str, Any]:
        """What `tunesmith.json` in the exported folder says about the inputs."""
        meta = {
            "task": self.labels.kind,
            "text_column": self.columns.text,
            "text_pair_column": self.columns.text_pair,
            "label_column": self.columns.label,
            "truncation": self.truncation,
        }
        if self.windowed:
            meta.update(long_texts=self.long_texts, stride=self.stride, pooling=self.pooling)
        meta.update(self.label_kind.meta(self.label_format))  # multi-label: the thresholds
        if self.temperature is not None:  # already in the weights: said, not to be applied again
            meta["temperature_folded_into_weights"] = self.temperature
        return meta

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Nothing to add: encoders come with padding."""

    def load_model(self, name: str, attention_dropout: float | None) -> torch.nn.Module:
        return load_sequence_classifier(name, attention_dropout, **self.model_kwargs())

    def train_collator(self, tokenizer: PreTrainedTokenizerBase, pad_multiple: int) -> Any:
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_multiple)

    eval_collator = train_collator

    def fix_eval_masks(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, seed: int) -> Dataset:
        """Nothing is random in a classification input."""
        return ds

    def keep_trainable(self, ds: Dataset, split: str, max_length: int) -> Dataset:
        """Every tokenized row has a label to learn."""
        return ds

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]:
        """The class names and, for classes, the majority class's scores: the floor to beat;
        for multi-label, each label's training rows."""
        found: dict[str, Any] = {"labels": list(self.labels.names)}
        found.update(self.label_kind.summary({n: self.texts(ds) for n, ds in tokenized.items()}))
        return found

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's own loss; with class weights, cross-entropy weighted by the row's class
        (PyTorch's weighted mean: the sum of weighted losses over the sum of the weights), or
        for multi-label binary cross-entropy with each label's positive weight."""
        if self.class_weights is None:
            return model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        return self.label_kind.weighted_loss(logits, batch["labels"], self.class_weights)

    def loss_items(self, batch: dict[str, torch.Tensor]) -> float:
        """What the loss is a mean over: the rows (times the labels, for multi-label: the same
        per row), or with class weights for single labels the rows' summed weight."""
        if self.class_weights is None:
            return len(batch["labels"])
        return self.label_kind.weighted_loss_items(batch["labels"], self.class_weights)

    def evaluate_share(
        self,
        model: torch.nn.Module,
        ds: Dataset,
        collate: Any,
        max_tokens: int,
        rank: int,
        world_size: int,
        autocast: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, logits) of this rank's share of the length-sorted batches."""
        return infer_logits(model, ds, collate, max_tokens, rank, world_size, autocast)

    def combine(self, shares: list[tuple[np.ndarray, np.ndarray]], ds: Dataset) -> Evaluation:
        """Every rank's rows back in input order (windows pooled per text), then the metrics
        over all of them."""
        width = shares[0][1].shape[-1]
        logits = np.empty((len(ds), width), dtype=np.float32)
        for indices, share_logits in shares:
            logits[indices] = share_logits
        logits = self.text_logits(logits, ds)
        labels = np.asarray(self.texts(ds)["labels"])
        scores = self.compute_metrics(logits, labels)
        details = self.label_kind.details(logits, labels)
        # NaN/inf logits still argmax to some class and score; such a model is never the best.
        return Evaluation(scores, bool(np.isfinite(logits).all()), logits, details)

    def fitted(
        self, ds: Dataset, evaluation: Evaluation, model: torch.nn.Module
    ) -> tuple[SequenceClassification, Evaluation]:
        """After training, what `ds` (validation) teaches, kept for test, the export, predict
        and serve, and `evaluation` as the model then gives it. Multi-label: each label's
        threshold. Single-label: a temperature, divided into the output layer's weights (see
        `SingleLabel.fit`)."""
        labels = np.asarray(self.texts(ds)["labels"])
        learned, evaluation = self.label_kind.fit(evaluation, labels, model)
        return dataclasses.replace(self, **learned), evaluation

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Path) -> None:
        """Single-label: the confusion matrix."""
        self.label_kind.plots(self.texts(ds), evaluation, output_dir)

    def texts(self, ds: Dataset) -> Dataset:
        """One row per text of tokenized `ds`: its first window's, when chunked."""
        return ds.select(document_starts(ds["window"])) if self.windowed else ds

    def text_logits(self, logits: np.ndarray, ds: Dataset) -> np.ndarray:
        """One row of logits per text from the logits of tokenized `ds`'s rows (in order):
        its windows' pooled, when chunked."""
        return pool(logits, np.asarray(ds["window"]), self.pooling) if self.windowed else logits

    @property
    def default_metric(self) -> str:
        return self.label_kind.default_metric

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.label_kind.metric_names

    def tokenize_function(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        """A batched `Dataset.map` function: input ids cut to `max_length` as self.truncation
        says (no padding), and lengths; or, chunked, every window of each text, with its
        place in the text and the text's labels."""
        text, pair = self.columns.text, self.columns.text_pair
        if self.windowed:
            return self._window_function(tokenizer, max_length)
        encode = tokenizer_keeping(tokenizer, max_length, self.truncation)

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            encoded = encode(batch[text], batch[pair] if pair else None)
            encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
            return encoded

        return tokenize

    def _window_function(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        text, pair = self.columns.text, self.columns.text_pair
        stride = default_stride(max_length) if self.stride is None else self.stride
        windows = tokenizer_windowing(tokenizer, max_length, stride)

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            encoded, sources = windows(batch[text], batch[pair] if pair else None)
            encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
            if "labels" in batch:
                encoded["labels"] = [batch["labels"][i] for i in sources]
            return encoded

        return tokenize

    def model_kwargs(self) -> dict[str, Any]:
        """Head settings for `AutoModelForSequenceClassification.from_pretrained`."""
        kwargs: dict[str, Any] = {
            "num_labels": self.labels.num_labels,
            "id2label": self.labels.id2label,
            "label2id": {v: k for k, v in self.labels.id2label.items()},
        }
        kwargs["problem_type"] = self.label_kind.problem_type
        return kwargs

    def predictions(self, logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        """Class ids, values, or (multi-label) 0/1 rows at the thresholds; `labels` lets an
        evaluation during training tune them on itself."""
        return self.label_kind.predictions(logits, labels)

    def compute_metrics(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return self.label_kind.compute_metrics(logits, labels)

    def format_predictions(self, logits: np.ndarray) -> list[dict[str, Any]]:
        """One record per row: the label name and every class's probability (or the score);
        multi-label: the labels at or above their thresholds and every label's probability."""
        return self.label_kind.format_predictions(logits)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Rows x classes: each label's sigmoid (multi-label, in float64) or the softmax over the
        classes (in the logits' dtype)."""
        return self.label_kind.probabilities(logits)
