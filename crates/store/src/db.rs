//! Database operations on roots, written once for every caller (the WIT
//! host, the CLI, push and pull): read with the stored-version check,
//! create, swap, remove, list.

use crate::backend::{Backend, Commit, Fence, Meta, MetaKind, PutMetaError, Replaces, StateSwap};
use crate::clock::Clock;
use crate::error::StorageError;
use crate::lease::HostLease;
use crate::random_u64;
use donut_format::{DbId, DbName, Root, Tombstone, validate_page_size};

/// The root item of `name` as stored: absent, a tombstone, or a root.
pub enum Stored {
    Absent,
    Removed(Meta),
    Live(Meta, Root),
}

/// Reads the root item of `name` and decodes it.
pub async fn read_stored(backend: &dyn Backend, name: &DbName) -> Result<Stored, StorageError> {
    match backend.get_meta(MetaKind::Root, name).await? {
        None => Ok(Stored::Absent),
        Some(meta) => decode_stored(name, meta),
    }
}

/// Decodes a stored root item: a tombstone or a root, each checked against
/// the version it is stored under.
pub(crate) fn decode_stored(name: &DbName, meta: Meta) -> Result<Stored, StorageError> {
    if Tombstone::is_tombstone(&meta.body) {
        let tombstone = Tombstone::decode(&meta.body)
            .map_err(|e| StorageError::Corrupt(format!("root of {name:?}: {e}")))?;
        if tombstone.version != meta.version {
            return Err(StorageError::Corrupt(format!(
                "tombstone of {name:?} is stored as version {} but says {}",
                meta.version, tombstone.version
            )));
        }
        return Ok(Stored::Removed(meta));
    }
    let root = Root::decode(&meta.body)
        .map_err(|e| StorageError::Corrupt(format!("root of {name:?}: {e}")))?;
    if root.version != meta.version {
        return Err(StorageError::Corrupt(format!(
            "root of {name:?} is stored as version {} but says {}",
            meta.version, root.version
        )));
    }
    Ok(Stored::Live(meta, root))
}

/// Every database of the store, by name, with its root — or why its root
/// is unusable (corrupt, or not the version it is stored under). Removed
/// databases are left out.
pub async fn list_databases(
    backend: &dyn Backend,
) -> Result<Vec<(DbName, Result<Root, StorageError>)>, StorageError> {
    let mut out = Vec::new();
    for (name, meta) in backend.list_roots().await? {
        match decode_stored(&name, meta) {
            Ok(Stored::Live(_, root)) => out.push((name, Ok(root))),
            Ok(Stored::Absent | Stored::Removed(_)) => {}
            Err(e) => out.push((name, Err(e))),
        }
    }
    Ok(out)
}

/// Reads and decodes the root of `name`; `not-found` if absent or removed.
pub async fn read_root(backend: &dyn Backend, name: &DbName) -> Result<(Meta, Root), StorageError> {
    match read_stored(backend, name).await? {
        Stored::Live(meta, root) => Ok((meta, root)),
        Stored::Absent | Stored::Removed(_) => Err(StorageError::NotFound(format!(
            "no database {name:?} in the {}",
            backend.describe()
        ))),
    }
}

/// Swaps the root of `name` from `expected` (None: absent), holding what
/// `replaces` says (a tombstone, or whose root), to `root`.
/// `lease_required`: the root at `expected` requires the lease (an
/// exclusive writer's claim, ARCHITECTURE.md "Exclusive writers"): the swap
/// then takes a lease of the host's own and is fenced by it.
pub async fn swap_root(
    backend: &dyn Backend,
    name: &DbName,
    expected: Option<u64>,
    replaces: Replaces,
    lease_required: bool,
    root: &Root,
) -> Result<(), StorageError> {
    let meta = Meta {
        version: root.version,
        body: root.encode(),
    };
    let swap = Swap {
        db: root.db_id,
        expected,
        replaces,
        lease_required,
    };
    swap_meta(backend, name, swap, meta, None).await
}

/// What a root item swap replaces, and how.
struct Swap {
    /// The database whose sectors the new item's commit would store.
    db: DbId,
    expected: Option<u64>,
    replaces: Replaces,
    lease_required: bool,
}

