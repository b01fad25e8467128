#!/usr/bin/env bash
# `make test`: formatting, lints, the template, then unit and integration
# tests against DynamoDB Local and moto, started here on free ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "== cargo fmt --check"; cargo fmt --all -- --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cfn-lint template.yaml"; .venv/bin/cfn-lint template.yaml
state=$(mktemp -d)
trap 'infra/local/servers.sh stop "$state"; rm -rf "$state"' EXIT
echo "== starting DynamoDB Local and moto"
infra/local/servers.sh start "$state"
source "$state/env"
echo "== cargo test"
cargo test --workspace 2>&1 | tee "$state/cargo-test.log"
echo "== bench, short run (make bench for the figures)"
cargo run --quiet -p ledger-local --bin bench -- quick
# One closing line for every test above (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$state/cargo-test.log"
