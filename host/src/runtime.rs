//! Running DonutDB components: one [`Runtime`] (engine + linker) per process,
//! a [`Program`] (pre-instantiated component) per component, and one store
//! per call with its own WASI context, storage grant and memory limit.

use crate::storage::{self, QuotaExceeded, QuotaUse, StorageCtx};
use donut_format::limits::{CHANGE_LOG_ENV, MEMORY_LIMIT_ENV};
use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{Config, Engine, ResourceLimiter, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
pub use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The stock SQL component (guest/sql), built into the host.
pub static DONUT_SQL_WASM: &[u8] = include_bytes!(env!("DONUT_SQL_WASM"));

/// Prefix of the storage interface's import name.
const STORAGE_IMPORT: &str = "donut:storage/storage@0.1";

/// What the host's linker offers a component (WASI 0.2's command world
/// and `donut:storage`): a component importing anything else is refused
/// before it is compiled.
const OFFERED_IMPORT_PREFIXES: [&str; 7] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "donut:storage/",
];

/// A command line of the stock component (`guest/sql`, behind `donut-host
/// sql` and `shell`): its argument contract, written once for the CLI and
/// the tests.
pub enum StockSql<'a> {
    /// Runs `sql` against `db` and prints the result.
    Exec {
        db: &'a str,
        sql: &'a str,
        /// `table`, `csv` or `json`.
        format: &'a str,
        /// Statement parameters, in order (`int:`, `real:`, `text:`,
        /// `null` force a type).
        params: &'a [String],
    },
    /// Reads statements from stdin.
    Shell {
        db: &'a str,
        format: &'a str,
        /// Prompts and line editing (stdin is a terminal).
        interactive: bool,
    },
}

impl StockSql<'_> {
    /// The argument vector, program name first.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec!["donut-sql".to_string()];
        match self {
            StockSql::Exec {
                db,
                sql,
                format,
                params,
            } => {
                argv.extend(["exec", db, sql, "--format", format].map(String::from));
                for p in *params {
                    argv.extend(["--param".to_string(), p.clone()]);
                }
            }
            StockSql::Shell {
                db,
                format,
                interactive,
            } => {
                argv.extend(["shell", db, "--format", format].map(String::from));
                if *interactive {
                    argv.push("--interactive".into());
                }
            }
        }
        argv
    }
}

/// Default memory limit of one call's instance.
pub const MEMORY_LIMIT_BYTES_DEFAULT: usize = 2 << 30;
/// Most captured output kept per stream, unless a call says less
/// ([`Call::capture_bytes_max`]).
pub const CAPTURE_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{label}: cannot read: {source}")]
    Io {
        label: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{label} is not WebAssembly (no \\0asm header)")]
    NotWasm { label: String },
    #[error(
        "{label} is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target"
    )]
    CoreModule { label: String },
    #[error("{label} is not a valid component: {detail}")]
    Invalid { label: String, detail: String },
    #[error(
        "{label} does not import {STORAGE_IMPORT}.x (donut:storage); a DonutDB query component links the donut-guest library"
    )]
    MissingStorageImport { label: String },
    #[error("{label} cannot run here: {detail}")]
    Link { label: String, detail: String },
    #[error(
        "{label} imports {name:?}, which this host does not offer (only wasi:cli, clocks, filesystem, io, random, sockets and donut:storage)"
    )]
    UnknownImport { label: String, name: String },
    #[error("{label} is {bytes} bytes; the limit is {COMPONENT_BYTES_MAX}")]
    TooLarge { label: String, bytes: usize },
}

/// Largest component a runtime loads (the stock one is under 2 MB).
pub const COMPONENT_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{label}: instantiation failed: {detail}")]
    Instantiate { label: String, detail: String },
    #[error("{label} trapped: {detail}")]
    Trap { label: String, detail: String },
    #[error("{label} ran past its time limit of {limit:?} and was stopped")]
    TimeLimit { label: String, limit: Duration },
    #[error(
        "{label}: a time limit was asked for, but this runtime was built without time limits (RuntimeOptions::time_limits)"
    )]
    NoTimeLimits { label: String },
    #[error(
        "{label} tried to use more than its memory limit of {limit_bytes} bytes and was stopped"
    )]
    MemoryLimit { label: String, limit_bytes: usize },
    #[error("{label} reached {exceeded} and was stopped")]
    StorageLimit {
        label: String,
        exceeded: QuotaExceeded,
    },
    #[error("{label} used its CPU limit of {fuel_max} units of fuel and was stopped")]
    CpuLimit { label: String, fuel_max: u64 },
    #[error(
        "{label}: a CPU limit was asked for, but this runtime was built without fuel (RuntimeOptions::fuel)"
    )]
    NoFuel { label: String },
    #[error("{label}: the change log cannot be granted: {detail}")]
    ChangeLog { label: String, detail: String },
    #[error("{label} wrote more than its output limit of {limit_bytes} bytes and was stopped")]
    OutputLimit { label: String, limit_bytes: usize },
}

impl RunError {
    /// The stable name of the limit that stopped the call (metrics, JSON
    /// errors), or `None` when no limit did.
    pub fn limit_name(&self) -> Option<&'static str> {
        match self {
            RunError::TimeLimit { .. } => Some("time"),
            RunError::MemoryLimit { .. } => Some("memory"),
            RunError::CpuLimit { .. } => Some("cpu"),
            RunError::StorageLimit { exceeded, .. } => Some(exceeded.limit_name()),
            RunError::OutputLimit { .. } => Some("output"),
            RunError::Instantiate { .. }
            | RunError::Trap { .. }
            | RunError::NoTimeLimits { .. }
            | RunError::NoFuel { .. }
            | RunError::ChangeLog { .. } => None,
        }
    }
}

