#!/usr/bin/env bash
# The one test command: formatting, lints, every test (unit, integration, UI, doc), the API
# docs under each feature set, the book (mdBook, with its internal links checked), and a crate
# built from the README alone, outside the workspace.
# SQLite is bundled. The Kafka tests need librdkafka's build tools (installed below with apt-get
# when missing) and Apache Kafka, which scripts/kafka.sh fetches from Maven Central once and
# starts on free loopback ports for the tests (unless KEEL_TEST_KAFKA is already set). The
# PostgreSQL tests need a server: scripts/postgres.sh installs PostgreSQL from Debian's packages
# when missing and starts a throwaway cluster (unless KEEL_TEST_POSTGRES_URL is already set).
# mdBook is installed with `cargo install` into a cache the first time. Exits non-zero on the
# first failure; whatever the outcome, the servers it started are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Commands run on exit, whatever the outcome: each server started below adds its stop.
on_exit=()
trap 'for command in "${on_exit[@]}"; do eval "$command" || true; done' EXIT

# Tools the checks install, kept across runs (and off the workspace's target directory).
KEEL_TOOLS="${KEEL_TOOLS:-$HOME/.cache/keel-tools}"
MDBOOK_VERSION="0.5.4"
export PATH="$KEEL_TOOLS/bin:$PATH"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is not on PATH; install Rust (rustup) first" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "scripts/test.sh: python3 is not on PATH; the book's link check and the README crate need it" >&2
    exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# librdkafka (feature `kafka`) is built from source with cmake; Kafka needs Java and Maven.
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[[ -e /usr/include/curl/curl.h || -e /usr/include/x86_64-linux-gnu/curl/curl.h ]] || missing+=(libcurl4-openssl-dev)
[[ -e /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]} (librdkafka's build, Kafka for the tests)"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: install ${missing[*]} (no apt-get here)" >&2
        exit 1
    fi
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# Build the tests before starting the brokers, so they idle as little as possible.
echo "==> cargo test --no-run"
cargo test --workspace --all-features --locked --no-run

if [[ -z ${KEEL_TEST_KAFKA:-} ]]; then
    echo "==> starting Kafka (a single node for the suite, a 3-node cluster for the broker-failure test)"
    # shellcheck source=scripts/kafka.sh
    source scripts/kafka.sh
    on_exit+=(keel_kafka_stop)
    kafka_started=$SECONDS
    keel_kafka_start
    echo "==> Kafka brokers started in $((SECONDS - kafka_started)) s"
fi

if [[ -z ${KEEL_TEST_POSTGRES_URL:-} ]]; then
    echo "==> starting PostgreSQL (a throwaway cluster; installed first when missing)"
    # shellcheck source=scripts/postgres.sh
    source scripts/postgres.sh
    pg_dir="$(mktemp -d -t keel-postgres.XXXXXX)"
    on_exit+=('postgres_stop "$pg_dir" immediate; rm -rf "$pg_dir"')
    postgres_start "$pg_dir"
fi

echo "==> cargo test (unit, integration, UI and doc tests)"
cargo test --workspace --all-features --locked

echo "==> cargo doc (broken links and bad doc markup are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked --quiet

echo "==> cargo doc of each library under each feature set it documents"
for features in \
    "-p keel --no-default-features" \
    "-p keel --no-default-features --features derive" \
    "-p keel --features sqlite" \
    "-p keel --features postgres" \
    "-p keel --features testing" \
    "-p keel --features cli" \
    "-p keel-projections --no-default-features" \
    "-p keel-projections --features sqlite" \
    "-p keel-projections --features cli" \
    "-p keel-projections --features postgres" \
    "-p keel-macros"; do
    echo "    $features"
    # shellcheck disable=SC2086 # the words are cargo's arguments
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked --quiet $features
done

echo "==> mdbook build book (any warning, and any broken internal link, fails)"
if ! mdbook --version 2>/dev/null | grep -qx "mdbook v$MDBOOK_VERSION"; then
    echo "    installing mdbook $MDBOOK_VERSION into $KEEL_TOOLS (once; cached)"
    CARGO_TARGET_DIR="$KEEL_TOOLS/build" cargo install --locked --quiet mdbook \
        --version "$MDBOOK_VERSION" --no-default-features --features search --root "$KEEL_TOOLS"
fi
book_log="$(mktemp)"
on_exit+=('rm -f "$book_log"')
if ! mdbook build book >"$book_log" 2>&1; then
    cat "$book_log" >&2
    echo "scripts/test.sh: mdbook build book failed" >&2
    exit 1
fi
if grep -Eiq '\b(warn|warning|error)\b' "$book_log"; then
    cat "$book_log" >&2
    echo "scripts/test.sh: mdbook build book warned" >&2
    exit 1
fi
python3 scripts/check_book_links.py book/book

echo "==> a crate from the README alone, outside the workspace (scripts/scratch_crate.py)"
python3 scripts/scratch_crate.py

echo "==> all checks passed"
