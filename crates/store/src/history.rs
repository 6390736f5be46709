//! A database's kept versions (docs/format.md, "History"): reading a past
//! root by version or time, listing versions, and restoring one as a new
//! version. Every root write also writes its history item, so a version
//! stays readable until `gc` retires it.

use crate::backend::{Backend, Meta, Replaces};
use crate::clock::Clock;
use crate::db::{Stored, decode_stored, read_stored};
use crate::error::StorageError;
use crate::random_u64;
use donut_format::{At, DbName, ForkSource, RestoreMark, Root, Tombstone, format_utc_ms};

/// Versions read per request while searching history by time.
const HISTORY_PAGE: usize = 100;

/// A kept version as `versions` lists it.
#[derive(Debug, Clone)]
pub enum Version {
    /// A database root: its pages are readable at this version.
    Live(Root),
    /// The database was removed at this version (`rm`).
    Removed(Tombstone),
}

impl Version {
    pub fn version(&self) -> u64 {
        match self {
            Version::Live(root) => root.version,
            Version::Removed(tombstone) => tombstone.version,
        }
    }

    /// When it was written: the commit's time, or the removal's.
    pub fn time_ms(&self) -> u64 {
        match self {
            Version::Live(root) => root.commit_ms,
            Version::Removed(tombstone) => tombstone.removed_ms,
        }
    }
}

fn decode_version(name: &DbName, meta: Meta) -> Result<Version, StorageError> {
    match decode_stored(name, meta)? {
        Stored::Live(_, root) => Ok(Version::Live(root)),
        Stored::Removed(meta) => {
            let tombstone = Tombstone::decode(&meta.body)
                .map_err(|e| StorageError::Corrupt(format!("root of {name:?}: {e}")))?;
            Ok(Version::Removed(tombstone))
        }
        Stored::Absent => unreachable!("decode_stored never answers absent"),
    }
}

/// The current root item of `name` (a root or a tombstone), as stored.
async fn read_head(backend: &dyn Backend, name: &DbName) -> Result<Meta, StorageError> {
    match read_stored(backend, name).await? {
        Stored::Absent => Err(no_database(backend, name)),
        Stored::Removed(meta) | Stored::Live(meta, _) => Ok(meta),
    }
}

/// The newest kept versions of `name`, newest first, at most `limit`. A
/// database whose newest root was written before history was kept (format
/// v3) lists that root alone until its next commit.
pub async fn list_versions(
    backend: &dyn Backend,
    name: &DbName,
    limit: usize,
) -> Result<Vec<Version>, StorageError> {
    let head = decode_version(name, read_head(backend, name).await?)?;
    let mut out = vec![head];
    let older = backend
        .root_history(name, Some(out[0].version()), limit.saturating_sub(1))
        .await?;
    for meta in older {
        out.push(decode_version(name, meta)?);
    }
    // A retired version's history item may outlive its retirement (a `gc`
    // killed before its deletes, a restore's or fork's source kept aside):
    // it is not a kept version.
    let (_, state) = crate::gc::read_state(backend, name).await?;
    out.retain(|v| v.version() >= state.oldest);
    out.truncate(limit);
    Ok(out)
}

fn no_database(backend: &dyn Backend, name: &DbName) -> StorageError {
    StorageError::NotFound(format!(
        "no database {name:?} in the {}",
        backend.describe()
    ))
}

/// The root of `name` at `at`, read-only: a kept version, or the one
/// current at a time. A version past the newest, retired by `gc`, or at
/// which the database was removed is `not-found`, saying which.
pub async fn read_root_at(
    backend: &dyn Backend,
    name: &DbName,
    at: At,
) -> Result<(Meta, Root), StorageError> {
    let meta = match at {
        At::Version(version) => read_version(backend, name, version).await?,
        At::TimeMs(ms) => read_at_time(backend, name, ms).await?,
    };
    // Between `gc` retiring a version and deleting its history item, the
    // item still reads: its pages may already be gone.
    if let Some(oldest) = crate::gc::is_retired(backend, name, meta.version).await? {
        return Err(StorageError::NotFound(format!(
            "version {} of {name:?} is no longer kept (gc retired every version below \
             {oldest}): snapshot expired",
            meta.version
        )));
    }
    match decode_stored(name, meta)? {
        Stored::Live(meta, root) => Ok((meta, root)),
        Stored::Removed(meta) => {
            let removal = decode_version(name, meta)?;
            Err(StorageError::NotFound(format!(
                "{name:?} at {at} is removed: version {} is its removal (rm at {})",
                removal.version(),
                format_utc_ms(removal.time_ms())
            )))
        }
        Stored::Absent => unreachable!("decode_stored never answers absent"),
    }
}

