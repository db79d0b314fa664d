"""Wiring: builds the backbone (registry, writer, read models, embedded projector) once."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import FastAPI
from prometheus_client.registry import Collector

from projections.audit import AuditTrail, audit_trail
from projections.runner import Projector, ProjectorOptions, access_projector
from services.api.feed import Feed
from services.api.limits import CommandLimit
from services.credentials import CredentialStore, open_credential_store
from services.health import ComponentHealth, FatalError
from services.metrics import (
    EventStoreCollector,
    HealthCollector,
    Metrics,
    ProjectorCollector,
    chain,
)
from services.registry.application import Outcome, Registry
from services.registry.batching import CommandBatcher
from services.registry.commands import Command
from services.settings import Settings
from services.signer.signer import Signer
from services.signer.tree import TreeStore, open_tree_store

log = logging.getLogger(__name__)


@dataclass
class Backbone:
    """What the API talks to: the registry (write side) and the read models."""

    settings: Settings
    registry: Registry
    trail: AuditTrail
    batcher: CommandBatcher
    feed: Feed = field(default_factory=Feed)
    projector: Projector | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    access_projector: Projector | None = None  # the restricted access topic's records
    access_thread: threading.Thread | None = None
    metrics: Metrics = field(default_factory=Metrics)
    log: TreeStore | None = None  # the signed log, read for proofs (None: not opened)
    signer: Signer | None = None  # embedded unless the API runs with --no-signer
    signer_thread: threading.Thread | None = None
    # Principals and the command buckets (rate limits) every API process on the store shares.
    credentials: CredentialStore | None = None
    command_limit: CommandLimit | None = None  # tokens leased from those buckets, per process

    def projectors(self) -> list[tuple[str, Projector, threading.Thread | None]]:
        """The embedded projectors, by component name, with their threads."""
        found = [("projector", self.projector, self.thread),
                 ("access_projector", self.access_projector, self.access_thread)]  # fmt: skip
        return [(name, p, t) for name, p, t in found if p is not None]

    async def submit(self, command: Command) -> Outcome:
        """Accept a command and wait for the group-commit writer's outcome (no thread held)."""
        return await asyncio.wrap_future(self.batcher.enqueue(command))

    async def submit_backlog(self, commands: list[Command]) -> list[Outcome | Exception]:
        """Accept a device backlog: applied in order (in transactions of at most
        MAX_TRANSACTION commands), by the same writer."""
        return await asyncio.wrap_future(self.batcher.enqueue_backlog(commands))

    def start(self) -> None:
        for thread in (self.thread, self.access_thread, self.signer_thread):
            if thread is not None:
                thread.start()

    def close(self) -> None:
        self.stop.set()
        for thread in (self.thread, self.access_thread, self.signer_thread):
            if thread is not None and thread.is_alive():
                thread.join(timeout=15)
        self.batcher.close()
        self.registry.close()
        if self.log is not None:
            self.log.close()
        if self.credentials is not None:
            self.credentials.close()


def build(
    settings: Settings,
    embedded_projector: bool = True,
    metrics: Metrics | None = None,
    embedded_signer: bool = True,
) -> Backbone:
    """Wire the registry, the ClickHouse read models, the signed log and (embedded) the
    projector and the signer."""
    registry = Registry(settings)
    trail = audit_trail(settings.clickhouse_url, settings.clickhouse_database)
    metrics = metrics or Metrics()
    backbone = Backbone(settings, registry, trail, CommandBatcher(registry), metrics=metrics)
    backbone.credentials = open_credential_store(settings)
    backbone.command_limit = CommandLimit(
        backbone.credentials, settings.command_rate, settings.command_burst
    )
    watched: list[Collector] = [EventStoreCollector(registry.recorder.max_notification_id)]
    healths = []
    if embedded_projector:
        # The only projector of this engine: no group to share its partitions with.
        options = ProjectorOptions(group_mode=False)
        on_batch = chain(backbone.feed.publish, metrics.projected)
        # The projectors' own ClickHouse client: their inserts never queue behind a dashboard
        # read on the API's client (the engine runs the two side by side).
        writer = audit_trail(settings.clickhouse_url, settings.clickhouse_database)
        projector = Projector(settings, writer, options, on_batch=on_batch)
        backbone.projector = projector
        watched.append(ProjectorCollector(projector))
        backbone.thread = _thread(projector, backbone.stop)
        access = backbone.access_projector = access_projector(settings, options, writer.client)
        backbone.access_thread = _thread(access, backbone.stop)
        healths += [projector.health, access.health]
    backbone.log = open_tree_store(settings)
    if embedded_signer:
        # Several API processes may each embed one: they take turns on the tree store's lock.
        signer = backbone.signer = Signer(settings, registry)
        backbone.signer_thread = _thread(signer, backbone.stop)
        healths.append(signer.health)
    if healths:
        watched.append(HealthCollector(*healths))
    metrics.watch(*watched)  # in place of an earlier backbone's, if the app started before
    return backbone


class _Component(Protocol):
    health: ComponentHealth

    def run(self, stop: threading.Event) -> None: ...


def _thread(component: _Component, stop: threading.Event) -> threading.Thread:
    """An embedded component's thread (projector, signer): its health says why it ended, if
    it ever does."""
    name = component.health.name

    def run() -> None:
        try:
            component.run(stop)
        except FatalError:
            pass  # recorded in its health and logged by the loop; /readyz reports it
        except BaseException as exc:
            component.health.failed(exc)
            log.exception("the %s thread died", name)
            raise

    return threading.Thread(target=run, name=name, daemon=True)


def lifespan(
    settings: Settings,
    embedded_projector: bool,
    metrics: Metrics | None = None,
    embedded_signer: bool = True,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Build the backbone when the server starts, close it when it stops."""

    @asynccontextmanager
    async def span(app: FastAPI) -> AsyncIterator[None]:
        backbone = build(settings, embedded_projector, metrics, embedded_signer)
        app.state.backbone = backbone
        backbone.start()
        try:
            yield
        finally:
            backbone.close()

    return span
