#!/usr/bin/env bash
# `make bench`: every figure in one run, printed, nothing asserted.
#  1. the Lambda package: `cargo lambda build --release --arm64` (its time:
#     incremental, or from nothing with BENCH_CLEAN_BUILD=1), the bootstrap's
#     size and its zipped size (what Lambda loads);
#  2. the benchmark binary against DynamoDB Local and moto on free ports:
#     requests per operation, latency, the hot organization, capacity units,
#     the capabilities' operations, the renewal sweep at 1,000 to 10,000;
#  3. each function's cold start beside a hello world (infra/coldstart.sh).
# `make bench BENCH=contention` runs the concurrency sections only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-}
if [ "$mode" != contention ]; then
  echo "== the Lambda package (cargo lambda build --release --arm64, both binaries)"
  rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || true
  if [ "${BENCH_CLEAN_BUILD:-}" = 1 ]; then
    rm -rf target/lambda target/aarch64-unknown-linux-gnu
    how="from nothing"
  else
    how="incremental (BENCH_CLEAN_BUILD=1 for from nothing)"
  fi
  started=$(date +%s)
  PATH="$root/.venv/bin:$PATH" cargo lambda build --quiet --release --arm64 -p ledger-lambda --bin ledger --bin ledger-exports
  echo "  build: $(( $(date +%s) - started )) s, $how"
  python3 - target/lambda/ledger/bootstrap target/lambda/ledger-exports/bootstrap <<'PY'
import io, os, sys, zipfile
for path in sys.argv[1:]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    name = path.split("/")[-2]
    print(f"  {name}: bootstrap {os.path.getsize(path) / 1e6:.2f} MB, zipped {len(buf.getvalue()) / 1e6:.2f} MB (target <= 3 MB)")
PY
fi
cargo build --quiet --profile local-bench -p ledger-local --bin bench
state=$(mktemp -d)
trap 'infra/local/servers.sh stop "$state"; rm -rf "$state"' EXIT
infra/local/servers.sh start "$state"
source "$state/env"
target/local-bench/bench "$@"
if [ "$mode" != contention ]; then
  infra/local/servers.sh stop "$state"
  echo
  echo "== cold starts (infra/coldstart.sh)"
  infra/coldstart.sh
fi
