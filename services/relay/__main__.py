"""Run the relay: `python -m services.relay --help`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from services.health import FatalError
from services.kafka import connect_as, wait_for_broker
from services.metrics import RelayMetrics, serve, stop_serving
from services.registry.application import Registry
from services.registry.sealing import KeyEncryptionKeyError
from services.relay.relay import Relay, RelayOptions
from services.settings import Settings

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.relay",
        description="Publish the registry's events to Kafka, in order, exactly once. "
        "Reads VAR_DIR, SQLITE_DBNAME / PERSISTENCE_MODULE, KAFKA_BOOTSTRAP, KAFKA_TOPIC; "
        "serves its metrics on 127.0.0.1:RELAY_METRICS_PORT (default 9464, 0: none).",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="events per transaction")
    parser.add_argument(
        "--partitions", type=int, default=3, help="partitions if it creates the topic"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        registry = Registry(settings)
    except KeyEncryptionKeyError as exc:  # missing or wrong KEK: nothing could be read
        log.error("refusing to start: %s", exc)
        raise SystemExit(2) from None
    metrics = RelayMetrics()
    options = RelayOptions(args.batch_size, 0.02, args.partitions)
    relay = Relay(settings, registry, options, on_batch=metrics.on_batch)
    metrics.watch(relay.health)
    _run(relay, settings, metrics, stop)
    log.info("relay stopped at position %d", relay.position)


def _run(relay: Relay, settings: Settings, metrics: RelayMetrics, stop: threading.Event) -> None:
    """Publish until `stop`, metrics served from the start (a relay waiting for its broker
    shows as "starting", then stuck); a fatal error exits with code 2 and its reason."""
    port = settings.relay_metrics_port
    server = serve(metrics.registry, port) if port else None
    try:
        wait_for_broker(connect_as(settings, "relay"))
        relay.run(stop)
    except FatalError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None
    finally:
        stop_serving(server)


if __name__ == "__main__":
    main()
