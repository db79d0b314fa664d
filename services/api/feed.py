"""Live count updates: the projector thread publishes each stored batch; SSE clients receive it."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson

from services.settings import VIETNAM as VN

KEEPALIVE_SECONDS = 15.0


HOUR_MS = 3_600_000


@lru_cache(maxsize=4096)
def _vietnam_hour(hour: int) -> str:
    """The start of the `hour`-th UTC hour since the epoch, in Vietnam time (ISO 8601)."""
    return datetime.fromtimestamp(hour * 3600, VN).isoformat()


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What one stored batch adds to the counts, by commune x event hour x event type."""
    counts: Counter[tuple[str, str, int, str]] = Counter()
    for e in events:  # occurred_at in epoch ms (AvroCodec.decode_plain); Vietnam: whole hours
        hour = e["occurred_at"] // HOUR_MS
        counts[(e["province_code"], e["commune_code"], hour, e["event_type"])] += 1
    return {
        "at": datetime.now(VN).isoformat(),
        "events": len(events),
        "counts": [
            {
                "province_code": p,
                "commune_code": c,
                "hour": _vietnam_hour(h),
                "event_type": t,
                "n": n,
            }
            for (p, c, h, t), n in sorted(counts.items())
        ],
    }


class Feed:
    """Fans out updates from the projector thread to every connected event-stream client."""

    def __init__(self, max_queue: int = 1000) -> None:
        self._subscribers: dict[asyncio.Queue[bytes], asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        self._max_queue = max_queue

    def publish(self, events: list[dict[str, Any]]) -> None:
        message = b"event: counts\ndata: " + orjson.dumps(summarize(events)) + b"\n\n"
        with self._lock:
            targets = list(self._subscribers.items())
        for queue, loop in targets:
            loop.call_soon_threadsafe(self._offer, queue, message)

    @staticmethod
    def _offer(queue: asyncio.Queue[bytes], message: bytes) -> None:
        if queue.full():  # a client that does not read loses old updates, not the server
            queue.get_nowait()
        queue.put_nowait(message)

    async def stream(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(self._max_queue)
        with self._lock:
            self._subscribers[queue] = asyncio.get_running_loop()
        try:
            yield b"retry: 2000\nevent: hello\ndata: {}\n\n"
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keepalive\n\n"
        finally:
            with self._lock:
                self._subscribers.pop(queue, None)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
