"""Few labelled rows per class: a classifier that starts from the sentence embedding.

`train.method=auto` takes this path when the median class has at most
`few_shot.max_rows_per_class` training rows (benchmarks/few_shot.py sets it beside SetFit):

1. A fixed mean-pooling layer goes on top of the encoder. Its queries are zero, so attention is
   uniform over the real tokens and position 0 carries their mean: the embedding a
   sentence-transformer such as MiniLM was trained to give, where a classifier's pooler would
   read the [CLS] state it was never trained on. The model stays a plain
   `BertForSequenceClassification` (one layer more) that `transformers.pipeline` loads.
2. Where the class names are words and rows single texts, each name joins the training rows
   as a text of its own (`few_shot.label_name_rows` times): the encoder already puts "joy"
   near joyful sentences, and at 8 rows per class that prior is worth more than a row.
3. The head starts as a logistic regression on those embeddings (a linear probe), regularized
   enough (`few_shot.probe_c`) that its logits leave the end-to-end phase a gradient to learn
   from.
4. The whole model is then fine-tuned end to end by the usual loop, with `few_shot`'s settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from torch import nn

from tunesmith.compute.inference import infer_logits
from tunesmith.config import METHODS, Config, FewShotConfig, TrainConfig
from tunesmith.errors import UserError
from tunesmith.models import classifier_layout

FINE_TUNE, FEW_SHOT = METHODS[1:]
# The pooling layer scales the mean so far above the residual [CLS] state it adds that the
# LayerNorm after it (scale-invariant) sees the mean; 1e3 keeps fp16 activations in range.
MEAN_SCALE = 1e3


@dataclass(frozen=True)
class Method:
    name: str  # FINE_TUNE or FEW_SHOT
    reason: str  # for the startup line

    @property
    def few_shot(self) -> bool:
        return self.name == FEW_SHOT


def choose_method(
    requested: str,
    task_kind: str,
    class_rows: list[int],
    settings: FewShotConfig,
    blocker: str | None,
) -> Method:
    """`train.method` resolved against the training data: auto picks few-shot for single-label
    classification when the median class has at most `settings.max_rows_per_class` rows and
    nothing blocks the path (`blocker`: why it cannot train this run, from `blocked_by`)."""
    if task_kind != "classification":
        if requested == FEW_SHOT:
            raise UserError(
                f"train.method=few-shot is for single-label classification; this data is "
                f"{task_kind}: use train.method=auto or fine-tune"
            )
        return Method(FINE_TUNE, f"{task_kind}")
    median = int(np.median(class_rows))
    limit = settings.max_rows_per_class
    if requested == FEW_SHOT and blocker:
        raise UserError(f"train.method=few-shot: {blocker}; use train.method=auto or fine-tune")
    if requested != "auto":
        return Method(requested, f"train.method={requested}; {median} training rows per class")
    if median > limit:
        return Method(FINE_TUNE, f"{median} training rows per class > {limit}")
    if blocker:
        return Method(FINE_TUNE, f"{median} training rows per class <= {limit}, but {blocker}")
    return Method(FEW_SHOT, f"{median} training rows per class <= {limit}")


def decide_method(cfg: Config, train: Dataset, task: Any) -> Method:
    """train.method resolved against the training rows (`train`, as training will see them
    before any hold-out), the model's layout and LoRA."""
    class_rows, blocker = [], None
    if task.kind == "classification":
        class_rows = list(np.bincount(train["labels"], minlength=len(task.labels.names)))
        if cfg.train.method != FINE_TUNE:  # only auto and few-shot ask what blocks it
            blocker = blocked_by(cfg.lora.r, classifier_layout(cfg.model))
    return choose_method(cfg.train.method, task.kind, class_rows, cfg.few_shot, blocker)


def blocked_by(lora_r: int, layout: nn.Module | None) -> str | None:
    """Why the few-shot path cannot train a classifier of this `layout` (None: unknown, the
    model loader will say why) with these LoRA adapters; None when it can."""
    if lora_r:
        return f"lora.r={lora_r}: LoRA adapters would move the path's fixed pooling layer"
    if layout is not None and not supported(layout):
        return f"{type(layout).__name__} is not a BERT-style encoder with a pooler"
    return None


def with_label_names(
    train: Dataset, text_column: str, names: Sequence[str], copies: int, template: str
) -> Dataset:
    """The training rows and, after them, `copies` rows per class whose text is the class's
    name in `template` (its {} replaced; the row's other columns empty)."""
    rows = {column: [None] * (copies * len(names)) for column in train.column_names}
    rows[text_column] = [template.replace("{}", name) for name in names for _ in range(copies)]
    rows["labels"] = [label for label in range(len(names)) for _ in range(copies)]
    return concatenate_datasets([train, Dataset.from_dict(rows).cast(train.features)])


