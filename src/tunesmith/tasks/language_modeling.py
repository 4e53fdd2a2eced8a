"""Language modelling: masked-LM domain adaptation and causal-LM supervised fine-tuning.

Rows become token samples once, through the tokenized cache. Training masks with the
transformers collator (fresh masks every epoch); validation is masked once, seeded, when the data
is prepared, so two evaluations of the same weights see the same masks. Causal samples carry
their own `labels` (-100 on prompt tokens when the loss is on completions only), so padding and
packing never have to guess which tokens count.

Evaluation sums the loss over predicted tokens across every batch and process: perplexity is
exp(total loss / predicted tokens), not a mean of per-batch means.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    PreTrainedTokenizerBase,
)

from tunesmith import data
from tunesmith.compute.batching import TokenBudgetBatchSampler, rank_passes
from tunesmith.compute.inference import model_inputs
from tunesmith.config import Config, LanguageModelConfig
from tunesmith.data import TEXT_COLUMNS, Columns
from tunesmith.errors import UserError
from tunesmith.metrics import Evaluation, language_model_metrics

IGNORE = -100  # the label that cross-entropy in transformers skips
# Evaluation keeps its logits (tokens x vocabulary) under this many floats: 256 MB in fp32.
EVAL_LOGIT_FLOATS = 1 << 26


@dataclass(frozen=True)
class LanguageModeling:
    """Everything task-specific the engine needs for `masked-lm` and `causal-lm`."""

    kind: str  # "masked-lm" or "causal-lm"
    columns: Columns  # text (+ completion as text_pair), or the chat column as text
    settings: LanguageModelConfig
    chat: bool = False  # `columns.text` holds chat messages

    default_metric = "perplexity"
    metric_names = ("perplexity", "loss")
    # Their output layer shares the input-embedding matrix: freezing it would freeze the head.
    freeze_word_embeddings = False
    windowed = False  # data.long_texts=chunk is for classifiers
    kept_columns = ()  # samples are built from the text; grouping changes the row count
    freezes_bottom_layers_on_cpu = False  # adaptation reaches into every layer
    # Unmeasured for language models, whose samples are blocks or packed rows: one step per
    # micro-batch unless train.gradient_accumulation_steps says otherwise.
    accumulates_to_rows = False
    chooses_max_length = False  # auto keeps 128: unmeasured for language models
    evaluate_before_training = True  # the pretrained perplexity is what adaptation improves on
    stratify_column = None  # no classes to balance in held-out validation

    @classmethod
    def from_splits(
        cls, splits: dict[str, Dataset], sources: dict[str, str], cfg: Config
    ) -> tuple[dict[str, Dataset], LanguageModeling]:
        """The text (prompt/completion, or chat) columns found on every split, alike, and their
        cells checked."""
        d, task = cfg.data, cfg.task
        columns, chat = find_columns(splits["train"], task, d.text_column, sources["train"])
        checked = {}
        for name, ds in splits.items():
            if find_columns(ds, task, d.text_column, sources[name]) != (columns, chat):
                raise UserError(f"{sources[name]}: its columns differ from the training data's")
            if chat:
                check_messages(ds, columns.text, sources[name])
                checked[name] = ds
            else:
                checked[name] = data.check_texts(ds, columns, sources[name], d.drop_empty)
        return checked, cls(task, columns, cfg.lm, chat)

    @property
    def cuts_into_blocks(self) -> bool:
        """Samples are max_length blocks of concatenated rows (masked-LM grouping): every
        sample reaches max_length, and nothing is truncated."""
        return self.kind == "masked-lm" and self.settings.group_texts

    @property
    def peft_task_type(self) -> str | None:
        return "CAUSAL_LM" if self.causal else None  # peft has no masked-LM type; generic works

    @property
    def causal(self) -> bool:
        return self.kind == "causal-lm"

    @property
    def packs(self) -> bool:
        """Each micro-batch becomes one unpadded row (causal-LM with lm.packing)."""
        return self.causal and self.settings.packing

    def describe(self) -> str:
        if self.chat:
            source = f"chat column {self.columns.text}"
        elif self.columns.text_pair:
            source = f"prompt {self.columns.text} + completion {self.columns.text_pair}"
        else:
            source = f"text column {self.columns.text}"
        return f"{self.kind} on {source}"

    def meta(self) -> dict[str, Any]:
        return {"task": self.kind, "text_column": self.columns.text, "chat": self.chat}

    def prepare_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if self.causal and tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise UserError("the tokenizer has neither a pad nor an end-of-text token")
            tokenizer.pad_token = tokenizer.eos_token  # labels mark padding, not the pad id
        if not self.causal and tokenizer.mask_token is None:
            raise UserError("task=masked-lm needs a tokenizer with a mask token (BERT, RoBERTa)")

    def load_model(self, name: str, attention_dropout: float | None) -> torch.nn.Module:
        from tunesmith.models import load_pretrained

        if self.causal:
            head = "causal-LM head (use a decoder such as GPT-2, Llama or Qwen)"
            model = load_pretrained(AutoModelForCausalLM, name, attention_dropout, head)
            # Training needs no key/value cache, and with one transformers ignores the position
            # ids that keep packed samples apart; the export turns it back on for generation.
            model.config.use_cache = False
            return model
        head = "masked-LM head (use an encoder such as BERT, RoBERTa or MiniLM)"
        return load_pretrained(AutoModelForMaskedLM, name, attention_dropout, head)

    def tokenize_function(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int
    ) -> Callable[[dict[str, list]], dict[str, list]]:
        """A batched `Dataset.map` function from rows to samples with a `length` column."""
        if not self.causal:
            return _masked_samples(tokenizer, max_length, self.settings, self.columns.text)
        if self.chat:
            return _chat_samples(tokenizer, max_length, self.settings, self.columns.text)
        return _causal_samples(tokenizer, max_length, self.settings, self.columns)

    def train_collator(self, tokenizer: PreTrainedTokenizerBase, pad_multiple: int) -> Any:
        if not self.causal:  # the global RNG masks: checkpoints save it, so a resume replays it
            return self._masker(tokenizer, pad_multiple, seed=None)
        if self.packs:
            return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
        return self.eval_collator(tokenizer, pad_multiple)

    def _masker(
        self, tokenizer: PreTrainedTokenizerBase, pad_multiple: int, seed: int | None
    ) -> _WordOffsetsPadded:
        # Whole words are always replaced by the mask token (transformers has no random
        # replacement for them); asking for it says so instead of warning at every collator.
        replace = {"mask_replace_prob": 1.0, "random_replace_prob": 0.0}
        return _WordOffsetsPadded(
            DataCollatorForLanguageModeling(
                tokenizer,
                mlm_probability=self.settings.mlm_probability,
                whole_word_mask=self.settings.whole_word_masking,
                pad_to_multiple_of=pad_multiple,
                seed=seed,
                **(replace if self.settings.whole_word_masking else {}),
            )
        )

    def eval_collator(self, tokenizer: PreTrainedTokenizerBase, pad_multiple: int) -> Any:
        """Pads inputs and pads `labels` with -100 (validation is already masked)."""
        return DataCollatorForSeq2Seq(
            tokenizer, label_pad_token_id=IGNORE, pad_to_multiple_of=pad_multiple
        )

    def fix_eval_masks(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, seed: int) -> Dataset:
        """Masked-LM validation masked once with a seeded generator: every evaluation of the same
        weights then scores the same tokens. Causal samples already carry their labels."""
        if self.causal:
            return ds
        masker = self._masker(tokenizer, 1, seed)

        def mask(batch: dict[str, list]) -> dict[str, list]:
            rows = [
                {k: batch[k][i] for k in batch if k != "length"}
                for i in range(len(batch["length"]))
            ]
            masked = masker(rows)
            out = {k: [] for k in ("input_ids", "labels")}
            for i, n in enumerate(batch["length"]):  # drop the padding the collator added
                out["input_ids"].append(masked["input_ids"][i, :n].tolist())
                out["labels"].append(masked["labels"][i, :n].tolist())
            return out

        masked = ds.map(mask, batched=True, batch_size=256, desc="masking validation")
        drop = [c for c in ("offset_mapping", "special_tokens_mask") if c in ds.column_names]
        return masked.remove_columns(drop)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's own: cross-entropy over the predicted tokens."""
        return model(**batch).loss

    def loss_items(self, batch: dict[str, torch.Tensor]) -> int:
        """What the model's loss is a mean over: the predicted tokens (a causal model predicts
        each token from the ones before, so never a sample's first)."""
        labels = batch["labels"][:, 1:] if self.causal else batch["labels"]
        return int((labels != IGNORE).sum())

    def evaluate_share(
        self,
        model: torch.nn.Module,
        ds: Dataset,
        collate: Any,
        max_tokens: int,
        rank: int,
        world_size: int,
        autocast: Any,
    ) -> tuple[float, int]:
        """(sum of the loss over predicted tokens, their count) for this rank's batches."""
        vocab = model.config.get_text_config().vocab_size
        lengths = ds["length"]
        budget = max(max(lengths, default=1), min(max_tokens, EVAL_LOGIT_FLOATS // vocab))
        batches = TokenBudgetBatchSampler(lengths, budget, shuffle=False).batches()
        inputs = model_inputs(ds)
        device = next(model.parameters()).device
        loss_sum, tokens = 0.0, 0
        model.eval()
        with torch.inference_mode():
            for rows, keep in rank_passes(batches, rank, world_size):
                batch = {k: v.to(device) for k, v in collate(inputs.__getitems__(rows)).items()}
                with autocast():
                    loss = model(**batch).loss
                count = self.loss_items(batch)
                if keep and count:
                    loss_sum += float(loss) * count
                    tokens += count
        return loss_sum, tokens

    def keep_trainable(self, ds: Dataset, split: str, max_length: int) -> Dataset:
        """Causal samples whose completion truncation cut off whole predict nothing: dropped
        (and counted by the caller); a split left with none is an error."""
        if "predicted" not in ds.column_names:
            return ds
        kept = ds.filter(lambda n: n > 0, input_columns="predicted")
        if not len(kept):
            raise UserError(
                f"{split}: no sample keeps a completion token within data.max_length="
                f"{max_length}; raise data.max_length"
            )
        return kept

    def summary(self, tokenized: dict[str, Dataset]) -> dict[str, Any]:
        return {"labels": []}

    def fitted(
        self, ds: Dataset, evaluation: Evaluation, model: torch.nn.Module
    ) -> tuple[LanguageModeling, Evaluation]:
        """Nothing to learn from validation after training."""
        return self, evaluation

    def combine(self, shares: list[tuple[float, int]], ds: Dataset) -> Evaluation:
        scores = language_model_metrics(sum(s for s, _ in shares), sum(n for _, n in shares))
        return Evaluation(scores, math.isfinite(scores["loss"]))

    def plots(self, ds: Dataset, evaluation: Evaluation, output_dir: Any) -> None:
        """Classification draws a confusion matrix here; a language model has none."""


class _WordOffsetsPadded:
    """The masked-LM collator, with `offset_mapping` padded first: whole-word masking reads
    word boundaries from it, and the tokenizer's `pad` leaves that key ragged."""

    def __init__(self, collator: DataCollatorForLanguageModeling) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "offset_mapping" in features[0]:  # tokenized so for whole-word masking only
            multiple = self.collator.pad_to_multiple_of or 1
            width = max(len(f["input_ids"]) for f in features)
            width = -(-width // multiple) * multiple
            features = [
                {**f, "offset_mapping": _pad(f["offset_mapping"], width, [0, 0])} for f in features
            ]
        return self.collator(features)


def _pad(values: list, width: int, filler: Any) -> list:
    return list(values) + [filler] * (width - len(values))


def _masked_samples(
    tokenizer: PreTrainedTokenizerBase, max_length: int, lm: LanguageModelConfig, column: str
) -> Callable[[dict[str, list]], dict[str, list]]:
    keys = ["input_ids", "attention_mask", "special_tokens_mask"]
    keys += ["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else []
    keys += ["offset_mapping"] if lm.whole_word_masking else []

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch[column],
            truncation=not lm.group_texts,
            max_length=max_length if not lm.group_texts else None,
            return_special_tokens_mask=True,
            return_offsets_mapping=lm.whole_word_masking,
        )
        out = {k: encoded[k] for k in keys}
        if lm.group_texts:  # the course's group_texts, keeping the last, shorter block
            joined = {k: [x for row in out[k] for x in row] for k in keys}
            total = len(joined["input_ids"])
            out = {
                k: [v[i : i + max_length] for i in range(0, total, max_length)]
                for k, v in joined.items()
            }
        out["length"] = [len(ids) for ids in out["input_ids"]]
        return out

    return tokenize


def _causal_samples(
    tokenizer: PreTrainedTokenizerBase, max_length: int, lm: LanguageModelConfig, columns: Columns
) -> Callable[[dict[str, list]], dict[str, list]]:
    """`text` rows, or `prompt` + `completion` rows; each sample ends with the end-of-text token
    (so the model learns to stop) and is cut to max_length."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "labels": []}
        if columns.text_pair is None:
            for ids in tokenizer(batch[columns.text])["input_ids"]:
                ids = (ids + eos)[:max_length]
                out["input_ids"].append(ids)
                out["labels"].append(ids)
        else:
            prompts = tokenizer(batch[columns.text])["input_ids"]
            completions = tokenizer(batch[columns.text_pair], add_special_tokens=False)
            for prompt, completion in zip(prompts, completions["input_ids"], strict=True):
                ids = (prompt + completion + eos)[:max_length]
                hidden = len(prompt) if lm.completion_only_loss else 0
                out["input_ids"].append(ids)
                out["labels"].append(([IGNORE] * hidden + ids[hidden:])[: len(ids)])
        return _with_mask_and_length(out)

    return tokenize


def _chat_samples(
    tokenizer: PreTrainedTokenizerBase, max_length: int, lm: LanguageModelConfig, column: str
) -> Callable[[dict[str, list]], dict[str, list]]:
    """Chat `messages` rendered with the tokenizer's chat template; with completion-only loss,
    only the characters the template adds for assistant turns are learned."""
    if not tokenizer.chat_template:
        raise UserError(
            f"column {column} holds chat messages but the tokenizer has no chat template; "
            f"use a chat model or prompt/completion columns"
        )

    def render(messages: list[dict], generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "labels": []}
        for messages in batch[column]:
            text = render(messages)
            spans = []  # character ranges of assistant turns
            for i, message in enumerate(messages):
                if message["role"] == "assistant":
                    prompt = render(messages[:i], generation_prompt=True)
                    turn = render(messages[: i + 1])
                    if not (text.startswith(prompt) and text.startswith(turn)):
                        raise UserError(
                            f"column {column}: the chat template renders earlier turns "
                            f"differently once later ones follow, so assistant tokens cannot "
                            f"be told apart; set lm.completion_only_loss=false"
                        )
                    spans.append((len(prompt), len(turn)))
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = encoded["input_ids"][:max_length]
            learned = [
                not lm.completion_only_loss or any(a <= s < b for a, b in spans)
                for s, _ in encoded["offset_mapping"][:max_length]
            ]
            out["input_ids"].append(ids)
            out["labels"].append(
                [t if keep else IGNORE for t, keep in zip(ids, learned, strict=True)]
            )
        return _with_mask_and_length(out)

    return tokenize


def _with_mask_and_length(out: dict[str, list]) -> dict[str, list]:
    out["attention_mask"] = [[1] * len(ids) for ids in out["input_ids"]]
    out["length"] = [len(ids) for ids in out["input_ids"]]
    out["predicted"] = [sum(x != IGNORE for x in labels[1:]) for labels in out["labels"]]
    return out


def find_columns(
    ds: Dataset, kind: str, text_column: str | None, source: str
) -> tuple[Columns, bool]:
    """(columns, chat): a chat `messages` column, `prompt`/`completion`, or one text column."""
    names = list(ds.column_names)
    found = ", ".join(names)
    if text_column:
        if text_column not in names:
            raise UserError(f"{source}: data.text_column={text_column} is not a column ({found})")
        return Columns(text_column, None, None), text_column == "messages"
    if kind == "causal-lm":
        if "messages" in names:
            return Columns("messages", None, None), True
        if "prompt" in names and "completion" in names:
            return Columns("prompt", "completion", None), False
    text = next((c for c in TEXT_COLUMNS if c in names), None)
    if text is None:
        wanted = "a text column" if kind == "masked-lm" else "text, prompt/completion or messages"
        raise UserError(f"{source}: no {wanted} column (columns: {found}); set data.text_column")
    return Columns(text, None, None), False


def check_messages(ds: Dataset, column: str, source: str) -> None:
    """Each row a non-empty list of {role, content} with at least one assistant turn."""
    for i, messages in enumerate(ds[column]):
        ok = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
                for m in messages
            )
        )
        if not ok or not any(m["role"] == "assistant" for m in messages):
            raise UserError(
                f"{source}: row {i + 1} of column {column} is not a list of "
                f"{{role, content}} messages with an assistant turn; fix that row"
            )
