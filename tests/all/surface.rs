//! The paths SQLite can take to a commit besides the batch-atomic one:
//! page-size changes, `synchronous` and `journal_mode` in every spelling,
//! ATTACHed databases, backups, several connections in one program. Each
//! test is named for what broke before its fix.

use crate::backend_tests;
use crate::util::{Harness, components, fill, stderr, stdout};

backend_tests!(
    a_page_size_change_by_vacuum_keeps_every_row,
    synchronous_off_in_any_spelling_still_commits,
    every_journal_mode_commits_and_wal_keeps_the_current_mode,
    vacuum_into_another_donutdb_database_keeps_every_row,
    backup_across_page_sizes_keeps_every_row,
    a_transaction_writing_two_attached_databases_is_refused_whole,
    a_transaction_writing_one_attached_database_commits,
    two_connections_in_one_program_write_one_at_a_time,
    journal_memory_is_given_back_in_every_journal_mode,
    a_write_to_a_removed_database_is_readonly_dbmoved,
    backup_between_donutdb_databases_of_other_page_sizes_keeps_every_row,
    a_database_of_50_000_pages_vacuums_and_copies_whole,
);

/// 300 rows of 100 to 400 bytes: several pages at every page size.
fn fill_t() -> String {
    format!(
        "create table t(id integer primary key, v text); {} create index t_v on t(v);",
        fill("t(v)", 300, "printf('%.*c', 100 + i, 'x')")
    )
}

/// Row count and total length of `t`, as one value.
const SUMMARY: &str = "select count(*) || ':' || sum(length(v)) from t";
const FILLED: &str = "300:75150";

async fn a_page_size_change_by_vacuum_keeps_every_row(h: Harness) {
    for (from, to) in [
        (4096, 8192),
        (512, 1024),
        (2048, 4096),
        (8192, 4096),
        (4096, 65536),
        (65536, 512),
    ] {
        let db = format!("p{from}-{to}.db");
        h.create_with_page_size(&db, from).await;
        h.sql_ok(&db, &fill_t()).await;
        let version = h.version(&db).await;
        h.sql_ok(&db, &format!("pragma page_size = {to}; vacuum;"))
            .await;
        assert!(h.version(&db).await > version, "{db}: VACUUM committed");
        // A new instance: nothing cached from the VACUUM.
        assert_eq!(h.value(&db, "pragma page_size").await, to.to_string());
        assert_eq!(h.value(&db, SUMMARY).await, FILLED, "{db}");
        h.assert_integrity(&db).await;
        h.sql_ok(&db, "insert into t(v) values ('after')").await;
        assert_eq!(h.value(&db, "select count(*) from t").await, "301");
        h.assert_integrity(&db).await;
    }
}

async fn synchronous_off_in_any_spelling_still_commits(h: Harness) {
    h.create("s.db").await;
    h.sql_ok("s.db", "create table t(x)").await;
    let spellings = [
        "off", "OFF", "no", "false", "0", "'off'", "normal", "1", "full", "extra", "3",
    ];
    for (i, spelling) in spellings.iter().enumerate() {
        h.sql_ok(
            "s.db",
            &format!(
                "pragma synchronous = {spelling}; insert into t values ({i}); insert into t values ({i});"
            ),
        )
        .await;
        assert_eq!(
            h.value("s.db", "select count(*) from t").await,
            ((i + 1) * 2).to_string(),
            "synchronous = {spelling}"
        );
    }
    // A transaction, a rollback and a commit under synchronous = off.
    h.sql_ok(
        "s.db",
        "pragma synchronous = no;
         begin; insert into t values (-1); rollback;
         begin; insert into t values (-2); commit;",
    )
    .await;
    assert_eq!(
        h.value("s.db", "select count(*) || ':' || min(x) from t")
            .await,
        format!("{}:-2", spellings.len() * 2 + 1)
    );
    h.assert_integrity("s.db").await;
}

