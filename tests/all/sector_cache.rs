//! The persistent sector cache and the remembered table check: what a new
//! `donut-host` process pays, run as a user runs it (separate processes,
//! one cache directory).

use crate::util::{Dynoxide, dynamo_options, fill, host_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A local store and a cache directory of its own.
struct Setup {
    _dir: tempfile::TempDir,
    store: PathBuf,
    cache: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        Setup {
            store: dir.path().join("store"),
            cache: dir.path().join("cache"),
            _dir: dir,
        }
    }

    fn command(&self, extra: &[&str], args: &[&str]) -> Command {
        let mut command = Command::new(host_bin());
        command
            .arg("--local")
            .arg(&self.store)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(extra)
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, extra: &[&str], args: &[&str]) -> Output {
        self.command(extra, args).output().expect("run donut-host")
    }

    fn ok(&self, extra: &[&str], args: &[&str]) -> Output {
        let out = self.run(extra, args);
        assert!(
            out.status.success(),
            "donut-host {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `sql DB SQL` with --stats: (stdout, sectors read from storage,
    /// sectors read from the disk cache).
    fn sql_counted(&self, extra: &[&str], db: &str, sql: &str) -> (String, u64, u64) {
        let mut all = vec!["--stats"];
        all.extend_from_slice(extra);
        let out = self.ok(&all, &["sql", db, sql, "--format", "csv"]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (
            String::from_utf8(out.stdout).unwrap(),
            stat(&err, "calls, ", " sectors"),
            stat(&err, "from the host cache, ", " from the disk cache"),
        )
    }

    fn sectors_dir(&self) -> PathBuf {
        self.cache.join("sectors")
    }
}

/// The number between `before` and `after` in `--stats` output.
fn stat(stderr: &str, before: &str, after: &str) -> u64 {
    let start = stderr
        .find(before)
        .unwrap_or_else(|| panic!("no {before:?} in {stderr}"))
        + before.len();
    let len = stderr[start..].find(after).expect("stat end");
    stderr[start..start + len].trim().parse().expect("a number")
}

/// Every cache entry (files not starting with '.') and their total bytes.
fn entries(dir: &Path) -> (Vec<PathBuf>, u64) {
    let mut files = Vec::new();
    let mut bytes = 0;
    let Ok(shards) = std::fs::read_dir(dir.join("v1")) else {
        return (files, 0);
    };
    for shard in shards.flatten() {
        for entry in std::fs::read_dir(shard.path()).unwrap().flatten() {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                bytes += entry.metadata().unwrap().len();
                files.push(entry.path());
            }
        }
    }
    (files, bytes)
}

const SUM: &str = "select count(*), sum(length(v)) from t";

/// What [`SUM`] prints for `rows` rows of 1,000 bytes.
fn sum_of(rows: u64) -> String {
    format!("count(*),sum(length(v))\n{rows},{}\n", rows * 1000)
}

/// A database of `rows` rows of 1,000 bytes.
fn database(setup: &Setup, db: &str, rows: u64) {
    setup.ok(&[], &["create", db]);
    let sql = format!(
        "create table t(id integer primary key, v blob); {}",
        fill("t(v)", rows, "randomblob(1000)")
    );
    setup.ok(&[], &["sql", db, &sql]);
}

#[test]
fn a_new_process_reads_from_the_disk_cache_what_an_earlier_one_wrote_or_read() {
    let setup = Setup::new();
    database(&setup, "a.db", 500);
    let expected = sum_of(500);
    // The process that wrote the pages left them in the cache.
    let (out, from_storage, from_disk) = setup.sql_counted(&[], "a.db", SUM);
    assert_eq!(out, expected);
    assert_eq!(from_storage, 0, "a warm cache still read from storage");
    assert!(from_disk > 100, "{from_disk} sectors from the disk cache");
    // Without it, storage serves everything.
    let (out, from_storage, from_disk) = setup.sql_counted(&["--no-sector-cache"], "a.db", SUM);
    assert_eq!(out, expected);
    assert!(from_storage > 100 && from_disk == 0);
    // An emptied cache is filled by the next reader, for the one after.
    std::fs::remove_dir_all(setup.sectors_dir()).unwrap();
    let (_, from_storage, _) = setup.sql_counted(&[], "a.db", SUM);
    assert!(from_storage > 100);
    let (out, from_storage, _) = setup.sql_counted(&[], "a.db", SUM);
    assert_eq!((out.as_str(), from_storage), (expected.as_str(), 0));
}

#[test]
fn damaged_cache_entries_are_dropped_and_read_from_storage_again() {
    let setup = Setup::new();
    database(&setup, "d.db", 300);
    let expected = sum_of(300);
    let (files, _) = entries(&setup.sectors_dir());
    assert!(files.len() > 50, "{} entries", files.len());
    // Every entry damaged: flipped bytes in half, the other half torn.
    for (i, file) in files.iter().enumerate() {
        let mut bytes = std::fs::read(file).unwrap();
        if i % 2 == 0 {
            let at = bytes.len() / 2;
            bytes[at] ^= 0xff;
        } else {
            bytes.truncate(bytes.len() / 3);
        }
        std::fs::write(file, bytes).unwrap();
    }
    let (out, from_storage, from_disk) = setup.sql_counted(&[], "d.db", SUM);
    assert_eq!(out, expected, "damaged cache entries changed the answer");
    assert_eq!(from_disk, 0, "a damaged entry was served");
    assert!(from_storage > 50);
    // Replaced by good copies: the next process reads none from storage.
    let (out, from_storage, _) = setup.sql_counted(&[], "d.db", SUM);
    assert_eq!((out.as_str(), from_storage), (expected.as_str(), 0));
}

#[test]
fn a_full_cache_stays_within_its_bound_and_answers_stay_right() {
    let setup = Setup::new();
    let small = ["--sector-cache-mb", "2"];
    setup.ok(&small, &["create", "f.db"]);
    let sql = format!(
        "create table t(id integer primary key, v blob); {}",
        fill("t(v)", 4000, "randomblob(1000)")
    );
    setup.ok(&small, &["sql", "f.db", &sql]);
    for _ in 0..2 {
        let (out, _, _) = setup.sql_counted(&small, "f.db", SUM);
        assert_eq!(out, sum_of(4000));
    }
    // ~4.5 MB of pages went through a 2 MiB cache: each of the 256 shards
    // keeps its share, a quarter over it at most between evictions.
    let (_, bytes) = entries(&setup.sectors_dir());
    assert!(bytes > 0, "the cache kept nothing");
    assert!(bytes <= (2 << 20) * 5 / 4, "{bytes} bytes in a 2 MiB cache");
}

#[test]
fn processes_share_the_cache_at_once() {
    let setup = Setup::new();
    for db in ["p0.db", "p1.db", "p2.db", "p3.db"] {
        setup.ok(&["--no-sector-cache"], &["create", db]);
    }
    // Four writers, each filling its own database, with one cache.
    let writers: Vec<_> = (0..4)
        .map(|i| {
            let sql = format!(
                "create table t(id integer primary key, v blob); {}",
                fill("t(v)", 400 + i, "randomblob(1000)")
            );
            setup
                .command(&[], &["sql", &format!("p{i}.db"), &sql])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for writer in writers {
        let out = writer.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Eight readers at once over an emptied cache: all fill the same
    // entries together.
    std::fs::remove_dir_all(setup.sectors_dir()).unwrap();
    let readers: Vec<_> = (0..8)
        .map(|i| {
            setup
                .command(
                    &[],
                    &["sql", &format!("p{}.db", i % 4), SUM, "--format", "csv"],
                )
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let out = reader.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows = 400 + i as u64 % 4;
        assert_eq!(String::from_utf8(out.stdout).unwrap(), sum_of(rows));
    }
    // What they left is whole: a new process reads every page from it.
    for i in 0..4u64 {
        let (out, from_storage, _) = setup.sql_counted(&[], &format!("p{i}.db"), SUM);
        let rows = 400 + i;
        assert_eq!(out, sum_of(rows));
        assert_eq!(from_storage, 0);
    }
    let leftovers = std::fs::read_dir(setup.sectors_dir().join("v1"))
        .unwrap()
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).unwrap().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0, "temporary files left behind");
}

#[test]
fn a_cache_directory_that_cannot_be_written_is_said_once_and_work_goes_on() {
    let setup = Setup::new();
    std::fs::create_dir_all(setup.cache.parent().unwrap()).unwrap();
    let blocker = setup.cache.parent().unwrap().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    setup.ok(&["--no-sector-cache"], &["create", "w.db"]);
    let out = Command::new(host_bin())
        .arg("--local")
        .arg(&setup.store)
        .arg("--cache-dir")
        .arg(blocker.join("cache"))
        .args([
            "sql",
            "w.db",
            "create table t(x); insert into t values (1), (2); select sum(x) from t",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("running without the persistent sector cache")
            .count(),
        1,
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains('3'));
}

/// `donut-host` on dynoxide with a cache directory, AWS settings for a
/// local server.
fn on_dynamo(server: &Dynoxide, table: &str, cache: &Path, args: &[&str]) -> Output {
    Command::new(host_bin())
        .args(["--endpoint", &server.endpoint, "--table", table, "--stats"])
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "donutdb")
        .env("AWS_SECRET_ACCESS_KEY", "donutdb")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run donut-host")
}

fn describes(out: &Output) -> usize {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.trim_start().starts_with("DescribeTable"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_check_is_remembered_and_a_table_gone_since_still_gets_the_clear_error() {
    let server = Dynoxide::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let table = "checked";
    let out = on_dynamo(&server, table, &cache, &["create-table"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = on_dynamo(&server, table, &cache, &["create", "c.db"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(describes(&first), 1, "the first process checks the table");
    let second = on_dynamo(
        &server,
        table,
        &cache,
        &["sql", "c.db", "create table t(x)"],
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(describes(&second), 0, "a later process checked it again");

    // The table removed: the request that finds out says what the check
    // would have said, and the next process checks again.
    let (client, _) =
        donut_host::backend::dynamo::client(&dynamo_options(&server.endpoint, table), Vec::new())
            .await
            .unwrap();
    client
        .delete_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let gone = on_dynamo(&server, table, &cache, &["sql", "c.db", "select 1"]);
        assert!(!gone.status.success());
        let err = String::from_utf8_lossy(&gone.stderr);
        assert!(
            err.contains("does not exist") && err.contains("create-table"),
            "{err}"
        );
    }
    // Created again with the wrong key schema, behind a remembered check.
    let ok = on_dynamo(&server, table, &cache, &["create-table"]);
    assert!(ok.status.success());
    let ok = on_dynamo(&server, table, &cache, &["ls"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    client
        .delete_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    crate::util::create_wrong_schema_table(&server.endpoint, table, "id").await;
    for _ in 0..2 {
        let wrong = on_dynamo(&server, table, &cache, &["ls"]);
        assert!(!wrong.status.success());
        let err = String::from_utf8_lossy(&wrong.stderr);
        assert!(err.contains("wrong key schema"), "{err}");
    }
}
