//! The administrator: `gc`, `restore`, `fork` and `rm` run *during* a run,
//! as one more actor beside the clients. Every storage call it makes waits
//! for the scheduler's turn and takes the same faults (errors, lost
//! replies, partial batches, kills, host crashes) — a kill drops the task
//! wherever it is, as kill -9 would a `donut-host gc`. What must hold:
//! the clients' checks as before (nothing a commit reported is lost, no
//! reader meets a missing sector), and after the run every fork still
//! there reads as a consistent database (`history::check_forks`).
//!
//! In half the runs (drawn from a stream of its own, so the other half
//! run as they always did) forks and restores are done step by step and
//! stall between their mark and their root — for up to `STALL_READS_MAX`
//! scheduled reads, while clients commit and the other administrator's
//! `gc` retires versions: the root must then be refused, never written
//! over pages a run collected (no clock decides it; the planted bug
//! `lands-without-mark` writes the root regardless, and the fork checks
//! find it).

use crate::Rng;
use crate::backend::{SharedTurns, SimBackend, StoreBug};
use donut_format::{At, DbName, ForkSource, RestoreMark};
use donut_host::MemoryBackend;
use donut_host::backend::Backend;
use donut_host::storage::{
    GcOptions, StorageError, collect_garbage, fork, read_root, remove_database, restore_over,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Tasks each administrator runs per run (while clients run).
pub const TASKS_MAX: u32 = 8;
/// Administrators per run: two, so that their tasks race each other too
/// (a `gc` against a fork or a restore, two `gc`s of one database).
pub const ADMINS: usize = 2;
/// Most scheduled reads a stalled fork or restore waits between its mark
/// and its root.
pub const STALL_READS_MAX: u64 = 600;
/// Most versions a stalled fork or restore waits for the database to
/// move on by (while the other administrator's `gc` may retire its
/// source).
pub const STALL_VERSIONS_MAX: u64 = 12;

type TaskFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StorageError>> + 'a>>;

/// The administrator's state across its tasks.
pub struct Admin<'a> {
    /// Its slot in the scheduler (after the clients').
    pub id: usize,
    pub tasks_left: u32,
    pub running: Option<TaskFuture<'a>>,
    /// What the running task is, for the trace.
    pub task: String,
    /// Set when a grant was handed out: poll it next.
    pub runnable: bool,
    /// Names of the forks it tried to make (some may not exist: a fork
    /// killed before its root).
    pub forks: Vec<DbName>,
    /// Forks it made stalling: never removed or collected by name (so the
    /// checks after the run read every one that landed).
    pub stalled_forks: Vec<DbName>,
    /// Forks and restores stall between mark and root: how long, drawn
    /// from this stream (not the run's, so runs without stalls are
    /// unchanged).
    pub stalls: Option<Rng>,
}

/// What `start` needs of the run.
pub struct Scene<'s> {
    pub store: &'s MemoryBackend,
    pub turns: &'s SharedTurns,
    pub one_request: bool,
    /// The run's database.
    pub db: &'s DbName,
    /// The virtual time now.
    pub now_ms: u64,
    /// The oldest version a running client may be reading: `gc` keeps it
    /// and every later one (clients are readers that a retention of days
    /// would protect; the simulator's runs last seconds).
    pub keep_from: u64,
    /// Restores may run: every client is an optimistic writer. (A restore
    /// of a root that requires the lease takes the host's lease on the
    /// system clock, which the clients' virtual leases cannot share.)
    pub restores: bool,
    /// Every administrator's forks so far.
    pub forks: Vec<DbName>,
    /// The planted storage bug, if any.
    pub bug: Option<StoreBug>,
    /// `keep_from` as it moves while the task runs.
    pub floor: Arc<std::sync::atomic::AtomicU64>,
}

