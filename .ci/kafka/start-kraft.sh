#!/usr/bin/env bash
# Start a throwaway Apache Kafka cluster in KRaft mode on 127.0.0.1, from the jars that
# .ci/kafka/pom.xml fetched from Maven Central (no tarball, no Docker).
#
#   .ci/kafka/start-kraft.sh NODES BASE_PORT WORKDIR      # prints the bootstrap servers on stdout
#   .ci/kafka/stop-kraft.sh WORKDIR
#
# Node i (1..NODES) runs broker+controller in one JVM: its client listener is 127.0.0.1:BASE_PORT+i-1,
# its controller listener 127.0.0.1:BASE_PORT+100+i-1. The controllers form a dynamic KRaft quorum of
# NODES voters (controller.quorum.bootstrap.servers; `format --standalone` for 1 node,
# `--initial-controllers` for more). Replication: factor min(NODES, 3) for every internal topic and
# as the default, min.insync.replicas 2 when NODES >= 3. WORKDIR is wiped and gets per node its
# server.properties, data, server.log (broker log) and stdout.log, plus node<i>.pid, bootstrap (the
# line printed on stdout) and kraft.env (the launch settings that node-ctl.sh reuses to stop, kill and
# restart single nodes, or the whole cluster on its existing data).
#
# Environment: KAFKA_LIBDIR (default: lib/ beside this script), JAVA_HOME or java on PATH (>= 17),
# KAFKA_HEAP_OPTS (default -Xmx512m -Xms256m), KAFKA_START_TIMEOUT seconds (default 90).
# KAFKA_SCRAM_USERS=NAME:PASSWORD[,NAME:PASSWORD...] (default: none) adds on every node a SASL_PLAINTEXT
# client listener 127.0.0.1:BASE_PORT+200+i-1 with SCRAM-SHA-256 and SCRAM-SHA-512, whose users (both
# mechanisms each) are written into the metadata when the storage is formatted; its bootstrap servers
# go to WORKDIR/bootstrap-sasl. Brokers and controllers keep talking PLAINTEXT among themselves.
# KAFKA_ACLS="SPEC SPEC..." (default: none; needs KAFKA_SCRAM_USERS) turns on the StandardAuthorizer:
# every SCRAM user may do only what an ACL allows it, each SPEC PRINCIPAL,OPERATION,RESOURCE_TYPE,
# PATTERN_TYPE,NAME (KraftAdmin add-acls), created once the cluster is up. The PLAINTEXT listeners (the
# other clients, the brokers and controllers among themselves) stay unrestricted: their principal,
# User:ANONYMOUS, is a super user, as are the users in KAFKA_SUPER_USERS (NAME,NAME...).
set -euo pipefail

