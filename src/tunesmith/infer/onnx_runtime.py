"""A classifier's export for ONNX Runtime, and the engine that runs it in place of the torch model.

`export_onnx` traces the exported classifier as tunesmith loads it (the last layer computing the
first position alone, as in training and prediction) with `torch.onnx.export` (the TorchScript
exporter, opset 17, dynamic batch and sequence axes), beside the tokenizer, `config.json` and
`tunesmith.json`, so the folder also describes itself. `--quantize int8` adds ONNX Runtime's
dynamic int8 quantization of the matrix products. `OnnxClassifier` answers the calls the
predictor makes of a torch model, so length-sorted token-budget batches, chunked texts and
everything else of `Predictor` stay as they are.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from tunesmith.errors import UserError
from tunesmith.runfolder import checkpoint
from tunesmith.runfolder.layout import META_FILE, read_meta, resolve_model_dir

ONNX_FILE = "model.onnx"
ONNX_DIR = "onnx"  # a run's ONNX export: RUN/onnx, beside RUN/model
OPSET = 17
QUANTIZATIONS = ("int8",)


def require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UserError(
            "ONNX export and inference need onnxruntime and onnx: pip install 'tunesmith[onnx]'"
        ) from None
    return onnxruntime


def is_onnx_export(model_dir: Path) -> bool:
    return (model_dir / ONNX_FILE).is_file()


class _Logits(torch.nn.Module):
    """The classifier's logits alone: what the exported graph returns."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


def export_onnx(
    run: str | Path, out: str | Path | None = None, quantize: str | None = None
) -> Path:
    """Write the ONNX export of a run's (or an exported folder's) classifier to `out` (default:
    RUN/onnx); returns the folder."""
    from tunesmith.models import load_sequence_classifier
    from tunesmith.tasks import inference_command

    require_onnxruntime()
    model_dir = resolve_model_dir(run)
    meta = read_meta(model_dir)
    if inference_command(meta.get("task")) != "predict":
        raise UserError(
            f"{model_dir}: a {meta.get('task')} model; the ONNX export covers classifiers and "
            f"regressors (tunesmith predict, evaluate, serve)"
        )
    if quantize not in (None, *QUANTIZATIONS):
        raise UserError(f"--quantize {quantize}: use one of {', '.join(QUANTIZATIONS)}")
    out = Path(out).expanduser() if out else model_dir.parent / ONNX_DIR  # a run's: RUN/onnx
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_sequence_classifier(str(model_dir)).eval()
    wrapped = _Logits(model).eval()  # export restores the wrapper's mode: it must be eval
    # In the wrapper's order; a model without segment ids (RoBERTa) takes the first two.
    names = [
        n
        for n in ("input_ids", "attention_mask", "token_type_ids")
        if n in tokenizer.model_input_names
    ]
    example = tokenizer(["an example", "a longer example text"], padding=True, return_tensors="pt")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with warnings.catch_warnings():
        # The tracer warns of branches on shapes it fixes as constants: for an encoder without a
        # cache they are constant (tested across batch sizes and lengths against torch).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            tuple(example[n] for n in names),
            str(tmp / ONNX_FILE),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={
                **{n: {0: "batch", 1: "sequence"} for n in names},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32 = tmp / "model-fp32.onnx"
        os.replace(tmp / ONNX_FILE, fp32)
        # Its advice to pre-process first (optional shape inference and graph optimization)
        # would go to the root logger, on every export, as a warning.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(fp32, tmp / ONNX_FILE, per_channel=True, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        fp32.unlink()
    tokenizer.save_pretrained(tmp)
    model.config.save_pretrained(tmp)
    checkpoint.write_json(tmp / META_FILE, {**meta, "runtime": "onnx", "quantized": quantize})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def onnx_placement(meta: dict, requested: str) -> Any:
    """The CPU, in the number format the export was written in: fp32, or int8 quantized."""
    from tunesmith.compute.hardware import Placement

    precision = meta.get("quantized") or "fp32"
    if requested not in ("auto", precision):
        raise UserError(
            f"precision {requested}: this ONNX export runs in {precision}; drop --precision, or "
            f"export again (tunesmith export RUN --format onnx [--quantize int8])"
        )
    return Placement(torch.device("cpu"), precision, "an ONNX export, on ONNX Runtime")


class OnnxClassifier:
    """An ONNX Runtime session that answers as the torch classifier does where the predictor
    calls it: `eval()`, `parameters()` (its device), `config`, and `(**batch).logits`."""

    def __init__(self, model_dir: Path, threads: int | None = None) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(
            str(model_dir / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.config = AutoConfig.from_pretrained(model_dir)

    def eval(self) -> OnnxClassifier:
        return self

    def parameters(self):
        yield torch.empty(0)  # on the CPU, where ONNX Runtime runs here

    def __call__(self, **batch: torch.Tensor) -> SequenceClassifierOutput:
        feeds = {n: batch[n].numpy().astype(np.int64, copy=False) for n in self.inputs}
        (logits,) = self.session.run(["logits"], feeds)
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))
