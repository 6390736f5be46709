//! Garbage collection (docs/format.md, "Garbage collection"): retires a
//! database's versions older than its retention and deletes what only
//! they referenced, at a cost that grows with the garbage.
//!
//! A run over one database: (1) the GC state item records the new oldest
//! kept version *O* first (readers then refuse older versions: "snapshot
//! expired"; `restore` and `fork` of them are refused); (2) each retired
//! commit's dropped keys come from diffing its root with its
//! predecessor's (`manifest diff`, nothing logged per commit); (3) a
//! dropped key is garbage unless the root of *O* or of a restore under
//! way holds it at its position — sound because sectors are salted
//! (format v5): a key is written by one commit at one position and never
//! written again, and each candidate's salt is read back and checked
//! before it is deleted (an unsalted, pre-v5 sector is left); (4) the
//! garbage is deleted in batches, the state advanced, and the retired
//! history items deleted. Killed at any point, the next run redoes the
//! same range from the state item: deletes are idempotent and every check
//! is against kept versions.
//!
//! Forks share sectors across names: a database id's *family* item lists
//! its members and where each fork came from, and a dropped key is also
//! checked against every member's oldest kept root, its restore marks,
//! the source of a fork not yet written, and fork sources a member may
//! still hold fresh writes of (`family_view`).
//!
//! Sectors stored before a commit point (a large commit's, a spill's, a
//! push's) are listed in intent items first (`crate::intent`); a run
//! collects the intents whose writer read a retired version
//! (`collect_intents`): what a refused or killed commit stored, and what
//! a committed one stored and then replaced.

use crate::backend::{Backend, Meta, MetaKind, PutMetaError};
use crate::db::{Stored, decode_stored};
use crate::error::StorageError;
use donut_format::salt::salt_of;
use donut_format::{
    Chunk, DbId, DbName, FAMILY_MEMBERS_MAX, FANOUT, Family, FamilyMember, ForkSource, GcState,
    Hash, Intent, LANDS_AS_UNKNOWN, MAX_DEPTH, RESTORE_MARKS_MAX, RestoreMark, Root, Tombstone,
    ZERO_HASH, family_key, hash_hex, verify,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The retention when none is given: 7 days (docs/format.md).
pub const RETAIN_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// History items read per request while walking versions.
const HISTORY_PAGE: usize = 100;
/// Sectors read (to check their salts) and deleted per call.
const SECTORS_PER_CALL: usize = 100;
/// Intent items read per request.
const INTENTS_PER_CALL: usize = 100;
/// Attempts at the GC state's compare-and-swap against concurrent
/// restores, forks and runs.
const STATE_ATTEMPTS_MAX: u32 = 8;
/// A long run records how far it got every this many commits, so a run
/// killed midway is resumed from there rather than from the start.
const CHECKPOINT_COMMITS: u64 = 200;

/// What a run may do.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Keep every version committed within this long of `now_ms` (and the
    /// one current at its start); the newest is always kept.
    pub retain_ms: u64,
    pub now_ms: u64,
    /// Stop once the deletes so far are estimated at this many write
    /// units (1 per KB of each deleted item); the next run goes on.
    pub write_units_max: Option<u64>,
    /// Retire no version from this one on, whatever the retention: a
    /// caller that knows its readers (a server's open sessions, the
    /// simulator's clients) keeps the versions they may be reading.
    pub keep_from: Option<u64>,
}

/// What a run did to one database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Versions newly retired.
    pub versions_retired: u64,
    /// The oldest kept version after the run.
    pub oldest_kept: u64,
    pub sectors_deleted: u64,
    pub sector_bytes_deleted: u64,
    /// Dropped sectors written before format v5 (unsalted): left.
    pub sectors_left_unsalted: u64,
    /// Garbage left because the database shares sectors with forks made
    /// before families were recorded (or its family changed all through
    /// the run).
    pub forked: bool,
    /// Write units the deletes were estimated at (1 per KB of each item):
    /// what `write_units_max` is checked against.
    pub write_units: u64,
    /// The write budget ran out: run again to go on.
    pub stopped_at_budget: bool,
    /// The database was removed long enough ago: nothing of it is left.
    pub removed: bool,
    /// Intent items dealt with and deleted (docs/format.md, "Intents").
    pub intents_collected: u64,
}

/// Collects the garbage of `name`. Runs over one database may overlap
/// (two hosts, `serve` and the CLI): one whose state another run moved
/// (a version or chunk it needs already collected by the other) starts
/// over from the state as it stands.
pub async fn collect(
    backend: &dyn Backend,
    name: &DbName,
    options: GcOptions,
) -> Result<GcReport, StorageError> {
    let mut report = GcReport::default();
    for _ in 0..STATE_ATTEMPTS_MAX {
        let (_, before) = read_state(backend, name).await?;
        match collect_once(backend, name, options, &mut report).await {
            // A restore, a fork or another run moved the state.
            Err(StorageError::Conflict) => continue,
            Err(e @ StorageError::Corrupt(_)) => {
                let (_, now) = read_state(backend, name).await?;
                let overtaken = now.collected > before.collected || now.oldest > before.oldest;
                if !overtaken {
                    return Err(e);
                }
            }
            done => return done.map(|()| report),
        }
    }
    Err(StorageError::Busy(format!(
        "the gc state of {name:?} kept changing under this run: run gc again"
    )))
}

/// One attempt of [`collect`]; deletes are added to `report`.
async fn collect_once(
    backend: &dyn Backend,
    name: &DbName,
    options: GcOptions,
    report: &mut GcReport,
) -> Result<(), StorageError> {
    let Some(head) = backend.get_meta(MetaKind::Root, name).await? else {
        return Err(StorageError::NotFound(format!(
            "no database {name:?} in the {}",
            backend.describe()
        )));
    };
    let head_version = head.version;
    let head_ms = version_time(name, &head)?;
    let horizon_ms = options.now_ms.saturating_sub(options.retain_ms);
    let removed = Tombstone::is_tombstone(&head.body);
    let (state_meta, mut state) = read_state(backend, name).await?;
    if state.oldest == 0 {
        // No run yet: the oldest kept version is the lowest stored.
        let lowest = lowest_version(backend, name, head_version).await?;
        state.oldest = lowest;
        state.collected = lowest;
    }
    let target = if head_ms <= horizon_ms {
        head_version
    } else {
        version_at(backend, name, head_version, horizon_ms, state.oldest).await?
    };
    let target = options.keep_from.map_or(target, |keep| target.min(keep));
    let oldest = target.max(state.oldest);
    report.versions_retired = oldest - state.oldest;
    report.oldest_kept = oldest;
    // (1) Retire first: from now on nothing new may start from a version
    // below `oldest`; marks no restore or fork needs go.
    state.oldest = oldest;
    prune_marks(backend, name, &mut state).await?;
    let (mut state_meta, mut state) = write_state(backend, name, state_meta, &state).await?;
    // Families are read after the retirement above: see `family_view`.
    let mut families = Families::new(backend, name, state.clone());
    // What refused or killed commits stored, and pages their own commits
    // replaced: intents whose writer read a retired version — below the
    // oldest version this run retired, not the state as it may stand
    // later (another run may retire more meanwhile; this run's anchors
    // must be at least the version a writer committed as). Before the
    // diffs, so a committed writer's root is still whole (`intent_garbage`).
    let retired_below = families.state.oldest;
    collect_intents(&mut families, options, report, retired_below).await?;
    if state.collected < state.oldest && !report.stopped_at_budget {
        let mut stored = (state_meta, state);
        let done = collect_range(&mut families, options, report, &mut stored).await?;
        (state_meta, state) = stored;
        state.collected = done;
        (state_meta, state) = write_state_retrying(backend, name, state_meta, state).await?;
    }
    // (4) The retired history items (but restore marks' sources and what
    // forks under way copy).
    delete_history(&mut families, &state).await?;
    if removed
        && state.collected == head_version
        && head_ms <= horizon_ms
        && !report.stopped_at_budget
    {
        // Every intent of the removed database (no writer of it commits):
        // those whose bound is below its tombstone. One at the tombstone
        // or above is a database's created again over it meanwhile (the
        // head was read at the run's start; issue 31, item 2).
        collect_intents(&mut families, options, report, head_version).await?;
        if !report.stopped_at_budget {
            report.removed =
                remove_what_is_left(backend, name, head_version, state_meta, &state).await?;
        }
    }
    Ok(())
}

