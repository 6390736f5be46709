//! Exclusive writers (`PRAGMA donut_writer = exclusive`): the lease held
//! from the first write until the connection closes, roots that require it
//! of every writer, and transactions that start without a root read.

use crate::backend_tests;
use crate::util::{Harness, components, stdout};
use donut_format::DbName;

backend_tests!(
    an_exclusive_writer_keeps_other_writers_out_until_it_closes,
    an_exclusive_writers_autocommit_insert_is_one_commit_and_no_root_read,
    push_and_rm_take_the_lease_an_exclusive_writer_requires,
);

async fn with_table_t(h: &Harness, db: &str) {
    h.create(db).await;
    h.sql_ok(db, "create table t(x text)").await;
}

async fn lease_required(h: &Harness, db: &str) -> bool {
    let name = DbName::new(db).unwrap();
    let (_, root) = donut_host::storage::read_root(&*h.backend, &name)
        .await
        .expect("root");
    root.lease_required
}

async fn an_exclusive_writer_keeps_other_writers_out_until_it_closes(h: Harness) {
    with_table_t(&h, "x.db").await;
    let (out, _) = h
        .run_with(&components().test_guest, &["exclusive", "x.db"], "")
        .await;
    let out = stdout(&out);
    let line = |key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_string()
    };
    assert_eq!(line("exclusive-1"), "ok");
    // The optimistic writer's snapshot requires the lease, which is held.
    let refused = line("other-write");
    assert!(refused.contains("database is locked"), "{refused}");
    assert!(refused.contains("lease"), "{refused}");
    // Readers never lock.
    assert_eq!(line("other-reads"), "e1");
    assert_eq!(line("exclusive-2"), "ok");
    assert_eq!(line("exclusive-reads"), "e1,e2");
    // Closed: the lease is released, the other writer commits (taking the
    // lease, since the root still asks for it) and the requirement goes.
    assert_eq!(line("other-write-after-close"), "ok");
    assert_eq!(line("final"), "e1,e2,o2");
    assert!(!lease_required(&h, "x.db").await);
    h.assert_integrity("x.db").await;
}

async fn an_exclusive_writers_autocommit_insert_is_one_commit_and_no_root_read(h: Harness) {
    with_table_t(&h, "w.db").await;
    let inserts = "insert into t values ('row');\n".repeat(10);
    let requests = |h: &Harness| -> std::collections::BTreeMap<&'static str, u64> {
        h.dynamo
            .as_ref()
            .map_or_else(Default::default, |d| d.stats().requests)
    };
    let before = requests(&h);
    let (out, stats) = h
        .shell(
            "w.db",
            &format!("pragma donut_writer = exclusive;\n{inserts}"),
        )
        .await;
    assert!(out.success(), "{}", crate::util::stderr(&out));
    assert_eq!(stats.commit_root, 10, "{stats}");
    // The open's root read (which the first transaction uses), and the one
    // that checks the snapshot once the lease is taken; then none: the
    // claim vouches for the snapshot.
    assert_eq!(stats.read_root, 2, "{stats}");
    assert_eq!(stats.commit_conflicts, 0);
    if h.dynamo.is_some() {
        // Per insert one TransactWriteItems (pages, fence, root) and
        // nothing else; around them the two root reads, the lease's
        // acquire (read and put of the lock item) and release (a put), and
        // one read of the pages the first insert needs (page 1 and the
        // table's root page, a head page fetched with it).
        let after = requests(&h);
        let sent = |kind: &str| after.get(kind).unwrap_or(&0) - before.get(kind).unwrap_or(&0);
        assert_eq!(sent("TransactWriteItems"), 10, "{after:?}");
        assert_eq!(sent("GetItem"), 2 + 1, "{after:?}");
        assert_eq!(sent("PutItem"), 2, "{after:?}");
        assert_eq!(sent("BatchGetItem"), 1, "{after:?}");
    }
    assert!(lease_required(&h, "w.db").await);
    // The same inserts from an optimistic writer read the root each time.
    let (_, optimistic) = h.shell("w.db", &inserts).await;
    assert!(optimistic.read_root >= 10, "{optimistic}");
    assert!(!lease_required(&h, "w.db").await);
    assert_eq!(h.value("w.db", "select count(*) from t").await, "20");
}

async fn push_and_rm_take_the_lease_an_exclusive_writer_requires(h: Harness) {
    with_table_t(&h, "p.db").await;
    h.shell(
        "p.db",
        "pragma donut_writer = exclusive;\ninsert into t values ('e');\n",
    )
    .await;
    assert!(lease_required(&h, "p.db").await);
    // A holder that dies with the lease: push and rm are refused while it
    // stands (an exclusive writer would trust its snapshot until then).
    let (died, _) = h
        .try_run_with(
            &components().test_guest,
            &["die-holding-lease", "p.db", "60000"],
            "",
        )
        .await;
    assert!(died.is_err(), "the holder was meant to die");
    // A SQLite file to push: pulled from another database.
    with_table_t(&h, "src.db").await;
    h.sql_ok("src.db", "insert into t values ('pushed')").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.sqlite");
    let src = DbName::new("src.db").unwrap();
    donut_host::transfer::pull(h.backend.clone(), &src, None, &file, |_, _| {})
        .await
        .expect("pull");
    let name = DbName::new("p.db").unwrap();
    let push = donut_host::transfer::push(h.backend.clone(), &name, &file, |_, _| {}).await;
    let err = push.expect_err("push while the lease is held").to_string();
    assert!(err.contains("exclusive writer"), "{err}");
    let rm = donut_host::storage::remove_database(&*h.backend, &name).await;
    let err = rm.expect_err("rm while the lease is held").to_string();
    assert!(err.contains("exclusive writer"), "{err}");
    assert_eq!(h.value("p.db", "select group_concat(x) from t").await, "e");
    // A free lease: push takes it, swaps fenced, and gives it back.
    with_table_t(&h, "q.db").await;
    h.shell(
        "q.db",
        "pragma donut_writer = exclusive;\ninsert into t values ('e');\n",
    )
    .await;
    let name = DbName::new("q.db").unwrap();
    donut_host::transfer::push(h.backend.clone(), &name, &file, |_, _| {})
        .await
        .expect("push");
    assert_eq!(h.value("q.db", "select x from t").await, "pushed");
    assert!(!lease_required(&h, "q.db").await);
    // The lease was released: a lease writer gets it at once.
    let (out, _) = h
        .run_with(
            &components().test_guest,
            &["lease-write", "q.db", "0", "after"],
            "",
        )
        .await;
    assert_eq!(stdout(&out).trim(), "lease-write: ok");
    donut_host::storage::remove_database(&*h.backend, &name)
        .await
        .expect("rm");
}
