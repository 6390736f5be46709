//! `donut-bench --fresh-processes`: what a new `donut-host` process pays on
//! dynoxide, request by request, for the workloads of a short-lived
//! process (a CLI call, a Lambda invocation): one-row inserts, a point
//! select and `count(*)` on `kv(k INTEGER PRIMARY KEY, v TEXT)` with
//! 100-byte values. Each process runs with `--stats`, which lists every
//! request the SDK sent by operation (`DescribeTable` included).
//!
//! Three ways to start: *cold* (nothing on disk: the table is checked and
//! every sector read), *table check remembered* (`--no-sector-cache`, a
//! cache directory where an earlier process's table check is kept), and
//! *disk cache warm* (the persistent sector cache filled by earlier
//! processes).

use anyhow::{Context, Result, bail};
use donut_testkit::{Dynoxide, fill, host_bin};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Rows in the populated table (the issue's ~11,000).
const ROWS: u64 = 11_000;

/// A workload: its name, database and SQL.
struct Workload {
    name: &'static str,
    db: &'static str,
    sql: &'static str,
}

const WORKLOADS: [Workload; 5] = [
    Workload {
        name: "one-row INSERT, autocommit, into the empty table",
        db: "empty.db",
        sql: "insert into kv(v) values (hex(randomblob(50)))",
    },
    Workload {
        name: "one-row INSERT, autocommit, into the ~11,000 rows",
        db: "kv.db",
        sql: "insert into kv(v) values (hex(randomblob(50)))",
    },
    Workload {
        name: "point SELECT",
        db: "kv.db",
        sql: "select v from kv where k = 5000",
    },
    Workload {
        name: "count(*)",
        db: "kv.db",
        sql: "select count(*) from kv",
    },
    Workload {
        name: "the same point SELECT twice in one process (both)",
        db: "kv.db",
        sql: "select v from kv where k = 5000; select v from kv where k = 5000",
    },
];

/// How a process starts.
#[derive(Clone, Copy)]
enum Start {
    Cold,
    TableCheckRemembered,
    DiskCacheWarm,
}

impl Start {
    fn label(self) -> &'static str {
        match self {
            Start::Cold => "cold (nothing on disk)",
            Start::TableCheckRemembered => "table check remembered, no disk cache",
            Start::DiskCacheWarm => "disk cache warm",
        }
    }
}

struct Host<'a> {
    server: &'a Dynoxide,
    dir: &'a Path,
}

impl Host<'_> {
    /// Runs `donut-host --stats ARGS` with a cache directory `cache`;
    /// returns the SDK's requests by operation.
    fn run(&self, cache: &Path, extra: &[&str], args: &[&str]) -> Result<BTreeMap<String, u64>> {
        let out = Command::new(host_bin())
            .args([
                "--endpoint",
                &self.server.endpoint,
                "--table",
                "fresh",
                "--stats",
            ])
            .arg("--cache-dir")
            .arg(cache)
            .args(extra)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "donutdb")
            .env("AWS_SECRET_ACCESS_KEY", "donutdb")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .context("running donut-host")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("donut-host {args:?} failed: {stderr}");
        }
        Ok(requests(&stderr))
    }

    fn setup(&self) -> Result<()> {
        let cache = self.dir.join("setup-cache");
        let off = ["--no-sector-cache"];
        self.run(&cache, &off, &["create-table"])?;
        for db in ["empty.db", "kv.db"] {
            self.run(&cache, &off, &["create", db])?;
            self.run(
                &cache,
                &off,
                &["sql", db, "create table kv(k integer primary key, v text)"],
            )?;
        }
        let sql = fill("kv(v)", ROWS, "hex(randomblob(50))");
        self.run(&cache, &off, &["sql", "kv.db", &sql])?;
        Ok(())
    }
}

/// The per-operation lines under "SDK attempts:" in `--stats` output.
fn requests(stderr: &str) -> BTreeMap<String, u64> {
    stderr
        .lines()
        .skip_while(|l| !l.contains("SDK attempts:"))
        .skip(1)
        .map_while(|l| {
            let mut words = l.split_whitespace();
            let op = words.next()?.to_string();
            let n = words.next()?.parse().ok()?;
            Some((op, n))
        })
        .collect()
}

/// Mean requests per process by operation, over `runs` new processes.
fn measure(
    host: &Host,
    start: Start,
    (index, w): (usize, &Workload),
    runs: u32,
) -> Result<BTreeMap<String, f64>> {
    let shared = host.dir.join("shared-cache");
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    for run in 0..runs {
        let (cache, extra): (_, &[&str]) = match start {
            Start::Cold => (
                host.dir.join(format!("cold-{index}-{run}")),
                &["--no-sector-cache"],
            ),
            Start::TableCheckRemembered => (shared.clone(), &["--no-sector-cache"]),
            Start::DiskCacheWarm => (shared.clone(), &[]),
        };
        if run == 0 && !matches!(start, Start::Cold) {
            // A process before the measured ones leaves what they find.
            host.run(&cache, &[], &["sql", w.db, w.sql])?;
        }
        for (op, n) in host.run(&cache, extra, &["sql", w.db, w.sql])? {
            *total.entry(op).or_default() += n as f64;
        }
    }
    Ok(total
        .into_iter()
        .map(|(op, n)| (op, n / runs as f64))
        .collect())
}

fn cell(by_op: &BTreeMap<String, f64>) -> String {
    let sum: f64 = by_op.values().sum();
    let ops: Vec<String> = by_op.iter().map(|(op, n)| format!("{op} {n:.2}")).collect();
    format!("**{sum:.2}** ({})", ops.join(", "))
}

/// Runs every workload in new processes, `runs` of each per way to start;
/// returns a Markdown table.
pub fn run(runs: u32) -> Result<String> {
    let server = Dynoxide::try_start().map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let host = Host {
        server: &server,
        dir: dir.path(),
    };
    eprintln!("setting up kv.db ({ROWS} rows) on dynoxide...");
    host.setup()?;
    let starts = [
        Start::Cold,
        Start::TableCheckRemembered,
        Start::DiskCacheWarm,
    ];
    let mut out = String::from("| workload (new process) |");
    for start in starts {
        out.push_str(&format!(" {} |", start.label()));
    }
    out.push_str("\n|---|---|---|---|\n");
    for (index, w) in WORKLOADS.iter().enumerate() {
        out.push_str(&format!("| {} |", w.name));
        for start in starts {
            let by_op = measure(&host, start, (index, w), runs)?;
            out.push_str(&format!(" {} |", cell(&by_op)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\nRequests per process as the SDK sent them (mean of {runs} processes each), on dynoxide.\n"
    ));
    Ok(out)
}
