"""Tasks: how rows are labelled and tokenized, which head the model gets, how logits become
predictions and metrics. The training loop never branches on a task's name.
"""

from tunesmith.tasks.classification import LabelSpec, SequenceClassification

__all__ = ["LabelSpec", "SequenceClassification"]
