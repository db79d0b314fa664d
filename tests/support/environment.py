"""The environment of a fresh deployment: its own var/, topic, group, database and tokens."""

from __future__ import annotations

import uuid
from pathlib import Path

from services.kafka_acl import grant
from services.settings import Settings
from tests.support.broker import credentials_file

# One AUTH_TOKENS entry per role (the development shortcut: nation-wide principals).
TOKENS = {
    "station": "st-token",
    "reviewer": "rv-token",
    "officer": "of-token",
    "auditor": "au-token",
    "viewer": "vi-token",
    "admin": "ad-token",
}
# The role that sends each command endpoint's commands (README "Roles").
COMMAND_ROLES = {"/v1/decisions": "reviewer", "/v1/status-changes": "officer"}


def bearer(role: str) -> dict[str, str]:
    """The Authorization header of `role`'s token."""
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def unique(prefix: str) -> str:
    """`prefix` with a random suffix: a topic, group or database name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def auth_tokens(tokens: dict[str, str]) -> str:
    """The `AUTH_TOKENS` setting for role -> bearer token."""
    return ",".join(f"{role}={token}" for role, token in tokens.items())


def deployment_env(
    var_dir: Path, bootstrap: str, tokens: dict[str, str] = TOKENS, **overrides: str
) -> dict[str, str]:
    """Settings of a deployment nothing else shares (fresh names), `overrides` on top, with
    its principals granted their ACLs on the broker (as `make run` does)."""
    env = {
        "VAR_DIR": str(var_dir),
        "KAFKA_BOOTSTRAP": bootstrap,
        "KAFKA_TOPIC": unique("citizen-events"),
        "PROJECTOR_GROUP": unique("projector"),
        "CLICKHOUSE_DATABASE": unique("eid"),
        "AUTH_TOKENS": auth_tokens(tokens),
        "PSEUDONYM_SECRET": "test-secret",
        "CAMPAIGN_START": "2023-01-01T00:00:00+07:00",
        "CHECKPOINT_SECONDS": "0.2",  # tests read verified histories soon after writing them
        # One token here sends what thousands of devices would: the per-principal limit is
        # lifted (test_roles sets its own to test it; `make bench` measures without it).
        "COMMAND_RATE": "1000000",
        "COMMAND_BURST": "1000000",
        **kafka_login(bootstrap),
        **overrides,
    }
    return granted(env)


def kafka_login(bootstrap: str) -> dict[str, str]:
    """How a deployment logs in to the broker at `bootstrap`: with its users' passwords file,
    if it has one (infra/kafka/broker.sh with KAFKA_AUTH=off makes none)."""
    path = credentials_file(bootstrap)
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT" if path.exists() else "PLAINTEXT",
        "KAFKA_CREDENTIALS_FILE": str(path),
    }


def granted(env: dict[str, str]) -> dict[str, str]:
    """`env`, once its principals hold their ACLs on its topics and groups (idempotent)."""
    if env["KAFKA_SECURITY_PROTOCOL"] != "PLAINTEXT":
        grant(Settings.from_env(env))
    return env
