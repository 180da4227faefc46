#!/usr/bin/env bash
# Set up what is missing, build, and run the gateway on its embedded defaults
# (SQLite in ./data, HTTP on 127.0.0.1:8080). Extra arguments go to `gateway run`,
# e.g. scripts/run.sh --config gateway.toml
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p gateway
exec target/release/gateway run "$@"
