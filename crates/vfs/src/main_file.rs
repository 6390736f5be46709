//! The main database file as SQLite sees it, mapped onto a root, a manifest
//! and content-addressed pages (docs/format.md). No C here: `vfs.rs` adapts
//! these methods to SQLite's callbacks.
//!
//! The protocol in one paragraph: taking a SHARED lock reads the root once and
//! pins it (the read snapshot); reads resolve pages through that root only;
//! writes are buffered in `pending`; the commit — SQLite's
//! COMMIT_ATOMIC_WRITE, or the database xSync on the rollback-journal path —
//! stores the new pages and manifest chunks, then swaps the root from the
//! pinned version to the next. That swap is the only commit point.

use crate::error::{describe_storage_error as describe, set_last};
use crate::memory::CACHE_ENTRY_OVERHEAD_BYTES;
use crate::port::{Database, Lock, LockMode, StorageError, StoredRoot};
use crate::shared::Vfs;
use donut_format::limits::SECTORS_PER_CALL_MAX;
use donut_format::sqlite_header;
use donut_format::{
    Chunk, ChunkSource, DbId, FormatError, HEAD_PAGES, Hash, Manifest, PAGE_COUNT_MAX, Root, Salt,
    TreeRef, ZERO_HASH, hash_hex, validate_page_size,
};
use libsqlite3_sys as ffi;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

/// Most bytes one `put-sectors` call carries; a larger commit is sent in
/// several calls (all before the root swap).
const PUT_CALL_BYTES: usize = 8 << 20;
// A commit whose sectors fit the one-request limits goes out in the
// `commit-root` call itself.
use donut_format::limits::{ONE_REQUEST_BYTES_MAX, ONE_REQUEST_SECTORS_MAX};

/// Most bytes of sectors one `get-sectors` call asks for (by the largest
/// each can be): the answer lands in the instance's memory at once.
const GET_CALL_BYTES: usize = 16 << 20;

/// Largest manifest chunk: its header and `FANOUT` hashes.
const CHUNK_BYTES_MAX: usize = 4 + donut_format::FANOUT * 32;

/// Reads `keys` in as many `get-sectors` calls as the per-call limits
/// need — at most `SECTORS_PER_CALL_MAX` keys and about `GET_CALL_BYTES`
/// bytes a call, key *i* being at most `bytes_max(i)` bytes — so a read
/// never fails because a database (or a read-ahead, or a tree level) is
/// big. The answers come back in `keys`' order, one per key.
fn get_sectors_in_calls(
    handle: &dyn Database,
    keys: &[Vec<u8>],
    bytes_max: impl Fn(usize) -> usize,
) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
    let mut out = Vec::with_capacity(keys.len());
    let mut start = 0;
    while start < keys.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < keys.len()
            && end - start < SECTORS_PER_CALL_MAX
            && (end == start || bytes + bytes_max(end) <= GET_CALL_BYTES)
        {
            bytes += bytes_max(end);
            end += 1;
        }
        assert!(end > start && end - start <= SECTORS_PER_CALL_MAX);
        let batch = &keys[start..end];
        let fetched = handle.get_sectors(batch)?;
        if fetched.len() != batch.len() {
            return Err(StorageError::Corrupt(format!(
                "storage returned {} sectors for {} keys",
                fetched.len(),
                batch.len()
            )));
        }
        out.extend(fetched);
        start = end;
    }
    Ok(out)
}

/// A failed VFS operation: the SQLite result code, and the words for
/// [`crate::last_storage_error`].
#[derive(Debug)]
pub struct Fail {
    pub code: i32,
    /// A commit whose outcome is unknown: it may have landed.
    pub unknown: bool,
}

impl Fail {
    fn new(code: i32, message: String) -> Fail {
        set_last(message);
        Fail {
            code,
            unknown: false,
        }
    }
}

impl From<FormatError> for Fail {
    fn from(e: FormatError) -> Fail {
        Fail::new(ffi::SQLITE_IOERR_CORRUPTFS, format!("corrupt: {e}"))
    }
}

pub(crate) fn decode_root(name: &str, stored: &StoredRoot) -> Result<Root, String> {
    let root = Root::decode(&stored.body).map_err(|e| e.to_string())?;
    if root.version != stored.version {
        return Err(format!(
            "root of {name:?} is stored as version {} but says {}",
            stored.version, root.version
        ));
    }
    Ok(root)
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // wasi:random never fails in practice; a zero id only weakens the
    // unknown-outcome check, it cannot break a commit.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Decodes a fetched manifest chunk into the instance cache.
fn cache_chunk(
    vfs: &Vfs,
    name: &str,
    db: DbId,
    h: &Hash,
    bytes: Option<Vec<u8>>,
) -> Result<Arc<Chunk>, Fail> {
    let bytes = bytes.ok_or_else(|| {
        Fail::new(
            ffi::SQLITE_IOERR_CORRUPTFS,
            format!(
                "corrupt: manifest chunk {} of {name:?} is missing",
                hash_hex(h)
            ),
        )
    })?;
    let chunk = Arc::new(Chunk::decode(&bytes)?);
    vfs.caches
        .borrow_mut()
        .chunks
        .insert((db, *h), chunk.clone(), bytes.len());
    Ok(chunk)
}

/// The root's inline top chunk, decoded into the instance cache; `None` if
/// the root carries none.
fn inline_top(vfs: &Vfs, name: &str, root: &Root) -> Result<Option<Arc<Chunk>>, Fail> {
    let Some(bytes) = &root.top_inline else {
        return Ok(None);
    };
    debug_assert_eq!(
        donut_format::hash(bytes),
        root.tree.top,
        "checked at decode"
    );
    cache_chunk(vfs, name, root.db_id, &root.tree.top, Some(bytes.clone())).map(Some)
}

/// The manifest chunks a reader with a cold cache fetches with the head
/// pages: the top chunk if the root does not carry it, else the level below
/// it when that is at most [`HEAD_CHUNKS_MAX`] chunks (the whole manifest
/// of a database up to 8 MiB of 4 KiB pages, or the upper levels of a
/// larger one), so the first B-tree descents find their hashes cached.
fn chunks_with_head(vfs: &Vfs, name: &str, root: &Root) -> Result<Vec<Hash>, Fail> {
    let (db, top) = (root.db_id, root.tree.top);
    if top == ZERO_HASH {
        return Ok(Vec::new());
    }
    let cached = vfs.caches.borrow_mut().chunks.get(&(db, top));
    let top_chunk = match cached {
        Some(chunk) => chunk,
        None => match inline_top(vfs, name, root)? {
            Some(chunk) => chunk,
            None => return Ok(vec![top]),
        },
    };
    if root.tree.depth < 2 {
        return Ok(Vec::new());
    }
    let mut below: Vec<Hash> = top_chunk
        .entries
        .iter()
        .copied()
        .filter(|h| *h != ZERO_HASH)
        .collect();
    below.sort_unstable();
    below.dedup();
    if below.len() > HEAD_CHUNKS_MAX {
        return Ok(Vec::new());
    }
    let caches = vfs.caches.borrow();
    below.retain(|h| !caches.chunks.contains(&(db, *h)));
    Ok(below)
}

/// Most chunks [`chunks_with_head`] adds to a cold reader's first request
/// (8 leaf chunks: up to 64 KiB, ~8 read units).
const HEAD_CHUNKS_MAX: usize = 8;

/// What a transaction changes: page index → new hash, and the pending pages
/// to store (hash, index), each content once.
struct Changes {
    changes: BTreeMap<u32, Hash>,
    new_pages: Vec<(Hash, u32)>,
}

/// Loads manifest chunks through the instance cache, fetching every miss of
/// one tree level in one `get-sectors` call.
struct Source<'a> {
    vfs: &'a Vfs,
    name: &'a str,
    handle: &'a dyn Database,
    root: &'a Root,
}

