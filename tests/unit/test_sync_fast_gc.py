"""A batch runs with the cyclic garbage collector paused, and leaves it as it found it."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.registry import application
from services.registry.application import Registry, collector_paused
from services.settings import Settings
from tests.support.factories import register_command


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    made = Registry(Settings.from_env({"VAR_DIR": str(tmp_path), "PSEUDONYM_SECRET": "gc"}))
    yield made
    made.close()


@pytest.fixture(autouse=True)
def collector_back_on() -> Iterator[None]:
    yield
    gc.enable()


def test_the_collector_is_paused_during_a_batch_and_back_on_after(registry: Registry) -> None:
    seen: list[bool] = []
    save = registry.save

    def spying_save(*objs: object) -> object:
        seen.append(gc.isenabled())
        return save(*objs)

    registry.save = spying_save  # type: ignore[method-assign]
    assert gc.isenabled()
    results = registry.handle_batch([register_command() for _ in range(3)])

    assert not any(isinstance(r, Exception) for r in results)
    assert seen == [False] and gc.isenabled() and application._gc_batches == 0


def test_a_failing_batch_restores_it_and_a_paused_collector_stays_paused(
    registry: Registry,
) -> None:
    def broken_save(*objs: object) -> object:
        raise RuntimeError("store unreachable")

    registry.save = broken_save  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        registry.handle_batch([register_command()])
    assert gc.isenabled()

    gc.disable()  # someone else's choice: kept
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_batches_leave_it_on_only_once_the_last_ends() -> None:
    first_in, release = threading.Event(), threading.Event()

    def first() -> None:
        with collector_paused():
            first_in.set()
            release.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(5)
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the first batch still runs
    release.set()
    thread.join(5)
    assert gc.isenabled() and application._gc_batches == 0
