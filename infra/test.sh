#!/usr/bin/env bash
# `make test`: formatting, lints, the template, then unit and integration
# tests against DynamoDB Local and moto, started here on free ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# `test.sh NAME` runs one integration test file on its own servers (e.g. a
# long workload); with no argument, everything.
only=${1:-}
if [ -z "$only" ]; then
echo "== cargo fmt --check"; cargo fmt --all -- --check
echo "== cargo clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cfn-lint template.yaml"; .venv/bin/cfn-lint template.yaml
echo "== checkov template.yaml"; .venv/bin/checkov --config-file infra/checkov.yaml -f template.yaml
fi
state=$(mktemp -d)
trap 'infra/local/servers.sh stop "$state"; rm -rf "$state"' EXIT
# Each integration test file gets servers of its own: DynamoDB Local slows
# down as the stream records of earlier tables (deleted or not) pile up in
# one process (a 38 s file took 5 min after the history file).
fresh_servers() {
  infra/local/servers.sh stop "$state"
  infra/local/servers.sh start "$state"
  # shellcheck disable=SC1091
  source "$state/env"
}
if [ -n "$only" ]; then
  echo "== starting DynamoDB Local and moto"
  fresh_servers
  cargo test -p ledger-tests --test "$only" -- --nocapture
  exit 0
fi
echo "== cargo test: unit and doc tests"
fresh_servers
cargo test --workspace --exclude ledger-tests 2>&1 | tee "$state/cargo-test.log"
for name in $(awk '/^\[\[test\]\]/ { getline; gsub(/"/, "", $3); print $3 }' tests/Cargo.toml); do
  echo "== cargo test --test $name (fresh DynamoDB Local and moto)"
  fresh_servers
  cargo test -p ledger-tests --test "$name" 2>&1 | tee -a "$state/cargo-test.log"
done
echo "== schemathesis: openapi.yaml against the handlers (make schemathesis runs longer)"; infra/local/servers.sh stop "$state"; infra/schemathesis.sh
echo "== bench, short run (make bench for the figures)"
fresh_servers
cargo run --quiet -p ledger-local --bin bench -- quick
# One closing line for every test above (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$state/cargo-test.log"
