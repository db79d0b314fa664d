"""Refuses request bodies over a size limit (413), declared or streamed, before any work."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import ApiError
from services.api.responses import OrjsonResponse


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel that first gives back `messages`, then the real channel."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class BodyLimit:
    """Pure ASGI middleware: checks Content-Length, and measures bodies streamed without one."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            # Streamed without a declared length: read it (up to the limit) before the app does.
            messages, seen = [], 0
            while True:
                message = await receive()
                messages.append(message)
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            receive = _replay(messages, receive)
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = ApiError(413, "body_too_large", f"bodies are limited to {self.max_bytes} bytes")
        response: Any = OrjsonResponse(err.body(), status_code=413)
        await response(scope, receive, send)
