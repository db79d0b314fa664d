"""Benchmark: N registrations through the HTTP API, catch-up rates, the cost of sealing.

`python -m tests.bench --help`. Each run gets a fresh deployment under
`$VAR_DIR/bench/<timestamp>` (own event store, topic, consumer group, ClickHouse database,
API port), prints a table, writes the figures to `--out` and appends them to
`$VAR_DIR/bench-history.jsonl`. Exit code 1 when a command failed, a count disagrees or a
phase did not finish in time.

Modules: `deployment` (the services under test and the time budget), `workload` (the
registrations and posting them), `live` (the live phase and its checks), `history` (auditor
history reads, personal fields decrypted, at the end of the live phase), `catchup` (a second
relay and a rebuilding projector), `pipeline` (the relay, the projector and the rebuild against
the raw kafka-python producer and consumer), `ceiling` (wrk on a no-op endpoint, `noop_app`,
and on registrations, `registrations.lua`; freshness at half the maximum rate; device sync),
`sealing` (the registry's write path without HTTP, personal data encryption on and off),
`report` (the table, the JSON files, the previous run beside this one), `__main__` (the command
line and the order of the phases).
"""
