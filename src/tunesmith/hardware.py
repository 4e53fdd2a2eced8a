"""What this machine computes well: CPU flags, the precision to train in, and why."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

# bf16 matmuls are native only with these; elsewhere (AVX2 only) they are emulated and were
# measured ~100x slower than fp32 on an AMD EPYC here.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """The machine, written beside every figure tunesmith reports."""
    flags = cpu_flags()
    info = {
        "cpu": cpu_model(),
        "cpu_count": torch.get_num_threads(),
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def choose_precision(requested: str, use_cuda: bool) -> tuple[str, str]:
    """(precision, reason): bf16 only where computed natively, fp16 on older GPUs, else fp32."""
    if requested != "auto":
        return requested, f"precision={requested} was asked for"
    if use_cuda:
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(0)} computes bf16 natively"
        return "fp16", f"{torch.cuda.get_device_name(0)} lacks bf16; fp16 with a gradient scaler"
    native = [f for f in NATIVE_BF16_CPU_FLAGS if f in cpu_flags()]
    if native:
        return "bf16", f"CPU has {', '.join(native)}: bf16 matmuls are native"
    return "fp32", "CPU lacks avx512_bf16/amx_bf16: bf16 would be emulated and slower than fp32"
