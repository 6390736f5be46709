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

/// `debug` as a user runs it: the root as JSON, the manifest, a sector,
/// verify (and its exit code on a damaged store), stats by kind.
#[test]
fn the_debug_commands_decode_and_verify_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let run = |args: &[&str]| {
        std::process::Command::new(host_bin())
            .arg("--local")
            .arg(&store)
            .arg("--no-sector-cache")
            .args(args)
            .output()
            .expect("run donut-host")
    };
    let ok = |args: &[&str]| {
        let out = run(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    ok(&["create", "d.db"]);
    ok(&[
        "sql",
        "d.db",
        "create table t(x); insert into t select randomblob(500) from generate_series(1, 40)",
    ]);
    let root: serde_json::Value = serde_json::from_str(&ok(&["debug", "root", "d.db"])).unwrap();
    assert_eq!(root["version"], 3);
    assert_eq!(root["format_version"], 3);
    assert_eq!(root["page_size"], 4096);
    let pages = root["page_count"].as_u64().unwrap();
    assert!(pages >= 7, "{root}");
    let old: serde_json::Value = serde_json::from_str(&ok(&["debug", "root", "d.db@2"])).unwrap();
    assert_eq!(old["version"], 2);
    let manifest = ok(&["debug", "manifest", "d.db"]);
    assert_eq!(manifest.lines().count() as u64, pages);
    let one = ok(&["debug", "manifest", "d.db", "--page", "2"]);
    assert_eq!(one.lines().next(), manifest.lines().nth(1));
    let hash = one.split_whitespace().nth(1).unwrap().to_string();
    let sector: serde_json::Value =
        serde_json::from_str(&ok(&["debug", "sector", "d.db", &hash])).unwrap();
    assert_eq!(sector["sector"]["kind"], "page");
    assert_eq!(sector["sector"]["page_size_matches"], true);
    assert_eq!(sector["bytes"], 4096 + 16, "a page and its salt");
    assert_eq!(sector["salt"]["level"], 0);
    assert_eq!(sector["salt"]["slot"], 1, "page 2 is index 1");
    let raw = run(&["debug", "sector", "d.db", &hash, "--raw"]);
    assert_eq!(raw.stdout.len(), 4096 + 16);
    assert!(ok(&["debug", "verify", "d.db"]).contains(": ok"));
    let stats = ok(&["debug", "stats"]);
    for kind in ["root", "history", "sector"] {
        assert!(stats.lines().any(|l| l.starts_with(kind)), "{stats}");
    }
    // Damage page 2 where the local store keeps it (a pack record: db id,
    // hash, u32 length, bytes): verify says so, with exit code 1.
    let wanted: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hash[i..i + 2], 16).unwrap())
        .collect();
    let mut damaged_records = 0;
    for pack in std::fs::read_dir(store.join("packs")).unwrap() {
        let path = pack.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(32).position(|w| w == wanted.as_slice()) {
            bytes[at + 32 + 4] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            damaged_records += 1;
        }
    }
    assert!(damaged_records > 0, "page 2 is in no pack");
    let damaged = run(&["debug", "verify", "d.db"]);
    assert_eq!(
        damaged.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&damaged.stdout)
    );
    assert!(String::from_utf8_lossy(&damaged.stdout).contains("damaged"));
    let bad = run(&["debug", "manifest", "d.db", "--page", "0"]);
    assert!(!bad.status.success());
}

#[test]
fn completion_scripts_name_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(host_bin())
            .args(["completion", shell])
            .output()
            .expect("run donut-host");
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        for command in ["versions", "restore", "fork", "debug"] {
            assert!(script.contains(command), "{shell}: no {command}");
        }
    }
}

