"""What this machine computes well: CPU flags, the precision to train and predict in, and why."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.config import INFERENCE_PRECISIONS
from tunesmith.errors import UserError

# bf16 matmuls are native only with these; elsewhere (AVX2 only) they are emulated and were
# measured ~100x slower than fp32 on an AMD EPYC here.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# bf16 is chosen only when the probe finds its matmuls at least this much faster than fp32.
BF16_MIN_SPEEDUP = 1.2
# Set to 1, `auto` takes the path of a CPU with native bf16 on any CPU (emulated, slow, but the
# same number format): `make test` runs the precision-sensitive tests so on AVX2 machines too.
ASSUME_NATIVE_BF16 = "TUNESMITH_ASSUME_NATIVE_BF16"


def inference_tokens_per_batch(device_type: str) -> int:
    """Tokens per inference batch: on CPUs, 2,048 keeps a layer's activations in cache (MiniLM
    predicted 1.2x faster than with 8,192 on 2 AVX2 cores); GPUs want big batches."""
    return 2048 if device_type == "cpu" else 8192


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


@functools.cache
def bf16_speedup(device: str) -> float:
    """How many times faster a layer-sized bf16 matmul runs than fp32 on `device` (~0.5 s)."""
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)

    def products_per_second(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # warm-up: kernel selection, caches
        if device == "cuda":
            torch.cuda.synchronize()
        count, start = 0, time.perf_counter()
        while count < 3 or time.perf_counter() - start < 0.2:
            x @ y
            count += 1
            if device == "cuda":
                torch.cuda.synchronize()
        return count / (time.perf_counter() - start)

    return products_per_second(a.bfloat16(), b.bfloat16()) / products_per_second(a, b)


def choose_precision(requested: str, use_cuda: bool) -> tuple[str, str]:
    """(precision, reason): bf16 only where it is native and a probe finds it faster, fp16 on
    GPUs without bf16, else fp32."""
    if requested != "auto":
        return requested, f"precision={requested} was asked for"
    if use_cuda:
        name = torch.cuda.get_device_name(0)
        if not torch.cuda.is_bf16_supported():
            return "fp16", f"{name} lacks bf16; fp16 with a gradient scaler"
        where, device = name, "cuda"
    else:
        if os.environ.get(ASSUME_NATIVE_BF16) == "1":
            return "bf16", f"{ASSUME_NATIVE_BF16}=1: as on a CPU with native bf16"
        native = [f for f in NATIVE_BF16_CPU_FLAGS if f in cpu_flags()]
        if not native:
            return "fp32", "CPU lacks avx512_bf16/amx_bf16: emulated bf16 is slower than fp32"
        where, device = f"CPU with {', '.join(native)}", "cpu"
    speedup = bf16_speedup(device)
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"{where}: a bf16 matmul ran {speedup:.1f}x fp32 in a probe"
    return "fp32", f"{where}, but a bf16 matmul ran only {speedup:.2f}x fp32 in a probe"


@dataclass(frozen=True)
class Placement:
    """Where inference runs, in which number format, and why."""

    device: torch.device
    precision: str
    reason: str

    def autocast(self) -> AbstractContextManager:
        """The context a forward pass runs in: autocast for bf16/fp16, nothing otherwise."""
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        if self.precision not in dtypes:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtypes[self.precision])

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` on the device, its linear layers quantized first when the precision is int8."""
        if self.precision == "int8":
            quantize_int8(model)
        return model.to(self.device)

    def announce(self) -> None:
        """One stderr line naming the choice and why (stdout may carry predictions)."""
        print(
            f"tunesmith: inference on {self.device.type} in {self.precision} ({self.reason})",
            file=sys.stderr,
        )


def inference_placement(requested: str, not_quantizable: str | None = None) -> Placement:
    """The GPU when there is one, else the CPU, in the precision training would pick there (a
    GPU's bf16 or fp16; bf16 on CPUs that compute it natively; else fp32) unless `requested`
    names one. int8 quantizes classifiers on CPUs: `not_quantizable` names any other model
    ("MODEL: a causal-lm model"), which then refuses it."""
    if requested not in INFERENCE_PRECISIONS:
        raise UserError(f"precision {requested!r}: use one of {', '.join(INFERENCE_PRECISIONS)}")
    use_cuda = torch.cuda.is_available()
    if requested == "int8" and not_quantizable:
        model, _, what = not_quantizable.rpartition(": ")
        raise UserError(f"{model}: precision int8 quantizes classifiers, not {what}")
    if requested == "int8":
        if use_cuda:
            raise UserError(
                "precision int8 quantizes for CPUs; on a GPU use auto (bf16 or fp16), or "
                "hide the GPU with CUDA_VISIBLE_DEVICES="
            )
        reason = "precision=int8 was asked for"
        native = [f for f in NATIVE_BF16_CPU_FLAGS if f in cpu_flags()]
        if native:  # int8 pays on AVX2; where bf16 is native it was the slower of the two
            reason += f"; this CPU has {', '.join(native)}: auto's bf16 is faster and more exact"
        return Placement(torch.device("cpu"), "int8", reason)
    precision, reason = choose_precision(requested, use_cuda)
    return Placement(torch.device("cuda" if use_cuda else "cpu"), precision, reason)


def quantize_int8(model: torch.nn.Module) -> None:
    """Dynamic int8 quantization of every nn.Linear, in place: int8 weights once (a scale per
    output channel), activations quantized per batch, for speed on CPUs without native bf16
    (benchmarks/README.md measures the speed and what it costs in accuracy)."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated for torchao, whose CPU int8 path (torchao 0.18,
        # Int8DynamicActivationInt8WeightConfig) ran many times slower than this one here.
        warnings.simplefilter("ignore")
        # A scale per output channel, not per matrix: the latter lost more accuracy on MRPC.
        quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
        )