/// The stored item of version `version`.
async fn read_version(
    backend: &dyn Backend,
    name: &DbName,
    version: u64,
) -> Result<Meta, StorageError> {
    if let Some(meta) = stored_version(backend, name, version).await? {
        return Ok(meta);
    }
    // Past the newest, or retired.
    let newest = read_head(backend, name).await?.version;
    if version > newest {
        return Err(StorageError::NotFound(format!(
            "{name:?} has no version {version}: its newest is {newest}"
        )));
    }
    Err(StorageError::NotFound(format!(
        "version {version} of {name:?} is no longer kept (gc retired it); \
         `donut-host versions {name}` lists the kept ones"
    )))
}

/// Version `version` of `name` as stored: its history item, or the
/// current root item if it is that version (a root written before history
/// was kept has none); `None` if neither.
pub(crate) async fn stored_version(
    backend: &dyn Backend,
    name: &DbName,
    version: u64,
) -> Result<Option<Meta>, StorageError> {
    if let Some(meta) = backend.get_root_version(name, version).await? {
        return Ok(Some(meta));
    }
    let head = backend
        .get_meta(crate::backend::MetaKind::Root, name)
        .await?;
    Ok(head.filter(|head| head.version == version))
}

/// Going back from the newest, the first version written at or before
/// `ms` (commit times come from writers' clocks, so this is the version
/// a reader at that time most likely saw): its stored item.
async fn read_at_time(backend: &dyn Backend, name: &DbName, ms: u64) -> Result<Meta, StorageError> {
    let head = read_head(backend, name).await?;
    let mut oldest = decode_version(name, head.clone())?;
    if oldest.time_ms() <= ms {
        return Ok(head);
    }
    loop {
        let page = backend
            .root_history(name, Some(oldest.version()), HISTORY_PAGE)
            .await?;
        let done = page.len() < HISTORY_PAGE;
        for meta in page {
            let version = decode_version(name, meta.clone())?;
            if version.time_ms() <= ms {
                return Ok(meta);
            }
            oldest = version;
        }
        if done {
            return Err(StorageError::NotFound(format!(
                "{name:?} has no kept version as old as {}: the oldest kept is version {} of {}",
                format_utc_ms(ms),
                oldest.version(),
                format_utc_ms(oldest.time_ms())
            )));
        }
    }
}

/// What `restore` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The version whose content was restored.
    pub from: u64,
    /// The new version, equal in content to `from`.
    pub version: u64,
    /// The version it replaced was a removal (`rm`): the database is back.
    pub undid_removal: bool,
}

/// Writes a new version of `name` equal in content to its version at `at`,
/// so the restore can itself be undone by restoring the version before
/// it. A removed database can be restored (it comes back); a version of an
/// earlier database of the same name (removed and created again since)
/// cannot.
pub async fn restore(
    backend: &dyn Backend,
    name: &DbName,
    at: At,
) -> Result<Restored, StorageError> {
    restore_over(backend, name, at, None).await
}

