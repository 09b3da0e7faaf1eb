#!/usr/bin/env bash
# Apache Kafka for Keel's tests, benches and the book: the real broker from Maven Central's jars.
#
#   scripts/kafka.sh run CMD...   start a single node and a 3-node cluster on free loopback
#                                 ports, export their addresses, run CMD, stop them
#   scripts/kafka.sh broker [PORT]  one node in the foreground (default 127.0.0.1:9092) for
#                                 trying things by hand; Ctrl-C stops it and deletes its data
#   scripts/kafka.sh jars         fetch the jars (once) and print their directory
#   scripts/kafka.sh console-consumer ARGS...   Kafka's console consumer
#
# Sourced (scripts/test.sh does), it defines `keel_kafka_start`, which starts both and exports
#   KEEL_TEST_KAFKA               bootstrap address of the single node
#   KEEL_TEST_KAFKA_CLUSTER       bootstrap addresses of the 3-node cluster (replication 3,
#                                 min.insync.replicas=2), for the broker-failure test
#   KEEL_TEST_KAFKA_CLUSTER_PIDS  `node=pid` of each cluster node, so that test can SIGKILL
#                                 the leader of a partition
#   KEEL_TEST_KAFKA_JARS          the jar directory (the console consumer for the interop test)
# and `keel_kafka_stop`, which stops them (test.sh calls it from its EXIT trap).
#
# The jars (Kafka 4.1.1, see scripts/kafka/pom.xml) are fetched once with Maven into
# $KEEL_KAFKA_CACHE (default $HOME/.cache/keel-kafka), never into the clone. Needs Java 17+
# and Maven.

KEEL_KAFKA_VERSION=4.1.1
KEEL_KAFKA_CACHE="${KEEL_KAFKA_CACHE:-$HOME/.cache/keel-kafka}"
KEEL_KAFKA_POM="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka/pom.xml"
KEEL_KAFKA_NODES=()   # "dir pid" of every node this shell started

keel_kafka_die() {
    echo "scripts/kafka.sh: $*" >&2
    return 1
}

# Fetches the jars once; prints their directory.
keel_kafka_jars() {
    local dir="$KEEL_KAFKA_CACHE/kafka-$KEEL_KAFKA_VERSION"
    if [[ ! -f "$dir/.complete" ]]; then
        command -v java >/dev/null 2>&1 || keel_kafka_die "java is not on PATH (Kafka needs Java 17+)" || return 1
        command -v mvn >/dev/null 2>&1 || keel_kafka_die "mvn is not on PATH (it fetches Kafka's jars)" || return 1
        local tmp="$dir.tmp.$$"
        rm -rf "$tmp"
        mkdir -p "$tmp"
        echo "scripts/kafka.sh: fetching Kafka $KEEL_KAFKA_VERSION's jars into $dir" >&2
        if ! mvn -B -q -f "$KEEL_KAFKA_POM" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" >&2; then
            rm -rf "$tmp"
            keel_kafka_die "mvn could not fetch Kafka's jars" || return 1
        fi
        touch "$tmp/.complete"
        rm -rf "$dir"
        mv "$tmp" "$dir"
    fi
    echo "$dir"
}

# A loopback port nothing listens on.
keel_kafka_free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    keel_kafka_die "no free loopback port found"
}

