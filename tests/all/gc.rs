//! Garbage collection (docs/format.md, "Garbage collection") on every
//! backend: after updates the store comes back to what a fresh push of the
//! same content holds; a removed database leaves nothing; restores and
//! forks stay whole; a run stopped midway (a write budget, failing
//! deletes) loses nothing and the next run finishes; a retired version
//! reads as expired, never as wrong rows.

use crate::backend_tests;
use crate::util::{Harness, stderr};
use async_trait::async_trait;
use donut_format::{At, DbId, DbName, ForkSource, GcState, Hash};
use donut_host::backend::{
    Backend, BackendError, Commit, ItemKind, Layer, Meta, MetaKind, PutMetaError, StoredSummary,
};
use donut_host::storage::{
    Clock, GcOptions, GcReport, collect_garbage, fork, list_versions, read_root, restore,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

fn name(text: &str) -> DbName {
    DbName::new(text).expect("legal name")
}

/// Retain nothing but the newest version.
fn now() -> GcOptions {
    GcOptions {
        retain_ms: 0,
        now_ms: Clock::System.now_ms() + 1,
        write_units_max: None,
        keep_from: None,
    }
}

async fn gc(backend: &dyn Backend, db: &str) -> GcReport {
    collect_garbage(backend, &name(db), now()).await.unwrap()
}

/// A table of 300 rows of 2,000 random bytes (~150 pages), then
/// `updates` single-row updates, each its own commit, and one that
/// rewrites a tenth of the rows (a merge into the tree).
async fn churned(h: &Harness, db: &str, updates: u32) {
    h.create(db).await;
    h.sql_ok(
        db,
        "create table t(id integer primary key, v blob);
         with recursive c(x) as (select 1 union all select x + 1 from c where x < 300)
         insert into t(v) select randomblob(2000) from c;",
    )
    .await;
    for i in 0..updates {
        let id = 1 + (i * 37) % 300;
        h.sql_ok(
            db,
            &format!("update t set v = randomblob(2000) where id = {id}"),
        )
        .await;
    }
    h.sql_ok(db, "update t set v = randomblob(2000) where id % 10 = 0")
        .await;
}

/// Sector items and bytes a fresh push of `db`'s current version stores:
/// its non-zero pages and its chunks, each once (salted: one per
/// position), read back and checked.
async fn fresh_push_sectors(h: &Harness, db: &str) -> u64 {
    let (_, root) = read_root(&*h.backend, &name(db)).await.unwrap();
    let checked = donut_store::transfer::verify_root(h.backend.clone(), &root)
        .await
        .expect("every page and chunk of the current version is there");
    checked.pages + checked.chunks
}

fn sectors(summary: &StoredSummary) -> (u64, u64) {
    let kind = summary
        .by_kind
        .get(&donut_host::backend::ItemKind::Sector)
        .copied()
        .unwrap_or_default();
    (kind.items, kind.bytes)
}

async fn checksum(h: &Harness, db: &str) -> String {
    h.value(
        db,
        "select count(*) || ':' || group_concat(id || '=' || hex(substr(v, 1, 16)) || length(v)) \
         from (select id, v from t order by id)",
    )
    .await
}

pub(crate) async fn gc_brings_updates_back_to_the_size_of_a_fresh_push(h: Harness) {
    churned(&h, "u.db", 40).await;
    let before = checksum(&h, "u.db").await;
    let (items_before, bytes_before) = sectors(&h.summary().await);
    let report = gc(&*h.backend, "u.db").await;
    assert!(report.versions_retired >= 40, "{report:?}");
    assert!(report.sectors_deleted > 40, "{report:?}");
    assert_eq!(report.sectors_left_unsalted, 0);
    let (items, bytes) = sectors(&h.summary().await);
    let fresh_items = fresh_push_sectors(&h, "u.db").await;
    assert_eq!(items, fresh_items, "exactly the current version's sectors");
    assert_eq!(items_before - items, report.sectors_deleted);
    // DynamoDB's sizes are its items' (keys, compression): only the
    // others count the deleted bytes exactly.
    assert!(bytes < bytes_before);
    assert!(report.sector_bytes_deleted > 0);
    assert_eq!(checksum(&h, "u.db").await, before);
    h.assert_integrity("u.db").await;
    // A second run finds nothing to do.
    let again = gc(&*h.backend, "u.db").await;
    assert_eq!((again.versions_retired, again.sectors_deleted), (0, 0));
    // A retired version is refused, not read.
    let old = h.sql("u.db@3", "select count(*) from t").await;
    assert!(stderr(&old).contains("no longer kept"), "{}", stderr(&old));
}

pub(crate) async fn rm_then_gc_leaves_nothing_of_the_database(h: Harness) {
    churned(&h, "keep.db", 3).await;
    gc(&*h.backend, "keep.db").await;
    let alone = h.summary().await;
    churned(&h, "gone.db", 5).await;
    h.sql_ok("gone.db", "select 1").await;
    donut_host::storage::remove_database(&*h.backend, &name("gone.db"))
        .await
        .unwrap();
    let report = gc(&*h.backend, "gone.db").await;
    assert!(report.removed, "{report:?}");
    let after = h.summary().await;
    assert_eq!(
        (after.items, after.bytes),
        (alone.items, alone.bytes),
        "the store holds what it held before gone.db: {:?} vs {:?}",
        after.by_kind,
        alone.by_kind
    );
    assert!(
        Backend::list_roots(&*h.backend)
            .await
            .unwrap()
            .iter()
            .all(|(n, _)| n.as_str() != "gone.db")
    );
    // The name can be used again.
    h.create("gone.db").await;
    h.sql_ok("gone.db", "create table x(y)").await;
}

pub(crate) async fn a_restore_survives_gc_and_can_be_undone(h: Harness) {
    churned(&h, "r.db", 4).await;
    let early = h.version("r.db").await;
    let early_rows = checksum(&h, "r.db").await;
    h.sql_ok("r.db", "delete from t where id > 100").await;
    let late_rows = checksum(&h, "r.db").await;
    let late = h.version("r.db").await;
    let restored = restore(&*h.backend, &name("r.db"), At::Version(early))
        .await
        .unwrap();
    gc(&*h.backend, "r.db").await;
    assert_eq!(checksum(&h, "r.db").await, early_rows);
    h.assert_integrity("r.db").await;
    // The version before the restore was retired with everything else
    // but the newest: undoing is refused, saying why.
    let undo = restore(&*h.backend, &name("r.db"), At::Version(late)).await;
    let err = undo.expect_err("retired").to_string();
    assert!(err.contains("no longer kept"), "{err}");
    assert_ne!(late_rows, early_rows);
    assert!(restored.version > late);
}

pub(crate) async fn forks_stay_whole_and_gc_collects_what_no_member_holds(h: Harness) {
    churned(&h, "src.db", 3).await;
    fork(&*h.backend, &name("src.db"), None, &name("dst.db"))
        .await
        .unwrap();
    fork(&*h.backend, &name("dst.db"), None, &name("leaf.db"))
        .await
        .unwrap();
    // Each drops pages the others still hold.
    h.sql_ok("src.db", "delete from t where id <= 150").await;
    h.sql_ok("dst.db", "delete from t where id > 150").await;
    h.sql_ok(
        "leaf.db",
        "update t set v = randomblob(2000) where id % 7 = 0",
    )
    .await;
    let members = ["src.db", "dst.db", "leaf.db"];
    let mut rows = Vec::new();
    for db in members {
        rows.push(checksum(&h, db).await);
    }
    let (items_before, _) = sectors(&h.summary().await);
    let mut deleted = 0;
    for db in members {
        let report = gc(&*h.backend, db).await;
        assert!(!report.forked, "a listed family is collected: {report:?}");
        deleted += report.sectors_deleted;
    }
    assert!(deleted > 0);
    for (db, rows) in members.iter().zip(&rows) {
        assert_eq!(checksum(&h, db).await, *rows, "{db}");
        h.assert_integrity(db).await;
    }
    assert_eq!(sectors(&h.summary().await).0, items_before - deleted);
    // Removing two members leaves exactly the third's sectors.
    for db in ["src.db", "dst.db"] {
        donut_host::storage::remove_database(&*h.backend, &name(db))
            .await
            .unwrap();
        let report = gc(&*h.backend, db).await;
        assert!(report.removed, "{report:?}");
        assert_eq!(checksum(&h, "leaf.db").await, rows[2]);
    }
    h.assert_integrity("leaf.db").await;
    let fresh = fresh_push_sectors(&h, "leaf.db").await;
    assert_eq!(sectors(&h.summary().await).0, fresh);
    // A fork of a retired version is refused.
    let refused = fork(
        &*h.backend,
        &name("leaf.db"),
        Some(At::Version(1)),
        &name("x.db"),
    )
    .await;
    assert!(refused.is_err());
    // The last member removed, nothing of the family is left.
    donut_host::storage::remove_database(&*h.backend, &name("leaf.db"))
        .await
        .unwrap();
    assert!(gc(&*h.backend, "leaf.db").await.removed);
    let left = h.summary().await;
    assert_eq!(left.items, 0, "{:?}", left.by_kind);
}

/// A source's write after its oldest kept version, copied by a fork that
/// was then removed, and by a fork of that fork which then dropped it:
/// the source still holds it (found reviewing the family walk).
pub(crate) async fn a_removed_fork_in_a_chain_still_protects_its_source(h: Harness) {
    churned(&h, "src.db", 2).await;
    gc(&*h.backend, "src.db").await;
    // Fresh writes after src.db's oldest kept version.
    h.sql_ok(
        "src.db",
        "update t set v = randomblob(2000) where id <= 100",
    )
    .await;
    let rows = checksum(&h, "src.db").await;
    fork(&*h.backend, &name("src.db"), None, &name("mid.db"))
        .await
        .unwrap();
    fork(&*h.backend, &name("mid.db"), None, &name("leaf.db"))
        .await
        .unwrap();
    donut_host::storage::remove_database(&*h.backend, &name("mid.db"))
        .await
        .unwrap();
    assert!(gc(&*h.backend, "mid.db").await.removed);
    h.sql_ok(
        "leaf.db",
        "update t set v = randomblob(2000) where id <= 100",
    )
    .await;
    let report = gc(&*h.backend, "leaf.db").await;
    assert!(!report.forked, "{report:?}");
    assert_eq!(checksum(&h, "src.db").await, rows);
    h.assert_integrity("src.db").await;
    h.assert_integrity("leaf.db").await;
}

/// The review of issue 39's fix (finding 1): a fork's mark on its source
/// lapsed by clocks (`started_ms` an hour before the oldest kept
/// version's commit time), so a fork host 2 h slow, or a fork stalled
/// between its own time check and its root write, had its mark dropped;
/// `gc` then judged the pending fork's retired, unmarked source as
/// holding nothing and deleted its pages, and the fork wrote a root that
/// read them ("manifest chunk … is missing"). Now no clock decides: the
/// fork's root is written in one step with its source's GC state, only
/// while its mark stands, and a run that retires the source version drops
/// the mark first — however long the fork stalled, it is refused.
pub(crate) async fn a_fork_stalled_while_gc_retires_its_source_never_writes_a_root_gc_emptied(
    h: Harness,
) {
    churned(&h, "src.db", 3).await;
    let (src, dst) = (name("src.db"), name("dst.db"));
    let (_, source) = read_root(&*h.backend, &src).await.unwrap();
    // `history::fork`'s steps, up to its root.
    let (expected, fresh) = donut_store::db::new_root(&*h.backend, &dst, source.page_size)
        .await
        .unwrap();
    let listed = ForkSource {
        name: src.clone(),
        version: source.version,
        fork_version: fresh.version,
    };
    donut_store::gc::register_fork(&*h.backend, source.db_id, listed, &dst)
        .await
        .unwrap();
    let mark = donut_store::gc::mark_forked(&*h.backend, &src, Some(source.version), source.db_id)
        .await
        .unwrap()
        .expect("a mark on the source version");
    donut_store::gc::mark_forked(&*h.backend, &dst, None, source.db_id)
        .await
        .unwrap();
    // Stalled here (any clock, any skew); the source moves on and gc runs.
    h.sql_ok("src.db", "update t set v = randomblob(2000)")
        .await;
    let report = gc(&*h.backend, "src.db").await;
    assert!(report.oldest_kept > source.version, "{report:?}");
    assert!(report.sectors_deleted > 0, "{report:?}");
    let mut root = source.clone();
    root.version = fresh.version;
    root.commit_ms = fresh.commit_ms;
    root.txn_id = fresh.txn_id;
    root.lease_required = false;
    let landed = donut_store::gc::land(
        &*h.backend,
        &src,
        mark,
        donut_store::gc::Landing {
            name: &dst,
            expected,
            replaces: donut_store::backend::Replaces::Nothing,
            lease_required: false,
            root: &root,
        },
    )
    .await;
    let err = landed.expect_err("the fork's source version was retired under it");
    assert!(err.to_string().contains("snapshot expired"), "{err}");
    assert!(
        read_root(&*h.backend, &dst).await.is_err(),
        "no root written"
    );
    // The family still collects, and a fork made now is whole.
    gc(&*h.backend, "src.db").await;
    fork(&*h.backend, &src, None, &name("again.db"))
        .await
        .unwrap();
    h.assert_integrity("src.db").await;
    h.assert_integrity("again.db").await;
}

/// Issue 31, item 7, for restores (the same class as finding 1): a
/// restore whose host was an hour slow had its mark pruned between
/// marking and swapping, and its root then copied a version whose pages
/// `gc` had collected. Now its root lands only while its mark stands.
pub(crate) async fn a_restore_stalled_while_gc_retires_its_source_never_writes_a_root_gc_emptied(
    h: Harness,
) {
    churned(&h, "r.db", 3).await;
    let r = name("r.db");
    let (meta, current) = read_root(&*h.backend, &r).await.unwrap();
    let before = checksum(&h, "r.db").await;
    let source = meta.version - 2;
    // `history::restore`'s steps, up to its root.
    let (_, old) = donut_store::history::read_root_at(&*h.backend, &r, At::Version(source))
        .await
        .unwrap();
    let mut root = old.clone();
    root.version = meta.version + 1;
    root.txn_id = 0x5eed;
    root.lease_required = false;
    let mark = donut_format::RestoreMark {
        source,
        txn_id: root.txn_id,
        lands_as: root.version,
    };
    donut_store::gc::mark_restore(&*h.backend, &r, mark)
        .await
        .unwrap();
    // Stalled here; gc retires everything below the current version.
    let report = gc(&*h.backend, "r.db").await;
    assert_eq!(report.oldest_kept, meta.version, "{report:?}");
    assert!(report.sectors_deleted > 0, "{report:?}");
    let landed = donut_store::gc::land(
        &*h.backend,
        &r,
        mark,
        donut_store::gc::Landing {
            name: &r,
            expected: Some(meta.version),
            replaces: donut_store::backend::Replaces::Database(current.db_id),
            lease_required: current.lease_required,
            root: &root,
        },
    )
    .await;
    let err = landed.expect_err("the restore's source version was retired under it");
    assert!(err.to_string().contains("snapshot expired"), "{err}");
    assert_eq!(h.version("r.db").await, meta.version, "no root written");
    assert_eq!(checksum(&h, "r.db").await, before);
    h.assert_integrity("r.db").await;
}

/// Finding 2: marks lapsed only once a version committed an hour after
/// them was the oldest kept, so 1,024 restores of an idle database
/// refused every later restore and fork, whatever gc ran, and the error's
/// advice ("once gc has dropped those older than an hour") never came
/// true. Now a landed restore's mark goes once gc keeps the version it
/// wrote.
pub(crate) async fn marks_of_landed_restores_go_once_gc_keeps_their_versions(h: Harness) {
    churned(&h, "m.db", 1).await;
    let m = name("m.db");
    for _ in 0..donut_format::RESTORE_MARKS_MAX {
        restore(&*h.backend, &m, At::Version(1)).await.unwrap();
    }
    let full = fork(&*h.backend, &m, None, &name("f.db")).await;
    assert!(full.is_err(), "every mark is a landed restore's: {full:?}");
    gc(&*h.backend, "m.db").await;
    let (_, state) = donut_store::gc::read_state(&*h.backend, &m).await.unwrap();
    assert!(state.restores.is_empty(), "{:?}", state.restores.len());
    fork(&*h.backend, &m, None, &name("f.db")).await.unwrap();
    let head = h.version("m.db").await;
    restore(&*h.backend, &m, At::Version(head)).await.unwrap();
    h.assert_integrity("f.db").await;
    h.assert_integrity("m.db").await;
}

/// Finding 2, killed restores: marks whose restores never landed stood
/// on an idle database for ever; with 1,024 of them every restore and
/// fork was refused. A restore or fork that has not landed can give its
/// mark up (its root write is then refused), so a new one takes it.
pub(crate) async fn marks_of_restores_killed_before_their_root_give_way_to_new_ones(h: Harness) {
    churned(&h, "k.db", 1).await;
    let k = name("k.db");
    let head = h.version("k.db").await;
    let mut first = None;
    for i in 0..donut_format::RESTORE_MARKS_MAX as u64 {
        let mark = donut_format::RestoreMark {
            source: 1,
            txn_id: 1000 + i,
            lands_as: head + 1,
        };
        first.get_or_insert(mark);
        donut_store::gc::mark_restore(&*h.backend, &k, mark)
            .await
            .unwrap();
    }
    restore(&*h.backend, &k, At::Version(1)).await.unwrap();
    // Its version taken, no killed restore can land: gc drops their marks.
    gc(&*h.backend, "k.db").await;
    fork(&*h.backend, &k, None, &name("g.db")).await.unwrap();
    h.assert_integrity("k.db").await;
    h.assert_integrity("g.db").await;
    // The restore whose mark went can no longer land.
    let (_, old) = read_root(&*h.backend, &k).await.unwrap();
    let first = first.expect("marks were written");
    let mut root = old;
    root.version = h.version("k.db").await + 1;
    root.txn_id = first.txn_id;
    let landed = donut_store::gc::land(
        &*h.backend,
        &k,
        first,
        donut_store::gc::Landing {
            name: &k,
            expected: Some(root.version - 1),
            replaces: donut_store::backend::Replaces::Database(root.db_id),
            lease_required: false,
            root: &root,
        },
    )
    .await;
    assert!(landed.is_err(), "{landed:?}");
}

/// Finding 3 (issue 31, item 9): a fork killed after listing itself and
/// marking its source kept the source's history and sectors for ever, and
/// once the source was removed and collected away every other member's
/// gc failed Busy ("the family … kept changing"): the pending fork's
/// source version was neither kept nor marked-and-retired. Now a pending
/// fork whose source is retired or gone holds nothing.
pub(crate) async fn a_fork_killed_before_its_root_is_abandoned_and_its_family_collects(h: Harness) {
    churned(&h, "s.db", 2).await;
    let (s, dead) = (name("s.db"), name("dead.db"));
    fork(&*h.backend, &s, None, &name("f2.db")).await.unwrap();
    let (_, source) = read_root(&*h.backend, &s).await.unwrap();
    let (_, fresh) = donut_store::db::new_root(&*h.backend, &dead, source.page_size)
        .await
        .unwrap();
    let listed = ForkSource {
        name: s.clone(),
        version: source.version,
        fork_version: fresh.version,
    };
    donut_store::gc::register_fork(&*h.backend, source.db_id, listed, &dead)
        .await
        .unwrap();
    donut_store::gc::mark_forked(&*h.backend, &s, Some(source.version), source.db_id)
        .await
        .unwrap();
    // Killed here.
    h.sql_ok("s.db", "update t set v = randomblob(2000) where id < 100")
        .await;
    let report = gc(&*h.backend, "s.db").await;
    let (_, state) = donut_store::gc::read_state(&*h.backend, &s).await.unwrap();
    assert!(state.restores.is_empty(), "{report:?} {state:?}");
    donut_store::db::remove_database(&*h.backend, &s)
        .await
        .unwrap();
    let mut removed = false;
    for _ in 0..4 {
        match collect_garbage(&*h.backend, &s, now()).await {
            Ok(report) if report.removed => removed = true,
            Err(e) if e.to_string().contains("no database") => removed = true,
            Ok(_) => continue,
            Err(e) => panic!("gc s.db: {e}"),
        }
        break;
    }
    assert!(removed, "s.db collected away");
    h.sql_ok("f2.db", "update t set v = randomblob(2000) where id > 200")
        .await;
    let report = collect_garbage(&*h.backend, &name("f2.db"), now()).await;
    assert!(report.is_ok(), "gc of f2.db: {report:?}");
    h.assert_integrity("f2.db").await;
    // Nothing leaks: what is stored is what f2.db's one kept version holds.
    let summary = h.summary().await;
    assert_eq!(sectors(&summary).0, fresh_push_sectors(&h, "f2.db").await);
}

pub(crate) async fn a_family_with_forks_it_did_not_record_keeps_its_sectors(h: Harness) {
    churned(&h, "src.db", 3).await;
    // A fork made before families were recorded marked the state alone.
    let legacy = GcState {
        forked: true,
        ..GcState::default()
    };
    let meta = Meta {
        version: 1,
        body: legacy.encode(),
    };
    Backend::put_meta(&*h.backend, MetaKind::Gc, &name("src.db"), None, meta)
        .await
        .unwrap();
    fork(&*h.backend, &name("src.db"), None, &name("dst.db"))
        .await
        .unwrap();
    h.sql_ok("src.db", "delete from t where id <= 150").await;
    h.sql_ok("dst.db", "delete from t where id > 150").await;
    let (src, dst) = (checksum(&h, "src.db").await, checksum(&h, "dst.db").await);
    for db in ["src.db", "dst.db"] {
        let report = gc(&*h.backend, db).await;
        assert!(report.forked, "{report:?}");
        assert_eq!(report.sectors_deleted, 0, "{report:?}");
    }
    assert_eq!(checksum(&h, "src.db").await, src);
    assert_eq!(checksum(&h, "dst.db").await, dst);
}

pub(crate) async fn a_run_stopped_by_its_budget_loses_nothing_and_the_next_finishes(h: Harness) {
    churned(&h, "b.db", 30).await;
    let rows = checksum(&h, "b.db").await;
    let mut runs = 0;
    loop {
        let options = GcOptions {
            write_units_max: Some(1),
            keep_from: None,
            ..now()
        };
        let report = collect_garbage(&*h.backend, &name("b.db"), options)
            .await
            .unwrap();
        runs += 1;
        assert_eq!(checksum(&h, "b.db").await, rows, "after run {runs}");
        if !report.stopped_at_budget {
            break;
        }
        assert!(runs < 100, "budgeted runs make progress");
    }
    assert!(
        runs > 5,
        "a budget of 1 write unit stops each run early: {runs}"
    );
    let (items, _) = sectors(&h.summary().await);
    assert_eq!(items, fresh_push_sectors(&h, "b.db").await);
    h.assert_integrity("b.db").await;
}

/// A `gc` run killed after its deletes, before it deleted the retired
/// versions' history items.
struct KilledBeforeHistoryDeletes {
    inner: Arc<dyn Backend>,
}

#[async_trait]
impl Layer for KilledBeforeHistoryDeletes {
    type Inner = dyn Backend;

    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    async fn delete_root_versions(
        &self,
        _name: &DbName,
        _versions: &[u64],
    ) -> Result<(), BackendError> {
        Err(BackendError::Unavailable("killed".into()))
    }
}

/// Issue 39 (the simulator's seed 500854): a fork listed itself in its
/// family, then `gc` retired the version it was to copy and deleted what
/// only that version held (a run killed before deleting the history item,
/// which stayed), and the fork's mark on its source was refused. Once a
/// later fork marked the source as forked, every run took the refused
/// fork for one still to write its root and checked keys against the
/// retired version: "a manifest chunk of kept version … is missing". The
/// version was retired, nothing kept lost anything: gc judged it kept.
pub(crate) async fn a_fork_refused_after_listing_itself_does_not_make_gc_keep_its_retired_source(
    h: Harness,
) {
    churned(&h, "src.db", 3).await;
    let (_, source) = read_root(&*h.backend, &name("src.db")).await.unwrap();
    let listed = ForkSource {
        name: name("src.db"),
        version: source.version,
        fork_version: 1,
    };
    donut_store::gc::register_fork(&*h.backend, source.db_id, listed, &name("refused.db"))
        .await
        .unwrap();
    h.sql_ok(
        "src.db",
        "update t set v = randomblob(2000) where id <= 150",
    )
    .await;
    let killed: Arc<dyn Backend> = Arc::new(KilledBeforeHistoryDeletes {
        inner: h.backend.clone(),
    });
    let run = collect_garbage(&*killed, &name("src.db"), now()).await;
    assert!(run.is_err(), "killed before its history deletes: {run:?}");
    let mark = donut_store::gc::mark_forked(
        &*h.backend,
        &name("src.db"),
        Some(source.version),
        source.db_id,
    )
    .await;
    let err = mark.expect_err("the fork's source version is retired");
    assert!(err.to_string().contains("no longer kept"), "{err}");
    fork(&*h.backend, &name("src.db"), None, &name("dst.db"))
        .await
        .unwrap();
    h.sql_ok("src.db", "update t set v = randomblob(2000) where id > 150")
        .await;
    let (src, dst) = (checksum(&h, "src.db").await, checksum(&h, "dst.db").await);
    // (What the last update dropped, dst.db holds: nothing to delete.)
    collect_garbage(&*h.backend, &name("src.db"), now())
        .await
        .expect("gc judges the refused fork's source version retired");
    assert_eq!(checksum(&h, "src.db").await, src);
    assert_eq!(checksum(&h, "dst.db").await, dst);
    h.assert_integrity("src.db").await;
    h.assert_integrity("dst.db").await;
}

backend_tests!(
    a_fork_stalled_while_gc_retires_its_source_never_writes_a_root_gc_emptied,
    a_restore_stalled_while_gc_retires_its_source_never_writes_a_root_gc_emptied,
    marks_of_landed_restores_go_once_gc_keeps_their_versions,
    marks_of_restores_killed_before_their_root_give_way_to_new_ones,
    a_fork_killed_before_its_root_is_abandoned_and_its_family_collects,
    a_fork_refused_after_listing_itself_does_not_make_gc_keep_its_retired_source,
    gc_brings_updates_back_to_the_size_of_a_fresh_push,
    rm_then_gc_leaves_nothing_of_the_database,
    a_restore_survives_gc_and_can_be_undone,
    forks_stay_whole_and_gc_collects_what_no_member_holds,
    a_removed_fork_in_a_chain_still_protects_its_source,
    a_family_with_forks_it_did_not_record_keeps_its_sectors,
    a_run_stopped_by_its_budget_loses_nothing_and_the_next_finishes,
    a_refused_large_commit_leaves_nothing_after_gc,
    a_spilled_transaction_rolled_back_leaves_nothing_after_gc,
    pages_spilled_then_written_again_are_collected_after_their_commit,
);

fn intents(summary: &StoredSummary) -> u64 {
    let kind = summary.by_kind.get(&ItemKind::Intent).copied();
    kind.unwrap_or_default().items
}

/// After `gc`: exactly the current version's sectors, no intent left, the
/// rows as they were and the database whole.
async fn assert_collected_to_a_fresh_push(h: &Harness, db: &str, rows: &str) {
    let after = h.summary().await;
    assert_eq!(
        sectors(&after).0,
        fresh_push_sectors(h, db).await,
        "{:?}",
        after.by_kind
    );
    assert_eq!(intents(&after), 0, "{:?}", after.by_kind);
    assert_eq!(checksum(h, db).await, rows);
    h.assert_integrity(db).await;
}

/// Inserts 400 rows of 2,000 random bytes (~200 pages: more than one
/// request carries on DynamoDB).
const LARGE_INSERT: &str = "with recursive c(x) as (select 1 union all select x + 1 from c where x < 400) \
     insert into t(v) select randomblob(2000) from c";

/// A large commit whose sectors are stored and whose root swap is then
/// refused (another writer won the race): its sectors are garbage, found
/// through its intent once the next commit settled its fate.
pub(crate) async fn a_refused_large_commit_leaves_nothing_after_gc(mut h: Harness) {
    churned(&h, "x.db", 2).await;
    gc(&*h.backend, "x.db").await;
    let (items_before, _) = sectors(&h.summary().await);
    let plain = h.backend.clone();
    h.backend = Arc::new(RefusingOneSwap {
        inner: plain.clone(),
        refused: AtomicBool::new(false),
    });
    // SQLite is told "busy" and donut-sql runs the statement again: the
    // second attempt commits, the first attempt's sectors are garbage.
    h.sql_ok("x.db", LARGE_INSERT).await;
    h.backend = plain;
    let stored = h.summary().await;
    assert!(
        sectors(&stored).0 > items_before + 300,
        "{:?}",
        stored.by_kind
    );
    assert!(intents(&stored) >= 2, "{:?}", stored.by_kind);
    assert_eq!(h.value("x.db", "select count(*) from t").await, "700");
    let rows = checksum(&h, "x.db").await;
    let report = gc(&*h.backend, "x.db").await;
    assert!(report.intents_collected >= 2, "{report:?}");
    assert!(report.sectors_deleted > 100, "{report:?}");
    assert_collected_to_a_fresh_push(&h, "x.db", &rows).await;
}

/// A transaction that stores its pages before its commit (spills: here
/// past a 64 KiB budget, SQLite's own cache kept to 10 pages so it writes
/// them out as it goes) and then rolls back leaves them to `gc`.
pub(crate) async fn a_spilled_transaction_rolled_back_leaves_nothing_after_gc(h: Harness) {
    churned(&h, "sp.db", 2).await;
    let rows = checksum(&h, "sp.db").await;
    h.sql_ok(
        "sp.db",
        &format!(
            "pragma cache_size = 10; pragma donut_spill_bytes = 65536; \
             begin; {LARGE_INSERT}; rollback;"
        ),
    )
    .await;
    let stored = h.summary().await;
    assert!(intents(&stored) >= 2, "it spilled: {:?}", stored.by_kind);
    assert_eq!(checksum(&h, "sp.db").await, rows);
    h.sql_ok("sp.db", "update t set v = randomblob(2000) where id = 2")
        .await;
    let rows = checksum(&h, "sp.db").await;
    let report = gc(&*h.backend, "sp.db").await;
    assert!(report.intents_collected >= 2, "{report:?}");
    assert_collected_to_a_fresh_push(&h, "sp.db", &rows).await;
}

/// A transaction that spills pages and then changes them again commits
/// other copies: the spilled ones are in no root, and go once the commit
/// is collected, while everything its root holds stays.
pub(crate) async fn pages_spilled_then_written_again_are_collected_after_their_commit(h: Harness) {
    churned(&h, "sw.db", 2).await;
    gc(&*h.backend, "sw.db").await;
    h.sql_ok(
        "sw.db",
        &format!(
            "pragma cache_size = 10; pragma donut_spill_bytes = 65536; begin; {LARGE_INSERT}; \
             update t set v = randomblob(2000) where id > 300; commit;"
        ),
    )
    .await;
    let rows = checksum(&h, "sw.db").await;
    assert!(intents(&h.summary().await) >= 2);
    let report = gc(&*h.backend, "sw.db").await;
    assert!(report.intents_collected >= 2, "{report:?}");
    // The update's 100 rows of 2,000 bytes: ~50 pages spilled, then
    // written again.
    assert!(
        report.sectors_deleted >= 40,
        "the spilled copies: {report:?}"
    );
    assert_collected_to_a_fresh_push(&h, "sw.db", &rows).await;
}

/// A backend that refuses its first root swap, after storing the sectors
/// that come with it as the backend would in a request of their own: a
/// two-request commit that lost its race (a large commit's pages are
/// stored by the guest's own `put-sectors` calls before it).
struct RefusingOneSwap {
    inner: Arc<dyn Backend>,
    refused: AtomicBool,
}

#[async_trait]
impl Layer for RefusingOneSwap {
    type Inner = dyn Backend;

    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        if self.refused.swap(true, Ordering::SeqCst) {
            return Backend::commit(&*self.inner, commit, meta).await;
        }
        let fenced = commit.fence.is_some();
        if !Backend::commits_in_one_request(&*self.inner, commit.sectors, fenced) {
            Backend::put_sectors(&*self.inner, commit.db, commit.sectors).await?;
        }
        Err(PutMetaError::Conflict)
    }
}

