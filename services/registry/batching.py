"""Group commit: commands from many request threads are saved together, in arrival order.

SQLite (and any event store) takes one writer at a time; saving many aggregates in one
transaction costs little more than saving one, so a single writer thread drains whatever is
waiting and persists it with `Registry.handle_batch`. A device's offline backlog is queued as
one unit: its commands stay together and in order inside the writer's transaction.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from services.registry.application import Outcome, Registry
from services.registry.commands import Command


@dataclass(frozen=True)
class _Request:
    commands: list[Command]
    future: Future[Any]
    backlog: bool  # the future gets one result per command, refusals included

    def settle(self, results: list[Outcome | Exception]) -> None:
        if self.backlog:
            self.future.set_result(results)
        elif isinstance(results[0], Exception):
            self.future.set_exception(results[0])
        else:
            self.future.set_result(results[0])


_STOP = object()


class CommandBatcher:
    """The single writer: callers queue commands and get futures of their outcomes."""

    def __init__(self, registry: Registry, max_batch: int = 256) -> None:
        self.registry = registry
        self.max_batch = max_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="command-writer", daemon=True)
        self._thread.start()

    def enqueue(self, command: Command) -> Future[Outcome]:
        """Queue `command`; the future holds its outcome, or the exception that refused it."""
        future: Future[Outcome] = Future()
        self._queue.put(_Request([command], future, backlog=False))
        return future

    def enqueue_backlog(self, commands: list[Command]) -> Future[list[Outcome | Exception]]:
        """Queue a backlog; the future holds one result per command, in order."""
        future: Future[list[Outcome | Exception]] = Future()
        if not commands:
            future.set_result([])
        else:
            self._queue.put(_Request(list(commands), future, backlog=True))
        return future

    def submit(self, command: Command, timeout: float = 60.0) -> Outcome:
        """Accept `command` and wait for its outcome (blocking)."""
        return self.enqueue(command).result(timeout)

    def _run(self) -> None:
        while (first := self._queue.get()) is not _STOP:
            batch: list[_Request] = [first]  # type: ignore[list-item]
            size = len(batch[0].commands)
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)  # type: ignore[arg-type]
                size += len(item.commands)  # type: ignore[attr-defined]
            self._persist(batch)

    def _persist(self, batch: list[_Request]) -> None:
        commands = [command for request in batch for command in request.commands]
        try:
            results = self.registry.handle_batch(commands)
        except Exception as exc:  # a fault (e.g. the store is unreachable): fail the batch
            for request in batch:
                request.future.set_exception(exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.commands)
            request.settle(results[start:end])
            start = end

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