/// What one call used: every call reports it, whatever its outcome.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// From instantiation to exit.
    pub wall: Duration,
    /// Time the call's work was running on a thread: the guest's own
    /// execution and the host's work on its calls, not the waits for
    /// storage.
    pub busy: Duration,
    /// Storage calls, sectors and bytes, as the call's quota counts them.
    pub storage: QuotaUse,
    /// The most linear memory the instance held.
    pub peak_memory_bytes: usize,
    /// Fuel the guest burned (one unit per WebAssembly instruction,
    /// roughly), if the runtime meters fuel (`RuntimeOptions::fuel`).
    pub fuel: Option<u64>,
    /// The exit code, if the guest exited (not stopped or trapped).
    pub exit_code: Option<i32>,
    /// Requests, capacity units and bytes as DynamoDB bills them, if the
    /// call's storage was billed (`StorageCtx::billed`).
    pub billed: Option<crate::stats::RequestStats>,
}

/// Runs a future and adds up the time spent polling it.
struct Busy<'a, F> {
    inner: std::pin::Pin<Box<F>>,
    busy: &'a mut Duration,
}

impl<F: std::future::Future> std::future::Future for Busy<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let started = std::time::Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        *self.busy += started.elapsed();
        polled
    }
}

/// How often the engine's epoch advances: the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The trap a guest gets when it asks for memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
struct MemoryLimitExceeded(usize);

/// Per-call limits on linear memory and tables.
struct Limiter {
    memory_bytes: usize,
    /// The most linear memory asked for and granted.
    peak_memory_bytes: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(MemoryLimitExceeded(self.memory_bytes).into());
        }
        self.peak_memory_bytes = self.peak_memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_MAX)
    }

    fn instances(&self) -> usize {
        16
    }
}

/// Most elements in one table of a guest.
const TABLE_ELEMENTS_MAX: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("configuring wasmtime: {0}")]
    Engine(String),
}

pub struct RuntimeOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Whether calls may have time limits. They need guests compiled with
    /// epoch checks at every loop head and function entry, which cost
    /// ~15% of a guest's CPU time (BENCHMARKS.md, "Engine overhead"); a
    /// runtime that never limits time (a user's own one-shot CLI call)
    /// can go without. A service running others' code must keep them.
    pub time_limits: bool,
    /// Whether calls may have CPU limits in fuel (`Call::fuel_max`): a
    /// count of the guest's instructions, the same on every machine and
    /// under any load, where a time limit is not. Metering costs guest
    /// CPU: ~20% on top of the epoch checks (BENCHMARKS.md, "Fuel").
    pub fuel: bool,
    /// Instances from wasmtime's pooling allocator (slots reserved up
    /// front, reused warm: cheaper instantiation for a service), or `None`
    /// for on-demand allocation (a one-shot CLI call).
    pub pooling: Option<Pooling>,
}

/// The pooling allocator's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pooling {
    /// Component instances alive at once.
    pub instances_max: u32,
    /// Linear memory of one instance: every call's memory limit is capped
    /// to it.
    pub memory_bytes_max: usize,
}

/// Core instances, memories and tables one DonutDB component may hold (a
/// `wasm32-wasip2` Rust component has a few core instances, one memory).
const CORE_INSTANCES_PER_COMPONENT_MAX: u32 = 32;
const MEMORIES_PER_COMPONENT_MAX: u32 = 2;
const TABLES_PER_COMPONENT_MAX: u32 = 8;

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: default_cache_dir(),
            time_limits: true,
            fuel: false,
            pooling: None,
        }
    }
}

/// `$XDG_CACHE_HOME/donutdb/components`, or `~/.cache/donutdb/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    Some(default_cache_base()?.join("components"))
}

/// `$XDG_CACHE_HOME/donutdb`, or `~/.cache/donutdb`: where the CLI keeps
/// compiled components and sectors.
pub fn default_cache_base() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("donutdb"))
}

/// The store's data for one call.
pub struct HostState {
    wasi: WasiCtx,
    wasi_table: ResourceTable,
    storage: StorageCtx,
    limits: Limiter,
    /// The running call's (or request's) time limit and the time it has
    /// run ([`Runtime::arm_time`]).
    time: RunTime,
    /// Whether the guest yields to the async executor at every epoch tick
    /// (so a CPU-bound guest never holds a thread of the reactor for more
    /// than a tick); off for deterministic calls, whose schedule the
    /// simulator decides.
    yields: bool,
}

/// The time a call or a request has run, for its time limit: its own
/// execution — the CPU time of the thread it ran on (wall time where it
/// moved threads between two stamps: a host call it waited on) — never
/// the time it waits for a thread after yielding at an epoch tick, nor
/// the time the OS gives the thread to other processes. So a tenant's
/// many busy instances cannot push another tenant's statement past its
/// limit by keeping it waiting (each runs its share, and is measured by
/// it).
#[derive(Debug, Default)]
struct RunTime {
    limit: Option<Duration>,
    /// Run so far, up to `resumed`.
    ran: Duration,
    /// When and where it last started or went on running (after a yield,
    /// set by the yield itself).
    resumed: Arc<std::sync::Mutex<Stamp>>,
}

/// A point in a guest's run: wall clock, the thread, its CPU time.
#[derive(Debug, Clone, Copy, Default)]
struct Stamp {
    wall_ns: u64,
    thread: u64,
    thread_cpu_ns: Option<u64>,
}

