//! `donut-host serve --config FILE [--listen ADDR]`: runs tenants' plugins
//! over HTTP until SIGTERM or SIGINT (see `donut_host::service`).

use super::Env;
use anyhow::{Context, Result};
use donut_host::service::config::ConfigFile;
use donut_host::service::{Service, serve, shutdown_signal};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The tenants file (TOML; `donut-host tenant add` writes it).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address to listen on (port 0: any free port, printed on start).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    init_tracing();
    let config = ConfigFile::read(&args.config)?.check(&args.config)?;
    let tenant_count = config.tenants.len();
    let service = Service::new(config, env.backend.clone(), env.cache_dir.clone())
        .context("starting the service")?
        .with_sector_cache(env.sector_cache.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%address, tenants = tenant_count, store = %env.backend.describe(), "serving");
    // One line on stdout for whoever started us (tests, scripts): where
    // to connect, port 0 resolved.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{address}")?;
    stdout.flush()?;
    serve(Arc::new(service), listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(0)
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `info`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
