#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for Keel's tests and benches: installed from Debian's packages
# when missing, created with initdb in a folder of its own (trust authentication, a free port on
# 127.0.0.1), and stopped when done.
#
# Sourced (scripts/test.sh does this), it defines:
#   postgres_start DIR   install if needed, create a cluster in DIR, start it, and export its URL
#                        as KEEL_TEST_POSTGRES_URL
#   postgres_stop DIR    stop the cluster in DIR (fast shutdown), if it runs
#
# Run, it takes a command (the fault tests and the benches use this):
#   scripts/postgres.sh start DIR              prints the URL of a new cluster in DIR
#   scripts/postgres.sh stop DIR [MODE]        stops it; MODE is fast (default) or immediate,
#                                              which is a crash: no shutdown checkpoint
#   scripts/postgres.sh restart DIR            starts a stopped cluster again, on its old port
#
# initdb refuses to run as root, so as root the cluster belongs to the `postgres` system user
# (made by the Debian package; created here when missing).

# Where the server's programs are: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin.
postgres_bindir() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# Installs PostgreSQL from Debian's packages when its server programs are missing.
postgres_install() {
    if postgres_bindir >/dev/null; then
        return 0
    fi
    echo "scripts/postgres.sh: PostgreSQL is not installed; installing it (apt-get install postgresql)" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "scripts/postgres.sh: installing PostgreSQL needs root; run as root or install the postgresql package" >&2
            return 1
        fi
    fi
    $sudo apt-get update -q >&2 || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postgresql >&2 || return 1
    postgres_bindir >/dev/null || {
        echo "scripts/postgres.sh: the postgresql package is installed but initdb and pg_ctl were not found" >&2
        return 1
    }
}

# Runs a command as the cluster's owner: `postgres` when we are root, ourselves otherwise.
postgres_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Is something listening on 127.0.0.1:$1?
postgres_port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts the cluster in $1/data on port $(cat $1/port).
postgres_pg_ctl_start() {
    local dir="$1" bin port
    bin="$(postgres_bindir)" || return 1
    port="$(cat "$dir/port")"
    postgres_as_owner "$bin/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/data -c max_connections=300" \
        >/dev/null
}

# Creates a cluster in DIR/data and starts it on a free port; prints its URL.
postgres_create_and_start() {
    local dir="$1" bin try port
    postgres_install || return 1
    bin="$(postgres_bindir)" || return 1
    mkdir -p "$dir" || return 1
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
        # Every folder above DIR must be searchable by the cluster's owner.
        local up="$dir"
        while [ "$up" != "/" ]; do
            up="$(dirname "$up")"
            [ -x "$up" ] || chmod o+x "$up"
        done
        mkdir -p "$dir/data"
        chown postgres "$dir" "$dir/data"
    fi
    postgres_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync \
        -E UTF8 --locale=C --no-instructions >"$dir/initdb.log" 2>&1 || {
        echo "scripts/postgres.sh: initdb failed:" >&2
        cat "$dir/initdb.log" >&2
        return 1
    }
    for try in $(seq 1 20); do
        port=$((20000 + RANDOM % 30000))
        postgres_port_taken "$port" && continue
        echo "$port" >"$dir/port"
        if postgres_pg_ctl_start "$dir"; then
            echo "postgres://postgres@127.0.0.1:$port/postgres"
            return 0
        fi
    done
    echo "scripts/postgres.sh: the server did not start; its log:" >&2
    cat "$dir/server.log" >&2
    return 1
}

postgres_start() {
    local dir="$1" url started
    started=$(date +%s%N)
    url="$(postgres_create_and_start "$dir")" || return 1
    export KEEL_TEST_POSTGRES_URL="$url"
    echo "scripts/postgres.sh: PostgreSQL at $url, ready in $((($(date +%s%N) - started) / 1000000)) ms" >&2
}

postgres_stop() {
    local dir="$1" mode="${2:-fast}" bin
    [ -f "$dir/data/postmaster.pid" ] || return 0
    bin="$(postgres_bindir)" || return 1
    postgres_as_owner "$bin/pg_ctl" stop -w -t 60 -D "$dir/data" -m "$mode" >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    command="${1:-}"
    dir="${2:-}"
    if [ -z "$command" ] || [ -z "$dir" ]; then
        echo "usage: scripts/postgres.sh start|stop|restart DIR [fast|immediate]" >&2
        exit 2
    fi
    case "$command" in
    start) postgres_create_and_start "$dir" ;;
    stop) postgres_stop "$dir" "${3:-fast}" ;;
    restart) postgres_pg_ctl_start "$dir" ;;
    *)
        echo "scripts/postgres.sh: unknown command $command (start, stop or restart)" >&2
        exit 2
        ;;
    esac
fi
