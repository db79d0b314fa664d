"""Fixtures over HTTP: the API and the relay of a fresh deployment, as real processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import Api, running_api


@pytest.fixture(scope="module")
def api(
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    module_store_env: dict[str, str],
) -> Iterator[Api]:
    """One deployment per test module and event store, shared by its tests (in the order they
    are written)."""
    name = request.module.__name__.rpartition(".")[2]
    with running_api(kafka_bootstrap, tmp_path_factory.mktemp(name), **module_store_env) as client:
        yield client
