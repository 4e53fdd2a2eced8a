"""A tunesmith command with bf16's arithmetic on a CPU that lacks bf16 kernels, at fp32 speed.

    python benchmarks/emulated_bf16.py train configs/mrpc.yaml train.precision=bf16

On an AVX2-only CPU a bf16 matrix product runs ~55x slower than fp32 (oneDNN emulates it), so a
bf16 training run would take hours. Under autocast, native bf16 hardware (AMX, AVX-512 BF16)
multiplies bf16 inputs exactly, sums in fp32 and rounds the result to bf16. This mode does the
same through fp32 kernels: every matrix product whose inputs are bf16 is computed from those
bf16 values in fp32 and its result rounded to bf16; every other op runs as autocast has it.
Logits then differ from oneDNN's own bf16 path by about one bf16 rounding (checked on MiniLM),
as native kernels do among themselves: the accuracy of the bf16 path can be measured here.
"""

from __future__ import annotations

import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

PRODUCTS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
}


def _widened(value: object) -> object:
    return (
        value.float()
        if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16
        else value
    )


class Bf16ProductsInFp32(TorchDispatchMode):
    """bf16 matrix products from their bf16 inputs in fp32 kernels, rounded back to bf16."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in PRODUCTS and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args
        ):
            return func(*tree_map(_widened, args), **tree_map(_widened, kwargs)).bfloat16()
        return func(*args, **kwargs)


if __name__ == "__main__":
    from tunesmith.cli import main

    with Bf16ProductsInFp32():
        sys.exit(main(sys.argv[1:]))
