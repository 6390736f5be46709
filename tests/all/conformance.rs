//! Conformance against AWS's own DynamoDB Local. These need the server:
//! `just test-dynamodb-local` starts it and runs them (CI does); plain
//! `cargo test` skips them.

use crate::util::{Harness, fill, guest_path, host_bin, stderr};
use std::process::Command;

fn endpoint() -> String {
    std::env::var("DONUT_DYNAMODB_LOCAL")
        .expect("DONUT_DYNAMODB_LOCAL is not set: run `just test-dynamodb-local`")
}

/// A table of its own for each test (the server is shared).
async fn harness(table: &str) -> Harness {
    Harness::on_endpoint(&endpoint(), table, Vec::new()).await
}

fn host(table: &str, args: &[&str]) -> std::process::Output {
    Command::new(host_bin())
        .args(["--endpoint", &endpoint(), "--table", table])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "donutdb")
        .env("AWS_SECRET_ACCESS_KEY", "donutdb")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run donut-host")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DynamoDB Local: just test-dynamodb-local"]
async fn conformance_cli_create_table_run_and_stats() {
    let table = "conformance-cli";
    let out = host(table, &["create-table"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let query = guest_path("query.wasm");
    for word in ["first", "second"] {
        let out = host(table, &["run", query.to_str().unwrap(), "--", word]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = host(
        table,
        &[
            "--stats",
            "sql",
            "demo.db",
            "select count(*) from notes",
            "--format",
            "csv",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "count(*)\n2\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DynamoDB requests") && err.contains("RCU"),
        "{err}"
    );
    let out = host(table, &["ls"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo.db"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DynamoDB Local: just test-dynamodb-local"]
async fn conformance_missing_table_and_wrong_schema() {
    let out = host("conformance-absent", &["sql", "x.db", "select 1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains("create-table"),
        "{err}"
    );

    crate::util::create_wrong_schema_table(&endpoint(), "conformance-wrong", "hash_key").await;
    let out = host("conformance-wrong", &["ls"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong key schema"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DynamoDB Local: just test-dynamodb-local"]
async fn conformance_push_pull_fifty_megabytes_byte_identical() {
    let h = harness("conformance-transfer").await;
    h.create("big.db").await;
    h.sql_ok(
        "big.db",
        "create table b(id integer primary key, data blob)",
    )
    .await;
    h.sql_ok("big.db", &fill("b(data)", 13000, "randomblob(4000)"))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let name = |n: &str| donut_format::DbName::new(n).unwrap();
    donut_host::transfer::pull(h.backend.clone(), &name("big.db"), None, &a, |_, _| {})
        .await
        .unwrap();
    assert!(std::fs::metadata(&a).unwrap().len() >= 50_000_000);
    donut_host::transfer::push(h.backend.clone(), &name("copy.db"), &a, |_, _| {})
        .await
        .unwrap();
    donut_host::transfer::pull(h.backend.clone(), &name("copy.db"), None, &b, |_, _| {})
        .await
        .unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "not byte-identical"
    );
    h.assert_integrity("copy.db").await;
    let summary = h.summary().await;
    assert!(summary.largest_item_bytes <= 400 * 1024, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DynamoDB Local: just test-dynamodb-local"]
async fn conformance_end_to_end_suite() {
    crate::sql::create_insert_query_reopen(harness("conformance-e2e-1").await).await;
    crate::sql::rollback_leaves_no_trace(harness("conformance-e2e-2").await).await;
    crate::sql::ten_thousand_rows_in_one_transaction(harness("conformance-e2e-3").await).await;
    crate::sql::stale_writer_gets_busy_and_changes_nothing(harness("conformance-e2e-4").await)
        .await;
    crate::sql::trap_mid_transaction_keeps_the_previous_commit(harness("conformance-e2e-5").await)
        .await;
    crate::sql::page_size_is_the_one_created_with(harness("conformance-e2e-6").await).await;
    let h = harness("conformance-e2e-7").await;
    let out = h.sql("nope.db", "select 1").await;
    assert!(stderr(&out).contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DynamoDB Local: just test-dynamodb-local"]
async fn conformance_commits_of_97_98_and_99_sectors_fenced_or_not() {
    let h = harness("conformance-limits").await;
    crate::lost_answers::sector_counts_at_the_transaction_limit(h.dynamo.as_ref().unwrap()).await;
}

/// History on AWS's own emulator: the history item in every root write's
/// transaction, `GetItem` of a version, the newest-first `Query`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DynamoDB Local: just test-dynamodb-local"]
async fn conformance_history_suite() {
    use crate::history::*;
    a_past_version_reads_its_own_rows_and_refuses_writes(harness("conformance-h-1").await).await;
    a_time_names_the_version_current_then(harness("conformance-h-2").await).await;
    restore_then_restore_back(harness("conformance-h-3").await).await;
    a_removed_database_comes_back_by_restore(harness("conformance-h-4").await).await;
    a_fork_shares_pages_and_both_diverge(harness("conformance-h-5").await).await;
    versions_list_every_commit_newest_first(harness("conformance-h-6").await).await;
}

/// Garbage collection on AWS's own emulator: `BatchWriteItem` deletes, the
/// GC state's conditional puts, the removal's `TransactWriteItems` of
/// conditional deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs DynamoDB Local: just test-dynamodb-local"]
async fn conformance_gc_suite() {
    use crate::gc::*;
    gc_brings_updates_back_to_the_size_of_a_fresh_push(harness("conformance-g-1").await).await;
    rm_then_gc_leaves_nothing_of_the_database(harness("conformance-g-2").await).await;
    a_restore_survives_gc_and_can_be_undone(harness("conformance-g-3").await).await;
    forks_stay_whole_and_gc_collects_what_no_member_holds(harness("conformance-g-4").await).await;
    a_fork_stalled_while_gc_retires_its_source_never_writes_a_root_gc_emptied(
        harness("conformance-g-6").await,
    )
    .await;
    a_run_stopped_by_its_budget_loses_nothing_and_the_next_finishes(
        harness("conformance-g-5").await,
    )
    .await;
    a_refused_large_commit_leaves_nothing_after_gc(harness("conformance-g-7").await).await;
    a_spilled_transaction_rolled_back_leaves_nothing_after_gc(harness("conformance-g-8").await)
        .await;
}
