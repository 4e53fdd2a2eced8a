"""Load an exported classifier or regressor folder once; predict or evaluate rows from files or
stdin. `load_for_serving` picks the inference object that fits any exported folder's task.

Inference sorts rows by length and fills batches by tokens, then restores input order, so the
padding overhead of random order is not paid at prediction time either.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import AutoTokenizer, DataCollatorWithPadding

from tunesmith import data
from tunesmith.compute import hardware
from tunesmith.compute.inference import infer_logits
from tunesmith.config import DataConfig
from tunesmith.errors import UserError
from tunesmith.infer import onnx_runtime
from tunesmith.infer.language_models import FillMasker, Generator
from tunesmith.models import load_sequence_classifier
from tunesmith.runfolder.layout import read_meta, resolve_model_dir
from tunesmith.tasks import LabelSpec, SequenceClassification, inference_command
from tunesmith.tasks.labels import encode_split

# Up to this many rows (a request's) are tokenized into plain lists; more go through an Arrow
# table, whose ids take a fraction of the memory of Python lists.
PLAIN_COLUMN_ROWS = 1024


class Predictor:
    """An exported classifier/regressor with its tokenizer, ready for rows of text, on the GPU
    when there is one; `precision` as in hardware.inference_placement (int8 quantizes the linear
    layers, for speed on CPUs)."""

    def __init__(self, model_path: str | Path, precision: str = "auto") -> None:
        self.model_dir = resolve_model_dir(model_path)
        self.meta = read_meta(self.model_dir)
        task = self.meta.get("task")
        if (command := inference_command(task)) != "predict":
            raise UserError(
                f"{self.model_dir}: a {task} model labels nothing; use tunesmith {command} with it"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if onnx_runtime.is_onnx_export(self.model_dir):
            self.placement = onnx_runtime.onnx_placement(self.meta, precision)
            self.model = onnx_runtime.OnnxClassifier(self.model_dir)
        else:
            self.placement = hardware.inference_placement(precision)
            # The loader training uses, so prediction gets the same last-layer cut.
            self.model = self.placement.place(load_sequence_classifier(str(self.model_dir)).eval())
        self.labels = LabelSpec.of_export(self.model.config, self.meta)
        self.thresholds = SequenceClassification.exported_thresholds(self.labels, self.meta)
        self.label_format = DataConfig(
            label_delimiter=self.meta.get("label_delimiter"),
            label_columns=self.meta.get("label_columns"),
        )
        self.max_length = int(self.meta.get("max_length", 512))
        self.max_tokens = max(
            hardware.inference_tokens_per_batch(self.placement.device.type), self.max_length
        )
        self.collate = DataCollatorWithPadding(self.tokenizer)
        # Per set of columns: a cut other than the head, or windows, copy the Rust tokenizer
        # (17 ms for MiniLM's), which every request would otherwise pay again.
        self._tokenize_functions: dict[data.Columns, Any] = {}

    @property
    def pair_columns(self) -> tuple[str, str] | None:
        """The two text columns of a model trained on sentence pairs; None for single texts."""
        text, pair = self.meta.get("text_column"), self.meta.get("text_pair_column")
        return (text, pair) if text and pair else None

    def columns_for(self, ds: Dataset, source: str, need_label: bool) -> data.Columns:
        """The text/pair/label columns the model was trained on, else detected ones; a pair
        model refuses data with one text column."""
        text, pair = self.meta.get("text_column"), self.meta.get("text_pair_column")
        single = "none" if text and not pair else None  # never detect a pair for it
        cfg = DataConfig(text_column=text, text_pair_column=pair or single)
        names = set(ds.column_names)
        if not {text, pair} - {None} <= names:
            cfg = DataConfig(text_pair_column=single)  # a file with other column names: detect
        label = self.meta.get("label_column")
        cfg.label_column = label if label in names else None
        need_label = need_label and not self.label_format.label_columns  # 0/1 columns instead
        try:
            columns = data.detect_columns(ds, cfg, source, need_label=need_label)
        except UserError:
            if self.pair_columns is None:
                raise
            columns = None
        if self.pair_columns and (columns is None or columns.text_pair is None):
            raise UserError(
                f"{source}: the model takes sentence pairs ({text} + {pair}) but the data has "
                f"no second text column (columns: {', '.join(ds.column_names)}); add {pair}"
            )
        return columns

    def task(self, columns: data.Columns) -> SequenceClassification:
        m = self.meta  # the cut, or the windows and their pooling, that training used
        return SequenceClassification(
            columns,
            self.labels,
            thresholds=self.thresholds,
            truncation=m.get("truncation", "head"),
            long_texts=m.get("long_texts", "truncate"),
            stride=m.get("stride"),
            pooling=m.get("pooling", "mean"),
        )

    def logits(self, ds: Dataset, columns: data.Columns) -> np.ndarray:
        """Logits for every row of `ds`, in input order (a chunked text's windows pooled)."""
        task = self.task(columns)
        if columns not in self._tokenize_functions:
            self._tokenize_functions[columns] = task.tokenize_function(
                self.tokenizer, self.max_length
            )
        tokenize = self._tokenize_functions[columns]
        if len(ds) <= PLAIN_COLUMN_ROWS:
            # A short request paid more for Dataset.map's bookkeeping than for the model
            # (benchmarks/predict_speed.py --onnx times one request).
            tokenized = tokenize({c: list(ds[c]) for c in (columns.text, columns.text_pair) if c})
        else:  # a file: Arrow holds its token ids compactly
            tokenized = ds.map(
                tokenize,
                batched=True,
                remove_columns=ds.column_names,
                # Without a fingerprint, datasets hashes the function and the tokenizer it
                # holds: ~0.3 s a call. Nothing here is cached.
                new_fingerprint=uuid.uuid4().hex,
                keep_in_memory=True,
            )
        indices, logits = infer_logits(
            self.model, tokenized, self.collate, self.max_tokens, autocast=self.placement.autocast
        )
        ordered = np.empty_like(logits)
        ordered[indices] = logits
        return task.text_logits(ordered, tokenized)

    def predict(self, ds: Dataset, source: str = "input") -> list[dict[str, Any]]:
        columns = self.columns_for(ds, source, need_label=False)
        ds = data.check_texts(ds, columns, source, drop_empty=False)
        return self.task(columns).format_predictions(self.logits(ds, columns))

    def predict_texts(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        rows = {"text": texts} if pairs is None else {"text": texts, "text_pair": pairs}
        return self.predict(Dataset.from_dict(rows))

    def predict_lines(self, lines: list[str]) -> list[dict[str, Any]]:
        """One record per line of text, in order, with its line number and text: a tab splits
        a pair (as a pair model needs); a line with an empty text gets `label: null` and says
        so, so records still join back to the input line by line."""
        pairs = bool(self.pair_columns) or all("\t" in line for line in lines if line.strip())
        parts = [line.split("\t", 1) if pairs else [line] for line in lines]
        untabbed = [i + 1 for i, p in enumerate(parts) if len(p) == 1 and p[0].strip()]
        if pairs and untabbed:
            shown = ", ".join(map(str, untabbed[:10])) + (" ..." if len(untabbed) > 10 else "")
            a, b = self.pair_columns or ("text", "text_pair")
            raise UserError(
                f"stdin: line(s) {shown} have no tab, but the model takes sentence pairs "
                f"({a} + {b}); put a tab between the two texts"
            )
        records = [dict(zip(("text", "text_pair"), p, strict=False)) for p in parts]
        filled = [i for i, p in enumerate(parts) if all(t.strip() for t in p)]
        columns = {key: [records[i][key] for i in filled] for key in records[filled[0]]}
        predictions = dict(
            zip(filled, self.predict(Dataset.from_dict(columns), "stdin"), strict=True)
        )
        empty = {"label": None, "scores": None, "error": "empty text: nothing to predict"}
        return [
            {"line": i + 1, **record, **predictions.get(i, empty)}
            for i, record in enumerate(records)
        ]

    def evaluate(self, ds: Dataset, source: str = "input") -> dict[str, float]:
        columns = self.columns_for(ds, source, need_label=True)
        ds = data.check_texts(ds, columns, source, drop_empty=False)
        ds = encode_split(ds, columns, self.labels, self.label_format, source)
        scores = self.task(columns).compute_metrics(
            self.logits(ds, columns), np.asarray(ds["labels"])
        )
        return {"rows": len(ds), **scores}


def load_for_serving(
    model_path: str | Path, precision: str = "auto"
) -> Predictor | FillMasker | Generator:
    """The inference object that fits the exported model's task."""
    task = read_meta(resolve_model_dir(model_path)).get("task")
    answers = {"predict": Predictor, "fill-mask": FillMasker, "generate": Generator}
    return answers[inference_command(task)](model_path, precision)