impl Stamp {
    fn now() -> Stamp {
        std::thread_local! {
            static THREAD: u64 = {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            };
        }
        Stamp {
            wall_ns: run_clock_ns(),
            thread: THREAD.with(|n| *n),
            thread_cpu_ns: thread_cpu_ns(),
        }
    }

    /// What ran from `self` to `later`.
    fn ran_until(self, later: Stamp) -> Duration {
        let ns = match (self.thread_cpu_ns, later.thread_cpu_ns) {
            (Some(from), Some(to)) if self.thread == later.thread => to.saturating_sub(from),
            _ => later.wall_ns.saturating_sub(self.wall_ns),
        };
        Duration::from_nanos(ns)
    }
}

/// The calling thread's CPU time, where the OS tells it.
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u64::try_from(ts.tv_nsec).ok()?;
    (rc == 0).then(|| secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Nanoseconds since the process's first use of it (monotonic).
fn run_clock_ns() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(std::time::Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl RunTime {
    /// A new limit, nothing run yet; running from now.
    fn start(&mut self, limit: Option<Duration>) {
        self.limit = limit;
        self.ran = Duration::ZERO;
        self.resume();
    }

    /// Running (again) from now.
    fn resume(&self) {
        *self.resumed.lock().unwrap_or_else(|e| e.into_inner()) = Stamp::now();
    }

    /// Adds what ran since it last resumed; running on from now.
    fn pause(&mut self) {
        let now = Stamp::now();
        let since = std::mem::replace(
            &mut *self.resumed.lock().unwrap_or_else(|e| e.into_inner()),
            now,
        );
        self.ran = self.ran.saturating_add(since.ran_until(now));
    }

    fn is_over(&self) -> bool {
        self.limit.is_some_and(|limit| self.ran >= limit)
    }
}

/// The trap a guest gets at its deadline.
#[derive(Debug, thiserror::Error)]
#[error("time limit reached")]
struct TimeLimitReached;

/// What the engine does at each epoch tick of a guest: stop it once it
/// has run its time limit ([`RunTime`]); otherwise yield to the executor
/// (other tasks run: `/healthz`, other tenants) and go on for one more
/// tick, its clock running again only when it does. Spin yields the same.
fn on_epoch_tick(
    mut state: wasmtime::StoreContextMut<'_, HostState>,
) -> wasmtime::Result<wasmtime::UpdateDeadline> {
    let state = state.data_mut();
    state.time.pause();
    if state.time.is_over() {
        return Err(TimeLimitReached.into());
    }
    Ok(if state.yields {
        let resumed = state.time.resumed.clone();
        wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                *resumed.lock().unwrap_or_else(|e| e.into_inner()) = Stamp::now();
            }),
        )
    } else {
        wasmtime::UpdateDeadline::Continue(1)
    })
}

impl HostState {
    pub(crate) fn storage_ctx(&self) -> &StorageCtx {
        &self.storage
    }

    pub(crate) fn storage_ctx_mut(&mut self) -> &mut StorageCtx {
        &mut self.storage
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.wasi_table,
        }
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    /// `RuntimeOptions::time_limits`.
    time_limits: bool,
    /// `RuntimeOptions::fuel`.
    fuel: bool,
    /// `RuntimeOptions::pooling`.
    pooling: Option<Pooling>,
    /// Programs loaded through [`Runtime::load_shared`], by
    /// [`program_key`]: least recently used out past a size in bytes.
    programs: std::sync::Mutex<ProgramCache>,
    /// Most bytes of compiled components kept in `cache_dir`; the least
    /// recently used go first.
    cache_dir_bytes_max: u64,
    /// Compiles done (not taken from memory or disk): what a test can
    /// count.
    compiles: std::sync::atomic::AtomicU64,
}

/// Default of [`Runtime::bound_caches`]: compiled code kept in memory.
pub const PROGRAM_CACHE_BYTES_MAX_DEFAULT: usize = 1 << 30;
/// Default of [`Runtime::bound_caches`]: compiled code kept on disk.
pub const CACHE_DIR_BYTES_MAX_DEFAULT: u64 = 4 << 30;

/// The key a compiled program is kept under, in memory and on disk: the
/// SHA-256 of its scope (a tenant's name, or "" for the host's own) and
/// its component's bytes. Scopes keep tenants' compiled code apart, so
/// how fast an upload answers says nothing about what others uploaded.
pub fn program_key(scope: &str, bytes: &[u8]) -> donut_format::Hash {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update((scope.len() as u64).to_le_bytes());
    hasher.update(scope.as_bytes());
    hasher.update(bytes);
    hasher.finalize().into()
}

/// Compiled programs in memory: least recently used out first, past
/// `bytes_max` of machine code.
#[derive(Default)]
struct ProgramCache {
    entries: std::collections::HashMap<donut_format::Hash, CachedProgram>,
    bytes: usize,
    bytes_max: usize,
    /// Ticks at every use: the order of last use.
    clock: u64,
}

struct CachedProgram {
    pre: CommandPre<HostState>,
    from_cache: bool,
    code_bytes: usize,
    used: u64,
}

impl ProgramCache {
    fn get(&mut self, key: &donut_format::Hash) -> Option<(CommandPre<HostState>, bool)> {
        self.clock += 1;
        let entry = self.entries.get_mut(key)?;
        entry.used = self.clock;
        Some((entry.pre.clone(), entry.from_cache))
    }

    /// Keeps `entry`, then drops the least recently used others until
    /// the cache is within its size (the newest stays even if alone it
    /// is over).
    fn insert(&mut self, key: donut_format::Hash, mut entry: CachedProgram) {
        self.clock += 1;
        entry.used = self.clock;
        self.bytes += entry.code_bytes;
        if let Some(old) = self.entries.insert(key, entry) {
            self.bytes -= old.code_bytes;
        }
        while self.bytes > self.bytes_max && self.entries.len() > 1 {
            let oldest = self
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| *k);
            let Some(oldest) = oldest else { break };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= gone.code_bytes;
            }
        }
        debug_assert_eq!(
            self.bytes,
            self.entries.values().map(|e| e.code_bytes).sum::<usize>()
        );
    }
}

