#!/usr/bin/env bash
# A local PostgreSQL cluster for the event store (EVENT_STORE=postgres), for development and tests.
# Debian's `postgresql` package (installed with apt-get when it is missing); the cluster lives in
# $VAR_DIR/postgres, is run by an unprivileged user, listens on 127.0.0.1 only (no Unix socket),
# takes password (SCRAM) logins only, and is only ever stopped by its PID.
#
#   infra/postgres/postgres.sh install|start|stop|status|restart|psql
#
# Environment:
#   VAR_DIR                 state directory (default: $(pwd)/var); the cluster is $VAR_DIR/postgres
#   POSTGRES_PORT           TCP port on 127.0.0.1 (default 5433: not the system cluster's 5432)
#   POSTGRES_USER           the cluster's superuser, owner of the database (default eid)
#   POSTGRES_DBNAME         the database made for the event store (default eid)
#   POSTGRES_PASSWORD_FILE  its password, generated at initdb (default $VAR_DIR/postgres/password)
#   POSTGRES_OS_USER        when run as root, the system user that runs the server (default
#                           postgres, the package's; made with useradd --system when missing)
#   POSTGRES_START_TIMEOUT  seconds to wait for the server to accept logins (default 60)
#   POSTGRES_STOP_TIMEOUT   seconds to wait after SIGINT (fast shutdown) before SIGKILL (default 30)
#   POSTGRES_DATA           the data directory (default $VAR_DIR/postgres/data; when the server's
#                           user cannot reach $VAR_DIR, /var/tmp/eid-postgres-<hash>/data)
set -euo pipefail

VAR_DIR="${VAR_DIR:-$(pwd)/var}"
mkdir -p "$VAR_DIR"
VAR_DIR="$(cd "$VAR_DIR" && pwd -P)"
POSTGRES_PORT="${POSTGRES_PORT:-5433}"
POSTGRES_USER="${POSTGRES_USER:-eid}"
POSTGRES_DBNAME="${POSTGRES_DBNAME:-eid}"
PGDIR="$VAR_DIR/postgres"
PASSWORD_FILE="${POSTGRES_PASSWORD_FILE:-$PGDIR/password}"
OS_USER="${POSTGRES_OS_USER:-postgres}"
START_TIMEOUT="${POSTGRES_START_TIMEOUT:-60}"
STOP_TIMEOUT="${POSTGRES_STOP_TIMEOUT:-30}"
DATA="${POSTGRES_DATA:-$PGDIR/data}"
SERVER_LOG="$PGDIR/postgres.log"

log() { echo "postgres: $*"; }
die() { echo "postgres: ERROR: $*" >&2; exit 1; }

lock() {
  mkdir -p "$PGDIR"
  chmod 0711 "$PGDIR"  # the server's user must traverse it; nothing in it is listable
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$PGDIR/.lock"
    flock 9
  fi
}

# --- the package -----------------------------------------------------------------------------

bindir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$dir" && -x "$dir/postgres" && -x "$dir/initdb" ]] && echo "$dir"
}

do_install() {
  if bindir >/dev/null; then
    return 0
  fi
  local as_root=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "PostgreSQL is missing, and installing it needs root: apt-get install postgresql"
    as_root=(sudo)
  fi
  log "missing; installing Debian's postgresql package (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -q
  "${as_root[@]}" apt-get install -y -q --no-install-recommends postgresql postgresql-client
  bindir >/dev/null || die "postgresql installed, but no /usr/lib/postgresql/*/bin/postgres"
}

# --- who runs it -----------------------------------------------------------------------------

# The server refuses to run as root: as root, run it as $OS_USER (made when missing).
as_server() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u "$OS_USER" -- "$@"
  else
    "$@"
  fi
}

server_user() {
  if [[ "$(id -u)" != 0 ]]; then
    id -un
    return
  fi
  if ! id "$OS_USER" >/dev/null 2>&1; then
    log "making the system user $OS_USER to run the server"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$OS_USER"
  fi
  echo "$OS_USER"
}

# A checkout under a directory the server's user cannot search (mode 0700) cannot hold its data:
# then the data directory is under /var/tmp, named after $PGDIR (the password stays in $PGDIR).
choose_data() {
  [[ -n "${POSTGRES_DATA:-}" || "$(id -u)" != 0 ]] && return 0
  id "$OS_USER" >/dev/null 2>&1 || return 0
  mkdir -p "$PGDIR" && chmod 0711 "$PGDIR"
  runuser -u "$OS_USER" -- test -x "$PGDIR" && return 0
  local outside
  outside="/var/tmp/eid-postgres-$(printf %s "$PGDIR" | sha256sum | cut -c1-12)"
  mkdir -p "$outside" && chmod 0711 "$outside"
  DATA="$outside/data"
}

# --- probes ----------------------------------------------------------------------------------

tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != Z ]]
}

# The postmaster's PID (first line of postmaster.pid) if it is alive and serves our data directory.
our_pid() {
  [[ -f "$DATA/postmaster.pid" ]] || return 1
  local pid
  pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DATA" || return 1
  fi
  echo "$pid"
}

# True when our superuser can log in to the database (the server accepts connections).
logs_in() {
  PGPASSWORD="$(cat "$PASSWORD_FILE" 2>/dev/null)" PGCONNECT_TIMEOUT=3 \
    "$(bindir)/psql" -h 127.0.0.1 -p "$POSTGRES_PORT" -U "$POSTGRES_USER" -d "${1:-postgres}" \
    -XtAqc 'SELECT 1' >/dev/null 2>&1
}

# --- cluster ---------------------------------------------------------------------------------