if [[ $# -ne 3 ]]; then
    echo "usage: $0 NODES BASE_PORT WORKDIR" >&2
    exit 2
fi
NODES=$1
BASE_PORT=$2
WORKDIR=$3
HERE="$(cd "$(dirname "$0")" && pwd)"
KRAFT_HERE=$HERE
# shellcheck source=kraft-common.sh
source "$HERE/kraft-common.sh"
LIBDIR="${KAFKA_LIBDIR:-$HERE/lib}"
LIBDIR="$(cd "$LIBDIR" 2>/dev/null && pwd || echo "$LIBDIR")"  # absolute: node-ctl.sh may run elsewhere
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
SCRAM_USERS="${KAFKA_SCRAM_USERS:-}"
ACLS="${KAFKA_ACLS:-}"
SUPER_USERS="${KAFKA_SUPER_USERS:-}"

log() { echo "start-kraft: $*" >&2; }
die() { log "$*"; exit 1; }

[[ "$NODES" =~ ^[1-9]$ ]] || die "NODES must be 1..9, got '$NODES'"
top_offset=$([[ -n "$SCRAM_USERS" ]] && echo 200 || echo 100)
[[ "$BASE_PORT" =~ ^[0-9]+$ ]] && ((BASE_PORT >= 1024 && BASE_PORT + top_offset + NODES <= 65535)) \
    || die "bad BASE_PORT '$BASE_PORT'"

# SCRAM users as StorageTool arguments, each user for both mechanisms. Names and passwords are kept to
# characters that need no quoting in its [name=...,password=...] syntax.
scram_args=()
if [[ -n "$SCRAM_USERS" ]]; then
    user_re='^([A-Za-z0-9._-]+):([^],=[:space:]"[]+)$'
    IFS=',' read -r -a scram_entries <<<"$SCRAM_USERS"
    for entry in "${scram_entries[@]}"; do
        [[ "$entry" =~ $user_re ]] \
            || die "KAFKA_SCRAM_USERS wants NAME:PASSWORD[,NAME:PASSWORD...] without spaces, quotes, '=' or brackets; bad entry for '${entry%%:*}'"
        for mech in SCRAM-SHA-256 SCRAM-SHA-512; do
            scram_args+=(--add-scram "$mech=[name=${BASH_REMATCH[1]},password=${BASH_REMATCH[2]}]")
        done
    done
fi
[[ -z "$ACLS" || -n "$SCRAM_USERS" ]] || die "KAFKA_ACLS needs KAFKA_SCRAM_USERS (ACLs restrict the SCRAM listener)"
super_users="User:ANONYMOUS"
if [[ -n "$SUPER_USERS" ]]; then
    IFS=',' read -r -a super_entries <<<"$SUPER_USERS"
    for name in "${super_entries[@]}"; do
        [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "KAFKA_SUPER_USERS wants NAME,NAME...; bad name '$name'"
        super_users+=";User:$name"
    done
fi
compgen -G "$LIBDIR/kafka_2.13-*.jar" >/dev/null \
    || die "no kafka_2.13 jar in $LIBDIR (fetch: mvn -q -f .ci/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$LIBDIR)"
java_major=$("$JAVA" -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
[[ "${java_major%%.*}" -ge 17 ]] 2>/dev/null || die "Kafka 4.x needs Java >= 17; $JAVA is '${java_major:-unknown}'"
CP="$LIBDIR/*"

# What kraft_launch_node uses, recorded in WORKDIR/kraft.env below for node-ctl.sh.
KRAFT_NODES=$NODES
KRAFT_BASE_PORT=$BASE_PORT
KRAFT_SASL_BASE_PORT=$([[ -n "$SCRAM_USERS" ]] && echo $((BASE_PORT + 200)) || true)
KRAFT_JAVA=$JAVA
KRAFT_LIBDIR=$LIBDIR
KRAFT_HEAP_OPTS=$HEAP_OPTS

port_open() { kraft_port_open "$@"; }
broker_port() { kraft_broker_port "$@"; }
controller_port() { kraft_controller_port "$@"; }
sasl_port() { echo $((KRAFT_SASL_BASE_PORT + $1 - 1)); }

for i in $(seq 1 "$NODES"); do
    for p in "$(broker_port "$i")" "$(controller_port "$i")" ${KRAFT_SASL_BASE_PORT:+"$(sasl_port "$i")"}; do
        ! port_open "$p" || die "port $p on 127.0.0.1 is already in use (a cluster still running? $HERE/stop-kraft.sh WORKDIR)"
    done
done

# A Kafka Uuid: 16 random bytes, base64url without padding, not starting with '-'.
new_uuid() {
    python3 -c 'import base64, os
while True:
    u = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    if not u.startswith("-"):
        print(u)
        break'
}

rf=$((NODES < 3 ? NODES : 3))
min_isr=$((rf < 2 ? 1 : 2))

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"
WORKDIR="$(cd "$WORKDIR" && pwd)"
kraft_write_env "$WORKDIR"

cat >"$WORKDIR/log4j2.properties" <<'EOF'
# One file per node (kafka.logs.dir is set per JVM); INFO for the broker, WARN for chatty internals.
# No shutdown hook of log4j's own: it would close the file while Kafka's hook is still shutting down,
# and lose what a node that hangs or fails in its shutdown says (lines are flushed as written anyway).
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafkaclients.name = org.apache.kafka.clients
logger.kafkaclients.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
cat >"$WORKDIR/log4j2-tools.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = ERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m (%c)%n
rootLogger.level = ERROR
rootLogger.appenderRef.err.ref = ERR
EOF

cluster_id=$(new_uuid)
bootstrap=""
bootstrap_sasl=""
quorum_bootstrap=""
initial_controllers=""
for i in $(seq 1 "$NODES"); do
    bootstrap+="${bootstrap:+,}127.0.0.1:$(broker_port "$i")"
    [[ -z "$KRAFT_SASL_BASE_PORT" ]] || bootstrap_sasl+="${bootstrap_sasl:+,}127.0.0.1:$(sasl_port "$i")"
    quorum_bootstrap+="${quorum_bootstrap:+,}127.0.0.1:$(controller_port "$i")"
    dir_id=$(new_uuid)
    echo "$dir_id" >"$WORKDIR/node$i.dirid"
    initial_controllers+="${initial_controllers:+,}$i@127.0.0.1:$(controller_port "$i"):$dir_id"
done

for i in $(seq 1 "$NODES"); do
    node="$WORKDIR/node$i"
    mkdir -p "$node/data"
    listeners="PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i")"
    protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if [[ -n "$KRAFT_SASL_BASE_PORT" ]]; then
        listeners+=",SASL_PLAINTEXT://127.0.0.1:$(sasl_port "$i")"
        protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    fi
    cat >"$node/server.properties" <<EOF
# KRaft node $i of $NODES (generated by start-kraft.sh; cluster $cluster_id)
process.roles=broker,controller
node.id=$i
controller.quorum.bootstrap.servers=$quorum_bootstrap
listeners=$listeners
advertised.listeners=$listeners
listener.security.protocol.map=$protocols
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$node/data

# Replication: every internal topic and every default at the cluster's factor.
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
num.partitions=3
# hsepay creates its topics itself (ensure_topics); a broker that invents them would hide a bug.
auto.create.topics.enable=false

# Small and fast for a 2-core CI box.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.cleaner.threads=1
EOF
    if [[ -n "$KRAFT_SASL_BASE_PORT" ]]; then
        cat >>"$node/server.properties" <<'EOF'

# KAFKA_SCRAM_USERS: SCRAM on the SASL_PLAINTEXT client listener only. The users are in the metadata
# (formatted with --add-scram); the broker side of the login module needs no credentials.
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
EOF
    fi
    if [[ -n "$ACLS" ]]; then
        cat >>"$node/server.properties" <<EOF

# KAFKA_ACLS: the KRaft authorizer. A SCRAM user may do what an ACL allows it and nothing else; the
# PLAINTEXT listeners (brokers, controllers, the other test clients) authenticate nobody, so their
# principal is a super user.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=$super_users
EOF
    fi
done

# Format every node's storage with the same cluster id and initial voters.
for i in $(seq 1 "$NODES"); do
    node="$WORKDIR/node$i"
    if ((NODES == 1)); then
        quorum_args=(--standalone)
    else
        quorum_args=(--initial-controllers "$initial_controllers")
    fi
    "$JAVA" -Xmx256m -Dlog4j2.configurationFile="file:$WORKDIR/log4j2-tools.properties" -cp "$CP" \
        kafka.tools.StorageTool format --config "$node/server.properties" --cluster-id "$cluster_id" \
        "${quorum_args[@]}" ${scram_args[@]+"${scram_args[@]}"} >"$node/format.log" 2>&1 \
        || { cat "$node/format.log" >&2; die "format of node $i failed"; }
done
# Formatting wrote meta.properties with a directory id of its own choosing for --standalone; the
# --initial-controllers ids are the ones generated above. Either way the node uses what is on disk.

for i in $(seq 1 "$NODES"); do
    kraft_launch_node "$WORKDIR" "$i"
done
log "started $NODES node(s), cluster $cluster_id, logs in $WORKDIR/node*/server.log"

fail_with_logs() {
    for i in $(seq 1 "$NODES"); do
        log "--- node $i: last lines of server.log / stdout.log"
        tail -n 20 "$WORKDIR/node$i/server.log" >&2 2>/dev/null || true
        tail -n 20 "$WORKDIR/node$i/stdout.log" >&2 2>/dev/null || true
    done
    "$HERE/stop-kraft.sh" "$WORKDIR" >&2 || true
    die "$*"
}

deadline=$((SECONDS + TIMEOUT))
for i in $(seq 1 "$NODES"); do
    port=$(broker_port "$i")
    until port_open "$port"; do
        kill -0 "$(cat "$WORKDIR/node$i.pid")" 2>/dev/null || fail_with_logs "node $i exited during start-up"
        ((SECONDS < deadline)) || fail_with_logs "node $i did not open port $port within ${TIMEOUT}s"
        sleep 0.5
    done
done
remaining=$((deadline - SECONDS))
((remaining > 0)) || remaining=1
kraft_admin "$WORKDIR" wait-brokers "$bootstrap" "$NODES" "$remaining" >&2 \
    || fail_with_logs "metadata did not show $NODES broker(s) within ${TIMEOUT}s"
if [[ -n "$ACLS" ]]; then
    # shellcheck disable=SC2086  # one argument per SPEC
    kraft_admin "$WORKDIR" add-acls "$bootstrap" $ACLS >"$WORKDIR/acls" \
        || fail_with_logs "creating the ACLs failed"
    log "authorizer on: $(grep -c '^ACL ' "$WORKDIR/acls") ACLs for the SCRAM users (listed in $WORKDIR/acls)"
fi
echo "$bootstrap" >"$WORKDIR/bootstrap"
if [[ -n "$bootstrap_sasl" ]]; then
    echo "$bootstrap_sasl" >"$WORKDIR/bootstrap-sasl"
    log "SCRAM-SHA-256/512 over SASL_PLAINTEXT at $bootstrap_sasl (also in $WORKDIR/bootstrap-sasl)"
fi
log "ready after ${SECONDS}s: $bootstrap"
echo "$bootstrap"