/// Deletes the garbage of commits `state.collected + 1 ..= state.oldest`;
/// returns the last commit whose garbage is all deleted. Every
/// `CHECKPOINT_COMMITS` commits it advances `collected` in `stored` (the
/// GC state as last written).
async fn collect_range(
    families: &mut Families<'_>,
    options: GcOptions,
    report: &mut GcReport,
    stored: &mut (Meta, GcState),
) -> Result<u64, StorageError> {
    let (backend, name, state) = (families.backend, families.name, families.state.clone());
    let state = &state;
    let mut chunks = Chunks::new(backend);
    let anchors = own_anchors(backend, name, state).await?;
    let mut units: u64 = 0;
    let mut previous = backend.get_root_version(name, state.collected).await?;
    for commit in state.collected + 1..=state.oldest {
        let current = required_version(backend, name, commit).await?;
        let before = previous
            .as_ref()
            .map(|m| live_root(name, m))
            .transpose()?
            .flatten();
        previous = Some(current.clone());
        let Some(before) = before else {
            continue; // a creation, or a commit whose predecessor is not kept
        };
        let after = live_root(name, &current)?;
        let in_commit = |e: StorageError| match e {
            StorageError::Corrupt(m) => StorageError::Corrupt(format!(
                "{m} (gc comparing versions {} and {commit} of {name:?})",
                commit - 1
            )),
            e => e,
        };
        let dropped = dropped_keys(&mut chunks, &before, after.as_ref())
            .await
            .map_err(in_commit)?;
        let family = match families.view(before.db_id).await? {
            FamilyView::Unlisted => {
                report.forked = true;
                continue; // shared with databases nobody listed: left
            }
            FamilyView::Alone => &[][..],
            FamilyView::Listed { anchors, .. } => &anchors[..],
        };
        let mut garbage = Vec::new();
        for (key, position) in dropped {
            let mut held = false;
            for roots in [&anchors[..], family] {
                held = held
                    || held_by_any(&mut chunks, roots, before.db_id, &key, position)
                        .await
                        .map_err(in_commit)?;
            }
            if !held {
                garbage.push((key, position));
            }
        }
        let spent = delete_garbage(backend, before.db_id, &garbage, None, report).await?;
        units += spent;
        report.write_units += spent;
        if (commit - state.collected).is_multiple_of(CHECKPOINT_COMMITS) && commit < state.oldest {
            let (meta, mut now) = stored.clone();
            now.collected = now.collected.max(commit).min(now.oldest);
            *stored = write_state_retrying(backend, name, meta, now).await?;
        }
        if options.write_units_max.is_some_and(|max| units >= max) && commit < state.oldest {
            report.stopped_at_budget = true;
            return Ok(commit);
        }
    }
    Ok(state.oldest)
}

/// The roots of this database a dropped key must be checked against: the
/// oldest kept version's and the restore marks' sources.
async fn own_anchors(
    backend: &dyn Backend,
    name: &DbName,
    state: &GcState,
) -> Result<Vec<Root>, StorageError> {
    let mut anchors: Vec<Root> = Vec::new();
    if let Some(root) = live_root(name, &required_version(backend, name, state.oldest).await?)? {
        anchors.push(root);
    }
    for mark in &state.restores {
        if let Some(meta) = backend.get_root_version(name, mark.source).await?
            && let Some(root) = live_root(name, &meta)?
        {
            anchors.push(root);
        }
    }
    Ok(anchors)
}

/// Reads each candidate back, checks it is the salted sector of that
/// position (and, given `txn_id`, written by that transaction), and
/// deletes those that are, a level at a time, lowest first (see
/// `dropped_keys`); returns the write units spent (estimated: 1 per KB of
/// each deleted item).
async fn delete_garbage(
    backend: &dyn Backend,
    db: DbId,
    garbage: &[(Hash, Position)],
    txn_id: Option<u64>,
    report: &mut GcReport,
) -> Result<u64, StorageError> {
    let mut units = 0;
    let batches = garbage
        .chunk_by(|a, b| a.1.level == b.1.level)
        .flat_map(|level| level.chunks(SECTORS_PER_CALL));
    for batch in batches {
        let keys: Vec<Hash> = batch.iter().map(|g| g.0).collect();
        let found = backend.get_sectors(db, &keys).await?;
        let mut doomed = Vec::new();
        for ((key, position), bytes) in batch.iter().zip(found) {
            let Some(bytes) = bytes else {
                continue; // deleted by an earlier run
            };
            verify(key, &bytes)
                .map_err(|e| StorageError::Corrupt(format!("sector {}: {e}", hash_hex(key))))?;
            match salt_of(&bytes) {
                Ok(Some(salt))
                    if salt.level == position.level
                        && salt.slot == position.slot
                        && txn_id.is_none_or(|txn| txn == salt.txn_id) =>
                {
                    doomed.push(*key);
                    report.sector_bytes_deleted += bytes.len() as u64;
                    units += (bytes.len() as u64).div_ceil(1024).max(1);
                }
                _ => report.sectors_left_unsalted += 1,
            }
        }
        backend.delete_sectors(db, &doomed).await?;
        report.sectors_deleted += doomed.len() as u64;
    }
    Ok(units)
}

