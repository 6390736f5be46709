//! Open files do not grow with commits, on any backend: 1,000 commits in
//! a process, counting `/proc/self/fd` before and after. Each count runs
//! in a process of its own (this test binary, running only the probe), so
//! other tests' files and sockets do not blur it.

use crate::util::Harness;
use std::process::Command;

/// Names the backend the probe runs on; unset, the probe does nothing.
const PROBE_ENV: &str = "DONUT_OPEN_FILES_PROBE";
/// Commits between the two counts.
const COMMITS: usize = 1_000;
/// Files a process may open besides, once warm (the runtime's and the
/// HTTP client's own): far below one per commit.
const OPEN_FILES_SLACK: usize = 16;

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

fn inserts(from: usize, count: usize) -> String {
    (from..from + count)
        .map(|i| format!("insert into t values ({i});\n"))
        .collect()
}

async fn commits(h: &Harness, from: usize, count: usize) {
    let (outcome, _) = h.shell("fd.db", &inserts(from, count)).await;
    assert!(
        outcome.success(),
        "{}",
        String::from_utf8_lossy(&outcome.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a probe the open_files_do_not_grow_* tests run in a process of its own"]
async fn open_files_probe() {
    let Ok(backend) = std::env::var(PROBE_ENV) else {
        return;
    };
    let h = match backend.as_str() {
        "memory" => Harness::memory(),
        "local" => Harness::local(),
        "dynamodb" => Harness::dynamodb().await,
        other => panic!("no backend {other}"),
    };
    h.create("fd.db").await;
    h.sql_ok("fd.db", "create table t(x)").await;
    // Warm: the compiled component, caches, the HTTP client's connections.
    commits(&h, 0, 100).await;
    let before = open_files();
    commits(&h, 100, COMMITS).await;
    let after = open_files();
    assert_eq!(
        h.value("fd.db", "select count(*) from t").await,
        (100 + COMMITS).to_string()
    );
    println!("open files: {before} {after}");
}

/// Runs the probe on `backend` in a new process: open files before and
/// after the commits.
fn probe(backend: &str) -> (usize, usize) {
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "open_files::open_files_probe",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(PROBE_ENV, backend)
        .output()
        .expect("run the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the probe failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split("open files: ").nth(1))
        .unwrap_or_else(|| panic!("no count in: {stdout}"));
    let mut counts = line
        .split(' ')
        .map(|n| n.parse::<usize>().expect("a count"));
    (counts.next().unwrap(), counts.next().unwrap())
}

fn assert_no_growth(backend: &str) {
    let (before, after) = probe(backend);
    assert!(
        after <= before + OPEN_FILES_SLACK,
        "{backend}: {before} open files before {COMMITS} commits, {after} after"
    );
}

#[test]
fn open_files_do_not_grow_with_commits_memory() {
    assert_no_growth("memory");
}

#[test]
fn open_files_do_not_grow_with_commits_local() {
    assert_no_growth("local");
}

#[test]
fn open_files_do_not_grow_with_commits_dynamodb() {
    assert_no_growth("dynamodb");
}
