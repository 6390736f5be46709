#!/usr/bin/env bash
# The quick-start demo: the example query component, run twice against a
# fresh local store, shows that rows persist between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
host="$target/release/donut-host"
query="$target/wasm32-wasip2/guest/query.wasm"
store="$target/demo-store"
rm -rf "$store"

run() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

run "$host" --local "$store" run "$query" -- hello world
run "$host" --local "$store" run "$query" -- "second run"
run "$host" --local "$store" sql demo.db "select count(*) as notes, sqlite_version() as sqlite from notes"
run "$host" --local "$store" --stats sql demo.db "select body from notes where id = 2"
run "$host" --local "$store" ls
