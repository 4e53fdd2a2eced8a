"""Shared fixtures: a tiny random BERT and tokenizer built here, and small learnable datasets."""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

POSITIVE = ["good", "great", "lovely", "excellent", "happy", "fine"]
NEGATIVE = ["bad", "awful", "terrible", "sad", "poor", "horrid"]
FILLER = ["the", "a", "movie", "film", "was", "is", "very", "quite", "plot", "actor", "and", "it"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *FILLER, "neutral"]


def score_tolerance(precision: str) -> float:
    """How far a probability may stray from an fp32 reference computed in another order: 1e-4
    of summation order, plus a few roundings to the precision's own epsilon (bf16 keeps 8
    significant bits: 2^-7; fp16 11: 2^-10)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return 1e-4 + (4 * torch.finfo(dtype).eps if dtype != torch.float32 else 0.0)


@contextmanager
def own_caches(root: Path) -> Iterator[None]:
    """Caches under `root` for a module-scoped fixture, which runs before the autouse fixture
    below has set the test's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", str(root / "caches" / "datasets"))
        mp.setenv("TUNESMITH_CACHE_DIR", str(root / "caches" / "tunesmith"))
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        yield


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Keep datasets' and tunesmith's caches out of the user's home."""
    cache = tmp_path_factory.getbasetemp() / "caches"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "datasets"))
    monkeypatch.setenv("TUNESMITH_CACHE_DIR", str(cache / "tunesmith"))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with a word-level vocabulary, saved like a Hub folder."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCAB)})
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)  # the same weights in every session, whatever ran before
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def wide_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny BERT with 512 positions, as real models have (for data.max_length=auto)."""
    path = tmp_path_factory.mktemp("wide-bert")
    config = BertConfig.from_pretrained(tiny_model)
    config.max_position_embeddings = 512
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(path)
    BertTokenizerFast.from_pretrained(tiny_model).save_pretrained(path)
    return path


def sentence(rng: random.Random, words: list[str]) -> str:
    body = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
    body.insert(rng.randrange(len(body) + 1), rng.choice(words))
    return " ".join(body)


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Single sentences whose label is decided by one sentiment word: learnable in few steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["positive", "negative"])
        rows.append(
            {"text": sentence(rng, POSITIVE if label == "positive" else NEGATIVE), "label": label}
        )
    return rows


def pair_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentence pairs labelled 1 when both carry the same sentiment."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice([POSITIVE, NEGATIVE]), rng.choice([POSITIVE, NEGATIVE])
        rows.append(
            {"sentence1": sentence(rng, a), "sentence2": sentence(rng, b), "label": int(a is b)}
        )
    return rows


def tagged_rows(n: int, seed: int) -> list[dict]:
    """Multi-label rows: a sentiment word decides pos or neg; the word "neutral", in about half
    the rows, adds the label "mention": rows carry one or two labels."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tags = [rng.choice(["pos", "neg"])] + ["mention"] * (rng.random() < 0.5)
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        words.append(rng.choice(POSITIVE if "pos" in tags else NEGATIVE))
        words += ["neutral"] * ("mention" in tags)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": tags})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def resume_from_first_checkpoint(run: Path, copy: Path) -> None:
    """Copy a finished run to `copy` without its export and metrics, and resume it there from
    its earliest step checkpoint."""
    from tunesmith.cli import main

    shutil.copytree(run, copy)
    shutil.rmtree(copy / "model")
    (copy / "metrics.json").unlink()
    earlier = sorted((copy / "checkpoints").glob("step-*"))[0]
    argv = ["train", str(copy / "config.yaml"), f"output_dir={copy}", "--resume", str(earlier)]
    assert main(argv) == 0


def assert_same_weights(a: Path, b: Path) -> None:
    """The exported weights of two runs agree to 1e-6."""
    reference = load_file(a / "model" / "model.safetensors")
    other = load_file(b / "model" / "model.safetensors")
    assert reference.keys() == other.keys()
    for key, value in reference.items():
        assert (other[key] - value).abs().max().item() <= 1e-6, key


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def sentiment_csv(tmp_path) -> tuple[Path, Path]:
    return (
        write_csv(tmp_path / "train.csv", sentiment_rows(240, seed=1)),
        write_csv(tmp_path / "validation.csv", sentiment_rows(60, seed=2)),
    )


@pytest.fixture
def pair_csv(tmp_path) -> tuple[Path, Path]:
    return (
        write_csv(tmp_path / "train.csv", pair_rows(160, seed=3)),
        write_csv(tmp_path / "validation.csv", pair_rows(40, seed=4)),
    )
