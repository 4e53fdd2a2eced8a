"""Temperature scaling: fitted on validation after training, folded into the output layer, so
labels stay, probabilities change by exactly the temperature, and the export says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_csv
from test_few_shot import balanced_rows, train_args
from transformers import pipeline

from tunesmith.cli import main
from tunesmith.infer import Predictor
from tunesmith.metrics import fit_temperature
from tunesmith.tasks.label_kinds import MIN_ROWS_FOR_TEMPERATURE


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at(true_temperature):
    """Labels drawn from softmax(z); handed z * T, the fit divides T back out."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20_000, 3)) * 2
    p = torch.softmax(torch.from_numpy(z), -1).numpy()
    labels = np.array([rng.choice(3, p=row) for row in p])
    assert fit_temperature(z * true_temperature, labels) == pytest.approx(true_temperature, 0.05)


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory) -> dict[bool, Path]:
    """The same seeded run with temperature scaling on and off, fp32 so the two compare exactly."""
    root = tmp_path_factory.mktemp("calibration")
    train = write_csv(root / "train.csv", balanced_rows(12, seed=1))
    validation = write_csv(root / "validation.csv", balanced_rows(30, seed=2))
    out = {}
    for scaling in (True, False):
        out[scaling] = root / f"scaling-{scaling}"
        argv = train_args(
            tiny_model,
            train,
            out[scaling],
            f"data.validation={validation}",
            "train.precision=fp32",
            f"train.temperature_scaling={str(scaling).lower()}",
        )
        assert main(argv) == 0
    return out


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_the_temperature_changes_probabilities_not_labels(runs):
    scaled, unscaled = metrics_of(runs[True]), metrics_of(runs[False])
    assert scaled["validation"] == unscaled["validation"]  # accuracy, F1, MCC: the same labels
    details = scaled["validation_details"]
    temperature = details["temperature"]
    assert temperature != pytest.approx(1.0, abs=0.01)  # the tiny model is not calibrated
    assert details["calibration_error_before_temperature"] == pytest.approx(
        unscaled["validation_details"]["calibration_error"], abs=1e-6
    )
    # T minimizes these rows' log loss; their calibration error falls with it
    assert details["calibration_error"] <= details["calibration_error_before_temperature"]
    meta = json.loads((runs[True] / "model" / "tunesmith.json").read_text())
    assert meta["temperature_folded_into_weights"] == pytest.approx(temperature, abs=1e-4)
    assert "temperature_folded_into_weights" not in json.loads(
        (runs[False] / "model" / "tunesmith.json").read_text()
    )

    texts = [r["text"] for r in balanced_rows(10, seed=5)]
    with_t, without = probabilities(runs[True], texts), probabilities(runs[False], texts)
    expected = torch.softmax(torch.from_numpy(np.log(without) / temperature), -1).numpy()
    assert with_t == pytest.approx(expected, abs=1e-3)  # the 4-digit temperature's rounding
    # pipeline loads the scaled weights as they are: the same probabilities as predict
    theirs = pipeline("text-classification", model=str(runs[True] / "model"), device="cpu")
    names = Predictor(runs[True]).labels.names
    for row, hf in zip(with_t, theirs(texts, top_k=None), strict=True):
        by_name = {h["label"]: h["score"] for h in hf}
        assert [by_name[n] for n in names] == pytest.approx(list(row), abs=1e-4)


def probabilities(run: Path, texts: list[str]) -> np.ndarray:
    """Rows x classes in label-id order, predicted in fp32 (the comparisons above are exact)."""
    predicted = Predictor(run, precision="fp32").predict_texts(texts)
    return np.array([list(p["scores"].values()) for p in predicted])


def test_too_few_validation_rows_fit_no_temperature(tiny_model, tmp_path):
    train = write_csv(tmp_path / "train.csv", balanced_rows(12, seed=1))
    few = (MIN_ROWS_FOR_TEMPERATURE - 2) // 2
    validation = write_csv(tmp_path / "validation.csv", balanced_rows(few, seed=2))
    argv = train_args(tiny_model, train, tmp_path / "run", f"data.validation={validation}")
    assert main(argv) == 0
    assert "temperature" not in metrics_of(tmp_path / "run")["validation_details"]