async fn every_journal_mode_commits_and_wal_keeps_the_current_mode(h: Harness) {
    h.create("j.db").await;
    h.sql_ok("j.db", "create table t(x)").await;
    assert_eq!(
        h.value("j.db", "pragma journal_mode = wal").await,
        "delete",
        "SQLite keeps the mode for a VFS without shared memory"
    );
    assert_eq!(h.value("j.db", "pragma journal_mode = OFF").await, "off");
    let modes = [
        "delete", "truncate", "persist", "memory", "off", "wal", "DELETE",
    ];
    for (i, mode) in modes.iter().enumerate() {
        h.sql_ok(
            "j.db",
            &format!(
                "pragma journal_mode = {mode};
                 insert into t values ({i});
                 begin; insert into t values ({i}); insert into t select x from t; commit;
                 begin; insert into t values (-1); rollback;"
            ),
        )
        .await;
        h.assert_integrity("j.db").await;
    }
    // Each round: one insert, then one more and a copy of every row.
    let mut rows = 0u64;
    for _ in modes {
        rows = (rows + 2) * 2;
    }
    assert_eq!(
        h.value("j.db", "select count(*) from t").await,
        rows.to_string()
    );
    assert_eq!(
        h.value("j.db", "select count(*) from t where x < 0").await,
        "0"
    );
}

async fn vacuum_into_another_donutdb_database_keeps_every_row(h: Harness) {
    h.create("src.db").await;
    h.sql_ok("src.db", &fill_t()).await;
    for page_size in [4096, 1024] {
        let copy = format!("copy{page_size}.db");
        h.create_with_page_size(&copy, page_size).await;
        h.sql_ok("src.db", &format!("vacuum into '{copy}'")).await;
        assert_eq!(h.value(&copy, SUMMARY).await, FILLED, "{copy}");
        assert_eq!(h.value(&copy, "pragma page_size").await, "4096");
        h.assert_integrity(&copy).await;
    }
}

async fn backup_across_page_sizes_keeps_every_row(h: Harness) {
    h.create_with_page_size("b.db", 1024).await;
    h.sql_ok(
        "b.db",
        "create table old(x); insert into old values (randomblob(5000));",
    )
    .await;
    let (out, _) = h
        .run_with(&components().test_guest, &["backup", "b.db"], "")
        .await;
    assert!(out.success(), "{}", stderr(&out));
    let expected = "300:75150:8192";
    assert_eq!(stdout(&out), format!("into: {expected}\nout: {expected}\n"));
    assert_eq!(
        h.value("b.db", "select count(*) || ':' || sum(length(v)) || ':' || (select page_size from pragma_page_size) from t").await,
        expected
    );
    assert_eq!(
        h.value(
            "b.db",
            "select count(*) from sqlite_schema where name = 'old'"
        )
        .await,
        "0",
        "a backup replaces the destination"
    );
    h.assert_integrity("b.db").await;
}

async fn two_databases(h: &Harness) -> (u64, u64) {
    for db in ["a.db", "b.db"] {
        h.create(db).await;
        h.sql_ok(db, "create table t(x); insert into t values (1);")
            .await;
    }
    (h.version("a.db").await, h.version("b.db").await)
}

async fn a_transaction_writing_two_attached_databases_is_refused_whole(h: Harness) {
    let versions = two_databases(&h).await;
    // Also with the settings that make SQLite commit database by database
    // (found by the differential fuzzer, seed 5).
    for settings in [
        "",
        "pragma synchronous = 0;",
        "pragma b.synchronous = off;",
        "pragma journal_mode = memory;",
        "pragma b.journal_mode = off;",
    ] {
        let out = h
            .sql(
                "a.db",
                &format!(
                    "attach 'b.db' as b; {settings}
                     begin; insert into main.t values (2); insert into b.t values (2); commit;"
                ),
            )
            .await;
        assert!(
            !out.success(),
            "{settings}: a two-database commit was accepted"
        );
        assert!(
            stderr(&out).contains("cannot commit them atomically"),
            "{settings}: {}",
            stderr(&out)
        );
    }
    assert_eq!(
        (h.version("a.db").await, h.version("b.db").await),
        versions,
        "neither database committed"
    );
    for db in ["a.db", "b.db"] {
        assert_eq!(h.value(db, "select count(*) from t").await, "1", "{db}");
        h.assert_integrity(db).await;
    }
}

async fn a_transaction_writing_one_attached_database_commits(h: Harness) {
    let (a, b) = two_databases(&h).await;
    // BEGIN IMMEDIATE takes write transactions on both databases, so SQLite
    // commits through a super-journal although only one changes.
    h.sql_ok(
        "a.db",
        "attach 'b.db' as b;
         begin immediate; insert into b.t values (2); commit;
         insert into b.t select x + 10 from main.t;
         begin; insert into main.t values (3); commit;",
    )
    .await;
    assert_eq!(h.version("a.db").await, a + 1);
    assert_eq!(h.version("b.db").await, b + 2);
    assert_eq!(
        h.value("b.db", "select group_concat(x, '-') from t").await,
        "1-2-11"
    );
    assert_eq!(
        h.value("a.db", "select group_concat(x, '-') from t").await,
        "1-3"
    );
    h.assert_integrity("a.db").await;
    h.assert_integrity("b.db").await;
}