def names_are_words(names: Sequence[str]) -> bool:
    """Class names that say something to a sentence encoder: not ids such as 0/1 or LABEL_3
    (whose only letters name no class)."""
    return all(
        any(c.isalpha() for c in name) and not name.upper().startswith("LABEL_") for name in names
    )


# The train settings the few-shot path replaces, and the keys a user sets them with instead.
SETTING_KEYS = {
    "epochs": "few_shot.epochs",
    "learning_rate": "few_shot.learning_rate",
    "micro_batch_size": "few_shot.batch_size",
    "evals_per_epoch": "few_shot.pick_best_step",
}


def train_settings(t: TrainConfig, settings: FewShotConfig) -> TrainConfig:
    """The end-to-end phase's schedule: many passes over few rows, small fixed batches, every
    layer trained (freezing saves time on large data only), validation at the last step only
    unless few_shot.pick_best_step or train.eval_every_steps says otherwise; train.max_steps
    still stops it."""
    return dataclasses.replace(
        t,
        epochs=settings.epochs,
        learning_rate=settings.learning_rate,
        micro_batch_size=settings.batch_size,
        freeze_layers=t.freeze_layers or 0,
        evals_per_epoch=t.evals_per_epoch if settings.pick_best_step else 0,
    )


def supported(model: nn.Module) -> bool:
    """A BERT-style classifier: encoder layers with query/key/value attention and a pooler."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    return (
        isinstance(layers, nn.ModuleList)
        and hasattr(layers[-1], "attention")
        and hasattr(layers[-1].attention, "self")
        and getattr(model.base_model, "pooler", None) is not None
        and isinstance(getattr(model, "classifier", None), nn.Linear)
    )


def add_mean_pooling_layer(model: nn.Module) -> None:
    """Append the fixed mean-pooling layer (frozen) and reset the pooler to a scaled identity
    (then trained); `config.num_hidden_layers` grows by one, so the exported folder loads as is."""
    from tunesmith.compute.kernels import compute_pooled_position_only

    layers = model.base_model.encoder.layer
    last = layers[-1]
    last.__dict__.pop("forward", None)  # it now feeds every position to the pooling layer
    pooling = type(last)(model.config)
    hidden = model.config.hidden_size
    eye = torch.eye(hidden)
    attention = pooling.attention
    with torch.no_grad():
        for linear, weight in (
            (attention.self.query, torch.zeros(hidden, hidden)),
            (attention.self.key, torch.zeros(hidden, hidden)),
            (attention.self.value, eye),
            (attention.output.dense, eye * MEAN_SCALE),
            (pooling.output.dense, torch.zeros_like(pooling.output.dense.weight)),
        ):
            linear.weight.copy_(weight)
            linear.bias.zero_()
        # The pooler then sees the mean standardized to unit length, where its tanh is nearly
        # linear and the probe's regularization suits: a sentence-transformer's normalized
        # embedding, up to centering.
        pooler = model.base_model.pooler.dense
        pooler.weight.copy_(eye / hidden**0.5)
        pooler.bias.zero_()
    for module in pooling.modules():  # a mean, not a sample of one
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    pooling.requires_grad_(False)
    layers.append(pooling.to(next(model.parameters()).dtype))
    model.config.num_hidden_layers = len(layers)
    compute_pooled_position_only(model)


def fit_head(
    model: nn.Module,
    train: Dataset,
    collate: Callable,
    max_tokens: int,
    class_weights: tuple[float, ...] | None,
    c: float,
    seed: int,
) -> float:
    """Set the classifier to a logistic regression (inverse regularization `c`) fitted on the
    pooled embeddings of the training rows (every class has some: labels are decided from
    them); returns its training accuracy."""
    from sklearn.linear_model import LogisticRegression

    captured: list[np.ndarray] = []
    hook = model.classifier.register_forward_hook(
        lambda module, args, output: captured.append(args[0].float().cpu().numpy())
    )
    try:
        order, _ = infer_logits(model, train, collate, max_tokens)
    finally:
        hook.remove()
    features = np.empty((len(order), model.classifier.in_features), np.float32)
    features[order] = np.concatenate(captured)
    labels = np.asarray(train["labels"])
    weight = dict(enumerate(class_weights)) if class_weights else None
    probe = LogisticRegression(C=c, max_iter=1000, class_weight=weight, random_state=seed)
    probe.fit(features, labels)
    coef, intercept = probe.coef_, probe.intercept_
    if coef.shape[0] == 1:  # two classes: sklearn keeps one row; softmax of +-half is the same
        coef, intercept = (
            np.concatenate([-coef / 2, coef / 2]),
            np.r_[-intercept / 2, intercept / 2],
        )
    with torch.no_grad():
        model.classifier.weight.copy_(torch.as_tensor(coef, dtype=torch.float32))
        model.classifier.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))
    return float(probe.score(features, labels))
