#!/usr/bin/env bash
# Stop the nodes that .ci/kafka/start-kraft.sh started in WORKDIR: SIGTERM (controlled shutdown),
# then SIGKILL for any still running after KAFKA_STOP_TIMEOUT seconds (default 20). Only the pids
# recorded in WORKDIR/node<i>.pid are signalled, and only if they still run kafka.Kafka on that
# WORKDIR's config. Idempotent; data and logs stay in WORKDIR.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 WORKDIR" >&2
    exit 2
fi
WORKDIR=$1
TIMEOUT="${KAFKA_STOP_TIMEOUT:-20}"
[[ -d "$WORKDIR" ]] || exit 0
WORKDIR="$(cd "$WORKDIR" && pwd)"

ours() {  # is pid $1 still our broker?
    local cmdline
    cmdline=$( { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null) || return 1
    [[ "$cmdline" == *kafka.Kafka* && "$cmdline" == *"$WORKDIR/"* ]]
}

pids=()
for f in "$WORKDIR"/node*.pid; do
    [[ -e "$f" ]] || continue
    pid=$(cat "$f")
    if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid"; then
        pids+=("$pid")
        kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
done
((${#pids[@]})) || exit 0

deadline=$((SECONDS + TIMEOUT))
while ((SECONDS < deadline)); do
    alive=()
    for pid in "${pids[@]}"; do
        ! ours "$pid" || alive+=("$pid")
    done
    ((${#alive[@]})) || { echo "stop-kraft: stopped ${#pids[@]} node(s) in ${SECONDS}s" >&2; exit 0; }
    sleep 0.5
done
for pid in "${alive[@]}"; do
    ! ours "$pid" || kill -KILL "$pid" 2>/dev/null || true
done
echo "stop-kraft: ${#alive[@]} of ${#pids[@]} node(s) did not stop within ${TIMEOUT}s; killed" >&2
exit 0
