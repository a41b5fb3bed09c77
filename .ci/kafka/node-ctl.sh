#!/usr/bin/env bash
# Control single nodes of a cluster that .ci/kafka/start-kraft.sh started in WORKDIR, for fault tests:
# kill, stop, pause or start a node again on its own config and data, restart the whole cluster on its
# data, wait until the cluster is healthy again, and find which node leads a partition.
#
#   node-ctl.sh WORKDIR status                 one line per node: "N running|paused|stopped PID|- CLIENT_PORT"
#   node-ctl.sh WORKDIR pids                   the pids of the running (or paused) nodes, one a line
#   node-ctl.sh WORKDIR bootstrap              the client bootstrap servers, as start-kraft.sh printed them
#   node-ctl.sh WORKDIR kill N...              SIGKILL; returns once the process is gone. Nothing to do if stopped
#   node-ctl.sh WORKDIR term N...              SIGTERM (controlled shutdown), SIGKILL after KAFKA_STOP_TIMEOUT s
#   node-ctl.sh WORKDIR pause N... | resume N...  SIGSTOP / SIGCONT: a hung node whose sockets stay open
#   node-ctl.sh WORKDIR start N...             start again on the same server.properties and data dir;
#                                              returns once its client port is open; fails if already running
#   node-ctl.sh WORKDIR start-all              start every stopped node, together (see below)
#   node-ctl.sh WORKDIR stop-all               term every running node, together; the data stays
#   node-ctl.sh WORKDIR wait-healthy [TIMEOUT_S]   every node a live broker and a caught-up metadata voter,
#                                              every partition of every topic led and fully in sync
#   node-ctl.sh WORKDIR wait-fenced N [TIMEOUT_S]  the cluster has noticed that node N is gone: out of
#                                              the metadata and leading no partition
#   node-ctl.sh WORKDIR leader TOPIC [PARTITION|all]   leader's node id (partition 0 by default; -1 and exit
#                                              1 if none); `all`: "PARTITION LEADER" per partition
#   node-ctl.sh WORKDIR create-topic NAME PARTITIONS RF [KEY=VALUE...]
#   node-ctl.sh WORKDIR end-offsets TOPIC...   "TOPIC PARTITION OFFSET" per partition
#   node-ctl.sh WORKDIR elect-preferred        give leadership back to the preferred replicas
#
# Exit 0 on success, 1 on failure (one line on stderr), 2 on bad usage. The Admin-API commands (wait-*,
# leader, create-topic, end-offsets, elect-preferred) run KraftAdmin.java: a JVM of ~1 s of CPU (compiled
# into WORKDIR once, on first use), bootstrapped from the running, unpaused nodes.
#
# Things to know for fault tests (Kafka 4.4, default timeouts):
# - After `kill N` the others notice only when N's broker session expires (broker.session.timeout.ms,
#   9 s): until then the metadata still shows N alive and leading its partitions, and `leader` says so.
#   `wait-fenced N` waits for that. (`wait-healthy` refuses at once while a node is stopped or paused.)
# - Killing the active controller costs a metadata-leader election (~2-4 s: 2 s fetch timeout, then a
#   vote); the quorum of 3 voters goes on with 2. With 1 of 3 left, metadata writes (createTopics,
#   fencing, ISR changes) wait; a timed-out createTopics may still take effect once a majority is back.
# - A node is serving again ~9 s after it stopped (kill or term) at the earliest: the controller refuses
#   its new registration as a duplicate until the old incarnation's session expires (the JVM start-up
#   overlaps that wait). Its client port opens only once it is registered, caught up and unfenced, so
#   `start` returning means the broker is serving.
# - That needs a majority of the controller voters: when too many nodes are down for one more to make a
#   majority (all 3 of 3), `start-all` (or `start 1 2 3`) launches them together and then waits.
# - A node stopping while a majority of the voters is already gone cannot finish its controlled
#   shutdown (the broker waits for the controller, up to 5 minutes): `term` and `stop-all` give it
#   KAFKA_STOP_TIMEOUT, then SIGKILL. Seen in `stop-all` when one node reacts later than the others.
# - Restarts leave partition leadership on the nodes that stayed up (until the 5-minute preferred
#   leader check): `elect-preferred` moves it back now.
# - Pid files stay exact: WORKDIR/node<i>.pid names node i's JVM while it runs, whoever started it, so
#   stop-kraft.sh stops whatever runs (a node that died by itself leaves a stale one, recognised as such).
#
# Environment: KAFKA_STOP_TIMEOUT seconds for term (default 30), KAFKA_START_TIMEOUT seconds for start and
# the default of the wait-* commands (default 90). The JVM options are those start-kraft.sh recorded in
# WORKDIR/kraft.env, not this script's environment.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
KRAFT_HERE=$HERE
KRAFT_ADMIN_COMPILE=1  # many Admin calls per cluster: compile KraftAdmin.java once (see kraft_admin)
# shellcheck source=kraft-common.sh
source "$HERE/kraft-common.sh"

