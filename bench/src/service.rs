//! `donut-bench --service`: what the service adds to a call. The no-op
//! plugin invoked over HTTP on loopback (`donut_host::service`, axum,
//! the test kit's hyper client) at 1, 16 and 64 in flight, against the
//! same plugin invoked in-process through `Tenants::invoke`; the call's
//! own time (instantiation to exit); and the resident memory of 1,000
//! live instances. Client and server share this machine's cores.

use anyhow::{Context, Result, bail};
use donut_host::backend::memory::MemoryBackend;
use donut_host::runtime::Program;
use donut_host::service::config::{ConfigFile, to_hex, token_sha256};
use donut_host::service::{Service, serve};
use donut_host::tenant::Tenants;
use donut_testkit::Api;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Calls in flight at once, per measurement.
const IN_FLIGHT: [usize; 3] = [1, 16, 64];
/// Instances kept alive at once for the memory measurement.
const LIVE_INSTANCES: usize = 1000;
const TOKEN: &str = "bench-token";

/// One measurement: latency percentiles and throughput.
pub struct Rate {
    pub p50_us: f64,
    pub p99_us: f64,
    pub per_sec: f64,
}

fn rate(mut micros: Vec<u64>, elapsed: Duration) -> Rate {
    micros.sort_unstable();
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize] as f64;
    Rate {
        p50_us: at(0.5),
        p99_us: at(0.99),
        per_sec: micros.len() as f64 / elapsed.as_secs_f64(),
    }
}

/// Runs `calls` calls of `call`, `in_flight` at a time; each returns its
/// own latency in µs.
async fn drive<F, Fut>(calls: usize, in_flight: usize, call: F) -> Result<Rate>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<u64>> + Send,
{
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..in_flight {
        let call = call.clone();
        let share = calls / in_flight + usize::from(worker < calls % in_flight);
        workers.spawn(async move {
            let mut micros = Vec::with_capacity(share);
            for _ in 0..share {
                micros.push(call().await?);
            }
            Ok::<_, anyhow::Error>(micros)
        });
    }
    let mut micros = Vec::with_capacity(calls);
    while let Some(done) = workers.join_next().await {
        micros.extend(done.context("a bench worker")??);
    }
    Ok(rate(micros, started.elapsed()))
}

/// The process's resident set now (`VmRSS`), in KiB.
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kib = line["VmRSS:".len()..].trim().trim_end_matches(" kB");
    Ok(kib.parse()?)
}

pub async fn run(smoke: bool, component: &std::path::Path) -> Result<String> {
    let calls = if smoke { 200 } else { 3000 };
    let dir = tempfile_dir()?;
    let config_path = dir.join("tenants.toml");
    let text = format!(
        "[service]\ninstances_max = {}\ninstance_memory_mb_max = 64\nplugins_dir = \"plugins\"\n\n[[tenant]]\nname = \"bench\"\ntoken_sha256 = \"{}\"\nprefixes = [\"bench-\"]\nmemory_mb = 64\ninstances_max = {}\n",
        LIVE_INSTANCES + 64,
        to_hex(&token_sha256(TOKEN)),
        LIVE_INSTANCES + 64,
    );
    std::fs::write(&config_path, text)?;
    let config = ConfigFile::read(&config_path)?.check(&config_path)?;
    let service = Arc::new(Service::new(
        config,
        Arc::new(MemoryBackend::new()),
        donut_host::runtime::default_cache_dir(),
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = Api::new(&format!("http://{}", listener.local_addr()?));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(service.clone(), listener, async {
        let _ = stopped.await;
    }));
    let bytes = std::fs::read(component)?;
    let put = api.put_plugin(TOKEN, "bench", &bytes).await;
    if put.status != 201 {
        bail!("uploading the bench plugin: {}", put.text());
    }
    let tenants = service.tenants().clone();
    let program = tenants.runtime().load_shared("bench", &bytes, "bench")?;
    let mut out = String::from(
        "| in flight | HTTP p50 µs | HTTP p99 µs | HTTP calls/s | in-process p50 µs | in-process p99 µs | in-process calls/s | HTTP / in-process p50 | HTTP / in-process calls/s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for in_flight in IN_FLIGHT {
        let http = {
            let api = api.clone();
            drive(calls, in_flight, move || {
                let api = api.clone();
                async move {
                    let started = Instant::now();
                    let reply = api.invoke(TOKEN, "bench", &["noop", "bench-x"]).await;
                    if reply.status != 200 {
                        bail!("invoke: {}", reply.text());
                    }
                    Ok(started.elapsed().as_micros() as u64)
                }
            })
            .await?
        };
        let direct = {
            let (tenants, program) = (tenants.clone(), program.clone());
            drive(calls, in_flight, move || {
                let (tenants, program) = (tenants.clone(), program.clone());
                async move { noop(&tenants, &program).await }
            })
            .await?
        };
        out.push_str(&format!(
            "| {in_flight} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2} |\n",
            http.p50_us,
            http.p99_us,
            http.per_sec,
            direct.p50_us,
            direct.p99_us,
            direct.per_sec,
            http.p50_us / direct.p50_us,
            http.per_sec / direct.per_sec
        ));
    }
    out.push_str(&format!(
        "\n{calls} calls per row; one tenant, the bench component's `noop`, pooling allocator, unmetered in-memory store.\n"
    ));
    out.push_str(&live_instances(&tenants, &program).await?);
    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// One in-process no-op call; its wall time in µs.
async fn noop(tenants: &Tenants, program: &Program) -> Result<u64> {
    let started = Instant::now();
    let args = vec!["noop".to_string(), "bench-x".to_string()];
    let done = tenants.invoke("bench", program, args, Vec::new()).await?;
    if !done.outcome.success() {
        bail!("noop exited {}", done.outcome.exit_code);
    }
    Ok(started.elapsed().as_micros() as u64)
}

/// Resident memory held by `LIVE_INSTANCES` instances alive at once (each
/// sleeping in the guest), per instance.
async fn live_instances(tenants: &Arc<Tenants>, program: &Arc<Program>) -> Result<String> {
    let before_kib = rss_kib()?;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..LIVE_INSTANCES {
        let (tenants, program) = (tenants.clone(), program.clone());
        calls.spawn(async move {
            let args = ["sleep", "bench-x", "3000"].map(String::from).to_vec();
            tenants.invoke("bench", &program, args, Vec::new()).await
        });
    }
    let live = || tenants.totals().iter().map(|(_, t)| t.live).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while live() < LIVE_INSTANCES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last ones finish instantiating.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (peak_live, during_kib) = (live(), rss_kib()?);
    while let Some(done) = calls.join_next().await {
        done.context("a sleeping call")??;
    }
    let delta_kib = during_kib.saturating_sub(before_kib);
    Ok(format!(
        "\n{peak_live} instances alive at once (each asleep in the guest): RSS {before_kib} KiB before, {during_kib} KiB during: {:.1} MiB per 1,000 live instances ({:.0} KiB each).\n",
        delta_kib as f64 / 1024.0 * 1000.0 / peak_live.max(1) as f64,
        delta_kib as f64 / peak_live.max(1) as f64
    ))
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("donut-bench-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
