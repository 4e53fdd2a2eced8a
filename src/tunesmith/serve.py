"""`tunesmith serve`: an HTTP API over `Predictor` that merges concurrent requests into batches,
and `/fill-mask` or `/generate` for a language model.

One model call on 32 texts costs far less than 32 calls on one text each, so requests that
arrive together wait up to `max_wait_ms` and run as one `Predictor.predict_texts` call. The
model runs in a worker thread (the event loop keeps taking requests meanwhile), one call at a
time: torch already spreads a call over every core, and a fast tokenizer used by two threads at
once fails ("Already borrowed").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunesmith.errors import UserError
from tunesmith.predict import FillMasker, Generator, Predictor, load_for_serving

MAX_BODY_BYTES = 1 << 20
MAX_TEXT_CHARS = 20_000
MAX_INPUTS = 256
MAX_NEW_TOKENS = 1024

# Predictor.predict_texts(texts, pairs) -> one {"label", "scores"} record per text, in order.
PredictFn = Callable[[list[str], list[str] | None], list[dict[str, Any]]]


class TextInput(BaseModel):
    # A misspelt key ("textpair") would otherwise be dropped and the text predicted without it.
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    text_pair: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        description="the second text of a pair, for a model trained on pairs",
    )

    @field_validator("text", "text_pair")
    @classmethod
    def not_blank(cls, value: str | None) -> str | None:
        # Predictor refuses blank texts; caught here, it fails one request, not a merged batch.
        if value is not None and not value.strip():
            raise ValueError("is blank")
        return value


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[TextInput] = Field(
        min_length=1,
        max_length=MAX_INPUTS,
        description=f"up to {MAX_INPUTS} inputs; a single input object is accepted too, and so "
        f'is a body that is one input ({{"text": ...}})',
    )

    @model_validator(mode="before")
    @classmethod
    def bare_input(cls, body: Any) -> Any:
        # {"text": ...} alone is the most natural request for one text.
        if isinstance(body, dict) and "inputs" not in body and "text" in body:
            return {"inputs": [body]}
        return body

    @field_validator("inputs", mode="before")
    @classmethod
    def one_or_many(cls, value: Any) -> Any:
        # Wrapped before validation rather than typed as a union, so an error gives one reason.
        return [value] if isinstance(value, dict) else value


class Prediction(BaseModel):
    label: str | float | None = Field(
        default=None, description="the class name (the value, for a regression model)"
    )
    labels: list[str] | None = Field(
        default=None, description="multi-label models: every label at or above its threshold"
    )
    scores: dict[str, float] = Field(description="every class's probability ('score' alone)")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="one per input, in input order")


class FieldError(BaseModel):
    loc: list[str] = Field(description="where in the body, e.g. ['inputs', '0', 'text']")
    msg: str


class Problem(BaseModel):
    detail: str = Field(description="what is wrong, in one line")
    errors: list[FieldError] | None = Field(default=None, description="each invalid field (422)")


class FillMaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(
        min_length=1, max_length=MAX_TEXT_CHARS, description="text with one or more [MASK]"
    )
    top_k: int = Field(default=5, ge=1, le=100, description="candidates per mask")


class Candidate(BaseModel):
    token: str
    score: float


class FillMaskResponse(BaseModel):
    masks: list[list[Candidate]] = Field(description="per mask, in text order: the top-k")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    max_new_tokens: int = Field(default=64, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0, description="0 is greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, description="sample among the k likeliest; 0: all")
    chat: bool | None = Field(
        default=None, description="wrap the prompt as a user chat turn; unset: as trained"
    )
    seed: int | None = Field(default=None, description="for reproducible sampling")


class GenerateResponse(BaseModel):
    text: str = Field(description="the continuation, without the prompt")


class Health(BaseModel):
    status: Literal["ok"]


class Info(BaseModel):
    task: Literal["classification", "multi_label", "regression", "masked-lm", "causal-lm"]
    labels: list[str] = Field(description="class names in id order (empty for regression)")
    model_path: str
    device: str = Field(description="where the model runs: cpu or cuda")
    precision: str = Field(description="number format of the forward pass, and why")
    max_length: int = Field(description="tokens per text (or pair) before truncation")
    batching: bool
    max_batch_size: int = Field(description="most texts merged into one model call")
    max_wait_ms: float = Field(description="how long a batch waits for more requests")
    max_inputs: int
    max_text_chars: int
    max_body_bytes: int


@dataclass
class _Job:
    texts: list[str]
    pairs: list[str | None]
    future: asyncio.Future = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher:
    """Queued requests, run by one worker task as merged `predict` calls, one call at a time.

    A batch starts with the oldest request and takes the next ones while they fit in
    `max_batch_size` texts and arrive within `max_wait_s` of its start; a larger request runs
    alone. `max_batch_size=1` runs every request as its own call.
    """

    def __init__(self, predict: PredictFn, max_batch_size: int, max_wait_s: float) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()

    async def submit(self, texts: list[str], pairs: list[str | None]) -> list[dict[str, Any]]:
        job = _Job(texts, pairs)
        await self.queue.put(job)
        return await job.future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        held: _Job | None = None  # taken from the queue, but too big for the batch before it
        while True:
            first = held or await self.queue.get()
            held = None
            batch, size = [first], len(first.texts)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch_size:
                if self.queue.empty():
                    try:
                        job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                else:  # already waiting: taken even when the deadline has passed
                    job = self.queue.get_nowait()
                if size + len(job.texts) > self.max_batch_size:
                    held = job
                    break
                batch.append(job)
                size += len(job.texts)
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Job]) -> None:
        texts = [t for job in batch for t in job.texts]
        pairs = [p for job in batch for p in job.pairs]
        try:
            rows = await asyncio.to_thread(self._predict_rows, texts, pairs)
        except Exception as e:
            if len(batch) > 1:  # one bad request must not fail the others merged with it
                for job in batch:
                    await self._run_batch([job])
            elif not batch[0].future.done():
                batch[0].future.set_exception(e)
            return
        start = 0
        for job in batch:
            if not job.future.done():  # its client may have gone away meanwhile
                job.future.set_result(rows[start : start + len(job.texts)])
            start += len(job.texts)

    def _predict_rows(self, texts: list[str], pairs: list[str | None]) -> list[dict[str, Any]]:
        """Single texts and pairs take one call each: a dataset has a pair column or not."""
        out: list[dict[str, Any]] = [{} for _ in texts]
        single = [i for i, p in enumerate(pairs) if p is None]
        paired = [i for i, p in enumerate(pairs) if p is not None]
        if single:
            rows = self.predict([texts[i] for i in single], None)
            for i, row in zip(single, rows, strict=True):
                out[i] = row
        if paired:
            rows = self.predict([texts[i] for i in paired], [pairs[i] for i in paired])
            for i, row in zip(paired, rows, strict=True):
                out[i] = row
        return out


class BodyLimit:
    """413 with a JSON message for a body over `max_bytes`, before any of it is parsed.

    The body is read here (never more than `max_bytes` of it held) and replayed to the app.
    FastAPI's own `max_body_size` answers a declared oversize body in plain text, and before
    reading it: a client still sending then meets a closed connection instead of the 413. So an
    oversize body is read to its end and dropped, unless it is over `DRAIN_BYTES` too.
    """

    DRAIN_BYTES = 16 << 20

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes + self.DRAIN_BYTES:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= self.max_bytes + self.DRAIN_BYTES:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size <= self.max_bytes:
                chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if size > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later calls wait for the client to disconnect
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is larger than {self.max_bytes} bytes (--max-body-bytes)"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


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
    predictor: Predictor | FillMasker | Generator,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    batching: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The ASGI app; its lifespan starts and stops the batching worker."""
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


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    batching: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
    precision: str = "auto",
) -> None:
    """Load the model once, in `precision` (hardware.inference_placement), and serve it until
    interrupted (Ctrl-C, SIGTERM)."""
    import datasets
    import uvicorn

    datasets.disable_progress_bars()  # else every request draws a tokenizing bar in the log
    predictor = load_for_serving(model, precision)
    predictor.placement.announce()
    app = create_app(predictor, max_batch_size, max_wait_ms, batching, max_body_bytes)
    # No access log: a line per request costs throughput and says little for this API.
    uvicorn.run(app, host=host, port=port, access_log=False)