/// A backend whose `delete_sectors` fails after `left` successful calls:
/// a gc killed in the middle of its deletes.
struct FailingDeletes {
    inner: Arc<dyn Backend>,
    left: AtomicU32,
}

#[async_trait]
impl Layer for FailingDeletes {
    type Inner = dyn Backend;

    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.left.store(0, Ordering::SeqCst);
            // Half of them go, then the "process" dies.
            let half = &hashes[..hashes.len() / 2];
            Backend::delete_sectors(&*self.inner, db, half).await?;
            return Err(BackendError::Unavailable("killed".into()));
        }
        Backend::delete_sectors(&*self.inner, db, hashes).await
    }
}

/// Killed at each point of its deletes in turn, gc loses nothing, and a
/// run after the kill deletes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_killed_during_its_deletes_loses_nothing_and_the_next_run_finishes() {
    for kill_after in 0..4 {
        let h = Harness::local();
        churned(&h, "k.db", 12).await;
        let rows = checksum(&h, "k.db").await;
        let failing: Arc<dyn Backend> = Arc::new(FailingDeletes {
            inner: h.backend.clone(),
            left: AtomicU32::new(kill_after),
        });
        let killed = collect_garbage(&*failing, &name("k.db"), now()).await;
        assert!(killed.is_err(), "kill after {kill_after} calls");
        // Retired before the kill, the old versions' history items are
        // still there but no longer listed (regression: `versions` listed
        // them, and reading one said "no longer kept"; the simulator's
        // concurrent gc found it).
        let listed = list_versions(&*h.backend, &name("k.db"), usize::MAX)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "kill after {kill_after}: {listed:?}");
        assert_eq!(checksum(&h, "k.db").await, rows);
        h.assert_integrity("k.db").await;
        gc(&*h.backend, "k.db").await;
        assert_eq!(checksum(&h, "k.db").await, rows);
        let (items, _) = sectors(&h.summary().await);
        assert_eq!(
            items,
            fresh_push_sectors(&h, "k.db").await,
            "kill after {kill_after}"
        );
    }
}

