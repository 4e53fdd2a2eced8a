"""Masked-LM and causal-LM fine-tuning on tiny random models built here (BERT, GPT-2, Llama)."""

from __future__ import annotations

import contextlib
import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILLER, NEGATIVE, POSITIVE, VOCAB, write_csv
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertForMaskedLM,
    BertTokenizerFast,
    DataCollatorWithFlattening,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    pipeline,
)

from tunesmith.api import train
from tunesmith.cli import main
from tunesmith.config import LanguageModelConfig
from tunesmith.data import Columns
from tunesmith.errors import UserError
from tunesmith.metrics import language_model_metrics
from tunesmith.tasks.language_modeling import IGNORE, LanguageModeling

WORDS = [*POSITIVE, *NEGATIVE, *FILLER]
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def lines(n: int, seed: int = 0) -> list[str]:
    """Short sentences from a fixed phrase book, so a language model can learn them."""
    rng = random.Random(seed)
    book = ["the movie was very good", "a film is quite bad", "the plot and the actor"]
    return [rng.choice(book) + " " + rng.choice(WORDS) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_decoder_tokenizer(tmp_path_factory) -> Path:
    """A word-level fast tokenizer with <eos>, <pad>, role tags and a chat template."""
    vocab = ["<unk>", "<pad>", "<eos>", "<user>", "<assistant>", *WORDS, "neutral", "answer"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("decoder-tokenizer")
    tokenizer.save_pretrained(path)
    return path


def decoder(kind: str, tokenizer_dir: Path, out: Path) -> Path:
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    size = len(tokenizer)
    if kind == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=size, n_embd=32, n_layer=2, n_head=2, n_positions=64)
        )
    else:
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=size,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=64,
            )
        )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_decoder_tokenizer, tmp_path_factory) -> Path:
    return decoder("gpt2", tiny_decoder_tokenizer, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="module")