async fn two_connections_in_one_program_write_one_at_a_time(h: Harness) {
    h.create("r.db").await;
    h.sql_ok("r.db", "create table t(x)").await;
    let (out, _) = h
        .run_with(&components().test_guest, &["reserved", "r.db"], "")
        .await;
    assert!(out.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "b-begin-while-a-writes: database is locked\nrows: b,c\n"
    );
    assert_eq!(
        h.value("r.db", "select group_concat(x, '-') from t").await,
        "b-c"
    );
    h.assert_integrity("r.db").await;
}

/// `rows` rows of 4,000 random bytes in one transaction, through a guest
/// limited to `memory_limit_mb`: every row must be there afterwards.
async fn one_big_transaction(mut h: Harness, rows: u64, memory_limit_mb: usize) {
    h.memory_limit_bytes = memory_limit_mb << 20;
    h.create("big.db").await;
    h.sql_ok(
        "big.db",
        "create table b(id integer primary key, data blob)",
    )
    .await;
    let version = h.version("big.db").await;
    h.sql_ok("big.db", &fill("b(data)", rows, "randomblob(4000)"))
        .await;
    assert_eq!(h.version("big.db").await, version + 1, "one commit");
    assert_eq!(
        h.value(
            "big.db",
            "select count(*) || ':' || sum(length(data)) from b"
        )
        .await,
        format!("{rows}:{}", rows * 4000)
    );
    h.assert_integrity("big.db").await;
}

// A transaction three times the guest's memory (400 MB under 128 MiB):
// its pages are stored early, before the root swap (before spilling, the
// guest trapped at its memory limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_three_times_the_memory_limit_commits_on_memory() {
    one_big_transaction(Harness::memory(), 100_000, 128).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_three_times_the_memory_limit_commits_on_local() {
    one_big_transaction(Harness::local(), 100_000, 128).await;
}

/// A 40 MB table in 512-byte pages dropped and filled again under a
/// 32 MiB limit: the drop reads all 80,000 pages and the refill rewrites
/// them from the freelist. Before the caches were sized by the memory limit
/// (they were 40 MiB whatever it was) the drop stopped the instance, and
/// before a commit held its bookkeeping once the refill's commit did
/// (differential fuzzer, seed 272).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_table_dropped_and_refilled_fits_a_32_mib_memory_limit() {
    let mut h = Harness::memory();
    h.memory_limit_bytes = 32 << 20;
    h.create("d.db").await;
    let refill = |table: &str| {
        format!(
            "create table {table}(id integer primary key, data blob); {}",
            fill(&format!("{table}(data)"), 10_000, "zeroblob(4000)")
        )
    };
    h.sql_ok(
        "d.db",
        &format!("pragma page_size = 512; vacuum; {}", refill("a")),
    )
    .await;
    assert_eq!(h.value("d.db", "pragma page_size").await, "512");
    h.sql_ok("d.db", "drop table a").await;
    assert!(
        h.value("d.db", "pragma freelist_count")
            .await
            .parse::<u64>()
            .unwrap()
            > 80_000
    );
    h.sql_ok("d.db", &format!("pragma cache_size = 2; {}", refill("b")))
        .await;
    assert_eq!(
        h.value("d.db", "select count(*) || ':' || sum(length(data)) from b")
            .await,
        "10000:40000000"
    );
    h.assert_integrity("d.db").await;
}

/// The ceiling under the default memory limit (2 GiB): a 3 GB transaction.
/// Slow (minutes) and memory-hungry on the host (the store keeps 3 GB):
/// `cargo test --release -p donut-tests -- --ignored three_gigabyte`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "3 GB: run by hand, see BENCHMARKS.md"]
async fn a_three_gigabyte_transaction_commits_under_the_default_limit() {
    let rows = 750_000; // 3.0 GB of row data
    let h = Harness::local();
    let limit_mb = donut_host::runtime::MEMORY_LIMIT_BYTES_DEFAULT >> 20;
    one_big_transaction(h, rows, limit_mb).await;
}

