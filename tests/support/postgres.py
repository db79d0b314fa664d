"""The PostgreSQL cluster of infra/postgres/postgres.sh: the one that accepts logins, or one
started for a while; a fresh schema in it for each deployment under test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.environment import unique
from tests.support.processes import ROOT

SCRIPT = ROOT / "infra" / "postgres" / "postgres.sh"
TEST_PORT = int(os.environ.get("TEST_POSTGRES_PORT", "5433"))  # the cluster the tests use
STORES = ("sqlite", "postgres")  # every store the integration and e2e suites run on


@dataclass(frozen=True)
class Cluster:
    """How to log in to a running cluster (its superuser owns the database)."""

    port: int
    password: str
    user: str = "eid"
    dbname: str = "eid"

    def env(self) -> dict[str, str]:
        """The settings of a deployment on this cluster (its own schema: see `fresh_schema`)."""
        return {"EVENT_STORE": "postgres", "POSTGRES_HOST": "127.0.0.1",
                "POSTGRES_PORT": str(self.port), "POSTGRES_USER": self.user,
                "POSTGRES_PASSWORD": self.password, "POSTGRES_DBNAME": self.dbname}  # fmt: skip

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password,
            dbname=self.dbname, autocommit=True, connect_timeout=10,
        )  # fmt: skip

    @contextmanager
    def fresh_schema(self) -> Iterator[str]:
        """A schema name no other deployment uses (made by the registry); dropped afterwards."""
        schema = unique("t")
        try:
            yield schema
        finally:
            self.drop(schema)

    def drop(self, schema: str) -> None:
        with self.connect() as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _script(action: str, var_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VAR_DIR": str(var_dir), "POSTGRES_PORT": str(port)}
    return subprocess.run([str(SCRIPT), action], cwd=ROOT, env=env, text=True, check=False)


@contextmanager
def running_postgres(var_dir: Path, port: int = TEST_PORT) -> Iterator[Cluster]:
    """The cluster of `var_dir` that accepts logins on `port`, or one started (and stopped
    again, by its PID) for the block. It fails, never skips, when none can be had."""
    password_file = var_dir / "postgres" / "password"
    if _script("status", var_dir, port).returncode == 0:
        yield Cluster(port, password_file.read_text().strip())
        return
    print(f"no PostgreSQL at 127.0.0.1:{port}: starting infra/postgres/postgres.sh", flush=True)
    if _script("start", var_dir, port).returncode != 0:
        raise RuntimeError(f"infra/postgres/postgres.sh start failed (port {port})")
    try:
        yield Cluster(port, password_file.read_text().strip())
    finally:
        _script("stop", var_dir, port)