log() { echo "node-ctl: $*" >&2; }
die() { log "$*"; exit 1; }
usage() {  # the synopsis lines of the header above, without their descriptions
    sed -n 's/^#   \(node-ctl.sh [^ ].*[^ ]\)  .*/\1/p; s/^#   \(node-ctl.sh [^ ].*[^ ]\)$/\1/p' "$0" \
        | sed '1s/^/usage: /; 2,$s/^/       /' >&2
    echo "(what each does: the comment at the top of $0)" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
WORKDIR=$1
CMD=$2
shift 2
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"

[[ -d "$WORKDIR" ]] || die "no work dir $WORKDIR (start a cluster with $HERE/start-kraft.sh NODES BASE_PORT WORKDIR)"
WORKDIR="$(cd "$WORKDIR" && pwd)"  # absolute, as in the nodes' command lines
kraft_read_env "$WORKDIR" || die "$WORKDIR has no kraft.env: not a cluster started by this start-kraft.sh"

now() { echo "${EPOCHREALTIME//[!0-9]/}"; }  # microseconds (the separator follows the locale)
since() { local us=$(($(now) - $1)); printf '%d.%01ds' $((us / 1000000)) $((us % 1000000 / 100000)); }

nodes=()
node_args() {  # N...: validates node ids into the array nodes, in order, without duplicates
    (($#)) || usage
    local n
    for n in "$@"; do
        [[ "$n" =~ ^[1-9]$ ]] && ((n <= KRAFT_NODES)) || die "no node '$n' in this cluster of $KRAFT_NODES (nodes 1..$KRAFT_NODES)"
        [[ " ${nodes[*]} " == *" $n "* ]] || nodes+=("$n")
    done
}

node_state() {  # N: running, paused (SIGSTOP) or stopped
    local pid st
    pid=$(kraft_node_pid "$WORKDIR" "$1") || { echo stopped; return; }
    st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || { echo stopped; return; }
    [[ "$st" == T ]] && echo paused || echo running
}

# Forgets node N's pid file if it still names PID (a concurrent start may have written a new one).
forget_pid() {  # N PID
    [[ "$(cat "$WORKDIR/node$1.pid" 2>/dev/null)" != "$2" ]] || rm -f "$WORKDIR/node$1.pid"
}

# Waits until none of the given "N:PID" entries is still that node; prints the entries still alive
# after TIMEOUT seconds (none: all gone).
wait_gone() {  # TIMEOUT N:PID...
    local deadline=$(($(now) + $1 * 1000000)) entry alive
    shift
    while :; do
        alive=()
        for entry in "$@"; do
            [[ "$(kraft_node_pid "$WORKDIR" "${entry%%:*}" || true)" != "${entry#*:}" ]] || alive+=("$entry")
        done
        ((${#alive[@]})) && (($(now) < deadline)) || break
        sleep 0.1
    done
    printf '%s\n' ${alive[@]+"${alive[@]}"}
}

stop_nodes() {  # SIGNAL N...: SIGKILL, or SIGTERM then SIGKILL after STOP_TIMEOUT
    local sig=$1 n pid t0 entries=() left
    shift
    t0=$(now)
    for n in "$@"; do
        pid=$(kraft_node_pid "$WORKDIR" "$n") || { rm -f "$WORKDIR/node$n.pid"; log "node $n is not running"; continue; }
        kill "-$sig" "$pid" 2>/dev/null || true
        # A paused node must run to act on SIGTERM (SIGKILL needs no help).
        [[ "$sig" != TERM ]] || kill -CONT "$pid" 2>/dev/null || true
        entries+=("$n:$pid")
    done
    ((${#entries[@]})) || return 0
    if [[ "$sig" == TERM ]]; then
        left=$(wait_gone "$STOP_TIMEOUT" "${entries[@]}")
        for entry in $left; do
            log "node ${entry%%:*} (pid ${entry#*:}) did not stop within ${STOP_TIMEOUT}s of SIGTERM; SIGKILL"
            kill -KILL "${entry#*:}" 2>/dev/null || true
        done
    fi
    left=$(wait_gone 10 "${entries[@]}")
    [[ -z "$left" ]] || die "node(s) $(echo "$left" | tr '\n' ' ')still running 10s after SIGKILL"
    for entry in "${entries[@]}"; do
        forget_pid "${entry%%:*}" "${entry#*:}"
        wait_ports_closed "${entry%%:*}" 10 || log "node ${entry%%:*}: port(s) $(open_ports "${entry%%:*}") still open 10s after its JVM exited"
    done
    log "$([[ $sig == TERM ]] && echo stopped || echo killed) node(s) $(for e in "${entries[@]}"; do printf '%s ' "${e%%:*}"; done)in $(since "$t0")"
}

signal_nodes() {  # SIGNAL N...: SIGSTOP / SIGCONT
    local sig=$1 n pid
    shift
    for n in "$@"; do
        pid=$(kraft_node_pid "$WORKDIR" "$n") || die "node $n is not running"
        kill "-$sig" "$pid"
    done
}

node_ports() {  # N: the ports node N listens on
    kraft_broker_port "$1"
    kraft_controller_port "$1"
    [[ -z "${KRAFT_SASL_BASE_PORT:-}" ]] || echo $((KRAFT_SASL_BASE_PORT + $1 - 1))
}

open_ports() {  # N: those of node N's ports that accept connections
    local p
    for p in $(node_ports "$1"); do ! kraft_port_open "$p" || printf '%s ' "$p"; done
}

# A dying JVM's cmdline is gone well before its sockets: the files are closed when its last thread
# exits. Until then the ports still accept connections, and a new start would fail on them.
wait_ports_closed() {  # N TIMEOUT_S
    local deadline=$(($(now) + $2 * 1000000))
    while [[ -n "$(open_ports "$1")" ]]; do
        (($(now) < deadline)) || return 1
        sleep 0.05
    done
}

show_logs() {  # N
    log "--- node $1: last lines of server.log / stdout.log"
    tail -n 20 "$WORKDIR/node$1/server.log" >&2 2>/dev/null || true
    tail -n 20 "$WORKDIR/node$1/stdout.log" >&2 2>/dev/null || true
}

start_nodes() {  # N...: launch all, then wait for each client port
    local n pid t0 deadline port started=()
    for n in "$@"; do
        if pid=$(kraft_node_pid "$WORKDIR" "$n"); then
            die "node $n is already running (pid $pid)"
        fi
        # A few seconds' grace for a node that something else than this script has just killed.
        wait_ports_closed "$n" 5 || die "port(s) $(open_ports "$n")of node $n in use by another process"
    done
    t0=$(now)
    for n in "$@"; do
        kraft_launch_node "$WORKDIR" "$n"
        started+=("$n")
    done
    deadline=$((t0 + START_TIMEOUT * 1000000))
    for n in "${started[@]}"; do
        port=$(kraft_broker_port "$n")
        until kraft_port_open "$port"; do
            if ! kraft_node_pid "$WORKDIR" "$n" >/dev/null; then
                show_logs "$n"
                rm -f "$WORKDIR/node$n.pid"
                die "node $n exited during start-up"
            fi
            if (($(now) >= deadline)); then
                show_logs "$n"
                # Failed means stopped: no half-started node lingers behind a failed command.
                stop_nodes KILL "${started[@]}"
                die "node $n did not open port $port within ${START_TIMEOUT}s (killed node(s) ${started[*]}; a majority of the nodes must run for any to start)"
            fi
            sleep 0.2
        done
    done
    log "started node(s) ${started[*]} in $(since "$t0") (client ports open)"
}

nodes_in_state() {  # STATE...: the node ids in one of these states
    local i
    for ((i = 1; i <= KRAFT_NODES; i++)); do
        [[ " $* " != *" $(node_state "$i") "* ]] || echo "$i"
    done
}

# The bootstrap servers for an Admin call: the nodes that run and are not paused, so that the Admin
# client does not start on a dead or hung one (all nodes if none qualifies: the call then fails).
live_bootstrap() {
    local i out=""
    for ((i = 1; i <= KRAFT_NODES; i++)); do
        [[ "$(node_state "$i")" != running ]] || out+="${out:+,}127.0.0.1:$(kraft_broker_port "$i")"
    done
    echo "${out:-$(kraft_bootstrap)}"
}

timeout_arg() {  # [TIMEOUT_S]
    local t=${1:-$START_TIMEOUT}
    [[ "$t" =~ ^[0-9]+$ ]] || usage
    echo "$t"
}

case "$CMD" in
    status)
        (($# == 0)) || usage
        for ((i = 1; i <= KRAFT_NODES; i++)); do
            echo "$i $(node_state "$i") $(kraft_node_pid "$WORKDIR" "$i" || echo -) $(kraft_broker_port "$i")"
        done
        ;;
    pids)
        (($# == 0)) || usage
        for ((i = 1; i <= KRAFT_NODES; i++)); do kraft_node_pid "$WORKDIR" "$i" || true; done
        ;;
    bootstrap)
        (($# == 0)) || usage
        kraft_bootstrap
        ;;
    kill | term)
        node_args "$@"
        stop_nodes "$([[ $CMD == kill ]] && echo KILL || echo TERM)" "${nodes[@]}"
        ;;
    pause | resume)
        node_args "$@"
        signal_nodes "$([[ $CMD == pause ]] && echo STOP || echo CONT)" "${nodes[@]}"
        ;;
    start)
        node_args "$@"
        start_nodes "${nodes[@]}"
        ;;
    start-all)
        (($# == 0)) || usage
        mapfile -t nodes < <(nodes_in_state stopped)
        if ((${#nodes[@]})); then start_nodes "${nodes[@]}"; else log "all $KRAFT_NODES node(s) already running"; fi
        ;;
    stop-all)
        (($# == 0)) || usage
        mapfile -t nodes < <(nodes_in_state running paused)
        ((${#nodes[@]} == 0)) || stop_nodes TERM "${nodes[@]}"
        ;;
    wait-healthy)
        (($# <= 1)) || usage
        timeout=$(timeout_arg "${1:-}")
        mapfile -t down < <(nodes_in_state stopped paused)
        # Not worth a wait: a node that does not run can never be healthy.
        ((${#down[@]} == 0)) || die "node(s) ${down[*]} not running: the cluster cannot become healthy (node-ctl.sh WORKDIR start|resume N)"
        kraft_admin "$WORKDIR" wait-healthy "$(live_bootstrap)" "$KRAFT_NODES" "$timeout"
        ;;
    wait-fenced)
        (($# == 1 || $# == 2)) || usage
        node_args "$1"
        timeout=$(timeout_arg "${2:-}")
        kraft_admin "$WORKDIR" wait-fenced "$(live_bootstrap)" "${nodes[0]}" "$timeout"
        ;;
    leader)
        (($# == 1 || $# == 2)) || usage
        kraft_admin "$WORKDIR" leader "$(live_bootstrap)" "$@"
        ;;
    create-topic)
        (($# >= 3)) || usage
        kraft_admin "$WORKDIR" create-topic "$(live_bootstrap)" "$@"
        ;;
    end-offsets)
        (($# >= 1)) || usage
        kraft_admin "$WORKDIR" end-offsets "$(live_bootstrap)" "$@"
        ;;
    elect-preferred)
        (($# == 0)) || usage
        kraft_admin "$WORKDIR" elect-preferred "$(live_bootstrap)"
        ;;
    *)
        usage
        ;;
esac