/// A transaction that changes more existing pages than the guest's memory
/// can journal: `SQLITE_FULL` with a message, nothing committed (before the
/// journal budget, the guest trapped at its memory limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_journal_outgrows_memory_fails_with_sqlite_full() {
    let mut h = Harness::memory();
    h.memory_limit_bytes = 128 << 20;
    h.create("j.db").await;
    h.sql_ok(
        "j.db",
        &format!(
            "create table b(id integer primary key, data blob);
         {}",
            fill("b(data)", 25000, "randomblob(4000)")
        ),
    )
    .await;
    let version = h.version("j.db").await;
    let before = h.value("j.db", "select sum(unicode(data)) from b").await;
    let out = h.sql("j.db", "update b set data = randomblob(4000)").await;
    assert!(!out.success(), "a 100 MB journal fitted in 128 MiB");
    let err = stderr(&out);
    assert!(
        err.contains("[SQLITE_FULL]") && err.contains("donut_journal_bytes_max"),
        "{err}"
    );
    assert_eq!(h.version("j.db").await, version, "nothing committed");
    assert_eq!(
        h.value("j.db", "select sum(unicode(data)) from b").await,
        before
    );
    // Smaller transactions fit.
    h.sql_ok(
        "j.db",
        "update b set data = randomblob(4000) where id <= 5000",
    )
    .await;
    assert_eq!(h.version("j.db").await, version + 1);
    h.assert_integrity("j.db").await;
}

async fn journal_memory_is_given_back_in_every_journal_mode(h: Harness) {
    h.create("m.db").await;
    h.sql_ok("m.db", &fill_t()).await;
    for mode in ["delete", "truncate", "persist"] {
        // A tiny cache: the update spills pages, so SQLite journals them.
        let out = h
            .sql_ok(
                "m.db",
                &format!(
                    "pragma journal_mode = {mode}; pragma cache_size = 2;
                     begin; update t set v = v || 'y';
                     select 'during'; pragma donut_journal_bytes;
                     commit;
                     select 'after'; pragma donut_journal_bytes;"
                ),
            )
            .await;
        // csv: a header and a row per statement; the pragma's header is its
        // value.
        let lines: Vec<&str> = out.lines().collect();
        let held = |label: &str| -> u64 {
            lines
                .iter()
                .position(|l| *l == label)
                .and_then(|at| lines.get(at + 2))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{mode}: no {label:?} value in {out}"))
        };
        assert!(held("during") > 0, "{mode}: no journal was written: {out}");
        assert_eq!(held("after"), 0, "{mode}: journal memory kept: {out}");
    }
    assert_eq!(
        h.value("m.db", "select count(*) from t where v like '%yyy'")
            .await,
        "300"
    );
    h.assert_integrity("m.db").await;
}