/// A component ready to instantiate many times.
pub struct Program {
    label: String,
    pre: CommandPre<HostState>,
    /// True if it came from the compiled-component cache.
    pub from_cache: bool,
    /// Its [`program_key`].
    key: donut_format::Hash,
    /// How long compiling it took, if this load compiled it (not taken
    /// from memory or the cache directory).
    pub compile_time: Option<Duration>,
}

impl Program {
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Its [`program_key`]: equal keys, the same compiled code.
    pub fn key(&self) -> &donut_format::Hash {
        &self.key
    }
}

/// Where a call's stdin comes from and whether its output is captured.
pub enum Stdio {
    /// The host process's own stdin, stdout and stderr.
    Inherit,
    /// Given stdin bytes; stdout and stderr captured into the [`Outcome`].
    Capture { stdin: Vec<u8> },
    /// Given stdin bytes; stdout and stderr written to pipes the caller
    /// keeps clones of, so what a guest wrote survives its call being
    /// dropped (the simulator kills guests that way).
    Pipes {
        stdin: Vec<u8>,
        stdout: MemoryOutputPipe,
        stderr: MemoryOutputPipe,
    },
}

/// A guest's view of time and chance, made reproducible: WASI's wall and
/// monotonic clocks read `clock_ms`, and its random sources are a sequence
/// drawn from `seed`. The simulator replays a run from its seed this way.
#[derive(Clone)]
pub struct Determinism {
    pub seed: u64,
    pub clock_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

struct VirtualClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl VirtualClock {
    fn ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl wasmtime_wasi::HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.ms())
    }
}

impl wasmtime_wasi::HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.ms().saturating_mul(1_000_000)
    }
}

/// Where a guest sees the directory of its change log.
const CHANGE_LOG_GUEST_DIR: &str = "/donut-change-log";