init_cluster() {
  [[ -f "$DATA/PG_VERSION" ]] && return 0
  local user
  user="$(server_user)"
  choose_data
  [[ "$DATA" == "$PGDIR/data" ]] || log "$user cannot reach $PGDIR: the data directory is $DATA"
  if [[ ! -s "$PASSWORD_FILE" ]]; then
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$PASSWORD_FILE")
  fi
  rm -rf "$DATA"
  install -d -m 0700 -o "$user" "$DATA"
  local pwfile="$DATA.pw"
  install -m 0600 -o "$user" "$PASSWORD_FILE" "$pwfile"
  log "initdb $DATA (superuser $POSTGRES_USER, run by $user)"
  if ! as_server "$(bindir)/initdb" -D "$DATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$PGDIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    cat "$PGDIR/initdb.log" >&2
    die "initdb failed"
  fi
  rm -f "$pwfile"
  write_config
}

write_config() {
  as_server tee "$DATA/postgresql.auto.conf" >/dev/null <<EOF
# Written by infra/postgres/postgres.sh at initdb.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 300
shared_buffers = 256MB
wal_level = replica
max_wal_senders = 4
idle_in_transaction_session_timeout = '60s'
EOF
  as_server tee "$DATA/pg_hba.conf" >/dev/null <<EOF
# Written by infra/postgres/postgres.sh: TCP on 127.0.0.1 only, passwords (SCRAM) only.
host all         all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
EOF
}

ensure_database() {
  logs_in "$POSTGRES_DBNAME" && return 0
  log "creating database $POSTGRES_DBNAME"
  PGPASSWORD="$(cat "$PASSWORD_FILE")" "$(bindir)/createdb" -h 127.0.0.1 -p "$POSTGRES_PORT" \
    -U "$POSTGRES_USER" "$POSTGRES_DBNAME"
}

wait_ready() {
  local deadline=$((SECONDS + START_TIMEOUT)) pid
  printf 'postgres: waiting for 127.0.0.1:%s ' "$POSTGRES_PORT"
  while ((SECONDS < deadline)); do
    if logs_in; then
      echo " ready"
      return 0
    fi
    if ((SECONDS > 5)) && ! our_pid >/dev/null && ! pgrep_child; then
      echo
      tail -n 30 "$SERVER_LOG" >&2 || true
      die "the server exited during start-up (log: $SERVER_LOG)"
    fi
    printf '.'
    sleep 0.5
  done
  echo
  tail -n 30 "$SERVER_LOG" >&2 || true
  if pid="$(our_pid)"; then stop_pid "$pid"; fi
  die "not ready within ${START_TIMEOUT}s"
}

# The launcher we started in the background is still there (the server may not have written
# postmaster.pid yet).
pgrep_child() { [[ -n "${LAUNCHER:-}" ]] && alive "$LAUNCHER"; }

stop_pid() {
  local pid=$1 deadline=$((SECONDS + STOP_TIMEOUT))
  kill -INT "$pid" 2>/dev/null || true  # fast shutdown: roll back open transactions, checkpoint
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  if alive "$pid"; then
    echo "postgres: PID $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    local i
    for i in $(seq 50); do alive "$pid" || break; sleep 0.2; done
  fi
}

# --- commands --------------------------------------------------------------------------------

cmd_start() {
  lock
  local t0=$SECONDS pid
  do_install
  if pid="$(our_pid)"; then
    wait_ready
    ensure_database
    log "already running (PID $pid) on 127.0.0.1:$POSTGRES_PORT"
    return 0
  fi
  tcp_open "$POSTGRES_PORT" && die "127.0.0.1:$POSTGRES_PORT is taken by another server; set POSTGRES_PORT"
  init_cluster
  echo "=== $(date '+%F %T') starting on 127.0.0.1:$POSTGRES_PORT ===" >>"$SERVER_LOG"
  # Own session (setsid), so it outlives the calling shell; it writes postmaster.pid itself.
  local launch=("$(bindir)/postgres" -D "$DATA" -p "$POSTGRES_PORT")
  [[ "$(id -u)" == 0 ]] && launch=(runuser -u "$OS_USER" -- "${launch[@]}")
  setsid "${launch[@]}" >>"$SERVER_LOG" 2>&1 </dev/null 9>&- &
  LAUNCHER=$!
  wait_ready
  ensure_database
  pid="$(our_pid)" || die "the server answers but wrote no postmaster.pid"
  log "started PID $pid in $((SECONDS - t0))s (data $DATA, log $SERVER_LOG)"
}

cmd_stop() {
  lock
  local pid
  if pid="$(our_pid)"; then
    log "stopping PID $pid (fast shutdown, up to ${STOP_TIMEOUT}s)"
    stop_pid "$pid"
    log "stopped"
  elif tcp_open "$POSTGRES_PORT"; then
    log "not started from $DATA, but something listens on 127.0.0.1:$POSTGRES_PORT; leaving it alone"
  else
    log "not running"
  fi
}

cmd_status() {
  local pid="" answers=no
  pid="$(our_pid)" || pid=""
  bindir >/dev/null && logs_in && answers=yes
  echo "postgres: 127.0.0.1:$POSTGRES_PORT accepts logins: $answers; PID: ${pid:-none} (data $DATA)"
  [[ $answers == yes ]]
}

cmd_psql() {
  shift
  PGPASSWORD="$(cat "$PASSWORD_FILE")" exec "$(bindir)/psql" -h 127.0.0.1 -p "$POSTGRES_PORT" \
    -U "$POSTGRES_USER" -d "$POSTGRES_DBNAME" "$@"
}

choose_data
case "${1:-}" in
  install) do_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; exec 9>&-; cmd_start ;;
  status) cmd_status ;;
  psql) cmd_psql "$@" ;;
  *) echo "usage: $0 install|start|stop|status|restart|psql [psql args]" >&2; exit 2 ;;
esac
