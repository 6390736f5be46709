//! One simulated run: clients (real guest components in wasmtime) on one
//! in-memory store, every storage call scheduled by a seeded random choice,
//! faults injected at the storage boundary, a virtual clock. Everything
//! that could differ between two runs of a seed — the interleaving, the
//! faults, time, the guests' randomness — comes from the seed.

use crate::Rng;
use crate::admin::{Admin, Scene};
use crate::backend::{
    Cancellation, Decision, SharedTurns, SimBackend, StorageCall, StoreBug, lock,
};
use crate::check::{self, History, OpRecord, Status};
use donut_format::DbName;
use donut_host::runtime::{
    Call, Determinism, MemoryOutputPipe, Outcome, Program, RunError, Runtime, Stdio,
};
use donut_host::storage::{Clock, LeaseRenewal, SectorCache, VirtualTime};
use donut_host::{Grant, MemoryBackend, StorageCtx};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

/// The database every client of a run shares.
const DB: &str = "sim.db";
/// Most storage calls one run may schedule: a run that needs more is stuck.
const STEPS_MAX: u64 = 200_000;
/// Most times one client is restarted after being killed.
const RESTARTS_MAX: u32 = 6;
/// Most whole-host crashes in one run.
const HOST_CRASHES_MAX: u32 = 2;
/// Memory of one guest instance.
const GUEST_MEMORY_BYTES: usize = 256 << 20;
/// Bytes of the host's shared sector cache.
const SECTOR_CACHE_BYTES: usize = 8 << 20;

/// A deliberately planted bug: the mutation checks turn one on and expect
/// the simulator to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bug {
    /// The root swap commits without its condition.
    UnconditionalCommit,
    /// A reader reads the latest root's pages instead of its snapshot's.
    UnpinnedReads,
    /// An exclusive writer skips root reads on a lapsed lease.
    TrustedClaims,
    /// A refused root swap still writes its history item.
    LosersHistory,
    /// `gc` does not see restore marks: it deletes what a restore of an
    /// old version brought back.
    GcIgnoresRestores,
    /// `gc` takes a forked database for one alone: it deletes what a fork
    /// still holds.
    GcIgnoresForks,
    /// `gc` misjudges an intent's transaction as never committed: it
    /// deletes the sectors a large commit or a spill stored and its root
    /// still references.
    GcMisjudgesIntents,
    /// A fork's or restore's root lands whether or not its mark on its
    /// source still stands (the review's finding 1, its fix reverted): a
    /// stalled fork writes a root over pages `gc` collected.
    LandsWithoutMark,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Operations per client.
    pub ops: u64,
    /// Injected faults (kills, crashes, errors); off: interleaving only.
    pub faults: bool,
    pub bug: Option<Bug>,
}

/// What one run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub config: String,
    /// Storage calls scheduled.
    pub steps: u64,
    /// Client operations (transactions) that reached an outcome.
    pub ops: u64,
    pub committed: u64,
    pub kills: u32,
    pub host_crashes: u32,
    pub faults: u64,
    /// SHA-256 of the trace: equal for two runs of one seed.
    pub trace_hash: String,
    pub trace: Vec<String>,
    /// What the clients printed, line by line, prefixed with the client.
    pub output: Vec<String>,
    pub anomalies: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The command that replays this run.
    pub fn replay_command(&self, options: &Options) -> String {
        let mut command = format!("just sim --seed {} --ops {}", self.seed, options.ops);
        if !options.faults {
            command.push_str(" --no-faults");
        }
        if let Some(bug) = options.bug {
            command.push_str(&format!(
                " --bug {}",
                clap::ValueEnum::to_possible_value(&bug)
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            ));
        }
        command
    }
}

/// The engine and the test component, loaded once for many runs.
pub struct Sim {
    runtime: Runtime,
    program: Program,
}

