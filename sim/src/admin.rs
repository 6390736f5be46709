//! The administrator: `gc`, `restore`, `fork` and `rm` run *during* a run,
//! as one more actor beside the clients. Every storage call it makes waits
//! for the scheduler's turn and takes the same faults (errors, lost
//! replies, partial batches, kills, host crashes) — a kill drops the task
//! wherever it is, as kill -9 would a `donut-host gc`. What must hold:
//! the clients' checks as before (nothing a commit reported is lost, no
//! reader meets a missing sector), and after the run every fork still
//! there reads as a consistent database (`history::check_forks`).

use crate::Rng;
use crate::backend::{SharedTurns, SimBackend};
use donut_format::{At, DbName};
use donut_host::MemoryBackend;
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
}

impl<'a> Admin<'a> {
    pub fn new(id: usize, tasks: u32) -> Admin<'a> {
        Admin {
            id,
            tasks_left: tasks,
            running: None,
            task: String::new(),
            runnable: false,
            forks: Vec::new(),
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
            bug: None,
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
