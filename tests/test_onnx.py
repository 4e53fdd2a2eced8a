"""`tunesmith export --format onnx`: a folder ONNX Runtime runs, which predict, evaluate and serve
take as they take a run, with the scores of the torch model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import own_caches, sentiment_rows, tagged_rows, write_csv, write_jsonl

from tunesmith.cli import main
from tunesmith.infer import Predictor
from tunesmith.infer.serve import ServeSettings, create_app

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def trained(tiny_model: Path, root: Path, data: Path, *extra: str) -> Path:
    args = [f"model={tiny_model}", f"data.train={data}", f"output_dir={root / 'run'}"]
    args += ["train.method=fine-tune", "train.max_steps=3", "train.learning_rate=5e-3", *extra]
    with own_caches(root):
        assert main(["train", *args]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onnx")
    return trained(tiny_model, root, write_csv(root / "train.csv", sentiment_rows(64, seed=1)))


@pytest.fixture(scope="module")
def onnx_dir(run_dir) -> Path:
    assert main(["export", str(run_dir), "--format", "onnx"]) == 0
    return run_dir / "onnx"


def texts(n: int) -> list[str]:
    return [r["text"] for r in sentiment_rows(n, seed=9)]


def test_the_export_describes_itself_and_loads_in_onnxruntime(run_dir, onnx_dir):
    meta = json.loads((onnx_dir / "tunesmith.json").read_text())
    exported = json.loads((run_dir / "model" / "tunesmith.json").read_text())
    assert meta == {**exported, "runtime": "onnx", "quantized": None}
    config = json.loads((onnx_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits"]


def test_a_predictor_builds_its_tokenize_function_once(onnx_dir, monkeypatch):
    """A cut other than the head copies the Rust tokenizer: once, not on every request."""
    from tunesmith.tasks import truncation

    built = []
    encoder = truncation.whole_text_encoder
    monkeypatch.setattr(truncation, "whole_text_encoder", lambda t: built.append(1) or encoder(t))
    predictor = Predictor(onnx_dir)
    predictor.meta["truncation"] = "head+tail"
    for _ in range(3):
        predictor.predict_texts(texts(4))
    assert len(built) == 1


def test_onnx_scores_equal_torch_fp32(run_dir, onnx_dir):
    batch = texts(40)  # several lengths: padded, length-sorted batches
    torch_scores = Predictor(run_dir, precision="fp32").predict_texts(batch)
    onnx_scores = Predictor(onnx_dir).predict_texts(batch)

    assert [p["label"] for p in onnx_scores] == [p["label"] for p in torch_scores]
    for a, b in zip(onnx_scores, torch_scores, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_predict_evaluate_and_serve_take_the_folder(run_dir, onnx_dir, tmp_path, capsys):
    rows = sentiment_rows(12, seed=4)
    data = write_csv(tmp_path / "test.csv", rows)
    assert main(["evaluate", str(run_dir), "--data", str(data), "--precision", "fp32"]) == 0
    by_torch = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(onnx_dir), "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == pytest.approx(by_torch)
    assert "in fp32 (an ONNX export, on ONNX Runtime)" in captured.err

    from test_serve import Server

    predictor = Predictor(onnx_dir)
    want = Predictor(onnx_dir).predict_texts([r["text"] for r in rows])
    with Server(create_app(predictor, ServeSettings(max_batch_size=8, max_wait_ms=5))) as s:
        status, body = s.predict([{"text": r["text"]} for r in rows])
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == [w["label"] for w in want]


def test_multi_label_and_chunked_exports_keep_what_the_run_decided(tiny_model, tmp_path):
    """Thresholds tuned on validation, and windows pooled per text, as the torch model has them."""
    rows = tagged_rows(48, seed=2)
    for row in rows:
        row["text"] = " ".join(["the film was"] * 12 + [row["text"]])  # past one 24-token window
    data = write_jsonl(tmp_path / "tags.jsonl", rows)
    run = trained(
        tiny_model, tmp_path, data, "data.long_texts=chunk", "data.max_length=24", "train.epochs=1"
    )
    assert main(["export", str(run)]) == 0
    batch = [r["text"] for r in rows[:16]]

    torch_scores = Predictor(run, precision="fp32").predict_texts(batch)
    onnx_scores = Predictor(run / "onnx").predict_texts(batch)
    assert json.loads((run / "onnx" / "tunesmith.json").read_text())["long_texts"] == "chunk"
    assert [p["labels"] for p in onnx_scores] == [p["labels"] for p in torch_scores]
    for a, b in zip(onnx_scores, torch_scores, strict=True):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_an_int8_export_runs_in_int8(run_dir, tmp_path, capsys):
    out = tmp_path / "int8"
    assert main(["export", str(run_dir), "--quantize", "int8", "--out", str(out)]) == 0
    predictor = Predictor(out)
    scores = predictor.predict_texts(texts(8))

    assert predictor.placement.precision == "int8"
    operators = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in operators and "MatMulInteger" in operators
    assert json.loads((out / "tunesmith.json").read_text())["quantized"] == "int8"
    assert all(np.isclose(sum(p["scores"].values()), 1.0, atol=1e-5) for p in scores)
    assert main(["predict", str(out), "--precision", "bf16"]) == 2
    assert "this ONNX export runs in int8" in capsys.readouterr().err


def test_a_language_model_is_refused_in_one_line(tiny_model, tmp_path, capsys):
    lm = trained(
        tiny_model,
        tmp_path,
        write_csv(tmp_path / "t.csv", [{"text": r["text"]} for r in sentiment_rows(16)]),
        "task=masked-lm",
    )
    capsys.readouterr()
    assert main(["export", str(lm)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the ONNX export covers classifiers and regressors" in err[0]
    assert not (lm / "onnx").exists()