/// Collects what the intents of the run's database with a bound below
/// `bound_below` list (docs/format.md, "Intents"), and deletes the intents.
/// Their writers read a version below it: retired (or the database is
/// removed), so a writer still running reads an expired snapshot, and
/// each transaction's fate is known — see [`intent_garbage`].
async fn collect_intents(
    families: &mut Families<'_>,
    options: GcOptions,
    report: &mut GcReport,
    bound_below: u64,
) -> Result<(), StorageError> {
    let (backend, name) = (families.backend, families.name);
    let mut chunks = Chunks::new(backend);
    let mut anchors: Option<Vec<Root>> = None;
    loop {
        let page = backend
            .list_intents(name, bound_below, INTENTS_PER_CALL)
            .await?;
        let mut done = Vec::with_capacity(page.len());
        for (key, body) in &page {
            let intent = Intent::decode(body).map_err(|e| {
                StorageError::Corrupt(format!(
                    "intent {}-{:08x} of {name:?}: {e}",
                    key.bound, key.id
                ))
            })?;
            let garbage = intent_garbage(families, &mut chunks, &mut anchors, &intent, report)
                .await
                .map_err(|e| match e {
                    StorageError::Corrupt(m) => StorageError::Corrupt(format!(
                        "{m} (gc collecting the intent of transaction {:016x} of {name:?})",
                        intent.txn_id
                    )),
                    e => e,
                })?;
            let txn_id = Some(intent.txn_id);
            let spent = delete_garbage(backend, intent.db_id, &garbage, txn_id, report).await?;
            report.write_units += spent + (body.len() as u64).div_ceil(1024);
            done.push(*key);
            if options
                .write_units_max
                .is_some_and(|max| report.write_units >= max)
            {
                report.stopped_at_budget = true;
                break;
            }
        }
        backend.delete_intents(name, &done).await?;
        report.intents_collected += done.len() as u64;
        if report.stopped_at_budget || page.len() < INTENTS_PER_CALL {
            return Ok(());
        }
    }
}

/// What of an intent's sectors no kept version can hold. Its transaction
/// committed as version `bound + 1` or never (docs/format.md, "Intents"):
/// - that version is the transaction's: what its root does not hold at
///   the sector's position it stored and then replaced (a spilled page
///   written again); the rest is its root's, for the diff to collect;
/// - that version is another's, or a tombstone: everything — a sector
///   salted by a transaction that never committed is in no root;
/// - that version is the transaction's but a commit after it is collected
///   (its chunks may be gone), or its history is deleted, or it belongs to
///   another database id: every sector no anchor holds, as for a dropped
///   key (its commit, if any, is retired).
async fn intent_garbage(
    families: &mut Families<'_>,
    chunks: &mut Chunks<'_>,
    anchors: &mut Option<Vec<Root>>,
    intent: &Intent,
    report: &mut GcReport,
) -> Result<Vec<(Hash, Position)>, StorageError> {
    let (backend, name) = (families.backend, families.name);
    let sectors = intent.sectors.iter().map(|s| {
        let position = Position {
            level: s.level,
            slot: s.slot,
        };
        (s.key, position)
    });
    let fate = match backend
        .get_root_version(name, intent.bound.saturating_add(1))
        .await?
    {
        Some(meta) => Some(decode_stored(name, meta)?),
        None => None,
    };
    // A root is whole while no commit after it is collected (from
    // `collected + 1` on); one before may have lost chunks: its keys are
    // then checked against the anchors, as a retired commit's are.
    let whole = |root: &Root| root.version >= families.state.collected;
    let holders: Vec<Root> = match fate {
        Some(Stored::Live(_, root))
            if root.db_id == intent.db_id && root.txn_id != intent.txn_id =>
        {
            Vec::new()
        }
        Some(Stored::Live(_, root)) if root.db_id == intent.db_id && whole(&root) => vec![root],
        Some(Stored::Removed(_)) => Vec::new(),
        _ => {
            if anchors.is_none() {
                *anchors = Some(own_anchors(backend, name, &families.state).await?);
            }
            let mut holders = anchors.clone().unwrap_or_default();
            match families.view(intent.db_id).await? {
                FamilyView::Unlisted => {
                    report.forked = true;
                    return Ok(Vec::new());
                }
                FamilyView::Alone => {}
                FamilyView::Listed { anchors, .. } => holders.extend(anchors.iter().cloned()),
            }
            holders
        }
    };
    let mut garbage = Vec::new();
    for (key, position) in sectors {
        if !held_by_any(chunks, &holders, intent.db_id, &key, position).await? {
            garbage.push((key, position));
        }
    }
    // Lowest levels first, as `delete_garbage` deletes them.
    garbage.sort_by_key(|(_, p)| p.level);
    Ok(garbage)
}

