//! `donut-bench`: DonutDB's workloads through the real guest component,
//! reporting what DynamoDB costs: sequential round trips, requests by kind,
//! capacity units as billed, bytes and latency.
//!
//! ```text
//! donut-bench [--backend memory|dynoxide] [--latency-ms 5] [--scale full|smoke]
//!             [--two-request-commit] [--json FILE] [--engine-only] [--service]
//!             [--libsql] [--fresh-processes] [--writes-only] [--gc] [--extension]
//! ```
//!
//! `memory`: the in-memory store behind an injected per-call latency (an
//! in-region DynamoDB round trip), billed by `Metered` as DynamoDB would.
//! `dynoxide`: a real DynamoDB-compatible server on loopback through the
//! DynamoDB backend, billed by the server's consumed-capacity answers.
//! `--service`: only the service's overhead (`service.rs`).
//! `--libsql`: only `@libsql/client` against the service on the chosen
//! backend (`libsql.rs`; `just clients` installs the client).
//! `--fresh-processes`: requests of new `donut-host` processes on dynoxide,
//! with and without the persistent sector cache (`fresh.rs`).
//! `--writes-only`: only W1 and W2 (no setup): what a change to the commit
//! path costs, in a minute.
//! `--gc`: what garbage collection reclaims and costs (`gc.rs`).

mod extension;
mod fresh;
mod gc;
mod libsql;
mod service;

use anyhow::{Context, Result, bail};
use donut_host::backend::Backend;
use donut_host::backend::dynamo::{DynamoBackend, DynamoOptions, create_table};
use donut_host::backend::memory::MemoryBackend;
use donut_host::backend::metered::{Latency, Metered};
use donut_host::runtime::{Call, Pooling, Program, Runtime, RuntimeOptions, Stdio};
use donut_host::stats::RequestStats;
use donut_host::stats::{StatsSnapshot, StorageStats};
use donut_host::storage::{DiskCache, SectorCache};
use donut_host::{Grant, StorageCtx};
use donut_testkit::{Dynoxide, dynamo_options, fill};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    backend: String,
    latency_ms: u64,
    smoke: bool,
    json: Option<PathBuf>,
    two_request_commit: bool,
    /// Only the engine-overhead comparison.
    engine_only: bool,
    /// Only the service benchmark.
    service: bool,
    /// Only the libSQL client benchmark.
    libsql: bool,
    /// Only the new-process benchmark.
    fresh_processes: bool,
    /// Only W1 and W2.
    writes_only: bool,
    /// Only the garbage collection benchmark.
    gc: bool,
    /// Only the engine through the loadable extension.
    extension: bool,
}

/// `donut-bench --help`.
const USAGE: &str =
    "usage: donut-bench [--backend memory|dynoxide] [--latency-ms 5] [--scale full|smoke]
                   [--two-request-commit] [--json FILE] [--engine-only] [--service]
                   [--libsql] [--fresh-processes] [--writes-only] [--gc] [--extension]

DonutDB's workloads (W1-W6) through the real guest component: round trips,
requests by kind, capacity units as billed, bytes and latency. BENCHMARKS.md
says what each option measures and the commands its numbers came from.";

