#!/usr/bin/env bash
# The one test command: formatting, lints, and every test (unit, integration, UI, doc).
# Everything the tests need comes from Cargo (SQLite is bundled by sqlx), except PostgreSQL:
# scripts/postgres.sh installs it when missing, starts a throwaway cluster for the run and
# stops it on exit, whatever the outcome (KEEL_TEST_POSTGRES_URL, when already set, names a
# server to use instead). Exits non-zero on the first failure.
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

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

echo "==> PostgreSQL for the tests"
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
if [ -n "${KEEL_TEST_POSTGRES_URL:-}" ]; then
    echo "using the server at KEEL_TEST_POSTGRES_URL"
else
    pg_dir="$(mktemp -d -t keel-postgres.XXXXXX)"
    trap 'postgres_stop "$pg_dir" immediate || true; rm -rf "$pg_dir"' EXIT
    postgres_start "$pg_dir"
fi

echo "==> cargo test (unit, integration, UI and doc tests)"
cargo test --workspace --all-features --locked

echo "==> cargo doc (broken links and bad doc markup are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked --quiet

echo "==> all checks passed"
