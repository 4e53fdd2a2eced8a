"""Tasks: how rows are labelled and tokenized, which head the model gets, how logits become
predictions and metrics. The training loop never branches on a task's name.
"""

from tunesmith.tasks.classification import LabelSpec, SequenceClassification
from tunesmith.tasks.language_modeling import LanguageModeling

# What the engine holds: both offer the same methods (describe, load_model, collators, loss_items,
# evaluate_share/combine, plots), so it never asks which one it has.
Task = SequenceClassification | LanguageModeling

__all__ = ["LabelSpec", "LanguageModeling", "SequenceClassification", "Task"]