impl<'a> Admin<'a> {
    pub fn new(id: usize, tasks: u32, seed: u64) -> Admin<'a> {
        let mut stalls = Rng(seed ^ STALLS_STREAM ^ (id as u64) << 48);
        Admin {
            id,
            tasks_left: tasks,
            running: None,
            task: String::new(),
            runnable: false,
            forks: Vec::new(),
            stalled_forks: Vec::new(),
            stalls: stalls.chance(500).then_some(stalls),
        }
    }

    /// Draws the next task and starts it.
    pub fn start(&mut self, rng: &mut Rng, scene: Scene<'_>) {
        self.tasks_left -= 1;
        let backend = Arc::new(SimBackend {
            client: self.id,
            turns: scene.turns.clone(),
            store: scene.store.clone(),
            one_request: scene.one_request,
            bug: scene.bug,
        });
        let options = GcOptions {
            retain_ms: 0,
            now_ms: scene.now_ms,
            write_units_max: rng.chance(300).then(|| 1 + rng.below(8)),
            keep_from: Some(scene.keep_from),
        };
        let db = scene.db.clone();
        let a_fork = match scene.forks.is_empty() {
            true => None,
            false => Some(rng.pick(&scene.forks).clone()),
        };
        let draw = match rng.below(10) {
            5 | 6 if !scene.restores => 0,
            draw => draw,
        };
        let (task, future): (String, TaskFuture<'a>) = match (draw, a_fork) {
            (0..=3 | 10.., _) | (4 | 9, None) => (
                format!("gc {db} keep from v{}", scene.keep_from),
                Box::pin(async move { collect_garbage(&*backend, &db, options).await.map(|_| ()) }),
            ),
            (4, Some(name)) => (
                format!("gc {name}"),
                Box::pin(async move {
                    let options = GcOptions {
                        keep_from: None,
                        ..options
                    };
                    collect_garbage(&*backend, &name, options).await.map(|_| ())
                }),
            ),
            (5 | 6, _) if self.stalls.is_some() => {
                let stall = self.stall_reads();
                (
                    format!("restore {db} to its current version, stalling {stall} versions"),
                    Box::pin(stalled_restore(backend, db, stall, scene.bug)),
                )
            }
            (7 | 8, _) if self.stalls.is_some() => {
                let stall = self.stall_reads();
                let name = format!("stalled-{}-{}.db", self.id, self.stalled_forks.len());
                let name = DbName::new(&name).expect("legal name");
                self.stalled_forks.push(name.clone());
                (
                    format!("fork {db} to {name}, stalling {stall} versions"),
                    Box::pin(stalled_fork(
                        backend,
                        db,
                        name,
                        stall,
                        scene.bug,
                        scene.floor,
                        options,
                    )),
                )
            }
            (5 | 6, _) => (
                format!("restore {db} to its current version"),
                Box::pin(async move {
                    let (meta, _) = read_root(&*backend, &db).await?;
                    let at = At::Version(meta.version);
                    restore_over(&*backend, &db, at, Some(meta.version)).await?;
                    Ok(())
                }),
            ),
            (7 | 8, _) => {
                let name = format!("fork-{}-{}.db", self.id, self.forks.len());
                let name = DbName::new(&name).expect("legal name");
                self.forks.push(name.clone());
                (
                    format!("fork {db} to {name}"),
                    Box::pin(async move {
                        let (meta, _) = read_root(&*backend, &db).await?;
                        let at = Some(At::Version(meta.version));
                        fork(&*backend, &db, at, &name).await.map(|_| ())
                    }),
                )
            }
            (_, Some(name)) => (
                format!("rm {name}"),
                Box::pin(async move { remove_database(&*backend, &name).await.map(|_| ()) }),
            ),
        };
        self.task = task;
        self.running = Some(future);
        self.runnable = true;
    }

    /// How many versions the next stalled fork or restore waits for its
    /// database to move on by (at most `STALL_READS_MAX` reads).
    fn stall_reads(&mut self) -> u64 {
        let stalls = self.stalls.as_mut().expect("stalls are on");
        1 + stalls.below(STALL_VERSIONS_MAX)
    }

    /// Drops the running task wherever it is (a kill, a host crash).
    pub fn kill(&mut self, turns: &SharedTurns) {
        self.running = None;
        self.runnable = false;
        let mut t = crate::backend::lock(turns);
        t.pending.remove(&self.id);
        t.granted.remove(&self.id);
        t.killed.remove(&self.id);
    }

    /// A task ended: faults make errors expected, but not a corrupt store.
    pub fn ended(&mut self, result: Result<(), StorageError>) -> Option<String> {
        self.running = None;
        match result {
            Err(e @ StorageError::Corrupt(_)) => Some(format!("admin: {}: {e}", self.task)),
            _ => None,
        }
    }
}

