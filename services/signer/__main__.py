"""Run the signer, or print its verifier key: `python -m services.signer --help`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from services.health import FatalError
from services.kafka import connect_as, wait_for_broker
from services.registry.application import Registry
from services.registry.sealing import KeyEncryptionKeyError
from services.settings import Settings
from services.signer.keys import load_signing_key, verifier_of
from services.signer.signer import Signer, SignerOptions

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.signer",
        description="Append every public event of the registry to the Merkle log and sign "
        "checkpoints (Ed25519, C2SP signed notes) every CHECKPOINT_EVERY events or "
        "CHECKPOINT_SECONDS; publish them on <KAFKA_TOPIC>.checkpoints. Reads VAR_DIR, the "
        "event store settings, CHECKPOINT_KEY_FILE, MERKLE_STORE, CHECKPOINT_ORIGIN. "
        "The API runs one embedded unless started with --no-signer.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="sign until SIGTERM / Ctrl-C (the default)")
    run.add_argument("--batch-size", type=int, default=2000, help="events per transaction")
    run.add_argument("--no-publish", action="store_true",
                     help="do not publish checkpoints on Kafka (no broker needed)")  # fmt: skip
    sub.add_parser("key", help="print the verifier key auditors pin (made on first use)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    if args.command == "key":
        key = load_signing_key(settings.checkpoint_key_file)
        print(verifier_of(settings.checkpoint_origin, key))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s signer %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        registry = Registry(settings)
    except KeyEncryptionKeyError as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    publish = not getattr(args, "no_publish", False)
    options = SignerOptions(batch_size=getattr(args, "batch_size", 2000), publish=publish)
    signer = Signer(settings, registry, options)
    try:
        if publish:
            wait_for_broker(connect_as(settings, "signer"))
        signer.run(stop)
    except FatalError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    finally:
        registry.close()
    log.info("signer stopped after %d checkpoints", signer.signed)


if __name__ == "__main__":
    main()
