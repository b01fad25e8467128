#!/usr/bin/env bash
# `make coldstart`: builds the Lambda binary and the hello world with the
# release profile (native here), starts DynamoDB Local and moto on free
# ports, and measures each function's cold start against a local Lambda
# Runtime API (infra/local/src/bin/coldstart.rs). Prints a table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --quiet --release -p ledger-lambda --bins
cargo build --quiet --profile local-bench -p ledger-local --bin coldstart
state=$(mktemp -d)
trap 'infra/local/servers.sh stop "$state"; rm -rf "$state"' EXIT
infra/local/servers.sh start "$state"
source "$state/env"
target/local-bench/coldstart "$@"
