"""Projector command line: `python -m projections run|stats --help`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import orjson

from projections.audit import audit_trail
from projections.rebuild import rebuild
from projections.runner import Projector, ProjectorOptions
from services.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m projections",
        description="ClickHouse read models of topic citizen-events. Reads KAFKA_BOOTSTRAP, "
        "KAFKA_TOPIC, PROJECTOR_GROUP, CLICKHOUSE_URL, CLICKHOUSE_DATABASE, VAR_DIR.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="consume the topic into the read models until SIGTERM")
    run.add_argument("--max-poll-records", type=int, default=5000, help="events per batch")
    run.add_argument("--progress", action="store_true", help="print one JSON line per batch")
    sub.add_parser("stats", help="print event counts of the read models as JSON")
    sub.add_parser(
        "rebuild",
        help="rebuild the read models from offset zero (stop the projector/API first)",
        description="Replays the topic from offset zero into a scratch database with a "
        "progress bar, then swaps it in and prints the totals before and after as JSON.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s projector %(levelname)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)

    settings = Settings.from_env()
    if args.command == "rebuild":
        print(orjson.dumps(rebuild(settings)).decode())
        return
    trail = audit_trail(settings.clickhouse_url, settings.clickhouse_database)
    if args.command == "stats":
        rows = trail.client.query_rows(f"SELECT count(), uniqExact(event_id) FROM {trail.table}")
        total, unique = rows[0]
        print(
            orjson.dumps(
                {"rows": total, "unique_events": unique, "by_type": trail.totals()}
            ).decode()
        )
        return

    projector = Projector(settings, trail, ProjectorOptions(max_poll_records=args.max_poll_records))
    if args.progress:

        def report(events: list[dict[str, object]]) -> None:
            print(orjson.dumps({"stored": projector.stored}).decode(), flush=True)

        projector.on_batch = report
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    projector.run(stop)
    print(f"projector stopped after storing {projector.stored} events", file=sys.stderr)


if __name__ == "__main__":
    main()
