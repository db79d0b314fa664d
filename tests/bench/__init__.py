"""Benchmark: N registrations through the HTTP API, catch-up rates, the cost of sealing.

`python -m tests.bench --help`. Each run gets a fresh deployment under
`$VAR_DIR/bench/<timestamp>` (own event store, topic, consumer group, ClickHouse database,
API port), prints a table, writes the figures to `--out` and appends them to
`$VAR_DIR/bench-history.jsonl`. Exit code 1 when a command failed, a count disagrees or a
phase did not finish in time.

Modules: `deployment` (the services under test and the time budget), `workload` (the
registrations and posting them), `live` (the live phase and its checks), `history` (auditor
history reads, personal fields decrypted, at the end of the live phase), `catchup` (a second
relay and a rebuilding projector), `sealing` (the registry's write path without HTTP, personal
data encryption on and off), `report` (the table and the JSON files), `__main__` (the command
line and the order of the phases).
"""