/// Deletes the history items below `state.collected` (the retired
/// versions whose garbage is deleted; the rest are still to be diffed),
/// but those of restore marks' sources.
async fn delete_history(families: &mut Families<'_>, state: &GcState) -> Result<(), StorageError> {
    let (backend, name) = (families.backend, families.name);
    let mut below = state.collected;
    loop {
        let page = backend
            .root_history(name, Some(below), HISTORY_PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        below = last.version;
        let mut versions = Vec::with_capacity(page.len());
        for meta in &page {
            if state
                .restores
                .iter()
                .any(|mark| mark.source == meta.version)
            {
                continue;
            }
            if let Some(root) = live_root(name, meta)?
                && families.view(root.db_id).await?.keeps(meta.version)
            {
                continue;
            }
            versions.push(meta.version);
        }
        backend.delete_root_versions(name, &versions).await?;
        if page.len() < HISTORY_PAGE {
            return Ok(());
        }
    }
}

/// The last step for a database removed longer ago than the retention:
/// its GC state, lock and tombstone (with its catalog entry) go. False
/// if it was created again meanwhile.
async fn remove_what_is_left(
    backend: &dyn Backend,
    name: &DbName,
    tombstone_version: u64,
    state_meta: Meta,
    state: &GcState,
) -> Result<bool, StorageError> {
    // First the family learns it holds nothing: a member listed but gone
    // would look like a fork not written yet to other members' runs.
    if let Some(db) = state.family {
        let (meta, family) = update_family(backend, db, |family| {
            for member in &mut family.members {
                let before = member
                    .source
                    .as_ref()
                    .is_none_or(|s| s.fork_version <= tombstone_version);
                if member.name == *name && before {
                    member.removed = true;
                }
            }
            Ok(())
        })
        .await?;
        // The last member gone, so is the family (a fork listing itself
        // meanwhile makes this delete fail, and the item stays).
        if family.members.iter().all(|m| m.removed) {
            ignore_conflict(
                backend
                    .delete_meta(MetaKind::Family, &family_key(db), meta.version)
                    .await,
            )?;
        }
    }
    if let Some(lock) = backend.get_meta(MetaKind::Lock, name).await? {
        ignore_conflict(
            backend
                .delete_meta(MetaKind::Lock, name, lock.version)
                .await,
        )?;
    }
    match backend
        .delete_meta(MetaKind::Root, name, tombstone_version)
        .await
    {
        Ok(()) => {}
        Err(PutMetaError::Conflict) => return Ok(false),
        Err(e) => return Err(put_error(e)),
    }
    ignore_conflict(
        backend
            .delete_meta(MetaKind::Gc, name, state_meta.version)
            .await,
    )?;
    Ok(true)
}

fn ignore_conflict(result: Result<(), PutMetaError>) -> Result<(), StorageError> {
    match result {
        Ok(()) | Err(PutMetaError::Conflict) => Ok(()),
        Err(e) => Err(put_error(e)),
    }
}

fn put_error(e: PutMetaError) -> StorageError {
    match e {
        PutMetaError::Conflict | PutMetaError::Fenced => StorageError::Conflict,
        PutMetaError::Backend(e) => e.into(),
    }
}

/// The GC state of `name` as stored (`None`: never written) and decoded.
pub async fn read_state(
    backend: &dyn Backend,
    name: &DbName,
) -> Result<(Option<Meta>, GcState), StorageError> {
    match backend.get_meta(MetaKind::Gc, name).await? {
        None => Ok((None, GcState::default())),
        Some(meta) => {
            let state = GcState::decode(&meta.body)
                .map_err(|e| StorageError::Corrupt(format!("gc state of {name:?}: {e}")))?;
            Ok((Some(meta), state))
        }
    }
}

/// Writes `state` over `stored` (compare-and-swap); `Conflict` if it moved.
async fn write_state(
    backend: &dyn Backend,
    name: &DbName,
    stored: Option<Meta>,
    state: &GcState,
) -> Result<(Meta, GcState), StorageError> {
    let expected = stored.as_ref().map(|m| m.version);
    let meta = Meta {
        version: expected.unwrap_or(0) + 1,
        body: state.encode(),
    };
    match backend
        .put_meta(MetaKind::Gc, name, expected, meta.clone())
        .await
    {
        Ok(()) => Ok((meta, state.clone())),
        Err(e) => Err(put_error(e)),
    }
}

/// Advances `collected` (only ever up), merging with restores and forks
/// that changed the state meanwhile.
async fn write_state_retrying(
    backend: &dyn Backend,
    name: &DbName,
    mut stored: Meta,
    mut state: GcState,
) -> Result<(Meta, GcState), StorageError> {
    let collected = state.collected;
    for _ in 0..STATE_ATTEMPTS_MAX {
        match write_state(backend, name, Some(stored), &state).await {
            Err(StorageError::Conflict) => {
                let (now_stored, now) = read_state(backend, name).await?;
                let Some(now_stored) = now_stored else {
                    return Err(StorageError::Conflict);
                };
                stored = now_stored;
                state = GcState {
                    collected: collected.max(now.collected).min(now.oldest),
                    ..now
                };
            }
            written => return written,
        }
    }
    Err(StorageError::Busy(format!(
        "the gc state of {name:?} kept changing under this run"
    )))
}

/// Records a restore of `name` from `mark.source` before it is written
/// (as version `mark.lands_as`): refused if `gc` retired the source (the
/// mark and the check are one compare-and-swap, so a run either sees the
/// mark or the restore sees the run's new oldest version). Its root is
/// then written by [`land`].
pub async fn mark_restore(
    backend: &dyn Backend,
    name: &DbName,
    mark: RestoreMark,
) -> Result<(), StorageError> {
    assert!(
        mark.lands_as > mark.source,
        "a restore lands above its source"
    );
    add_mark(backend, name, Some(mark), None).await
}

/// Records that `name` has forks (or is one) in family `db` before a fork
/// is written. Given `version`, the fork's source version: refused if `gc`
/// retired it, else marked as a restore's source is (in the same
/// compare-and-swap), so runs keep what it references while the fork may
/// still write its root — which [`land`] writes only while the mark
/// stands, removing it in the same step. A fork listed in the family
/// whose source version is retired and unmarked never writes its root
/// (`Families::members_roots`). Returns the mark written (given
/// `version`), for [`land`].
pub async fn mark_forked(
    backend: &dyn Backend,
    name: &DbName,
    version: Option<u64>,
    db: DbId,
) -> Result<Option<RestoreMark>, StorageError> {
    let mark = version.map(|source| RestoreMark {
        source,
        txn_id: crate::random_u64(),
        lands_as: 0,
    });
    add_mark(backend, name, mark, Some(db)).await?;
    Ok(mark)
}

/// Adds `mark` to the GC state of `name` (and, given `family`, records
/// that it shares sectors with that family), checking its source is
/// kept. With `RESTORE_MARKS_MAX` marks standing, the oldest of those
/// whose restore or fork has not landed is dropped for it (that one's
/// root write is then refused: [`land`]); if every one landed, it is
/// refused.
async fn add_mark(
    backend: &dyn Backend,
    name: &DbName,
    mark: Option<RestoreMark>,
    family: Option<DbId>,
) -> Result<(), StorageError> {
    for _ in 0..STATE_ATTEMPTS_MAX {
        let (stored, mut state) = read_state(backend, name).await?;
        if let Some(mark) = mark {
            check_kept(name, &state, mark.source)?;
            if state.restores.len() >= RESTORE_MARKS_MAX {
                // The head after the state: a landing after this read
                // changes the state, and this compare-and-swap fails.
                let head = head_version(backend, name).await?;
                let pending = state.restores.iter().position(|m| !m.landed(head));
                let Some(pending) = pending else {
                    return Err(marks_full(name, &state));
                };
                state.restores.remove(pending);
            }
            state.restores.push(mark);
        }
        if let Some(db) = family {
            state.forked = true;
            state.family = Some(db);
        }
        match write_state(backend, name, stored, &state).await {
            Err(StorageError::Conflict) => continue,
            written => return written.map(|_| ()),
        }
    }
    Err(StorageError::Busy(format!(
        "the gc state of {name:?} kept changing"
    )))
}

/// The root a restore or fork writes (see [`land`]): `name`'s root goes
/// from version `expected`, holding what `replaces` says, to `root`.
#[derive(Debug, Clone, Copy)]
pub struct Landing<'a> {
    pub name: &'a DbName,
    pub expected: Option<u64>,
    pub replaces: crate::backend::Replaces,
    /// Does the swap take the writer's lease (an exclusive writer's root)?
    pub lease_required: bool,
    pub root: &'a Root,
}

/// Writes the root of a restore or fork whose `mark` stands in the GC
/// state of `marked` (the restored database, or the fork's source): the
/// root of `name` goes from `expected` to `root` in one atomic step with
/// that state's compare-and-swap, so it lands only while the mark stands
/// — `gc` drops a mark whose source it retired (or that a fuller state
/// gave up) and the root is then refused, whatever any clock says. A
/// fork's mark goes in the same step (the fork is a member now and holds
/// what it copied); a restore's stays until `gc` keeps its root.
/// `Conflict` if the root moved or holds another database than
/// `replaces` says.
pub async fn land(
    backend: &dyn Backend,
    marked: &DbName,
    mark: RestoreMark,
    landing: Landing<'_>,
) -> Result<(), StorageError> {
    let Landing {
        name,
        expected,
        replaces,
        lease_required,
        root,
    } = landing;
    for _ in 0..STATE_ATTEMPTS_MAX {
        let (stored, mut state) = read_state(backend, marked).await?;
        let Some(stored) = stored.filter(|_| state.restores.contains(&mark)) else {
            return Err(mark_gone(marked, &state, mark));
        };
        if mark.lands_as == 0 {
            state.restores.retain(|m| *m != mark);
        }
        let meta = Meta {
            version: stored.version + 1,
            body: state.encode(),
        };
        let swap = crate::backend::StateSwap {
            name: marked,
            expected: stored.version,
            meta: &meta,
        };
        let landed = crate::db::swap_root_with_state(
            backend,
            name,
            expected,
            replaces,
            lease_required,
            root,
            swap,
        )
        .await;
        match landed {
            Err(StorageError::Conflict) => {
                let head = backend.get_meta(MetaKind::Root, name).await?;
                match head {
                    // A lost answer whose first attempt applied.
                    Some(head) if head.body == root.encode() => return Ok(()),
                    Some(head) if Some(head.version) != expected || !replaces.holds(&head.body) => {
                        return Err(StorageError::Conflict);
                    }
                    None if expected.is_some() => return Err(StorageError::Conflict),
                    _ => continue, // the state moved: is the mark still there?
                }
            }
            landed => return landed,
        }
    }
    Err(StorageError::Busy(format!(
        "the gc state of {marked:?} kept changing"
    )))
}