/// Grants the guest the directory of `path` and names the file to it.
fn grant_change_log(
    wasi: &mut WasiCtxBuilder,
    path: &std::path::Path,
    label: &str,
) -> Result<(), RunError> {
    let refused = |why: String| RunError::ChangeLog {
        label: label.to_string(),
        detail: format!("{}: {why}", path.display()),
    };
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| refused("not a file name".into()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    wasi.preopened_dir(dir, CHANGE_LOG_GUEST_DIR, wasmtime_wasi::FsPerms::ReadWrite)
        .map_err(|e| refused(e.to_string()))?;
    wasi.env(CHANGE_LOG_ENV, format!("{CHANGE_LOG_GUEST_DIR}/{file}"));
    Ok(())
}

/// Bytes of the repeating random sequence a deterministic guest draws from
/// (a prime, so u64 draws do not repeat soon).
const DETERMINISTIC_RANDOM_BYTES: usize = 65_537;

fn seeded_bytes(seed: u64) -> Vec<u8> {
    // SplitMix64: small, and every seed gives a different sequence.
    let mut state = seed;
    let mut out = Vec::with_capacity(DETERMINISTIC_RANDOM_BYTES + 8);
    while out.len() < DETERMINISTIC_RANDOM_BYTES {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(DETERMINISTIC_RANDOM_BYTES);
    out
}

pub struct Call {
    /// argv, including argv[0].
    pub args: Vec<String>,
    pub storage: StorageCtx,
    pub stdio: Stdio,
    pub memory_limit_bytes: usize,
    /// Wall-clock budget of the guest's own execution (granularity 10 ms);
    /// `None`: no limit.
    pub time_limit: Option<Duration>,
    /// CPU budget in fuel; `None`: no limit. Needs `RuntimeOptions::fuel`.
    pub fuel_max: Option<u64>,
    /// Most bytes of stdout, and of stderr, captured ([`Stdio::Capture`]);
    /// a guest that writes more is stopped ([`RunError::OutputLimit`]).
    pub capture_bytes_max: usize,
    /// Virtual clocks and seeded randomness; `None`: the real ones.
    pub determinism: Option<Determinism>,
    /// Append the change log (a JSON line per VFS call) to this file: the
    /// guest is granted its directory, read and write, and told the file
    /// (`CHANGE_LOG_ENV`). `None`: no file system at all, as usual.
    pub change_log: Option<std::path::PathBuf>,
}

impl Call {
    pub fn new(args: Vec<String>, storage: StorageCtx) -> Call {
        Call {
            args,
            storage,
            stdio: Stdio::Inherit,
            memory_limit_bytes: MEMORY_LIMIT_BYTES_DEFAULT,
            time_limit: None,
            fuel_max: None,
            capture_bytes_max: CAPTURE_BYTES_MAX,
            determinism: None,
            change_log: None,
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    /// The component's exit code: 0 for success.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

impl Runtime {
    pub fn new(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Time limits: the guest checks the engine's epoch at loop heads and
        // function entries; a thread advances it every EPOCH_TICK.
        config.epoch_interruption(options.time_limits);
        config.consume_fuel(options.fuel);
        if let Some(pooling) = options.pooling {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
                pooling_config(pooling),
            ));
        }
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let weak = engine.weak();
        if options.time_limits {
            std::thread::Builder::new()
                .name("donut-epoch".into())
                .spawn(move || {
                    while let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(EPOCH_TICK);
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("starting the epoch thread: {e}")))?;
        }
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        storage::add_to_linker(&mut linker, |state: &mut HostState| &mut state.storage)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir: options.cache_dir,
            time_limits: options.time_limits,
            fuel: options.fuel,
            pooling: options.pooling,
            programs: std::sync::Mutex::new(ProgramCache {
                bytes_max: PROGRAM_CACHE_BYTES_MAX_DEFAULT,
                ..ProgramCache::default()
            }),
            cache_dir_bytes_max: CACHE_DIR_BYTES_MAX_DEFAULT,
            compiles: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Bounds the compiled code kept in memory (`memory_bytes_max`) and in
    /// the cache directory (`disk_bytes_max`); the least recently used
    /// goes first.
    pub fn bound_caches(&mut self, memory_bytes_max: usize, disk_bytes_max: u64) {
        self.programs
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .bytes_max = memory_bytes_max;
        self.cache_dir_bytes_max = disk_bytes_max;
    }

    /// Compiles done so far (not taken from memory or disk).
    pub fn compiles(&self) -> u64 {
        self.compiles.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of compiled code kept in memory now.
    pub fn program_cache_bytes(&self) -> usize {
        self.programs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bytes
    }

    pub fn load_file(&self, path: &Path) -> Result<Program, LoadError> {
        let label = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
            label: label.clone(),
            source,
        })?;
        self.load(&bytes, &label)
    }

    /// The stock `donut-sql` component.
    pub fn stock_sql(&self) -> Result<Program, LoadError> {
        self.load(DONUT_SQL_WASM, "donut-sql (built in)")
    }

    /// Loads `bytes` once per content and scope: loading the same bytes
    /// again in the same `scope` (a tenant's name) takes the compiled
    /// code kept in memory or on disk; another scope compiles its own. The
    /// program carries `label` (its caller's name for it), whoever loaded
    /// the bytes first. For a
    /// service whose tenants upload components.
    pub fn load_shared(
        &self,
        scope: &str,
        bytes: &[u8],
        label: &str,
    ) -> Result<Arc<Program>, LoadError> {
        let key = program_key(scope, bytes);
        let programs = || self.programs.lock().unwrap_or_else(|e| e.into_inner());
        let found = programs().get(&key);
        if let Some((pre, from_cache)) = found {
            return Ok(Arc::new(Program {
                label: label.to_string(),
                pre,
                from_cache,
                key,
                compile_time: None,
            }));
        }
        // Compiled outside the lock: two first uploads of the same bytes
        // may both compile; the last one in is kept.
        let started = std::time::Instant::now();
        let (mut program, code_bytes) = self.load_keyed(bytes, label, key)?;
        if !program.from_cache {
            program.compile_time = Some(started.elapsed());
        }
        let entry = CachedProgram {
            pre: program.pre.clone(),
            from_cache: program.from_cache,
            code_bytes,
            used: 0,
        };
        programs().insert(key, entry);
        Ok(Arc::new(program))
    }

    /// The program of `key` if it is kept in memory, labelled `label`.
    pub fn cached_program(&self, key: &donut_format::Hash, label: &str) -> Option<Arc<Program>> {
        let mut programs = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        let (pre, from_cache) = programs.get(key)?;
        Some(Arc::new(Program {
            label: label.to_string(),
            pre,
            from_cache,
            key: *key,
            compile_time: None,
        }))
    }

    pub fn load(&self, bytes: &[u8], label: &str) -> Result<Program, LoadError> {
        Ok(self.load_keyed(bytes, label, program_key("", bytes))?.0)
    }

    /// Loads `bytes` under `key`; with its machine code's size.
    fn load_keyed(
        &self,
        bytes: &[u8],
        label: &str,
        key: donut_format::Hash,
    ) -> Result<(Program, usize), LoadError> {
        let (instance_pre, from_cache, code_bytes) = self.instance_pre_keyed(bytes, label, &key)?;
        let pre = CommandPre::new(instance_pre).map_err(|e| LoadError::Link {
            label: label.to_string(),
            detail: format!("not a command component (no wasi:cli/run export): {e:#}"),
        })?;
        let program = Program {
            label: label.to_string(),
            pre,
            from_cache,
            key,
            compile_time: None,
        };
        Ok((program, code_bytes))
    }

    /// Checks `bytes` (size, a component, the storage import), compiles
    /// them (or takes the cached machine code) and links them.
    pub(crate) fn instance_pre(
        &self,
        bytes: &[u8],
        label: &str,
    ) -> Result<(wasmtime::component::InstancePre<HostState>, bool), LoadError> {
        let (pre, from_cache, _) =
            self.instance_pre_keyed(bytes, label, &program_key("", bytes))?;
        Ok((pre, from_cache))
    }

    /// [`Runtime::instance_pre`] with the cache key, and the size of the
    /// machine code.
    fn instance_pre_keyed(
        &self,
        bytes: &[u8],
        label: &str,
        key: &donut_format::Hash,
    ) -> Result<(wasmtime::component::InstancePre<HostState>, bool, usize), LoadError> {
        let label = label.to_string();
        check_component(bytes, &label)?;
        let (component, from_cache) = self.compile_cached(bytes, &label, key)?;
        let imports_storage =
            component
                .component_type()
                .imports(&self.engine)
                .any(|(name, item)| {
                    name.starts_with(STORAGE_IMPORT)
                        && matches!(item.ty, ComponentItem::ComponentInstance(_))
                });
        if !imports_storage {
            return Err(LoadError::MissingStorageImport { label });
        }
        let image = component.image_range();
        let code_bytes = (image.end as usize).saturating_sub(image.start as usize);
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| LoadError::Link {
                    label: label.clone(),
                    detail: format!("{e:#}"),
                })?;
        Ok((instance_pre, from_cache, code_bytes))
    }

    /// A store for a long-lived instance (a SQL session): no arguments,
    /// no stdio, no network; `memory_limit_bytes` (within the pool's slot)
    /// for its whole life; deadlines and fuel are set per call by the
    /// caller ([`Runtime::arm`]).
    pub(crate) fn session_store(
        &self,
        storage: StorageCtx,
        memory_limit_bytes: usize,
    ) -> Store<HostState> {
        let memory_limit_bytes = self.memory_limit_bytes(memory_limit_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.env(MEMORY_LIMIT_ENV, memory_limit_bytes.to_string())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let state = HostState {
            wasi: wasi.build(),
            wasi_table: ResourceTable::new(),
            storage,
            limits: Limiter {
                memory_bytes: memory_limit_bytes,
                peak_memory_bytes: 0,
            },
            time: RunTime::default(),
            yields: true,
        };
        self.store(state)
    }

    /// A store for `state`, its memory limited and, if the runtime has
    /// time limits, its epoch ticks handled by [`on_epoch_tick`].
    fn store(&self, state: HostState) -> Store<HostState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        if self.time_limits {
            store.epoch_deadline_callback(on_epoch_tick);
            store.set_epoch_deadline(1);
        }
        store
    }

    /// Sets `store`'s deadline and fuel for its next call: `time_limit`
    /// and `fuel_max` from now, or none.
    pub(crate) fn arm(
        &self,
        store: &mut Store<HostState>,
        label: &str,
        time_limit: Option<Duration>,
        fuel_max: Option<u64>,
    ) -> Result<(), RunError> {
        self.arm_time(store, label, time_limit)?;
        self.arm_fuel(store, label, fuel_max)
    }

    /// Sets `store`'s time limit (none: no limit), nothing run yet. The
    /// guest is stopped at the first epoch tick after it has run that
    /// long ([`RunTime`]: waiting for a thread does not count).
    pub(crate) fn arm_time(
        &self,
        store: &mut Store<HostState>,
        label: &str,
        time_limit: Option<Duration>,
    ) -> Result<(), RunError> {
        if time_limit.is_some() && !self.time_limits {
            return Err(RunError::NoTimeLimits {
                label: label.to_string(),
            });
        }
        // A limit past what the clock can count is never reached (sums
        // saturate), not an overflow.
        store.data_mut().time.start(time_limit);
        if self.time_limits {
            store.set_epoch_deadline(1);
        }
        Ok(())
    }

    /// `store`'s guest runs again (a session's next call of the same
    /// request): its clock goes on from what it ran so far.
    pub(crate) fn resume_time(&self, store: &mut Store<HostState>) {
        store.data().time.resume();
        if self.time_limits {
            store.set_epoch_deadline(1);
        }
    }

    /// `store`'s guest stopped running (a session's call returned): what
    /// it ran is added to its request's time.
    pub(crate) fn pause_time(&self, store: &mut Store<HostState>) {
        store.data_mut().time.pause();
    }

    /// Gives `store` `fuel_max` fuel from now (none: as much as it wants).
    pub(crate) fn arm_fuel(
        &self,
        store: &mut Store<HostState>,
        label: &str,
        fuel_max: Option<u64>,
    ) -> Result<(), RunError> {
        match (fuel_max, self.fuel) {
            (Some(_), false) => Err(RunError::NoFuel {
                label: label.to_string(),
            }),
            (_, false) => Ok(()),
            (limit, true) => {
                store
                    .set_fuel(limit.unwrap_or(u64::MAX))
                    .map_err(|e| RunError::Instantiate {
                        label: label.to_string(),
                        detail: format!("setting fuel: {e}"),
                    })
            }
        }
    }

    /// What stopped a call that failed with `e`: a limit, or a trap.
    pub(crate) fn stopped(
        store: &Store<HostState>,
        e: &wasmtime::Error,
        label: &str,
        time_limit: Option<Duration>,
        fuel_max: Option<u64>,
    ) -> RunError {
        let label = label.to_string();
        let state = store.data();
        if let Some(exceeded) = state.storage.quota_exceeded() {
            return RunError::StorageLimit { label, exceeded };
        }
        if e.downcast_ref::<MemoryLimitExceeded>().is_some() {
            return RunError::MemoryLimit {
                label,
                limit_bytes: state.limits.memory_bytes,
            };
        }
        if let (Some(_), Some(limit)) = (e.downcast_ref::<TimeLimitReached>(), time_limit) {
            return RunError::TimeLimit { label, limit };
        }
        match (e.downcast_ref::<wasmtime::Trap>(), time_limit, fuel_max) {
            (Some(wasmtime::Trap::OutOfFuel), _, Some(fuel_max)) => {
                RunError::CpuLimit { label, fuel_max }
            }
            (Some(wasmtime::Trap::Interrupt), Some(limit), _) => {
                RunError::TimeLimit { label, limit }
            }
            _ => RunError::Trap {
                label,
                detail: format!("{e:?}"),
            },
        }
    }

    /// Compiles `bytes`, or loads the machine code a previous compile
    /// cached under `key` ([`CachedArtifact`]: only after checking that it
    /// was written whole, for `key` and for this engine).
    fn compile_cached(
        &self,
        bytes: &[u8],
        label: &str,
        key: &donut_format::Hash,
    ) -> Result<(Component, bool), LoadError> {
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            label: label.to_string(),
            detail: format!("{e:#}"),
        };
        let Some(dir) = &self.cache_dir else {
            return Ok((self.compile(bytes).map_err(invalid)?, false));
        };
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        let engine = compat.finish();
        let path = dir.join(format!(
            "{}-{engine:016x}.cwasm",
            &donut_format::hash_hex(key)[..32]
        ));
        match std::fs::read(&path) {
            Ok(file) => match CachedArtifact::check(&file, key, engine) {
                // SAFETY: `check` verified the artifact's SHA-256 against
                // the one written with it, and that it was compiled from
                // these bytes in this scope for this engine's
                // configuration: it is the machine code this program
                // wrote, whole.
                Ok(artifact) => match unsafe { Component::deserialize(&self.engine, artifact) } {
                    Ok(component) => {
                        touch(&path);
                        return Ok((component, true));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "cached component refused by the engine, recompiling: {e:#}")
                    }
                },
                Err(why) => {
                    tracing::warn!(path = %path.display(), "cached component {why}: recompiling, not running it")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "reading a cached component: {e}"),
        }
        let component = self.compile(bytes).map_err(invalid)?;
        // A cache that cannot be written only costs the next run a compile.
        if let Ok(serialized) = component.serialize() {
            match write_artifact(dir, &path, key, engine, &serialized) {
                Ok(()) => prune_cache_dir(dir, self.cache_dir_bytes_max),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "caching a compiled component: {e}")
                }
            }
        }
        Ok((component, false))
    }

    /// Compiles `bytes`, counted.
    fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        self.compiles
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Component::new(&self.engine, bytes)
    }

    /// A call's memory limit, within the pool's slot size if pooled.
    fn memory_limit_bytes(&self, asked_bytes: usize) -> usize {
        match self.pooling {
            Some(pooling) => asked_bytes.min(pooling.memory_bytes_max),
            None => asked_bytes,
        }
    }

    /// Runs one call of `program` in a fresh store.
    pub async fn run(&self, program: &Program, call: Call) -> Result<Outcome, RunError> {
        self.run_with_usage(program, call).await.0
    }

    /// Runs one call of `program` in a fresh store, and says what it used.
    pub async fn run_with_usage(
        &self,
        program: &Program,
        call: Call,
    ) -> (Result<Outcome, RunError>, Usage) {
        let started = std::time::Instant::now();
        let mut usage = Usage::default();
        let outcome = self.run_measured(program, call, &mut usage).await;
        usage.wall = started.elapsed();
        usage.exit_code = outcome.as_ref().ok().map(|o| o.exit_code);
        (outcome, usage)
    }

    async fn run_measured(
        &self,
        program: &Program,
        call: Call,
        usage: &mut Usage,
    ) -> Result<Outcome, RunError> {
        let memory_limit_bytes = self.memory_limit_bytes(call.memory_limit_bytes);
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&call.args)
            // The guest library sizes its memory budgets from it (in-memory
            // journals, pending pages), so a big transaction fails with
            // SQLITE_FULL instead of trapping at the limit.
            .env(MEMORY_LIMIT_ENV, memory_limit_bytes.to_string())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let captured = match call.stdio {
            Stdio::Inherit => {
                wasi.inherit_stdio();
                None
            }
            Stdio::Capture { stdin } => {
                let stdout = MemoryOutputPipe::new(call.capture_bytes_max);
                let stderr = MemoryOutputPipe::new(call.capture_bytes_max);
                wasi.stdin(MemoryInputPipe::new(stdin))
                    .stdout(stdout.clone())
                    .stderr(stderr.clone());
                Some((stdout, stderr))
            }
            Stdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                wasi.stdin(MemoryInputPipe::new(stdin))
                    .stdout(stdout)
                    .stderr(stderr);
                None
            }
        };
        if let Some(path) = &call.change_log {
            grant_change_log(&mut wasi, path, &program.label)?;
        }
        if let Some(determinism) = &call.determinism {
            let bytes = seeded_bytes(determinism.seed);
            wasi.wall_clock(VirtualClock(determinism.clock_ms.clone()))
                .monotonic_clock(VirtualClock(determinism.clock_ms.clone()))
                .secure_random(wasmtime_wasi::Deterministic::new(bytes.clone()))
                .insecure_random(wasmtime_wasi::Deterministic::new(bytes))
                .insecure_random_seed(determinism.seed as u128);
        }
        let state = HostState {
            wasi: wasi.build(),
            wasi_table: ResourceTable::new(),
            storage: call.storage,
            limits: Limiter {
                memory_bytes: memory_limit_bytes,
                peak_memory_bytes: 0,
            },
            time: RunTime::default(),
            yields: call.determinism.is_none(),
        };
        let mut store = self.store(state);
        self.arm(&mut store, &program.label, call.time_limit, call.fuel_max)?;
        // The fuel the call started with, if fuel is metered.
        let fuel_max = self.fuel.then(|| call.fuel_max.unwrap_or(u64::MAX));
        let time_limit = call.time_limit;
        let label = program.label.clone();
        let instantiated = Busy {
            inner: Box::pin(program.pre.instantiate_async(&mut store)),
            busy: &mut usage.busy,
        }
        .await;
        let command = instantiated.map_err(|e| RunError::Instantiate {
            label: label.clone(),
            detail: format!("{e:#}"),
        })?;
        let result = Busy {
            inner: Box::pin(command.wasi_cli_run().call_run(&mut store)),
            busy: &mut usage.busy,
        }
        .await;
        usage.fuel = fuel_max.map(|max| max - store.get_fuel().unwrap_or(0));
        let state = store.data();
        usage.storage = state.storage.quota_used();
        usage.peak_memory_bytes = state.limits.peak_memory_bytes;
        usage.billed = state.storage.bill();
        if let Some(exceeded) = state.storage.quota_exceeded() {
            return Err(RunError::StorageLimit { label, exceeded });
        }
        // A full pipe refused the guest's writes: its output is cut, so
        // the call failed at a limit, whatever it exited with.
        if let Some((out, err)) = &captured
            && out.contents().len().max(err.contents().len()) >= call.capture_bytes_max
        {
            return Err(RunError::OutputLimit {
                label,
                limit_bytes: call.capture_bytes_max,
            });
        }
        let exit_code = match result {
            Ok(Ok(())) => 0,
            Ok(Err(())) => 1,
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => {
                    let stopped = Runtime::stopped(&store, &e, &label, time_limit, call.fuel_max);
                    return Err(stopped);
                }
            },
        };
        let (stdout, stderr) = match captured {
            Some((out, err)) => (out.contents().to_vec(), err.contents().to_vec()),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Outcome {
            exit_code,
            stdout,
            stderr,
        })
    }
}