/// Broke for users of two shells on one database: an optimistic
/// autocommit insert that lost the commit race failed with SQLITE_BUSY
/// (19 of 100 in the measurement) instead of waiting out
/// `busy_timeout` as a lock would. Two `donut-host shell` processes × 50
/// inserts, default settings: none fails, none is lost or doubled.
#[test]
fn two_shells_inserting_at_once_lose_no_insert_to_the_commit_race() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let command = || {
        let mut command = std::process::Command::new(host_bin());
        command.arg("--local").arg(&store).arg("--no-sector-cache");
        command
    };
    let created = command().args(["create", "race.db"]).output().unwrap();
    assert!(created.status.success());
    let made = command()
        .args(["sql", "race.db", "create table t(shell, n)"])
        .output()
        .unwrap();
    assert!(made.status.success());
    let shells: Vec<_> = (0..2)
        .map(|shell| {
            let mut child = command()
                .args(["shell", "race.db"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let script: String = (0..50)
                .map(|n| format!("insert into t values ({shell}, {n});\n"))
                .collect();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            child
        })
        .collect();
    for child in shells {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let count = command()
        .args([
            "sql",
            "race.db",
            "select count(*), count(distinct shell || '.' || n) from t",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).lines().nth(1),
        Some("100,100")
    );
}

/// `--change-log FILE`: a JSON line per VFS call (the Go DonutDB's change
/// log writer), appended across processes; nothing when off.
#[test]
fn the_change_log_has_a_json_line_per_vfs_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let log = dir.path().join("change.jsonl");
    let log_arg = log.to_str().unwrap();
    ok(&store, &["create", "c.db"]);
    ok(
        &store,
        &[
            "--change-log",
            log_arg,
            "sql",
            "c.db",
            "create table t(x); insert into t values (1), (2)",
        ],
    );
    ok(
        &store,
        &[
            "--change-log",
            log_arg,
            "sql",
            "c.db",
            "select count(*) from t",
        ],
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let actions: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["action"].as_str()).collect();
    for action in ["read", "write", "sync", "lock", "unlock", "file_size"] {
        assert!(actions.contains(action), "no {action}: {actions:?}");
    }
    for line in &lines {
        assert!(line["ts_ms"].as_u64().is_some_and(|t| t > 0), "{line}");
        assert!(line["duration_us"].as_u64().is_some(), "{line}");
        assert!(
            line["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("SQLITE_")),
            "{line}"
        );
    }
    let writes: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["action"] == "write" && l["file"] == "c.db")
        .collect();
    assert!(!writes.is_empty());
    assert!(
        writes
            .iter()
            .all(|w| w["offset"].as_u64().is_some() && w["length"] == 4096)
    );
    // The commit's sync moves the version the file reads to the new root.
    let sync = lines
        .iter()
        .find(|l| l["action"] == "sync" && l["file"] == "c.db")
        .expect("a sync of the database");
    assert_eq!(sync["result"], "SQLITE_OK");
    let versions: Vec<u64> = lines.iter().filter_map(|l| l["version"].as_u64()).collect();
    // Created at 1; the table's commit 2, the insert's 3.
    assert_eq!(versions.iter().max(), Some(&3), "{versions:?}");
    assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
    // Off: nothing more is written.
    ok(&store, &["sql", "c.db", "insert into t values (3)"]);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text);
    // A directory that is not there: a clear error, nothing run.
    let missing = dir.path().join("nowhere/log.jsonl");
    let err = fails(
        &store,
        &[
            "--change-log",
            missing.to_str().unwrap(),
            "sql",
            "c.db",
            "insert into t values (4)",
        ],
    );
    assert!(err.contains("change log"), "{err}");
    assert_eq!(
        ok(
            &store,
            &["sql", "c.db", "select count(*) from t", "--format", "csv"]
        ),
        "count(*)\n3\n"
    );
}

/// `donut-host ARGS` on `store` with at most `files_max` open files (as
/// `ulimit -n` sets it), `stdin` piped in.
fn host_with_open_files_max(store: &Path, files_max: u32, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -n {files_max} && exec \"$0\" \"$@\""))
        .arg(host_bin())
        .arg("--local")
        .arg(store)
        .args(args)
        .env("XDG_CACHE_HOME", store.join("cache-home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run donut-host under bash");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The local store kept every pack (one per commit) open: after as many
/// commits as a process may open files, every command on the store failed
/// "Too many open files". 5,000 commits under `ulimit -n 256`, then every
/// command works under it, and the packs were folded.
#[test]
fn five_thousand_commits_under_ulimit_256_leave_every_command_working() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let run = |args: &[&str], stdin: &[u8]| {
        let out = host_with_open_files_max(&store, 256, args, stdin);
        assert!(
            out.status.success(),
            "donut-host {args:?} under ulimit -n 256 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let commits = 5_000;
    let mut script = String::from("create table t(x);\n");
    for i in 0..commits {
        script.push_str(&format!("insert into t values ({i});\n"));
    }
    run(&["create", "u.db"], b"");
    run(&["shell", "u.db", "--format", "csv"], script.as_bytes());
    let packs = std::fs::read_dir(store.join("packs")).unwrap().count();
    assert!(packs < 100, "{packs} packs after {commits} commits");
    assert!(run(&["ls"], b"").contains("u.db"));
    let counted = run(&["sql", "u.db", "select count(*), sum(x) from t"], b"");
    assert!(counted.contains("5000"), "{counted}");
    let versions = run(&["versions", "u.db", "--limit", "3"], b"");
    assert!(versions.lines().count() >= 3, "{versions}");
    run(&["gc", "--retain", "0s"], b"");
    let file = dir.path().join("u.sqlite");
    run(&["pull", "u.db", file.to_str().unwrap()], b"");
    let conn = rusqlite::Connection::open(&file).unwrap();
    let n: i64 = conn
        .query_row("select count(*) from t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, commits);
    let more = run(
        &[
            "sql",
            "u.db",
            "insert into t values (-1); select count(*) from t",
        ],
        b"",
    );
    assert!(more.contains("5001"), "{more}");
}
