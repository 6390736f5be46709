//! Kept versions (docs/format.md, "History"): time travel by version and by
//! time, restore and its undo, fork, on every backend; a store written
//! before history was kept; the CLI's `versions`, `restore`, `fork` and
//! `pull DB@AT`. (`debug` and the shells' busy retry: `cli.rs`.)

use crate::backend_tests;
use crate::util::{Harness, host_bin, stderr};
use donut_format::{At, DbName, format_utc_ms};
use donut_host::storage::{Version, fork, list_versions, read_root_at, restore};

fn name(text: &str) -> DbName {
    DbName::new(text).expect("legal name")
}

/// The rows of `t`, as csv lines after the header.
async fn rows(h: &Harness, db: &str) -> Vec<String> {
    let out = h.sql_ok(db, "select x from t order by x").await;
    out.lines().skip(1).map(str::to_string).collect()
}

/// A database `db` with one row per version: version 2 creates `t`, then
/// each insert is a version. Returns the versions after each insert.
async fn numbered(h: &Harness, db: &str, inserts: u32) -> Vec<u64> {
    h.create(db).await;
    h.sql_ok(db, "create table t(x)").await;
    let mut versions = Vec::new();
    for x in 1..=inserts {
        h.sql_ok(db, &format!("insert into t values ({x})")).await;
        versions.push(h.version(db).await);
    }
    versions
}