impl ChunkSource for Source<'_> {
    type Error = Fail;

    fn load(&mut self, hashes: &[Hash]) -> Result<Vec<Arc<Chunk>>, Fail> {
        let db = self.root.db_id;
        let mut out: Vec<Option<Arc<Chunk>>> = hashes
            .iter()
            .map(|h| self.vfs.caches.borrow_mut().chunks.get(&(db, *h)))
            .collect();
        for (h, chunk) in hashes.iter().zip(out.iter_mut()) {
            if chunk.is_none() && *h == self.root.tree.top {
                *chunk = inline_top(self.vfs, self.name, self.root)?;
            }
        }
        let missing: Vec<usize> = (0..hashes.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let keys: Vec<Vec<u8>> = missing.iter().map(|&i| hashes[i].to_vec()).collect();
            let fetched =
                get_sectors_in_calls(self.handle, &keys, |_| CHUNK_BYTES_MAX).map_err(|e| {
                    storage_fail(
                        self.name,
                        "reading the manifest of",
                        e,
                        ffi::SQLITE_IOERR_READ,
                    )
                })?;
            if fetched.len() != keys.len() {
                return Err(Fail::new(
                    ffi::SQLITE_IOERR_READ,
                    "storage returned the wrong number of sectors".into(),
                ));
            }
            for (&i, bytes) in missing.iter().zip(fetched) {
                out[i] = Some(cache_chunk(self.vfs, self.name, db, &hashes[i], bytes)?);
            }
        }
        Ok(out.into_iter().map(|c| c.expect("filled")).collect())
    }
}

/// How a connection's write transactions are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// No lock: the root compare-and-swap at commit decides; the loser gets
    /// SQLITE_BUSY_SNAPSHOT and retries.
    Optimistic,
    /// An exclusive lease on the database's lock item from the first write
    /// (RESERVED) to the end of the transaction; the commit is fenced by it.
    Lease,
    /// The lease from the first write until the connection closes, and
    /// roots that require it of every writer: while the lease lasts nobody
    /// else can commit, so transactions start without reading the root and
    /// an autocommit write is one request (ARCHITECTURE.md, "Exclusive
    /// writers").
    Exclusive,
}

/// Default lease length: long enough for a large commit, short enough that
/// a crashed holder's writers resume soon.
pub const LEASE_MS_DEFAULT: u32 = 10_000;
/// Longest lease the host grants.
pub use donut_format::limits::LEASE_MS_MAX;

pub struct MainDb {
    vfs: &'static Vfs,
    name: String,
    handle: Box<dyn Database>,
    /// SQLite lock level (SQLITE_LOCK_*).
    lock: i32,
    /// The pinned root while lock >= SHARED; the last one seen otherwise.
    snapshot: Rc<Root>,
    /// Page index → bytes written since the snapshot, not yet committed.
    pending: BTreeMap<u32, Vec<u8>>,
    /// Page index → hash of pages this transaction wrote and already
    /// stored (spilled: `MemoryPlan::spill_bytes`); invisible until the root swap.
    spilled: BTreeMap<u32, Hash>,
    /// The write transaction's id, chosen at its first stored sector (0:
    /// not yet): it salts every sector the transaction writes
    /// (`donut_format::salt`) and its root carries it.
    txn_id: u64,
    /// File size set by writes or truncation, if it changed.
    pending_size: Option<u64>,
    /// Page size of the first write to an empty database.
    new_page_size: Option<u32>,
    /// Inside BEGIN/COMMIT_ATOMIC_WRITE.
    in_batch: bool,
    /// A commit failed: SQLite will roll back by rewriting old pages, which
    /// must not reach storage. Cleared when the lock drops.
    failed: bool,
    /// The last commit's outcome is unknown (it may have landed): SQLite's
    /// journal retry of it must fail, not write a second version.
    refuse_retry: bool,
    /// When `crate::connect` read the snapshot, if it did: a first read
    /// transaction that starts within FRESH_ROOT_MS of that may use it
    /// instead of reading the root again (docs: ARCHITECTURE.md, "Reads").
    fresh_since: Option<std::time::Instant>,
    /// Read-ahead state: the page index a sequential read would start at,
    /// and how many reads in a row have been sequential.
    next_sequential: u32,
    streak: u32,
    writer: Writer,
    lease_ms: u32,
    /// The lease held from RESERVED to the end of a write transaction (to
    /// the connection's end for an exclusive writer).
    lease: Option<Box<dyn Lock>>,
    /// Exclusive writers: `lease` has been held without a gap since a root
    /// requiring it was current (read under it, or written by us), so the
    /// snapshot is the latest root for as long as the lease lasts.
    claimed: bool,
    /// This connection's key in the VFS's lock table (`Vfs::reserved`).
    id: u64,
    /// The super-journal of a multi-database commit this connection's
    /// changes wait in (see [`stage`]): they commit when SQLite deletes it.
    staged: Option<String>,
    /// The SQLite connection (`sqlite3*`) this file belongs to, as
    /// SQLITE_FCNTL_PDB told; 0 if it did not.
    connection: usize,
    /// This write transaction's commit landed: until the lock drops, SQLite
    /// only sizes the file ([`MainDb::only_sizes_the_file`]).
    committed: bool,
    /// Bytes of pending pages past which they are stored early
    /// (`MemoryPlan::spill_bytes`; `PRAGMA donut_spill_bytes`).
    spill_bytes: usize,
}

/// The staging key of a connection's transaction across databases that
/// SQLite commits without a super-journal.
fn connection_group(connection: usize) -> String {
    format!("connection {connection:x}")
}

/// A multi-database transaction: SQLite syncs each database's changes
/// naming the super-journal, then deletes the super-journal — its commit
/// point. So `db` commits at that deletion ([`commit_staged`]), not now.
pub(crate) fn stage(super_journal: &str, db: &mut MainDb) {
    if !db.has_changes() {
        return;
    }
    db.staged = Some(super_journal.to_string());
    db.vfs
        .staged
        .borrow_mut()
        .entry(super_journal.to_string())
        .or_default()
        .push(db as *mut MainDb);
}

/// SQLite deletes a super-journal: the commit point of the databases
/// staged under it. One database commits; several are refused, nothing of
/// any of them stored: DonutDB has no commit that swaps several roots at
/// once yet, and committing them one by one could leave half a
/// transaction behind (ARCHITECTURE.md, "Transactions across databases").
pub(crate) fn commit_staged(vfs: &Vfs, super_journal: &str) -> Result<(), Fail> {
    commit_group(vfs, super_journal, ffi::SQLITE_IOERR_DELETE, None)
}

/// Commits or refuses the group staged under `key`. `caller`: the
/// database whose callback this is, if one (its own pointer in the group
/// is not dereferenced: the caller's borrow stands for it).
fn commit_group(
    vfs: &Vfs,
    key: &str,
    io_code: i32,
    caller: Option<&mut MainDb>,
) -> Result<(), Fail> {
    let staged = vfs.staged.borrow_mut().remove(key);
    let Some(staged) = staged else {
        return Ok(());
    };
    let caller_ptr = caller
        .as_deref()
        .map_or(std::ptr::null(), |c| c as *const MainDb);
    let caller_staged = staged.iter().any(|&p| std::ptr::eq(p, caller_ptr));
    // SAFETY: a staged connection removes itself from `staged` when it
    // unlocks or closes, so every pointer left here is a live MainDb; the
    // guest is single-threaded, and the only one SQLite's current callback
    // borrows is the caller's, which is skipped here.
    let mut dbs: Vec<&mut MainDb> = staged
        .into_iter()
        .filter(|&p| !std::ptr::eq(p, caller_ptr))
        .map(|p| unsafe { &mut *p })
        .collect();
    if let Some(caller) = caller.filter(|_| caller_staged) {
        dbs.push(caller);
    }
    for db in dbs.iter_mut() {
        db.staged = None;
    }
    // SQLite writes page 1 of an empty database that joins a write
    // transaction (BEGIN IMMEDIATE on an ATTACHed set, say), though
    // nothing is stored in it. Such a database stays empty instead: it
    // reads the same, and the transaction is about the others.
    dbs.retain_mut(|db| {
        let only_initialized = db.only_initializes();
        if only_initialized {
            db.discard_changes();
        }
        !only_initialized
    });
    if dbs.is_empty() {
        return Ok(());
    }
    if let [db] = dbs.as_mut_slice() {
        return db.commit(io_code);
    }
    let names: Vec<String> = dbs.iter().map(|db| format!("{:?}", db.name)).collect();
    for db in dbs.iter_mut() {
        db.failed = true;
        db.discard_changes();
    }
    Err(Fail::new(
        io_code,
        format!(
            "one transaction writes {} DonutDB databases ({}): DonutDB cannot commit them atomically yet, so nothing was committed; write each database in a transaction of its own",
            names.len(),
            names.join(", ")
        ),
    ))
}

fn unstage(db: &mut MainDb) {
    if let Some(super_journal) = db.staged.take() {
        let me = db as *mut MainDb;
        if let Some(list) = db.vfs.staged.borrow_mut().get_mut(&super_journal) {
            list.retain(|&p| p != me);
        }
    }
}

/// Most bytes one read-ahead fetches.
const READ_AHEAD_BYTES: u64 = 2 << 20;