fn parse_args() -> Result<Args> {
    let mut args = Args {
        backend: "memory".into(),
        latency_ms: 5,
        smoke: false,
        json: None,
        two_request_commit: false,
        engine_only: false,
        service: false,
        libsql: false,
        fresh_processes: false,
        writes_only: false,
        gc: false,
        extension: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backend" => args.backend = it.next().context("--backend needs a value")?,
            "--latency-ms" => {
                args.latency_ms = it.next().context("--latency-ms needs a value")?.parse()?
            }
            "--scale" => args.smoke = it.next().context("--scale needs a value")? == "smoke",
            "--json" => args.json = Some(it.next().context("--json needs a path")?.into()),
            "--two-request-commit" => args.two_request_commit = true,
            "--engine-only" => args.engine_only = true,
            "--service" => args.service = true,
            "--libsql" => args.libsql = true,
            "--fresh-processes" => args.fresh_processes = true,
            "--writes-only" => args.writes_only = true,
            "--gc" => args.gc = true,
            "--extension" => args.extension = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

enum Store {
    Memory(Arc<Metered<Latency<MemoryBackend>>>),
    /// Unmetered: for timing the engine, with nothing added per call.
    Plain(MemoryBackend),
    Dynamo {
        backend: DynamoBackend,
        /// Stops the server when the store is dropped.
        _server: Dynoxide,
    },
}

impl Store {
    fn backend(&self) -> Arc<dyn Backend> {
        match self {
            Store::Memory(m) => m.clone(),
            Store::Plain(m) => Arc::new(m.clone()),
            Store::Dynamo { backend: d, .. } => Arc::new(d.clone()),
        }
    }

    fn meter(&self) -> RequestStats {
        match self {
            Store::Memory(m) => m.meter(),
            Store::Plain(_) => RequestStats::default(),
            Store::Dynamo { backend: d, .. } => d.stats(),
        }
    }
}

async fn dynoxide(one_request: bool) -> Result<Store> {
    let server = Dynoxide::try_start().map_err(anyhow::Error::msg)?;
    let options = DynamoOptions {
        max_attempts: 8,
        one_request_commit: one_request,
        ..dynamo_options(&server.endpoint, "donut-bench")
    };
    create_table(&options).await?;
    Ok(Store::Dynamo {
        backend: DynamoBackend::connect(&options, Vec::new()).await?,
        _server: server,
    })
}

/// Which sector cache a W3 cold call starts with.
#[derive(Clone, Copy)]
enum Cache {
    /// None: a new process.
    None,
    /// The host-wide memory cache, warm.
    Shared,
    /// A new memory tier over the warm disk cache: a new process.
    Disk,
}

struct Bench {
    runtime: Runtime,
    program: Program,
    store: Store,
    /// The host-wide sector cache every call shares (but cold ones).
    cache: Arc<SectorCache>,
}

/// One call's results.
struct Run {
    latencies_us: Vec<u64>,
    info: Vec<(String, String)>,
    stats: StatsSnapshot,
    wall: Duration,
}

impl Bench {
    async fn call(&self, args: &[String]) -> Result<Run> {
        self.call_with(args, true).await
    }

    async fn call_stdin(&self, args: &[String], stdin: &str) -> Result<Run> {
        self.call_full(args, true, stdin).await
    }

    /// `shared_cache`: false runs as a new process would, with nothing cached.
    async fn call_with(&self, args: &[String], shared_cache: bool) -> Result<Run> {
        self.call_full(args, shared_cache, "").await
    }

    async fn call_full(&self, args: &[String], shared_cache: bool, stdin: &str) -> Result<Run> {
        let cache = shared_cache.then(|| self.cache.clone());
        self.call_cached(args, cache, stdin).await
    }

    async fn call_cached(
        &self,
        args: &[String],
        cache: Option<Arc<SectorCache>>,
        stdin: &str,
    ) -> Result<Run> {
        let stats = Arc::new(StorageStats::default());
        let mut storage =
            StorageCtx::new(self.store.backend(), Grant::all()).with_stats(stats.clone());
        if let Some(cache) = cache {
            storage = storage.with_cache(cache);
        }
        let argv = std::iter::once("bench-guest".to_string())
            .chain(args.iter().cloned())
            .collect();
        let mut call = Call::new(argv, storage);
        call.stdio = Stdio::Capture {
            stdin: stdin.as_bytes().to_vec(),
        };
        let start = Instant::now();
        let outcome = self.runtime.run(&self.program, call).await?;
        let wall = start.elapsed();
        if !outcome.success() {
            bail!(
                "bench-guest {args:?} failed: {}",
                String::from_utf8_lossy(&outcome.stderr)
            );
        }
        let mut run = Run {
            latencies_us: Vec::new(),
            info: Vec::new(),
            stats: stats.snapshot(),
            wall,
        };
        for line in String::from_utf8_lossy(&outcome.stdout).lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("lat"), Some(us), _) => run.latencies_us.push(us.parse()?),
                (Some("info"), Some(k), Some(v)) => run.info.push((k.into(), v.into())),
                _ => {}
            }
        }
        Ok(run)
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at] as f64 / 1000.0
}

