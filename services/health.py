"""What each long-running component tells operators: alive, progressing, retrying, or stopped."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class FatalError(RuntimeError):
    """A condition a restart cannot cure (events gone, another topic, an unpublishable event):
    the component stops, says why, and waits for an operator."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class ComponentHealth:
    """The live state of one component, updated by its loop and read by /readyz and /metrics.

    States: starting, running, retrying (a transient fault, backing off), paused (waiting for
    an operator, e.g. an unknown schema), failed (a fatal error), stopped.
    """

    name: str
    state: str = "starting"
    detail: str = ""
    last_error: str | None = None
    last_error_at: str | None = None
    restarts: int = 0
    lag: int | None = None  # events behind (relay: store head - published; projector: offsets)
    last_progress: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def running(self) -> None:
        with self._lock:
            self.state, self.detail = "running", ""
            self.last_progress = time.monotonic()

    def progressed(self, lag: int | None = None) -> None:
        """The loop went round (whether or not it moved events): it is not stuck."""
        with self._lock:
            self.last_progress = time.monotonic()
            if lag is not None:
                self.lag = lag
            if self.state == "retrying":
                self.state, self.detail = "running", ""

    def retrying(self, exc: BaseException) -> None:
        with self._lock:
            self.state, self.restarts = "retrying", self.restarts + 1
            self.detail = self.last_error = _describe(exc)
            self.last_error_at = _now()

    def paused(self, reason: str) -> None:
        with self._lock:
            self.state, self.detail = "paused", reason
            self.last_error, self.last_error_at = reason, _now()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.state = "failed"
            self.detail = self.last_error = _describe(exc)
            self.last_error_at = _now()

    def stopped(self) -> None:
        with self._lock:
            if self.state not in ("failed", "paused"):
                self.state = "stopped"

    def seconds_since_progress(self) -> float:
        return time.monotonic() - self.last_progress

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.state,
                "detail": self.detail,
                "lag": self.lag,
                "seconds_since_progress": round(time.monotonic() - self.last_progress, 1),
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "restarts": self.restarts,
            }


def _describe(exc: BaseException) -> str:
    """The error's class and message (messages here never carry personal numbers)."""
    text = str(exc).strip()[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
