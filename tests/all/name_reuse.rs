//! A name removed, collected away and created again holds a new database
//! (a new id, versions from 1 again): nothing of the removed one — a
//! transaction still under way, its GC state, its family flags, its
//! history — ever applies to the new one, on every backend (issue 31).

use crate::backend_tests;
use crate::util::Harness;
use async_trait::async_trait;
use donut_format::salt::salted;
use donut_format::{DbName, IntentKey, Root, Salt, hash};
use donut_host::backend::{Backend, BackendError, ItemKind, Layer};
use donut_host::storage::{Clock, GcOptions, collect_garbage, fork, read_root};
use donut_store::Grant;
use donut_store::client::{Client, OpenDatabase};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

fn name(text: &str) -> DbName {
    DbName::new(text).expect("legal name")
}

/// Retires every version but the newest (and finishes a removal).
fn now() -> GcOptions {
    GcOptions {
        retain_ms: 0,
        now_ms: Clock::System.now_ms() + 1_000,
        write_units_max: None,
        keep_from: None,
    }
}

/// The root after `root`: its version + 1, a new transaction id.
fn next(root: &Root) -> Root {
    let mut next = root.clone();
    next.version += 1;
    next.commit_ms = Clock::System.now_ms();
    next.txn_id = donut_store::random_u64();
    next
}

/// Commits `count` empty transactions through `client`; returns the root.
async fn commits(client: &mut Client, db: &mut OpenDatabase, mut root: Root, count: u32) -> Root {
    for _ in 0..count {
        let new = next(&root);
        let version = client
            .commit_root(db, root.version, new.encode(), None, Vec::new())
            .await
            .expect("commit");
        assert_eq!(version, new.version);
        root = new;
    }
    root
}

/// A handle on x.db (id A) reads version 3; x.db is removed, collected
/// away by gc and created again (id B) up to version 3. The old handle's
/// transaction must not commit over B: the root's compare-and-swap
/// checked the version only, and versions restart at 1.
pub(crate) async fn a_removed_databases_transaction_does_not_commit_over_its_namesake(h: Harness) {
    let x = name("x.db");
    let backend: &dyn Backend = &*h.backend;
    let mut old = Client::new(h.backend.clone(), Grant::all());
    let mut db = old.create("x.db", 4096).await.expect("create");
    let root = read_root(backend, &x).await.expect("root").1;
    let stale = commits(&mut old, &mut db, root, 2).await;
    donut_host::storage::remove_database(backend, &x)
        .await
        .expect("rm");
    let report = collect_garbage(backend, &x, now()).await.expect("gc");
    assert!(report.removed, "{report:?}");
    let mut other = Client::new(h.backend.clone(), Grant::all());
    let mut db2 = other.create("x.db", 4096).await.expect("created again");
    let root2 = read_root(backend, &x).await.expect("root").1;
    let root2 = commits(&mut other, &mut db2, root2, 2).await;
    assert_eq!(root2.version, stale.version);
    assert_ne!(root2.db_id, stale.db_id);
    let landed = old
        .commit_root(
            &mut db,
            stale.version,
            next(&stale).encode(),
            None,
            Vec::new(),
        )
        .await;
    let (_, head) = read_root(backend, &x).await.expect("root");
    assert_eq!(
        head.db_id, root2.db_id,
        "the removed database's transaction committed over the new one: {landed:?}"
    );
    assert!(landed.is_err(), "{landed:?}");
    // The new database's own writer goes on.
    commits(&mut other, &mut db2, root2, 1).await;
}

/// A backend that, at the final removal's listing of intents (a run's
/// second), has x.db created again and a transaction of it spill a page
/// (its intent and sector stored, its commit still to come).
struct CreatedAgainDuringTheFinalStep {
    inner: Arc<dyn Backend>,
    listings: AtomicU32,
    spilled: std::sync::Mutex<Option<(donut_format::DbId, donut_format::Hash, Vec<u8>)>>,
}

#[async_trait]
impl Layer for CreatedAgainDuringTheFinalStep {
    type Inner = dyn Backend;

    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        if self.listings.fetch_add(1, Ordering::SeqCst) == 1 {
            let root = donut_host::storage::create_database(&*self.inner, name, 4096)
                .await
                .expect("created again");
            let txn_id = donut_store::random_u64();
            let page = salted(&[7u8; 4096], Salt::page(0, txn_id));
            let key = hash(&page);
            let sectors = [(key, page.clone())];
            let now_ms = Clock::System.now_ms();
            donut_store::intent::record(
                &*self.inner,
                name,
                root.db_id,
                root.version,
                &sectors,
                now_ms,
            )
            .await
            .expect("intent");
            Backend::put_sectors(&*self.inner, root.db_id, &sectors)
                .await
                .expect("spill");
            *self.spilled.lock().unwrap() = Some((root.db_id, key, page));
        }
        Backend::list_intents(&*self.inner, name, bound_below, limit).await
    }
}

