#!/usr/bin/env bash
# make run: start the broker, the relay and the API (with the embedded projector); Ctrl-C or
# SIGTERM stops everything this script started, by PID, the broker included.
# EVENT_STORE=postgres (make run-postgres): the event store and the key store on the local
# PostgreSQL cluster of infra/postgres/postgres.sh, started here too when it is not running.
set -euo pipefail
cd "$(dirname "$0")/.."
export VAR_DIR="${VAR_DIR:-$PWD/var}"
PY=.venv/bin/python
mkdir -p "$VAR_DIR"

started_broker=0
if ! infra/kafka/broker.sh status >/dev/null 2>&1; then started_broker=1; fi
infra/kafka/broker.sh start
export EVENT_STORE="${EVENT_STORE:-sqlite}"
started_postgres=0
if [ "$EVENT_STORE" = postgres ]; then
  if ! infra/postgres/postgres.sh status >/dev/null 2>&1; then started_postgres=1; fi
  infra/postgres/postgres.sh start
fi

relay_pid=""; api_pid=""
stop_all() {
  trap - INT TERM EXIT
  echo "stopping..."
  [ -n "$api_pid" ] && kill -TERM "$api_pid" 2>/dev/null || true
  [ -n "$relay_pid" ] && kill -TERM "$relay_pid" 2>/dev/null || true
  [ -n "$api_pid" ] && wait "$api_pid" 2>/dev/null || true
  [ -n "$relay_pid" ] && wait "$relay_pid" 2>/dev/null || true
  if [ "$started_broker" = 1 ]; then infra/kafka/broker.sh stop; fi
  if [ "$started_postgres" = 1 ]; then infra/postgres/postgres.sh stop; fi
  echo "stopped"
}
trap stop_all INT TERM EXIT

# The deployment's Kafka ACLs (who may do what on its topics; idempotent), as the admin user.
"$PY" -m services.kafka_acl grant

# Starter credentials: a station device scoped to one commune, in VAR_DIR/credentials.sqlite
# (with EVENT_STORE=postgres: the table principals beside the events)
# (its token printed when first made); the API prints the role-named AUTH_TOKENS shortcut.
echo "Scoped credential (python -m services.credentials --help):"
echo "  $("$PY" -m services.credentials starter)"
"$PY" -m services.relay >>"$VAR_DIR/relay.log" 2>&1 &
relay_pid=$!
echo "relay: pid $relay_pid, log $VAR_DIR/relay.log (event store: $EVENT_STORE)"
"$PY" -m services.api &
api_pid=$!
wait "$api_pid" || true