/// Refuses `bytes` before any compile: too large, not WebAssembly, a
/// core module, unparsable, or a component importing what the host does
/// not offer or not importing `donut:storage`. Reads the top-level import
/// section only (cheap next to compiling).
fn check_component(bytes: &[u8], label: &str) -> Result<(), LoadError> {
    let label = label.to_string();
    if bytes.len() > COMPONENT_BYTES_MAX {
        return Err(LoadError::TooLarge {
            label,
            bytes: bytes.len(),
        });
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm { label });
    }
    // Bytes 4..8: version 1 is a core module; components use layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule { label });
    }
    let invalid = |e: wasmparser::BinaryReaderError| LoadError::Invalid {
        label: label.clone(),
        detail: e.to_string(),
    };
    let mut depth = 0usize;
    let mut imports_storage = false;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let name = import.map_err(invalid)?.name.name;
                    if !OFFERED_IMPORT_PREFIXES.iter().any(|p| name.starts_with(p)) {
                        return Err(LoadError::UnknownImport {
                            label,
                            name: name.to_string(),
                        });
                    }
                    imports_storage |= name.starts_with(STORAGE_IMPORT);
                }
            }
            _ => {}
        }
    }
    if !imports_storage {
        return Err(LoadError::MissingStorageImport { label });
    }
    Ok(())
}