struct Row {
    name: String,
    ops: u64,
    stats: StatsSnapshot,
    meter: RequestStats,
    latencies_us: Vec<u64>,
    wall: Duration,
    note: String,
}

impl Row {
    fn per_op(&self, x: f64) -> f64 {
        x / self.ops.max(1) as f64
    }

    fn json(&self) -> serde_json::Value {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        json!({
            "workload": self.name,
            "ops": self.ops,
            "round_trips_per_op": self.per_op(self.stats.round_trips() as f64),
            "storage_calls": {
                "read_root": self.stats.read_root,
                "commit_root": self.stats.commit_root,
                "get_sectors": self.stats.get_sectors_calls,
                "put_sectors": self.stats.put_sectors_calls,
            },
            "requests_per_op": self.meter.requests.iter()
                .map(|(k, v)| (k.to_string(), json!(self.per_op(*v as f64))))
                .collect::<serde_json::Map<_, _>>(),
            "rcu_per_op": self.per_op(self.meter.read_capacity_units),
            "wcu_per_op": self.per_op(self.meter.write_capacity_units),
            "bytes_read_per_op": self.per_op(self.meter.bytes_read as f64),
            "bytes_written_per_op": self.per_op(self.meter.bytes_written as f64),
            "p50_ms": percentile(&sorted, 0.5),
            "p99_ms": percentile(&sorted, 0.99),
            "wall_s": self.wall.as_secs_f64(),
            "note": self.note,
        })
    }

    fn markdown(&self) -> String {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let requests = self
            .meter
            .requests
            .iter()
            .map(|(k, v)| format!("{k} {:.2}", self.per_op(*v as f64)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "| {} | {} | {:.2} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {} |",
            self.name,
            self.ops,
            self.per_op(self.stats.round_trips() as f64),
            requests,
            self.per_op(self.meter.read_capacity_units),
            self.per_op(self.meter.write_capacity_units),
            self.per_op(self.meter.bytes_read as f64),
            self.per_op(self.meter.bytes_written as f64),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            self.note
        )
    }
}

impl Bench {
    /// Runs `args` once as a measured workload of `ops` operations.
    async fn measure(&self, name: &str, ops: u64, args: Vec<String>) -> Result<Row> {
        self.measure_with(name, ops, args, true).await
    }