/// The forks the administrator made that are still there.
pub async fn live_forks(store: &MemoryBackend, forks: &[DbName]) -> Vec<DbName> {
    let mut live = Vec::new();
    for name in forks {
        if read_root(store, name).await.is_ok() {
            live.push(name.clone());
        }
    }
    live
}

/// Where the stalls' stream of chance starts (xor the seed and the
/// administrator's id).
const STALLS_STREAM: u64 = 0x5741_4c4c_5354_4c31;

/// Scheduled reads of `db`'s root until it is `versions` past `from` (at
/// most `STALL_READS_MAX`): the task waits while clients commit and the
/// other administrator runs (and the virtual clock moves).
async fn stall(
    backend: &SimBackend,
    db: &DbName,
    from: u64,
    versions: u64,
) -> Result<(), StorageError> {
    for _ in 0..STALL_READS_MAX {
        let (meta, _) = read_root(backend, db).await?;
        if meta.version >= from + versions {
            break;
        }
    }
    Ok(())
}

/// `history::fork`'s steps with a stall between the source's mark and
/// the root (`gc::land`; with the planted bug `lands-without-mark`, the
/// root swapped alone, as before the fix).
async fn stalled_fork(
    backend: Arc<SimBackend>,
    src: DbName,
    dst: DbName,
    reads: u64,
    bug: Option<StoreBug>,
    floor: Arc<std::sync::atomic::AtomicU64>,
    options: GcOptions,
) -> Result<(), StorageError> {
    let (_, source) = read_root(&*backend, &src).await?;
    let (expected, fresh) = donut_store::db::new_root(&*backend, &dst, source.page_size).await?;
    let listed = ForkSource {
        name: src.clone(),
        version: source.version,
        fork_version: fresh.version,
    };
    donut_store::gc::register_fork(&*backend, source.db_id, listed, &dst).await?;
    let mark = donut_store::gc::mark_forked(&*backend, &src, Some(source.version), source.db_id)
        .await?
        .expect("a source version was given");
    donut_store::gc::mark_forked(&*backend, &dst, None, source.db_id).await?;
    stall(&backend, &src, source.version, reads).await?;
    // And a run over the source meanwhile, keeping what clients read now.
    let keep_from = floor.load(std::sync::atomic::Ordering::SeqCst);
    let options = GcOptions {
        keep_from: Some(keep_from),
        ..options
    };
    if let Err(e @ StorageError::Corrupt(_)) = collect_garbage(&*backend, &src, options).await {
        return Err(e);
    }
    let mut root = source.clone();
    root.version = fresh.version;
    root.commit_ms = fresh.commit_ms;
    root.txn_id = fresh.txn_id;
    root.lease_required = false;
    if bug == Some(StoreBug::LandsWithoutMark) {
        let nothing = donut_store::backend::Replaces::Nothing;
        donut_store::db::swap_root(&*backend, &dst, expected, nothing, false, &root).await?;
    } else {
        let nothing = donut_store::backend::Replaces::Nothing;
        donut_store::gc::land(
            &*backend,
            &src,
            mark,
            donut_store::gc::Landing {
                name: &dst,
                expected,
                replaces: nothing,
                lease_required: false,
                root: &root,
            },
        )
        .await?;
    }
    whole(&backend, &root).await
}