/// A compiled component as the cache keeps it (`<key>-<engine>.cwasm`):
/// `MAGIC`, the [`program_key`] it was compiled for (32 bytes), the
/// engine's compatibility hash (8, little-endian), the SHA-256 of the
/// artifact (32), then the artifact wasmtime serialized. Written to a
/// temporary file of its own and renamed into place; checked whole before
/// it is deserialized, so a torn file, another key's file or another
/// engine's is compiled again, never run.
pub struct CachedArtifact;

impl CachedArtifact {
    /// The first bytes of every cache file (the format's version last).
    pub const MAGIC: [u8; 8] = *b"DONUTCW\x01";
    /// Bytes before the artifact.
    pub const HEADER_BYTES: usize = 8 + 32 + 8 + 32;

    /// The artifact in `file` if the file is whole and was written for
    /// `key` and `engine`; else why not.
    pub fn check<'a>(
        file: &'a [u8],
        key: &donut_format::Hash,
        engine: u64,
    ) -> Result<&'a [u8], &'static str> {
        if file.len() < Self::HEADER_BYTES || file[..8] != Self::MAGIC {
            return Err("has no header (torn, or not ours)");
        }
        if file[8..40] != key[..] {
            return Err("was compiled from other bytes");
        }
        if file[40..48] != engine.to_le_bytes() {
            return Err("was compiled for another engine");
        }
        let artifact = &file[Self::HEADER_BYTES..];
        if file[48..80] != donut_format::hash(artifact)[..] {
            return Err("does not match its checksum (torn or altered)");
        }
        Ok(artifact)
    }
}

