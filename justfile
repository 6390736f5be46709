# DonutDB tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

root := justfile_directory()
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", root / "target")
guest_dir := CARGO_TARGET_DIR / "wasm32-wasip2" / "guest"

# The C compiler for SQLite in the guest (zig, see scripts/zigcc) and the
# SQLite options DonutDB's VFS needs.
guest_env := "CC_wasm32_wasip2=" + root / "scripts/zigcc" + " AR_wasm32_wasip2=" + root / "scripts/zigar" + " LIBSQLITE3_FLAGS='SQLITE_ENABLE_BATCH_ATOMIC_WRITE SQLITE_TEMP_STORE=3 SQLITE_DEFAULT_FOREIGN_KEYS=1 SQLITE_OMIT_LOAD_EXTENSION SQLITE_ENABLE_MATH_FUNCTIONS'"

default:
    @just --list


# Build the guest components: donut-sql (embedded in the host) and the example.
guest:
    {{guest_env}} cargo build --profile guest --target wasm32-wasip2 -p donut-sql -p donut-session -p donut-example-query -p donut-test-plain -p donut-bench-guest
    # Alone, so its `planted-bugs` feature stays out of the components above.
    {{guest_env}} cargo build --profile guest --target wasm32-wasip2 -p donut-test-guest
    @ls -l {{guest_dir}}/*.wasm

# Build the host (release) with the stock component inside.
host: guest
    cargo build --release -p donut-host

# The SQLite loadable extension (target/release/libdonutdb.so): the sqlite3
# shell and Python's sqlite3 load it (native/ext).
ext:
    cargo build --release -p donut-ext

build: host ext
    cargo build --release -p donut-bench

# Quick start, line one (`bash scripts/dev.sh demo` installs what it needs
# first): run the example component twice on the local backend.
demo: build
    bash scripts/demo.sh

# Test servers: dynoxide (a DynamoDB emulator) for the integration tests.
tools:
    @test -x {{CARGO_TARGET_DIR}}/tools/bin/dynoxide || cargo install --quiet --root {{CARGO_TARGET_DIR}}/tools dynoxide-rs --version 3.2.0 --no-default-features --features native-sqlite,http-server,cli --locked

# The real libSQL clients the client suites use (tests/all/clients.rs):
# `@libsql/client` and Drizzle from npm (clients/node, locked), Python's
# `libsql-client` from PyPI in a virtual environment.
clients:
    cd clients/node && ([ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error)
    [ -x {{CARGO_TARGET_DIR}}/tools/py/bin/python3 ] || python3 -m venv {{CARGO_TARGET_DIR}}/tools/py
    {{CARGO_TARGET_DIR}}/tools/py/bin/python3 -m pip install --quiet --disable-pip-version-check -r clients/python/requirements.txt

# Every test: unit and integration, all backends.
test: build tools clients
    cargo test --release -p donut-format -p donut-store -p donut-vfs -p donut-host -p donut-tests -p donut-sim
    {{guest_env}} cargo test --release -p donut-guest -p donut-sql

# Conformance tests against AWS's DynamoDB Local (Java 17; jar from npm).
test-dynamodb-local: build
    bash scripts/with-dynamodb-local.sh cargo test --release -p donut-tests -- --ignored conformance

# One integration test by name, e.g. `just test-one hundred_megabyte`.
test-one NAME: build tools
    cargo test --release -p donut-tests -- {{NAME}}

# The differential SQL fuzzer (tests/all/fuzz.rs) with more seeds than CI
# runs, e.g. `just fuzz 1000`; `DONUT_FUZZ_SEED=N just fuzz` replays one.
fuzz SEEDS="200": build tools
    DONUT_FUZZ_SEEDS={{SEEDS}} cargo test --release -p donut-tests -- differential_fuzzer --nocapture

# The deterministic simulator (ARCHITECTURE.md, "The simulator"), e.g.
# `just sim --seeds 10000 --ops 30`, `just sim --seed 42 --ops 20 --trace`.
sim *ARGS: guest
    cargo run --release -p donut-sim -- {{ARGS}}

# Lists code written twice in the change (the tool library's `duplicates`).
dupes:
    duplicates --change

# Benchmarks (see BENCHMARKS.md); e.g. `just bench --backend dynoxide`.
bench *ARGS: build tools
    cargo run --release -p donut-bench -- {{ARGS}}

# A small run of every benchmark workload, so the harness cannot rot.
bench-smoke: build tools
    cargo run --release -p donut-bench -- --scale smoke --latency-ms 1
    cargo run --release -p donut-bench -- --scale smoke --backend dynoxide
    cargo run --release -p donut-bench -- --scale smoke --service
    cargo run --release -p donut-bench -- --scale smoke --fresh-processes
    cargo run --release -p donut-bench -- --scale smoke --gc
    cargo run --release -p donut-bench -- --scale smoke --extension

# Formatting and clippy, host and guest, warnings as errors.
lint: guest
    cargo fmt --all -- --check
    cargo clippy --release -p donut-format -p donut-store -p donut-vfs -p donut-testkit -p donut-host -p donut-tests -p donut-bench -p donut-sim -p donut-example-tenants -p donut-ext --all-targets -- -D warnings
    {{guest_env}} cargo clippy --profile guest --target wasm32-wasip2 -p donut-guest -p donut-sql -p donut-session -p donut-example-query -p donut-bench-guest -- -D warnings
    {{guest_env}} cargo clippy --profile guest --target wasm32-wasip2 -p donut-test-guest -- -D warnings

# What CI runs (README line two, via .ci/run).
ci: lint bench-smoke test-dynamodb-local test sim-ci example-tenants

# The embedding example (README, "Embedding"): two tenants on a scratch store.
example-tenants: build
    cargo run --release -p donut-example-tenants

# The simulator's CI budget: 1,600 seeds with faults, over 100,000
# operations, each run's history then read back (it prints its totals):
# 1,200 fixed seeds (1..=1200), and 400 from a range that moves with the
# commit (its hash picks where they start, above the fixed ones), so each
# commit's CI explores seeds no earlier run did. A failure prints its
# replay command either way.
sim-ci: guest
    cargo run --release -p donut-sim -- --seeds 1200 --ops 30
    first=$(( 100000 + 0x$(git -C {{root}} rev-parse --short=8 HEAD 2>/dev/null || echo 0) % 1000000000 )); \
        echo "sim-ci: 400 seeds from $first (moves with the commit)"; \
        cargo run --release -p donut-sim -- --seeds 400 --first-seed "$first" --ops 30
