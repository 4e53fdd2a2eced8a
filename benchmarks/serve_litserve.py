"""The same classifier as `tunesmith serve`, served by LitServe's dynamic batching instead.

A benchmark-only server, for `serve_load.py --litserve` to start and load like `tunesmith serve`.
It needs `pip install litserve` (not a tunesmith dependency). POST /predict takes the body that
tunesmith's /predict takes, with one input, `{"inputs": [{"text": "..."}]}` or
`{"inputs": {"text": "..."}}`, and answers `{"predictions": [{"label": ..., "scores": ...}]}`;
LitServe merges concurrent requests into one `Predictor.predict_texts` call of up to
`--max-batch-size` texts, waiting up to `--batch-timeout-ms` for them. GET /health is LitServe's.

    python benchmarks/serve_litserve.py runs/demo --port 8000
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import litserve as ls
from fastapi import HTTPException


class ClassifierAPI(ls.LitAPI):
    """`tunesmith.infer.Predictor` behind LitServe; one text per request, batched by LitServe."""

    def __init__(self, model_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        # Runs in LitServe's inference worker process: quieted there, as `tunesmith serve` is.
        import datasets
        import transformers

        from tunesmith.infer import Predictor

        datasets.disable_progress_bars()  # else every batch draws a tokenizing bar in the log
        datasets.logging.set_verbosity_error()
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        self.predictor = Predictor(self.model_dir)

    # LitServe builds the endpoint from these two annotations: none means "parse the body as
    # JSON" and "send the dict as JSON" (a string one, from `annotations`, breaks the endpoint).
    def decode_request(self, request, **kwargs: Any) -> str:
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if isinstance(inputs, dict):
            inputs = [inputs]
        if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict)):
            raise HTTPException(422, 'send {"inputs": [{"text": "..."}]} with exactly one input')
        text = inputs[0].get("text")
        if not isinstance(text, str) or not text.strip():
            raise HTTPException(422, "inputs.0.text: a non-blank string is required")
        return text

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: list[str], **kwargs: Any) -> list[dict[str, Any]]:
        return self.predictor.predict_texts(texts)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(output)

    def encode_response(self, output: dict[str, Any], **kwargs: Any):
        return {"predictions": [output]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a run folder or a model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    api = ClassifierAPI(
        args.model,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout_ms / 1000,
        api_path="/predict",
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=120)
    server.run(
        host=args.host,
        port=args.port,
        log_level="warning",
        generate_client_file=False,  # it would write client.py into the working directory
        access_log=False,  # as `tunesmith serve` runs uvicorn
    )


if __name__ == "__main__":
    main()
