"""Projectors over the embedded ClickHouse engine, for tests that drive them step by step."""

from __future__ import annotations

import dataclasses

from projections.audit import audit_trail
from projections.runner import Projector, ProjectorOptions
from services.registry.application import Registry
from services.settings import Settings
from tests.support.factories import registry_with
from tests.support.kafka import publish_all
from tests.support.waiting import wait_until


def projector_for(
    settings: Settings, chdb_url: str, options: ProjectorOptions | None = None
) -> Projector:
    """A started projector of `settings`' topic into its database on the chdb at `chdb_url`."""
    settings = dataclasses.replace(settings, clickhouse_url=chdb_url)
    trail = audit_trail(chdb_url, settings.clickhouse_database)
    projector = Projector(settings, trail, options or ProjectorOptions())
    projector.start()
    return projector


def run_until(projector: Projector, stored: int, timeout: float = 60) -> None:
    """Step `projector` until it has stored `stored` events in all (a fatal error is raised)."""
    wait_until(lambda: projector.step() is not None and projector.stored >= stored, timeout, 0)


def projected(settings: Settings, chdb_url: str, registrations: int) -> tuple[Registry, Projector]:
    """A store with that many registrations, published and projected (the projector closed)."""
    registry = registry_with(settings, registrations)
    publish_all(settings, registry)
    projector = projector_for(settings, chdb_url)
    run_until(projector, registrations)
    projector.close()
    return registry, projector
