"""The real embedded model end to end: builtin:minilm-l6 trains, exports and serves pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import pair_rows, score_tolerance, write_csv
from transformers import pipeline

from tunesmith.cli import main
from tunesmith.infer import Predictor

MRPC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mrpc"


@pytest.mark.bf16
def test_minilm_pairs_train_export_and_agree_with_pipeline(tmp_path):
    train = write_csv(tmp_path / "train.csv", pair_rows(64, seed=7))
    validation = write_csv(tmp_path / "validation.csv", pair_rows(24, seed=8))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                f"data.train={train}",
                f"data.validation={validation}",
                f"output_dir={out}",
                "train.max_steps=3",
                "label_names=[different,same]",
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["data"]["columns"]["text_pair"] == "sentence2"
    assert {"accuracy", "f1"} <= set(result["validation"])

    predictor = Predictor(out)
    rows = pair_rows(24, seed=8)
    ours = predictor.predict_texts([r["sentence1"] for r in rows], [r["sentence2"] for r in rows])
    classifier = pipeline("text-classification", model=str(out / "model"), device="cpu")
    theirs = classifier([{"text": r["sentence1"], "text_pair": r["sentence2"]} for r in rows])
    tolerance = score_tolerance(predictor.placement.precision)  # theirs: fp32
    for mine, hf in zip(ours, theirs, strict=True):
        assert mine["scores"][hf["label"]] == pytest.approx(hf["score"], abs=tolerance)
        assert mine["label"] == hf["label"] or hf["score"] <= 0.5 + tolerance  # a near-tie
    assert {p["label"] for p in theirs} <= {"different", "same"}


@pytest.mark.slow
@pytest.mark.skipif(not MRPC.is_dir(), reason="../shared/data/mrpc is not here")
def test_minilm_fits_real_mrpc_pairs(tmp_path):
    """On 96 real MRPC pairs MiniLM learns its training rows: the pair path carries signal."""
    lines = (MRPC / "train.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    subset = tmp_path / "mrpc96.csv"
    subset.write_text("".join(lines[:97]), encoding="utf-8")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                f"data.train={subset}",
                f"data.validation={subset}",
                f"output_dir={out}",
                "train.method=fine-tune",  # 48 pairs per class would take few-shot
                "train.epochs=8",
                "train.learning_rate=2e-4",
                "train.max_tokens_per_batch=1024",
                "train.evals_per_epoch=1",
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["validation"]["accuracy"] >= 0.9