/// A database removed while a program writes to it: the next write fails
/// `SQLITE_READONLY_DBMOVED` (SQLite's code for a file deleted under it),
/// not an I/O error of unknown outcome.
async fn a_write_to_a_removed_database_is_readonly_dbmoved(h: Harness) {
    h.create("r.db").await;
    h.sql_ok("r.db", "create table t(x)").await;
    let version = h.version("r.db").await;
    let name = donut_format::DbName::new("r.db").expect("name");
    let writer = h.run_with(
        &components().test_guest,
        &["until-removed", "r.db", "3000"],
        "",
    );
    let remover = async {
        // Once the program has written (so it is past its open), remove.
        for _ in 0..3000 {
            if h.version("r.db").await > version {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The program keeps committing: a removal may lose a race to it.
        for attempt in 0.. {
            match donut_host::storage::remove_database(&*h.backend, &name).await {
                Ok(_) => break,
                Err(donut_host::storage::StorageError::Conflict) if attempt < 100 => {}
                Err(e) => panic!("remove: {e}"),
            }
        }
    };
    let ((out, _), ()) = tokio::join!(writer, remover);
    let said = stdout(&out);
    assert!(said.contains("[SQLITE_READONLY_DBMOVED]"), "{said}");
}

/// `sqlite3_backup` from one DonutDB database into another, both ways
/// across page sizes, from a full and from an empty source (found by the
/// differential fuzzer, seed 78: a backup from a smaller page size writes
/// the destination past the pager after its phase one).
async fn backup_between_donutdb_databases_of_other_page_sizes_keeps_every_row(h: Harness) {
    for (from, to, filled) in [
        (512, 1024, false),
        (512, 1024, true),
        (4096, 1024, true),
        (1024, 8192, true),
        (8192, 1024, false),
        (4096, 1024, false),
        (2048, 1024, false),
    ] {
        let (src, dst) = (
            format!("s{from}-{filled}.db"),
            format!("d{to}-{from}-{filled}.db"),
        );
        h.create_with_page_size(&src, from).await;
        h.create_with_page_size(&dst, to).await;
        if filled {
            h.sql_ok(&src, &fill_t()).await;
        }
        // Larger than the source: the backup shrinks it.
        h.sql_ok(
            &dst,
            &format!(
                "create table d(x);
             {}",
                fill("d", 300, "randomblob(1000)")
            ),
        )
        .await;
        let (out, _) = h
            .run_with(
                &components().test_guest,
                &["backup-to", &src, &dst, "3"],
                "",
            )
            .await;
        assert_eq!(
            stdout(&out).trim(),
            "ok",
            "{src} -> {dst}: {}",
            stderr(&out)
        );
        let tables = h
            .value(
                &dst,
                "select group_concat(name) from sqlite_schema where type = 'table'",
            )
            .await;
        if filled {
            assert_eq!(tables, "t", "{src} -> {dst}");
            assert_eq!(h.value(&dst, SUMMARY).await, FILLED, "{src} -> {dst}");
            assert_eq!(h.value(&dst, "pragma page_size").await, from.to_string());
        } else {
            assert_eq!(tables, "", "{src} -> {dst}");
        }
        h.assert_integrity(&dst).await;
    }
}

/// Rows of `w` (WITHOUT ROWID) and `r`: count, total length, and a hash of
/// their bytes, as one value.
const BIG_SUMMARY: &str = "select (select count(*) || ':' || sum(length(v)) || ':' || sum(unicode(substr(v, 500, 1))) from w) || '/' || (select count(*) || ':' || sum(length(v)) || ':' || sum(unicode(substr(v, 700, 1))) from r)";

/// A large database's reads asked storage for more sectors than one call
/// carries, and failed `SQLITE_FULL` ("reading pages of ...: too large:
/// 24398 sectors in one call; the limit is 10000") where SQLite succeeds:
/// a savepoint rolled back on a one-page cache writes back every page it
/// touched, and the commit compared them all with their stored bytes in
/// one read. A database of more than 50,000 pages — overflow rows, a
/// WITHOUT ROWID table, `auto_vacuum` — must roll back a savepoint,
/// VACUUM at a re-set page size, `VACUUM INTO` and pass `integrity_check`.
async fn a_database_of_50_000_pages_vacuums_and_copies_whole(mut h: Harness) {
    h.create_with_page_size("big.db", 512).await;
    h.sql_ok(
        "big.db",
        &format!(
            "pragma auto_vacuum = 1;
             create table w(k text primary key, v blob) without rowid;
             create table r(id integer primary key, v text);
             {}
             {}",
            fill(
                "w(k, v)",
                10_000,
                "printf('k%08d', i), printf('%.*c', 600 + i % 900, char(65 + i % 26))"
            ),
            fill(
                "r(v)",
                10_000,
                "printf('%.*c', 800 + i % 700, char(97 + i % 26))"
            ),
        ),
    )
    .await;
    let pages: u64 = h
        .value("big.db", "pragma page_count")
        .await
        .parse()
        .unwrap();
    assert!(pages >= 50_000, "{pages} pages");
    let summary = h.value("big.db", BIG_SUMMARY).await;
    // An instance whose page cache (an eighth of its memory) holds fewer
    // pages than the savepoint writes back: the rest are compared with
    // storage.
    h.memory_limit_bytes = 160 << 20;
    h.sql_ok(
        "big.db",
        "pragma cache_size = 1;
         begin;
         savepoint a; update r set v = upper(v); update w set v = upper(v); rollback to a; release a;
         insert into r(v) values ('x');
         commit;
         delete from r where v = 'x';",
    )
    .await;
    h.memory_limit_bytes = donut_host::runtime::MEMORY_LIMIT_BYTES_DEFAULT;
    assert_eq!(h.value("big.db", BIG_SUMMARY).await, summary);
    h.sql_ok(
        "big.db",
        "pragma cache_size = 1; pragma page_size = 1024; vacuum;",
    )
    .await;
    assert_eq!(h.value("big.db", "pragma page_size").await, "1024");
    assert_eq!(h.value("big.db", BIG_SUMMARY).await, summary);
    h.create_with_page_size("copy.db", 512).await;
    h.sql_ok("big.db", "pragma cache_size = 1; vacuum into 'copy.db'")
        .await;
    assert_eq!(h.value("copy.db", BIG_SUMMARY).await, summary);
    h.assert_integrity("copy.db").await;
    h.assert_integrity("big.db").await;
}