keel_kafka_log4j() {
    cat >"$1/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = $1/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

# keel_kafka_node DIR NODE_ID PORT CONTROLLER_PORT MODE [VOTERS]
# MODE is `single` (its own standalone quorum) or `cluster` (the static quorum VOTERS).
# Writes the node's configuration, formats its storage and starts it in the background.
keel_kafka_node() {
    local dir=$1 id=$2 port=$3 cport=$4 mode=$5 voters=${6:-} cluster_id=$7
    local jars
    jars=$(keel_kafka_jars) || return 1
    mkdir -p "$dir/data"
    keel_kafka_log4j "$dir"
    {
        echo "process.roles=broker,controller"
        echo "node.id=$id"
        echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
        echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
        echo "controller.listener.names=CONTROLLER"
        echo "inter.broker.listener.name=PLAINTEXT"
        echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
        echo "log.dirs=$dir/data"
        echo "auto.create.topics.enable=false"
        echo "group.initial.rebalance.delay.ms=0"
        echo "offsets.topic.num.partitions=4"
        echo "transaction.state.log.num.partitions=4"
        echo "num.network.threads=2"
        echo "num.io.threads=4"
        echo "log.cleaner.threads=1"
        echo "log.cleaner.dedupe.buffer.size=16777216"
        if [[ $mode == single ]]; then
            echo "controller.quorum.bootstrap.servers=127.0.0.1:$cport"
            echo "offsets.topic.replication.factor=1"
            echo "transaction.state.log.replication.factor=1"
            echo "transaction.state.log.min.isr=1"
            echo "share.coordinator.state.topic.replication.factor=1"
            echo "share.coordinator.state.topic.min.isr=1"
        else
            echo "controller.quorum.voters=$voters"
            echo "offsets.topic.replication.factor=3"
            echo "transaction.state.log.replication.factor=3"
            echo "transaction.state.log.min.isr=2"
            echo "default.replication.factor=3"
            echo "min.insync.replicas=2"
            echo "unclean.leader.election.enable=false"
            echo "broker.session.timeout.ms=3000"
            echo "broker.heartbeat.interval.ms=500"
        fi
    } >"$dir/server.properties"
    local jvm=(-XX:+UseG1GC)
    # The cluster only has to be correct, not fast: a lighter JVM starts sooner.
    [[ $mode == cluster ]] && jvm=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1)
    local java=(java -Xms256m -Xmx512m "${jvm[@]}" -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$jars/*")
    local standalone=()
    [[ $mode == single ]] && standalone=(--standalone)
    if ! "${java[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" \
        "${standalone[@]}" >"$dir/format.log" 2>&1; then
        cat "$dir/format.log" >&2
        keel_kafka_die "formatting the storage of node $id in $dir failed" || return 1
    fi
    "${java[@]}" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 &
    local pid=$!
    # The broker-failure test SIGKILLs a node: no job-control noise when it does.
    disown "$pid" 2>/dev/null || true
    echo "$pid" >"$dir/pid"
    KEEL_KAFKA_NODES+=("$dir $pid")
}

# Waits until each node DIR logged that it started; prints its log tail and fails otherwise.
keel_kafka_wait() {
    local deadline=$((SECONDS + ${KEEL_KAFKA_START_TIMEOUT:-90}))
    local dir
    for dir in "$@"; do
        until grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; do
            if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null || ((SECONDS > deadline)); then
                echo "scripts/kafka.sh: the Kafka node in $dir did not start; its log ends with:" >&2
                tail -n 40 "$dir/server.log" "$dir/stdout.log" >&2 2>/dev/null
                return 1
            fi
            sleep 0.2
        done
    done
}

keel_kafka_cluster_id() {
    # A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-22
}

# Starts the single node and the 3-node cluster and exports their addresses (see the top).
keel_kafka_start() {
    local started=$SECONDS
    local root
    root=$(mktemp -d "${TMPDIR:-/tmp}/keel-kafka.XXXXXX") || return 1
    KEEL_KAFKA_ROOT=$root
    keel_kafka_jars >/dev/null || return 1

    local port cport
    port=$(keel_kafka_free_port) && cport=$(keel_kafka_free_port) || return 1
    keel_kafka_node "$root/single" 1 "$port" "$cport" single "" "$(keel_kafka_cluster_id)" || return 1
    local single="127.0.0.1:$port"

    local cluster_id voters="" ports=() cports=() i
    cluster_id=$(keel_kafka_cluster_id)
    for i in 1 2 3; do
        ports[i]=$(keel_kafka_free_port) && cports[i]=$(keel_kafka_free_port) || return 1
        voters+="${voters:+,}$i@127.0.0.1:${cports[i]}"
    done
    local bootstrap="" pids=""
    for i in 1 2 3; do
        keel_kafka_node "$root/node$i" "$i" "${ports[i]}" "${cports[i]}" cluster "$voters" "$cluster_id" || return 1
        bootstrap+="${bootstrap:+,}127.0.0.1:${ports[i]}"
        pids+="${pids:+,}$i=$(cat "$root/node$i/pid")"
    done
    keel_kafka_wait "$root/single" "$root/node1" "$root/node2" "$root/node3" || return 1

    export KEEL_TEST_KAFKA=$single
    export KEEL_TEST_KAFKA_CLUSTER=$bootstrap
    export KEEL_TEST_KAFKA_CLUSTER_PIDS=$pids
    KEEL_TEST_KAFKA_JARS=$(keel_kafka_jars) && export KEEL_TEST_KAFKA_JARS
    echo "scripts/kafka.sh: Kafka $KEEL_KAFKA_VERSION single node at $single, 3-node cluster at $bootstrap (started in $((SECONDS - started)) s)" >&2
}

# Stops every node this shell started and deletes their data.
keel_kafka_stop() {
    local node dir pid
    for node in "${KEEL_KAFKA_NODES[@]}"; do
        read -r dir pid <<<"$node"
        kill "$pid" 2>/dev/null || true
    done
    for node in "${KEEL_KAFKA_NODES[@]}"; do
        read -r dir pid <<<"$node"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    KEEL_KAFKA_NODES=()
    [[ -n ${KEEL_KAFKA_ROOT:-} ]] && rm -rf "$KEEL_KAFKA_ROOT"
    KEEL_KAFKA_ROOT=
}

keel_kafka_main() {
    set -euo pipefail
    local command=${1:-}
    shift || true
    case $command in
    run)
        [[ $# -gt 0 ]] || keel_kafka_die "usage: scripts/kafka.sh run CMD..."
        trap keel_kafka_stop EXIT
        keel_kafka_start
        "$@"
        ;;
    broker)
        local port=${1:-9092} cport root
        cport=$(keel_kafka_free_port)
        root=$(mktemp -d "${TMPDIR:-/tmp}/keel-kafka.XXXXXX")
        KEEL_KAFKA_ROOT=$root
        trap keel_kafka_stop EXIT
        keel_kafka_node "$root/single" 1 "$port" "$cport" single "" "$(keel_kafka_cluster_id)"
        keel_kafka_wait "$root/single"
        echo "Kafka $KEEL_KAFKA_VERSION is listening on 127.0.0.1:$port (log: $root/single/server.log); Ctrl-C stops it"
        # The node is disowned (no job to `wait` for): watch its pid instead.
        local pid
        pid=$(cat "$root/single/pid")
        while kill -0 "$pid" 2>/dev/null; do
            sleep 1
        done
        echo "scripts/kafka.sh: the Kafka node stopped; its log ends with:" >&2
        tail -n 20 "$root/single/server.log" >&2
        ;;
    jars)
        keel_kafka_jars
        ;;
    console-consumer)
        local jars
        jars=$(keel_kafka_jars)
        exec java -Dlog4j2.level=warn -cp "$jars/*" org.apache.kafka.tools.consumer.ConsoleConsumer "$@"
        ;;
    *)
        sed -n '2,11p' "$0" >&2
        exit 2
        ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    keel_kafka_main "$@"
fi