impl Sim {
    /// Loads `test-guest.wasm` from `guest_dir` (built by `just guest`),
    /// caching its compiled code in `cache_dir`.
    pub fn new(guest_dir: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<Sim> {
        use anyhow::Context as _;
        let runtime = Runtime::new(donut_host::runtime::RuntimeOptions {
            cache_dir,
            time_limits: true,
            fuel: false,
            pooling: None,
        })?;
        let path = guest_dir.join("test-guest.wasm");
        let program = runtime
            .load_file(&path)
            .with_context(|| format!("loading {} (build it with `just guest`)", path.display()))?;
        Ok(Sim { runtime, program })
    }
}

type CallFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome, RunError>> + 'a>>;

/// One client: its running guest (if any) and what it printed.
struct Client<'a> {
    id: usize,
    writer: &'static str,
    skew_ms: i64,
    incarnation: u32,
    restarts: u32,
    ops_left: u64,
    /// The oldest version its current operation may be reading: the last
    /// root it read before the operation began, and every one since.
    floor_version: u64,
    /// The last root version it read.
    last_root: u64,
    /// Output lines seen (one per finished operation).
    lines_seen: usize,
    running: Option<CallFuture<'a>>,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// Set when a grant was handed out: poll it next.
    runnable: bool,
}

/// What the scheduler does with the call whose turn it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Every guest and the host's memory are gone; the store remains.
    HostCrash,
    /// The caller's guest dies before its call reaches the store.
    KillBefore,
    /// The call goes on, as decided.
    Decide(Decision),
}

impl Action {
    /// The trace's word for it.
    fn as_str(self) -> &'static str {
        match self {
            Action::HostCrash => "host-crash",
            Action::KillBefore => "kill-before",
            Action::Decide(Decision::KillAfter) => "kill-after",
            Action::Decide(Decision::Throttle) => "throttle",
            Action::Decide(Decision::FailBefore) => "fail-before",
            Action::Decide(Decision::FailAfter) => "fail-after",
            Action::Decide(Decision::Partial) => "partial",
            Action::Decide(Decision::Cancel(_)) => "cancel",
            Action::Decide(Decision::Proceed) => "proceed",
        }
    }
}

/// How a run is set up, drawn from its seed.
struct Config {
    clients: usize,
    one_request: bool,
    lease_ms: u64,
    /// Per mille per scheduled call.
    throttle: u64,
    fail_before: u64,
    fail_after: u64,
    partial: u64,
    kill_before: u64,
    kill_after: u64,
    host_crash: u64,
    pause: u64,
    /// A lease holder stalls between its lease check and its commit.
    stall: u64,
    /// A root swap is cancelled for a named reason (`Cancellation`).
    cancel: u64,
    /// Tasks of the administrator (`admin`): gc, restore, fork, rm.
    admin_tasks: u32,
}

impl Config {
    fn draw(rng: &mut Rng, faults: bool) -> Config {
        let rate = |rng: &mut Rng, max: u64| if faults { rng.below(max + 1) } else { 0 };
        Config {
            clients: 2 + rng.below(3) as usize,
            one_request: rng.below(2) == 0,
            lease_ms: 100 + rng.below(400),
            throttle: rate(rng, 20),
            fail_before: rate(rng, 20),
            fail_after: rate(rng, 20),
            partial: rate(rng, 20),
            kill_before: rate(rng, 4),
            kill_after: rate(rng, 4),
            host_crash: rate(rng, 1),
            pause: rate(rng, 5),
            stall: rate(rng, 300),
            cancel: rate(rng, 20),
            admin_tasks: rng.below(crate::admin::TASKS_MAX as u64 + 1) as u32,
        }
    }
}

/// Polls a future that needs nothing but polling (no storage turns).
fn run_now<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("a setup or final call never finished");
}

/// The current version of `name`, read straight from the store (0: none).
fn head_version(store: &MemoryBackend, name: &donut_format::DbName) -> u64 {
    run_now(donut_host::storage::read_root(store, name)).map_or(0, |(meta, _)| meta.version)
}

