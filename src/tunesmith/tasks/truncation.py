"""Which tokens of a text longer than `data.max_length` a classifier keeps: the head (the course's
`truncation=True`), the tail, or both ends. Reviews and articles often say what matters at their
end; Sun et al. (2019, "How to Fine-Tune BERT for Text Classification?") kept the first quarter
and the last three quarters of 510 tokens (128 + 382) and did better than the head alone. A pair
gives up tokens from its longer text first, as the tokenizer's own `longest_first` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tokenizers import Encoding, Tokenizer
from transformers import PreTrainedTokenizerBase

HEAD_SHARE = 0.25  # head+tail: the share of a text's tokens taken from its start


def tokenizer_keeping(
    tokenizer: PreTrainedTokenizerBase, max_length: int, truncation: str
) -> Callable[[list[str], list[str] | None], dict[str, list]]:
    """A function (texts, second texts or None) -> the tokenizer's inputs, each row cut to
    `max_length` tokens (special tokens included) by `truncation`: head, tail or head+tail."""
    if truncation == "head":
        return lambda texts, pairs: tokenizer(texts, pairs, truncation=True, max_length=max_length)
    backend, names = whole_text_encoder(tokenizer)

    def tokenize(texts: list[str], pairs: list[str] | None) -> dict[str, list]:
        budget = max_length - tokenizer.num_special_tokens_to_add(pair=pairs is not None)
        firsts = backend.encode_batch(texts, add_special_tokens=False)
        seconds = backend.encode_batch(pairs, add_special_tokens=False) if pairs else None
        out: dict[str, list] = {name: [] for name in names}
        for i, first in enumerate(firsts):
            second = seconds[i] if seconds is not None else None
            keep_first, keep_second = allowances(len(first), len(second or []), budget)
            encoding = backend.post_process(
                cut(first, keep_first, truncation),
                cut(second, keep_second, truncation) if second is not None else None,
                add_special_tokens=True,
            )
            append_inputs(out, encoding, names)
        return out

    return tokenize


def whole_text_encoder(tokenizer: PreTrainedTokenizerBase) -> tuple[Tokenizer, list[str]]:
    """A copy of the fast tokenizer's own Rust tokenizer that encodes whole texts (the caller
    cuts them; its post-processor then adds the special tokens and segment ids), and the model
    inputs the tokenizer gives."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    names = [
        n
        for n in tokenizer.model_input_names
        if n in ("input_ids", "token_type_ids", "attention_mask")
    ]
    return backend, names


def append_inputs(out: dict[str, list], encoding: Encoding, names: list[str]) -> None:
    """`encoding`'s model inputs (of `names`) appended to the columns of `out`."""
    fields = {
        "input_ids": encoding.ids,
        "token_type_ids": encoding.type_ids,
        "attention_mask": encoding.attention_mask,
    }
    for name in names:
        out[name].append(fields[name])


def allowances(first: int, second: int, budget: int) -> tuple[int, int]:
    """Tokens each text of a pair keeps within `budget`: the longer gives up tokens first, and
    when both pass half the budget they share it (an odd token to the first)."""
    if first + second <= budget:
        return first, second
    if second == 0:
        return budget, 0
    shorter = min(first, second)
    if shorter <= budget // 2:
        return (budget - second, second) if first > second else (first, budget - first)
    return budget - budget // 2, budget // 2


def cut(encoding: Encoding, keep: int, truncation: str) -> Encoding:
    """`encoding` (no special tokens) cut to `keep` tokens: its tail, or its head and tail."""
    if len(encoding) <= keep:
        return encoding
    if truncation == "tail":
        encoding.truncate(keep, direction="left")
        return encoding
    head = math.ceil(keep * HEAD_SHARE)
    tail = keep - head
    if tail == 0:
        encoding.truncate(head, direction="right")
        return encoding
    # What truncation cuts off moves to .overflowing, in pieces of at most the length kept: cut
    # before the last `tail` tokens, those are one piece (or a few, in a text under 2 x tail).
    encoding.truncate(len(encoding) - tail, direction="right")
    end = Encoding.merge(encoding.overflowing, growing_offsets=False)
    encoding.truncate(head, direction="right")
    return Encoding.merge([encoding, end], growing_offsets=False)
