//! Storage calls per SQL operation, counted by the host (in-memory backend).

use crate::util::{Harness, components, fill};

/// A one-row autocommit insert: one root compare-and-swap; its pages
/// travel together — in the swap's own request where the backend has one
/// (DynamoDB's TransactWriteItems), else in one batch before it.
async fn one_row_insert(h: Harness, expected_put_calls: u64) {
    h.create("w.db").await;
    h.sql_ok("w.db", "create table t(id integer primary key, v text)")
        .await;
    let (out, stats) = h
        .run_with(
            &components().sql,
            &["exec", "w.db", "insert into t(v) values ('one row')"],
            "",
        )
        .await;
    assert!(out.success());
    assert_eq!(
        stats.commit_root, 1,
        "exactly one compare-and-swap: {stats}"
    );
    assert_eq!(stats.put_sectors_calls, expected_put_calls, "{stats}");
    assert!(
        stats.put_sectors_items >= 2,
        "page 1 and the table's leaf travel together: {stats}"
    );
    assert_eq!(stats.commit_conflicts, 0);
    h.assert_integrity("w.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_insert_is_one_root_swap_and_one_batched_write() {
    one_row_insert(Harness::memory(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_insert_on_dynamodb_is_one_request() {
    one_row_insert(Harness::dynamodb().await, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_commit_sends_its_pages_in_few_batched_calls() {
    let h = Harness::memory();
    h.create("l.db").await;
    h.sql_ok("l.db", "create table t(id integer primary key, v blob)")
        .await;
    let (out, stats) = h
        .run_with(
            &components().sql,
            &["exec", "l.db", &fill("t(v)", 2000, "randomblob(2000)")],
            "",
        )
        .await;
    assert!(out.success());
    assert_eq!(stats.commit_root, 1, "{stats}");
    assert!(stats.put_sectors_items > 1000, "{stats}");
    assert!(
        (1..=3).contains(&stats.put_sectors_calls),
        "over a thousand pages in a few calls: {stats}"
    );
    h.assert_integrity("l.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_read_only_query_after_the_first_is_one_root_read() {
    let h = Harness::memory();
    h.create("r.db").await;
    h.sql_ok(
        "r.db",
        "create table t(id integer primary key, v text);
         insert into t(v) values ('a'), ('b'), ('c');",
    )
    .await;
    let query = "select v from t where id = 2;\n";
    let (_, three) = h.shell("r.db", &query.repeat(3)).await;
    let (out, four) = h.shell("r.db", &query.repeat(4)).await;
    assert!(out.success());
    let extra = four.since(&three);
    assert_eq!(
        extra.read_root, 1,
        "one more query, one more root read: {extra}"
    );
    assert_eq!(extra.round_trips(), 1, "and nothing else: {extra}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_cached_across_transactions_in_an_instance() {
    let h = Harness::memory();
    h.create("c.db").await;
    h.sql_ok(
        "c.db",
        &format!(
            "create table t(id integer primary key, v blob);
         {}",
            fill("t(v)", 2000, "randomblob(100)")
        ),
    )
    .await;
    let scan = "select count(*), sum(length(v)) from t;\n";
    let (_, once) = h.shell("c.db", scan).await;
    let (_, twice) = h.shell("c.db", &scan.repeat(2)).await;
    let extra = twice.since(&once);
    assert!(
        once.get_sectors_items > 10,
        "the first scan reads pages: {once}"
    );
    assert_eq!(
        extra.get_sectors_calls, 0,
        "the second scan is all cache hits: {extra}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_scan_reads_ahead() {
    let h = Harness::memory();
    h.create("s.db").await;
    h.sql_ok(
        "s.db",
        &format!(
            "create table t(id integer primary key, v blob);
         {}",
            fill("t(v)", 3000, "randomblob(3000)")
        ),
    )
    .await;
    let pages: u64 = h.value("s.db", "pragma page_count").await.parse().unwrap();
    let (out, stats) = h.shell("s.db", "select count(*) from t;\n").await;
    assert!(out.success());
    assert!(pages >= 3000);
    assert!(
        stats.get_sectors_calls * 20 < pages,
        "{pages} pages took {} fetches: {stats}",
        stats.get_sectors_calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_the_host_sector_cache() {
    let mut h = Harness::memory();
    h.create("h.db").await;
    h.sql_ok(
        "h.db",
        "create table t(id integer primary key, v text);
         insert into t(v) values ('x'), ('y');",
    )
    .await;
    h.cache = Some(donut_host::storage::SectorCache::new(64 << 20));
    let query = "select v from t where id = 2;\n";
    let (_, first) = h.shell("h.db", query).await;
    let (out, second) = h.shell("h.db", query).await;
    assert!(out.success());
    assert!(first.get_sectors_calls > 0, "{first}");
    assert_eq!(
        second.get_sectors_calls, 0,
        "a new instance, all from the host cache: {second}"
    );
    assert!(second.sector_cache_hits > 0);
}

/// A one-shot query (open, one statement) in a new instance: the open's
/// root read serves the schema load and the statement; with the host cache
/// warm nothing else goes to storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_query_on_a_warm_host_is_one_round_trip() {
    let mut h = Harness::memory();
    h.create("o.db").await;
    h.sql_ok(
        "o.db",
        "create table t(id integer primary key, v text);
         insert into t(v) values ('x'), ('y');",
    )
    .await;
    h.cache = Some(donut_host::storage::SectorCache::new(64 << 20));
    let query = ["exec", "o.db", "select v from t where id = 2"];
    h.run_with(&components().sql, &query, "").await;
    let (out, stats) = h.run_with(&components().sql, &query, "").await;
    assert!(out.success());
    assert_eq!(stats.read_root, 1, "{stats}");
    assert_eq!(stats.round_trips(), 1, "{stats}");
}

/// The root carries its manifest's top chunk (docs/format.md, "Inline
/// top"), so a cold reader of a small database fetches every leaf chunk
/// with the head pages: a point select is the root read, that request, and
/// one for its leaf page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_point_select_on_a_small_database_is_three_round_trips() {
    let h = Harness::memory();
    h.create("k.db").await;
    h.sql_ok(
        "k.db",
        &format!(
            "create table kv(k integer primary key, v text); {}",
            fill("kv(v)", 11_000, "hex(randomblob(50))")
        ),
    )
    .await;
    let query = ["exec", "k.db", "select length(v) from kv where k = 5000"];
    let (out, stats) = h.run_with(&components().sql, &query, "").await;
    assert!(crate::util::stdout(&out).contains("\n100\n"), "{out:?}");
    assert_eq!(stats.read_root, 1, "{stats}");
    assert_eq!(stats.get_sectors_calls, 2, "{stats}");
    assert_eq!(stats.round_trips(), 3, "{stats}");
}

/// Broke when the open's schema load stopped using up the open's root: a
/// connection opened before another connection of the same program
/// committed ran its first statement on the older root (its insert
/// conflicted; a read would have missed the commit). The root read at open
/// stands in only while the host knows no newer version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_a_commit_sees_it_in_its_first_statement() {
    let h = Harness::memory();
    h.create("f.db").await;
    h.sql_ok("f.db", "create table t(x text)").await;
    let (out, _) = h
        .run_with(&components().test_guest, &["two-writers", "f.db"], "")
        .await;
    let out = crate::util::stdout(&out);
    assert!(out.contains("a-insert: ok"), "{out}");
    assert!(out.contains("a-reads: a,b"), "{out}");
}

/// Broke when host root swaps went through `Backend::commit` even without a
/// fence (a transaction of the root alone). Since history (docs/format.md,
/// "History") every root write is one TransactWriteItems of the root and
/// its history item: creating a database is the catalog entry's PutItem
/// and one transaction, removing it one transaction; nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_and_removing_a_database_write_each_root_with_its_history_in_one_request() {
    let h = Harness::dynamodb().await;
    let dynamo = h.dynamo.clone().expect("dynamodb harness");
    let before = dynamo.stats().requests;
    h.create("p.db").await;
    let name = donut_format::DbName::new("p.db").unwrap();
    donut_host::storage::remove_database(&*h.backend, &name)
        .await
        .expect("rm");
    let after = dynamo.stats().requests;
    let sent = |kind: &str| after.get(kind).unwrap_or(&0) - before.get(kind).unwrap_or(&0);
    assert_eq!(sent("TransactWriteItems"), 2, "{after:?}");
    assert_eq!(sent("PutItem"), 1, "{after:?}");
    // And a read of the root before each.
    assert_eq!(sent("GetItem"), 2, "{after:?}");
}