/// Why a restore's or fork's mark is gone before its root was written.
fn mark_gone(name: &DbName, state: &GcState, mark: RestoreMark) -> StorageError {
    if mark.source < state.oldest {
        return StorageError::NotFound(format!(
            "version {} of {name:?} is no longer kept (gc retired every version below {} \
             while this restore or fork ran): snapshot expired",
            mark.source, state.oldest
        ));
    }
    StorageError::Busy(format!(
        "{RESTORE_MARKS_MAX} restores or forks of {name:?} were marked: a newer one took \
         this one's mark; nothing was written: try again"
    ))
}

/// The current root version of `name` (0: none).
async fn head_version(backend: &dyn Backend, name: &DbName) -> Result<u64, StorageError> {
    Ok(backend
        .get_meta(MetaKind::Root, name)
        .await?
        .map_or(0, |m| m.version))
}

/// Drops the marks of `state` (whose `oldest` is the run's) that no
/// restore or fork needs (docs/format.md, "Garbage collection"): a
/// restore's that landed once the oldest kept version reaches its root
/// (that root, or what derives from it, is then an anchor itself); one
/// whose version another commit took; and one not landed — a fork's, or a
/// restore's above the head — whose source is retired: its root write,
/// which needs the mark ([`land`]), is then refused. The head is read
/// after the state, so a landing after the read makes the run's
/// compare-and-swap fail.
async fn prune_marks(
    backend: &dyn Backend,
    name: &DbName,
    state: &mut GcState,
) -> Result<(), StorageError> {
    if state.restores.is_empty() {
        return Ok(());
    }
    let head = head_version(backend, name).await?;
    let oldest = state.oldest;
    for mark in &mut state.restores {
        if mark.lands_as == LANDS_AS_UNKNOWN {
            // Written before marks said where they land: at or below the
            // head (its restore's root came before this state was read).
            mark.lands_as = head.max(mark.source + 1);
        }
    }
    state.restores.retain(|mark| match mark.landed(head) {
        true => mark.lands_as > oldest,
        false => mark.source >= oldest,
    });
    Ok(())
}

/// Whether a mark's restore has a version of its own at or below `head`
/// (its root, or another commit's that took its version): see
/// [`prune_marks`].
trait Landed {
    fn landed(&self, head: u64) -> bool;
}

impl Landed for RestoreMark {
    fn landed(&self, head: u64) -> bool {
        self.lands_as != 0 && self.lands_as <= head
    }
}

/// Lists `dst`, a fork of `source.name` at `source.version` whose first
/// version is `source.fork_version`, in the family of `db` — first of all
/// a fork writes (before the GC states and its root: see
/// `family_view`). The first fork of a database creates the item. A
/// source forked before families were recorded leaves the family
/// incomplete (its sectors are then left).
pub async fn register_fork(
    backend: &dyn Backend,
    db: DbId,
    source: ForkSource,
    dst: &DbName,
) -> Result<(), StorageError> {
    let (_, source_state) = read_state(backend, &source.name).await?;
    // Forked before families were recorded (flags of another id are an
    // earlier database's of the name: not this id's).
    let unrecorded = source_state.forked && source_state.family.is_none();
    let src = source.name.clone();
    let entry = FamilyMember {
        name: dst.clone(),
        source: Some(source),
        removed: false,
    };
    update_family(backend, db, |family| {
        if family.members.is_empty() {
            family.members.push(FamilyMember {
                name: src.clone(),
                source: None,
                removed: false,
            });
        }
        family.incomplete |= unrecorded || !family.holds(&src);
        if family.members.contains(&entry) {
            return Ok(());
        }
        if family.members.len() >= FAMILY_MEMBERS_MAX {
            return Err(StorageError::Invalid(format!(
                "{src:?} and its forks are {FAMILY_MEMBERS_MAX} databases: the most one \
                 family may have (remove some and run gc)"
            )));
        }
        family.members.push(entry.clone());
        Ok(())
    })
    .await
    .map(|_| ())
}

/// The family item of `db` as stored and decoded.
async fn read_family(
    backend: &dyn Backend,
    db: DbId,
) -> Result<(Option<Meta>, Family), StorageError> {
    match backend.get_meta(MetaKind::Family, &family_key(db)).await? {
        None => Ok((None, Family::default())),
        Some(meta) => {
            let family = Family::decode(&meta.body)
                .map_err(|e| StorageError::Corrupt(format!("family {}: {e}", db.hex())))?;
            Ok((Some(meta), family))
        }
    }
}

async fn update_family(
    backend: &dyn Backend,
    db: DbId,
    change: impl Fn(&mut Family) -> Result<(), StorageError>,
) -> Result<(Meta, Family), StorageError> {
    let key = family_key(db);
    for _ in 0..STATE_ATTEMPTS_MAX {
        let (stored, mut family) = read_family(backend, db).await?;
        change(&mut family)?;
        let expected = stored.as_ref().map(|m| m.version);
        let meta = Meta {
            version: expected.unwrap_or(0) + 1,
            body: family.encode(),
        };
        match backend
            .put_meta(MetaKind::Family, &key, expected, meta.clone())
            .await
        {
            Err(PutMetaError::Conflict) => continue,
            written => return written.map(|()| (meta, family)).map_err(put_error),
        }
    }
    Err(StorageError::Busy(format!(
        "the family {} kept changing",
        db.hex()
    )))
}

/// Is `version` of `name` retired by `gc`? (Readers check before they
/// trust a kept version: "snapshot expired".)
pub async fn is_retired(
    backend: &dyn Backend,
    name: &DbName,
    version: u64,
) -> Result<Option<u64>, StorageError> {
    let (_, state) = read_state(backend, name).await?;
    Ok((version < state.oldest).then_some(state.oldest))
}