/// How long the root read at open stands in for the first transaction's.
const FRESH_ROOT_MS: u128 = 100;

impl MainDb {
    /// Opens the main file of database `name`, from a primed handle if
    /// `crate::connect` left one.
    pub fn open(vfs: &'static Vfs, name: &str, create: bool) -> Result<MainDb, Fail> {
        let primed = vfs.primed.borrow_mut().remove(name);
        let fresh_since = primed.is_some().then(std::time::Instant::now);
        let (handle, root) = match primed {
            Some(primed) => primed,
            None => open_handle(vfs, name, create)?,
        };
        Ok(MainDb {
            vfs,
            name: name.to_string(),
            handle,
            lock: ffi::SQLITE_LOCK_NONE,
            snapshot: Rc::new(root),
            pending: BTreeMap::new(),
            spilled: BTreeMap::new(),
            txn_id: 0,
            pending_size: None,
            new_page_size: None,
            in_batch: false,
            failed: false,
            refuse_retry: false,
            fresh_since,
            next_sequential: u32::MAX,
            streak: 0,
            writer: Writer::Optimistic,
            lease_ms: LEASE_MS_DEFAULT,
            lease: None,
            claimed: false,
            id: vfs.next_connection_id(),
            staged: None,
            connection: 0,
            committed: false,
            spill_bytes: vfs.plan.spill_bytes,
        })
    }

