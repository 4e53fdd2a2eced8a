"""AdamW with weight-decay groups and a linear schedule with warmup."""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup


def build_optimizer(
    model: torch.nn.Module, learning_rate: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW that decays matrices only: biases and LayerNorm weights (1-D tensors) are exempt."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates every tensor in one pass; torch has it for CPU and CUDA.
    return torch.optim.AdamW(groups, lr=learning_rate, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = round(total_steps * warmup_ratio)
    return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
