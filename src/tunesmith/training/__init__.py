"""Training: `train(cfg)` runs setup -> (resume) -> loop -> finish (see `engine`)."""

from tunesmith.training.engine import train

__all__ = ["train"]
