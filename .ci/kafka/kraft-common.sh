# shellcheck shell=bash
# Sourced (not run) by start-kraft.sh and node-ctl.sh. One place for how a node's JVM is launched, so
# that a node restarted by node-ctl.sh runs exactly as start-kraft.sh first started it, and for how a
# recorded pid is recognised as still being that node.
#
# start-kraft.sh records the launch settings in WORKDIR/kraft.env (kraft_write_env); node-ctl.sh reads
# them back (kraft_read_env) instead of taking them from its own environment, which may differ.
#   KRAFT_NODES KRAFT_BASE_PORT    cluster shape: node i's client port is KRAFT_BASE_PORT+i-1
#   KRAFT_SASL_BASE_PORT           node i's SASL_PLAINTEXT (SCRAM) port is this +i-1; empty: no SCRAM listener
#   KRAFT_JAVA KRAFT_LIBDIR        the java binary and the directory of broker jars
#   KRAFT_HEAP_OPTS                heap options of every node

# Name, value pairs, quoted so that sourcing the file gives back exactly these strings.
kraft_write_env() {  # WORKDIR
    {
        echo "# Written by start-kraft.sh; node-ctl.sh restarts nodes with these settings."
        local var
        for var in KRAFT_NODES KRAFT_BASE_PORT KRAFT_SASL_BASE_PORT KRAFT_JAVA KRAFT_LIBDIR KRAFT_HEAP_OPTS; do
            printf '%s=%q\n' "$var" "${!var}"
        done
    } >"$1/kraft.env"
}

kraft_read_env() {  # WORKDIR
    [[ -f "$1/kraft.env" ]] || return 1
    # shellcheck disable=SC1091  # written by kraft_write_env: plain quoted assignments
    source "$1/kraft.env"
}

kraft_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

kraft_broker_port() { echo $((KRAFT_BASE_PORT + $1 - 1)); }
kraft_controller_port() { echo $((KRAFT_BASE_PORT + 100 + $1 - 1)); }

kraft_bootstrap() {  # the client listeners of all nodes, as start-kraft.sh prints them
    local i out=""
    for ((i = 1; i <= KRAFT_NODES; i++)); do out+="${out:+,}127.0.0.1:$(kraft_broker_port "$i")"; done
    echo "$out"
}

# Prints the pid of node I of WORKDIR if its recorded pid still runs kafka.Kafka on that node's config
# (a pid may have been reused since, and a zombie has an empty cmdline); fails otherwise.
kraft_node_pid() {  # WORKDIR I
    local pid cmdline
    pid=$(cat "$1/node$2.pid" 2>/dev/null) && [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    cmdline=$( { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
    [[ "$cmdline" == *kafka.Kafka*" $1/node$2/server.properties"* ]] || return 1
    echo "$pid"
}

# Starts node I's broker+controller JVM in the background on its server.properties and data dir, and
# records its pid in WORKDIR/node<I>.pid (written whole, then renamed, so no reader sees half a pid).
# stdout.log is appended to, so that what a previous run of the node printed survives a restart.
kraft_launch_node() {  # WORKDIR I
    local workdir=$1 i=$2 node="$1/node$2" pid n
    # shellcheck disable=SC2086  # KRAFT_HEAP_OPTS is a list of options
    "$KRAFT_JAVA" $KRAFT_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dkafka.logs.dir="$node" \
        -Dlog4j2.configurationFile="file:$workdir/log4j2.properties" \
        -cp "$KRAFT_LIBDIR/*" kafka.Kafka "$node/server.properties" >>"$node/stdout.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$workdir/node$i.pid.tmp"
    mv "$workdir/node$i.pid.tmp" "$workdir/node$i.pid"
    # $! is the forked shell until it has exec'd java: wait for that (a few ms; 10 s on a loaded box at
    # most), so that kraft_node_pid recognises the node from now on and nobody takes it for dead.
    for ((n = 0; n < 500; n++)); do
        kraft_node_pid "$workdir" "$i" >/dev/null && break  # exec'd: it is the node now
        kill -0 "$pid" 2>/dev/null || break                  # gone already; the caller will see it
        sleep 0.02
    done
}

# Runs KraftAdmin.java (Admin API: wait for brokers or health, leaders, topics). C1 only and the serial
# GC: the program lives for seconds, and C1 halves javac's share. As a single source file it costs ~1.9 s
# of CPU (javac in memory, then the run); compiled once into WORKDIR/.kraft-admin-<checksum>/, ~0.9 s.
# start-kraft.sh calls it once and runs the source; node-ctl.sh (KRAFT_ADMIN_COMPILE=1) calls it often,
# so it compiles on first use and every later call reuses the classes.
kraft_admin() {  # WORKDIR COMMAND ARGS...
    local workdir=$1 classes tmp
    shift
    local jvm=("$KRAFT_JAVA" -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC)
    classes="$workdir/.kraft-admin-$(cksum <"$KRAFT_HERE/KraftAdmin.java" | cut -d' ' -f1)"
    if [[ ! -f "$classes/KraftAdmin.class" && "${KRAFT_ADMIN_COMPILE:-}" == 1 ]]; then
        # Into a fresh directory renamed into place: a concurrent call never sees half the classes.
        tmp=$(mktemp -d "$workdir/.kraft-admin-tmp.XXXXXX")
        # javac itself does not expand "lib/*" (only the java launcher does): list the jars. If this fails,
        # the source run below reports the same errors.
        if "${jvm[@]}" -m jdk.compiler/com.sun.tools.javac.Main -nowarn -d "$tmp" \
            -cp "$(printf '%s:' "$KRAFT_LIBDIR"/*.jar)" "$KRAFT_HERE/KraftAdmin.java" >/dev/null 2>&1; then
            mv -T "$tmp" "$classes" 2>/dev/null || rm -rf "$tmp"  # another call was first
        else
            rm -rf "$tmp"
        fi
    fi
    if [[ -f "$classes/KraftAdmin.class" ]]; then
        "${jvm[@]}" -Dlog4j2.configurationFile="file:$workdir/log4j2-tools.properties" \
            -cp "$classes:$KRAFT_LIBDIR/*" KraftAdmin "$@"
    else
        "${jvm[@]}" -Dlog4j2.configurationFile="file:$workdir/log4j2-tools.properties" \
            -cp "$KRAFT_LIBDIR/*" "$KRAFT_HERE/KraftAdmin.java" "$@"
    fi
}
