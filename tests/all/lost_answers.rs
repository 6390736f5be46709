//! What real DynamoDB answers and the emulators never do by themselves,
//! injected by the fault proxy between the SDK and dynoxide: a request
//! that applied and lost its answer (500, 503, a closed connection), a
//! transaction cancelled for each documented reason, exceptions that refuse
//! a request. An acknowledged or refused commit must never be applied
//! twice, and a refusal must never be reported as an unknown outcome.

use crate::dynamo::through_proxy_with;
use crate::faults::{Loss, Refusal};
use crate::util::{Harness, components, fill, stderr, stdout};
use donut_format::{DbName, Hash, LockState, hash};
use donut_host::backend::dynamo::DynamoBackend;
use donut_host::backend::{Backend, Commit, Fence, Meta, MetaKind};

const LOSSES: [Loss; 3] = [Loss::Status500, Loss::Status503, Loss::Closed];

async fn counter_db(h: &Harness) {
    h.create("c.db").await;
    h.sql_ok("c.db", "create table c(n); insert into c values (0);")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_request_commit_whose_answer_was_lost_is_applied_once_and_acknowledged() {
    let (h, proxy) = through_proxy_with(false).await;
    counter_db(&h).await;
    for (i, loss) in LOSSES.into_iter().enumerate() {
        // The root swap (with its history item) is one TransactWriteItems
        // after the sectors' BatchWriteItem.
        proxy.faults.lose("TransactWriteItems", 1, loss);
        let sent = proxy.faults.forwarded("TransactWriteItems");
        h.sql_ok("c.db", "update c set n = n + 1").await;
        assert_eq!(proxy.faults.losses_left(), 0, "{loss:?}");
        assert!(
            proxy.faults.forwarded("TransactWriteItems") >= sent + 2,
            "{loss:?}: the SDK sent the lost swap again"
        );
        // `--stats` counts the SDK's own re-send as an attempt.
        let stats = h.dynamo.as_ref().unwrap().stats();
        assert!(
            stats.attempts["TransactWriteItems"] > stats.requests["TransactWriteItems"],
            "{loss:?}: {stats:?}"
        );
        assert_eq!(
            h.value("c.db", "select n from c").await,
            (i + 1).to_string(),
            "{loss:?}"
        );
    }
    h.assert_integrity("c.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_with_two_request_commits_inserts_its_rows_once() {
    let (h, proxy) = through_proxy_with(false).await;
    let query = &components().query;
    let (first, _) = h.run_with(query, &["--db", "demo.db", "one"], "").await;
    assert!(first.success(), "{}", stderr(&first));
    proxy.faults.lose("TransactWriteItems", 1, Loss::Status500);
    let (second, _) = h.run_with(query, &["--db", "demo.db", "two"], "").await;
    assert!(second.success(), "{}", stderr(&second));
    assert_eq!(proxy.faults.losses_left(), 0);
    assert!(
        stdout(&second).contains("2 rows in demo.db"),
        "{}",
        stdout(&second)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_request_commit_whose_answer_was_lost_is_applied_once_and_acknowledged() {
    let (h, proxy) = through_proxy_with(true).await;
    counter_db(&h).await;
    for (i, loss) in LOSSES.into_iter().enumerate() {
        proxy.faults.lose("TransactWriteItems", 1, loss);
        h.sql_ok("c.db", "update c set n = n + 1").await;
        assert_eq!(
            h.value("c.db", "select n from c").await,
            (i + 1).to_string(),
            "{loss:?}"
        );
    }
}

/// Every SDK attempt of a commit loses its answer, so the guest sends the
/// commit again: the host backs off before that re-send, and the commit
/// is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_re_sent_by_the_guest_backs_off_first_and_applies_once() {
    let (h, proxy) = through_proxy_with(true).await;
    counter_db(&h).await;
    // The SDK's standard mode makes 8 attempts.
    proxy.faults.lose("TransactWriteItems", 8, Loss::Status503);
    let (out, stats) = h.shell("c.db", "update c set n = n + 1;").await;
    assert!(out.success(), "{}", stderr(&out));
    assert_eq!(h.value("c.db", "select n from c").await, "1");
    assert!(stats.commit_root >= 2, "the guest did not re-send: {stats}");
    assert!(
        stats.commit_backoffs >= 1,
        "the re-send did not back off: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rm_and_push_whose_answers_were_lost_succeed_once() {
    let (h, proxy) = through_proxy_with(false).await;
    let name = DbName::new("n.db").unwrap();
    proxy.faults.lose("PutItem", 1, Loss::Status500); // the catalog entry
    proxy.faults.lose("TransactWriteItems", 1, Loss::Status500); // the root
    donut_host::storage::create_database(&*h.backend, &name, 4096)
        .await
        .expect("create acknowledged");
    assert_eq!(proxy.faults.losses_left(), 0);
    h.sql_ok("n.db", "create table t(x); insert into t values (1);")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("n.sqlite");
    donut_host::transfer::pull(h.backend.clone(), &name, None, &file, |_, _| {})
        .await
        .expect("pull");
    let before = h.version("n.db").await;
    proxy.faults.lose("TransactWriteItems", 1, Loss::Closed);
    donut_host::transfer::push(h.backend.clone(), &name, &file, |_, _| {})
        .await
        .expect("push acknowledged");
    assert_eq!(proxy.faults.losses_left(), 0);
    assert_eq!(h.version("n.db").await, before + 1, "pushed once");
    proxy.faults.lose("TransactWriteItems", 1, Loss::Status503);
    donut_host::storage::remove_database(&*h.backend, &name)
        .await
        .expect("rm acknowledged");
    assert_eq!(proxy.faults.losses_left(), 0);
    assert!(
        donut_host::storage::read_root(&*h.backend, &name)
            .await
            .is_err(),
        "removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_acquired_with_a_lost_answer_is_held_not_busy() {
    let (h, proxy) = through_proxy_with(true).await;
    h.create("l.db").await;
    h.sql_ok("l.db", "create table t(x text)").await;
    // The first PutItem of a lease write is the lock item's.
    proxy.faults.lose("PutItem", 1, Loss::Status500);
    let (out, _) = h
        .run_with(
            &components().test_guest,
            &["lease-write", "l.db", "0", "leased"],
            "",
        )
        .await;
    assert_eq!(stdout(&out).trim(), "lease-write: ok");
    assert_eq!(h.value("l.db", "select x from t").await, "leased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cancellation_reason_is_a_definite_refusal_that_changes_nothing() {
    let (h, proxy) = through_proxy_with(true).await;
    counter_db(&h).await;
    for (reason, code) in [
        ("TransactionConflict", "[SQLITE_BUSY_TIMEOUT]"),
        ("ThrottlingError", "[SQLITE_BUSY_TIMEOUT]"),
        ("ProvisionedThroughputExceeded", "[SQLITE_BUSY_TIMEOUT]"),
        ("ValidationError", "[SQLITE_IOERR"),
        ("ItemCollectionSizeLimitExceeded", "[SQLITE_FULL]"),
    ] {
        let version = h.version("c.db").await;
        let billed = h.dynamo.as_ref().unwrap().stats().write_capacity_units;
        // Twice: SQLite retries a batch commit that failed with an I/O
        // error class (invalid) through its journal, once.
        proxy
            .faults
            .refuse("TransactWriteItems", 2, Refusal::Cancelled(reason));
        // No busy timeout: the shell would run a refused autocommit
        // statement again, and the refusal is what is under test.
        let out = h
            .sql("c.db", "pragma busy_timeout = 0; update c set n = n + 1")
            .await;
        proxy.faults.refuse.lock().unwrap().clear();
        // A cancelled transaction is billed its prepare phase.
        let billed = h.dynamo.as_ref().unwrap().stats().write_capacity_units - billed;
        assert!(billed >= 2.0, "{reason}: {billed} write units billed");
        assert!(!out.success(), "{reason}: accepted");
        let err = stderr(&out);
        assert!(
            err.contains(reason) && err.contains("nothing was applied") && err.contains(code),
            "{reason}: {err}"
        );
        assert!(!err.contains("may or may not"), "{reason}: {err}");
        assert_eq!(h.version("c.db").await, version, "{reason}");
    }
    // And the next commit goes through.
    h.sql_ok("c.db", "update c set n = n + 1").await;
    assert_eq!(h.value("c.db", "select n from c").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_exceptions_are_definite_and_named() {
    let (h, proxy) = through_proxy_with(false).await;
    counter_db(&h).await;
    for (exception, words, code) in [
        (
            "TransactionConflictException",
            "throttled",
            "[SQLITE_BUSY_TIMEOUT]",
        ),
        ("ValidationException", "invalid", "[SQLITE_IOERR"),
        ("AccessDeniedException", "denied", "[SQLITE_PERM]"),
        ("ResourceNotFoundException", "denied", "[SQLITE_PERM]"),
    ] {
        let version = h.version("c.db").await;
        proxy
            .faults
            .refuse("TransactWriteItems", 2, Refusal::Exception(exception));
        // No busy timeout: the shell would run a refused autocommit
        // statement again, and the refusal is what is under test.
        let out = h
            .sql("c.db", "pragma busy_timeout = 0; update c set n = n + 1")
            .await;
        proxy.faults.refuse.lock().unwrap().clear();
        assert!(!out.success(), "{exception}: accepted");
        let err = stderr(&out);
        assert!(
            err.contains(exception) && err.contains(words) && err.contains(code),
            "{exception}: {err}"
        );
        assert!(!err.contains("may or may not"), "{exception}: {err}");
        assert_eq!(h.version("c.db").await, version, "{exception}");
    }
}

/// `n` distinct sectors of 100 bytes, keyed by their hashes.
fn sectors(n: usize, salt: &str) -> Vec<(Hash, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let bytes = format!("{salt} sector {i:>80}").into_bytes();
            (hash(&bytes), bytes)
        })
        .collect()
}

/// Commits of 98, 99 and 100 new sectors, fenced and not, each land with
/// all their sectors: the one-request plan counts the fence's check and the
/// root put against DynamoDB's 100 actions.
pub(crate) async fn sector_counts_at_the_transaction_limit(backend: &DynamoBackend) {
    let name = DbName::new("limit.db").unwrap();
    let db = donut_host::storage::create_database(backend, &name, 4096)
        .await
        .expect("create")
        .db_id;
    let lock = Meta {
        version: 1,
        body: LockState::unlocked(0).encode(),
    };
    backend
        .put_meta(MetaKind::Lock, &name, None, lock)
        .await
        .expect("lock item");
    let root = donut_host::storage::read_root(backend, &name)
        .await
        .unwrap()
        .1;
    let mut version = root.version;
    for fenced in [false, true] {
        for n in [97, 98, 99] {
            let new = sectors(n, &format!("{n} {fenced}"));
            let commit = Commit {
                name: &name,
                db,
                expected: Some(version),
                replaces: donut_host::backend::Replaces::Database(db),
                sectors: &new,
                fence: fenced.then_some(Fence { lock_version: 1 }),
                state: None,
            };
            // A root of the database (the swap checks whose root it replaces).
            let next = donut_format::Root {
                version: version + 1,
                txn_id: donut_store::random_u64(),
                ..root.clone()
            };
            let meta = Meta {
                version: version + 1,
                body: next.encode(),
            };
            backend
                .commit(commit, meta)
                .await
                .unwrap_or_else(|e| panic!("{n} sectors, fenced {fenced}: {e}"));
            version += 1;
            let hashes: Vec<Hash> = new.iter().map(|s| s.0).collect();
            let stored = backend.get_sectors(db, &hashes).await.unwrap();
            assert!(
                stored
                    .iter()
                    .zip(&new)
                    .all(|(s, n)| s.as_ref() == Some(&n.1)),
                "{n} sectors, fenced {fenced}: not all stored"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_of_97_98_and_99_sectors_fenced_or_not_land_on_dynoxide() {
    let h = Harness::dynamodb().await;
    sector_counts_at_the_transaction_limit(h.dynamo.as_ref().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_over_the_one_request_limits_whose_root_answer_was_lost_applies_once() {
    let (h, proxy) = through_proxy_with(true).await;
    counter_db(&h).await;
    // 300 new rows of 2 KB: well over 98 sectors, so the sectors go first
    // (BatchWriteItem) and the root swap is a TransactWriteItems of the
    // root and its history item.
    proxy.faults.lose("TransactWriteItems", 1, Loss::Status500);
    h.sql_ok(
        "c.db",
        &format!(
            "begin;
         create table big(x);
         {}
         update c set n = n + 1;
         commit;",
            fill("big", 300, "randomblob(2000)")
        ),
    )
    .await;
    assert_eq!(
        h.value(
            "c.db",
            "select n || ':' || (select count(*) from big) from c"
        )
        .await,
        "1:300"
    );
    h.assert_integrity("c.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_commit_whose_answer_was_lost_applies_once() {
    let (h, proxy) = through_proxy_with(true).await;
    h.create("f.db").await;
    h.sql_ok("f.db", "create table t(x text)").await;
    // A lease writer's commit is fenced: one TransactWriteItems with the
    // lock item's ConditionCheck.
    proxy.faults.lose("TransactWriteItems", 1, Loss::Closed);
    let (out, _) = h
        .run_with(
            &components().test_guest,
            &["lease-write", "f.db", "0", "fenced"],
            "",
        )
        .await;
    assert_eq!(stdout(&out).trim(), "lease-write: ok");
    assert_eq!(
        h.value("f.db", "select group_concat(x) from t").await,
        "fenced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_not_yet_described_after_creation_is_waited_for() {
    let server = crate::util::Dynoxide::start();
    let proxy = crate::faults::Proxy::start(&server.endpoint).await;
    // AWS may not know a table it just created for a moment.
    proxy.faults.refuse(
        "DescribeTable",
        2,
        Refusal::Exception("ResourceNotFoundException"),
    );
    let options = crate::util::dynamo_options(&proxy.endpoint, "donut-new");
    donut_host::backend::dynamo::create_table(&options)
        .await
        .expect("created once described");
    DynamoBackend::connect(&options, Vec::new())
        .await
        .expect("connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_is_not_active_or_has_replicas_is_refused() {
    use donut_host::backend::dynamo::ConnectError;
    let server = crate::util::Dynoxide::start();
    let mut options = crate::util::dynamo_options(&server.endpoint, "donut-status");
    donut_host::backend::dynamo::create_table(&options)
        .await
        .expect("create");
    let proxy = crate::faults::Proxy::start(&server.endpoint).await;
    options.endpoint = Some(proxy.endpoint.clone());
    let connect = |options: donut_host::backend::dynamo::DynamoOptions| async move {
        DynamoBackend::connect(&options, Vec::new()).await.map(drop)
    };
    let patch = |fields: serde_json::Value| {
        *proxy.faults.describe_patch.lock().unwrap() = Some(fields);
    };
    for status in ["CREATING", "DELETING", "ARCHIVED"] {
        patch(serde_json::json!({ "TableStatus": status }));
        match connect(options.clone()).await {
            Err(e @ ConnectError::NotActive { .. }) => {
                assert!(e.to_string().contains(status), "{e}")
            }
            other => panic!("{status}: {other:?}"),
        }
    }
    patch(serde_json::json!({ "TableStatus": "UPDATING" }));
    connect(options.clone()).await.expect("UPDATING serves");
    patch(serde_json::json!({
        "TableStatus": "ACTIVE",
        "Replicas": [{ "RegionName": "eu-west-1", "ReplicaStatus": "ACTIVE" }]
    }));
    match connect(options.clone()).await {
        Err(e @ ConnectError::Replicated { .. }) => {
            assert!(e.to_string().contains("eu-west-1"), "{e}")
        }
        other => panic!("replicas: {other:?}"),
    }
    options.single_writer_region = true;
    connect(options)
        .await
        .expect("one writing Region, promised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_commit_carries_the_first_attempts_request_token() {
    let (h, proxy) = through_proxy_with(true).await;
    let name = DbName::new("t.db").unwrap();
    let db = donut_host::storage::create_database(&*h.backend, &name, 4096)
        .await
        .expect("create")
        .db_id;
    let version = h.version("t.db").await;
    proxy.faults.tokens.lock().unwrap().clear(); // the creation's
    let new = sectors(3, "token");
    let send = |body: &'static [u8]| {
        let commit = Commit {
            name: &name,
            db,
            expected: Some(version),
            replaces: donut_host::backend::Replaces::Database(db),
            sectors: &new,
            fence: None,
            state: None,
        };
        let meta = Meta {
            version: version + 1,
            body: body.to_vec(),
        };
        let backend = h.backend.clone();
        async move { backend.commit(commit, meta).await }
    };
    send(b"root one").await.expect("first attempt");
    // The guest's re-send of the same commit (its answer lost): the same
    // token, so DynamoDB answers with the first attempt's outcome.
    send(b"root one")
        .await
        .expect("a re-send of a landed commit");
    // Another commit on the same version: another token, refused.
    send(b"root two")
        .await
        .expect_err("a different commit conflicts");
    let tokens = proxy.faults.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert_eq!(tokens[0], tokens[1], "a re-send keeps its token");
    assert_ne!(tokens[0], tokens[2], "another commit has its own");
}
