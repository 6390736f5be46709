//! What a guest reads as randomness and time: SQLite's `random()` and
//! `randomblob()` (seeded from the default VFS's `xRandomness`), the wall
//! clock (`xCurrentTime`, `wasi:clocks`), `wasi:random` — the operating
//! system's in every process, instance and call, and deterministic only
//! where the simulator asks for it (`Call::determinism`, from its seed).
//! Hrana streams are in `libsql.rs`, the extension in `extension.rs`.

use crate::util::{Harness, components, host_bin};
use donut_host::runtime::{Call, Determinism, Stdio};
use donut_host::{Grant, MemoryBackend, StorageCtx};
use donut_testkit::csv_exec;
use std::collections::HashSet;
use std::process::{Command, Stdio as ProcessStdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// What a key-making application asks SQLite for.
const DRAW: &str = "select hex(randomblob(16)) || ':' || random()";

/// What a successful `donut-host ARGS` printed.
fn cli(store: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(host_bin())
        .arg("--local")
        .arg(store)
        .args(args)
        .env("XDG_CACHE_HOME", store.join("cache-home"))
        .stdin(ProcessStdio::null())
        .output()
        .expect("run donut-host");
    assert!(
        out.status.success(),
        "donut-host {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The one value `sql` selects, by `donut-host sql` on `r.db`.
fn cli_value(store: &std::path::Path, sql: &str) -> String {
    let text = cli(store, &["sql", "r.db", sql]);
    // A table: the header, a rule, the value, the row count.
    let mut lines = text.lines().skip_while(|l| !l.starts_with("---"));
    lines.next();
    lines.next().expect("a value").trim().to_string()
}

#[test]
fn random_differs_between_donut_host_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    cli(&store, &["create", "r.db"]);
    // Three processes started within a second: before the fix, SQLite in
    // the guest seeded from the time in seconds and a constant pid.
    let draws: Vec<String> = (0..3).map(|_| cli_value(&store, DRAW)).collect();
    let distinct: HashSet<&String> = draws.iter().collect();
    assert_eq!(distinct.len(), draws.len(), "the same draws: {draws:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_differs_between_instances_and_the_clock_is_real() {
    let h = Harness::memory();
    h.create("r.db").await;
    let mut draws = Vec::new();
    for _ in 0..4 {
        draws.push(h.value("r.db", DRAW).await);
    }
    let distinct: HashSet<&String> = draws.iter().collect();
    assert_eq!(distinct.len(), draws.len(), "the same draws: {draws:?}");
    // `now` is the wall clock, not a virtual one (within a minute: the
    // call takes far less).
    let guest_s: i64 = h
        .value("r.db", "select unixepoch('now')")
        .await
        .parse()
        .expect("seconds");
    let host_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_s - host_s).abs() < 60,
        "guest clock {guest_s}, host clock {host_s}"
    );
}

/// One `DRAW` and `unixepoch('now')` in a call made deterministic with
/// `seed` on a virtual clock at `clock_ms`, as the simulator runs guests.
async fn deterministic_draw(store: &MemoryBackend, seed: u64, clock_ms: u64) -> String {
    let storage = StorageCtx::new(Arc::new(store.clone()), Grant::all());
    let program = &components().sql;
    let argv = std::iter::once(program.label().to_string())
        .chain(csv_exec(
            "r.db",
            &format!("{DRAW} || ':' || unixepoch('now')"),
        ))
        .collect();
    let mut call = Call::new(argv, storage);
    call.stdio = Stdio::Capture { stdin: Vec::new() };
    call.determinism = Some(Determinism {
        seed,
        clock_ms: Arc::new(AtomicU64::new(clock_ms)),
    });
    let outcome = components()
        .runtime
        .run(program, call)
        .await
        .expect("the call runs");
    assert!(
        outcome.success(),
        "{}",
        String::from_utf8_lossy(&outcome.stderr)
    );
    String::from_utf8(outcome.stdout)
        .expect("utf-8")
        .lines()
        .nth(1)
        .expect("a value")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_determinism_repeats_random_and_time_from_its_seed() {
    let h = Harness::memory();
    h.create("r.db").await;
    let store = h.memory.clone().expect("memory store");
    let clock_ms = 1_700_000_000_000;
    let first = deterministic_draw(&store, 7, clock_ms).await;
    let again = deterministic_draw(&store, 7, clock_ms).await;
    assert_eq!(first, again, "the same seed must draw the same");
    assert!(first.ends_with(":1700000000"), "the virtual clock: {first}");
    let other = deterministic_draw(&store, 8, clock_ms).await;
    assert_ne!(first, other, "another seed must draw otherwise");
}