/// The simulation's virtual time read with a fixed skew, as a host whose
/// clock runs ahead (positive) or behind: each client gets one.
struct SkewedClock {
    ms: Arc<AtomicU64>,
    skew_ms: i64,
}

impl VirtualTime for SkewedClock {
    fn now_ms(&self) -> u64 {
        self.ms
            .load(Ordering::SeqCst)
            .saturating_add_signed(self.skew_ms)
    }
}

impl Sim {
    /// Runs one guest call straight on the store, no scheduler, no faults.
    fn direct(&self, store: &MemoryBackend, args: &[&str], clock: &Arc<AtomicU64>) -> Outcome {
        let storage = StorageCtx::new(Arc::new(store.clone()), Grant::all())
            .with_clock(Clock::Virtual(clock.clone()))
            .with_lease_renewal(LeaseRenewal::OnCall);
        let mut call = Call::new(
            std::iter::once("test-guest")
                .chain(args.iter().copied())
                .map(String::from)
                .collect(),
            storage,
        );
        call.stdio = Stdio::Capture { stdin: Vec::new() };
        call.memory_limit_bytes = GUEST_MEMORY_BYTES;
        call.determinism = Some(Determinism {
            seed: 0,
            clock_ms: clock.clone(),
        });
        match run_now(self.runtime.run(&self.program, call)) {
            Ok(outcome) => outcome,
            Err(e) => Outcome {
                exit_code: -1,
                stdout: Vec::new(),
                stderr: e.to_string().into_bytes(),
            },
        }
    }

