//! SQL end to end through the real guest component, on every backend.

use crate::backend_tests;
use crate::util::{Harness, components, fill, stderr, stdout};

backend_tests!(
    create_insert_query_reopen,
    rollback_leaves_no_trace,
    ten_thousand_rows_in_one_transaction,
    hundred_megabyte_database_has_no_item_over_400_kb,
    trap_mid_transaction_keeps_the_previous_commit,
    example_component_keeps_rows_across_runs,
    page_size_is_the_one_created_with,
    stale_writer_gets_busy_and_changes_nothing,
);

pub(crate) async fn create_insert_query_reopen(h: Harness) {
    h.create("app.db").await;
    h.sql_ok(
        "app.db",
        "create table users(id integer primary key, name text not null);
         insert into users(name) values ('ada'), ('grace');",
    )
    .await;
    // Every call is a new instance with empty caches: a real reopen.
    assert_eq!(
        h.sql_ok("app.db", "select id, name from users order by id")
            .await,
        "id,name\n1,ada\n2,grace\n"
    );
    h.sql_ok("app.db", "update users set name = 'Ada' where id = 1")
        .await;
    assert_eq!(
        h.value("app.db", "select name from users where id = 1")
            .await,
        "Ada"
    );
    h.assert_integrity("app.db").await;
}

pub(crate) async fn rollback_leaves_no_trace(h: Harness) {
    h.create("r.db").await;
    h.sql_ok("r.db", "create table t(x); insert into t values (1);")
        .await;
    let version = h.version("r.db").await;
    let stored = h.summary().await;
    h.sql_ok(
        "r.db",
        "begin; insert into t values (2); create table u(y); rollback;",
    )
    .await;
    assert_eq!(h.version("r.db").await, version, "no commit happened");
    assert_eq!(h.summary().await, stored, "nothing was stored");
    assert_eq!(h.value("r.db", "select count(*) from t").await, "1");
    assert_eq!(
        h.value(
            "r.db",
            "select count(*) from sqlite_schema where name = 'u'"
        )
        .await,
        "0"
    );
    h.assert_integrity("r.db").await;
}

pub(crate) async fn ten_thousand_rows_in_one_transaction(h: Harness) {
    h.create("big.db").await;
    h.sql_ok("big.db", "create table t(id integer primary key, v text)")
        .await;
    let before = h.version("big.db").await;
    h.sql_ok(
        "big.db",
        &format!(
            "begin;
         {}
         commit;",
            fill("t(v)", 10000, "'row ' || i")
        ),
    )
    .await;
    assert_eq!(h.version("big.db").await, before + 1, "one commit");
    assert_eq!(h.value("big.db", "select count(*) from t").await, "10000");
    assert_eq!(h.value("big.db", "select sum(id) from t").await, "50005000");
    h.assert_integrity("big.db").await;
}

async fn hundred_megabyte_database_has_no_item_over_400_kb(h: Harness) {
    h.create("huge.db").await;
    h.sql_ok(
        "huge.db",
        "create table b(id integer primary key, data blob)",
    )
    .await;
    // 26,000 rows of 4,000 random bytes: ~104 MB in one transaction.
    h.sql_ok("huge.db", &fill("b(data)", 26000, "randomblob(4000)"))
        .await;
    let size: u64 = h
        .value(
            "huge.db",
            "select page_count * page_size from pragma_page_count, pragma_page_size",
        )
        .await
        .parse()
        .unwrap();
    assert!(size >= 100_000_000, "database is {size} bytes");
    assert_eq!(h.value("huge.db", "select count(*) from b").await, "26000");
    assert_eq!(
        h.value("huge.db", "select sum(length(data)) from b").await,
        "104000000"
    );
    let summary = h.summary().await;
    assert!(
        summary.largest_item_bytes <= 400 * 1024,
        "largest item is {} bytes",
        summary.largest_item_bytes
    );
    assert!(summary.bytes >= 100_000_000);
    h.assert_integrity("huge.db").await;
}

