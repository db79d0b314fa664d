"""Fixtures of the integration tests that call the API in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from services.settings import Settings


@pytest.fixture
def api(kafka_bootstrap, env_for, chdb_url) -> Iterator[tuple[TestClient, Any]]:
    """The API of a fresh deployment in-process (no embedded projector), and its backbone."""
    settings = Settings.from_env(env_for(CLICKHOUSE_URL=chdb_url))
    with TestClient(create_app(settings, embedded_projector=False)) as client:
        yield client, client.app.state.backbone  # type: ignore[attr-defined]