def tiny_llama(tiny_decoder_tokenizer, tmp_path_factory) -> Path:
    return decoder("llama", tiny_decoder_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


def text_files(tmp_path: Path) -> tuple[Path, Path]:
    train_rows = [{"text": t} for t in lines(200, seed=0)]
    validation_rows = [{"text": t} for t in lines(40, seed=1)]
    return write_csv(tmp_path / "train.csv", train_rows), write_csv(
        tmp_path / "val.csv", validation_rows
    )


def train_briefly(task: str, model: Path, out: Path, steps: int, **extra) -> dict:
    """A short, fast-learning run of a tiny model (16-token samples, 128-token batches)."""
    return train(
        task=task,
        model=str(model),
        data__max_length=16,
        train__max_steps=steps,
        train__learning_rate=5e-3,
        train__max_tokens_per_batch=128,
        train__logging_steps=5,
        output_dir=str(out),
        **extra,
    )


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


# ---- masked LM ----


def test_masked_lm_learns_and_reports_perplexity_then_fills_masks(tiny_model, tmp_path, capsys):
    train_file, validation_file = text_files(tmp_path)
    out = tmp_path / "mlm"
    result = train_briefly(
        "masked-lm",
        tiny_model,
        out,
        60,
        data__train=str(train_file),
        data__validation=str(validation_file),
    )
    curve = losses(out)
    assert np.mean(curve[-3:]) < 0.7 * np.mean(curve[:2])  # the loss falls on repeated text
    validation = json.loads((out / "metrics.json").read_text())["validation"]
    assert validation == result["validation"]
    assert validation["perplexity"] == pytest.approx(math.exp(validation["loss"]))
    assert validation["perplexity"] < len(VOCAB)  # far better than a uniform guess
    capsys.readouterr()  # the training's own output
    assert main(["fill-mask", str(out), "the movie was very [MASK]", "--top-k", "3"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3 and all(len(line.split("\t")) == 2 for line in printed)
    from tunesmith.report import write_report

    page = write_report(out).read_text()
    assert "before training perplexity" in page and "data:image/png;base64" in page
    # The exported folder works in transformers' own pipeline too.
    fill = pipeline("fill-mask", model=str(out / "model"), top_k=2)
    assert len(fill("the film was [MASK]")) == 2


def masked_task(**settings) -> LanguageModeling:
    return LanguageModeling(
        "masked-lm", Columns("text", None, None), LanguageModelConfig(**settings)
    )


def tokenized(task: LanguageModeling, tokenizer, texts: list[str], max_length: int = 16) -> Dataset:
    ds = Dataset.from_dict({"text": texts})
    return ds.map(
        task.tokenize_function(tokenizer, max_length), batched=True, remove_columns=["text"]
    )


def test_masking_rate_is_near_mlm_probability_and_eval_masks_are_fixed(tiny_model):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    task = masked_task(mlm_probability=0.2)
    ds = tokenized(task, tokenizer, lines(2000))
    collate = task.train_collator(tokenizer, 1)
    torch.manual_seed(0)
    batch = collate(
        [{k: ds[i][k] for k in ("input_ids", "attention_mask")} for i in range(len(ds))]
    )
    special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
    chosen = batch["labels"] != IGNORE
    rate = chosen.sum().item() / (~special | chosen).sum().item()
    assert rate == pytest.approx(0.2, abs=0.01)
    first = task.fix_eval_masks(ds, tokenizer, seed=7)
    second = task.fix_eval_masks(ds, tokenizer, seed=7)
    assert first["labels"] == second["labels"] and first["input_ids"] == second["input_ids"]
    masked = sum(x != IGNORE for row in first["labels"] for x in row)
    ordinary = sum(x == 0 for row in ds["special_tokens_mask"] for x in row)
    assert masked / ordinary == pytest.approx(0.2, abs=0.01)


def test_whole_word_masking_masks_every_piece_of_a_word(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "##ed", "the", "game"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    task = masked_task(whole_word_masking=True, mlm_probability=0.3, group_texts=False)
    ds = tokenized(task, tokenizer, ["the playing game played"] * 400)
    torch.manual_seed(0)
    with warnings.catch_warnings():  # it says how whole words are replaced instead of warning
        warnings.simplefilter("error")
        collate = task.train_collator(tokenizer, 1)
    batch = collate([ds[i] for i in range(len(ds))])
    ids = tokenizer.convert_tokens_to_ids(["play", "##ing", "##ed"])
    chosen = batch["labels"] != IGNORE
    # "playing" is tokens 2-3 ([CLS] the play ##ing game play ##ed [SEP]); "played" is 5-6.
    assert tokenizer.convert_ids_to_tokens(ds[0]["input_ids"])[2:4] == ["play", "##ing"]
    assert ids[0] in ds[0]["input_ids"]
    assert torch.equal(chosen[:, 2], chosen[:, 3]) and torch.equal(chosen[:, 5], chosen[:, 6])
    assert 0.15 < chosen[:, 2].float().mean() < 0.45
    # Every piece of a chosen word becomes the mask token: none kept, none replaced at random.
    assert (batch["input_ids"][chosen] == tokenizer.mask_token_id).all()


def test_perplexity_is_over_tokens_not_a_mean_of_batch_means(tiny_model):
    tokenizer = BertTokenizerFast.from_pretrained(tiny_model)
    model = BertForMaskedLM.from_pretrained(tiny_model)
    task = masked_task(group_texts=False)
    texts = ["good"] + [" ".join(WORDS[:12])] * 3  # one short row, three long ones
    ds = task.fix_eval_masks(tokenized(task, tokenizer, texts * 20), tokenizer, seed=1)
    collate = task.eval_collator(tokenizer, 1)
    # A budget of 16 tokens puts rows of different lengths in different batches.
    loss_sum, tokens = task.evaluate_share(model, ds, collate, 16, 0, 1, contextlib.nullcontext)
    with torch.inference_mode():
        batch = collate(
            [
                {k: ds[i][k] for k in ("input_ids", "attention_mask", "labels")}
                for i in range(len(ds))
            ]
        )
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        per_token = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch["labels"].flatten(), reduction="sum"
        )
    counted = int((batch["labels"] != IGNORE).sum())
    assert tokens == counted
    assert loss_sum == pytest.approx(per_token.item(), rel=1e-4)
    scores = language_model_metrics(loss_sum, tokens)
    assert scores["perplexity"] == pytest.approx(math.exp(per_token.item() / counted), rel=1e-4)


# ---- causal LM ----


def causal_task(columns: Columns, chat: bool = False, **settings) -> LanguageModeling:
    return LanguageModeling("causal-lm", columns, LanguageModelConfig(**settings), chat)


def test_completion_only_loss_ignores_every_prompt_token(tiny_gpt2):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_gpt2)
    task = causal_task(Columns("prompt", "completion", None))
    rows = {"prompt": ["the movie was", "a film is very"], "completion": ["good", "bad and sad"]}
    ds = Dataset.from_dict(rows).map(task.tokenize_function(tokenizer, 32), batched=True)
    for prompt, sample, labels in zip(rows["prompt"], ds["input_ids"], ds["labels"], strict=True):
        hidden = len(prompt.split())
        assert labels[:hidden] == [IGNORE] * hidden
        assert labels[hidden:] == sample[hidden:]  # completion and the closing <eos> are learned
        assert sample[-1] == tokenizer.eos_token_id
    everything = causal_task(Columns("prompt", "completion", None), completion_only_loss=False)
    full = Dataset.from_dict(rows).map(everything.tokenize_function(tokenizer, 32), batched=True)
    assert full["labels"] == full["input_ids"]


def test_chat_messages_learn_only_assistant_turns(tiny_gpt2):
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_gpt2)
    task = causal_task(Columns("messages", None, None), chat=True)
    messages = [
        {"role": "user", "content": "the movie"},
        {"role": "assistant", "content": "good"},
        {"role": "user", "content": "the film"},
        {"role": "assistant", "content": "bad sad"},
    ]
    ds = Dataset.from_dict({"messages": [messages]}).map(
        task.tokenize_function(tokenizer, 64), batched=True, remove_columns=["messages"]
    )
    tokens = tokenizer.convert_ids_to_tokens(ds[0]["input_ids"])
    learned = [t for t, label in zip(tokens, ds[0]["labels"], strict=True) if label != IGNORE]
    assert learned == ["good", "<eos>", "bad", "sad", "<eos>"]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_packed_and_padded_batches_give_the_same_loss(kind, tiny_decoder_tokenizer, tmp_path):
    path = decoder(kind, tiny_decoder_tokenizer, tmp_path / kind)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    task = causal_task(Columns("text", None, None), packing=True)
    model = task.load_model(str(path), None).eval()  # as training loads it
    task.prepare_tokenizer(tokenizer)
    ds = Dataset.from_dict({"text": lines(6)}).map(
        task.tokenize_function(tokenizer, 32), batched=True
    )
    samples = [{k: ds[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(6)]
    padded = task.eval_collator(tokenizer, 1)(samples)
    packed = task.train_collator(tokenizer, 1)(samples)
    assert isinstance(task.train_collator(tokenizer, 1), DataCollatorWithFlattening)
    assert packed["input_ids"].shape[0] == 1 and "position_ids" in packed
    with torch.inference_mode():
        assert model(**packed).loss.item() == pytest.approx(model(**padded).loss.item(), abs=1e-5)


def test_causal_lm_learns_and_generates(tiny_gpt2, tmp_path, capsys):
    train_file = write_csv(
        tmp_path / "train.csv",
        [{"prompt": "the movie was", "completion": t.split()[-1]} for t in lines(200)],
    )
    out = tmp_path / "sft"
    result = train_briefly(
        "causal-lm", tiny_gpt2, out, 40, data__train=str(train_file), lm__packing=True
    )
    curve = losses(out)
    assert np.mean(curve[-3:]) < 0.7 * np.mean(curve[:2])
    assert result["validation"]["perplexity"] < 20  # ~16 completions are possible
    capsys.readouterr()  # the training's own output
    assert main(["generate", str(out), "the movie was", "--max-new-tokens", "2"]) == 0
    generated = capsys.readouterr().out.strip()
    assert generated and generated.split()[0] in [*WORDS, "<eos>"]


# ---- LoRA ----


def test_lora_classifier_exports_a_merged_plain_model(tiny_model, sentiment_csv, tmp_path):
    from tunesmith.infer import Predictor

    train_file, validation_file = sentiment_csv
    out = tmp_path / "lora"
    result = train(
        model=str(tiny_model),
        data__train=str(train_file),
        data__validation=str(validation_file),
        train__epochs=3,
        train__learning_rate=1e-2,
        lora__r=4,
        lora__target_modules="[query, value]",
        output_dir=str(out),
    )
    assert not (out / "model" / "adapter_config.json").exists()  # merged: a plain folder
    predictions = Predictor(out).predict(Dataset.from_dict({"text": ["a great film"]}))
    assert predictions[0]["label"] in ("positive", "negative")
    assert result["validation"]["accuracy"] >= 0.5


def test_lora_causal_lm_can_export_the_adapter_alone(tiny_llama, tmp_path, capsys):
    train_file = write_csv(tmp_path / "train.csv", [{"text": t} for t in lines(120)])
    out = tmp_path / "lora-sft"
    train_briefly(
        "causal-lm", tiny_llama, out, 10, data__train=str(train_file), lora__r=4, lora__merge=False
    )
    assert (out / "model" / "adapter_config.json").exists()
    capsys.readouterr()
    assert main(["generate", str(out), "the movie", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()


# ---- serving ----


def test_serve_answers_fill_mask_and_generate_for_language_models(tiny_model, tiny_gpt2, tmp_path):
    from test_serve import Server

    from tunesmith.infer import FillMasker, Generator, load_for_serving
    from tunesmith.infer.serve import create_app

    train_file, _ = text_files(tmp_path)
    for task, model in (("masked-lm", tiny_model), ("causal-lm", tiny_gpt2)):
        train_briefly(task, model, tmp_path / task, 2, data__train=str(train_file))
    masker = load_for_serving(tmp_path / "masked-lm")
    assert isinstance(masker, FillMasker)
    with Server(create_app(masker)) as server:
        status, body = server.request(
            "POST", "/fill-mask", json.dumps({"text": "the [MASK] was good", "top_k": 3}).encode()
        )
        assert status == 200
        assert [c["token"] for c in body["masks"][0]] == [
            c["token"] for c in masker("the [MASK] was good", 3)[0]
        ]
        status, body = server.request("POST", "/fill-mask", b'{"text": "no mask here"}')
        assert status == 422 and "no mask" in body["detail"]
        status, body = server.request("POST", "/predict", b'{"text": "the [MASK]"}')
        assert status == 404 and "answers POST /fill-mask" in body["detail"]
        assert "/predict" not in server.request("GET", "/openapi.json")[1]["paths"]
        assert server.request("GET", "/info")[1]["task"] == "masked-lm"
    generator = load_for_serving(tmp_path / "causal-lm")
    assert isinstance(generator, Generator)
    with pytest.raises(UserError, match="int8 quantizes classifiers, not a causal-lm model"):
        load_for_serving(tmp_path / "causal-lm", precision="int8")
    with Server(create_app(generator)) as server:
        request = {"prompt": "the movie was", "max_new_tokens": 3}
        status, body = server.request("POST", "/generate", json.dumps(request).encode())
        assert status == 200 and body["text"] == generator("the movie was", 3)
        status, body = server.request("POST", "/generate", b'{"prompt": "a", "max_new_tokens": 0}')
        assert status == 422


def test_only_held_out_splits_get_fixed_masks(tiny_model, tmp_path):
    from accelerate import Accelerator

    from tunesmith.config import load_config
    from tunesmith.preprocess import prepare_data

    train_file, validation_file = text_files(tmp_path)
    cfg = load_config(
        None, ["task=masked-lm", f"data.train={train_file}", f"data.validation={validation_file}"]
    )
    prepared = prepare_data(cfg, BertTokenizerFast.from_pretrained(tiny_model), Accelerator())
    assert "labels" not in prepared.train.column_names  # masked afresh by the collator
    assert "special_tokens_mask" in prepared.train.column_names
    assert "labels" in prepared.validation.column_names
    assert prepared.summary["task"] == "masked-lm"


def test_packed_batches_fill_the_budget_with_real_tokens():
    from tunesmith.compute.batching import TokenBudgetBatchSampler

    lengths = np.random.default_rng(0).integers(4, 40, size=500)
    padded = TokenBudgetBatchSampler(lengths, 256, shuffle=True, seed=1, pool_batches=1)
    packed = TokenBudgetBatchSampler(
        lengths, 256, shuffle=True, seed=1, pool_batches=1, packed=True
    )
    assert all(lengths[b].sum() <= 256 for b in packed.batches())
    assert sorted(i for b in packed.batches() for i in b) == list(range(500))
    assert len(packed) < len(padded)  # more rows per batch once padding costs nothing


def test_lora_settings_that_would_export_a_broken_model_are_refused():
    from tunesmith.config import load_config
    from tunesmith.errors import UserError

    base = ["data.train=x.csv", "lora.r=4"]
    with pytest.raises(UserError, match="not masked-lm"):
        load_config(None, [*base, "task=masked-lm"])
    with pytest.raises(UserError, match=r"lora\.merge=false"):
        load_config(None, [*base, "lora.merge=false"])
    assert load_config(None, [*base, "task=causal-lm", "lora.merge=false"]).lora.merge is False


def test_language_model_commands_refuse_a_classifier(tiny_model, sentiment_csv, tmp_path):
    from tunesmith.errors import UserError
    from tunesmith.infer import FillMasker

    train_file, validation_file = sentiment_csv
    out = tmp_path / "classifier"
    train(
        model=str(tiny_model),
        data__train=str(train_file),
        data__validation=str(validation_file),
        train__max_steps=1,
        output_dir=str(out),
    )
    with pytest.raises(UserError, match="fill-mask needs a masked-lm model"):
        FillMasker(out)
