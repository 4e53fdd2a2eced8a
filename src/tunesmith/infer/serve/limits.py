"""What one request may hold: the `MAX_*` limits, and `BodyLimit`, the middleware that answers
413 to an oversize body before any of it is parsed."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tunesmith.infer.serve.settings import ServeSettings

# The default of --max-body-bytes (ServeSettings holds it).
MAX_BODY_BYTES = ServeSettings().max_body_bytes
MAX_TEXT_CHARS = 20_000
MAX_INPUTS = 256
MAX_NEW_TOKENS = 1024


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
