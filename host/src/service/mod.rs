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
}

/// Everything a request handler needs.
pub struct Service {
    tenants: Arc<Tenants>,
    plugins: Plugins,
    /// SHA-256 of each tenant's token, and the tenant's name.
    tokens: Vec<([u8; 32], String)>,
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
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir,
            time_limits: true,
            fuel,
            pooling: Some(Pooling {
                instances_max: service.instances_max,
                memory_bytes_max: service.instance_memory_mb_max << 20,
            }),
        })?;
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
        let mut tokens = Vec::new();
        for (tenant, token_sha256) in config.tenants {
            tokens.push((token_sha256, tenant.name.clone()));
            tenants.add(tenant)?;
        }
        let plugins =
            Plugins::open(&service.plugins_dir).map_err(|source| ServiceError::Plugins {
                path: service.plugins_dir.clone(),
                source,
            })?;
        Ok(Service {
            tenants: Arc::new(tenants),
            plugins,
            tokens,
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

    /// The tenant whose token is `token`. Every tenant's hash is compared,
    /// each in constant time, so the answer's timing says nothing about
    /// which tenant (if any) came close.
    fn tenant_of(&self, token: &str) -> Option<&str> {
        use subtle::ConstantTimeEq;
        let presented = config::token_sha256(token);
        let mut found = None;
        for (hash, tenant) in &self.tokens {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(tenant.as_str());
            }
        }
        found
    }
}

/// Answers HTTP on `listener` until `shutdown` resolves; then stops
/// accepting, and returns when the calls in flight are done or the grace
/// period (`[service] shutdown_grace_secs`) is over, whichever is first.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let grace = Duration::from_secs_f64(service.config.shutdown_grace_secs);
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
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
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; letting calls in flight finish");
        let _ = stopping_tx.send(true);
    });
    let deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    let _stop_expiry = AbortOnDrop(expiry);
    let _stop_gc = (service.config.gc_every_secs > 0.0)
        .then(|| AbortOnDrop(tokio::spawn(gc::run_in_background(service.clone()))));
    tokio::select! {
        served = server => served.map_err(ServiceError::Http)?,
        () = deadline => {
            let live: usize = service.tenants.totals().iter().map(|(_, t)| t.live).sum();
            tracing::warn!(live, ?grace, "grace period over: stopping with calls in flight");
        }
    }
    Ok(())
}

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
