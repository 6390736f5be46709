//! The `donut-host` binary, as a user runs it: separate processes sharing a
//! local store directory.

use crate::util::{guest_path, host_bin};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn host(store: &Path, args: &[&str]) -> Output {
    Command::new(host_bin())
        .arg("--local")
        .arg(store)
        .args(args)
        .env("XDG_CACHE_HOME", store.join("cache-home"))
        .stdin(Stdio::null())
        .output()
        .expect("run donut-host")
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = host(store, args);
    assert!(
        out.status.success(),
        "donut-host {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(store: &Path, args: &[&str]) -> String {
    let out = host(store, args);
    assert!(!out.status.success(), "donut-host {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn data_persists_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["create", "app.db"]);
    ok(
        &store,
        &[
            "sql",
            "app.db",
            "create table kv(k text primary key, v); insert into kv values ('a', 1)",
        ],
    );
    ok(
        &store,
        &[
            "sql",
            "app.db",
            "insert into kv values (?1, ?2)",
            "--param",
            "b",
            "--param",
            "2",
        ],
    );
    let out = ok(
        &store,
        &[
            "sql",
            "app.db",
            "select k, v from kv order by k",
            "--format",
            "json",
        ],
    );
    assert_eq!(
        out,
        "[\n  {\"k\": \"a\", \"v\": 1},\n  {\"k\": \"b\", \"v\": 2}\n]\n"
    );
    let listing = ok(&store, &["ls"]);
    assert!(listing.contains("app.db"), "{listing}");
}

#[test]
fn sqlite_version_is_printed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["create", "v.db"]);
    let out = ok(&store, &["sql", "v.db", "select sqlite_version()"]);
    assert!(out.contains("3.54."), "{out}");
}

#[test]
fn example_component_runs_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let query = guest_path("query.wasm");
    let query = query.to_str().unwrap();
    ok(&store, &["run", query, "--", "first"]);
    let out = ok(&store, &["run", query, "--", "second"]);
    assert!(out.contains("first") && out.contains("second"), "{out}");
    assert!(out.contains("2 rows in demo.db"), "{out}");
}

#[test]
fn shell_reads_piped_statements() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["create", "s.db"]);
    let mut child = Command::new(host_bin())
        .args([
            "--local",
            store.to_str().unwrap(),
            "shell",
            "s.db",
            "--format",
            "csv",
        ])
        .env("XDG_CACHE_HOME", store.join("cache-home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"create table t(x);\ninsert into t\n  values (7);\n.tables\nselect x * 6 from t;\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "name\nt\nx * 6\n42\n"
    );
}

#[test]
fn clear_errors_for_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let err = fails(&store, &["create", "p.db", "--page-size", "1000"]);
    assert!(err.contains("power of two"), "{err}");
    let err = fails(&store, &["sql", "../etc", "select 1"]);
    assert!(err.contains("illegal database name"), "{err}");
    let err = fails(&store, &["sql", "nope.db", "select 1"]);
    assert!(err.contains("not found"), "{err}");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not wasm").unwrap();
    let err = fails(&store, &["run", text.to_str().unwrap()]);
    assert!(err.contains("not WebAssembly"), "{err}");
    let plain = guest_path("plain.wasm");
    let err = fails(&store, &["run", plain.to_str().unwrap()]);
    assert!(err.contains("donut:storage"), "{err}");
    let listing = ok(&store, &["ls"]);
    assert_eq!(listing.lines().count(), 1, "only the header: {listing}");
}

#[test]
fn a_second_run_uses_the_compiled_component_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let query = guest_path("query.wasm");
    ok(&store, &["run", query.to_str().unwrap(), "--", "x"]);
    let cached: Vec<_> = std::fs::read_dir(store.join("cache-home/donutdb/components"))
        .expect("cache directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "one compiled component cached");
}