    pub fn run(&self, options: &Options) -> Report {
        let mut rng = Rng(options.seed);
        let config = Config::draw(&mut rng, options.faults);
        let store = MemoryBackend::new();
        let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
        // The oldest version a running client may read, as it moves.
        let floor = Arc::new(AtomicU64::new(0));
        let turns = SharedTurns::default();
        let mut report = Report {
            seed: options.seed,
            config: String::new(),
            steps: 0,
            ops: 0,
            committed: 0,
            kills: 0,
            host_crashes: 0,
            faults: 0,
            trace_hash: String::new(),
            trace: Vec::new(),
            output: Vec::new(),
            anomalies: Vec::new(),
        };
        let setup = self.direct(&store, &["sim-setup", DB], &clock);
        if !setup.success() {
            report.anomalies.push(format!(
                "setup failed: {}",
                String::from_utf8_lossy(&setup.stderr)
            ));
            return report;
        }
        let db_name = donut_format::DbName::new(DB).expect("legal name");
        let setup_version = match run_now(donut_host::storage::read_root(&store, &db_name)) {
            Ok((meta, _)) => meta.version,
            Err(e) => {
                report.anomalies.push(format!("no root after setup: {e}"));
                return report;
            }
        };
        let mut clients: Vec<Client> = (0..config.clients)
            .map(|id| {
                let writer = match rng.below(4) {
                    0 => "lease",
                    1 => "exclusive",
                    _ => "optimistic",
                };
                let skew = config.lease_ms as i64 / 4;
                Client {
                    id,
                    writer,
                    skew_ms: rng.below(2 * skew as u64 + 1) as i64 - skew,
                    incarnation: 0,
                    restarts: 0,
                    ops_left: options.ops,
                    floor_version: 0,
                    last_root: 0,
                    lines_seen: 0,
                    running: None,
                    stdout: MemoryOutputPipe::new(1 << 20),
                    stderr: MemoryOutputPipe::new(1 << 20),
                    runnable: false,
                }
            })
            .collect();
        report.config = format!(
            "{} clients ({}), {} commits, lease {} ms, faults ‰ throttle {} before {} after {} partial {} kill {}/{} crash {} pause {} stall {}{}",
            config.clients,
            clients
                .iter()
                .map(|c| format!("{}{:+}ms", c.writer, c.skew_ms))
                .collect::<Vec<_>>()
                .join(" "),
            if config.one_request {
                "one-request"
            } else {
                "two-request"
            },
            config.lease_ms,
            config.throttle,
            config.fail_before,
            config.fail_after,
            config.partial,
            config.kill_before,
            config.kill_after,
            config.host_crash,
            config.pause,
            config.stall,
            match options.bug {
                Some(bug) => format!(", planted bug {bug:?}"),
                None => String::new(),
            }
        );
        let store_bug = match options.bug {
            Some(Bug::UnconditionalCommit) => Some(StoreBug::UnconditionalCommit),
            Some(Bug::LosersHistory) => Some(StoreBug::LosersHistory),
            Some(Bug::LandsWithoutMark) => Some(StoreBug::LandsWithoutMark),
            _ => None,
        };
        let guest_bug = match options.bug {
            Some(Bug::UnpinnedReads) => "unpinned-reads",
            Some(Bug::TrustedClaims) => "trusted-claims",
            _ => "none",
        };
        let mut cache = SectorCache::new(SECTOR_CACHE_BYTES);
        let mut history = History::default();
        let mut trace: Vec<String> = Vec::new();
        // Clients held back by a stall, until a step.
        let mut stalled: std::collections::BTreeMap<usize, u64> = Default::default();
        let mut admins: Vec<Admin> = (0..crate::admin::ADMINS)
            .map(|i| Admin::new(config.clients + i, config.admin_tasks, options.seed))
            .collect();

        loop {
            // Start clients that have work and no guest.
            for client in clients.iter_mut() {
                if client.running.is_none()
                    && client.ops_left > 0
                    && client.restarts <= RESTARTS_MAX
                {
                    client.last_root = head_version(&store, &db_name);
                    client.floor_version = client.last_root;
                    client.lines_seen = 0;
                    client.running = Some(self.start_client(
                        client,
                        &store,
                        &turns,
                        &cache,
                        &clock,
                        &config,
                        store_bug,
                        guest_bug,
                        options.seed,
                    ));
                    client.runnable = true;
                }
            }
            // What each client may be reading, then the administrator's
            // next task while clients run.
            let roots_read = std::mem::take(&mut lock(&turns).roots_read);
            for (id, version) in roots_read {
                if let Some(client) = clients.get_mut(id) {
                    client.floor_version = client.floor_version.min(version);
                    client.last_root = version;
                }
            }
            for client in clients.iter_mut() {
                let lines = client
                    .stdout
                    .contents()
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count();
                if lines != client.lines_seen {
                    client.lines_seen = lines;
                    client.floor_version = client.last_root;
                }
            }
            let running: Vec<&Client> = clients.iter().filter(|c| c.running.is_some()).collect();
            let keep_from = running.iter().map(|c| c.floor_version).min();
            floor.store(keep_from.unwrap_or(0), Ordering::SeqCst);
            let forks: Vec<DbName> = admins.iter().flat_map(|a| a.forks.clone()).collect();
            for admin in admins.iter_mut() {
                if admin.running.is_some() || admin.tasks_left == 0 || running.is_empty() {
                    continue;
                }
                admin.start(
                    &mut rng,
                    Scene {
                        store: &store,
                        turns: &turns,
                        one_request: config.one_request,
                        db: &db_name,
                        now_ms: clock.load(Ordering::SeqCst),
                        keep_from: keep_from.unwrap_or(0),
                        floor: floor.clone(),
                        restores: clients.iter().all(|c| c.writer == "optimistic"),
                        forks: forks.clone(),
                        // The admins' own bug; the others are the clients'.
                        bug: store_bug.filter(|b| *b == StoreBug::LandsWithoutMark),
                    },
                );
                trace.push(format!("{} a{}: {}", report.steps, admin.id, admin.task));
            }
            for admin in admins.iter_mut().filter(|a| a.runnable) {
                admin.runnable = false;
                if let Some(task) = admin.running.as_mut() {
                    let mut cx = Context::from_waker(Waker::noop());
                    if let Poll::Ready(result) = task.as_mut().poll(&mut cx) {
                        trace.push(format!("{} a{} done: {result:?}", report.steps, admin.id));
                        report.anomalies.extend(admin.ended(result));
                    }
                }
            }
            // Let each runnable guest go until its next storage call.
            for client in clients.iter_mut() {
                if !client.runnable {
                    continue;
                }
                client.runnable = false;
                let Some(running) = client.running.as_mut() else {
                    continue;
                };
                let mut cx = Context::from_waker(Waker::noop());
                if let Poll::Ready(result) = running.as_mut().poll(&mut cx) {
                    client.running = None;
                    let ended = end_incarnation(client, &mut history);
                    // A guest that could not open the database (an injected
                    // fault at open) says so and exits: restart it. (WASI
                    // exit codes other than 0 arrive as 1.)
                    let stdout = client.stdout.contents();
                    let fatal = String::from_utf8_lossy(&stdout)
                        .lines()
                        .last()
                        .is_some_and(|l| l.starts_with("{\"fatal\"") && !check::says_corrupt(l));
                    let gave_up = matches!(&result, Ok(o) if o.exit_code != 0) && fatal;
                    match result {
                        Ok(outcome) if outcome.exit_code == 0 => {}
                        Ok(_) if gave_up => client.restarts += 1,
                        Ok(outcome) => {
                            let stdout = String::from_utf8_lossy(&stdout);
                            let tail: Vec<&str> = stdout.lines().rev().take(3).collect();
                            report.anomalies.push(format!(
                                "client {} exited with {}: {} (last output: {tail:?})",
                                client.id,
                                outcome.exit_code,
                                String::from_utf8_lossy(&client.stderr.contents())
                            ))
                        }
                        Err(e) => report.anomalies.push(format!(
                            "client {} failed: {e}; stderr: {}",
                            client.id,
                            String::from_utf8_lossy(&client.stderr.contents())
                        )),
                    }
                    client.ops_left = client.ops_left.saturating_sub(ended);
                    if !gave_up {
                        client.ops_left = 0;
                    }
                }
            }
            // Guests killed after their call applied die now.
            let killed: Vec<usize> = std::mem::take(&mut lock(&turns).killed)
                .into_iter()
                .collect();
            for id in killed {
                match id.checked_sub(clients.len()) {
                    Some(admin) => admins[admin].kill(&turns),
                    None => self.kill(&mut clients[id], &turns, &mut history),
                }
                report.kills += 1;
            }
            let live = clients.iter().filter(|c| c.running.is_some()).count()
                + admins.iter().filter(|a| a.running.is_some()).count();
            if live == 0 {
                if clients
                    .iter()
                    .all(|c| c.ops_left == 0 || c.restarts > RESTARTS_MAX)
                {
                    break;
                }
                continue;
            }
            let pending: Vec<(usize, StorageCall)> = lock(&turns)
                .pending
                .iter()
                .map(|(c, op)| (*c, op.clone()))
                .collect();
            assert_eq!(
                pending.len(),
                live,
                "every live guest waits on exactly one storage call"
            );
            report.steps += 1;
            if report.steps > STEPS_MAX {
                report
                    .anomalies
                    .push(format!("no progress after {STEPS_MAX} storage calls"));
                break;
            }
            // A stalled client waits while others run (unless all are).
            let ready: Vec<&(usize, StorageCall)> = pending
                .iter()
                .filter(|(c, _)| stalled.get(c).is_none_or(|&until| until <= report.steps))
                .collect();
            let ready = if ready.is_empty() {
                pending.iter().collect()
            } else {
                ready
            };
            let (id, op) = ready[rng.below(ready.len() as u64) as usize].clone();
            let lease_bound = op.lease_bound();
            if lease_bound && !stalled.contains_key(&id) && rng.chance(config.stall) {
                // The holder checked its lease and then stalled (a pause
                // between the check and the request): past the lease's end,
                // while the others may take it over. The fence must refuse
                // its commit then; an exclusive writer at its lease check
                // must find its claim gone.
                stalled.insert(id, report.steps + 40);
                let jump = config.lease_ms + 1 + rng.below(config.lease_ms / 2);
                let now = clock.fetch_add(jump, Ordering::SeqCst) + jump;
                trace.push(format!("{} t={now} c{id} {op}: stalled", report.steps));
                report.faults += 1;
                continue;
            }
            let advance = rng.below(4);
            let pause = rng.chance(config.pause);
            let advance = if pause {
                advance + config.lease_ms * 3 / 2
            } else {
                advance
            };
            let now = clock.fetch_add(advance, Ordering::SeqCst) + advance;
            let writes = op.writes();
            let action = if report.host_crashes < HOST_CRASHES_MAX && rng.chance(config.host_crash)
            {
                Action::HostCrash
            } else if rng.chance(config.kill_before) {
                Action::KillBefore
            } else if rng.chance(config.kill_after) {
                Action::Decide(Decision::KillAfter)
            } else if rng.chance(config.throttle) {
                Action::Decide(Decision::Throttle)
            } else if rng.chance(config.fail_before) {
                Action::Decide(Decision::FailBefore)
            } else if writes && rng.chance(config.fail_after) {
                Action::Decide(Decision::FailAfter)
            } else if writes && op.writes_sectors() && rng.chance(config.partial) {
                Action::Decide(Decision::Partial)
            } else if op.swaps_root() && rng.chance(config.cancel) {
                Action::Decide(Decision::Cancel(*rng.pick(&Cancellation::ALL)))
            } else {
                Action::Decide(Decision::Proceed)
            };
            let who = match clients.get(id) {
                Some(client) => format!(
                    "c{id}.{} {op}: {} (after {})",
                    client.incarnation,
                    action.as_str(),
                    last_line(&client.stdout)
                ),
                None => {
                    let admin = &admins[id - clients.len()];
                    format!("a{id} {op}: {} ({})", action.as_str(), admin.task)
                }
            };
            trace.push(format!(
                "{} t={now}{} {who}",
                report.steps,
                if pause { " pause" } else { "" },
            ));
            if action != Action::Decide(Decision::Proceed) {
                report.faults += 1;
            }
            match action {
                Action::HostCrash => {
                    // Every guest and the host's memory (its sector cache)
                    // are gone; the store remains.
                    report.host_crashes += 1;
                    for client in clients.iter_mut() {
                        if client.running.is_some() {
                            self.kill(client, &turns, &mut history);
                        }
                    }
                    for admin in admins.iter_mut() {
                        admin.kill(&turns);
                    }
                    cache = SectorCache::new(SECTOR_CACHE_BYTES);
                }
                Action::KillBefore => {
                    match id.checked_sub(clients.len()) {
                        Some(admin) => admins[admin].kill(&turns),
                        None => self.kill(&mut clients[id], &turns, &mut history),
                    }
                    report.kills += 1;
                }
                Action::Decide(decision) => {
                    let mut t = lock(&turns);
                    t.pending.remove(&id);
                    t.granted.insert(id, decision);
                    match clients.get_mut(id) {
                        Some(client) => client.runnable = true,
                        None => admins[id - clients.len()].runnable = true,
                    }
                }
            }
        }
        for client in clients.iter_mut() {
            assert!(client.running.is_none());
        }
        // The state the run left, read with no faults.
        let final_out = self.direct(&store, &["sim-final", DB], &clock);
        let final_line = String::from_utf8_lossy(&final_out.stdout).to_string();
        if !final_out.success() {
            report.anomalies.push(format!(
                "reading the final state failed: {final_line} {}",
                String::from_utf8_lossy(&final_out.stderr)
            ));
        } else {
            match serde_json::from_str::<serde_json::Value>(final_line.trim()) {
                Ok(v) => history.final_state = v.get("final").cloned(),
                Err(e) => report
                    .anomalies
                    .push(format!("final state unreadable ({e}): {final_line}")),
            }
        }
        report.ops = history.ops.len() as u64;
        report.committed = history
            .ops
            .iter()
            .filter(|o| o.status == Status::Ok)
            .count() as u64;
        report.anomalies.extend(check::check(&history));
        // Then the run's history, read back by time travel, restore and
        // fork (after the checks above: a restore writes new versions).
        let reader = DirectReader {
            sim: self,
            store: &store,
            clock: &clock,
        };
        report.anomalies.extend(crate::history::check(
            &reader,
            &store,
            DB,
            setup_version,
            &mut rng,
            match options.bug {
                Some(Bug::GcIgnoresRestores) => Some(crate::gc::Blind::Restores),
                Some(Bug::GcIgnoresForks) => Some(crate::gc::Blind::Forks),
                Some(Bug::GcMisjudgesIntents) => Some(crate::gc::Blind::IntentFates),
                _ => None,
            },
        ));
        let made: Vec<DbName> = admins
            .iter()
            .flat_map(|a| a.forks.iter().chain(&a.stalled_forks).cloned())
            .collect();
        let forks = run_now(crate::admin::live_forks(&store, &made));
        report
            .anomalies
            .extend(crate::history::check_forks(&reader, &forks));
        report.output = std::mem::take(&mut history.output);
        report.trace_hash =
            donut_format::hash_hex(&donut_format::hash(trace.join("\n").as_bytes()));
        report.trace = trace;
        report
    }

