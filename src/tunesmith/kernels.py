"""Cheaper CPU versions of the work around the matrix products.

A profile of a MiniLM training step on 2 AVX2 cores put `aten::bernoulli_` (dropout masks) at
11% of the step, more than attention. PyTorch draws one 32-bit random number per element there;
`FastDropout` draws 64 bits at a time and cuts them into four 16-bit uniforms, so the same
Bernoulli mask (keep probability rounded to 1/65536) costs about half. CUDA's dropout kernel
is already fused, so GPUs keep `nn.Dropout`.
"""

from __future__ import annotations

import torch
from torch import nn

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class FastDropout(nn.Module):
    """`nn.Dropout` with a cheaper mask; same expectation, same global RNG (so seeds and resumes
    replay it)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        # Keep a row when its 16-bit draw is >= threshold; the scale uses the rounded rate so the
        # expectation of the output equals the input exactly.
        self.threshold = round(p * 65536)
        self.scale = 65536 / (65536 - self.threshold) if self.threshold < 65536 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        # The full int64 range, so all four 16-bit words are uniform (a plain `random_()` stays
        # non-negative and leaves the top word's sign bit at 0).
        draws = torch.empty(-(-n // 4), dtype=torch.int64, device=x.device)
        words = draws.random_(_INT64_MIN, _INT64_MAX).view(torch.int16)[:n].view(x.shape)
        # An int16 word is the 16-bit draw minus 32768.
        keep = words >= self.threshold - 32768
        return x * keep.to(x.dtype).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` in `model` for `FastDropout`; returns how many were swapped.
    Attention modules that read `self.dropout.p` for their fused kernel still find it."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
                swapped += 1
    return swapped
