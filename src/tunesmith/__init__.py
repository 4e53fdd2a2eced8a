"""tunesmith: fine-tune pretrained transformers on your own text, offline, on any machine."""

from tunesmith.api import evaluate, predict, train

__all__ = ["evaluate", "predict", "train"]
__version__ = "0.1.0"
