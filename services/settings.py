"""Settings for every service, read once from the environment into a frozen dataclass."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROLES = ("station", "auditor", "viewer", "admin")
VIETNAM = timezone(timedelta(hours=7))  # campaign times without an offset are Vietnam time


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    persistence_module: str
    sqlite_path: Path
    postgres_dsn: str
    kafka_bootstrap: str
    kafka_topic: str
    clickhouse_url: str
    clickhouse_database: str
    projector_group: str
    kafka_session_timeout_ms: int
    api_host: str
    api_port: int
    pseudonym_secret: bytes
    kek_file: Path  # the key-encryption key (32 bytes); a KMS/HSM holds it in production
    key_store: Path  # the per-citizen data keys, wrapped by the KEK
    auth_tokens: Mapping[str, str] = field(default_factory=dict)  # token -> role
    campaign_start: datetime = datetime.fromisoformat("2022-01-01T00:00:00+07:00")
    max_future_seconds: int = 300
    ready_stuck_seconds: float = 30.0  # /readyz: no loop progress for longer is "stuck"
    ready_max_lag: int = 10_000  # /readyz: events behind beyond this is "lagging"
    relay_metrics_port: int = 9464  # the relay's /metrics on 127.0.0.1; 0: not served
    relay_metrics_url: str = ""  # where the API's /readyz reads the relay's metrics, if set
    # The signed Merkle log (issue 10): the signer's Ed25519 key is held apart from the read
    # model and the topic; the tree's nodes and the checkpoints live in their own store.
    checkpoint_key_file: Path = Path("var/keys/checkpoint.key")
    merkle_store: Path = Path("var/merkle.sqlite")
    checkpoint_origin: str = "project06.eid/citizen-events"
    checkpoint_every: int = 1000  # sign after this many new leaves ...
    checkpoint_seconds: float = 1.0  # ... or this long after the first unsigned one

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"

    @property
    def access_topic(self) -> str:
        """Access records (who read whose history, why): restricted, not for every subscriber."""
        return f"{self.kafka_topic}.access"

    @property
    def checkpoint_topic(self) -> str:
        """Signed checkpoints, so that copies of them live outside this host."""
        return f"{self.kafka_topic}.checkpoints"

    def eventsourcing_env(self) -> dict[str, str]:
        """The environment the eventsourcing library reads to pick its event store."""
        env = {"PERSISTENCE_MODULE": self.persistence_module}
        if self.persistence_module.endswith("sqlite"):
            env["SQLITE_DBNAME"] = str(self.sqlite_path)
            env["SQLITE_LOCK_TIMEOUT"] = "30"
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("VAR_DIR", "var")).resolve()
        var_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            var_dir=var_dir,
            persistence_module=env.get("PERSISTENCE_MODULE", "eventsourcing.sqlite"),
            sqlite_path=Path(env.get("SQLITE_DBNAME", str(var_dir / "events.sqlite"))),
            postgres_dsn=env.get("POSTGRES_DSN", ""),
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            kafka_topic=env.get("KAFKA_TOPIC", "citizen-events"),
            clickhouse_url=env.get("CLICKHOUSE_URL", f"chdb://{var_dir / 'chdb'}"),
            clickhouse_database=env.get("CLICKHOUSE_DATABASE", "eid"),
            projector_group=env.get("PROJECTOR_GROUP", "projector-read-models"),
            kafka_session_timeout_ms=int(env.get("KAFKA_SESSION_TIMEOUT_MS", "6000")),
            api_host=env.get("API_HOST", "127.0.0.1"),
            api_port=int(env.get("API_PORT", "8060")),
            pseudonym_secret=_pseudonym_secret(env, var_dir),
            kek_file=Path(env.get("KEK_FILE", str(var_dir / "keys" / "kek"))),
            key_store=Path(env.get("KEY_STORE", str(var_dir / "keys" / "data_keys.sqlite"))),
            auth_tokens=parse_auth_tokens(env.get("AUTH_TOKENS", "")),
            campaign_start=_vietnam_time(env.get("CAMPAIGN_START", "2022-01-01T00:00:00+07:00")),
            ready_stuck_seconds=float(env.get("READY_STUCK_SECONDS", "30")),
            ready_max_lag=int(env.get("READY_MAX_LAG", "10000")),
            relay_metrics_port=int(env.get("RELAY_METRICS_PORT", "9464")),
            relay_metrics_url=env.get("RELAY_METRICS_URL", ""),
            checkpoint_key_file=Path(
                env.get("CHECKPOINT_KEY_FILE", str(var_dir / "keys" / "checkpoint.key"))
            ),
            merkle_store=Path(env.get("MERKLE_STORE", str(var_dir / "merkle.sqlite"))),
            checkpoint_origin=env.get("CHECKPOINT_ORIGIN", "project06.eid/citizen-events"),
            checkpoint_every=int(env.get("CHECKPOINT_EVERY", "1000")),
            checkpoint_seconds=float(env.get("CHECKPOINT_SECONDS", "1.0")),
        )


def _vietnam_time(text: str) -> datetime:
    """An ISO date or datetime; without an offset it is Vietnam time (UTC+7)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=VIETNAM)


def parse_auth_tokens(spec: str) -> dict[str, str]:
    """Parse `role=token,role=token` into a token -> role mapping."""
    tokens: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        role, sep, token = item.partition("=")
        if not sep or role not in ROLES or not token:
            raise ValueError(f"AUTH_TOKENS item {role!r} must be role=token, role in {ROLES}")
        tokens[token] = role
    return tokens


def _pseudonym_secret(env: Mapping[str, str], var_dir: Path) -> bytes:
    """The key of the account pseudonym; a development default is generated under var/."""
    if env.get("PSEUDONYM_SECRET"):
        return env["PSEUDONYM_SECRET"].encode()
    path = var_dir / "pseudonym.key"
    if not path.exists():
        write_once(path, secrets.token_hex(32).encode())
    return path.read_text().strip().encode()


def write_once(path: Path, content: bytes) -> None:
    """Write `content` to a new file (0600) unless another process made it first; a reader
    never sees it half written (written beside it, then linked into place). For the secrets
    a fresh deployment generates, when the API and the relay start together."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(temporary, path)  # fails if it exists: the first one made wins
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