    /// The VFS this file was opened through.
    pub fn vfs(&self) -> &'static Vfs {
        self.vfs
    }

    pub fn set_connection(&mut self, connection: usize) {
        self.connection = connection;
    }

    pub fn writer(&self) -> Writer {
        self.writer
    }

    pub fn lease_ms(&self) -> u32 {
        self.lease_ms
    }

    /// `SQLITE_FCNTL_HAS_MOVED` for this database ([`Vfs::has_moved`]).
    pub fn has_moved(&self) -> bool {
        self.vfs.has_moved(&self.name)
    }

    /// Whether the root read at open would still stand in for the next
    /// transaction's (FRESH_ROOT_MS).
    pub fn open_root_fresh(&self) -> bool {
        self.fresh_since
            .is_some_and(|at| at.elapsed().as_millis() < FRESH_ROOT_MS)
    }

    /// The next transaction reads the root, whenever it starts: for a
    /// connection kept open past the request that opened it.
    pub fn spend_open_root(&mut self) {
        self.fresh_since = None;
    }

    /// The database's name, as opened.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The root version this connection reads: in a transaction, the
    /// snapshot it pinned; between transactions, the last root it saw.
    pub fn snapshot_version(&self) -> u64 {
        self.snapshot.version
    }

    pub fn spill_bytes(&self) -> usize {
        self.spill_bytes
    }

    pub fn set_spill_bytes(&mut self, bytes: usize) {
        self.spill_bytes = bytes;
    }

    /// Chooses the writer mode of the transactions that follow.
    pub fn set_writer(&mut self, writer: Writer) -> Result<(), String> {
        if self.lock >= ffi::SQLITE_LOCK_RESERVED {
            return Err("the writer mode cannot change inside a write transaction".into());
        }
        if writer != Writer::Exclusive {
            self.drop_lease();
        }
        self.writer = writer;
        Ok(())
    }

    /// Sets the length of the leases lease-mode writers take.
    pub fn set_lease_ms(&mut self, lease_ms: u32) -> Result<(), String> {
        if !(1..=LEASE_MS_MAX).contains(&lease_ms) {
            return Err(format!(
                "a lease of {lease_ms} ms; it must be 1..={LEASE_MS_MAX}"
            ));
        }
        self.lease_ms = lease_ms;
        Ok(())
    }

    /// Lease mode, on the way to RESERVED: takes the lease, then checks that
    /// the snapshot is still the latest root (a write on an older snapshot
    /// could only fail at commit: SQLITE_BUSY_SNAPSHOT now, which SQLite
    /// retries through its busy handler if the transaction read nothing).
    fn take_lease(&mut self) -> Result<(), Fail> {
        if self.claimed {
            return Ok(()); // the snapshot is the latest root
        }
        // An exclusive writer's lease, held since before this snapshot but
        // not claimed: the root may have moved under it. (One that lapsed
        // is replaced below, rather than fencing a commit to be refused.)
        if self.lease.is_some() && self.lease_left_ms() > 0 {
            let current = read_root(self.vfs, &self.name, &*self.handle, ffi::SQLITE_IOERR_LOCK)?;
            if current.version != self.snapshot.version {
                return Err(moved(&self.name));
            }
            return Ok(());
        }
        let lock = match self.handle.acquire(LockMode::Exclusive, self.lease_ms) {
            Ok(lock) => lock,
            Err(StorageError::Busy(m)) => {
                return Err(Fail::new(
                    ffi::SQLITE_BUSY,
                    format!("the write lease on {:?} is held: {m}", self.name),
                ));
            }
            Err(e) => return Err(storage_fail(&self.name, "lock", e, ffi::SQLITE_IOERR_LOCK)),
        };
        let current = match read_root(self.vfs, &self.name, &*self.handle, ffi::SQLITE_IOERR_LOCK) {
            Ok(root) => root,
            Err(fail) => {
                let _ = lock.release();
                return Err(fail);
            }
        };
        if current.version != self.snapshot.version {
            // An exclusive writer keeps the lease: its next transaction
            // starts from the root it reads under it.
            if self.writer == Writer::Exclusive {
                self.lease = Some(lock);
            } else {
                let _ = lock.release();
            }
            return Err(moved(&self.name));
        }
        self.claimed = self.writer == Writer::Exclusive && current.lease_required;
        self.lease = Some(lock);
        Ok(())
    }

    /// Whether an exclusive writer's claim still vouches for its snapshot:
    /// its lease has at least half its length left by the host's clock, so
    /// a writer whose clock runs up to half a lease ahead still cannot have
    /// taken it over (ARCHITECTURE.md, "Clock assumption").
    fn claim_holds(&mut self) -> bool {
        #[cfg(feature = "planted-bugs")]
        if crate::planted::active(crate::planted::Bug::TrustedClaims) {
            return self.claimed && self.lease.is_some();
        }
        self.claimed = self.claimed && self.lease_left_ms() >= self.claim_margin_ms();
        self.claimed
    }

    /// After a root read: an exclusive writer whose lease still holds
    /// claims it again if the root requires the lease.
    fn reclaim(&mut self) {
        if self.writer == Writer::Exclusive {
            let left_ms = self.lease_left_ms();
            self.claimed = self.snapshot.lease_required && left_ms >= self.claim_margin_ms();
        }
    }

    /// The least lease time left for a claim to hold: half the lease.
    fn claim_margin_ms(&self) -> u64 {
        (self.lease_ms / 2).max(1) as u64
    }

    /// Milliseconds the held lease has left by the host's clock (0: none).
    /// A lost or lapsed one is dropped (nothing to release) with its claim.
    fn lease_left_ms(&mut self) -> u64 {
        let left_ms = self.lease.as_ref().map_or(0, |l| l.remaining_ms());
        if left_ms == 0 {
            self.lease = None;
            self.claimed = false;
        }
        left_ms
    }

    fn drop_lease(&mut self) {
        self.claimed = false;
        if let Some(lock) = self.lease.take() {
            // If this fails the lease simply expires.
            let _ = lock.release();
        }
    }

    fn page_size(&self) -> u32 {
        self.new_page_size.unwrap_or(self.snapshot.page_size)
    }

    pub fn file_size(&self) -> u64 {
        self.pending_size.unwrap_or(self.snapshot.file_size())
    }

    fn has_changes(&self) -> bool {
        !self.pending.is_empty()
            || !self.spilled.is_empty()
            || self
                .pending_size
                .is_some_and(|size| size != self.snapshot.file_size())
    }

    fn discard_changes(&mut self) {
        self.pending.clear();
        self.spilled.clear();
        self.txn_id = 0;
        self.pending_size = None;
        self.new_page_size = None;
    }

    pub fn lock(&mut self, level: i32) -> Result<(), Fail> {
        if self.lock == ffi::SQLITE_LOCK_NONE && level >= ffi::SQLITE_LOCK_SHARED {
            // A read transaction starts: pin the current root (the one read
            // at open, if this is the first; it is as current as a fresh one
            // to a caller who just opened the database). Opening's own
            // schema load uses it without using it up.
            let fresh_since = if self.vfs.loading_schema.get() {
                self.fresh_since
            } else {
                self.fresh_since.take()
            };
            // Never once the host has seen a newer version (one of its
            // instances committed it, or read it): what a program did on
            // this host must be visible to what it does next.
            let fresh = fresh_since.is_some_and(|at| at.elapsed().as_millis() < FRESH_ROOT_MS)
                && self.handle.newest_version_seen() <= self.snapshot.version;
            // An exclusive writer's claim makes its snapshot the latest.
            if !fresh && !self.claim_holds() {
                let root = read_root(
                    self.vfs,
                    &self.name,
                    &*self.handle,
                    ffi::SQLITE_IOERR_RDLOCK,
                )?;
                self.snapshot = Rc::new(root);
                self.reclaim();
            }
            self.discard_changes();
        }
        // Optimistic writers: RESERVED and EXCLUSIVE cost nothing; the root
        // swap at commit decides — unless the snapshot requires the lease
        // (an exclusive writer wrote it). Lease writers take the lease first.
        if self.lock < ffi::SQLITE_LOCK_RESERVED && level >= ffi::SQLITE_LOCK_RESERVED {
            self.reserve()?;
            let needs_lease = self.writer != Writer::Optimistic || self.snapshot.lease_required;
            if needs_lease && let Err(fail) = self.take_lease() {
                self.unreserve();
                return Err(fail);
            }
        }
        self.lock = self.lock.max(level);
        if self.lock == ffi::SQLITE_LOCK_EXCLUSIVE && self.connection != 0 {
            self.vfs
                .exclusive
                .borrow_mut()
                .entry(self.connection)
                .or_default()
                .insert(self.id);
        }
        Ok(())
    }

    fn leave_exclusive(&mut self) {
        let mut exclusive = self.vfs.exclusive.borrow_mut();
        if let Some(set) = exclusive.get_mut(&self.connection) {
            set.remove(&self.id);
            if set.is_empty() {
                exclusive.remove(&self.connection);
            }
        }
    }

    /// Commits now, or — when another DonutDB database of this connection
    /// holds EXCLUSIVE too — stages the changes for the connection's phase
    /// two: SQLite is committing one transaction across databases without
    /// a super-journal (one of them has `synchronous = OFF` or
    /// `journal_mode = MEMORY | OFF`), one database after the other. It
    /// finishes every database's phase one before any phase two, so at the
    /// first phase two the staged databases are all there is: one commits,
    /// several are refused whole (`commit_group`). Found by the
    /// differential fuzzer (seed 5).
    fn commit_or_defer(&mut self, io_code: i32) -> Result<(), Fail> {
        let shared = self.connection != 0
            && self
                .vfs
                .exclusive
                .borrow()
                .get(&self.connection)
                .is_some_and(|set| set.iter().any(|&id| id != self.id));
        if shared {
            stage(&connection_group(self.connection), self);
            return Ok(());
        }
        self.commit(io_code)
    }

    /// Takes this instance's RESERVED lock on the database name: busy while
    /// another connection of the instance writes to it.
    fn reserve(&mut self) -> Result<(), Fail> {
        let holder = *self
            .vfs
            .reserved
            .borrow_mut()
            .entry(self.name.clone())
            .or_insert(self.id);
        if holder != self.id {
            return Err(Fail::new(
                ffi::SQLITE_BUSY,
                format!(
                    "another connection of this program is writing to {:?}",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    fn unreserve(&mut self) {
        let held = {
            let mut reserved = self.vfs.reserved.borrow_mut();
            let held = reserved.get(&self.name) == Some(&self.id);
            if held {
                reserved.remove(&self.name);
            }
            held
        };
        if held {
            // The writer's journal is done with (rolled back or finalized
            // while the lock was held).
            self.vfs.memfs.release(&format!("{}-journal", self.name));
        }
    }

    pub fn unlock(&mut self, level: i32) {
        if level <= ffi::SQLITE_LOCK_SHARED {
            // The write transaction is over; whatever was not committed is
            // rolled back.
            self.discard_changes();
            self.in_batch = false;
            self.failed = false;
            self.refuse_retry = false;
            self.committed = false;
            unstage(self);
            self.unreserve();
            if self.writer != Writer::Exclusive {
                self.drop_lease();
            }
        }
        if level < ffi::SQLITE_LOCK_EXCLUSIVE {
            self.leave_exclusive();
        }
        self.lock = level.min(self.lock);
    }

    pub fn lock_level(&self) -> i32 {
        self.lock
    }

    /// Resolves and fetches pages through the caches. With `ahead` > 0 and
    /// any page missing, the `ahead` pages after the last one asked for are
    /// fetched in the same call (read-ahead for sequential scans).
    fn fetch_pages(&self, indices: &[u32], ahead: u32) -> Result<Vec<Rc<[u8]>>, Fail> {
        let snap = &self.snapshot;
        let db = snap.db_id;
        let mut source = Source {
            vfs: self.vfs,
            name: &self.name,
            handle: &*self.handle,
            root: snap,
        };
        let mut hashes = Manifest::new(snap).lookup_many(indices, &mut source)?;
        // Pages this transaction spilled are stored under their own hashes.
        for (h, index) in hashes.iter_mut().zip(indices) {
            if let Some(spilled) = self.spilled.get(index) {
                *h = *spilled;
            }
        }
        let page_size = snap.page_size as usize;
        let mut found: HashMap<Hash, Rc<[u8]>> = HashMap::new();
        let mut missing: Vec<(Hash, u32)> = Vec::new();
        let mut wanted: HashSet<Hash> = HashSet::new();
        self.vfs.with_caches(|c| {
            for (&h, &index) in hashes.iter().zip(indices) {
                if h == ZERO_HASH || found.contains_key(&h) || wanted.contains(&h) {
                    continue;
                }
                match c.pages.get(&(db, h)) {
                    Some(page) => {
                        found.insert(h, page);
                    }
                    None => {
                        wanted.insert(h);
                        missing.push((h, index));
                    }
                }
            }
        });
        if !missing.is_empty() && ahead > 0 {
            let after = indices.iter().max().map_or(0, |i| i + 1);
            let extra: Vec<u32> = (after..snap.page_count.min(after.saturating_add(ahead)))
                .filter(|i| !self.pending.contains_key(i) && !self.spilled.contains_key(i))
                .collect();
            let extra_hashes = Manifest::new(snap).lookup_many(&extra, &mut source)?;
            self.vfs.with_caches(|c| {
                for (h, index) in extra_hashes.into_iter().zip(extra) {
                    if h != ZERO_HASH && !wanted.contains(&h) && !c.pages.contains(&(db, h)) {
                        wanted.insert(h);
                        missing.push((h, index));
                    }
                }
            });
        }
        // Page 1 missing: a reader with a cold cache, or one whose page 1
        // another writer changed. The head pages (whose hashes the root
        // carries: in most schemas the first tables' and indexes' root
        // pages) and the manifest's top chunk come in the same request, so
        // the B-tree descents that follow start from cache.
        let mut chunks_wanted: Vec<Hash> = Vec::new();
        if missing.iter().any(|&(_, index)| index == 0) {
            self.vfs.with_caches(|c| {
                for &(index, h) in snap.overlay.iter().take_while(|e| e.0 < HEAD_PAGES) {
                    if h != ZERO_HASH && !wanted.contains(&h) && !c.pages.contains(&(db, h)) {
                        wanted.insert(h);
                        missing.push((h, index));
                    }
                }
            });
            chunks_wanted = chunks_with_head(self.vfs, &self.name, snap)?;
        }
        if !missing.is_empty() {
            let keys: Vec<Vec<u8>> = missing
                .iter()
                .map(|(h, _)| h.to_vec())
                .chain(chunks_wanted.iter().map(|h| h.to_vec()))
                .collect();
            let page_bytes_max = page_size + donut_format::salt::SALT_BYTES;
            let pages = missing.len();
            let mut fetched = get_sectors_in_calls(&*self.handle, &keys, |i| {
                if i < pages {
                    page_bytes_max
                } else {
                    CHUNK_BYTES_MAX
                }
            })
            .map_err(|e| storage_fail(&self.name, "reading pages of", e, ffi::SQLITE_IOERR_READ))?;
            if fetched.len() != keys.len() {
                return Err(Fail::new(
                    ffi::SQLITE_IOERR_READ,
                    "storage returned the wrong number of sectors".into(),
                ));
            }
            let chunk_bytes = fetched.split_off(missing.len());
            for (h, bytes) in chunks_wanted.iter().zip(chunk_bytes) {
                cache_chunk(self.vfs, &self.name, db, h, bytes)?;
            }
            for ((h, index), bytes) in missing.iter().zip(fetched) {
                let page_no = *index as u64 + 1;
                let mut bytes = bytes.ok_or_else(|| {
                    Fail::new(
                        ffi::SQLITE_IOERR_CORRUPTFS,
                        format!(
                            "corrupt: page {page_no} ({}) of {:?} is missing",
                            hash_hex(h),
                            self.name
                        ),
                    )
                })?;
                donut_format::salt::strip(&mut bytes);
                if bytes.len() != page_size {
                    return Err(Fail::new(
                        ffi::SQLITE_IOERR_CORRUPTFS,
                        format!(
                            "corrupt: page {page_no} of {:?} is {} bytes, not {page_size}",
                            self.name,
                            bytes.len()
                        ),
                    ));
                }
                let page: Rc<[u8]> = bytes.into();
                self.vfs
                    .caches
                    .borrow_mut()
                    .insert_page(db, *h, page.clone());
                found.insert(*h, page);
            }
        }
        let zeros: Rc<[u8]> = vec![0u8; page_size].into();
        Ok(hashes
            .iter()
            .map(|h| {
                if *h == ZERO_HASH {
                    zeros.clone()
                } else {
                    found[h].clone()
                }
            })
            .collect())
    }

    /// Reads `buf.len()` bytes at `offset`; false if it read past the end
    /// (the rest is zero-filled: SQLite's short read).
    pub fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool, Fail> {
        if buf.is_empty() {
            return Ok(true);
        }
        #[cfg(feature = "planted-bugs")]
        if crate::planted::active(crate::planted::Bug::UnpinnedReads)
            && self.lock == ffi::SQLITE_LOCK_SHARED
            && !self.has_changes()
        {
            // Planted bug: read the latest root instead of the snapshot.
            self.snapshot = Rc::new(read_root(
                self.vfs,
                &self.name,
                &*self.handle,
                ffi::SQLITE_IOERR_READ,
            )?);
        }
        let page_size = self.page_size() as u64;
        let size = self.file_size();
        let end = offset + buf.len() as u64;
        let first = offset / page_size;
        let last = (end.min(size).max(offset + 1) - 1) / page_size;
        // Sequential access (each read starting where the last ended) grows
        // a read-ahead window, so a scan costs a round trip per window, not
        // per page.
        if first as u32 == self.next_sequential {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.streak = 0;
        }
        self.next_sequential = last as u32 + 1;
        let max_ahead = (READ_AHEAD_BYTES / page_size) as u32;
        let ahead = if self.streak >= 2 {
            self.streak.saturating_mul(8).min(max_ahead)
        } else {
            0
        };
        let wanted: Vec<u32> = (first..=last)
            .filter(|&i| i * page_size < size && !self.pending.contains_key(&(i as u32)))
            .map(|i| i as u32)
            .collect();
        let fetched: HashMap<u32, Rc<[u8]>> = if wanted.is_empty() {
            HashMap::new()
        } else {
            wanted
                .iter()
                .copied()
                .zip(self.fetch_pages(&wanted, ahead)?)
                .collect()
        };
        buf.fill(0);
        for index in first..=last {
            let page_start = index * page_size;
            if page_start >= size {
                break;
            }
            let page: &[u8] = match self.pending.get(&(index as u32)) {
                Some(p) => p,
                None => &fetched[&(index as u32)],
            };
            let from = offset.max(page_start);
            let to = end.min(page_start + page_size).min(size);
            if from >= to {
                continue;
            }
            let dst = &mut buf[(from - offset) as usize..(to - offset) as usize];
            dst.copy_from_slice(&page[(from - page_start) as usize..(to - page_start) as usize]);
        }
        Ok(end <= size)
    }

    pub fn write(&mut self, buf: &[u8], offset: u64) -> Result<(), Fail> {
        if self.failed {
            return Ok(()); // a rollback rewriting what storage never saw
        }
        if self.only_sizes_the_file(offset, Some(buf)) {
            return Ok(());
        }
        if self.snapshot.page_count == 0
            && self.pending.is_empty()
            && offset == 0
            && validate_page_size(buf.len() as u64).is_ok()
        {
            self.new_page_size = Some(buf.len() as u32);
        }
        let page_size = self.page_size() as u64;
        let end = offset + buf.len() as u64;
        if end.div_ceil(page_size) > PAGE_COUNT_MAX {
            return Err(Fail::new(
                ffi::SQLITE_FULL,
                format!("{:?} would exceed the largest page count", self.name),
            ));
        }
        let mut at = offset;
        while at < end {
            let index = at / page_size;
            let page_start = index * page_size;
            let to = end.min(page_start + page_size);
            let src = &buf[(at - offset) as usize..(to - offset) as usize];
            if at == page_start && to == page_start + page_size {
                self.pending.insert(index as u32, src.to_vec());
            } else {
                // A partial page: read, patch, keep the whole page.
                let mut page = vec![0u8; page_size as usize];
                if page_start < self.file_size() {
                    self.read(&mut page, page_start)?;
                }
                page[(at - page_start) as usize..(to - page_start) as usize].copy_from_slice(src);
                self.pending.insert(index as u32, page);
            }
            self.spilled.remove(&(index as u32));
            at = to;
        }
        self.pending_size = Some(self.file_size().max(end));
        if self.pending.len() * page_size as usize > self.spill_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Stores the pending pages (but page 1, which every commit rewrites)
    /// and keeps only their hashes: a large transaction's memory stays
    /// bounded. Nothing is visible until the root swap; if the transaction
    /// never commits, the sectors are garbage, as a refused commit's are.
    fn spill(&mut self) -> Result<(), Fail> {
        if self.new_page_size.is_none() {
            self.drop_unchanged()?;
        }
        let indices: Vec<u32> = self.pending.keys().copied().filter(|&i| i != 0).collect();
        let txn_id = self.txn_id();
        let hashes = self.hash_pages(&indices, txn_id, ffi::SQLITE_IOERR_WRITE)?;
        let pages = indices
            .iter()
            .zip(&hashes)
            .map(|(i, h)| (h.to_vec(), self.salted_page(*i, txn_id)));
        self.put_pages(pages, Vec::new(), ffi::SQLITE_IOERR_WRITE)?;
        for (index, page_hash) in indices.into_iter().zip(hashes) {
            self.pending.remove(&index);
            self.spilled.insert(index, page_hash);
        }
        Ok(())
    }

    /// After this transaction's commit landed, SQLite may still size the
    /// file before it unlocks (`pager_truncate`): truncate it to the
    /// page count page 1 declares — already the committed size — or grow
    /// it with a zero page to the page count it had in mind, which a
    /// backup from a larger page size leaves above what page 1 declares
    /// (found by the differential fuzzer, seed 78: the growth arrived as a
    /// change after the commit point and failed a commit that had landed).
    /// Neither changes the database: page 1's count bounds what it holds.
    fn only_sizes_the_file(&self, offset: u64, written: Option<&[u8]>) -> bool {
        self.committed
            && offset >= self.snapshot.file_size()
            && written.is_none_or(|buf| buf.iter().all(|&b| b == 0))
    }

    pub fn truncate(&mut self, size: u64) {
        if self.failed || self.only_sizes_the_file(size, None) {
            return;
        }
        let page_size = self.page_size() as u64;
        self.pending
            .retain(|&index, _| (index as u64) * page_size < size);
        self.spilled
            .retain(|&index, _| (index as u64) * page_size < size);
        if size != self.file_size() {
            self.pending_size = Some(size);
        }
    }

    pub fn sync(&mut self) -> Result<(), Fail> {
        if self.refuse_retry {
            self.refuse_retry = false;
            return Err(Fail::new(
                ffi::SQLITE_IOERR_FSYNC,
                format!(
                    "commit to {:?}: the outcome is unknown (it may have landed); not retried",
                    self.name
                ),
            ));
        }
        // The rollback-journal path commits here: SQLite syncs the database
        // (SQLITE_FCNTL_SYNC, then xSync unless `synchronous` is off) once
        // all of the transaction's pages are written.
        if !self.in_batch && !self.failed && self.staged.is_none() && self.has_changes() {
            self.check_counter_moved()?;
            return self.commit_or_defer(ffi::SQLITE_IOERR_FSYNC);
        }
        Ok(())
    }

    /// The pending changes only lay out an empty database: page 1 of a
    /// database that had no pages, with an empty schema table.
    fn only_initializes(&self) -> bool {
        let Some(page1) = self.pending.get(&0) else {
            return false;
        };
        self.snapshot.page_count == 0
            && self.pending.len() == 1
            && self.spilled.is_empty()
            && sqlite_header::page_count(page1) == Some(1)
            && page1.get(100) == Some(&0x0d) // a table B-tree leaf
            && page1.get(103..105) == Some(&[0, 0]) // with no cells
    }

    /// The backstop of every commit path: SQLite is finishing a commit
    /// (SQLITE_FCNTL_COMMIT_PHASETWO) while changes are still pending, so
    /// storage never took them. Fail it rather than let SQLite report it.
    pub fn commit_phase_two(&mut self) -> Result<(), Fail> {
        if let Some(key) = self.staged.clone()
            && key == connection_group(self.connection)
        {
            let vfs = self.vfs;
            return commit_group(vfs, &key, ffi::SQLITE_IOERR_FSYNC, Some(self));
        }
        if self.failed || self.staged.is_some() || !self.has_changes() {
            return Ok(());
        }
        self.failed = true;
        self.discard_changes();
        let what = if self.committed {
            "wrote after its commit point; the commit landed, the later changes were not stored"
        } else {
            "never reached a commit point; nothing was stored"
        };
        Err(Fail::new(
            ffi::SQLITE_IOERR_FSYNC,
            format!("SQLite finished a commit to {:?} that {what}", self.name),
        ))
    }

    /// A commit through SQLite's journal path always writes page 1 with
    /// the change counter of the version it replaces plus one. Page 1 still
    /// carrying the snapshot's counter means these writes restore an old
    /// state (a journal played back), not a transaction: refuse them.
    fn check_counter_moved(&self) -> Result<(), Fail> {
        let Some(page1) = self.pending.get(&0) else {
            return Ok(());
        };
        if self.snapshot.page_count == 0 {
            return Ok(());
        }
        let stored = self.fetch_pages(&[0], 0)?;
        let ours = sqlite_header::change_counter(page1);
        if ours.is_some() && ours == sqlite_header::change_counter(&stored[0]) {
            return Err(Fail::new(
                ffi::SQLITE_IOERR_FSYNC,
                format!(
                    "refused a commit to {:?} whose page 1 carries the change counter of the version it replaces (a journal played back, not a transaction); nothing was stored",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    pub fn begin_atomic_write(&mut self) {
        self.in_batch = true;
    }

    pub fn commit_atomic_write(&mut self) -> Result<(), Fail> {
        self.in_batch = false;
        self.commit_or_defer(ffi::SQLITE_IOERR_COMMIT_ATOMIC)
    }

    pub fn rollback_atomic_write(&mut self) {
        // SQLite either gives up or rewrites the pages through its journal
        // and syncs; either way the batch's buffered pages go.
        self.in_batch = false;
        self.discard_changes();
    }

    /// The commit: pages and chunks first, then the root swap.
    /// `io_code` is the SQLITE_IOERR_* to report when storage failed.
    fn commit(&mut self, io_code: i32) -> Result<(), Fail> {
        assert!(
            self.lock >= ffi::SQLITE_LOCK_RESERVED,
            "commit without a write lock"
        );
        let result = self.try_commit(io_code);
        if result.is_err() {
            self.claimed = false; // the next transaction reads the root
        }
        match &result {
            Ok(()) => self.committed = true,
            // Unknown: SQLite must not retry. Its journal retry would write
            // page 1 with a change counter one higher than the attempt that
            // may have landed, and its page cache would then pass for a
            // later version written by someone else (found by the
            // simulator). So the retry's sync fails (`refuse_retry`) and
            // SQLite rolls back its cache.
            Err(fail) if fail.unknown => {
                self.failed = true;
                self.refuse_retry = io_code == ffi::SQLITE_IOERR_COMMIT_ATOMIC;
            }
            // Nothing landed: an I/O failure inside a batch makes SQLite
            // retry through its journal (rewrite the pages and sync): a
            // second attempt, on the same snapshot.
            Err(fail)
                if io_code == ffi::SQLITE_IOERR_COMMIT_ATOMIC
                    && fail.code & 0xff == ffi::SQLITE_IOERR => {}
            Err(_) => self.failed = true,
        }
        self.discard_changes();
        result
    }

    /// A page-size change (VACUUM after `PRAGMA page_size`, a backup from
    /// a database with another page size): SQLite rewrote the file at the
    /// size page 1 now declares, in writes this VFS split at the old size.
    /// Re-cuts the pending file at the new size; true if it did.
    fn regroup_if_resized(&mut self) -> Result<bool, Fail> {
        let Some(new_size) = self
            .pending
            .get(&0)
            .and_then(|p| sqlite_header::page_size(p))
        else {
            return Ok(false);
        };
        if new_size == self.page_size() {
            return Ok(false);
        }
        let page_count = match sqlite_header::page_count(&self.pending[&0]) {
            Some(count) => count as u64,
            None => self.file_size().div_ceil(new_size as u64),
        };
        if page_count > PAGE_COUNT_MAX {
            return Err(Fail::new(
                ffi::SQLITE_FULL,
                format!("{:?} would exceed the largest page count", self.name),
            ));
        }
        let mut pages = BTreeMap::new();
        for index in 0..page_count {
            let mut page = vec![0u8; new_size as usize];
            self.read(&mut page, index * new_size as u64)?;
            pages.insert(index as u32, page);
        }
        self.pending = pages;
        self.spilled.clear(); // re-cut into `pending`
        self.new_page_size = Some(new_size);
        self.pending_size = Some(page_count * new_size as u64);
        Ok(true)
    }

    /// What this transaction changes below `page_count` (index → new
    /// hash, against `base`, whose chunks are read as of `snap`), and the
    /// pending pages to store, each content once; a pending page that holds
    /// what `base` has is no change (`unchanged`). Its lookup vectors are
    /// dropped before the manifest update, which holds the changes again.
    fn changes(
        &self,
        base: &Root,
        snap: &Root,
        page_count: u32,
        txn_id: u64,
        io_code: i32,
    ) -> Result<Changes, Fail> {
        let page_size = self.page_size() as usize;
        // Pages still in memory, then pages spilled earlier (their hashes
        // known, their sectors stored).
        let pending: Vec<u32> = self.pending.range(..page_count).map(|(&i, _)| i).collect();
        let spilled = self.spilled.range(..page_count);
        let indices: Vec<u32> = pending
            .iter()
            .copied()
            .chain(spilled.clone().map(|(&i, _)| i))
            .collect();
        let mut source = Source {
            vfs: self.vfs,
            name: &self.name,
            handle: &*self.handle,
            root: snap,
        };
        let current = Manifest::new(base).lookup_many(&indices, &mut source)?;
        let unchanged = self.unchanged(base.db_id, &pending, &current[..pending.len()])?;
        let (indices, current): (Vec<u32>, Vec<Hash>) = indices
            .into_iter()
            .zip(current)
            .filter(|(i, _)| !unchanged.contains(i))
            .unzip();
        let mut pending = pending;
        pending.retain(|i| !unchanged.contains(i));
        let hashes = self.hash_pages(&pending, txn_id, io_code)?;
        let hashes = hashes.into_iter().chain(spilled.map(|(_, &h)| h));
        let mut changes: BTreeMap<u32, Hash> = BTreeMap::new();
        let mut new_pages: Vec<(Hash, u32)> = Vec::new();
        let mut seen: HashSet<Hash> = HashSet::new();
        for ((&index, current), page_hash) in indices.iter().zip(current).zip(hashes) {
            if page_hash != current {
                changes.insert(index, page_hash);
                if self.pending.contains_key(&index) && seen.insert(page_hash) {
                    assert_eq!(
                        self.pending[&index].len(),
                        page_size,
                        "pending pages are whole"
                    );
                    new_pages.push((page_hash, index));
                }
            }
        }
        Ok(Changes { changes, new_pages })
    }

    fn try_commit(&mut self, io_code: i32) -> Result<(), Fail> {
        let snap = self.snapshot.clone();
        // After a page-size change every page is new: the manifest is built
        // from an empty one, not from the snapshot's (other-sized) pages.
        let base = if self.regroup_if_resized()? {
            Rc::new(Root {
                page_count: 0,
                tree: TreeRef::EMPTY,
                overlay: Vec::new(),
                top_inline: None,
                ..(*snap).clone()
            })
        } else {
            snap.clone()
        };
        let page_size = self.page_size();
        let mut page_count = self.file_size().div_ceil(page_size as u64);
        if let Some(count) = self
            .pending
            .get(&0)
            .and_then(|p| sqlite_header::page_count(p))
        {
            page_count = count as u64;
        }
        assert!(page_count <= PAGE_COUNT_MAX, "write checked the size");
        let page_count = page_count as u32;
        let txn_id = self.txn_id();
        let Changes { changes, new_pages } =
            self.changes(&base, &snap, page_count, txn_id, io_code)?;
        if changes.is_empty() && page_count == snap.page_count && page_size == snap.page_size {
            return Ok(()); // nothing changed: no round trip
        }
        let mut source = Source {
            vfs: self.vfs,
            name: &self.name,
            handle: &*self.handle,
            root: &snap,
        };
        let update = Manifest::new(&base).update(changes, page_count, txn_id, &mut source)?;
        let chunks: Vec<(Vec<u8>, Vec<u8>)> = update
            .new_chunks
            .into_iter()
            .map(|(h, bytes)| (h.to_vec(), bytes))
            .collect();
        let root = Root {
            db_id: snap.db_id,
            version: snap.version + 1,
            page_size,
            page_count,
            commit_ms: now_ms(),
            txn_id,
            tree: update.tree,
            overlay: update.overlay,
            lease_required: self.writer == Writer::Exclusive,
            top_inline: update.top_inline,
        };
        assert!(
            !root.lease_required || self.lease.is_some(),
            "an exclusive writer commits under its lease"
        );
        let body = root.encode();
        // A small commit hands its sectors over with the root: one round
        // trip (the host uses one request where the backend can). A large
        // one stores them first, a call's worth of copies at a time.
        let count = new_pages.len() + chunks.len();
        let bytes =
            new_pages.len() * page_size as usize + chunks.iter().map(|c| c.1.len()).sum::<usize>();
        let pages = new_pages
            .iter()
            .map(|(h, i)| (h.to_vec(), self.salted_page(*i, txn_id)));
        let with_root = if count <= ONE_REQUEST_SECTORS_MAX && bytes <= ONE_REQUEST_BYTES_MAX {
            pages.chain(chunks).collect()
        } else {
            self.put_pages(pages, chunks, io_code)?;
            Vec::new()
        };
        // The root swap. An "unavailable" answer leaves the outcome unknown:
        // the same swap (same body, same txn id) is sent again, which either
        // lands or meets a root that tells whether the first one did.
        let mut attempt = 1;
        let landed = loop {
            let outcome =
                self.handle
                    .commit_root(snap.version, &body, self.lease.as_deref(), &with_root);
            let refusal = match outcome {
                Ok(version) if version == root.version => break root,
                Ok(version) => {
                    return Err(Fail::new(
                        ffi::SQLITE_IOERR,
                        format!(
                            "storage stored version {version}, expected {}",
                            root.version
                        ),
                    ));
                }
                Err(StorageError::Unavailable(_)) if attempt < COMMIT_ATTEMPTS => {
                    attempt += 1;
                    continue;
                }
                Err(StorageError::Conflict) if attempt == 1 => return Err(conflict(&self.name)),
                Err(e) if attempt == 1 => {
                    return Err(storage_fail(&self.name, "commit", e, io_code));
                }
                Err(e) => e,
            };
            // An earlier attempt's answer was lost and this one did not
            // land: only the root can tell whether an earlier one did.
            return match self.resolve(&root, txn_id) {
                Resolved::Landed(current) => break current,
                Resolved::Moved => Err(conflict(&self.name)),
                // An unanswered attempt may still be on its way (a request
                // can apply after its client gave up on it).
                Resolved::NotYet => Err(unknown(
                    &self.name,
                    io_code,
                    &format!(
                        "{}; an unanswered attempt may still land",
                        describe(&refusal)
                    ),
                )),
                Resolved::Unknown(why) => Err(unknown(&self.name, io_code, &why)),
            };
        };
        // A commit fenced by our lease that makes the lease required: no one
        // else can commit after it while the lease lasts.
        self.claimed = landed.lease_required;
        self.snapshot = Rc::new(landed);
        self.cache_pages(&new_pages);
        Ok(())
    }

    /// Did our commit of `root` (whose earlier attempts went unanswered)
    /// land? The current root tells while it is at most one version on.
    fn resolve(&self, root: &Root, txn_id: u64) -> Resolved {
        let current = match read_root(self.vfs, &self.name, &*self.handle, ffi::SQLITE_IOERR_FSYNC)
        {
            Ok(current) => current,
            Err(_) => return Resolved::Unknown("the root could not be read".into()),
        };
        if current.version == root.version && current.txn_id == txn_id {
            Resolved::Landed(current)
        } else if current.version == root.version {
            Resolved::Moved
        } else if current.version < root.version {
            Resolved::NotYet
        } else {
            Resolved::Unknown(format!(
                "the database moved on to version {}",
                current.version
            ))
        }
    }

    /// SHA-256 of the pending pages at `indices`, computed by the host
    /// (native SHA is ~10× wasm's: the engine benchmark's commits spent a
    /// fifth of their time hashing in wasm), in calls of ≤ 8 MiB.
    fn hash_pages(&self, indices: &[u32], txn_id: u64, io_code: i32) -> Result<Vec<Hash>, Fail> {
        let mut out = Vec::with_capacity(indices.len());
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 0;
        let flush = |batch: &mut Vec<Vec<u8>>, out: &mut Vec<Hash>| -> Result<(), Fail> {
            if batch.is_empty() {
                return Ok(());
            }
            let hashes = self
                .vfs
                .port
                .hash_all(batch)
                .map_err(|e| storage_fail(&self.name, "hash pages of", e, io_code))?;
            if hashes.len() != batch.len() {
                return Err(Fail::new(
                    io_code,
                    "storage hashed the wrong number of pages".into(),
                ));
            }
            for h in hashes {
                out.push(h.as_slice().try_into().map_err(|_| {
                    Fail::new(io_code, format!("storage returned a {}-byte hash", h.len()))
                })?);
            }
            batch.clear();
            Ok(())
        };
        for &index in indices {
            let page = self.salted_page(index, txn_id);
            if call_is_full(batch.len(), batch_bytes, page.len()) {
                flush(&mut batch, &mut out)?;
                batch_bytes = 0;
            }
            batch_bytes += page.len();
            batch.push(page);
        }
        flush(&mut batch, &mut out)?;
        assert_eq!(out.len(), indices.len());
        Ok(out)
    }

    /// Stores `pages` and then `chunks` in `put-sectors` calls within the
    /// host's limits, copying one call's worth of pages at a time.
    fn put_pages(
        &self,
        pages: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
        chunks: Vec<(Vec<u8>, Vec<u8>)>,
        io_code: i32,
    ) -> Result<(), Fail> {
        let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        let items = pages.chain(chunks);
        for item in items {
            if call_is_full(batch.len(), bytes, item.1.len()) {
                self.put_batch(&batch, io_code)?;
                batch.clear();
                bytes = 0;
            }
            bytes += item.1.len();
            batch.push(item);
        }
        if !batch.is_empty() {
            self.put_batch(&batch, io_code)?;
        }
        Ok(())
    }

    /// The write transaction's id (chosen now if this is its first use).
    fn txn_id(&mut self) -> u64 {
        if self.txn_id == 0 {
            self.txn_id = random_u64().max(1);
        }
        self.txn_id
    }

    /// Pending page `index` as this transaction stores it: salted with
    /// its index and `txn_id`.
    fn salted_page(&self, index: u32, txn_id: u64) -> Vec<u8> {
        donut_format::salt::salted(&self.pending[&index], Salt::page(index, txn_id))
    }

    /// Forgets the pending pages that hold what the snapshot already has
    /// (`unchanged`) before a spill stores the rest.
    fn drop_unchanged(&mut self) -> Result<(), Fail> {
        let snap = self.snapshot.clone();
        let indices: Vec<u32> = self
            .pending
            .range(..snap.page_count)
            .map(|(&i, _)| i)
            .collect();
        if indices.is_empty() {
            return Ok(());
        }
        let mut source = Source {
            vfs: self.vfs,
            name: &self.name,
            handle: &*self.handle,
            root: &snap,
        };
        let current = Manifest::new(&snap).lookup_many(&indices, &mut source)?;
        for index in self.unchanged(snap.db_id, &indices, &current)? {
            self.pending.remove(&index);
        }
        Ok(())
    }

    /// Which of the pending pages `indices` hold the bytes their `current`
    /// keys name: those equal to the cached bytes, and those whose
    /// fingerprints match and whose stored bytes, fetched a call's worth
    /// at a time, are equal (`same_as_stored`). A salted key never matches a new write's,
    /// so without this every page written back unchanged would be stored
    /// again.
    fn unchanged(&self, db: DbId, indices: &[u32], current: &[Hash]) -> Result<HashSet<u32>, Fail> {
        assert_eq!(indices.len(), current.len());
        let mut same: HashSet<u32> = HashSet::new();
        let mut maybe_same: Vec<u32> = Vec::new();
        for (&index, current) in indices.iter().zip(current) {
            match self.same_as_stored(db, index, current) {
                Some(true) => {
                    same.insert(index);
                }
                None => maybe_same.push(index),
                Some(false) => {}
            }
        }
        if !maybe_same.is_empty() {
            // Fingerprints are of pages of this database's snapshot (or
            // older): a `base` rebuilt after a page-size change has only
            // zero keys, which never match.
            assert_eq!(db, self.snapshot.db_id);
            // In batches of a call's worth: a VACUUM writes back every
            // page, and all of them at once would be more sectors than
            // one call carries and more bytes than the instance holds.
            let page_bytes = self.snapshot.page_size as usize;
            let batch = (GET_CALL_BYTES / page_bytes).clamp(1, SECTORS_PER_CALL_MAX);
            for indices in maybe_same.chunks(batch) {
                let stored = self.fetch_pages(indices, 0)?;
                for (index, bytes) in indices.iter().zip(stored) {
                    if bytes[..] == self.pending[index][..] {
                        same.insert(*index);
                    }
                }
            }
        }
        Ok(same)
    }

    /// Does the pending page `index` write back the bytes `current`
    /// already names (SQLite's rollback plays pages back; an UPDATE to
    /// the same values rewrites them)? A salted key never matches a new
    /// write's, so without this every such page would be stored again,
    /// and a rolled-back transaction would commit a copy of its snapshot.
    /// `None`: only the stored bytes can tell. A spilled page counts as
    /// changed.
    fn same_as_stored(&self, db: DbId, index: u32, current: &Hash) -> Option<bool> {
        let Some(page) = self.pending.get(&index) else {
            return Some(false);
        };
        if *current == ZERO_HASH {
            return Some(false);
        }
        self.vfs.with_caches(|c| c.same_page(db, current, page))
    }

    fn put_batch(&self, batch: &[(Vec<u8>, Vec<u8>)], io_code: i32) -> Result<(), Fail> {
        self.handle
            .put_sectors(batch)
            .map_err(|e| storage_fail(&self.name, "write pages of", e, io_code))
    }

    /// Pages this instance just wrote are the likeliest next reads: the
    /// last ones, as many as the page cache holds (and the fingerprints
    /// of all: see `same_as_stored`).
    fn cache_pages(&self, pages: &[(Hash, u32)]) {
        let db = self.snapshot.db_id;
        let page_size = self.snapshot.page_size as usize;
        let keep = self.vfs.plan.page_cache_bytes / (page_size + CACHE_ENTRY_OVERHEAD_BYTES);
        let first_kept = pages.len().saturating_sub(keep);
        self.vfs.with_caches(|c| {
            for (n, (page_hash, index)) in pages.iter().enumerate() {
                let Some(bytes) = self.pending.get(index) else {
                    continue;
                };
                if n >= first_kept {
                    c.insert_page(db, *page_hash, bytes.as_slice().into());
                } else {
                    c.note_page(db, *page_hash, bytes);
                }
            }
        });
    }
}

/// Would one more item of `next_bytes` overflow a `hash-all` or
/// `put-sectors` call that holds `items` items of `bytes` bytes? (A call
/// holds at least one item.)
fn call_is_full(items: usize, bytes: usize, next_bytes: usize) -> bool {
    items > 0 && (bytes + next_bytes > PUT_CALL_BYTES || items == SECTORS_PER_CALL_MAX)
}

/// How many times a root swap whose outcome is unknown is sent.
const COMMIT_ATTEMPTS: u32 = 3;

/// What the root says of a commit whose earlier attempts went unanswered.
enum Resolved {
    /// Our root is the current one.
    Landed(Root),
    /// Another writer's commit took our version: ours never landed.
    Moved,
    /// The root is still the one we replace: ours has not landed (yet).
    NotYet,
    Unknown(String),
}

impl Drop for MainDb {
    fn drop(&mut self) {
        unstage(self);
        self.unreserve();
        self.leave_exclusive();
        // An exclusive writer's lease ends with its connection.
        self.drop_lease();
    }
}

/// The root moved since the snapshot a write transaction started from.
fn moved(name: &str) -> Fail {
    Fail::new(
        ffi::SQLITE_BUSY_SNAPSHOT,
        format!("another writer committed to {name:?} since this transaction began; retry it"),
    )
}

fn unknown(name: &str, io_code: i32, why: &str) -> Fail {
    let mut fail = Fail::new(
        io_code,
        format!(
            "commit to {name:?}: the outcome is unknown ({why}); it may or may not have landed"
        ),
    );
    fail.unknown = true;
    fail
}

fn conflict(name: &str) -> Fail {
    Fail::new(
        ffi::SQLITE_BUSY_SNAPSHOT,
        format!("conflict: another writer committed to {name:?} first; retry the transaction"),
    )
}

/// The SQLite code for a storage error (README, "Error codes"): the
/// `SQLITE_BUSY` family means nothing happened and the transaction may be
/// run again; `io_code` (an `SQLITE_IOERR_*`) that storage could not be
/// reached — for a commit, it is resolved or reported as unknown before
/// SQLite sees it.
fn storage_fail(name: &str, op: &str, e: StorageError, io_code: i32) -> Fail {
    let code = match e {
        StorageError::Busy(_) | StorageError::Throttled(_) => ffi::SQLITE_BUSY_TIMEOUT,
        StorageError::TooLarge(_) => ffi::SQLITE_FULL,
        StorageError::Denied(_) => ffi::SQLITE_PERM,
        StorageError::NotFound(_) => ffi::SQLITE_READONLY_DBMOVED,
        StorageError::Corrupt(_) => ffi::SQLITE_IOERR_CORRUPTFS,
        _ => io_code,
    };
    Fail::new(code, format!("{op} {name:?}: {}", describe(&e)))
}

/// A handle on `name` and its root, for an xOpen no opener primed
/// (SQLite's own `open`, in a native process): with `create` (the
/// `SQLITE_OPEN_CREATE` flag), a database that does not exist is created
/// with SQLite's default page size.
fn open_handle(vfs: &Vfs, name: &str, create: bool) -> Result<(Box<dyn Database>, Root), Fail> {
    let cant_open = |verb: &str, e: StorageError| {
        Fail::new(
            ffi::SQLITE_CANTOPEN,
            format!("{verb} {name:?}: {}", describe(&e)),
        )
    };
    let handle = vfs.port.open(name).map_err(|e| cant_open("open", e))?;
    match read_root(vfs, name, &*handle, ffi::SQLITE_CANTOPEN) {
        Err(_) if create && vfs.has_moved(name) => {
            let handle = match vfs.port.create(name, PAGE_SIZE_NEW) {
                // Created meanwhile by someone else: open theirs.
                Err(StorageError::AlreadyExists(_)) => vfs.port.open(name),
                created => created,
            }
            .map_err(|e| cant_open("create", e))?;
            let root = read_root(vfs, name, &*handle, ffi::SQLITE_CANTOPEN)?;
            Ok((handle, root))
        }
        root => Ok((handle, root?)),
    }
}

/// The page size of a database SQLite's open creates: SQLite's default.
const PAGE_SIZE_NEW: u32 = 4096;

fn read_root(vfs: &Vfs, name: &str, handle: &dyn Database, io_code: i32) -> Result<Root, Fail> {
    let stored = match handle.read_root() {
        Ok(stored) => {
            vfs.moved.borrow_mut().remove(name);
            stored
        }
        Err(e) => {
            if matches!(e, StorageError::NotFound(_)) {
                vfs.moved.borrow_mut().insert(name.to_string());
            }
            return Err(storage_fail(name, "read root of", e, io_code));
        }
    };
    let known = vfs
        .decoded
        .borrow()
        .get(name)
        .filter(|(bytes, _)| *bytes == stored)
        .map(|(_, root)| root.clone());
    if let Some(root) = known {
        return Ok(root);
    }
    let root = decode_root(name, &stored)
        .map_err(|detail| Fail::new(ffi::SQLITE_IOERR_CORRUPTFS, format!("corrupt: {detail}")))?;
    vfs.decoded
        .borrow_mut()
        .insert(name.to_string(), (stored, root.clone()));
    Ok(root)
}
