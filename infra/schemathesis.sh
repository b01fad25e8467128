#!/usr/bin/env bash
# Schemathesis against openapi.yaml and the local stack (DynamoDB Local,
# moto and the real handlers, started here on free ports), every check of
# infra/schemathesis.toml: no server error, no response outside the spec,
# invalid requests refused and valid ones accepted. The organization `acme`
# is seeded first (a plan, purchased credits, two members) so that success
# paths are reached. A fixed seed: a run is reproduced by its example count.
# usage: infra/schemathesis.sh [MAX_EXAMPLES]   (default 10 an operation; `make schemathesis` runs more)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
examples=${1:-10}
st=.venv/bin/schemathesis
[ -x "$st" ] || { echo "schemathesis is not installed: run 'make setup'" >&2; exit 1; }

state=$(mktemp -d)
stack_pid=
stop() {
  if [ -n "$stack_pid" ]; then kill "$stack_pid" 2>/dev/null || true; wait "$stack_pid" 2>/dev/null || true; fi
  infra/local/servers.sh stop "$state"
  rm -rf "$state"
}
trap stop EXIT

cargo build --quiet -p ledger-local --bin local-stack
infra/local/servers.sh start "$state"
# shellcheck disable=SC1091
source "$state/env"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
API_PORT=$port RUST_LOG=warn target/debug/local-stack >"$state/stack.log" 2>&1 &
stack_pid=$!
# The stack prints its dev tokens (organization `acme`) once it serves.
for _ in $(seq 1 300); do
  grep -q '^Ctrl-C stops everything' "$state/stack.log" && break
  kill -0 "$stack_pid" 2>/dev/null || { echo "local-stack exited:" >&2; cat "$state/stack.log" >&2; exit 1; }
  sleep 0.2
done
token() { sed -n "s/^  export $1=//p" "$state/stack.log"; }
ADMIN_TOKEN=$(token ADMIN_TOKEN); MEMBER_TOKEN=$(token MEMBER_TOKEN); SERVICE_TOKEN=$(token SERVICE_TOKEN)
[ -n "$SERVICE_TOKEN" ] || { echo "local-stack printed no tokens:" >&2; cat "$state/stack.log" >&2; exit 1; }
base=http://127.0.0.1:$port

# Seed: the service subscribes acme and buys credits, and lends it calling
# credits and email sends (meters the plan has none of) as overdrafts;
# alice (admin) and bob (member) join, as local-stack's tokens name them.
call() { # method path key body
  local code
  code=$(curl -s -o "$state/seed.out" -w '%{http_code}' -X "$1" "$base$2" \
    -H "Authorization: Bearer $SERVICE_TOKEN" -H "Idempotency-Key: $3" \
    -H 'content-type: application/json' -d "$4")
  case "$code" in 2??) ;; *) echo "seeding $1 $2: $code $(cat "$state/seed.out")" >&2; exit 1 ;; esac
}
call PUT /v1/orgs/acme/subscription seed-plan '{"plan":"professional"}'
call POST /v1/orgs/acme/purchases seed-pack '{"package":"credits_5000","payment_reference":"seed-1","user":"alice"}'
call PUT /v1/orgs/acme/overdraft seed-calls '{"meter":"calling_credits","allowance":"2000"}'
call PUT /v1/orgs/acme/overdraft seed-sends '{"meter":"email_sends","allowance":"2000"}'
call PUT /v1/orgs/acme/members/alice seed-alice '{"role":"admin"}'
call PUT /v1/orgs/acme/members/bob seed-bob '{"role":"member"}'

# Hypothesis keeps caches under the working directory unless told otherwise.
export HYPOTHESIS_STORAGE_DIRECTORY=$state/hypothesis

# One run per kind of caller: the service (every route), an admin and a
# member (the same routes as a user, with their refusals).
status=0
for who in SERVICE ADMIN MEMBER; do
  echo "== schemathesis as ${who,,} ($examples examples an operation)"
  token_var=${who}_TOKEN
  # The users local-stack's tokens name (the service names anyone).
  case $who in ADMIN) user=alice ;; MEMBER) user=bob ;; *) user= ;; esac
  # The config reads the token; the hooks, which caller it is.
  LEDGER_TOKEN=${!token_var} LEDGER_CALLER=${who,,} LEDGER_USER=$user "$st" --config-file infra/schemathesis.toml \
    run openapi.yaml --url "$base" --max-examples "$examples" --seed 20240601 --no-color || status=1
done
if [ "$status" != 0 ]; then
  echo "== what the stack logged as errors (5xx answers say only 'internal')" >&2
  grep -E 'ERROR|panicked' "$state/stack.log" | tail -20 >&2 || true
fi
exit $status
