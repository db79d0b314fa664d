#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for local use and tests.
# The broker jars come from Maven Central through infra/kafka/pom.xml (no tarball download).
#
#   infra/kafka/broker.sh fetch|start|stop|status|restart
#
# Environment:
#   VAR_DIR                state directory (default: $(pwd)/var); everything lives in $VAR_DIR/kafka
#   KAFKA_PORT             client listener, 127.0.0.1 only (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller listener, 127.0.0.1 only (default 9093)
#   KAFKA_HEAP_OPTS        JVM heap (default "-Xmx768m -Xms256m")
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
#   JAVA                   java binary (default: java)
#   KAFKA_AUTH             "scram" (default): SASL/SCRAM-SHA-512 and ACLs; "off": no authentication
#                          (only to reproduce an older, unsecured var/kafka)
#   PYTHON                 python with the project installed (default: .venv/bin/python), used
#                          once to add the users to an older, unsecured var/kafka
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/pom.xml"

VAR_DIR="${VAR_DIR:-$(pwd)/var}"
mkdir -p "$VAR_DIR"
VAR_DIR="$(cd "$VAR_DIR" && pwd -P)"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx768m -Xms256m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
JAVA="${JAVA:-java}"
KAFKA_AUTH="${KAFKA_AUTH:-scram}"
ROOT_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT_DIR/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

KDIR="$VAR_DIR/kafka"
LIBS="$KDIR/libs"
MARKER="$LIBS/.fetched"
DATA="$KDIR/data"
LOGDIR="$KDIR/logs"
SERVER_LOG="$LOGDIR/server.log"
PROPS="$KDIR/server.properties"
LOG4J="$KDIR/log4j2.properties"
LOG4J_TOOLS="$KDIR/log4j2-tools.properties"
BROKER_LOG="$KDIR/broker.log"
PIDFILE="$KDIR/broker.pid"
# The SCRAM users' passwords (principal=password, mode 0600), made when storage is formatted;
# the services read it through KAFKA_CREDENTIALS_FILE. Formatted storage without it is an
# older, unsecured var/kafka (migrated at start: migrate_unsecured).
CREDENTIALS="$KDIR/credentials"
PRINCIPALS=(admin relay projector signer subscriber)

log() { echo "kafka: $*"; }
die() { echo "kafka: ERROR: $*" >&2; exit 1; }

# Serialise fetch/start/stop on one VAR_DIR (two concurrent starts must not both format/launch).
lock() {
  mkdir -p "$KDIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$KDIR/.lock"
    flock 9
  fi
}

# --- classpath -------------------------------------------------------------------------------

pom_sum() { sha256sum "$POM" | cut -d' ' -f1; }