    #[allow(clippy::too_many_arguments)]
    fn start_client<'a>(
        &'a self,
        client: &mut Client<'a>,
        store: &MemoryBackend,
        turns: &SharedTurns,
        cache: &Arc<SectorCache>,
        clock: &Arc<AtomicU64>,
        config: &Config,
        bug: Option<StoreBug>,
        guest_bug: &str,
        seed: u64,
    ) -> CallFuture<'a> {
        client.incarnation += 1;
        client.stdout = MemoryOutputPipe::new(4 << 20);
        client.stderr = MemoryOutputPipe::new(1 << 20);
        let backend = SimBackend {
            client: client.id,
            turns: turns.clone(),
            store: store.clone(),
            one_request: config.one_request,
            bug,
        };
        let storage = StorageCtx::new(Arc::new(backend), Grant::all())
            .with_clock(Clock::Virtual(Arc::new(SkewedClock {
                ms: clock.clone(),
                skew_ms: client.skew_ms,
            })))
            .with_lease_renewal(LeaseRenewal::OnCall)
            .with_cache(cache.clone());
        // Values a client writes are unique across clients and incarnations.
        let id_base = (client.id as u64 * 100 + client.incarnation as u64) * 1_000_000;
        let guest_seed = seed
            .wrapping_mul(31)
            .wrapping_add(client.id as u64 * 1009 + client.incarnation as u64);
        let args: Vec<String> = [
            "test-guest".to_string(),
            "sim".into(),
            DB.into(),
            client.id.to_string(),
            id_base.to_string(),
            client.ops_left.to_string(),
            guest_seed.to_string(),
            client.writer.into(),
            guest_bug.into(),
            config.lease_ms.to_string(),
        ]
        .into();
        let mut call = Call::new(args, storage);
        call.stdio = Stdio::Pipes {
            stdin: Vec::new(),
            stdout: client.stdout.clone(),
            stderr: client.stderr.clone(),
        };
        call.memory_limit_bytes = GUEST_MEMORY_BYTES;
        call.determinism = Some(Determinism {
            seed: guest_seed,
            clock_ms: clock.clone(),
        });
        Box::pin(self.runtime.run(&self.program, call))
    }

    /// Drops a client's guest wherever it is (its store, instance and open
    /// handles go with it) and records what it had printed.
    fn kill(&self, client: &mut Client<'_>, turns: &SharedTurns, history: &mut History) {
        client.running = None;
        client.runnable = false;
        {
            let mut t = lock(turns);
            t.pending.remove(&client.id);
            t.granted.remove(&client.id);
            t.killed.remove(&client.id);
        }
        let ended = end_incarnation(client, history);
        client.ops_left = client.ops_left.saturating_sub(ended);
        client.restarts += 1;
    }
}

