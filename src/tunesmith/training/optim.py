"""AdamW with weight-decay groups and a linear schedule with warmup."""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup


def build_optimizer(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    head_learning_rate: float | None = None,
) -> torch.optim.AdamW:
    """AdamW that decays matrices only: biases and LayerNorm weights (1-D tensors) are exempt;
    with `head_learning_rate`, the classifier head (`classifier.*`) learns at that rate."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = {n for n, _ in named if head_learning_rate and _in_head(n)}
    rates = [(learning_rate, [p for n, p in named if n not in head])]
    if head:
        rates.append((head_learning_rate, [p for n, p in named if n in head]))
    groups = [
        {"params": [p for p in params if (p.ndim >= 2) == decayed], "lr": rate,
         "weight_decay": weight_decay if decayed else 0.0}
        for rate, params in rates
        for decayed in (True, False)
    ]  # fmt: skip
    # The fused kernel updates every tensor in one pass; torch has it for CPU and CUDA.
    return torch.optim.AdamW(groups, lr=learning_rate, fused=True)


def _in_head(name: str) -> bool:
    return name.startswith("classifier.") or ".classifier." in name


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = round(total_steps * warmup_ratio)
    return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
