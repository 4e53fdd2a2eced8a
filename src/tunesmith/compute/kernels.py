"""Less work for the same numbers.

`compute_pooled_position_only`: a sequence classifier of the BERT family reads only the first
position of the last layer, yet the model computes every position there. Computing just that
one (its keys and values still come from every position) gives the same logits and gradients
and skips ~14% of a 6-layer model's forward FLOPs (counted, not timed), more of a training step
when bottom layers are frozen (timed: 1.25x a MiniLM step on 2 CPU cores).

`FastDropout`: a profile of a MiniLM training step on 2 AVX2 cores put `aten::bernoulli_`
(dropout masks) at 11% of the step, more than attention. PyTorch draws one 32-bit random number
per element there; `FastDropout` draws 64 bits at a time and cuts them into four 16-bit uniforms,
so the same Bernoulli mask (keep probability rounded to 1/65536) costs about half. CUDA's dropout
kernel is already fused, so GPUs keep `nn.Dropout`.

`train_attention_core_in_fp32`: in a bf16 training step on a CPU, PyTorch's fused attention
(`scaled_dot_product_attention`, its flash kernel) runs forward and backward 1.6-11x slower in
bf16 than in fp32 on MiniLM's shapes (Intel Xeon with AMX, 2 cores, casts included: 9.3 ms
against 1.95 ms for 10 rows of 50 tokens, 5.6 against 3.5 for 2 of 256); the forward alone is no
faster. Where a backward will run, the attention core (softmax(QK^T/sqrt(d))V, not its
projections) takes fp32 copies of Q, K and V: bf16 training on MRPC ran 1.23-1.34x the samples/s,
and the core computes as in fp32 (benchmarks/README.md, "Training speed on a CPU with native
bf16"; the AMD Zen 4 kind is not measured).
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# Heads that read position 0 of the last layer only, over BertLayer-shaped layers
# (attention.self.query/key/value, attention.output, feed_forward_chunk).
FIRST_POSITION_CLASSIFIERS = {
    "BertForSequenceClassification",  # BertPooler: hidden_states[:, 0]
    "RobertaForSequenceClassification",  # RobertaClassificationHead: features[:, 0, :]
    "XLMRobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "ElectraForSequenceClassification",
}

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


def _sdpa_with_fp32_training_core(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, with the core in fp32 where a backward will run through it
    (frozen layers and inference keep their precision). Its masks are sdpa_mask's: boolean."""
    if not query.requires_grad:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    # Autocast lists SDPA among its bf16 operations and would cast the copies straight back.
    with torch.autocast(query.device.type, enabled=False):
        context, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return context.to(query.dtype), weights


FP32_CORE_SDPA = "sdpa_fp32_training_core"
SDPA_ATTENTION = ("sdpa", FP32_CORE_SDPA)  # the same attention and masks, in any precision
AttentionInterface.register(FP32_CORE_SDPA, _sdpa_with_fp32_training_core)
AttentionMaskInterface.register(FP32_CORE_SDPA, sdpa_mask)


def train_attention_core_in_fp32(model: nn.Module) -> bool:
    """Switch a model on transformers' SDPA attention to the same attention with an fp32 core
    for training under bf16 on a CPU (the attention implementation is not saved with the
    model); returns whether it applied."""
    if model.config._attn_implementation != "sdpa":
        return False
    model.set_attn_implementation(FP32_CORE_SDPA)
    return True


def compute_pooled_position_only(model: nn.Module) -> bool:
    """Make the last layer of a first-position classifier compute position 0 alone (in place;
    the weights and state-dict keys do not change); returns whether it applied."""
    config = model.config
    if (
        type(model).__name__ not in FIRST_POSITION_CLASSIFIERS
        # SDPA's mask is [batch, 1, query, key], which slices to the first query; other
        # implementations' masks (flash-attention unpads queries and keys alike) do not.
        or config._attn_implementation not in SDPA_ATTENTION
        or config.is_decoder
        or getattr(config, "add_cross_attention", False)
    ):
        return False
    last = model.base_model.encoder.layer[-1]
    last.forward = types.MethodType(_first_position_layer_forward, last)
    return True


def _first_position_layer_forward(
    self: nn.Module, hidden_states: torch.Tensor, attention_mask: Any = None, *args, **kwargs
) -> torch.Tensor:
    """BertLayer.forward for the query at position 0 only: [batch, 1, hidden] out."""
    attention = self.attention.self
    batch, length, _ = hidden_states.shape
    head = attention.attention_head_size
    first = hidden_states[:, :1]
    query = attention.query(first).view(batch, 1, -1, head).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :1]
    context, _ = ALL_ATTENTION_FUNCTIONS[attention.config._attn_implementation](
        attention,
        query,
        key,
        value,
        attention_mask,
        dropout=attention.dropout.p if attention.training else 0.0,
        scaling=attention.scaling,
    )
    attended = self.attention.output(context.reshape(batch, 1, -1), first)
    return self.feed_forward_chunk(attended)