/// An UPDATE that writes rows back unchanged stores no page again, and a
/// statement that fails and rolls back commits nothing: salted keys
/// differ for the same bytes, so the VFS compares bytes (regression: the
/// first salted build stored such pages and committed a copy of the
/// snapshot after a rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_written_back_unchanged_are_not_stored_again() {
    let h = Harness::memory();
    churned(&h, "same.db", 0).await;
    let (items, _) = sectors(&h.summary().await);
    let version = h.version("same.db").await;
    h.sql_ok("same.db", "update t set v = v").await;
    let (after, _) = sectors(&h.summary().await);
    assert!(
        after - items <= 2,
        "{} sectors stored for an update that changed nothing but page 1",
        after - items
    );
    assert!(h.version("same.db").await <= version + 1);
}

/// A backend on which a second `gc` run of `db` runs to the end in the
/// middle of the first's deletes: the first is overtaken.
struct Overtaken {
    inner: Arc<dyn Backend>,
    db: DbName,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Layer for Overtaken {
    type Inner = dyn Backend;

    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        if !self.fired.swap(true, Ordering::SeqCst) {
            let other = collect_garbage(&*self.inner, &self.db, now()).await;
            assert!(other.is_ok(), "{other:?}");
        }
        Backend::delete_sectors(&*self.inner, db, hashes).await
    }
}

