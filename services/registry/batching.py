"""Group commit: commands from many request threads are saved together, in arrival order.

SQLite (and any event store) takes one writer at a time; saving many aggregates in one
transaction costs little more than saving one, so a single writer thread drains whatever is
waiting and applies it with `Registry.submit_many`.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from services.registry.application import Outcome, Registry
from services.registry.commands import Command

_STOP = object()


class CommandBatcher:
    """Callers block in `submit` until the batch holding their command is saved."""

    def __init__(self, registry: Registry, max_batch: int = 256) -> None:
        self.registry = registry
        self.max_batch = max_batch
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="command-writer", daemon=True)
        self._thread.start()

    def enqueue(self, command: Command) -> Future[Outcome]:
        """Queue `command`; the future holds its outcome, or the exception that refused it."""
        future: Future[Outcome] = Future()
        self._queue.put((command, future))
        return future

    def submit(self, command: Command, timeout: float = 60.0) -> Outcome:
        return self.enqueue(command).result(timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            self._apply(batch)  # type: ignore[arg-type]

    def _apply(self, batch: list[tuple[Command, Future[Outcome]]]) -> None:
        try:
            results = self.registry.submit_many([command for command, _ in batch])
        except Exception as exc:  # a fault (e.g. the store is unreachable): fail the batch
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)