/// [`restore`], refused with `Conflict` unless the current version is
/// `current` (when given): a restore that must not undo commits its
/// caller has not seen.
pub async fn restore_over(
    backend: &dyn Backend,
    name: &DbName,
    at: At,
    current: Option<u64>,
) -> Result<Restored, StorageError> {
    let (_, old) = read_root_at(backend, name, at).await?;
    let stored = read_stored(backend, name).await?;
    if let (Some(current), Stored::Live(meta, _) | Stored::Removed(meta)) = (current, &stored)
        && meta.version != current
    {
        return Err(StorageError::Conflict);
    }
    let (expected, lease_required, removed) = match stored {
        Stored::Absent => return Err(no_database(backend, name)),
        Stored::Removed(meta) => (meta.version, false, true),
        Stored::Live(meta, current) => {
            if current.db_id != old.db_id {
                return Err(StorageError::Invalid(format!(
                    "version {} of {name:?} belongs to an earlier database of that name \
                     (removed and created again since); pull {name}@{} and push it instead",
                    old.version, old.version
                )));
            }
            (meta.version, current.lease_required, false)
        }
    };
    let mut root = old.clone();
    root.version = expected + 1;
    root.commit_ms = Clock::System.now_ms();
    root.txn_id = random_u64();
    root.lease_required = false;
    // Before the root: `gc` keeps what the source references while the
    // mark stands, or this is refused if it retired the source already;
    // the root lands only while the mark stands (`gc::land`).
    let mark = RestoreMark {
        source: old.version,
        txn_id: root.txn_id,
        lands_as: root.version,
    };
    crate::gc::mark_restore(backend, name, mark).await?;
    let replaces = match removed {
        true => Replaces::Nothing,
        false => Replaces::Database(old.db_id),
    };
    crate::gc::land(
        backend,
        name,
        mark,
        crate::gc::Landing {
            name,
            expected: Some(expected),
            replaces,
            lease_required,
            root: &root,
        },
    )
    .await?;
    Ok(Restored {
        from: old.version,
        version: root.version,
        undid_removal: removed,
    })
}

/// Creates `dst` equal to `src` (or to its kept version `at`), sharing its
/// pages and manifest: one root write, no data copied. The fork keeps the
/// source's database id — sectors are keyed by it, so both read the same
/// items — and from then on each is written independently: a commit to
/// one never changes what the other reads, since sectors are immutable.
pub async fn fork(
    backend: &dyn Backend,
    src: &DbName,
    at: Option<At>,
    dst: &DbName,
) -> Result<Root, StorageError> {
    if src == dst {
        return Err(StorageError::Invalid(format!(
            "a fork needs a new name, not {src:?} again"
        )));
    }
    let (_, source) = match at {
        None => crate::db::read_root(backend, src).await?,
        Some(at) => read_root_at(backend, src, at).await?,
    };
    let (expected, fresh) = crate::db::new_root(backend, dst, source.page_size).await?;
    // Before anything else: the family lists the fork (so every `gc`
    // run that could retire the source version knows of it), then both
    // GC states say they share sectors (refused if `gc` retired the
    // source version already), then the root.
    let listed = ForkSource {
        name: src.clone(),
        version: source.version,
        fork_version: fresh.version,
    };
    crate::gc::register_fork(backend, source.db_id, listed, dst).await?;
    let mark = crate::gc::mark_forked(backend, src, Some(source.version), source.db_id)
        .await?
        .expect("a source version was given");
    // The source removed and collected away before the mark: its state
    // went with it, and the mark made a new one that no run will read.
    match read_stored(backend, src).await? {
        Stored::Live(_, now) if now.db_id == source.db_id => {}
        Stored::Removed(_) => {}
        _ => return Err(no_database(backend, src)),
    }
    crate::gc::mark_forked(backend, dst, None, source.db_id).await?;
    let mut root = source.clone();
    root.version = fresh.version;
    root.commit_ms = fresh.commit_ms;
    root.txn_id = fresh.txn_id;
    root.lease_required = false;
    // Only while the mark stands, which goes in the same step: `gc` drops
    // it if it retires the source version first, and then this is refused
    // (never a root whose pages a run collected, however slow this was).
    let landed = crate::gc::land(
        backend,
        src,
        mark,
        crate::gc::Landing {
            name: dst,
            expected,
            replaces: Replaces::Nothing,
            lease_required: false,
            root: &root,
        },
    );
    match landed.await {
        Ok(()) => Ok(root),
        Err(StorageError::Conflict) => Err(StorageError::AlreadyExists(format!(
            "database {dst:?} already exists in the {}",
            backend.describe()
        ))),
        Err(e) => Err(e),
    }
}
