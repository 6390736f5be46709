//! `donut-host serve`: tenants' plugins over HTTP. A [`Service`] is a
//! [`Tenants`] registry, the tenants' bearer tokens, their plugins on
//! disk and the service's metrics; [`serve`] answers HTTP on a listener
//! until a shutdown signal, then lets calls in flight finish within the
//! grace period.
//!
//! Several processes may serve one table: they share nothing but the
//! table (each has its own plugins directory, budgets and metrics), and
//! the root's compare-and-swap keeps their commits apart.

mod api;
pub mod config;
pub mod gc;
pub mod hrana;
pub mod metrics;
pub mod plugins;

use crate::Backend;
use crate::runtime::{Pooling, Runtime, RuntimeError, RuntimeOptions};
use crate::tenant::{AddTenantError, Tenants};
use config::Config;
use metrics::Metrics;
use plugins::Plugins;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Starting a service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Tenant(#[from] AddTenantError),
    #[error("plugins directory {path}")]
    Plugins {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Load(#[from] crate::runtime::LoadError),
    #[error("reloading: {0}")]
    Reload(String),
}

/// Who may call: each tenant's token and the operator's, reloadable.
#[derive(Default)]
struct Tokens {
    /// SHA-256 of each tenant's token, and the tenant's name.
    tenants: Vec<([u8; 32], String)>,
    /// SHA-256 of the operator's token (`[service]
    /// operator_token_sha256`).
    operator: Option<[u8; 32]>,
}

/// The compile budget `[service]` gives each tenant.
fn compile_budget(service: &config::ServiceSection) -> plugins::CompileBudget {
    plugins::CompileBudget {
        time_max: Duration::from_secs_f64(service.compile_secs_max),
        period: Duration::from_secs_f64(service.compile_period_secs),
    }
}

/// Everything a request handler needs.
pub struct Service {
    tenants: Arc<Tenants>,
    plugins: Plugins,
    tokens: std::sync::RwLock<Tokens>,
    /// Whether the runtime meters fuel (a reload cannot turn it on).
    fuel: bool,
    metrics: Metrics,
    /// libSQL streams (Hrana over HTTP).
    streams: hrana::Streams,
    config: config::ServiceSection,
    next_request_id: AtomicU64,
}

impl Service {
    /// A service over `backend` with `config`'s tenants; compiled
    /// components are cached in `cache_dir`.
    pub fn new(
        config: Config,
        backend: Arc<dyn Backend>,
        cache_dir: Option<std::path::PathBuf>,
    ) -> Result<Service, ServiceError> {
        let service = config.service;
        let fuel = config
            .tenants
            .iter()
            .any(|(t, _)| t.limits.fuel_max.is_some());
        let mut runtime = Runtime::new(RuntimeOptions {
            cache_dir,
            time_limits: true,
            fuel,
            pooling: Some(Pooling {
                instances_max: service.instances_max,
                memory_bytes_max: service.instance_memory_mb_max << 20,
            }),
        })?;
        runtime.bound_caches(
            service.compiled_memory_mb_max << 20,
            service.compiled_disk_mb_max << 20,
        );
        let session = runtime.load_session(
            crate::session::DONUT_SESSION_WASM,
            "donut-session (built in)",
        )?;
        let streams = hrana::Streams::new(
            session,
            Duration::from_secs_f64(service.stream_idle_secs),
            service.streams_per_tenant_max,
        );
        let tenants = Tenants::new(runtime, backend);
        let mut tokens = Tokens {
            tenants: Vec::new(),
            operator: operator_token(&service),
        };
        for (tenant, token_sha256) in config.tenants {
            tokens.tenants.push((token_sha256, tenant.name.clone()));
            tenants.add(tenant)?;
        }
        let plugins =
            Plugins::open(&service.plugins_dir, compile_budget(&service)).map_err(|source| {
                ServiceError::Plugins {
                    path: service.plugins_dir.clone(),
                    source,
                }
            })?;
        Ok(Service {
            tenants: Arc::new(tenants),
            plugins,
            tokens: std::sync::RwLock::new(tokens),
            fuel,
            metrics: Metrics::default(),
            streams,
            config: service,
            next_request_id: AtomicU64::new(1),
        })
    }

    /// Shares `cache` (and its disk tier, if any) among the tenants instead
    /// of a memory cache of their own. Only before the service is shared.
    pub fn with_sector_cache(mut self, cache: Arc<crate::storage::SectorCache>) -> Service {
        match Arc::get_mut(&mut self.tenants) {
            Some(tenants) => tenants.set_sector_cache(cache),
            None => debug_assert!(false, "the service is already shared"),
        }
        self
    }

    pub fn tenants(&self) -> &Arc<Tenants> {
        &self.tenants
    }

    fn tokens(&self) -> std::sync::RwLockReadGuard<'_, Tokens> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant whose token is `token`. Every tenant's hash is compared,
    /// each in constant time, so the answer's timing says nothing about
    /// which tenant (if any) came close.
    fn tenant_of(&self, token: &str) -> Option<String> {
        use subtle::ConstantTimeEq;
        let presented = config::token_sha256(token);
        let mut found = None;
        for (hash, tenant) in &self.tokens().tenants {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(tenant.clone());
            }
        }
        found
    }

    /// Whether `token` is the operator's.
    fn is_operator(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let presented = config::token_sha256(token);
        self.tokens()
            .operator
            .is_some_and(|hash| bool::from(hash.ct_eq(&presented)))
    }

    /// Takes `config`'s tenants and tokens (and the operator's token) from
    /// the next request on: tokens not in it stop working, tenants' grants
    /// and limits change. The rest of `[service]` needs a restart. All or
    /// nothing: a configuration refused changes nothing.
    pub fn reload(&self, config: Config) -> Result<usize, ServiceError> {
        let wants_fuel = config
            .tenants
            .iter()
            .any(|(t, _)| t.limits.fuel_max.is_some());
        if wants_fuel && !self.fuel {
            return Err(ServiceError::Reload(
                "a tenant has fuel_max now, and this server was started without fuel metering: restart it".into(),
            ));
        }
        let mut tokens = Tokens {
            tenants: Vec::new(),
            operator: operator_token(&config.service),
        };
        let mut tenants = Vec::new();
        for (tenant, token_sha256) in config.tenants {
            tokens.tenants.push((token_sha256, tenant.name.clone()));
            tenants.push(tenant);
        }
        let count = tenants.len();
        // Tokens are swapped while the tenants are: no request sees a
        // token of a tenant that is gone.
        let mut current = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        self.tenants.replace_all(tenants)?;
        *current = tokens;
        Ok(count)
    }
}

fn operator_token(service: &config::ServiceSection) -> Option<[u8; 32]> {
    service
        .operator_token_sha256
        .as_deref()
        .and_then(config::parse_sha256)
}

/// Answers HTTP on `listener` until `shutdown` resolves; then stops
/// accepting, and returns when the calls in flight are done or the grace
/// period (`[service] shutdown_grace_secs`) is over, whichever is first.
///
/// At most `connections_max` connections are served at once (the rest
/// wait in the listen backlog); a connection whose next request head does
/// not arrive within `header_timeout_secs` is closed (the idle timeout);
/// a body must arrive within `body_timeout_secs`.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let grace = Duration::from_secs_f64(service.config.shutdown_grace_secs);
    let router = api::router(service.clone());
    let expiring = service.clone();
    let expiry = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let closed = expiring.streams.expire();
            if closed > 0 {
                tracing::info!(closed, "idle libSQL streams closed");
            }
        }
    });
    let _stop_expiry = AbortOnDrop(expiry);
    let _stop_gc = (service.config.gc_every_secs > 0.0)
        .then(|| AbortOnDrop(tokio::spawn(gc::run_in_background(service.clone()))));
    let connections_max = service.config.connections_max;
    let permits = Arc::new(tokio::sync::Semaphore::new(connections_max));
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let header_timeout = Duration::from_secs_f64(service.config.header_timeout_secs);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: say so, and
                    // let connections close before trying again.
                    tracing::error!(error = %e, "accepting a connection failed; retrying in 100 ms");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stopping = stopping_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper_util::service::TowerToHyperService::new(router);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = async { let _ = stopping.wait_for(|stopping| *stopping).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served
                && !e.is_incomplete_message()
            {
                tracing::debug!(%peer, "connection closed: {e}");
            }
        });
    }
    tracing::info!("shutting down: no new connections; letting calls in flight finish");
    drop(listener);
    let _ = stopping_tx.send(true);
    let all = u32::try_from(connections_max).unwrap_or(u32::MAX);
    let drained = permits.acquire_many(all);
    if tokio::time::timeout(grace, drained).await.is_err() {
        let live: usize = service.tenants.totals().iter().map(|(_, t)| t.live).sum();
        tracing::warn!(
            live,
            ?grace,
            "grace period over: stopping with calls in flight"
        );
    }
    Ok(())
}

/// How long the accept loop waits after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves at the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