/// One more mark when `RESTORE_MARKS_MAX` restores that landed stand:
/// each is needed until `gc` keeps the version it wrote (none is evicted,
/// issue 31 item 3), so the new one is refused, saying when there is room.
fn marks_full(name: &DbName, state: &GcState) -> StorageError {
    let first = state.restores.iter().map(|m| m.lands_as).min().unwrap_or(0);
    StorageError::Busy(format!(
        "{RESTORE_MARKS_MAX} restores of {name:?} are marked in its gc state, the most it \
         holds: try again once gc has retired the versions below {first} (each mark goes \
         once the version its restore wrote is the oldest kept)"
    ))
}

fn check_kept(name: &DbName, state: &GcState, version: u64) -> Result<(), StorageError> {
    if version < state.oldest {
        return Err(StorageError::NotFound(format!(
            "version {version} of {name:?} is no longer kept (gc retired every version \
             below {}): snapshot expired",
            state.oldest
        )));
    }
    Ok(())
}

fn version_time(name: &DbName, meta: &Meta) -> Result<u64, StorageError> {
    match decode_stored(name, meta.clone())? {
        Stored::Live(_, root) => Ok(root.commit_ms),
        Stored::Removed(meta) => Tombstone::decode(&meta.body)
            .map(|t| t.removed_ms)
            .map_err(|e| StorageError::Corrupt(format!("root of {name:?}: {e}"))),
        Stored::Absent => unreachable!("decode_stored never answers absent"),
    }
}

fn live_root(name: &DbName, meta: &Meta) -> Result<Option<Root>, StorageError> {
    match decode_stored(name, meta.clone())? {
        Stored::Live(_, root) => Ok(Some(root)),
        _ => Ok(None),
    }
}

/// Version `version` of `name`, kept or current.
async fn required_version(
    backend: &dyn Backend,
    name: &DbName,
    version: u64,
) -> Result<Meta, StorageError> {
    crate::history::stored_version(backend, name, version)
        .await?
        .ok_or_else(|| {
            StorageError::Corrupt(format!(
                "version {version} of {name:?} is missing though gc keeps it"
            ))
        })
}

/// The lowest version of `name` stored (history, else the current root).
async fn lowest_version(
    backend: &dyn Backend,
    name: &DbName,
    head: u64,
) -> Result<u64, StorageError> {
    let mut lowest = head;
    loop {
        let page = backend
            .root_history(name, Some(lowest), HISTORY_PAGE)
            .await?;
        let Some(last) = page.last() else {
            return Ok(lowest);
        };
        lowest = last.version;
        if page.len() < HISTORY_PAGE {
            return Ok(lowest);
        }
    }
}

/// The newest version of `name` committed at or before `horizon_ms` (the
/// one current then), looking no lower than `floor`; `floor` if none.
async fn version_at(
    backend: &dyn Backend,
    name: &DbName,
    head: u64,
    horizon_ms: u64,
    floor: u64,
) -> Result<u64, StorageError> {
    let mut below = head;
    while below > floor {
        let page = backend
            .root_history(name, Some(below), HISTORY_PAGE)
            .await?;
        for meta in &page {
            if meta.version < floor {
                return Ok(floor);
            }
            if version_time(name, meta)? <= horizon_ms {
                return Ok(meta.version);
            }
            below = meta.version;
        }
        if page.len() < HISTORY_PAGE {
            break;
        }
    }
    Ok(floor)
}

/// What a run over one database knows of the families its commits belong
/// to (one database id each; a name removed and created again is two).
struct Families<'a> {
    backend: &'a dyn Backend,
    name: &'a DbName,
    /// The run's GC state, as written by its retirement.
    state: GcState,
    views: HashMap<DbId, FamilyView>,
}

/// What else holds the sectors of one database id.
enum FamilyView {
    /// Nobody: the id was never forked.
    Alone,
    /// Its family item lists this database: a dropped key is garbage only
    /// if none of `anchors` holds it; `keep` are versions of this database
    /// a fork under way copies (their history items stay).
    Listed { anchors: Vec<Root>, keep: Vec<u64> },
    /// Forked, but not every member is listed: its sectors are left.
    Unlisted,
}

impl FamilyView {
    fn keeps(&self, version: u64) -> bool {
        matches!(self, FamilyView::Listed { keep, .. } if keep.contains(&version))
    }
}

/// What one member of a family holds, as far as `gc` must know.
enum Held {
    /// Every kept version's key is in one of these roots (its oldest kept
    /// version, its restore marks' sources) or is its own fresh write.
    Roots(Vec<Root>),
    /// A fork listed but not written yet: it will hold its source's root.
    Pending,
    /// Its own `gc` moved under this walk: walk again.
    Moved,
}

impl<'a> Families<'a> {
    fn new(backend: &'a dyn Backend, name: &'a DbName, state: GcState) -> Self {
        Families {
            backend,
            name,
            state,
            views: HashMap::new(),
        }
    }

    /// Decided per database id, not by the name's flags: a name removed
    /// and created again (or forked into) holds another id, whose family
    /// is its own (issue 31, item 4).
    async fn view(&mut self, db: DbId) -> Result<&FamilyView, StorageError> {
        if !self.views.contains_key(&db) {
            let view = match (self.state.forked, self.state.family) {
                (false, _) => FamilyView::Alone,
                (true, Some(family)) if family == db => self.family_view(db).await?,
                // Forked before families were recorded: who shares what
                // is unknown.
                (true, None) => FamilyView::Unlisted,
                // The flags are another id's (an earlier database of the
                // name, or the family a fork into it joined): this id's
                // own family item says, and none means never forked (a
                // fork lists itself there before anything else).
                (true, Some(_)) => match read_family(self.backend, db).await? {
                    (None, _) => FamilyView::Alone,
                    (Some(_), _) => self.family_view(db).await?,
                },
            };
            self.views.insert(db, view);
        }
        Ok(&self.views[&db])
    }

    /// The roots a key dropped by one of this database's commits must be
    /// checked against, across its family (docs/format.md, "Garbage
    /// collection"; ARCHITECTURE.md's safety argument, point 3). A fork
    /// lists itself before it compare-and-swaps its source's GC state, and
    /// this run read the family after its own retirement, so every fork
    /// that could copy a version this run retires is listed. Members'
    /// states are read between two reads of the family item, which must
    /// agree (a fork listed in between: walk again); a fork listed after
    /// copies a version kept when these states were read.
    async fn family_view(&self, db: DbId) -> Result<FamilyView, StorageError> {
        for _ in 0..STATE_ATTEMPTS_MAX {
            let (Some(first), family) = read_family(self.backend, db).await? else {
                return Ok(FamilyView::Unlisted);
            };
            let listed = family
                .members
                .iter()
                .any(|m| m.name == *self.name && !m.removed);
            if family.incomplete || !listed {
                return Ok(FamilyView::Unlisted);
            }
            let Some(view) = self.members_roots(db, &family).await? else {
                continue;
            };
            let (again, _) = read_family(self.backend, db).await?;
            if again.is_some_and(|m| m.version == first.version) {
                return Ok(view);
            }
        }
        Err(StorageError::Busy(format!(
            "the family of {:?} kept changing under this run: run gc again",
            self.name
        )))
    }