fetched() { [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(pom_sum)" ]]; }

do_fetch() {
  if fetched; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (needed to resolve the Kafka jars from Maven Central)"
  log "fetching broker jars from Maven Central into $LIBS ..."
  local tmp="$KDIR/libs.tmp" mvnlog="$KDIR/fetch.log" t0=$SECONDS
  rm -rf "$tmp"
  if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime >"$mvnlog" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$mvnlog" >&2
    rm -rf "$tmp"
    die "mvn dependency:copy-dependencies failed (full output in $mvnlog)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka_2.13 jar missing after fetch"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  pom_sum >"$MARKER"
  log "fetched $(ls "$LIBS"/*.jar | wc -l) jars in $((SECONDS - t0))s"
}

# --- probes ----------------------------------------------------------------------------------

# True when a Kafka broker answers on 127.0.0.1:$1: send an ApiVersions v0 request
# (correlation id 42) and check the response echoes the correlation id. Any Kafka broker answers
# this, even with UNSUPPORTED_VERSION, and only once it accepts client requests.
kafka_answers() {
  timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x2a\x00\x02kb" >&3
    resp=$(head -c 8 <&3 | od -An -tx1 | tr -d " \n")
    [[ ${#resp} -eq 16 && ${resp:8:8} == 0000002a ]]
  ' _ "$1" 2>/dev/null
}

tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null; }

# Alive and not a zombie (a broker that died while start is waiting is still our unreaped child).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)"
  [[ "$state" != Z ]]
}

# PID from the pid file if that process is alive and is our broker (guards against PID reuse).
our_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$PROPS" || return 1
  fi
  echo "$pid"
}

show_logs() {
  {
    echo "----- tail of $BROKER_LOG -----"
    tail -n 40 "$BROKER_LOG" 2>/dev/null || true
    if [[ -f "$SERVER_LOG" ]]; then
      echo "----- tail of $SERVER_LOG (WARN/ERROR) -----"
      grep -E ' (WARN|ERROR|FATAL) ' "$SERVER_LOG" | tail -n 30 || true
      echo "----- last lines of $SERVER_LOG -----"
      tail -n 15 "$SERVER_LOG" || true
    fi
  } >&2
}

# --- config ----------------------------------------------------------------------------------

# log4j2 lines of a console appender named $1 writing to $2 (SYSTEM_OUT or SYSTEM_ERR).
console_appender() {
  printf '%s\n' "appender.console.type = Console" "appender.console.name = $1" \
    "appender.console.target = $2" "appender.console.layout.type = PatternLayout" \
    "appender.console.layout.pattern = [%d] %p %m (%c)%n"
}

password_of() { sed -n "s/^$1=//p" "$CREDENTIALS"; }

make_credentials() {
  [[ -s "$CREDENTIALS" ]] && return 0
  local tmp="$CREDENTIALS.tmp" name
  (umask 077 && : >"$tmp")
  for name in "${PRINCIPALS[@]}"; do
    echo "$name=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')" >>"$tmp"
  done
  mv "$tmp" "$CREDENTIALS"
  log "SCRAM users ${PRINCIPALS[*]}: passwords in $CREDENTIALS (mode 0600)"
}

# Clients authenticate with SASL/SCRAM-SHA-512 (the broker itself connects as admin), the
# controller listener with SASL/PLAIN (SCRAM users live in the metadata the controller serves),
# and Kafka's StandardAuthorizer denies whatever no ACL allows. Plaintext on loopback only;
# DEPLOYING.md says how to put TLS under it (SASL_SSL) between hosts.
security_config() {
  if [[ $1 == off ]]; then
    printf '%s\n' \
      "listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT" \
      "advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT" \
      "inter.broker.listener.name=PLAINTEXT" "controller.listener.names=CONTROLLER" \
      "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    return 0
  fi
  local admin
  admin="$(password_of admin)"
  [[ -n "$admin" ]] || die "no admin password in $CREDENTIALS"
  printf '%s\n' \
    "listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT" \
    "advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$KAFKA_PORT" \
    "inter.broker.listener.name=SASL_PLAINTEXT" "controller.listener.names=CONTROLLER" \
    "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT" \
    "sasl.enabled.mechanisms=SCRAM-SHA-512" \
    "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512" \
    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$admin\";" \
    "sasl.mechanism.controller.protocol=PLAIN" \
    "listener.name.controller.sasl.enabled.mechanisms=PLAIN" \
    "listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$admin\" user_admin=\"$admin\";" \
    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" \
    "super.users=User:admin" "allow.everyone.if.no.acl.found=false"
}

write_config() {
  local auth=${1:-$KAFKA_AUTH}
  mkdir -p "$DATA" "$LOGDIR"
  (umask 077 && : >"$PROPS")  # it holds the admin password
  cat >"$PROPS" <<EOF
# Generated by infra/kafka/broker.sh - rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
$(security_config "$auth")
log.dirs=$DATA
num.partitions=3
# A register keeps its events for ever: no time or size retention by default (topics made by
# the project say so themselves too, and the relay and projector refuse any that does not).
log.retention.ms=-1
log.retention.bytes=-1
log.cleanup.policy=delete
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
delete.topic.enable=true
# single node: internal topics with replication factor 1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.recovery.threads.per.data.dir=1
EOF
  cat >"$LOG4J" <<EOF
# Generated by infra/kafka/broker.sh. Kafka 4 logs via slf4j -> log4j2.
status = warn
name = kafka-broker
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $SERVER_LOG
appender.file.filePattern = $LOGDIR/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 5
$(console_appender STDOUT SYSTEM_OUT)
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
rootLogger.appenderRef.console.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.statechange.name = state.change.logger
logger.statechange.level = warn
EOF
  cat >"$LOG4J_TOOLS" <<EOF
# Generated by infra/kafka/broker.sh: storage tool runs log WARN+ to stderr only.
status = warn
name = kafka-tools
$(console_appender STDERR SYSTEM_ERR)
rootLogger.level = warn
rootLogger.appenderRef.console.ref = STDERR
EOF
}

java_opts() {
  # shellcheck disable=SC2206
  JOPTS=($KAFKA_HEAP_OPTS -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
         -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
         -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
         "-Dlog4j2.configurationFile=$LOG4J" "-Dkafka.logs.dir=$LOGDIR")
}

format_storage() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local cid scram=() name
  cid="$("$JAVA" -Xmx128m "-Dlog4j2.configurationFile=$LOG4J_TOOLS" -cp "$LIBS/*" \
          kafka.tools.StorageTool random-uuid 2>>"$KDIR/format.log" | tail -n 1)"
  [[ -n "$cid" ]] || { cat "$KDIR/format.log" >&2; die "could not generate a cluster id"; }
  if [[ $KAFKA_AUTH != off ]]; then
    for name in "${PRINCIPALS[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$(password_of "$name")]")
    done
  fi
  log "formatting $DATA (cluster id $cid; SCRAM users: $([[ $KAFKA_AUTH == off ]] && echo none || echo "${PRINCIPALS[*]}"))"
  if ! "$JAVA" -Xmx256m "-Dlog4j2.configurationFile=$LOG4J_TOOLS" -cp "$LIBS/*" \
        kafka.tools.StorageTool format --ignore-formatted -t "$cid" -c "$PROPS" "${scram[@]}" \
        >>"$KDIR/format.log" 2>&1; then
    cat "$KDIR/format.log" >&2
    die "kafka-storage format failed"
  fi
}

# --- wait ------------------------------------------------------------------------------------

# wait_ready PID LOG_OFFSET: until the log says the server started and it answers the protocol.
wait_ready() {
  local pid=$1 off=$2 deadline=$((SECONDS + KAFKA_START_TIMEOUT))
  printf 'kafka: waiting for 127.0.0.1:%s ' "$KAFKA_PORT"
  while ((SECONDS < deadline)); do
    if ! alive "$pid"; then
      echo
      show_logs
      rm -f "$PIDFILE"
      die "broker process $pid exited during start-up"
    fi
    if [[ -f "$SERVER_LOG" ]] && tail -c +"$((off + 1))" "$SERVER_LOG" | grep -q 'Kafka Server started' \
       && kafka_answers "$KAFKA_PORT"; then
      echo " ready"
      return 0
    fi
    printf '.'
    sleep 1
  done
  echo
  show_logs
  echo "kafka: broker did not become ready within ${KAFKA_START_TIMEOUT}s; stopping it" >&2
  stop_pid "$pid"
  exit 1
}

# --- commands --------------------------------------------------------------------------------

stop_pid() {
  local pid=$1 deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || true
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.5; done
  if alive "$pid"; then
    echo "kafka: PID $pid still alive after ${KAFKA_STOP_TIMEOUT}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    local i
    for i in $(seq 50); do alive "$pid" || break; sleep 0.2; done
  fi
  rm -f "$PIDFILE"
}

cmd_fetch() { lock; do_fetch; }

# Start the JVM on the written config; return once it answers (exit 1 if it does not).
launch() {
  java_opts
  local off=0 pid
  [[ -f "$SERVER_LOG" ]] && off=$(stat -c %s "$SERVER_LOG")
  echo "=== $(date '+%F %T') starting broker on 127.0.0.1:$KAFKA_PORT ===" >>"$BROKER_LOG"
  # New session (setsid) so the broker outlives the calling shell/terminal; the child writes its
  # own PID (the exec keeps it) so the PID is right even when setsid has to fork.
  rm -f "$PIDFILE"
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PIDFILE" \
    "$JAVA" "${JOPTS[@]}" -cp "$LIBS/*" kafka.Kafka "$PROPS" \
    >>"$BROKER_LOG" 2>&1 </dev/null 9>&- &
  local i
  for i in $(seq 50); do [[ -s "$PIDFILE" ]] && break; sleep 0.1; done
  [[ -s "$PIDFILE" ]] || die "broker did not write its PID file"
  pid="$(cat "$PIDFILE")"
  log "started PID $pid (logs: $SERVER_LOG, stdout/stderr: $BROKER_LOG)"
  wait_ready "$pid" "$off"
}

# Storage formatted by an older, unsecured start has no SCRAM users, and its events must be
# kept: start it once more without authentication (loopback only), add the users through the
# admin API, stop it; the secured start follows. A failure leaves it as it was, and says so.
migrate_unsecured() {
  log "$DATA was formatted without authentication (an older start): adding SCRAM users to it"
  make_credentials
  write_config off
  launch
  if ! (cd "$ROOT_DIR" && "$PYTHON" -m services.kafka_acl users --credentials "$CREDENTIALS" \
          --bootstrap "127.0.0.1:$KAFKA_PORT" --unauthenticated); then
    stop_pid "$(cat "$PIDFILE")"
    rm -f "$CREDENTIALS"
    die "could not add the SCRAM users to $DATA; it is unchanged (start it with KAFKA_AUTH=off to read it as before, or move it away to start anew)"
  fi
  stop_pid "$(cat "$PIDFILE")"
  log "migrated: $DATA now requires authentication"
}

cmd_start() {
  lock
  local t0=$SECONDS pid
  if pid="$(our_pid)"; then
    # started by us, maybe still starting: wait for it instead of launching a second one
    if kafka_answers "$KAFKA_PORT"; then
      log "already running (PID $pid) and answering on 127.0.0.1:$KAFKA_PORT"
      return 0
    fi
    wait_ready "$pid" 0
    return 0
  fi
  rm -f "$PIDFILE"
  if kafka_answers "$KAFKA_PORT"; then
    log "a Kafka broker already answers on 127.0.0.1:$KAFKA_PORT; not starting another"
    return 0
  fi
  tcp_open "$KAFKA_PORT" && die "127.0.0.1:$KAFKA_PORT is taken by something that is not a Kafka broker"
  tcp_open "$KAFKA_CONTROLLER_PORT" && die "controller port 127.0.0.1:$KAFKA_CONTROLLER_PORT is already in use"

  do_fetch
  if [[ $KAFKA_AUTH != off && -f "$DATA/meta.properties" && ! -s "$CREDENTIALS" ]]; then
    migrate_unsecured
  fi
  [[ $KAFKA_AUTH == off ]] || make_credentials
  write_config
  format_storage
  launch
  log "ready on 127.0.0.1:$KAFKA_PORT in $((SECONDS - t0))s"
}

cmd_stop() {
  lock
  local pid
  if pid="$(our_pid)"; then
    log "stopping PID $pid (SIGTERM, up to ${KAFKA_STOP_TIMEOUT}s)"
    stop_pid "$pid"
    log "stopped"
  else
    rm -f "$PIDFILE"
    if kafka_answers "$KAFKA_PORT"; then
      log "not started from $KDIR, but something answers on 127.0.0.1:$KAFKA_PORT; leaving it alone"
    else
      log "not running"
    fi
  fi
}

cmd_status() {
  local pid="" answers=no
  pid="$(our_pid)" || pid=""
  kafka_answers "$KAFKA_PORT" && answers=yes
  echo "kafka: 127.0.0.1:$KAFKA_PORT answers: $answers; PID: ${pid:-none} (VAR_DIR=$VAR_DIR)"
  [[ $answers == yes ]]
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; exec 9>&-; cmd_start ;;
  status) cmd_status ;;
  *) echo "usage: $0 fetch|start|stop|status|restart" >&2; exit 2 ;;
esac