/// Writes `artifact` for `key` to `path` through a temporary file of its
/// own in `dir` (never shared with another compile), renamed into place.
fn write_artifact(
    dir: &Path,
    path: &Path,
    key: &donut_format::Hash,
    engine: u64,
    artifact: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".cwasm")
        .tempfile_in(dir)?;
    let file = temp.as_file_mut();
    file.write_all(&CachedArtifact::MAGIC)?;
    file.write_all(key)?;
    file.write_all(&engine.to_le_bytes())?;
    file.write_all(&donut_format::hash(artifact))?;
    file.write_all(artifact)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Marks a cache file used now (the cache drops the least recently used).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().write(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the least recently used `.cwasm` files of `dir` until the rest
/// fit in `bytes_max`.
fn prune_cache_dir(dir: &Path, bytes_max: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let path = entry.path();
            if path.extension()? != "cwasm" || path.file_name()?.to_str()?.starts_with('.') {
                return None;
            }
            let meta = entry.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, bytes, _)| bytes).sum();
    files.sort();
    for (_, bytes, path) in files {
        if total <= bytes_max {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= bytes;
        }
    }
}

fn pooling_config(pooling: Pooling) -> wasmtime::PoolingAllocationConfig {
    let instances = pooling.instances_max;
    let mut config = wasmtime::PoolingAllocationConfig::default();
    config
        .total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT_MAX))
        .total_memories(instances.saturating_mul(MEMORIES_PER_COMPONENT_MAX))
        .total_tables(instances.saturating_mul(TABLES_PER_COMPONENT_MAX))
        .total_stacks(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT_MAX)
        .max_memories_per_component(MEMORIES_PER_COMPONENT_MAX)
        .max_tables_per_component(TABLES_PER_COMPONENT_MAX)
        .max_memory_size(pooling.memory_bytes_max)
        .table_elements(TABLE_ELEMENTS_MAX);
    config
}
