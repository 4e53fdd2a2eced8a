"""The speed paths: cheaper dropout masks, padded token budgets and the precision choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import score_tolerance
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from tunesmith.compute import hardware, kernels
from tunesmith.compute.batching import TokenBudgetBatchSampler, padding_share
from tunesmith.compute.kernels import (
    FastDropout,
    compute_pooled_position_only,
    train_attention_core_in_fp32,
    use_fast_dropout,
)
from tunesmith.errors import UserError
from tunesmith.models import load_sequence_classifier


def test_fast_dropout_keeps_the_rate_and_the_expectation() -> None:
    torch.manual_seed(0)
    dropout = FastDropout(0.1).train()
    x = torch.ones(200, 300)
    kept = torch.stack([(dropout(x) != 0).float().mean() for _ in range(50)]).mean()
    assert kept.item() == pytest.approx(0.9, abs=0.002)
    assert dropout(x).mean().item() == pytest.approx(1.0, abs=0.01)


def test_fast_dropout_is_seeded_masks_gradients_and_is_identity_in_eval() -> None:
    dropout = FastDropout(0.3).train()
    x = torch.randn(7, 11, requires_grad=True)  # a size that is not a multiple of 4
    torch.manual_seed(1)
    first = dropout(x)
    torch.manual_seed(1)
    assert torch.equal(first, dropout(x))
    first.sum().backward()
    assert torch.equal(x.grad != 0, first != 0)
    assert torch.equal(dropout.eval()(x), x)


def test_every_dropout_of_a_model_is_swapped_and_outputs_stay_finite(tiny_model) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    before = sum(type(m) is torch.nn.Dropout for m in model.modules())
    assert use_fast_dropout(model) == before > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    model.train()
    out = model(input_ids=torch.tensor([[2, 5, 6, 3]]), labels=torch.tensor([1]))
    out.loss.backward()
    assert torch.isfinite(out.loss)


SMALL = dict(
    vocab_size=50,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BertForSequenceClassification(BertConfig(**SMALL, num_labels=3)),
        lambda: RobertaForSequenceClassification(RobertaConfig(**SMALL, pad_token_id=1)),
        lambda: ElectraForSequenceClassification(ElectraConfig(**SMALL, embedding_size=16)),
    ],
    ids=["bert", "roberta", "electra"],
)
def test_pooled_position_only_gives_the_same_logits_and_gradients(make) -> None:
    torch.manual_seed(0)
    full = make()
    pruned = make()
    pruned.load_state_dict(full.state_dict())
    assert compute_pooled_position_only(pruned)
    assert pruned.state_dict().keys() == full.state_dict().keys()  # exports stay standard
    input_ids = torch.randint(5, 50, (4, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = attention_mask[3, 2:] = 0  # padded rows of different lengths
    labels = torch.tensor([0, 1, 1, 0])
    outputs = {}
    for name, model in (("full", full), ("pruned", pruned)):
        out = model.train()(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        out.loss.backward()
        outputs[name] = out.logits
    torch.testing.assert_close(outputs["pruned"], outputs["full"], atol=1e-6, rtol=1e-5)
    for (name, a), b in zip(full.named_parameters(), pruned.parameters(), strict=True):
        if a.grad is not None or b.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_pooled_position_only_leaves_other_models_alone(tiny_model) -> None:
    gpt2 = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=32, n_head=2))
    assert not compute_pooled_position_only(gpt2)  # it pools the last real token
    eager = BertForSequenceClassification(BertConfig(**SMALL, attn_implementation="eager"))
    assert not compute_pooled_position_only(eager)
    loaded = load_sequence_classifier(str(tiny_model), None, num_labels=2)
    assert "_first_position" in loaded.base_model.encoder.layer[-1].forward.__name__


def test_a_bf16_training_step_takes_the_attention_core_in_fp32_and_nothing_else_changes(
    monkeypatch, tmp_path
) -> None:
    torch.manual_seed(0)
    plain = BertForSequenceClassification(BertConfig(**SMALL, num_labels=3))
    switched = BertForSequenceClassification(BertConfig(**SMALL, num_labels=3))
    switched.load_state_dict(plain.state_dict())
    for model in (plain, switched):
        compute_pooled_position_only(model)
    assert train_attention_core_in_fp32(switched)
    # Frozen as tunesmith freezes: the embeddings with the bottom layer, which needs no backward.
    for frozen in (switched.bert.embeddings, switched.bert.encoder.layer[0]):
        frozen.requires_grad_(False)
    cores = []
    spied = kernels.sdpa_attention_forward
    monkeypatch.setattr(
        kernels,
        "sdpa_attention_forward",
        lambda module, query, *args, **kwargs: (
            cores.append(query.dtype) or spied(module, query, *args, **kwargs)
        ),
    )
    input_ids = torch.randint(5, 50, (4, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    labels = torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = switched.train()(input_ids, attention_mask, labels=labels).loss
    loss.backward()
    assert cores == [torch.bfloat16, torch.float32, torch.float32]  # the last: position 0 alone
    # Against fp32 everywhere: as close as bf16 projections allow.
    reference = plain.train()(input_ids, attention_mask, labels=labels).loss
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), abs=score_tolerance("bf16"))
    bf16_eps = torch.finfo(torch.bfloat16).eps
    for (name, a), b in zip(plain.named_parameters(), switched.parameters(), strict=True):
        if b.requires_grad:  # every trained weight gets its gradient through the fp32 core
            # (+1e-6: a key bias has no gradient in exact arithmetic, only rounding.)
            assert (b.grad - a.grad).norm() <= 4 * bf16_eps * a.grad.norm() + 1e-6, name
    # Inference passes straight through to SDPA, and the export names no implementation of ours.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = [m.eval()(input_ids, attention_mask).logits for m in (plain, switched)]
    assert torch.equal(*logits)
    switched.save_pretrained(tmp_path)
    assert "sdpa_fp32" not in (tmp_path / "config.json").read_text()
    eager = BertForSequenceClassification(BertConfig(**SMALL, attn_implementation="eager"))
    assert not train_attention_core_in_fp32(eager)


def test_attention_dropout_replaces_the_checkpoint_rate(tiny_model) -> None:
    assert load_sequence_classifier(str(tiny_model), 0.0).config.attention_probs_dropout_prob == 0
    kept = load_sequence_classifier(str(tiny_model), None).config.attention_probs_dropout_prob
    assert kept == pytest.approx(0.1)


def test_token_budget_counts_lengths_as_padded() -> None:
    lengths = np.array([9, 10, 11, 12, 13, 14, 15, 16] * 4)
    sampler = TokenBudgetBatchSampler(lengths, 64, shuffle=True, seed=0, pad_to_multiple_of=8)
    for batch in sampler.batches():
        padded_longest = -(-int(lengths[batch].max()) // 8) * 8
        assert padded_longest * len(batch) <= 64
    share = padding_share(lengths, sampler)
    assert 0 < share < 0.5


@pytest.mark.parametrize(
    ("flags", "speedup", "expected"),
    [
        (frozenset({"avx2"}), None, "fp32"),  # no probe: emulated bf16 is never tried
        (frozenset({"avx2", "avx512_bf16"}), 2.8, "bf16"),
        (frozenset({"avx2", "amx_bf16"}), 0.6, "fp32"),  # native, yet the probe says slower
    ],
)
def test_precision_is_detected_and_confirmed_by_a_probe(monkeypatch, flags, speedup, expected):
    def probe(device: str) -> float:
        assert speedup is not None, "the probe must not run without native bf16"
        return speedup

    monkeypatch.delenv(hardware.ASSUME_NATIVE_BF16, raising=False)  # detection itself is tested
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    monkeypatch.setattr(hardware, "bf16_speedup", probe)
    precision, reason = hardware.choose_precision("auto", use_cuda=False)
    assert precision == expected
    assert ("probe" in reason) == (speedup is not None)
    assert hardware.choose_precision("bf16", use_cuda=False) == (
        "bf16",
        "precision=bf16 was asked for",
    )


def test_inference_runs_where_and_in_what_training_would_pick(monkeypatch):
    monkeypatch.delenv(hardware.ASSUME_NATIVE_BF16, raising=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    monkeypatch.setattr(hardware, "bf16_speedup", lambda device: 2.8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = hardware.inference_placement("auto")
    assert (auto.device.type, auto.precision) == ("cpu", "bf16") and "probe" in auto.reason
    with auto.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.is_autocast_enabled("cpu")
    fp32 = hardware.inference_placement("fp32")
    with fp32.autocast():
        assert not torch.is_autocast_enabled("cpu")
    int8 = hardware.inference_placement("int8")
    assert int8.precision == "int8" and "avx512_bf16: auto's bf16 is faster" in int8.reason
    with pytest.raises(UserError, match="use one of auto, fp32, bf16, fp16, int8"):
        hardware.inference_placement("int4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(UserError, match=r"int8 quantizes for CPUs.*CUDA_VISIBLE_DEVICES"):
        hardware.inference_placement("int8")


def test_the_bf16_path_can_be_taken_on_any_cpu(monkeypatch):
    """What `make test`'s second pass relies on: auto takes bf16 without flags or probe."""
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(hardware, "bf16_speedup", lambda device: pytest.fail("probed"))
    monkeypatch.setenv(hardware.ASSUME_NATIVE_BF16, "1")
    assert hardware.choose_precision("auto", use_cuda=False)[0] == "bf16"
    assert hardware.inference_placement("auto").precision == "bf16"
    assert hardware.choose_precision("fp32", use_cuda=False)[0] == "fp32"  # asked for wins


def test_unset_freeze_layers_fixes_the_bottom_third_only_when_classifying_on_a_cpu():
    from tunesmith.config import LanguageModelConfig, TrainConfig
    from tunesmith.data import Columns
    from tunesmith.tasks import LabelSpec, SequenceClassification
    from tunesmith.tasks.language_modeling import LanguageModeling
    from tunesmith.training.setup import _frozen_parts

    classify = SequenceClassification(Columns("text", None, "label"), LabelSpec("classification"))
    adapt = LanguageModeling("masked-lm", Columns("text", None, None), LanguageModelConfig())
    unset = TrainConfig()
    assert _frozen_parts(unset, classify, 6, on_cpu=True) == (True, 2)
    assert _frozen_parts(unset, classify, 6, on_cpu=False) == (True, 0)
    assert _frozen_parts(unset, classify, 2, on_cpu=True) == (True, 0)
    assert _frozen_parts(unset, adapt, 6, on_cpu=True) == (False, 0)
    chosen = TrainConfig(freeze_layers=1, freeze_word_embeddings=False)
    assert _frozen_parts(chosen, classify, 6, on_cpu=True) == (False, 1)
