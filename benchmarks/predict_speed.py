"""Prediction speed side by side on the same rows and model: `transformers.pipeline` with its
defaults, `Trainer.predict` with its defaults, and tunesmith's `Predictor` (what `tunesmith
predict` runs) with its defaults, also with `--precision int8` on CPUs. Every arm runs on the
device it picks by default (the GPU when there is one). Each arm's time includes tokenizing the
texts; loading the model does not count. The arms run twice, interleaved, and each keeps its
faster pass (timings drift on small machines).

    python benchmarks/predict_speed.py                    # builtin:minilm-l6, untrained head
    python benchmarks/predict_speed.py --model runs/mrpc  # a trained run or model folder
    python benchmarks/predict_speed.py --onnx             # also ONNX Runtime arms (fp32, int8)

With --onnx the model is exported (`tunesmith export --format onnx`, and `--quantize int8`), and
the arms add tunesmith's `Predictor` on those folders (length-sorted token-budget batches on ONNX
Runtime), plain ONNX Runtime on fixed batches of 32 in input order, and tunesmith in fp32; then
one short request at a time (the first pair, batch of 1): the median of 50 per engine.

Rows: `../shared/data/mrpc/test.csv` when present, else generated sentence pairs. The last line
printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import results  # benchmarks/results.py, beside this script
from serve_load import classifier_folder  # benchmarks/ is on sys.path when run as a script
from train_speed import MRPC, generated_pairs

if TYPE_CHECKING:
    from tunesmith.infer import Predictor


def pipeline_arm(folder: str, first: list[str], second: list[str]) -> Callable[[], np.ndarray]:
    from transformers import pipeline

    classify = pipeline("text-classification", model=folder, top_k=None)

    def run() -> np.ndarray:
        inputs = [{"text": a, "text_pair": b} for a, b in zip(first, second, strict=True)]
        outputs = classify(inputs)
        label_ids = classify.model.config.label2id
        return np.array([label_ids[max(o, key=lambda s: s["score"])["label"]] for o in outputs])

    return run


def trainer_arm(folder: str, first: list[str], second: list[str]) -> Callable[[], np.ndarray]:
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tmp = tempfile.mkdtemp()
    args = TrainingArguments(output_dir=tmp, report_to=[], disable_tqdm=True)
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )

    def run() -> np.ndarray:
        ds = Dataset.from_dict({"a": first, "b": second}).map(
            lambda batch: tokenizer(batch["a"], batch["b"], truncation=True),
            batched=True,
            remove_columns=["a", "b"],
        )
        return trainer.predict(ds).predictions.argmax(-1)

    return run


def tunesmith_arm(
    predictor: Predictor, first: list[str], second: list[str]
) -> Callable[[], np.ndarray]:
    label_ids = predictor.model.config.label2id

    def run() -> np.ndarray:
        records = predictor.predict_texts(first, second)
        return np.array([label_ids[r["label"]] for r in records])

    return run


def plain_onnx_arm(folder: Path, first: list[str], second: list[str]) -> Callable[[], np.ndarray]:
    """ONNX Runtime as a user first writes it: fixed batches of 32 in input order, padded."""
    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(folder / "model.onnx"), options)
    names = [i.name for i in session.get_inputs()]

    def run() -> np.ndarray:
        out = []
        for i in range(0, len(first), 32):
            batch = tokenizer(first[i : i + 32], second[i : i + 32], padding=True, truncation=True)
            feeds = {n: np.asarray(batch[n], dtype=np.int64) for n in names}
            out.append(session.run(["logits"], feeds)[0])
        return np.concatenate(out).argmax(-1)

    return run


def single_request_ms(predictor: Predictor, first: str, second: str, repeats: int = 50) -> float:
    """Median milliseconds of one request of one pair, after a warm-up."""
    predictor.predict_texts([first], [second])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict_texts([first], [second])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="builtin:minilm-l6")
    parser.add_argument("--rows", type=int, help="at most this many rows")
    parser.add_argument("--name", default="predict_speed", help="results/NAME.md, one per CPU kind")
    parser.add_argument("--onnx", action="store_true", help="add the ONNX Runtime arms")
    args = parser.parse_args()
    log = results.Transcript()

    import csv

    import torch
    import transformers

    from tunesmith.compute import hardware
    from tunesmith.infer import Predictor

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    tmp = Path(tempfile.mkdtemp())
    source = MRPC / "test.csv" if (MRPC / "test.csv").is_file() else None
    if source is None:
        source = generated_pairs(tmp / "pairs") / "validation.csv"
    with source.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[: args.rows]
    first, second = [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]
    folder = classifier_folder(args.model, tmp)

    predictor = Predictor(folder)  # its defaults: device and precision as the machine allows
    arms = {
        "pipeline": pipeline_arm(folder, first, second),
        "trainer_predict": trainer_arm(folder, first, second),
        "tunesmith": tunesmith_arm(predictor, first, second),
    }
    if not torch.cuda.is_available():  # int8 linear layers are a CPU path
        int8 = Predictor(folder, precision="int8")
        arms["tunesmith_int8"] = tunesmith_arm(int8, first, second)
    singles = {"tunesmith": predictor}
    if args.onnx:
        from tunesmith.infer.onnx_runtime import export_onnx

        fp32 = Predictor(folder, precision="fp32")
        onnx_fp32 = Predictor(export_onnx(folder, tmp / "onnx-fp32"))
        onnx_int8 = Predictor(export_onnx(folder, tmp / "onnx-int8", quantize="int8"))
        arms["tunesmith_fp32"] = tunesmith_arm(fp32, first, second)
        arms["onnx_fp32_fixed32"] = plain_onnx_arm(tmp / "onnx-fp32", first, second)
        arms["tunesmith_onnx_fp32"] = tunesmith_arm(onnx_fp32, first, second)
        arms["tunesmith_onnx_int8"] = tunesmith_arm(onnx_int8, first, second)
        singles |= {"tunesmith_fp32": fp32, "onnx_fp32": onnx_fp32, "onnx_int8": onnx_int8}
    seconds = {name: float("inf") for name in arms}
    labels = {}
    for _ in range(2):
        for name, run in arms.items():
            start = time.perf_counter()
            labels[name] = run()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    machine = hardware.describe()
    auto = predictor.placement
    log(f"machine: {json.dumps(machine)}; rows: {len(rows)} from {source}")
    log(f"tunesmith: {auto.device.type}, {auto.precision} ({auto.reason})")
    summary = {"rows": len(rows), "source": str(source), "machine": machine}
    summary |= {"device": auto.device.type, "precision": auto.precision}
    for name in arms:
        rate = len(rows) / seconds[name]
        agree = float((labels[name] == labels["tunesmith"]).mean())
        summary[name] = {"samples_per_s": rate, "seconds": seconds[name], "agreement": agree}
        log(f"{name:16s} {rate:8.1f} samples/s  {seconds[name]:6.1f} s  same labels {agree:.1%}")
    if args.onnx:
        for name, engine in singles.items():
            ms = single_request_ms(engine, first[0], second[0])
            summary[f"single_request_ms_{name}"] = ms
            log(f"one request, {name:16s} {ms:6.1f} ms (median of 50)")
    for ours in [name for name in ("tunesmith", "tunesmith_int8") if name in arms]:
        for name in ("pipeline", "trainer_predict"):
            key = f"ratio_vs_{name}" + ours.removeprefix("tunesmith")
            summary[key] = summary[ours]["samples_per_s"] / summary[name]["samples_per_s"]
            log(f"{ours} / {name}: {summary[key]:.2f}x")
    log(json.dumps(summary))
    print(log.save(args.name, "Prediction speed: pipeline, Trainer.predict and tunesmith"))


if __name__ == "__main__":
    main()
