"""`tunesmith serve`: the FastAPI app over a loaded model (POST /predict, batched, for a
classifier; /fill-mask or /generate for a language model), its error answers, and `serve`, which
loads the model and runs uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from tunesmith.errors import UserError
from tunesmith.infer.language_models import FillMasker, Generator
from tunesmith.infer.predict import Predictor, load_for_serving
from tunesmith.infer.serve.batching import MicroBatcher
from tunesmith.infer.serve.limits import MAX_INPUTS, MAX_TEXT_CHARS, BodyLimit
from tunesmith.infer.serve.schemas import (
    Candidate,
    FillMaskRequest,
    FillMaskResponse,
    GenerateRequest,
    GenerateResponse,
    Health,
    Info,
    Prediction,
    PredictRequest,
    PredictResponse,
    Problem,
)
from tunesmith.infer.serve.settings import ServeSettings


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """A readable one-line `detail`; FastAPI's default would echo the (maybe huge) input back."""
    errors = []
    for e in exc.errors():
        loc = [str(part) for part in e["loc"] if part != "body"]
        if e["type"] == "json_invalid":
            loc, msg = [], f"malformed JSON: {e.get('ctx', {}).get('error', e['msg'])}"
        elif not loc:  # an empty body, a JSON list, or a body sent as a form (curl -d)
            msg = f'{e["msg"]}: send a JSON object {{"inputs": [...]}} as application/json'
        else:
            msg = e["msg"]
        errors.append({"loc": loc, "msg": msg})
    detail = "; ".join(": ".join(filter(None, [".".join(e["loc"]), e["msg"]])) for e in errors)
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


def _undecodable(_: Request, exc: HTTPException) -> JSONResponse:
    # FastAPI answers 400 when json.loads fails other than by a syntax error (bytes that are not
    # UTF-8, nesting too deep); for a client that is malformed JSON like any other.
    return JSONResponse({"detail": f"malformed JSON: {exc.detail}"}, status_code=422)


def _user_error(_: Request, exc: UserError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


def create_app(
    predictor: Predictor | FillMasker | Generator, settings: ServeSettings | None = None
) -> FastAPI:
    """The ASGI app, batching and limiting bodies as `settings` say (host, port and precision
    are serve's); its lifespan starts and stops the batching worker."""
    settings = ServeSettings() if settings is None else settings
    max_batch_size, max_wait_ms = settings.max_batch_size, settings.max_wait_ms
    batching, max_body_bytes = settings.batching, settings.max_body_bytes
    if max_batch_size < 1 or max_body_bytes < 1:
        raise UserError("--max-batch-size and --max-body-bytes must be at least 1")
    if max_wait_ms < 0:
        raise UserError(f"--max-wait-ms={max_wait_ms}: must be 0 or more")
    classifier = isinstance(predictor, Predictor)
    info = Info(
        task=predictor.labels.kind if classifier else predictor.meta["task"],
        labels=list(predictor.labels.names) if classifier else [],
        model_path=str(predictor.model_dir),
        device=predictor.placement.device.type,
        precision=f"{predictor.placement.precision} ({predictor.placement.reason})",
        max_length=predictor.max_length if classifier else predictor.meta.get("max_length", 0),
        batching=batching and classifier,
        max_batch_size=max_batch_size if batching and classifier else 1,
        max_wait_ms=max_wait_ms if batching and classifier else 0.0,
        max_inputs=MAX_INPUTS,
        max_text_chars=MAX_TEXT_CHARS,
        max_body_bytes=max_body_bytes,
    )
    batcher = (
        MicroBatcher(predictor.predict_texts, info.max_batch_size, info.max_wait_ms / 1000)
        if classifier
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if batcher is None:  # a language model: no /predict queue to drain
            yield
            return
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    app = FastAPI(
        title="tunesmith",
        summary=f"Predictions of {predictor.model_dir}",
        lifespan=lifespan,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(400, _undecodable)
    app.add_exception_handler(UserError, _user_error)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    problems = {413: {"model": Problem}, 422: {"model": Problem}}
    # Language models answer one request at a time: a tokenizer is not shared by threads.
    one_at_a_time = asyncio.Lock()
    # Only the model's own endpoint exists (and is in the OpenAPI schema); a 404 names it.
    if batcher is not None:
        endpoint = "/predict"

        @app.post(endpoint, responses=problems, response_model_exclude_none=True)
        async def predict(body: PredictRequest) -> PredictResponse:
            """Label texts or text pairs; concurrent requests share model calls."""
            texts = [i.text for i in body.inputs]
            pairs = [i.text_pair for i in body.inputs]
            rows = await batcher.submit(texts, pairs)
            return PredictResponse(predictions=[Prediction(**row) for row in rows])

    elif isinstance(predictor, FillMasker):
        endpoint = "/fill-mask"

        @app.post(endpoint, responses=problems)
        async def fill_mask(body: FillMaskRequest) -> FillMaskResponse:
            """Top-k words for each [MASK] (masked-LM models)."""
            async with one_at_a_time:
                masks = await asyncio.to_thread(predictor, body.text, body.top_k)
            return FillMaskResponse(masks=[[Candidate(**c) for c in m] for m in masks])

    else:
        endpoint = "/generate"

        @app.post(endpoint, responses=problems)
        async def generate(body: GenerateRequest) -> GenerateResponse:
            """Continue a prompt (causal-LM models)."""
            options = body.model_dump(exclude={"prompt"})
            async with one_at_a_time:
                text = await asyncio.to_thread(predictor, body.prompt, **options)
            return GenerateResponse(text=text)

    def not_here(request: Request, exc: HTTPException) -> JSONResponse:
        detail = f"no {request.url.path} here: this {info.task} model answers POST {endpoint}"
        return JSONResponse({"detail": detail}, status_code=404)

    app.add_exception_handler(404, not_here)

    @app.get("/health")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/info")
    async def get_info() -> Info:
        return info

    return app


def serve(model: str, settings: ServeSettings | None = None) -> None:
    """Load the model once, in `settings.precision` (hardware.inference_placement), and serve it
    until interrupted (Ctrl-C, SIGTERM)."""
    settings = ServeSettings() if settings is None else settings
    import datasets
    import uvicorn

    datasets.disable_progress_bars()  # else every request draws a tokenizing bar in the log
    predictor = load_for_serving(model, settings.precision)
    predictor.placement.announce()
    app = create_app(predictor, settings)
    # No access log: a line per request costs throughput and says little for this API.
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False)