pub(crate) async fn trap_mid_transaction_keeps_the_previous_commit(h: Harness) {
    h.create("t.db").await;
    h.sql_ok(
        "t.db",
        "create table t(x text); insert into t values ('a'), ('b'), ('c');",
    )
    .await;
    let version = h.version("t.db").await;
    let (result, _) = h
        .try_run_with(
            &components().test_guest,
            &["trap-in-transaction", "t.db", "3000"],
            "",
        )
        .await;
    let error = result.expect_err("the guest aborts").to_string();
    assert!(error.contains("trapped"), "{error}");
    assert_eq!(h.version("t.db").await, version);
    assert_eq!(h.value("t.db", "select count(*) from t").await, "3");
    h.assert_integrity("t.db").await;
}

pub(crate) async fn example_component_keeps_rows_across_runs(h: Harness) {
    let query = &components().query;
    let (first, _) = h
        .run_with(query, &["--db", "demo.db", "hello", "world"], "")
        .await;
    assert!(first.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("2 rows in demo.db"),
        "{}",
        stdout(&first)
    );
    let (second, _) = h.run_with(query, &["--db", "demo.db", "again"], "").await;
    let out = stdout(&second);
    assert!(second.success(), "{}", stderr(&second));
    for word in ["hello", "world", "again", "3 rows in demo.db"] {
        assert!(out.contains(word), "{word:?} missing from:\n{out}");
    }
    h.assert_integrity("demo.db").await;
}

pub(crate) async fn page_size_is_the_one_created_with(h: Harness) {
    for (db, size) in [("p512.db", 512), ("p64k.db", 65536)] {
        h.create_with_page_size(db, size).await;
        h.sql_ok(
            db,
            "create table t(x); insert into t values (randomblob(3000));",
        )
        .await;
        assert_eq!(h.value(db, "pragma page_size").await, size.to_string());
        h.assert_integrity(db).await;
    }
}

pub(crate) async fn stale_writer_gets_busy_and_changes_nothing(h: Harness) {
    h.create("c.db").await;
    h.sql_ok("c.db", "create table t(x); insert into t values (1);")
        .await;
    // Two connections in one instance: A pins a snapshot, B commits, A's
    // commit must lose with SQLITE_BUSY and leave no trace.
    let (out, stats) = h
        .run_with(&components().test_guest, &["stale-writer", "c.db"], "")
        .await;
    assert!(out.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "a-commit: busy\nrows: 1,2\n");
    assert_eq!(stats.commit_conflicts, 1);
    assert_eq!(
        h.value("c.db", "select group_concat(x, '-') from t").await,
        "1-2"
    );
    h.assert_integrity("c.db").await;
}

/// What the sqlite3 shell has built in works in donut-sql too: the math
/// functions (SQLITE_ENABLE_MATH_FUNCTIONS) and `generate_series`. The
/// expected rows are what Debian's sqlite3 prints for the same SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn math_functions_and_generate_series_answer_as_the_sqlite3_shell_does() {
    let h = Harness::memory();
    h.create("m.db").await;
    assert_eq!(
        h.sql_ok(
            "m.db",
            "select sqrt(16.0), pi() > 3.14, ln(1), pow(2, 10), floor(2.5), log10(1000)"
        )
        .await,
        "sqrt(16.0),pi() > 3.14,ln(1),\"pow(2, 10)\",floor(2.5),log10(1000)\n4.0,1,0.0,1024.0,2.0,3.0\n"
    );
    assert_eq!(
        h.sql_ok(
            "m.db",
            "select sum(value), count(*) from generate_series(1, 100, 3)"
        )
        .await,
        "sum(value),count(*)\n1717,34\n"
    );
    h.sql_ok(
        "m.db",
        "create table t(x); insert into t select value from generate_series(1, 1000)",
    )
    .await;
    assert_eq!(h.value("m.db", "select sum(x) from t").await, "500500");
}