/// A root just written reads whole (straight from the store, no faults):
/// whatever `gc` did while its fork or restore stalled, nothing it
/// references is gone.
async fn whole(backend: &SimBackend, root: &donut_format::Root) -> Result<(), StorageError> {
    let corrupt = |what: String| {
        StorageError::Corrupt(format!(
            "version {} just written by a stalled fork or restore: {what}",
            root.version
        ))
    };
    let mut chunks = StoredChunks {
        store: &backend.store,
        db: root.db_id,
    };
    let pages: Vec<u32> = (0..root.page_count).collect();
    let keys = donut_format::Manifest::new(root)
        .lookup_many(&pages, &mut chunks)
        .map_err(|e| corrupt(e.to_string()))?;
    let keys: Vec<donut_format::Hash> = keys
        .into_iter()
        .filter(|k| *k != donut_format::ZERO_HASH)
        .collect();
    let found = at_once(backend.store.get_sectors(root.db_id, &keys))
        .map_err(|e| corrupt(e.to_string()))?;
    match keys.iter().zip(found).find(|(_, bytes)| bytes.is_none()) {
        Some((key, _)) => Err(corrupt(format!(
            "page {} is missing",
            donut_format::hash_hex(key)
        ))),
        None => Ok(()),
    }
}

/// Manifest chunks straight from the memory store.
struct StoredChunks<'s> {
    store: &'s MemoryBackend,
    db: donut_format::DbId,
}

impl donut_format::ChunkSource for StoredChunks<'_> {
    type Error = donut_format::FormatError;
    fn load(
        &mut self,
        hashes: &[donut_format::Hash],
    ) -> Result<Vec<Arc<donut_format::Chunk>>, Self::Error> {
        let missing = |detail: String| donut_format::FormatError::Invalid {
            what: "manifest chunk",
            detail,
        };
        let found =
            at_once(self.store.get_sectors(self.db, hashes)).map_err(|e| missing(e.to_string()))?;
        let mut out = Vec::with_capacity(hashes.len());
        for (hash, bytes) in hashes.iter().zip(found) {
            let bytes = bytes
                .ok_or_else(|| missing(format!("{} is missing", donut_format::hash_hex(hash))))?;
            out.push(Arc::new(donut_format::Chunk::decode(&bytes)?));
        }
        Ok(out)
    }
}

/// The memory store's answer (it never waits).
fn at_once<T>(call: impl Future<Output = T>) -> T {
    let mut call = std::pin::pin!(call);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match call.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(answer) => answer,
        std::task::Poll::Pending => unreachable!("the memory store answers at once"),
    }
}

/// `history::restore_over`'s steps (to the current version) with a stall
/// between the mark and the root.
async fn stalled_restore(
    backend: Arc<SimBackend>,
    db: DbName,
    reads: u64,
    bug: Option<StoreBug>,
) -> Result<(), StorageError> {
    let (meta, current) = read_root(&*backend, &db).await?;
    let mut root = current.clone();
    root.version = meta.version + 1;
    root.txn_id = donut_store::random_u64();
    root.lease_required = false;
    let mark = RestoreMark {
        source: meta.version,
        txn_id: root.txn_id,
        lands_as: root.version,
    };
    donut_store::gc::mark_restore(&*backend, &db, mark).await?;
    stall(&backend, &db, meta.version, reads).await?;
    if bug == Some(StoreBug::LandsWithoutMark) {
        let expected = Some(meta.version);
        let lease = current.lease_required;
        let replaces = donut_store::backend::Replaces::Database(current.db_id);
        donut_store::db::swap_root(&*backend, &db, expected, replaces, lease, &root).await?;
        return whole(&backend, &root).await;
    }
    donut_store::gc::land(
        &*backend,
        &db,
        mark,
        donut_store::gc::Landing {
            name: &db,
            expected: Some(meta.version),
            replaces: donut_store::backend::Replaces::Database(current.db_id),
            lease_required: current.lease_required,
            root: &root,
        },
    )
    .await?;
    whole(&backend, &root).await
}
