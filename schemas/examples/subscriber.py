"""A minimal subscriber of topic citizen-events: `python -m schemas.examples.subscriber --help`.

It needs nothing of this project but the schema files: it imports only the standard library,
fastavro and kafka-python (plus lz4, which kafka-python loads to decompress the relay's
batches), and reads `schemas/citizen_event.v*.avsc` (and any extra `--schema-dir`).

Each message value is Avro single-object encoding: `C3 01`, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema, then the Avro binary body. The fingerprint picks
the writer schema; fastavro resolves the body from it to the reader schema this subscriber
holds (by default the newest published version: a v1 reader cannot resolve v2 records).

Personal fields travel sealed since schema v2 (`sealed_citizen_id`, `sealed_full_name`,
`sealed_date_of_birth`, `sealed_sex`, `sealed_reason`: `sealed:v1:<base64url>` ciphertext
under a data key per citizen that only the registry holds). A subscriber cannot open them and
has no use for them: they are left out of the output unless `--keep-sealed` is given (then
printed as they are, opaque, e.g. to verify the hash chain, which commits to them). The clear
personal fields of old v1 records are never printed (the v2 reader drops them anyway).

One JSON line per event goes to stdout. A message that cannot be decoded is reported on stderr
(and copied to `--dlq-topic` with headers `dlq_reason` and `dlq_source`, if given); consumption
goes on.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
SCHEMA_DIR = Path(__file__).resolve().parent.parent
VERSIONED = re.compile(r"^citizen_event\.v(\d+)\.avsc$")
REASON_DETAIL = 160
SEALED = "sealed_"  # name prefix of a sealed personal field (schema v2 on)
CLEAR_PERSONAL_FIELDS = ("citizen_id",)  # v1 only: in clear, never printed
CLEAR_PERSONAL_PAYLOAD_FIELDS = ("full_name", "date_of_birth", "sex", "reason")  # v1 only

Schema = dict[str, Any]


class UndecodableError(ValueError):
    """A message value that is not an event this subscriber can read."""


# --- schemas -------------------------------------------------------------------------------


def load_schema(path: Path) -> Schema:
    return cast(Schema, fastavro.parse_schema(json.loads(path.read_text())))


def schema_fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, as the 8 bytes single-object encoding carries."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def published_versions(directory: Path = SCHEMA_DIR) -> list[Path]:
    """The published `citizen_event.vN.avsc` files, oldest first."""
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := VERSIONED.match(p.name))]
    return [path for _, path in sorted(found)]


def writer_schemas(extra_dirs: Iterable[Path]) -> dict[bytes, Schema]:
    """fingerprint -> schema for every published version and every `*.avsc` in `extra_dirs`."""
    paths = published_versions() + [p for d in extra_dirs for p in sorted(d.glob("*.avsc"))]
    schemas = (load_schema(p) for p in paths)
    return {schema_fingerprint(s): s for s in schemas}


# --- decoding ------------------------------------------------------------------------------


class Decoder:
    """Finds the writer schema by fingerprint and resolves the body to one reader schema."""

    def __init__(self, writers: dict[bytes, Schema], reader: Schema) -> None:
        self.writers = writers
        self.reader = reader

    def decode(self, value: bytes | None) -> dict[str, Any]:
        if value is None or len(value) < HEADER_SIZE or value[:2] != MAGIC:
            raise UndecodableError("not Avro single-object encoding (bad magic)")
        fp = value[2:HEADER_SIZE]
        writer = self.writers.get(fp)
        if writer is None:
            raise UndecodableError(f"unknown writer schema fingerprint {fp.hex()}")
        body = io.BytesIO(value[HEADER_SIZE:])
        try:
            event = cast(dict[str, Any], fastavro.schemaless_reader(body, writer, self.reader))
        except Exception as exc:  # fastavro raises many kinds on corrupt or unresolvable bodies
            detail = str(exc)[:REASON_DETAIL]  # resolution errors quote whole schemas
            raise UndecodableError(f"cannot decode body: {type(exc).__name__}: {detail}") from exc
        if body.tell() != len(value) - HEADER_SIZE:
            raise UndecodableError("trailing bytes after the Avro body")
        return event


# --- output --------------------------------------------------------------------------------


def _shown(name: str, clear: tuple[str, ...], keep_sealed: bool) -> bool:
    if name.startswith(SEALED):
        return keep_sealed
    return name not in clear


def without_personal_data(event: dict[str, Any], keep_sealed: bool = False) -> dict[str, Any]:
    """`event` without clear personal fields (old v1 records) and, unless `keep_sealed`,
    without the sealed ones (opaque ciphertext: of no use to a subscriber)."""
    public = {k: v for k, v in event.items() if _shown(k, CLEAR_PERSONAL_FIELDS, keep_sealed)}
    if isinstance(public.get("payload"), dict):
        public["payload"] = {
            k: v
            for k, v in public["payload"].items()
            if _shown(k, CLEAR_PERSONAL_PAYLOAD_FIELDS, keep_sealed)
        }
    return public


def _json_default(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def as_json_line(event: dict[str, Any], keep_sealed: bool = False) -> str:
    shown = without_personal_data(event, keep_sealed)
    return json.dumps(shown, default=_json_default, ensure_ascii=False)


# --- Kafka ---------------------------------------------------------------------------------


def connection(args: argparse.Namespace) -> dict[str, Any]:
    """Where the broker is and who we are: SASL/SCRAM-SHA-512 as --user with the password
    from KAFKA_PASSWORD (or --password-file), never from the command line; no --user:
    anonymous (a broker without authentication)."""
    if not args.user:
        return {"bootstrap_servers": args.bootstrap}
    if args.password_file:
        password = args.password_file.read_text().strip()
    else:
        password = os.environ.get("KAFKA_PASSWORD", "")
    if not password:
        raise SystemExit(f"no password for Kafka user {args.user}: set KAFKA_PASSWORD")
    return {
        "bootstrap_servers": args.bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": args.user,
        "sasl_plain_password": password,
    }


def open_consumer(args: argparse.Namespace) -> KafkaConsumer:
    """read_committed: records of aborted relay transactions are never delivered."""
    consumer = KafkaConsumer(
        **connection(args),
        group_id=args.group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=2000,
        client_id="eid-subscriber-example",
    )
    if args.group:
        consumer.subscribe([args.topic])
    else:
        consumer.assign(wait_for_partitions(consumer, args.topic, args.timeout))
        consumer.seek_to_beginning()
    return consumer


def wait_for_partitions(
    consumer: KafkaConsumer, topic: str, timeout: float | None
) -> list[TopicPartition]:
    deadline = time.monotonic() + (timeout if timeout is not None else 30.0)
    while not (partitions := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise SystemExit(f"topic {topic} not found at {consumer.config['bootstrap_servers']}")
        time.sleep(0.2)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


def records(consumer: KafkaConsumer, limit: int | None, idle: float | None) -> Iterator[Any]:
    """Records until `limit` have come or none came for `idle` seconds (None: forever)."""
    seen, last = 0, time.monotonic()
    while limit is None or seen < limit:
        batch = consumer.poll(timeout_ms=200, max_records=None if limit is None else limit - seen)
        if not batch:
            if idle is not None and time.monotonic() - last > idle:
                return
            continue
        for partition_records in batch.values():
            seen += len(partition_records)
            yield from partition_records
        if consumer.config["group_id"]:
            consumer.commit()  # after the batch was handled: at-least-once, dedupe by event_id
        last = time.monotonic()


def dead_letter(producer: KafkaProducer, topic: str, record: ConsumerRecord, reason: str) -> None:
    """The same key, value and headers, plus why and where from."""
    headers = list(record.headers or []) + [
        ("dlq_reason", reason.encode()),
        ("dlq_source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
    ]
    producer.send(topic, key=record.key, value=record.value, headers=headers).get(timeout=30)


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.examples.subscriber",
        description="Decode topic citizen-events with fastavro and the schemas/*.avsc files "
        "alone; one JSON line per event on stdout.",
        epilog="Personal data: since schema v2 the personal number, name, date of birth, sex "
        "and free-text reasons travel sealed (sealed_* fields, 'sealed:v1:...' ciphertext "
        "under a data key per citizen that only the registry holds, and that nobody can "
        "open any more once the citizen's data is erased: event type personal_data_erased). "
        "A subscriber cannot open them, so they are left out unless --keep-sealed. The "
        "clear personal fields of old v1 records are never printed. A service with a lawful "
        "purpose obtains personal data through the registry's API, where each read is "
        "recorded, not from the topic (SUBSCRIBING.md).",
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument(
        "--user",
        default=os.environ.get("KAFKA_USER", ""),
        help="Kafka user (SASL/SCRAM-SHA-512; default: KAFKA_USER; none: anonymous); a "
        "subscriber may read the topic and the checkpoints, and name its groups and its own "
        "topics subscriber.*",
    )
    parser.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="file with the password (default: KAFKA_PASSWORD)",
    )
    parser.add_argument("--topic", default="citizen-events", help="topic to read")
    parser.add_argument(
        "--group",
        default=None,
        help="consumer group (commits offsets); without it, every partition "
        "is read from the beginning and nothing is committed",
    )
    parser.add_argument(
        "--reader-schema",
        type=Path,
        default=None,
        help="the schema you decode into (default: the newest published version; a v1 "
        "reader cannot resolve v2 records)",
    )
    parser.add_argument(
        "--schema-dir",
        type=Path,
        action="append",
        default=[],
        help="extra directory of writer schemas (*.avsc); repeatable",
    )
    parser.add_argument(
        "--max-messages",
        type=int,
        default=None,
        help="stop after this many messages, decodable or not",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="stop after this many seconds without a message"
    )
    parser.add_argument(
        "--dlq-topic",
        default=None,
        help="copy undecodable messages there with headers dlq_reason, dlq_source",
    )
    parser.add_argument(
        "--keep-sealed",
        action="store_true",
        help="also print the sealed personal fields (sealed_*), as they are: opaque "
        "ciphertext, needed only to verify the hash chain on the printed lines",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reader_path = args.reader_schema or published_versions()[-1]
    decoder = Decoder(writer_schemas(args.schema_dir), load_schema(reader_path))
    dlq = KafkaProducer(**connection(args)) if args.dlq_topic else None
    consumer = open_consumer(args)
    try:
        for record in records(consumer, args.max_messages, args.timeout):
            try:
                event = decoder.decode(record.value)
            except UndecodableError as exc:
                where = f"{record.topic}/{record.partition}/{record.offset}"
                print(f"undecodable {where}: {exc}", file=sys.stderr, flush=True)
                if dlq is not None:
                    dead_letter(dlq, args.dlq_topic, record, str(exc))
                continue
            print(as_json_line(event, args.keep_sealed), flush=True)
    finally:
        consumer.close(autocommit=False)
        if dlq is not None:
            dlq.close(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
