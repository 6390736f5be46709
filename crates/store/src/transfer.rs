//! `push` and `pull`: copy a whole SQLite file into a database as one new
//! version, or a consistent snapshot of a database into a file. Both run on
//! the host (no component), over any backend.

use crate::backend::{Backend, Replaces};
use crate::db::{Stored, new_root, read_root, read_stored, swap_root};
use crate::error::StorageError;
use donut_format::salt::{plain, salted};
use donut_format::{
    At, Chunk, ChunkSource, DbId, DbName, FormatError, Hash, Manifest, PAGE_COUNT_MAX, Root, Salt,
    TreeRef, ZERO_HASH, hash, hash_hex, sqlite_header, validate_page_size, verify,
};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Pages per storage call.
const PAGES_PER_CALL: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The reason is in the message, not also a `source()` (a chain
    /// printer would say it twice).
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} already exists")]
    Exists { path: PathBuf },
    #[error("{path} is not a SQLite database: {detail}")]
    NotSqlite { path: PathBuf, detail: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error(
        "{0:?} changed while it was being pushed (another writer committed); nothing was changed, push again"
    )]
    Raced(DbName),
}

impl From<FormatError> for TransferError {
    fn from(e: FormatError) -> Self {
        TransferError::Corrupt(e.to_string())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |error| TransferError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Page size and count of a SQLite file, from its header and length.
fn sqlite_geometry(path: &Path, file: &mut std::fs::File) -> Result<(u32, u32), TransferError> {
    let not = |detail: &str| TransferError::NotSqlite {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let len = file.metadata().map_err(io(path))?.len();
    let mut header = [0u8; sqlite_header::HEADER_BYTES];
    if len < header.len() as u64 {
        return Err(not("shorter than a SQLite header"));
    }
    file.read_exact(&mut header).map_err(io(path))?;
    let page_size =
        sqlite_header::declared_page_size(&header).ok_or_else(|| not("no SQLite header"))?;
    let page_size = validate_page_size(page_size).map_err(|e| not(&e.to_string()))?;
    if sqlite_header::wal_mode(&header) {
        return Err(not(
            "it is in WAL mode; run `PRAGMA journal_mode=DELETE` on it first (which checkpoints it)",
        ));
    }
    if len % page_size as u64 != 0 {
        return Err(not(&format!(
            "its size {len} is not a multiple of its page size {page_size}"
        )));
    }
    let pages = len / page_size as u64;
    if pages > PAGE_COUNT_MAX {
        return Err(not("too many pages"));
    }
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    Ok((page_size, pages as u32))
}

/// Uploads `file` as the next version of `name` (creating the database if
/// needed). Readers see the old version until the one root swap at the end.
/// `progress(done, total)` is called in bytes.
pub async fn push(
    backend: Arc<dyn Backend>,
    name: &DbName,
    path: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<Root, TransferError> {
    push_as(backend, name, path, progress, false).await
}

/// Uploads `file` as a new database `name` (for `migrate`): fails with
/// [`StorageError::AlreadyExists`] if `name` exists when the push starts
/// or is created before its root swap, which replaces only what was
/// there when it started (nothing, or a removed database's tombstone).
pub async fn push_new(
    backend: Arc<dyn Backend>,
    name: &DbName,
    path: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<Root, TransferError> {
    push_as(backend, name, path, progress, true).await
}

/// `push`, or with `create_only` `push_new`.
async fn push_as(
    backend: Arc<dyn Backend>,
    name: &DbName,
    path: &Path,
    mut progress: impl FnMut(u64, u64),
    create_only: bool,
) -> Result<Root, TransferError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let (page_size, page_count) = sqlite_geometry(path, &mut file)?;
    // An exclusive writer's root makes the swap take the lease: a claimed
    // snapshot must stay the latest root while its lease lasts.
    let (expected, replaces, base) = match read_stored(&*backend, name).await? {
        Stored::Live(meta, root) if !create_only => {
            (Some(meta.version), Replaces::Database(root.db_id), root)
        }
        // new_root fails if the name is live.
        _ => {
            let (expected, fresh) = new_root(&*backend, name, page_size).await?;
            (expected, Replaces::Nothing, fresh)
        }
    };
    let total = page_count as u64 * page_size as u64;
    // Salts every sector the push writes (docs/format.md, "Sectors").
    let txn_id = crate::random_u64();
    let mut changes: BTreeMap<u32, Hash> = BTreeMap::new();
    let mut buf = vec![0u8; page_size as usize * PAGES_PER_CALL];
    let mut index = 0u32;
    while index < page_count {
        let n = (page_count - index).min(PAGES_PER_CALL as u32) as usize;
        let chunk = &mut buf[..n * page_size as usize];
        file.read_exact(chunk).map_err(io(path))?;
        let mut sectors = Vec::with_capacity(n);
        for page in chunk.chunks_exact(page_size as usize) {
            let page_hash = if page.iter().all(|b| *b == 0) {
                ZERO_HASH // reads as zeros; nothing to store
            } else {
                let stored = salted(page, Salt::page(index, txn_id));
                let h = hash(&stored);
                sectors.push((h, stored));
                h
            };
            changes.insert(index, page_hash);
            index += 1;
        }
        store_sectors(&*backend, name, base.db_id, expected, &sectors).await?;
        progress(index as u64 * page_size as u64, total);
    }
    // The manifest is built from scratch: nothing of the old one is needed.
    let empty = Root {
        page_count: 0,
        tree: TreeRef::EMPTY,
        overlay: Vec::new(),
        top_inline: None,
        ..base.clone()
    };
    let mut source = NoChunks;
    let update = Manifest::new(&empty).update(changes, page_count, txn_id, &mut source)?;
    let chunks: Vec<(Hash, Vec<u8>)> = update.new_chunks;
    for batch in chunks.chunks(PAGES_PER_CALL) {
        store_sectors(&*backend, name, base.db_id, expected, batch).await?;
    }
    let root = Root {
        db_id: base.db_id,
        version: expected.map_or(base.version, |v| v + 1),
        page_size,
        page_count,
        commit_ms: crate::clock::Clock::System.now_ms(),
        txn_id,
        tree: update.tree,
        overlay: update.overlay,
        lease_required: false,
        top_inline: update.top_inline,
    };
    match swap_root(
        &*backend,
        name,
        expected,
        replaces,
        base.lease_required,
        &root,
    )
    .await
    {
        Ok(()) => Ok(root),
        Err(StorageError::Conflict) if create_only => Err(StorageError::AlreadyExists(format!(
            "database {name:?} was created in the {} while this one was stored; nothing was overwritten",
            backend.describe()
        ))
        .into()),
        Err(StorageError::Conflict) => Err(TransferError::Raced(name.clone())),
        Err(e) => Err(e.into()),
    }
}

/// Stores sectors a push writes before its root swap, after their
/// intent: the swap replaces version `expected` (none: creates the name's
/// first), so it lands as `expected + 1` or never (docs/format.md,
/// "Intents").
async fn store_sectors(
    backend: &dyn Backend,
    name: &DbName,
    db: DbId,
    expected: Option<u64>,
    sectors: &[(Hash, Vec<u8>)],
) -> Result<(), TransferError> {
    let now_ms = crate::clock::Clock::System.now_ms();
    crate::intent::record(backend, name, db, expected.unwrap_or(0), sectors, now_ms).await?;
    backend
        .put_sectors(db, sectors)
        .await
        .map_err(StorageError::from)?;
    Ok(())
}

/// A chunk source for a manifest built from nothing.
struct NoChunks;

impl ChunkSource for NoChunks {
    type Error = TransferError;
    fn load(&mut self, hashes: &[Hash]) -> Result<Vec<Arc<Chunk>>, TransferError> {
        Err(TransferError::Corrupt(format!(
            "a new manifest asked for {} old chunks",
            hashes.len()
        )))
    }
}

/// Loads manifest chunks from a backend (blocking the current worker thread
/// of a multi-threaded runtime, since the format's trait is synchronous).
struct BackendChunks {
    backend: Arc<dyn Backend>,
    db: DbId,
    /// Every chunk loaded and verified so far.
    loaded: std::collections::HashSet<Hash>,
}

impl BackendChunks {
    fn new(backend: Arc<dyn Backend>, db: DbId) -> BackendChunks {
        BackendChunks {
            backend,
            db,
            loaded: std::collections::HashSet::new(),
        }
    }
}

impl ChunkSource for BackendChunks {
    type Error = TransferError;
    fn load(&mut self, hashes: &[Hash]) -> Result<Vec<Arc<Chunk>>, TransferError> {
        let found = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.backend.get_sectors(self.db, hashes))
        })
        .map_err(StorageError::from)?;
        hashes
            .iter()
            .zip(found)
            .map(|(h, bytes)| {
                let bytes = bytes.ok_or_else(|| {
                    TransferError::Corrupt(format!("manifest chunk {} is missing", hash_hex(h)))
                })?;
                verify(h, &bytes)?;
                self.loaded.insert(*h);
                Ok(Arc::new(Chunk::decode(&bytes)?))
            })
            .collect()
    }
}

/// Downloads a consistent snapshot of `name` (its current version, or the
/// one `at` names) into `dest`, replacing it if it exists: written beside
/// it under a temporary name and renamed, so `dest` is whole or untouched.
/// `progress(done, total)` is called in bytes.
pub async fn pull(
    backend: Arc<dyn Backend>,
    name: &DbName,
    at: Option<At>,
    dest: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<Root, TransferError> {
    pull_file(backend, name, at, dest, true, progress).await
}

/// [`pull`] that refuses to replace a file: [`TransferError::Exists`] if
/// `dest` exists, before anything is read — and at the end, if it appeared
/// meanwhile (the temporary file is linked to `dest`, never renamed over it).
pub async fn pull_new(
    backend: Arc<dyn Backend>,
    name: &DbName,
    at: Option<At>,
    dest: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<Root, TransferError> {
    if dest.symlink_metadata().is_ok() {
        return Err(TransferError::Exists {
            path: dest.to_path_buf(),
        });
    }
    pull_file(backend, name, at, dest, false, progress).await
}

/// Downloads a consistent snapshot of `name` into `out` (standard output,
/// say), each page checked against its hash as it is written.
pub async fn pull_to_writer(
    backend: Arc<dyn Backend>,
    name: &DbName,
    at: Option<At>,
    out: &mut impl Write,
    label: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Root, TransferError> {
    let root = read_pulled_root(&*backend, name, at).await?;
    copy_pages(&backend, &root, out, &mut progress)
        .await
        .map_err(|e| match e {
            CopyError::Transfer(e) => e,
            CopyError::Write(e) => io(label)(e),
        })?;
    out.flush().map_err(io(label))?;
    Ok(root)
}

async fn read_pulled_root(
    backend: &dyn Backend,
    name: &DbName,
    at: Option<At>,
) -> Result<Root, TransferError> {
    let (_, root) = match at {
        None => read_root(backend, name).await?,
        Some(at) => crate::history::read_root_at(backend, name, at).await?,
    };
    Ok(root)
}

async fn pull_file(
    backend: Arc<dyn Backend>,
    name: &DbName,
    at: Option<At>,
    dest: &Path,
    replace: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Root, TransferError> {
    let root = read_pulled_root(&*backend, name, at).await?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pull".into());
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| TransferError::Corrupt(e.to_string()))?;
    let tmp = dir.join(format!(
        ".{file_name}.donut-pull-{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let result = pull_into(&backend, &root, &tmp, &mut progress).await;
    let result = result.and_then(|_| {
        if replace {
            std::fs::rename(&tmp, dest).map_err(io(dest))?;
        } else {
            // A link fails if `dest` exists: nothing is replaced.
            std::fs::hard_link(&tmp, dest).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => TransferError::Exists {
                    path: dest.to_path_buf(),
                },
                _ => io(dest)(e),
            })?;
            std::fs::remove_file(&tmp).map_err(io(&tmp))?;
        }
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| root)
}

async fn pull_into(
    backend: &Arc<dyn Backend>,
    root: &Root,
    tmp: &Path,
    progress: &mut impl FnMut(u64, u64),
) -> Result<Verified, TransferError> {
    let mut out = std::fs::File::create(tmp).map_err(io(tmp))?;
    let verified = copy_pages(backend, root, &mut out, progress)
        .await
        .map_err(|e| match e {
            CopyError::Transfer(e) => e,
            CopyError::Write(e) => io(tmp)(e),
        })?;
    out.sync_all().map_err(io(tmp))?;
    Ok(verified)
}

/// What a walk of a root read and checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Pages read and checked against their hashes.
    pub pages: u64,
    /// Pages that read as zeros (not stored).
    pub zero_pages: u64,
    /// Distinct manifest chunks read and checked.
    pub chunks: u64,
}

/// Reads every page and manifest chunk `root` reaches and checks each
/// against its hash (`debug verify`): an error names the first one
/// missing or wrong.
pub async fn verify_root(
    backend: Arc<dyn Backend>,
    root: &Root,
) -> Result<Verified, TransferError> {
    copy_pages(&backend, root, &mut std::io::sink(), &mut |_, _| {})
        .await
        .map_err(|e| match e {
            CopyError::Transfer(e) => e,
            CopyError::Write(e) => TransferError::Corrupt(e.to_string()),
        })
}

/// The hashes of pages `indices` (page number − 1) in `root`'s manifest.
pub async fn page_hashes(
    backend: Arc<dyn Backend>,
    root: &Root,
    indices: &[u32],
) -> Result<Vec<Hash>, TransferError> {
    let mut source = BackendChunks::new(backend, root.db_id);
    Manifest::new(root).lookup_many(indices, &mut source)
}

enum CopyError {
    Transfer(TransferError),
    Write(std::io::Error),
}

impl<E: Into<TransferError>> From<E> for CopyError {
    fn from(e: E) -> CopyError {
        CopyError::Transfer(e.into())
    }
}

/// Writes every page of `root` to `out` in order, each checked against
/// its hash.
async fn copy_pages(
    backend: &Arc<dyn Backend>,
    root: &Root,
    out: &mut impl Write,
    progress: &mut impl FnMut(u64, u64),
) -> Result<Verified, CopyError> {
    let page_size = root.page_size as usize;
    let total = root.file_size();
    let mut source = BackendChunks::new(backend.clone(), root.db_id);
    let mut verified = Verified::default();
    let zeros = vec![0u8; page_size];
    let mut start = 0u32;
    while start < root.page_count {
        let end = (start as u64 + PAGES_PER_CALL as u64).min(root.page_count as u64) as u32;
        let indices: Vec<u32> = (start..end).collect();
        let hashes = Manifest::new(root).lookup_many(&indices, &mut source)?;
        let wanted: Vec<Hash> = hashes.iter().copied().filter(|h| *h != ZERO_HASH).collect();
        let found = backend
            .get_sectors(root.db_id, &wanted)
            .await
            .map_err(StorageError::from)?;
        let mut pages = wanted.iter().zip(found);
        for (index, page_hash) in indices.iter().zip(&hashes) {
            if *page_hash == ZERO_HASH {
                out.write_all(&zeros).map_err(CopyError::Write)?;
                verified.zero_pages += 1;
                continue;
            }
            let (h, bytes) = pages.next().expect("one fetched sector per wanted hash");
            let bytes = bytes.ok_or_else(|| {
                TransferError::Corrupt(format!("page {} ({}) is missing", index + 1, hash_hex(h)))
            })?;
            verify(h, &bytes)?;
            let bytes = plain(&bytes);
            if bytes.len() != page_size {
                return Err(TransferError::Corrupt(format!(
                    "page {} is {} bytes, not {page_size}",
                    index + 1,
                    bytes.len()
                ))
                .into());
            }
            out.write_all(bytes).map_err(CopyError::Write)?;
            verified.pages += 1;
        }
        progress(end as u64 * page_size as u64, total);
        start = end;
    }
    verified.chunks = source.loaded.len() as u64;
    Ok(verified)
}
