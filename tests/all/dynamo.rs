//! The DynamoDB backend against a real DynamoDB-compatible server
//! (dynoxide), with faults injected between client and server.

use crate::faults::Proxy;
use crate::util::{Dynoxide, Harness, components, dynamo_options, fill, stderr, stdout};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use donut_host::backend::dynamo::{ConnectError, DynamoBackend, create_table};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A harness whose backend talks to dynoxide through a fault proxy.
async fn through_proxy() -> (Harness, Proxy) {
    through_proxy_with(true).await
}

/// Like `through_proxy`, committing in one request when it fits or not.
pub(crate) async fn through_proxy_with(one_request_commit: bool) -> (Harness, Proxy) {
    let server = Dynoxide::start();
    create_table(&dynamo_options(&server.endpoint, "donut-test"))
        .await
        .unwrap();
    let proxy = Proxy::start(&server.endpoint).await;
    let mut options = dynamo_options(&proxy.endpoint, "donut-test");
    options.one_request_commit = one_request_commit;
    let dynamo = DynamoBackend::connect(&options, Vec::new()).await.unwrap();
    let h = Harness {
        dynamo: Some(dynamo.clone()),
        _server: Some(server),
        ..Harness::over(Arc::new(dynamo))
    };
    (h, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_requests_are_retried() {
    let (h, proxy) = through_proxy().await;
    h.create("t.db").await;
    proxy.faults.throttle_next.store(3, Ordering::SeqCst);
    h.sql_ok("t.db", "create table t(x); insert into t values (1), (2);")
        .await;
    assert_eq!(h.value("t.db", "select sum(x) from t").await, "3");
    assert_eq!(proxy.faults.throttled.load(Ordering::SeqCst), 3);
    h.assert_integrity("t.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_throttling_is_a_clear_error_and_changes_nothing() {
    let (h, proxy) = through_proxy().await;
    h.create("t.db").await;
    h.sql_ok("t.db", "create table t(x); insert into t values (1);")
        .await;
    let version = h.version("t.db").await;
    proxy.faults.throttle_next.store(u32::MAX, Ordering::SeqCst);
    let out = h.sql("t.db", "insert into t values (2)").await;
    proxy.faults.throttle_next.store(0, Ordering::SeqCst);
    assert!(!out.success());
    let err = stderr(&out);
    assert!(
        err.contains("throttled") && err.contains("donut-test"),
        "{err}"
    );
    assert_eq!(h.version("t.db").await, version);
    assert_eq!(h.value("t.db", "select count(*) from t").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_keys_and_items_are_sent_again() {
    let (h, proxy) = through_proxy().await;
    h.create("u.db").await;
    proxy.faults.unprocess_next.store(50, Ordering::SeqCst);
    h.sql_ok(
        "u.db",
        &format!(
            "create table t(id integer primary key, v blob);
         {}",
            fill("t(v)", 3000, "randomblob(300)")
        ),
    )
    .await;
    // pull reads pages in batches of many keys.
    let dir = tempfile::tempdir().unwrap();
    let name = donut_format::DbName::new("u.db").unwrap();
    donut_host::transfer::pull(
        h.backend.clone(),
        &name,
        None,
        &dir.path().join("u.db"),
        |_, _| {},
    )
    .await
    .unwrap();
    let stats = h.dynamo.as_ref().unwrap().stats();
    assert!(proxy.faults.unprocessed.load(Ordering::SeqCst) >= 2);
    assert!(stats.unprocessed_retries > 0, "{stats}");
    assert_eq!(h.value("u.db", "select count(*) from t").await, "3000");
    h.assert_integrity("u.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_item_is_an_error_naming_it() {
    let h = Harness::dynamodb().await;
    h.create("k.db").await;
    h.sql_ok(
        "k.db",
        "create table t(v text); insert into t values ('secret');",
    )
    .await;
    let name = donut_format::DbName::new("k.db").unwrap();
    let (_, root) = donut_host::storage::read_root(&*h.backend, &name)
        .await
        .unwrap();
    let client = h.dynamo.as_ref().unwrap().client();
    let prefix = format!("s/{}/", root.db_id.hex());
    let items = client
        .scan()
        .table_name("donut-test")
        .send()
        .await
        .unwrap()
        .items()
        .to_vec();
    let mut corrupted = 0;
    for item in items {
        let key = item["hash_key"].as_s().unwrap().clone();
        if key.starts_with(&prefix) {
            client
                .put_item()
                .table_name("donut-test")
                .item("hash_key", AttributeValue::S(key))
                .item("range_key", AttributeValue::N("0".into()))
                .item("c", AttributeValue::N("0".into()))
                .item("b", AttributeValue::B(Blob::new(vec![0x42; 4096])))
                .send()
                .await
                .unwrap();
            corrupted += 1;
        }
    }
    assert!(corrupted >= 2);
    let out = h.sql("k.db", "select v from t").await;
    assert!(!out.success(), "corrupt items were read as rows");
    let err = stderr(&out);
    assert!(err.contains("corrupt") && err.contains("sector"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_or_a_wrong_key_schema_is_refused() {
    let server = Dynoxide::start();
    let missing = DynamoBackend::connect(
        &dynamo_options(&server.endpoint, "absent-table"),
        Vec::new(),
    )
    .await;
    let e = missing.err().expect("a missing table was accepted");
    assert!(matches!(e, ConnectError::MissingTable { .. }), "{e}");
    assert!(e.to_string().contains("create-table"), "{e}");

    let options = dynamo_options(&server.endpoint, "wrong-schema");
    crate::util::create_wrong_schema_table(&server.endpoint, "wrong-schema", "id").await;
    let e = DynamoBackend::connect(&options, Vec::new())
        .await
        .err()
        .expect("a wrong schema was accepted");
    assert!(matches!(e, ConnectError::WrongSchema { .. }), "{e}");
    assert!(e.to_string().contains("hash_key (S)"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_round_trip_byte_identical() {
    let h = Harness::dynamodb().await;
    h.create("src.db").await;
    h.sql_ok(
        "src.db",
        &format!(
            "create table t(id integer primary key, v blob);
         {}",
            fill("t(v)", 5000, "randomblob(700)")
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let name = |n: &str| donut_format::DbName::new(n).unwrap();
    donut_host::transfer::pull(h.backend.clone(), &name("src.db"), None, &a, |_, _| {})
        .await
        .unwrap();
    let pushed = donut_host::transfer::push(h.backend.clone(), &name("copy.db"), &a, |_, _| {})
        .await
        .unwrap();
    assert_eq!(pushed.version, 1);
    donut_host::transfer::pull(h.backend.clone(), &name("copy.db"), None, &b, |_, _| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(h.value("copy.db", "select count(*) from t").await, "5000");
    h.assert_integrity("copy.db").await;
    // Pushing again makes a new version of the same database.
    let again = donut_host::transfer::push(h.backend.clone(), &name("copy.db"), &b, |_, _| {})
        .await
        .unwrap();
    assert_eq!(again.version, 2);
    assert_eq!(again.db_id, pushed.db_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_database_is_gone_and_its_name_reusable() {
    let h = Harness::dynamodb().await;
    h.create("gone.db").await;
    h.sql_ok("gone.db", "create table t(x); insert into t values (1);")
        .await;
    let name = donut_format::DbName::new("gone.db").unwrap();
    let version = h.version("gone.db").await;
    donut_host::storage::remove_database(&*h.backend, &name)
        .await
        .unwrap();
    let out = h.sql("gone.db", "select 1").await;
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let listed = h.backend.list_roots().await.unwrap();
    assert!(
        listed
            .iter()
            .all(|(_, m)| donut_format::Tombstone::is_tombstone(&m.body))
    );
    h.create("gone.db").await;
    assert_eq!(
        h.version("gone.db").await,
        version + 2,
        "versions never repeat"
    );
    assert_eq!(
        h.value("gone.db", "select count(*) from sqlite_schema")
            .await,
        "0",
        "the new database starts empty"
    );
}

/// Four clients move money between eight accounts at once; every transfer
/// is retried until it commits and leaves a ledger row.
async fn four_clients_transfer(writer: &str) {
    const TRANSFERS: i64 = 15;
    let h = Harness::dynamodb().await;
    h.create("bank.db").await;
    h.sql_ok(
        "bank.db",
        "create table accounts(id integer primary key, balance integer not null);
         create table ledger(id integer primary key);
         insert into accounts select value, 100 from (
           with recursive n(value) as (select 0 union all select value + 1 from n where value < 7)
           select value from n);",
    )
    .await;
    let n = TRANSFERS.to_string();
    let runs = (0..4).map(|client| {
        let (h, n, client) = (&h, n.clone(), client.to_string());
        async move {
            h.run_with(
                &components().test_guest,
                &["transfers", "bank.db", &n, writer, &client],
                "",
            )
            .await
        }
    });
    let outcomes = futures_join_all(runs).await;
    let mut attempts = 0;
    for (out, _) in &outcomes {
        let text = stdout(out);
        assert!(out.success(), "{text} {}", stderr(out));
        assert!(text.contains(&format!("committed {TRANSFERS}")), "{text}");
        attempts += text
            .split_whitespace()
            .last()
            .and_then(|a| a.parse::<i64>().ok())
            .expect("attempts");
    }
    // Nothing lost, nothing doubled: every acknowledged transfer is there
    // once, and money was only moved.
    assert_eq!(
        h.value("bank.db", "select sum(balance) from accounts")
            .await,
        "800"
    );
    assert_eq!(
        h.value("bank.db", "select count(*) from ledger").await,
        (4 * TRANSFERS).to_string()
    );
    h.assert_integrity("bank.db").await;
    eprintln!(
        "{writer}: {} transfers in {attempts} attempts",
        4 * TRANSFERS
    );
}

/// Polls futures together on this task (no spawn: they borrow the harness).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(out) => *output = Some(out),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("finished")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_optimistic_writers_lose_nothing() {
    four_clients_transfer("optimistic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_lease_writers_lose_nothing() {
    four_clients_transfer("lease").await;
}

/// A dynoxide harness with database `db` holding an empty `t(x text)`.
async fn with_table_t(db: &str) -> Harness {
    let h = Harness::dynamodb().await;
    h.create(db).await;
    h.sql_ok(db, "create table t(x text)").await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lease_holder_is_taken_over_after_expiry() {
    let h = with_table_t("lease.db").await;
    let (died, _) = h
        .try_run_with(
            &components().test_guest,
            // Long enough that the refusal below cannot miss it on a busy
            // machine; the successor then waits for it.
            &["die-holding-lease", "lease.db", "8000"],
            "",
        )
        .await;
    assert!(died.is_err(), "the holder was meant to die");
    // The dead holder's lease still stands: a writer that will not wait
    // is refused...
    let (refused, _) = h
        .run_with(
            &components().test_guest,
            &["lease-write", "lease.db", "0", "early"],
            "",
        )
        .await;
    let refused = stdout(&refused);
    assert!(refused.contains("database is locked"), "{refused}");
    assert!(refused.contains("lease"), "{refused}");
    // ...and one that waits (busy_timeout) takes it over once it expires.
    let (taken, _) = h
        .run_with(
            &components().test_guest,
            &["lease-write", "lease.db", "60000", "successor"],
            "",
        )
        .await;
    assert_eq!(stdout(&taken).trim(), "lease-write: ok");
    assert_eq!(
        h.value("lease.db", "select group_concat(x) from t").await,
        "successor",
        "nothing of the dead holder's transaction is visible"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_renews_a_lease_held_longer_than_its_length() {
    let h = with_table_t("renew.db").await;
    // A 1 s lease held for 2.5 s: renewed in the background meanwhile, so
    // the fenced commit still holds it.
    let (out, stats) = h
        .run_with(
            &components().test_guest,
            &["lease-write", "renew.db", "0", "slow", "2500"],
            "",
        )
        .await;
    assert_eq!(stdout(&out).trim(), "lease-write: ok");
    assert!(stats.lease_renewals >= 1, "no renewal: {stats:?}");
    assert_eq!(h.value("renew.db", "select x from t").await, "slow");
}