/// Two runs over one database at once (two hosts, `serve` and the CLI):
/// the one overtaken finds versions and chunks it needs collected by the
/// other; it starts over instead of failing, and nothing live is lost
/// (regression: the simulator's two administrators found "version 3 is
/// missing though gc keeps it").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_run_overtaken_by_another_starts_over_and_loses_nothing() {
    for h in [Harness::memory(), Harness::local()] {
        churned(&h, "two.db", 30).await;
        let rows = checksum(&h, "two.db").await;
        let overtaken: Arc<dyn Backend> = Arc::new(Overtaken {
            inner: h.backend.clone(),
            db: name("two.db"),
            fired: Default::default(),
        });
        let report = collect_garbage(&*overtaken, &name("two.db"), now()).await;
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(checksum(&h, "two.db").await, rows);
        h.assert_integrity("two.db").await;
        let (items, _) = sectors(&h.summary().await);
        assert_eq!(items, fresh_push_sectors(&h, "two.db").await);
    }
}

/// A backend whose GC state writes fail after the first `left`: a run
/// killed before it records where it got to.
struct FailingStateWrites {
    inner: Arc<dyn Backend>,
    left: AtomicU32,
}

#[async_trait]
impl Layer for FailingStateWrites {
    type Inner = dyn Backend;

