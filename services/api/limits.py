"""Limits: request bodies over a size (413, before any work); commands per principal (429)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
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


async def rate_limited(request: Request) -> None:
    """A dependency after `require`: 429 `rate_limited` with Retry-After once the principal's
    bucket is empty (sized so that a station's day, a few hundred commands, never meets it).

    The bucket lives in the credential store, updated in one statement per command, so every
    API process on one store counts against one limit per principal."""
    state = request.app.state
    settings = state.settings
    store = state.backbone.credentials
    wait = await run_in_threadpool(
        store.take, request.state.principal.id, settings.command_rate, settings.command_burst
    )
    if wait > 0:
        err = ApiError(429, "rate_limited", "too many commands from this principal; retry later")
        err.headers["Retry-After"] = str(math.ceil(wait))
        raise err
