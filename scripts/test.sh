#!/usr/bin/env bash
# The one test command: formatting, lints, and every test (unit, integration, UI, doc).
# SQLite is bundled by sqlx. The Kafka tests need librdkafka's build tools (installed below
# with apt-get when missing) and Apache Kafka, which scripts/kafka.sh fetches from Maven
# Central once and starts on free loopback ports for the tests (unless KEEL_TEST_KAFKA is
# already set). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "scripts/test.sh: cargo is not on PATH; install Rust (rustup) first" >&2
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
    trap keel_kafka_stop EXIT
    kafka_started=$SECONDS
    keel_kafka_start
    echo "==> Kafka brokers started in $((SECONDS - kafka_started)) s"
fi

echo "==> cargo test (unit, integration, UI and doc tests)"
cargo test --workspace --all-features --locked

echo "==> cargo doc (broken links and bad doc markup are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked --quiet

echo "==> all checks passed"