    fn inner(&self) -> &dyn Backend {
        &*self.inner
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), donut_host::backend::PutMetaError> {
        if kind == MetaKind::Gc && self.left.fetch_sub(1, Ordering::SeqCst) == 0 {
            self.left.store(0, Ordering::SeqCst);
            return Err(BackendError::Unavailable("killed".into()).into());
        }
        Backend::put_meta(&*self.inner, kind, name, expected, meta).await
    }
}

/// A run over hundreds of commits records how far it got as it goes: one
/// killed before its end is resumed from there, not from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gc_run_killed_before_its_end_resumes_from_its_checkpoint() {
    let h = Harness::memory();
    churned(&h, "long.db", 260).await;
    let rows = checksum(&h, "long.db").await;
    // The retirement and one checkpoint are written; the end is not.
    let failing: Arc<dyn Backend> = Arc::new(FailingStateWrites {
        inner: h.backend.clone(),
        left: AtomicU32::new(2),
    });
    let killed = collect_garbage(&*failing, &name("long.db"), now()).await;
    assert!(killed.is_err(), "{killed:?}");
    let (_, state) = donut_store::gc::read_state(&*h.backend, &name("long.db"))
        .await
        .unwrap();
    assert!(
        state.collected >= 200 && state.collected < state.oldest,
        "{state:?}"
    );
    gc(&*h.backend, "long.db").await;
    assert_eq!(checksum(&h, "long.db").await, rows);
    let (items, _) = sectors(&h.summary().await);
    assert_eq!(items, fresh_push_sectors(&h, "long.db").await);
}
