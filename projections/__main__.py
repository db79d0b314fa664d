"""Projector command line: `python -m projections run|stats --help`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import orjson

from projections.audit import AuditTrail, audit_trail
from projections.dead_letters import read_dead_letters, redrive
from projections.rebuild import rebuild
from projections.runner import Projector, ProjectorOptions, access_projector
from services.health import FatalError
from services.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m projections",
        description="ClickHouse read models of topic citizen-events. Reads KAFKA_BOOTSTRAP, "
        "KAFKA_TOPIC, PROJECTOR_GROUP, CLICKHOUSE_URL, CLICKHOUSE_DATABASE, VAR_DIR.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="consume the topic into the read models until SIGTERM")
    run.add_argument(
        "--max-poll-records",
        type=int,
        default=ProjectorOptions.max_poll_records,
        help="events per batch, at most",
    )
    run.add_argument("--progress", action="store_true", help="print one JSON line per batch")
    sub.add_parser("stats", help="print event counts of the read models as JSON")
    rebuild_cmd = sub.add_parser(
        "rebuild",
        help="rebuild the read models from offset zero (stop the projector/API first)",
        description="Replays the topic from offset zero into a scratch database with a "
        "progress bar, then swaps it in and prints the totals before and after as JSON. "
        "Refuses a topic whose first offsets were deleted, unless --accept-loss.",
    )
    rebuild_cmd.add_argument(
        "--accept-loss",
        action="store_true",
        help="rebuild even though events were deleted from the topic; the read models are "
        "then marked incomplete (shown in /readyz)",
    )
    dlq = sub.add_parser("dlq", help="the dead-letter topic: list or redrive its messages")
    dlq.add_argument(
        "action",
        choices=["list", "redrive"],
        help="list: one JSON line per dead letter (source, reason, size; no content). "
        "redrive: store those that decode now (after an upgrade), skipping events already "
        "stored; stop the projector/API first with the embedded engine",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s projector %(levelname)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = Settings.from_env()
    try:
        _dispatch(args, settings)
    except FatalError as exc:
        logging.getLogger(__name__).error("%s", exc)
        raise SystemExit(2) from None


def _dispatch(args: argparse.Namespace, settings: Settings) -> None:
    if args.command == "rebuild":
        _print(rebuild(settings, accept_loss=args.accept_loss))
    elif args.command == "dlq" and args.action == "list":
        for letter in read_dead_letters(settings):
            letter.pop("value")
            _print(letter)
    else:
        trail = audit_trail(settings.clickhouse_url, settings.clickhouse_database)
        if args.command == "dlq":
            _print(redrive(settings, trail))
        elif args.command == "stats":
            _print(_stats(trail))
        else:
            _run(settings, trail, args)


def _print(document: object) -> None:
    print(orjson.dumps(document).decode(), flush=True)


def _stats(trail: AuditTrail) -> dict[str, object]:
    rows = trail.client.query_rows(f"SELECT count(), uniqExact(event_id) FROM {trail.table}")
    total, unique = rows[0]
    return {"rows": total, "unique_events": unique, "by_type": trail.totals()}


def _run(settings: Settings, trail: AuditTrail, args: argparse.Namespace) -> None:
    """The projector and, beside it, the access projector, until SIGTERM or SIGINT."""
    options = ProjectorOptions(max_poll_records=args.max_poll_records)
    projector = Projector(settings, trail, options)
    if args.progress:
        projector.on_batch = lambda events: _print({"stored": projector.stored})
    access = access_projector(settings, options, trail.client)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    beside = threading.Thread(target=access.run, args=(stop,), name="access-projector")
    beside.start()  # the restricted access topic, into its own table
    try:
        projector.run(stop)
    finally:
        stop.set()
        beside.join(30)
    print(f"projector stopped after storing {projector.stored} events", file=sys.stderr)


if __name__ == "__main__":
    main()
