#!/usr/bin/env bash
# `make run`: DynamoDB Local and moto on 127.0.0.1 (ports 8000 and 5000 unless
# DYNAMODB_PORT / SQS_PORT say otherwise), then the local stack in front.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
state=$(mktemp -d)
trap '"$root/infra/local/servers.sh" stop "$state"; rm -rf "$state"' EXIT
cargo build --quiet -p ledger-local --bin local-stack
"$root/infra/local/servers.sh" start "$state" "${DYNAMODB_PORT:-8000}" "${SQS_PORT:-5000}"
source "$state/env"
"$root/target/debug/local-stack"
