//! `donut-host serve --config FILE [--listen ADDR]`: runs tenants' plugins
//! over HTTP until SIGTERM or SIGINT (see `donut_host::service`); SIGHUP
//! reads the tenants file again (tokens, grants, limits). Plain HTTP
//! carries bearer tokens in clear text: it listens on loopback only,
//! unless `--plain-http-beyond-loopback` says a TLS-terminating proxy
//! stands in front.

use super::Env;
use anyhow::{Context, Result};
use donut_host::service::config::ConfigFile;
use donut_host::service::{Service, serve, shutdown_signal};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  donut-host tenant add acme --config tenants.toml
  donut-host serve --config tenants.toml --listen 127.0.0.1:8080
  donut-host --table T serve --config tenants.toml   # on DynamoDB")]
pub struct Args {
    /// The tenants file (TOML; `donut-host tenant add` writes it).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Address to listen on (port 0: any free port, printed on start).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    listen: SocketAddr,
    /// Listen on an address other than loopback with plain HTTP: bearer
    /// tokens then cross the network in clear text unless a
    /// TLS-terminating proxy stands in front (put one there).
    #[arg(long)]
    plain_http_beyond_loopback: bool,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    init_tracing();
    if !args.listen.ip().is_loopback() && !args.plain_http_beyond_loopback {
        return Err(super::usage(format!(
            "refusing to serve plain HTTP on {}: bearer tokens would cross the network in clear text. \
             Listen on loopback behind a TLS-terminating proxy, or pass --plain-http-beyond-loopback \
             if one stands in front",
            args.listen
        )));
    }
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
    let service = Arc::new(service);
    let reloads = tokio::spawn(reload_on_hangup(service.clone(), args.config.clone()));
    let served = serve(service, listener, shutdown_signal()).await;
    reloads.abort();
    served?;
    tracing::info!("stopped");
    Ok(0)
}

/// Reads the tenants file again at every SIGHUP; a file refused changes
/// nothing (and says why in the log).
async fn reload_on_hangup(service: Arc<Service>, config: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::error!("cannot listen for SIGHUP (no reloads): {e}");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let read = ConfigFile::read(&config)
            .and_then(|file| file.check(&config))
            .map_err(anyhow::Error::from)
            .and_then(|checked| Ok(service.reload(checked)?));
        match read {
            Ok(tenants) => {
                tracing::info!(tenants, config = %config.display(), "reloaded the tenants file")
            }
            Err(e) => tracing::error!(
                "reloading {} refused, nothing changed: {e:#}",
                config.display()
            ),
        }
    }
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