    /// Every root that may hold a key of `family` (`None`: a member moved).
    async fn members_roots(
        &self,
        db: DbId,
        family: &Family,
    ) -> Result<Option<FamilyView>, StorageError> {
        let mut states: HashMap<&DbName, GcState> = HashMap::new();
        for member in &family.members {
            let source = member.source.as_ref().map(|s| &s.name);
            for name in std::iter::once(&member.name).chain(source) {
                if !states.contains_key(name) {
                    states.insert(name, read_state(self.backend, name).await?.1);
                }
            }
        }
        let mut anchors = Vec::new();
        let mut keep = Vec::new();
        for member in family.members.iter().filter(|m| !m.removed) {
            match self.member_roots(db, member, &states[&member.name]).await? {
                Held::Roots(roots) => anchors.extend(roots),
                Held::Moved => return Ok(None),
                Held::Pending => {
                    let source = member.source.as_ref().expect("only forks are pending");
                    let state = &states[&source.name];
                    let marked = state.restores.iter().any(|m| m.source == source.version);
                    if source.version < state.oldest && !marked {
                        // Retired and not marked: the fork's mark on its
                        // source was refused (or it was killed before), or
                        // `gc` dropped it when it retired the version — its
                        // root write, which needs the mark, is refused. It
                        // never writes its root. Its version's history item
                        // may still be stored (a run killed before deleting
                        // it), its sectors already gone: it holds nothing
                        // (the simulator's seed 500854).
                        continue;
                    }
                    let Some(root) = self.kept_root(db, &source.name, source.version).await? else {
                        if !marked {
                            // Gone and not marked: retired under this walk,
                            // or the source removed and collected away (its
                            // state with it): a fork killed before its
                            // root, which can now neither mark nor land.
                            continue;
                        }
                        return Ok(None);
                    };
                    anchors.extend(root);
                    if source.name == *self.name {
                        keep.push(source.version);
                    }
                }
            }
        }
        // A source's fresh writes after its oldest kept version that a
        // fork copied (a removed fork too: what it copied may have gone on
        // to forks of it): the source may hold them still, and only this
        // root says so.
        for source in family.members.iter().filter_map(|m| m.source.as_ref()) {
            if family.holds(&source.name) && source.version >= states[&source.name].oldest {
                match self.kept_root(db, &source.name, source.version).await? {
                    Some(root) => anchors.extend(root),
                    None => return Ok(None),
                }
            }
        }
        Ok(Some(FamilyView::Listed { anchors, keep }))
    }

    /// What `member` (with GC state `state`) holds of family `db`.
    async fn member_roots(
        &self,
        db: DbId,
        member: &FamilyMember,
        state: &GcState,
    ) -> Result<Held, StorageError> {
        let name = &member.name;
        let fork_version = member.source.as_ref().map_or(0, |s| s.fork_version);
        let head = self.backend.get_meta(MetaKind::Root, name).await?;
        let head = match head {
            Some(head) if head.version >= fork_version => head,
            _ if member.source.is_some() => return Ok(Held::Pending),
            _ => return Ok(Held::Roots(Vec::new())), // gone
        };
        let oldest = match state.oldest {
            0 => lowest_version(self.backend, name, head.version).await?,
            oldest => oldest,
        };
        let mut roots = Vec::new();
        let Some(from) = self.kept_root(db, name, oldest.max(fork_version)).await? else {
            return Ok(Held::Moved);
        };
        roots.extend(from);
        for mark in &state.restores {
            let Some(root) = self.kept_root(db, name, mark.source).await? else {
                return Ok(Held::Moved);
            };
            roots.extend(root);
        }
        Ok(Held::Roots(roots))
    }

    /// Version `version` of `name`: `None` if it is not stored (retired
    /// under the walk, or its database gone), else its live root if it
    /// belongs to family `db`.
    async fn kept_root(
        &self,
        db: DbId,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Option<Root>>, StorageError> {
        let Some(meta) = crate::history::stored_version(self.backend, name, version).await? else {
            return Ok(None);
        };
        Ok(Some(
            live_root(name, &meta)?.filter(|root| root.db_id == db),
        ))
    }
}

/// Where a key sits in a manifest: a page (`level` 0, `slot` its index)
/// or a chunk (`level` 1..=4, `slot` its number within the level). A
/// salted sector's salt names the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub level: u8,
    pub slot: u32,
}

/// Manifest chunks of any database, loaded once per run.
struct Chunks<'a> {
    backend: &'a dyn Backend,
    cache: HashMap<(DbId, Hash), Arc<Chunk>>,
}

impl<'a> Chunks<'a> {
    fn new(backend: &'a dyn Backend) -> Self {
        Chunks {
            backend,
            cache: HashMap::new(),
        }
    }

    /// A chunk; `None` if it is gone — deleted by an earlier run as the
    /// garbage of the commit being diffed or a later one (see
    /// `dropped_keys`).
    async fn find(&mut self, db: DbId, key: &Hash) -> Result<Option<Arc<Chunk>>, StorageError> {
        if let Some(chunk) = self.cache.get(&(db, *key)) {
            return Ok(Some(chunk.clone()));
        }
        let found = self.backend.get_sectors(db, &[*key]).await?;
        let Some(bytes) = found.into_iter().next().flatten() else {
            return Ok(None);
        };
        verify(key, &bytes)
            .map_err(|e| StorageError::Corrupt(format!("chunk {}: {e}", hash_hex(key))))?;
        let chunk = Arc::new(
            Chunk::decode(&bytes)
                .map_err(|e| StorageError::Corrupt(format!("chunk {}: {e}", hash_hex(key))))?,
        );
        self.cache.insert((db, *key), chunk.clone());
        Ok(Some(chunk))
    }

    /// The key at `position` of `root`'s tree (pages: the tree's entry,
    /// not the overlay's); `ZERO_HASH` if none; `None` if a chunk on the
    /// way is gone (only a retired root's can be).
    async fn tree_key(
        &mut self,
        root: &Root,
        position: Position,
    ) -> Result<Option<Hash>, StorageError> {
        let depth = root.tree.depth;
        if position.level > depth || root.tree.top == ZERO_HASH {
            return Ok(Some(ZERO_HASH));
        }
        let span = |levels: u8| (FANOUT as u64).pow(levels as u32);
        let slot = position.slot as u64;
        if slot / span(depth - position.level) != 0 {
            return Ok(Some(ZERO_HASH));
        }
        let mut key = root.tree.top;
        for level in (position.level + 1..=depth).rev() {
            let Some(chunk) = self.find(root.db_id, &key).await? else {
                return Ok(None);
            };
            let child = (slot / span(level - 1 - position.level)) as usize % FANOUT;
            key = chunk.entry(child);
            if key == ZERO_HASH {
                break;
            }
        }
        Ok(Some(key))
    }

    /// The key of page `index` as readers resolve it (`None`: a chunk
    /// on the way is gone).
    async fn page_key(&mut self, root: &Root, index: u32) -> Result<Option<Hash>, StorageError> {
        if index >= root.page_count {
            return Ok(Some(ZERO_HASH));
        }
        if let Ok(at) = root.overlay.binary_search_by_key(&index, |e| e.0) {
            return Ok(Some(root.overlay[at].1));
        }
        self.tree_key(
            root,
            Position {
                level: 0,
                slot: index,
            },
        )
        .await
    }

