//! `donut-bench --libsql`: point SELECT and one-row INSERT through the real
//! `@libsql/client` (Node, `clients/node/bench.mjs`) against the service's
//! Hrana endpoint on loopback, at 1, 16 and 64 concurrent clients; beside
//! each, the storage requests per SQL request the store counted (a warm
//! read must cost what the CLI's does: 1; an optimistic insert: 2).

use anyhow::{Context, Result, bail};
use donut_host::backend::Backend;
use donut_host::service::config::{ConfigFile, to_hex, token_sha256};
use donut_host::service::{Service, serve};
use donut_host::stats::RequestStats;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Concurrent clients, per measurement.
const CLIENTS: [usize; 3] = [1, 16, 64];
const TOKEN: &str = "bench-libsql-token";

/// What the Node driver prints.
struct Load {
    requests: u64,
    p50_us: f64,
    p99_us: f64,
    per_sec: f64,
}

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/node")
}

/// Runs the driver: `mode` (`setup`, `select`, `insert`) with `clients`
/// clients sending `requests` requests in all.
async fn drive(url: &str, mode: &str, clients: usize, requests: usize) -> Result<Load> {
    let out = tokio::process::Command::new("node")
        .arg("bench.mjs")
        .args([
            url,
            TOKEN,
            mode,
            &clients.to_string(),
            &requests.to_string(),
        ])
        .current_dir(node_dir())
        .output()
        .await
        .context("running node (is it installed? `just clients` installs the client)")?;
    if !out.status.success() {
        bail!(
            "the Node driver failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "the Node driver printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let number = |key: &str| printed[key].as_f64().unwrap_or_default();
    Ok(Load {
        requests: number("requests") as u64,
        p50_us: number("p50_us"),
        p99_us: number("p99_us"),
        per_sec: number("per_sec"),
    })
}

fn total(stats: &RequestStats) -> u64 {
    stats.requests.values().sum()
}

/// Storage requests by kind between two snapshots, per SQL request.
fn per_request(before: &RequestStats, after: &RequestStats, requests: u64) -> String {
    let kinds: Vec<String> = after
        .requests
        .iter()
        .filter_map(|(kind, &n)| {
            let delta = n - before.requests.get(kind).copied().unwrap_or(0);
            (delta > 0).then(|| format!("{kind} {:.2}", delta as f64 / requests as f64))
        })
        .collect();
    kinds.join(", ")
}

pub async fn run(
    smoke: bool,
    backend: Arc<dyn Backend>,
    meter: impl Fn() -> RequestStats,
    store_label: &str,
) -> Result<String> {
    if !node_dir().join("node_modules/@libsql/client").exists() {
        bail!("@libsql/client is not installed: run `just clients`");
    }
    let requests = if smoke { 64 } else { 2000 };
    let dir = std::env::temp_dir().join(format!("donut-bench-libsql-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("tenants.toml");
    let text = format!(
        "[service]\ninstances_max = 256\nstreams_per_tenant_max = 128\n\n[[tenant]]\nname = \"bench\"\ntoken_sha256 = \"{}\"\nprefixes = [\"bench-\"]\nmemory_mb = 64\ninstances_max = 256\n",
        to_hex(&token_sha256(TOKEN)),
    );
    std::fs::write(&config_path, text)?;
    let config = ConfigFile::read(&config_path)?.check(&config_path)?;
    let service = Arc::new(Service::new(
        config,
        backend,
        donut_host::runtime::default_cache_dir(),
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/db/bench-kv/", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(service.clone(), listener, async {
        let _ = stopped.await;
    }));
    drive(&url, "setup", 1, 1).await?;
    // Warm the host's sector cache with every row once.
    drive(&url, "select", 16, 1000).await?;
    let mut out = String::from(
        "| statement | clients | p50 µs | p99 µs | requests/s | storage requests per request |\n|---|---|---|---|---|---|\n",
    );
    for (mode, name) in [("select", "point SELECT"), ("insert", "one-row INSERT")] {
        for clients in CLIENTS {
            eprintln!("{name}, {clients} clients...");
            let before = meter();
            let load = drive(&url, mode, clients, requests).await?;
            let after = meter();
            let storage = total(&after) - total(&before);
            out.push_str(&format!(
                "| {name} | {clients} | {:.0} | {:.0} | {:.0} | {:.2} ({}) |\n",
                load.p50_us,
                load.p99_us,
                load.per_sec,
                storage as f64 / load.requests as f64,
                per_request(&before, &after, load.requests),
            ));
        }
    }
    out.push_str(&format!(
        "\n{requests} requests per row through `@libsql/client` 0.18 (Hrana 2 over HTTP, JSON; each `execute` a stream of its own) on {store_label}; client and server share this machine's cores.\n"
    ));
    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
