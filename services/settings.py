"""Settings for every service, read once from the environment into a frozen dataclass."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

# The roles of the work (README "Roles"), named so in tokens, AUTH_TOKENS and the credentials tool.
ROLES = ("station", "reviewer", "officer", "auditor", "viewer", "admin")
# The Kafka principals, one per component (README "Kafka principals and ACLs").
KAFKA_PRINCIPALS = ("admin", "relay", "projector", "signer", "subscriber")
VIETNAM = timezone(timedelta(hours=7))  # campaign times without an offset are Vietnam time


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    persistence_module: str
    sqlite_path: Path
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
    auth_tokens: Mapping[str, str] = field(default_factory=dict)  # token -> role (dev shortcut)
    credentials_store: Path = Path("var/credentials.sqlite")  # principals, token hashes only
    command_rate: float = 20.0  # commands per second per principal, sustained ...
    command_burst: int = 200  # ... after a burst of this many (429 beyond)
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
    # The event store: "sqlite" (embedded default, one file) or "postgres" (several writers;
    # the key store is then a table in the same database and schema).
    event_store: str = "sqlite"
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5433
    postgres_dbname: str = "eid"
    postgres_user: str = "eid"
    postgres_password: str = ""
    postgres_schema: str = "public"
    # Kafka authentication (issue 11): SASL/SCRAM-SHA-512 as one principal per component
    # (KAFKA_PRINCIPALS); passwords from KAFKA_PASSWORD_<PRINCIPAL>, else from the file
    # infra/kafka/broker.sh writes when it formats storage. PLAINTEXT: a broker without it.
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    kafka_credentials_file: Path = Path("var/kafka/credentials")
    kafka_passwords: Mapping[str, str] = field(default_factory=dict)

    @property
    def dlq_topic(self) -> str:
        return f"{self.kafka_topic}.dlq"

    @property
    def access_topic(self) -> str:
        """Access records (who read whose history, why): restricted, not for every subscriber."""
        return f"{self.kafka_topic}.access"

    @property
    def relay_transactional_id(self) -> str:
        """The relay's transactional id: one per topic, so a second relay fences the first."""
        return f"relay-{self.kafka_topic}"

    @property
    def checkpoint_topic(self) -> str:
        """Signed checkpoints, so that copies of them live outside this host."""
        return f"{self.kafka_topic}.checkpoints"

    @property
    def postgres_dsn(self) -> str:
        """The libpq conninfo of the PostgreSQL store (without its schema)."""
        parts = {"host": self.postgres_host, "port": self.postgres_port,
                 "dbname": self.postgres_dbname, "user": self.postgres_user,
                 "password": self.postgres_password}  # fmt: skip
        quoted = {k: str(v).replace("\\", "\\\\").replace("'", "\\'") for k, v in parts.items()}
        return " ".join(f"{key}='{value}'" for key, value in quoted.items())

    def eventsourcing_env(self) -> dict[str, str]:
        """The environment the eventsourcing library reads to pick its event store."""
        env = {"PERSISTENCE_MODULE": self.persistence_module}
        if self.persistence_module.endswith("sqlite"):
            env["SQLITE_DBNAME"] = str(self.sqlite_path)
            env["SQLITE_LOCK_TIMEOUT"] = "30"
        if self.event_store == "postgres":
            env.update(
                POSTGRES_HOST=self.postgres_host,
                POSTGRES_PORT=str(self.postgres_port),
                POSTGRES_DBNAME=self.postgres_dbname,
                POSTGRES_USER=self.postgres_user,
                POSTGRES_PASSWORD=self.postgres_password,
                POSTGRES_SCHEMA=self.postgres_schema,
                POSTGRES_POOL_SIZE="2",  # kept open; up to 2 + 8 under load
                POSTGRES_MAX_OVERFLOW="8",
                POSTGRES_CONNECT_TIMEOUT="10",
            )
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        var_dir = Path(env.get("VAR_DIR", "var")).resolve()
        var_dir.mkdir(parents=True, exist_ok=True)
        store = _event_store(env)
        return cls(
            var_dir=var_dir,
            persistence_module=_persistence_module(env, store),
            sqlite_path=Path(env.get("SQLITE_DBNAME", str(var_dir / "events.sqlite"))),
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
            credentials_store=Path(
                env.get("CREDENTIALS_STORE", str(var_dir / "credentials.sqlite"))
            ),
            command_rate=float(env.get("COMMAND_RATE", "20")),
            command_burst=int(env.get("COMMAND_BURST", "200")),
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
            event_store=store,
            postgres_host=env.get("POSTGRES_HOST", "127.0.0.1"),
            postgres_port=int(env.get("POSTGRES_PORT", "5433")),
            postgres_dbname=env.get("POSTGRES_DBNAME", "eid"),
            postgres_user=env.get("POSTGRES_USER", "eid"),
            postgres_password=_postgres_password(env, var_dir) if store == "postgres" else "",
            postgres_schema=env.get("POSTGRES_SCHEMA", "public"),
            kafka_security_protocol=_kafka_security_protocol(env),
            kafka_credentials_file=Path(
                env.get("KAFKA_CREDENTIALS_FILE", str(var_dir / "kafka" / "credentials"))
            ),
            kafka_passwords={
                name: env[f"KAFKA_PASSWORD_{name.upper()}"]
                for name in KAFKA_PRINCIPALS
                if env.get(f"KAFKA_PASSWORD_{name.upper()}")
            },
        )


def _kafka_security_protocol(env: Mapping[str, str]) -> str:
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    if protocol not in ("SASL_PLAINTEXT", "PLAINTEXT"):  # TLS: DEPLOYING.md
        raise ValueError(
            f"KAFKA_SECURITY_PROTOCOL must be SASL_PLAINTEXT or PLAINTEXT, not {protocol!r}"
        )
    return protocol


def _event_store(env: Mapping[str, str]) -> str:
    """EVENT_STORE (sqlite | postgres); a PERSISTENCE_MODULE naming postgres says the same."""
    default = "postgres" if env.get("PERSISTENCE_MODULE", "").endswith("postgres") else "sqlite"
    store = env.get("EVENT_STORE", default)
    if store not in ("sqlite", "postgres"):
        raise ValueError(f"EVENT_STORE must be sqlite or postgres, not {store!r}")
    return store


def _persistence_module(env: Mapping[str, str], store: str) -> str:
    """The eventsourcing module: EVENT_STORE's when given, else PERSISTENCE_MODULE's."""
    if "EVENT_STORE" in env:
        return f"eventsourcing.{store}"
    return env.get("PERSISTENCE_MODULE", "eventsourcing.sqlite")


def _postgres_password(env: Mapping[str, str], var_dir: Path) -> str:
    """POSTGRES_PASSWORD, else the file infra/postgres/postgres.sh generates at initdb
    (POSTGRES_PASSWORD_FILE, default VAR_DIR/postgres/password)."""
    if "POSTGRES_PASSWORD" in env:
        return env["POSTGRES_PASSWORD"]
    path = Path(env.get("POSTGRES_PASSWORD_FILE", str(var_dir / "postgres" / "password")))
    return path.read_text().strip() if path.exists() else ""


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
