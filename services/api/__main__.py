"""Run the API (with the embedded projector): `python -m services.api --help`."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
from pathlib import Path

import uvicorn

from services.api.app import create_app
from services.registry.sealing import KeyEncryptionKeyError, open_key_store
from services.settings import ROLES, Settings

log = logging.getLogger("services.api")


def dev_tokens(var_dir: Path) -> str:
    """Development role tokens, generated once into var/auth_tokens (mode 600)."""
    path = var_dir / "auth_tokens"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        spec = ",".join(f"{role}={secrets.token_urlsafe(18)}" for role in ROLES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(spec)
    return path.read_text().strip()


def check_keys(settings: Settings) -> None:
    """Refuse to start, with one line saying why, when the key-encryption key is missing (but
    a key store or an event store exists) or does not open the key store: the registry would
    fail inside the server's startup, with a traceback instead of a reason."""
    try:
        open_key_store(settings)[1].close()
    except KeyEncryptionKeyError as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.api",
        description="Serve the HTTP API on API_HOST:API_PORT (default 127.0.0.1:8060). "
        "Unless --no-projector, the projector runs in this process (the embedded ClickHouse "
        "engine allows one process per data directory). Unless --no-signer, the signer of the "
        "Merkle log runs here too (or run `python -m services.signer` apart). Principals' "
        "credentials are read from CREDENTIALS_STORE, or with EVENT_STORE=postgres from "
        "the event store's database (`python -m services.credentials`). "
        "Without AUTH_TOKENS (a development shortcut: one nation-wide principal per role), "
        "role tokens are generated into VAR_DIR/auth_tokens and printed.",
    )
    parser.add_argument("--no-projector", action="store_true", help="do not run the projector here")
    parser.add_argument("--no-signer", action="store_true", help="do not run the signer here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s api %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)

    if not os.environ.get("AUTH_TOKENS"):
        os.environ["AUTH_TOKENS"] = dev_tokens(Path(os.environ.get("VAR_DIR", "var")).resolve())
        where = Path(os.environ.get("VAR_DIR", "var")).resolve() / "auth_tokens"
        print(f"Role tokens, development shortcut (nation-wide; from {where}):")
        for item in os.environ["AUTH_TOKENS"].split(","):
            print("  " + item.replace("=", ": ", 1))
    settings = Settings.from_env()
    check_keys(settings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    print(f"API: {base}/  health: {base}/healthz  OpenAPI: {base}/openapi.json", flush=True)
    app = create_app(
        settings, embedded_projector=not args.no_projector, embedded_signer=not args.no_signer
    )
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning")


if __name__ == "__main__":
    main()