    async fn measure_with(
        &self,
        name: &str,
        ops: u64,
        args: Vec<String>,
        shared_cache: bool,
    ) -> Result<Row> {
        let before = self.store.meter();
        let run = self.call_with(&args, shared_cache).await?;
        Ok(Row {
            name: name.into(),
            ops,
            stats: run.stats,
            meter: self.store.meter().since(&before),
            latencies_us: run.latencies_us,
            wall: run.wall,
            note: run
                .info
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    if args.service {
        println!("{}", service::run(args.smoke, &bench_component()).await?);
        return Ok(());
    }
    if args.engine_only {
        println!("{}", engine_overhead(args.smoke).await?);
        return Ok(());
    }
    if args.extension {
        println!("{}", extension::run(&engine_script(args.smoke))?);
        return Ok(());
    }
    if args.gc {
        println!("{}", gc::run(args.smoke).await?);
        return Ok(());
    }
    if args.fresh_processes {
        println!("{}", fresh::run(if args.smoke { 2 } else { 5 })?);
        return Ok(());
    }
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let program = runtime.load_file(&bench_component())?;
    let latency = Duration::from_millis(args.latency_ms);
    let store = match args.backend.as_str() {
        "memory" => Store::Memory(Arc::new(Metered::new(Latency::new(
            MemoryBackend::new(),
            latency,
            !args.two_request_commit,
        )))),
        "dynoxide" => dynoxide(!args.two_request_commit).await?,
        other => bail!("unknown backend {other:?}: memory or dynoxide"),
    };
    if args.libsql {
        let label = match args.backend.as_str() {
            "memory" => format!(
                "the in-memory store with {} ms per storage call",
                args.latency_ms
            ),
            other => other.to_string(),
        };
        let report = libsql::run(args.smoke, store.backend(), || store.meter(), &label).await?;
        println!("{report}");
        return Ok(());
    }
    let bench = Bench {
        runtime,
        program,
        store,
        cache: SectorCache::new(512 << 20),
    };
    let s = args.smoke;
    // (rows, bytes) of the point-select database (W3) and the count(*)
    // table (W5); rows of the range-scan table (W4).
    let (point_rows, point_bytes) = if s { (5_000, 3_900) } else { (262_144, 3_900) };
    let (count_rows, count_bytes) = if s { (2_500, 3_900) } else { (25_600, 3_900) };
    let range_rows: u64 = if s { 20_000 } else { 200_000 };
    let scan: u64 = if s { 2_000 } else { 10_000 };
    let n = |full: u64, smoke: u64| if s { smoke } else { full };

    let mut rows = Vec::new();
    rows.push(
        bench
            .measure(
                "W1 one-row insert (autocommit)",
                n(200, 20),
                args_of(&["insert", "w1.db"], &[n(200, 20)]),
            )
            .await?,
    );
    rows.push(
        bench
            .measure(
                "W1 one-row insert, exclusive writer",
                n(200, 20),
                args_of(&["insert", "w1x.db"], &[n(200, 20)])
                    .into_iter()
                    .chain(["exclusive".to_string()])
                    .collect(),
            )
            .await?,
    );
    rows.push(
        bench
            .measure(
                "W2 1,000-row transaction",
                n(20, 3),
                args_of(&["txn", "w2.db"], &[n(20, 3), 1000]),
            )
            .await?,
    );
    if args.writes_only {
        print_table(&args, &rows, None);
        return Ok(());
    }
    eprintln!(
        "setting up (backend {}, scale {})...",
        args.backend,
        if s { "smoke" } else { "full" }
    );
    let setup = Instant::now();
    bench
        .call(&args_of(&["fill", "point.db"], &[point_rows, point_bytes]))
        .await?;
    bench
        .call(&args_of(&["fill", "count.db"], &[count_rows, count_bytes]))
        .await?;
    bench
        .call(&args_of(&["fill", "range.db"], &[range_rows, 100]))
        .await?;
    bench
        .call(&args_of(&["accounts", "bank.db"], &[100]))
        .await?;
    eprintln!("setup took {:.1} s", setup.elapsed().as_secs_f64());

    // Warm: a hot set of 100 keys, looked up again and again by one
    // instance, after a first pass over them.
    let hot = 100;
    bench
        .call(&args_of(&["point", "point.db"], &[hot * 4, hot]))
        .await?;
    rows.push(
        bench
            .measure(
                "W3 point select, warm",
                n(500, 50),
                args_of(&["point", "point.db"], &[n(500, 50), hot]),
            )
            .await?,
    );
    // Cold: a new instance per select with nothing cached (a new process);
    // then a new instance per select with the host-wide cache warm; then a
    // new process whose persistent sector cache (on disk) is warm: a new
    // memory tier each time over one directory, filled by a first pass.
    let disk_dir = tempfile::tempdir()?;
    let new_process = || -> Result<Arc<SectorCache>> {
        let disk = DiskCache::open(disk_dir.path(), 1 << 30)?;
        Ok(SectorCache::with_disk(64 << 20, Some(disk)))
    };
    for i in 0..n(30, 5) {
        let args = args_of(&["point", "point.db"], &[1, hot - i % 7]);
        bench.call_cached(&args, Some(new_process()?), "").await?;
    }
    for (name, cache) in [
        ("W3 point select, cold (new process)", Cache::None),
        (
            "W3 point select, new instance, host cache warm",
            Cache::Shared,
        ),
        ("W3 point select, new process, disk cache warm", Cache::Disk),
    ] {
        let ops = n(30, 5);
        let before = bench.store.meter();
        let mut row = Row {
            name: name.into(),
            ops,
            stats: StatsSnapshot::default(),
            meter: RequestStats::default(),
            latencies_us: Vec::new(),
            wall: Duration::ZERO,
            note: "includes open".into(),
        };
        for i in 0..ops {
            let cache = match cache {
                Cache::None => None,
                Cache::Shared => Some(bench.cache.clone()),
                Cache::Disk => Some(new_process()?),
            };
            let args = args_of(&["point", "point.db"], &[1, hot - i % 7]);
            let run = bench.call_cached(&args, cache, "").await?;
            row.stats = row.stats.plus(&run.stats);
            row.latencies_us.push(run.wall.as_micros() as u64);
            row.wall += run.wall;
        }
        row.meter = bench.store.meter().since(&before);
        rows.push(row);
    }
    // Scans read data the host has not cached (the data outgrew it, or a
    // new process): the guest's read-ahead is what they measure.
    rows.push(
        bench
            .measure_with(
                &format!("W4 range scan of {scan} rows"),
                n(20, 5),
                args_of(&["range", "range.db"], &[n(20, 5), scan, range_rows]),
                false,
            )
            .await?,
    );
    rows.push(
        bench
            .measure_with(
                &format!(
                    "W5 count(*) over {} MB",
                    count_rows * count_bytes / 1_000_000
                ),
                n(3, 2),
                args_of(&["count", "count.db"], &[n(3, 2)]),
                false,
            )
            .await?,
    );

    // W6: four clients at once, each retrying its transfers until they commit;
    // optimistic writers, then lease writers.
    for writer in ["optimistic", "lease"] {
        rows.push(w6(&bench, n(50, 10), writer).await?);
    }

    let engine = engine_overhead(s).await?;
    print_table(&args, &rows, Some(&engine));
    if let Some(path) = args.json {
        let doc = json!({
            "backend": args.backend,
            "latency_ms": args.latency_ms,
            "scale": if s { "smoke" } else { "full" },
            "one_request_commit": !args.two_request_commit,
            "workloads": rows.iter().map(Row::json).collect::<Vec<_>>(),
            "engine_overhead": engine.json(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn args_of(words: &[&str], numbers: &[u64]) -> Vec<String> {
    let words = words.iter().map(|w| w.to_string());
    words.chain(numbers.iter().map(u64::to_string)).collect()
}

/// W6 with `writer` ("optimistic" or "lease") writers.
async fn w6(bench: &Bench, per_client: u64, writer: &str) -> Result<Row> {
    let before = bench.store.meter();
    let start = Instant::now();
    let runs = futures_join(bench, per_client, writer).await?;
    let wall = start.elapsed();
    let mut row = Row {
        name: format!("W6 4 clients, transfers, {writer} writers"),
        ops: per_client * 4,
        stats: StatsSnapshot::default(),
        meter: bench.store.meter().since(&before),
        latencies_us: Vec::new(),
        wall,
        note: String::new(),
    };
    let mut conflicts = 0u64;
    let mut sum = String::new();
    for run in runs {
        row.stats = row.stats.plus(&run.stats);
        row.latencies_us.extend(run.latencies_us);
        for (k, v) in run.info {
            match k.as_str() {
                "conflicts" => conflicts += v.parse::<u64>()?,
                "balance_sum" => sum = v,
                _ => {}
            }
        }
    }
    if sum != "100000" {
        bail!("W6 broke the bank: balances sum to {sum}, not 100000");
    }
    row.note = format!(
        "{:.1} commits/s, {conflicts} conflicts, sum {sum}",
        row.ops as f64 / wall.as_secs_f64()
    );
    Ok(row)
}

async fn futures_join(bench: &Bench, per_client: u64, writer: &str) -> Result<Vec<Run>> {
    let calls: Vec<Vec<String>> = (1..=4u64)
        .map(|seed| {
            let mut args = args_of(&["transfer", "bank.db"], &[per_client, 100, seed]);
            args.push(writer.to_string());
            args
        })
        .collect();
    let (a, b, c, d) = tokio::join!(
        bench.call(&calls[0]),
        bench.call(&calls[1]),
        bench.call(&calls[2]),
        bench.call(&calls[3])
    );
    Ok(vec![a?, b?, c?, d?])
}

/// The engine-overhead comparison: one SQL script on native rusqlite
/// (in-memory database) and in the guest on a zero-latency in-memory store,
/// plus what a call itself costs.
struct Engine {
    native_ms: f64,
    guest_ms: f64,
    /// The same script in the guest on SQLite's own in-memory VFS: SQLite
    /// compiled to wasm, without DonutDB's storage.
    guest_memdb_ms: f64,
    /// Both again in a runtime without time limits (no epoch checks).
    unlimited_ms: f64,
    unlimited_memdb_ms: f64,
    /// Both again with fuel metered besides the epoch checks.
    fuel_ms: f64,
    fuel_memdb_ms: f64,
    /// A storage call that does no storage work, and a root read on the
    /// in-memory store, per call.
    boundary_ns: u64,
    root_read_ns: u64,
    rows: u64,
    call_us_p50: f64,
    pooled_call_us_p50: f64,
    pooled_call_us_p99: f64,
    call_us_p99: f64,
}

impl Engine {
    fn json(&self) -> serde_json::Value {
        json!({
            "native_ms": self.native_ms,
            "guest_ms": self.guest_ms,
            "ratio": self.guest_ms / self.native_ms,
            "guest_memdb_ms": self.guest_memdb_ms,
            "wasm_ratio": self.guest_memdb_ms / self.native_ms,
            "unlimited_ms": self.unlimited_ms,
            "unlimited_ratio": self.unlimited_ms / self.native_ms,
            "unlimited_memdb_ms": self.unlimited_memdb_ms,
            "fuel_ms": self.fuel_ms,
            "fuel_memdb_ms": self.fuel_memdb_ms,
            "storage_call_boundary_ns": self.boundary_ns,
            "root_read_in_memory_ns": self.root_read_ns,
            "rows": self.rows,
            "call_us_p50": self.call_us_p50,
            "pooled_call_us_p50": self.pooled_call_us_p50,
            "pooled_call_us_p99": self.pooled_call_us_p99,
            "call_us_p99": self.call_us_p99,
        })
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "engine overhead (same SQL script, {} rows stepped):",
            self.rows
        )?;
        writeln!(
            f,
            "  native rusqlite, SQLite's in-memory VFS (memdb): {:.1} ms",
            self.native_ms
        )?;
        writeln!(
            f,
            "  guest in wasmtime, SQLite's memdb VFS:           {:.1} ms ({:.2}x): SQLite in wasm",
            self.guest_memdb_ms,
            self.guest_memdb_ms / self.native_ms
        )?;
        writeln!(
            f,
            "  guest in wasmtime, DonutDB on the in-memory store: {:.1} ms ({:.2}x)",
            self.guest_ms,
            self.guest_ms / self.native_ms
        )?;
        writeln!(
            f,
            "  the same two without time-limit checks:          {:.1} ms ({:.2}x), {:.1} ms ({:.2}x)",
            self.unlimited_memdb_ms,
            self.unlimited_memdb_ms / self.native_ms,
            self.unlimited_ms,
            self.unlimited_ms / self.native_ms
        )?;
        writeln!(
            f,
            "  the same two with fuel metered (CPU limits):      {:.1} ms ({:.2}x), {:.1} ms ({:.2}x)",
            self.fuel_memdb_ms,
            self.fuel_memdb_ms / self.native_ms,
            self.fuel_ms,
            self.fuel_ms / self.native_ms
        )?;
        writeln!(
            f,
            "  a storage call into the host (no storage work): {:.2} us; a root read on the in-memory store: {:.2} us",
            self.boundary_ns as f64 / 1000.0,
            self.root_read_ns as f64 / 1000.0
        )?;
        writeln!(
            f,
            "  a call (new store + instantiate + run + exit): p50 {:.0} us, p99 {:.0} us",
            self.call_us_p50, self.call_us_p99
        )?;
        write!(
            f,
            "  the same on the pooling allocator:              p50 {:.0} us, p99 {:.0} us",
            self.pooled_call_us_p50, self.pooled_call_us_p99
        )
    }
}

fn engine_script(smoke: bool) -> String {
    let rows = if smoke { 2_000 } else { 20_000 };
    let lookups = if smoke { 200 } else { 2_000 };
    let mut script = format!(
        "create table a(id integer primary key, k integer, v text);
         create index a_k on a(k);
         create table b(id integer primary key, a_id integer, w real);
         {}
         {}\n",
        fill(
            "a(k, v)",
            rows,
            &format!("(i * 7919) % {rows}, 'value ' || i")
        ),
        fill(
            "b(a_id, w)",
            rows,
            &format!("1 + (i * 31) % {rows}, i * 0.5")
        ),
    );
    for k in 0..lookups {
        script.push_str(&format!("select count(*) from a where k = {};\n", k * 7));
    }
    script.push_str("select count(*) from a where v like '%99%';\n");
    script.push_str("select count(*), sum(w) from a join b on b.a_id = a.id where a.k < 5000;\n");
    script
}

fn run_native(script: &str) -> Result<(f64, u64)> {
    // SQLite's in-memory VFS (memdb), so the native side locks, journals and
    // checks its page cache per transaction like a file database does. A
    // new database each run (memdb keeps one per name while it is open).
    static RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let conn = rusqlite::Connection::open_with_flags(
        format!("file:/engine{run}.db?vfs=memdb"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )?;
    run_script(&conn, script)
}

/// Runs `script` on `conn`, stepping every row; (milliseconds, rows).
fn run_script(conn: &rusqlite::Connection, script: &str) -> Result<(f64, u64)> {
    use rusqlite::fallible_iterator::FallibleIterator as _;
    let start = Instant::now();
    let mut rows = 0u64;
    let mut batch = rusqlite::Batch::new(conn, script);
    while let Some(mut stmt) = batch.next()? {
        let mut cursor = stmt.raw_query();
        while cursor.next()?.is_some() {
            rows += 1;
        }
    }
    Ok((start.elapsed().as_secs_f64() * 1000.0, rows))
}

fn bench_component() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("wasm32-wasip2/guest/bench-guest.wasm")
}

async fn engine_overhead(smoke: bool) -> Result<Engine> {
    let script = engine_script(smoke);
    // Best of three each, so a busy moment of the machine does not decide.
    let mut native_ms = f64::MAX;
    let mut native_rows = 0;
    for _ in 0..3 {
        let (ms, rows) = run_native(&script)?;
        native_ms = native_ms.min(ms);
        native_rows = rows;
    }
    let (guest_ms, guest_memdb_ms, zero) = guest_engine(&script, native_rows, true, false).await?;
    // The same without epoch checks compiled in (a runtime that never
    // limits time, like the CLI without --time-limit-secs).
    let (unlimited_ms, unlimited_memdb_ms, _) =
        guest_engine(&script, native_rows, false, false).await?;
    // The same with fuel metered as well (a service with CPU limits).
    let (fuel_ms, fuel_memdb_ms, _) = guest_engine(&script, native_rows, true, true).await?;
    let call_count = if smoke { 20 } else { 200 };
    let calls = noop_calls(&zero, call_count).await?;
    // The same on the pooling allocator (a service's runtime).
    let pooled = plain_bench(RuntimeOptions {
        pooling: Some(Pooling {
            instances_max: 1000,
            memory_bytes_max: 256 << 20,
        }),
        ..RuntimeOptions::default()
    })?;
    let pooled_calls = noop_calls(&pooled, call_count).await?;
    // Per storage request: the boundary alone, and a root read on the
    // in-memory store (best of three runs of 10,000 each).
    zero.call(&args_of(&["insert", "probe.db"], &[1])).await?;
    let (mut boundary_ns, mut root_read_ns) = (u64::MAX, u64::MAX);
    for _ in 0..3 {
        let run = zero
            .call(&args_of(&["calls", "probe.db"], &[10_000]))
            .await?;
        let info = |key: &str| -> Result<u64> {
            run.info
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.parse::<u64>())
                .transpose()?
                .context("the probe printed no result")
        };
        boundary_ns = boundary_ns.min(info("boundary_ns")?);
        root_read_ns = root_read_ns.min(info("root_read_ns")?);
    }
    Ok(Engine {
        native_ms,
        guest_ms,
        guest_memdb_ms,
        unlimited_ms,
        unlimited_memdb_ms,
        fuel_ms,
        fuel_memdb_ms,
        boundary_ns,
        root_read_ns,
        rows: native_rows,
        call_us_p50: percentile(&calls, 0.5) * 1000.0,
        call_us_p99: percentile(&calls, 0.99) * 1000.0,
        pooled_call_us_p50: percentile(&pooled_calls, 0.5) * 1000.0,
        pooled_call_us_p99: percentile(&pooled_calls, 0.99) * 1000.0,
    })
}

/// The bench component on a runtime of its own over an unmetered
/// in-memory store: nothing added per call.
fn plain_bench(options: RuntimeOptions) -> Result<Bench> {
    let runtime = Runtime::new(options)?;
    let program = runtime.load_file(&bench_component())?;
    Ok(Bench {
        runtime,
        program,
        store: Store::Plain(MemoryBackend::new()),
        cache: SectorCache::new(256 << 20),
    })
}

/// Wall time of `n` calls of the no-op workload, sorted, in µs.
async fn noop_calls(bench: &Bench, n: usize) -> Result<Vec<u64>> {
    let mut calls = Vec::with_capacity(n);
    for _ in 0..n {
        let run = bench.call(&args_of(&["noop", "x.db"], &[])).await?;
        calls.push(run.wall.as_micros() as u64);
    }
    calls.sort_unstable();
    Ok(calls)
}

/// Best of three runs of `script` in the guest, through DonutDB and on
/// SQLite's memdb VFS, in a runtime with or without time limits; and the
/// bench it used.
async fn guest_engine(
    script: &str,
    native_rows: u64,
    time_limits: bool,
    fuel: bool,
) -> Result<(f64, f64, Bench)> {
    // A program belongs to the engine that compiled it: load it again.
    let zero = plain_bench(RuntimeOptions {
        time_limits,
        fuel,
        ..RuntimeOptions::default()
    })?;
    let mut guest_ms = f64::MAX;
    let mut guest_memdb_ms = f64::MAX;
    for i in 0..3 {
        for (workload, best) in [
            ("engine", &mut guest_ms),
            ("engine-memdb", &mut guest_memdb_ms),
        ] {
            let run = zero
                .call_stdin(&args_of(&[workload, &format!("engine{i}.db")], &[]), script)
                .await?;
            let us = run.latencies_us.first().copied().unwrap_or(0);
            *best = best.min(us as f64 / 1000.0);
            let rows: u64 = run
                .info
                .iter()
                .find(|(k, _)| k == "rows")
                .map(|(_, v)| v.parse())
                .transpose()?
                .unwrap_or(0);
            if rows != native_rows {
                bail!("the guest ({workload}) stepped {rows} rows, native {native_rows}");
            }
        }
    }
    Ok((guest_ms, guest_memdb_ms, zero))
}

/// The results table (and the engine comparison, if it ran) on stdout.
fn print_table(args: &Args, rows: &[Row], engine: Option<&Engine>) {
    let commit = if args.two_request_commit {
        "commits: BatchWriteItem, then PutItem"
    } else {
        "commits: one TransactWriteItems when they fit"
    };
    let title = match args.backend.as_str() {
        "memory" => format!(
            "in-memory store + {} ms per storage call, billed as DynamoDB; {commit}",
            args.latency_ms
        ),
        _ => {
            format!("dynoxide on loopback through aws-sdk-dynamodb, billed by the server; {commit}")
        }
    };
    println!("\n{title}\n");
    println!(
        "| workload | ops | sequential round trips/op | requests/op | RCU/op | WCU/op | bytes read/op | bytes written/op | p50 ms | p99 ms | notes |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|");
    for row in rows {
        println!("{}", row.markdown());
    }
    if let Some(engine) = engine {
        println!("\n{engine}");
    }
}