/// [`swap_root`] in one atomic step with a GC state item's
/// compare-and-swap (a restore's or fork's root and the state holding
/// its mark: see [`StateSwap`]). `Conflict` if either moved.
pub async fn swap_root_with_state(
    backend: &dyn Backend,
    name: &DbName,
    expected: Option<u64>,
    replaces: Replaces,
    lease_required: bool,
    root: &Root,
    state: StateSwap<'_>,
) -> Result<(), StorageError> {
    let meta = Meta {
        version: root.version,
        body: root.encode(),
    };
    let swap = Swap {
        db: root.db_id,
        expected,
        replaces,
        lease_required,
    };
    swap_meta(backend, name, swap, meta, Some(state)).await
}

/// `swap_root` for any root item body (a root or a tombstone), with a GC
/// state swapped in the same step if `state`.
async fn swap_meta(
    backend: &dyn Backend,
    name: &DbName,
    swap: Swap,
    meta: Meta,
    state: Option<StateSwap<'_>>,
) -> Result<(), StorageError> {
    let Swap {
        db,
        expected,
        replaces,
        lease_required,
    } = swap;
    let lease = match lease_required {
        true => Some(HostLease::take(backend, name).await?),
        false => None,
    };
    // Unfenced and alone, a plain conditional put: a one-request backend
    // would make `commit` a transaction, at twice the write units.
    let outcome = match (&lease, state) {
        (None, None) => backend.put_root(name, expected, replaces, meta).await,
        (lease, state) => {
            let commit = Commit {
                name,
                db,
                expected,
                replaces,
                sectors: &[],
                fence: lease.as_ref().map(|lease| Fence {
                    lock_version: lease.lock_version,
                }),
                state,
            };
            backend.commit(commit, meta).await
        }
    };
    let result = match outcome {
        Ok(()) => Ok(()),
        Err(PutMetaError::Conflict) => Err(StorageError::Conflict),
        Err(PutMetaError::Fenced) => Err(StorageError::Busy(format!(
            "the lease on {name:?} was taken over; nothing was changed"
        ))),
        Err(PutMetaError::Backend(e)) => Err(e.into()),
    };
    if let Some(lease) = lease {
        // If this fails the lease simply expires.
        let _ = lease.release(backend, name).await;
    }
    result
}

/// A fresh root for `name`: a new id, the version after whatever the name
/// had. Returns it with the version it replaces.
pub async fn new_root(
    backend: &dyn Backend,
    name: &DbName,
    page_size: u32,
) -> Result<(Option<u64>, Root), StorageError> {
    let page_size =
        validate_page_size(page_size as u64).map_err(|e| StorageError::Invalid(e.to_string()))?;
    let expected = match read_stored(backend, name).await? {
        Stored::Absent => None,
        Stored::Removed(meta) => Some(meta.version),
        Stored::Live(..) => {
            return Err(StorageError::AlreadyExists(format!(
                "database {name:?} already exists in the {}",
                backend.describe()
            )));
        }
    };
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| StorageError::Unavailable(e.to_string()))?;
    let mut root = Root::new_database(DbId(id), page_size, Clock::System.now_ms(), random_u64());
    root.version = expected.map_or(1, |v| v + 1);
    Ok((expected, root))
}

/// Creates database `name` with a new id. Shared by the `create` CLI
/// command and the guest's `create`.
pub async fn create_database(
    backend: &dyn Backend,
    name: &DbName,
    page_size: u32,
) -> Result<Root, StorageError> {
    let (expected, root) = new_root(backend, name, page_size).await?;
    match swap_root(backend, name, expected, Replaces::Nothing, false, &root).await {
        Ok(()) => Ok(root),
        Err(StorageError::Conflict) => Err(StorageError::AlreadyExists(format!(
            "database {name:?} already exists in the {}",
            backend.describe()
        ))),
        Err(e) => Err(e),
    }
}

/// Removes database `name` atomically: its root becomes a tombstone (the
/// next version), so no reader or writer sees it from then on. Its sectors
/// stay until `gc`.
pub async fn remove_database(backend: &dyn Backend, name: &DbName) -> Result<u64, StorageError> {
    let (meta, root) = read_root(backend, name).await?;
    let tombstone = Tombstone {
        version: meta.version + 1,
        removed_ms: Clock::System.now_ms(),
    };
    let next = Meta {
        version: tombstone.version,
        body: tombstone.encode(),
    };
    let swap = Swap {
        db: root.db_id,
        expected: Some(meta.version),
        replaces: Replaces::Database(root.db_id),
        lease_required: root.lease_required,
    };
    swap_meta(backend, name, swap, next, None).await?;
    Ok(tombstone.version)
}
