//! What every connection of one registered VFS shares: the storage port,
//! the caches, the in-memory files, and the instance's lock and staging
//! tables. SQLite hands each callback the `sqlite3_vfs` (whose `pAppData`
//! points here) or a file opened through it (which keeps a reference), so
//! no state lives in globals.
//!
//! `RefCell`s, as a component instance runs on one thread; a native
//! process may call SQLite from several, so every callback that reaches
//! this state holds [`Vfs::serial`] first (uncontended in a component).

use crate::cache::Caches;
use crate::change_log;
use crate::main_file::{self, Fail, MainDb};
use crate::memfs::MemFs;
use crate::memory::MemoryPlan;
use crate::port::{Database, Port, StoredRoot};
use crate::sqlite_vfs::SqliteApi;
use donut_format::Root;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

/// A database handle and the root an opener read through it.
type Primed = (Box<dyn Database>, Root);

/// A registered DonutDB VFS and the state its connections share
/// ([`crate::register`]).
pub struct Vfs {
    pub(crate) port: Box<dyn Port>,
    /// The SQLite this VFS is registered with.
    pub(crate) api: SqliteApi,
    /// Held by every SQLite callback that reaches the state below: one
    /// callback at a time, whatever thread SQLite calls from.
    serial: std::sync::Mutex<()>,
    /// Handles and roots read by an opener, waiting for SQLite's xOpen.
    pub(crate) primed: RefCell<HashMap<String, Primed>>,
    /// Set while an opener has SQLite load the schema.
    pub(crate) loading_schema: Cell<bool>,
    /// How the instance's memory limit is shared among the caches, the
    /// journals and pending pages.
    pub(crate) plan: MemoryPlan,
    pub(crate) caches: RefCell<Caches>,
    pub(crate) memfs: MemFs,
    /// Per database name, the connection of this VFS that holds RESERVED
    /// or more: one writer at a time, as a native VFS's file locks would
    /// give. (Storage needs no lock for that — the root swap decides — but
    /// two writing connections would share journals by name and could
    /// replay each other's.)
    pub(crate) reserved: RefCell<HashMap<String, u64>>,
    pub(crate) next_id: Cell<u64>,
    /// Connections whose changes wait for a super-journal's deletion, or
    /// (key `connection_group`) for their connection's phase two.
    pub(crate) staged: RefCell<HashMap<String, Vec<*mut MainDb>>>,
    /// Per SQLite connection, the DonutDB databases of it at EXCLUSIVE:
    /// SQLite takes EXCLUSIVE on every database a transaction changed
    /// before it commits any of them.
    pub(crate) exclusive: RefCell<HashMap<usize, HashSet<u64>>>,
    /// The last root decoded per database, with its stored bytes: a root
    /// that did not change since (most transactions' case) is not decoded
    /// and checksummed again — SHA-256 in wasm is what a read transaction
    /// would otherwise spend most of its CPU on.
    pub(crate) decoded: RefCell<HashMap<String, (StoredRoot, Root)>>,
    /// Databases whose last root read said they no longer exist (removed,
    /// maybe created again under the same name since).
    pub(crate) moved: RefCell<HashSet<String>>,
    /// Where the change log goes, if anywhere ([`Vfs::set_change_log`]).
    pub(crate) change_log: RefCell<Option<change_log::Sink>>,
    /// `change_log` is set: the one thing a call checks when it is not.
    pub(crate) logging: Cell<bool>,
}

impl Vfs {
    pub(crate) fn new(port: Box<dyn Port>, plan: MemoryPlan, api: SqliteApi) -> Vfs {
        Vfs {
            port,
            api,
            serial: std::sync::Mutex::new(()),
            primed: RefCell::default(),
            loading_schema: Cell::new(false),
            plan,
            caches: RefCell::new(Caches::new(&plan)),
            memfs: MemFs::new(plan.journal_bytes_max),
            reserved: RefCell::default(),
            next_id: Cell::new(1),
            staged: RefCell::default(),
            exclusive: RefCell::default(),
            decoded: RefCell::default(),
            moved: RefCell::default(),
            change_log: RefCell::default(),
            logging: Cell::new(false),
        }
    }

    /// Held while a SQLite callback uses this state. Callbacks never call
    /// each other, so it is never taken twice by one thread; a panic
    /// inside one aborts the process (it unwinds into C), so a poisoned
    /// lock is never seen.
    pub(crate) fn serial(&self) -> std::sync::MutexGuard<'_, ()> {
        self.serial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes a JSON line per VFS call to `sink` from now on (`None`:
    /// stops). The Go DonutDB's `WithChangeLogWriter`; see
    /// `change_log` for the fields.
    pub fn set_change_log(&self, sink: Option<Box<dyn std::io::Write>>) {
        self.logging.set(sink.is_some());
        *self.change_log.borrow_mut() = sink;
    }

    /// Writes the change log to the file [`crate::CHANGE_LOG_ENV`] names,
    /// if it names one (appending; said on stderr if it cannot be opened —
    /// SQLite works on without it).
    pub fn change_log_from_env(&self) {
        let Some(path) = std::env::var_os(crate::CHANGE_LOG_ENV) else {
            return;
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        match file {
            Ok(file) => self.set_change_log(Some(Box::new(file))),
            Err(e) => eprintln!("donutdb: no change log at {}: {e}", path.to_string_lossy()),
        }
    }

    /// Logs `call` (which returned `code`) if the change log is on.
    pub(crate) fn log(&self, call: &change_log::Call<'_>, code: i32, version: Option<u64>) {
        let line = change_log::line(call, code, version);
        let mut sink = self.change_log.borrow_mut();
        change_log::write(&mut sink, &line);
        self.logging.set(sink.is_some());
    }

    /// The storage this VFS reads and commits through.
    pub fn port(&self) -> &dyn Port {
        &*self.port
    }

    /// Hands SQLite's next xOpen of `name` a handle and the root just read
    /// through it (decoded by [`Vfs::decode_root`]): opening costs one root
    /// read, not two.
    pub fn prime(&self, name: &str, handle: Box<dyn Database>, root: Root) {
        self.primed
            .borrow_mut()
            .insert(name.to_string(), (handle, root));
    }

    /// Runs `load` (an opener's schema load) as part of opening: its read
    /// transaction uses the root read at open and leaves it for the
    /// connection's first transaction, which may still use it.
    pub fn loading_schema<T>(&self, load: impl FnOnce() -> T) -> T {
        self.loading_schema.set(true);
        let out = load();
        self.loading_schema.set(false);
        out
    }

    /// Decodes a stored root of `name`, checking its version.
    pub fn decode_root(name: &str, stored: &StoredRoot) -> Result<Root, String> {
        main_file::decode_root(name, stored)
    }

    /// `SQLITE_FCNTL_HAS_MOVED`: true once a root read found `name` gone.
    /// SQLite asks before it opens a rollback journal and then fails the
    /// write with `SQLITE_READONLY_DBMOVED`; costs no request.
    pub fn has_moved(&self, name: &str) -> bool {
        self.moved.borrow().contains(name)
    }

    pub(crate) fn with_caches<R>(&self, f: impl FnOnce(&mut Caches) -> R) -> R {
        f(&mut self.caches.borrow_mut())
    }

    pub(crate) fn next_connection_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// SQLite deletes a super-journal: the commit point of the databases
    /// staged under it ([`main_file::commit_staged`]).
    pub(crate) fn commit_staged(&self, super_journal: &str) -> Result<(), Fail> {
        main_file::commit_staged(self, super_journal)
    }
}