/// x.db is removed; its final gc run reads the tombstone, and meanwhile
/// x.db is created again and a transaction of the new database spills a
/// page. The run must collect only what the removed database wrote: the
/// spilled page (whose intent's bound is the new database's version) is
/// the next commit's.
pub(crate) async fn the_final_removal_keeps_what_a_database_created_again_spilled(h: Harness) {
    let x = name("x.db");
    h.create("x.db").await;
    h.sql_ok(
        "x.db",
        "create table t(v); insert into t values (randomblob(9000))",
    )
    .await;
    donut_host::storage::remove_database(&*h.backend, &x)
        .await
        .expect("rm");
    let racing = Arc::new(CreatedAgainDuringTheFinalStep {
        inner: h.backend.clone(),
        listings: AtomicU32::new(0),
        spilled: std::sync::Mutex::new(None),
    });
    let report = collect_garbage(&*racing, &x, now()).await.expect("gc");
    assert!(!report.removed, "x.db was created again: {report:?}");
    let (db, key, page) = racing.spilled.lock().unwrap().clone().expect("spilled");
    let found = Backend::get_sectors(&*h.backend, db, &[key])
        .await
        .expect("read");
    assert_eq!(
        found,
        vec![Some(page)],
        "the new database's spilled page was deleted"
    );
}

/// Sector items in the store.
async fn sector_items(h: &Harness) -> u64 {
    let summary = h.summary().await;
    summary
        .by_kind
        .get(&ItemKind::Sector)
        .map_or(0, |k| k.items)
}

/// Sectors a fresh push of `db`'s current version stores.
async fn fresh_push_sectors(h: &Harness, db: &str) -> u64 {
    let (_, root) = read_root(&*h.backend, &name(db)).await.unwrap();
    let checked = donut_store::transfer::verify_root(h.backend.clone(), &root)
        .await
        .expect("every page and chunk of the current version is there");
    checked.pages + checked.chunks
}

/// A table of 200 rows of 2,000 random bytes, then `updates` single-row
/// updates, each its own commit.
async fn churn(h: &Harness, db: &str, updates: u32) {
    h.sql_ok(
        db,
        "create table if not exists t(id integer primary key, v blob);
         with recursive c(x) as (select 1 union all select x + 1 from c where x < 200)
         insert into t(v) select randomblob(2000) from c;",
    )
    .await;
    for i in 0..updates {
        let id = 1 + (i * 37) % 200;
        h.sql_ok(
            db,
            &format!("update t set v = randomblob(2000) where id = {id}"),
        )
        .await;
    }
}

/// a.db was forked (its GC state says so, naming its id's family), then
/// removed and created again under a new id. The new database shares
/// nothing: gc collects its garbage as any database's, instead of judging
/// it "forked but unlisted" and leaving every sector it drops.
pub(crate) async fn a_name_created_again_after_a_fork_collects_its_own_garbage(h: Harness) {
    h.create("a.db").await;
    churn(&h, "a.db", 2).await;
    fork(&*h.backend, &name("a.db"), None, &name("f.db"))
        .await
        .expect("fork");
    donut_host::storage::remove_database(&*h.backend, &name("a.db"))
        .await
        .expect("rm");
    h.create("a.db").await;
    for round in 0..3 {
        churn(&h, "a.db", 10).await;
        let report = collect_garbage(&*h.backend, &name("a.db"), now())
            .await
            .expect("gc");
        assert!(!report.forked, "round {round}: {report:?}");
        collect_garbage(&*h.backend, &name("f.db"), now())
            .await
            .expect("gc f.db");
        let expected = fresh_push_sectors(&h, "a.db").await + fresh_push_sectors(&h, "f.db").await;
        assert_eq!(sector_items(&h).await, expected, "round {round}");
    }
    h.assert_integrity("a.db").await;
    h.assert_integrity("f.db").await;
}

backend_tests!(
    a_removed_databases_transaction_does_not_commit_over_its_namesake,
    the_final_removal_keeps_what_a_database_created_again_spilled,
    a_name_created_again_after_a_fork_collects_its_own_garbage,
);