/// The start of the last line a client printed: where it is in its work.
/// Reads a database's state with a guest run straight on the store (no
/// scheduler, no faults), for the history checks.
struct DirectReader<'a> {
    sim: &'a Sim,
    store: &'a MemoryBackend,
    clock: &'a Arc<AtomicU64>,
}

impl crate::history::Reader for DirectReader<'_> {
    fn final_state(&self, db: &str) -> Result<serde_json::Value, String> {
        let out = self.sim.direct(self.store, &["sim-final", db], self.clock);
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.success() {
            return Err(format!("{line} {}", String::from_utf8_lossy(&out.stderr)));
        }
        let value: serde_json::Value =
            serde_json::from_str(line.trim()).map_err(|e| format!("{e}: {line}"))?;
        value
            .get("final")
            .cloned()
            .ok_or_else(|| format!("no final state in {line}"))
    }

    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        run_now(future)
    }
}

fn last_line(stdout: &MemoryOutputPipe) -> String {
    let out = stdout.contents();
    let text = String::from_utf8_lossy(&out);
    text.lines().last().unwrap_or("").chars().take(24).collect()
}

/// Parses what an incarnation printed into the history; returns how many
/// operations it got to (finished or cut off).
fn end_incarnation(client: &Client<'_>, history: &mut History) -> u64 {
    let out = client.stdout.contents();
    let text = String::from_utf8_lossy(&out);
    history.output.extend(
        text.lines()
            .map(|l| format!("c{}.{} {l}", client.id, client.incarnation)),
    );
    let mut count = 0;
    let mut open: Option<OpRecord> = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            history.anomalies.push(format!(
                "client {} printed a line that is not JSON: {line}",
                client.id
            ));
            continue;
        };
        if let Some(op) = v.get("p").and_then(|p| p.as_u64()) {
            if let Some(previous) = open.take() {
                history.anomalies.push(format!(
                    "client {}: op {} has no outcome line",
                    client.id, previous.op
                ));
            }
            open = Some(OpRecord {
                client: client.id,
                op,
                body: v,
                status: Status::Unknown,
                error: None,
                acked_ms: None,
            });
        } else if let Some(op) = v.get("d").and_then(|d| d.as_u64()) {
            count += 1;
            let status = match v.get("st").and_then(|s| s.as_str()) {
                Some("ok") => Status::Ok,
                Some("fail") => Status::Fail,
                _ => Status::Unknown,
            };
            let error = v.get("err").and_then(|e| e.as_str()).map(String::from);
            match open.take() {
                Some(mut record) if record.op == op => {
                    record.status = status;
                    record.error = error;
                    record.acked_ms = v.get("t1").and_then(|t| t.as_u64());
                    history.ops.push(record);
                }
                Some(record) => history.anomalies.push(format!(
                    "client {}: outcome of op {op} while op {} was open",
                    client.id, record.op
                )),
                // Failed before it got to its commit: nothing to check
                // beyond the error itself.
                None => history.failed_early.push((client.id, op, error)),
            }
        }
    }
    if let Some(record) = open {
        // Cut off between "about to commit" and the outcome: unknown.
        count += 1;
        history.ops.push(record);
    }
    count
}
