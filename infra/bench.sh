#!/usr/bin/env bash
# `make bench`: starts DynamoDB Local and moto on free ports, runs the
# benchmark binary against them, prints figures, stops the servers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --quiet --profile local-bench -p ledger-local --bin bench
state=$(mktemp -d)
trap 'infra/local/servers.sh stop "$state"; rm -rf "$state"' EXIT
infra/local/servers.sh start "$state"
source "$state/env"
target/local-bench/bench "$@"
