#!/usr/bin/env bash
# Set up what is missing and run every test: formatting, lints, every fuzz target for a short
# while, unit tests and the end-to-end tests that drive the built gateway against real parts
# (SQLite, a PostgreSQL server started on loopback, an HTTP dispatch receiver).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== fuzz: every target for 10 s from its seeds (scripts/fuzz.sh, unoptimised build)"
FUZZ_SEED=12345 FUZZ_BUILD=dev bash scripts/fuzz.sh 10
echo "== cargo test"
cargo test --locked --workspace --all-targets --no-fail-fast