pub(crate) async fn a_past_version_reads_its_own_rows_and_refuses_writes(h: Harness) {
    let versions = numbered(&h, "a.db", 3).await;
    assert_eq!(rows(&h, &format!("a.db@{}", versions[0])).await, ["1"]);
    assert_eq!(rows(&h, &format!("a.db@{}", versions[1])).await, ["1", "2"]);
    assert_eq!(rows(&h, "a.db").await, ["1", "2", "3"]);
    let at = format!("a.db@{}", versions[1]);
    assert_eq!(
        h.value(&at, "pragma donut_version").await,
        versions[1].to_string()
    );
    let refused = h.sql(&at, "insert into t values (9)").await;
    assert!(!refused.success());
    assert!(
        stderr(&refused).contains("readonly"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(h.version("a.db").await, versions[2], "nothing was written");
    let past_newest = h
        .sql(&format!("a.db@{}", versions[2] + 1), "select 1")
        .await;
    assert!(
        stderr(&past_newest).contains("has no version"),
        "{}",
        stderr(&past_newest)
    );
    // The shell reads a past version too.
    let (out, _) = h.shell(&at, "select count(*) from t;\n").await;
    assert!(out.success() && crate::util::stdout(&out).contains('2'));
}

pub(crate) async fn a_time_names_the_version_current_then(h: Harness) {
    numbered(&h, "t.db", 4).await;
    let kept = list_versions(&*h.backend, &name("t.db"), 100)
        .await
        .unwrap();
    assert_eq!(kept.len(), 6, "create, create table, 4 inserts");
    for version in &kept {
        let time = version.time_ms();
        // Going back from the newest, the first written at or before it.
        let expected = kept.iter().find(|v| v.time_ms() <= time).unwrap();
        let db = format!("t.db@{}", format_utc_ms(time));
        assert_eq!(
            h.value(&db, "pragma donut_version").await,
            expected.version().to_string(),
            "{db}"
        );
    }
    let oldest = kept.last().unwrap().time_ms();
    let too_old = h
        .sql(
            &format!("t.db@{}", format_utc_ms(oldest - 1000)),
            "select 1",
        )
        .await;
    assert!(
        stderr(&too_old).contains("no kept version as old as"),
        "{}",
        stderr(&too_old)
    );
}

pub(crate) async fn restore_then_restore_back(h: Harness) {
    let versions = numbered(&h, "r.db", 3).await;
    let db = name("r.db");
    let first = restore(&*h.backend, &db, At::Version(versions[0]))
        .await
        .unwrap();
    assert_eq!(first.version, versions[2] + 1);
    assert_eq!(rows(&h, "r.db").await, ["1"]);
    h.assert_integrity("r.db").await;
    // The restore is a version like any other: undo it the same way.
    restore(&*h.backend, &db, At::Version(first.version - 1))
        .await
        .unwrap();
    assert_eq!(rows(&h, "r.db").await, ["1", "2", "3"]);
    // Writes go on from the restored content.
    h.sql_ok("r.db", "insert into t values (4)").await;
    assert_eq!(rows(&h, "r.db").await, ["1", "2", "3", "4"]);
    h.assert_integrity("r.db").await;
}

pub(crate) async fn a_removed_database_comes_back_by_restore(h: Harness) {
    let versions = numbered(&h, "gone.db", 2).await;
    let db = name("gone.db");
    donut_host::storage::remove_database(&*h.backend, &db)
        .await
        .unwrap();
    assert!(!h.sql("gone.db", "select 1").await.success());
    // The removal is a version too; reading at it says so.
    let removal = versions[1] + 1;
    let e = read_root_at(&*h.backend, &db, At::Version(removal))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("removed"), "{e}");
    let back = restore(&*h.backend, &db, At::Version(versions[1]))
        .await
        .unwrap();
    assert!(back.undid_removal);
    assert_eq!(rows(&h, "gone.db").await, ["1", "2"]);
}

pub(crate) async fn a_restore_cannot_cross_into_an_earlier_database_of_the_name(h: Harness) {
    let versions = numbered(&h, "again.db", 1).await;
    let db = name("again.db");
    donut_host::storage::remove_database(&*h.backend, &db)
        .await
        .unwrap();
    h.create("again.db").await;
    let e = restore(&*h.backend, &db, At::Version(versions[0]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("earlier database"), "{e}");
    // It can still be read, and pulled or forked from there.
    assert_eq!(rows(&h, &format!("again.db@{}", versions[0])).await, ["1"]);
}

pub(crate) async fn a_fork_shares_pages_and_both_diverge(h: Harness) {
    let versions = numbered(&h, "src.db", 3).await;
    h.sql_ok(
        "src.db",
        "create table big(b); insert into big select randomblob(3000) from generate_series(1, 50)",
    )
    .await;
    let before = h.summary().await;
    let root = fork(&*h.backend, &name("src.db"), None, &name("dst.db"))
        .await
        .unwrap();
    let after = h.summary().await;
    // One root and its history item, the two databases' GC states (now
    // `forked`), the family item, and on DynamoDB a catalog entry: no
    // page is copied.
    assert!(after.items - before.items <= 6, "{before:?} -> {after:?}");
    assert!(
        after.bytes - before.bytes < 4 * 4096,
        "{before:?} -> {after:?}"
    );
    assert_eq!(root.version, 1);
    assert_eq!(rows(&h, "dst.db").await, ["1", "2", "3"]);
    h.sql_ok("dst.db", "insert into t values (100)").await;
    h.sql_ok("src.db", "delete from t where x = 1").await;
    assert_eq!(rows(&h, "dst.db").await, ["1", "2", "3", "100"]);
    assert_eq!(rows(&h, "src.db").await, ["2", "3"]);
    h.assert_integrity("dst.db").await;
    h.assert_integrity("src.db").await;
    // A fork of a past version.
    fork(
        &*h.backend,
        &name("src.db"),
        Some(At::Version(versions[0])),
        &name("old.db"),
    )
    .await
    .unwrap();
    assert_eq!(rows(&h, "old.db").await, ["1"]);
    let taken = fork(&*h.backend, &name("src.db"), None, &name("dst.db"))
        .await
        .unwrap_err();
    assert!(taken.to_string().contains("already exists"), "{taken}");
}

pub(crate) async fn versions_list_every_commit_newest_first(h: Harness) {
    numbered(&h, "v.db", 3).await;
    donut_host::storage::remove_database(&*h.backend, &name("v.db"))
        .await
        .unwrap();
    let kept = list_versions(&*h.backend, &name("v.db"), 100)
        .await
        .unwrap();
    let numbers: Vec<u64> = kept.iter().map(Version::version).collect();
    assert_eq!(numbers, [6, 5, 4, 3, 2, 1]);
    assert!(matches!(kept[0], Version::Removed(_)));
    let Version::Live(root) = &kept[1] else {
        panic!("version 5 is a root")
    };
    assert_eq!(root.page_count, 2);
    let two = list_versions(&*h.backend, &name("v.db"), 2).await.unwrap();
    assert_eq!(two.len(), 2);
}

/// Issue 31, item 5: a database removed within an hour of a restore kept
/// the restore's source history item through its final `gc`; created
/// again, `NAME@that version` read the removed database on DynamoDB and
/// memory (their history reads were not bounded by the head).
pub(crate) async fn time_travel_after_recreation_never_reads_the_removed_database(h: Harness) {
    let versions = numbered(&h, "tt.db", 3).await;
    restore(&*h.backend, &name("tt.db"), At::Version(versions[0]))
        .await
        .unwrap();
    donut_host::storage::remove_database(&*h.backend, &name("tt.db"))
        .await
        .unwrap();
    let options = donut_host::storage::GcOptions {
        retain_ms: 0,
        now_ms: donut_host::storage::Clock::System.now_ms() + 1_000,
        write_units_max: None,
        keep_from: None,
    };
    let report = donut_host::storage::collect_garbage(&*h.backend, &name("tt.db"), options)
        .await
        .unwrap();
    assert!(report.removed, "{report:?}");
    h.create("tt.db").await;
    let read = read_root_at(&*h.backend, &name("tt.db"), At::Version(versions[0])).await;
    let err = read
        .expect_err("the new tt.db has no such version")
        .to_string();
    assert!(err.contains("has no version"), "{err}");
    let sql = h.sql(&format!("tt.db@{}", versions[0]), "select 1").await;
    assert!(stderr(&sql).contains("has no version"), "{}", stderr(&sql));
}

backend_tests!(
    time_travel_after_recreation_never_reads_the_removed_database,
    a_past_version_reads_its_own_rows_and_refuses_writes,
    a_time_names_the_version_current_then,
    restore_then_restore_back,
    a_removed_database_comes_back_by_restore,
    a_restore_cannot_cross_into_an_earlier_database_of_the_name,
    a_fork_shares_pages_and_both_diverge,
    versions_list_every_commit_newest_first,
);

/// A local store written before history was kept (format v3) has no
/// history files: its current root is its one version until the next
/// commit, which starts the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_written_before_history_reads_and_starts_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let backend = donut_host::LocalBackend::open(&store).unwrap();
    let h = Harness::over(std::sync::Arc::new(backend));
    numbered(&h, "old.db", 2).await;
    std::fs::remove_dir_all(store.join("history")).unwrap();
    std::fs::create_dir(store.join("history")).unwrap();
    let kept = list_versions(&*h.backend, &name("old.db"), 100)
        .await
        .unwrap();
    assert_eq!(kept.iter().map(Version::version).collect::<Vec<_>>(), [4]);
    assert_eq!(rows(&h, "old.db@4").await, ["1", "2"]);
    let retired = h.sql("old.db@3", "select 1").await;
    assert!(
        stderr(&retired).contains("no longer kept"),
        "{}",
        stderr(&retired)
    );
    h.sql_ok("old.db", "insert into t values (3)").await;
    let kept = list_versions(&*h.backend, &name("old.db"), 100)
        .await
        .unwrap();
    assert_eq!(kept.iter().map(Version::version).collect::<Vec<_>>(), [5]);
    let never_kept = h.sql("old.db@4", "select 1").await;
    assert!(
        stderr(&never_kept).contains("no longer kept"),
        "{}",
        stderr(&never_kept)
    );
    assert_eq!(rows(&h, "old.db@5").await, ["1", "2", "3"]);
}

/// The commands as a user runs them: versions, restore (and its undo
/// hint), fork, pull of a past version.
#[test]
fn the_cli_lists_restores_forks_and_pulls_past_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(host_bin())
            .arg("--local")
            .arg(&store)
            .arg("--no-sector-cache")
            .args(args)
            .output()
            .expect("run donut-host");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        (text(&out.stdout), text(&out.stderr))
    };
    run(&["create", "c.db"]);
    run(&["sql", "c.db", "create table t(x)"]);
    run(&["sql", "c.db", "insert into t values ('first')"]);
    run(&["sql", "c.db", "update t set x = 'second'"]);
    let (listed, _) = run(&["versions", "c.db"]);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 5, "{listed}");
    assert!(lines[0].contains("version") && lines[1].trim_start().starts_with('4'));
    let (_, said) = run(&["restore", "c.db", "--at", "3"]);
    assert!(said.contains("undo: restore c.db --at 4"), "{said}");
    let (now, _) = run(&["sql", "c.db", "select x from t"]);
    assert!(now.contains("first"), "{now}");
    run(&["fork", "c.db@4", "f.db"]);
    let (forked, _) = run(&["sql", "f.db", "select x from t"]);
    assert!(forked.contains("second"), "{forked}");
    let file = dir.path().join("pulled.db");
    let (_, said) = run(&["pull", "c.db@4", file.to_str().unwrap()]);
    assert!(said.contains("version 4"), "{said}");
    let conn = rusqlite::Connection::open(&file).unwrap();
    let x: String = conn.query_row("select x from t", [], |r| r.get(0)).unwrap();
    assert_eq!(x, "second");
}

/// A fork shares its source's database id: the host's memory of the newest
/// version seen must not mix the two (keyed by id alone, a reader of the
/// fork would take the source's newer versions for its own and read its
/// root twice per statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_and_its_source_keep_separate_newest_versions_in_a_shared_cache() {
    let mut h = Harness::memory();
    h.cache = Some(donut_host::storage::SectorCache::new(64 << 20));
    numbered(&h, "src.db", 1).await;
    fork(&*h.backend, &name("src.db"), None, &name("dst.db"))
        .await
        .unwrap();
    for x in 2..=6 {
        h.sql_ok("src.db", &format!("insert into t values ({x})"))
            .await;
    }
    let (out, stats) = h.shell("dst.db", "select count(*) from t;\n").await;
    assert!(out.success(), "{}", stderr(&out));
    assert!(crate::util::stdout(&out).contains('1'));
    assert_eq!(
        stats.read_root, 1,
        "one root read for one statement: {stats}"
    );
    let (_, stats) = h.shell("src.db", "select count(*) from t;\n").await;
    assert_eq!(stats.read_root, 1, "{stats}");
}