    /// The key at `position` as a reader of kept root `root` uses it.
    async fn key_at(&mut self, root: &Root, position: Position) -> Result<Hash, StorageError> {
        let key = match position.level {
            0 => self.page_key(root, position.slot).await?,
            _ => self.tree_key(root, position).await?,
        };
        key.ok_or_else(|| {
            StorageError::Corrupt(format!(
                "a manifest chunk of kept version {} is missing",
                root.version
            ))
        })
    }
}

/// Does any anchor root of database `db` hold `key` at `position`?
async fn held_by_any(
    chunks: &mut Chunks<'_>,
    anchors: &[Root],
    db: DbId,
    key: &Hash,
    position: Position,
) -> Result<bool, StorageError> {
    for anchor in anchors.iter().filter(|a| a.db_id == db) {
        if chunks.key_at(anchor, position).await? == *key {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A subtree's key in one of the two trees being compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// Nothing (zero entries).
    Zero,
    /// A stored chunk.
    Stored(Hash),
    /// A level above the tree's top (the other tree is deeper): node 0
    /// only, whose slot 0 leads down to the top.
    Above,
}

/// The keys `before` references that `after` (`None`: removed) does not,
/// each with its position: pages whose key changed, chunks rewritten or
/// gone. Walks both trees level by level, skipping equal subtrees, so it
/// costs what the commit changed (and, for a truncation, the pages cut).
///
/// Run again after a killed run, some chunks are gone: garbage is deleted
/// commit by commit, each commit's lowest levels first (pages, then leaf
/// chunks, ...). So a chunk of `before` that is gone was this commit's
/// garbage, deleted after everything of this commit below it: its subtree
/// is skipped. A chunk of `after` that is gone was a later commit's
/// garbage: this commit was done whole, and nothing is returned.
async fn dropped_keys(
    chunks: &mut Chunks<'_>,
    before: &Root,
    after: Option<&Root>,
) -> Result<Vec<(Hash, Position)>, StorageError> {
    let empty = Root {
        page_count: 0,
        tree: donut_format::TreeRef::EMPTY,
        overlay: Vec::new(),
        top_inline: None,
        ..before.clone()
    };
    let after = match after {
        Some(after) if after.db_id == before.db_id => after,
        _ => &empty,
    };
    let mut out = Vec::new();
    // Tree entries of pages that differ between the trees.
    let mut changed_pages: BTreeMap<u32, Hash> = BTreeMap::new();
    let depth = before.tree.depth.max(after.tree.depth);
    let top = |root: &Root| match root.tree.depth {
        0 => Node::Zero,
        d if d == depth => Node::Stored(root.tree.top),
        _ => Node::Above,
    };
    let mut frontier: Vec<(u64, Node, Node)> = match depth {
        0 => Vec::new(),
        _ => vec![(0, top(before), top(after))],
    };
    for level in (1..=depth).rev() {
        let mut next = Vec::new();
        for (node, old, new) in frontier {
            if old == new {
                continue;
            }
            if let Node::Stored(key) = old {
                let slot = u32::try_from(node).expect("chunk numbers fit in 32 bits");
                out.push((key, Position { level, slot }));
            }
            let Some(new_entries) = entries(chunks, after, level, new).await? else {
                return Ok(Vec::new());
            };
            let Some(old_entries) = entries(chunks, before, level, old).await? else {
                continue;
            };
            for s in 0..FANOUT {
                let (o, n) = (old_entries[s], new_entries[s]);
                if o == n {
                    continue;
                }
                let child = node * FANOUT as u64 + s as u64;
                if level == 1 {
                    if let Node::Stored(key) = o {
                        let index = u32::try_from(child).expect("page indexes fit in 32 bits");
                        changed_pages.insert(index, key);
                    }
                } else {
                    next.push((child, o, n));
                }
            }
        }
        frontier = next;
    }
    // Pages as readers resolve them: the overlay wins, the count bounds.
    let mut indexes: Vec<u32> = changed_pages.keys().copied().collect();
    indexes.extend(before.overlay.iter().map(|e| e.0));
    indexes.extend(after.overlay.iter().map(|e| e.0));
    indexes.extend(after.page_count..before.page_count);
    indexes.sort_unstable();
    indexes.dedup();
    for index in indexes {
        let Some(new) = chunks.page_key(after, index).await? else {
            return Ok(Vec::new());
        };
        let old = chunks.page_key(before, index).await?.unwrap_or(ZERO_HASH);
        if old != ZERO_HASH && old != new {
            out.push((
                old,
                Position {
                    level: 0,
                    slot: index,
                },
            ));
        }
    }
    // Lowest levels first: see above.
    out.sort_by_key(|(_, position)| position.level);
    assert!(depth <= MAX_DEPTH);
    Ok(out)
}

/// The 256 child nodes of `node` at `level` of `root`'s tree; `None` if
/// its chunk is gone.
async fn entries(
    chunks: &mut Chunks<'_>,
    root: &Root,
    level: u8,
    node: Node,
) -> Result<Option<Vec<Node>>, StorageError> {
    let mut out = vec![Node::Zero; FANOUT];
    match node {
        Node::Zero => {}
        Node::Above => {
            out[0] = match level - 1 == root.tree.depth {
                true => Node::Stored(root.tree.top),
                false => Node::Above,
            };
        }
        Node::Stored(key) => {
            let Some(chunk) = chunks.find(root.db_id, &key).await? else {
                return Ok(None);
            };
            for (slot, entry) in out.iter_mut().enumerate() {
                let h = chunk.entry(slot);
                if h != ZERO_HASH {
                    *entry = Node::Stored(h);
                }
            }
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;
    use donut_format::At;

    /// Issue 31, item 3: with `RESTORE_MARKS_MAX` marks standing, one more
    /// restore evicted the oldest — still needed while its restore's
    /// source was retired and the restored root read it — so `gc`
    /// deleted pages that root reads. Now the restore is refused.
    #[tokio::test]
    async fn a_restore_is_refused_when_marks_are_full_not_a_needed_mark_evicted() {
        let backend = MemoryBackend::new();
        let name = DbName::new("m.db").expect("legal name");
        crate::db::create_database(&backend, &name, 4096)
            .await
            .expect("create");
        for _ in 0..RESTORE_MARKS_MAX {
            crate::history::restore(&backend, &name, At::Version(1))
                .await
                .expect("restore");
        }
        let (_, state) = read_state(&backend, &name).await.expect("state");
        let first = state.restores[0];
        let refused = crate::history::restore(&backend, &name, At::Version(1)).await;
        assert!(matches!(refused, Err(StorageError::Busy(_))), "{refused:?}");
        let (_, state) = read_state(&backend, &name).await.expect("state");
        assert_eq!(state.restores.len(), RESTORE_MARKS_MAX);
        assert_eq!(state.restores[0], first, "the oldest mark stands");
    }
}
