"""Limits: request bodies over a size (413, before any work); commands per principal (429)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.errors import ApiError
from services.api.responses import OrjsonResponse
from services.credentials import CredentialStore


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


class CommandLimit:
    """Per-principal command tokens, leased from the shared bucket (the credential store) in
    lots and spent from memory: a principal that sends one command now and then takes one
    token per statement, as before; one that keeps sending gets lots that double (up to
    LOT_MAX, and a tenth of the burst) while each is spent within LEASE_SECONDS. Unspent
    tokens expire with their lease (they are not given back): every process together never
    admits more than the shared bucket allows, and at most a lot per process goes unused."""

    LOT_MAX = 64
    LEASE_SECONDS = 1.0

    def __init__(
        self,
        store: CredentialStore,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.rate, self.burst, self.clock = store, rate, burst, clock
        self._leases: dict[str, tuple[int, float, int]] = {}  # id -> (left, expires, lot)
        self._lock = threading.Lock()

    def spend(self, principal_id: str) -> bool:
        """One token from a live lease in memory, if there is one."""
        now = self.clock()
        with self._lock:
            left, expires, lot = self._leases.get(principal_id, (0, 0.0, 1))
            if left and now < expires:
                self._leases[principal_id] = (left - 1, expires, lot)
                return True
        return False

    def lease(self, principal_id: str) -> float:
        """A new lease from the shared bucket, one token of it spent: 0, or the seconds to
        wait when the bucket had none (blocking: call it from a worker thread)."""
        now = self.clock()
        with self._lock:
            _, expires, lot = self._leases.get(principal_id, (0, 0.0, 1))
        # the last lot was spent before it expired: the principal keeps sending, double it
        cap = max(1, min(self.LOT_MAX, self.burst // 10))
        lot = min(cap, lot * 2) if now < expires else 1
        taken, wait = self.store.lease(principal_id, self.rate, self.burst, lot)
        with self._lock:
            # Commands that found the lot spent at once each lease one: what another left
            # unspent is kept, not overwritten (those tokens are gone from the shared bucket).
            left, expires, _ = self._leases.get(principal_id, (0, 0.0, 1))
            kept = left if self.clock() < expires else 0
            self._leases[principal_id] = (
                kept + max(taken - 1, 0), now + self.LEASE_SECONDS, lot
            )  # fmt: skip
        return wait


async def rate_limited(request: Request) -> None:
    """A dependency after `require`: 429 `rate_limited` with Retry-After once the principal's
    bucket is empty (sized so that a station's day, a few hundred commands, never meets it).

    The bucket lives in the credential store, shared by every API process on one store; each
    process leases tokens from it in lots (CommandLimit), so most commands touch no store."""
    limit: CommandLimit | None = request.app.state.backbone.command_limit
    if limit is None:  # never silently unlimited: `build` always makes one
        raise RuntimeError("the API was built without its command limit")
    principal_id = request.state.principal.id
    if limit.spend(principal_id):
        return
    wait = await run_in_threadpool(limit.lease, principal_id)
    if wait > 0:
        err = ApiError(429, "rate_limited", "too many commands from this principal; retry later")
        err.headers["Retry-After"] = str(math.ceil(wait))
        raise err
