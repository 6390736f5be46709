//! The `donut-host` command line: global options here, each command in
//! `commands/<command>.rs`.

mod commands;
mod exit;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use commands::Env;
use donut_host::backend::Backend;
use donut_host::backend::dynamo::{DynamoBackend, DynamoOptions};
use donut_host::stats::StorageStats;
use donut_host::storage::{DiskCache, SectorCache};
use donut_host::{LocalBackend, Runtime, RuntimeOptions};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "donut-host",
    version,
    about = "DonutDB: SQLite on one storage table, run as WebAssembly components",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    /// Local store directory (the default backend when there is no --table;
    /// no AWS account needed).
    /// Default: $DONUT_LOCAL, else ~/.local/share/donutdb.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        value_name = "PATH"
    )]
    local: Option<PathBuf>,

    /// DynamoDB table to use instead of a local store.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        value_name = "TABLE"
    )]
    table: Option<String>,

    /// AWS region of the table (else the default chain, e.g. AWS_REGION).
    #[arg(help_heading = "Global options", long, global = true)]
    region: Option<String>,

    /// DynamoDB endpoint URL (else AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL).
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        value_name = "URL"
    )]
    endpoint: Option<String>,

    /// Print storage calls, sectors and bytes on stderr afterwards (and, for
    /// DynamoDB, requests by operation and capacity units consumed).
    #[arg(help_heading = "Global options", long, global = true)]
    stats: bool,

    /// DynamoDB: commit with BatchWriteItem (the sectors), then a
    /// TransactWriteItems of the root and its history item, even when one
    /// TransactWriteItems of everything would do (the sectors at half the
    /// write units, one more round trip).
    #[arg(help_heading = "Global options", long, global = true)]
    two_request_commit: bool,

    /// Accept a DynamoDB table with replicas (a global table), promising
    /// that only this Region writes DonutDB's databases: across Regions the
    /// root's compare-and-swap does not hold.
    #[arg(help_heading = "Global options", long, global = true)]
    single_writer_region: bool,

    /// Memory limit of a component instance, in MiB.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        default_value_t = 2048,
        value_name = "MIB"
    )]
    memory_mb: usize,

    /// Stop a component that runs longer than this many seconds.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        value_name = "SECS"
    )]
    time_limit_secs: Option<f64>,

    /// Do not cache compiled components.
    #[arg(help_heading = "Global options", long, global = true)]
    no_cache: bool,

    /// Where compiled components (`components/`) and sectors (`sectors/`)
    /// are cached. Default: $XDG_CACHE_HOME/donutdb, else ~/.cache/donutdb.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        value_name = "DIR"
    )]
    cache_dir: Option<PathBuf>,

    /// Do not keep sectors on disk for later processes (the persistent
    /// sector cache; sectors never change, so it is never stale).
    #[arg(help_heading = "Global options", long, global = true)]
    no_sector_cache: bool,

    /// Bound of the persistent sector cache, in MiB (least recently used
    /// sectors go first).
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        default_value_t = 1024,
        value_name = "MIB"
    )]
    sector_cache_mb: u64,

    /// Append a JSON line per VFS call SQLite makes (time, action, file,
    /// offset, length, result, duration, root version) to FILE: for `sql`,
    /// `shell` and `run`. The component may then write that file's
    /// directory.
    #[arg(
        help_heading = "Global options",
        long,
        global = true,
        value_name = "FILE"
    )]
    change_log: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

/// The `--help` footer: what the exit codes mean (the README says the same).
const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  an SQL or storage error (the statement or the request failed)
  2  a usage error (a bad option, argument or name; nothing was run)
  3  not found: the database, or the version asked for (`donut-host ls`
     lists the databases, `donut-host create DB` makes one)
  killed by SIGPIPE (shell status 141) when the reader of its output goes
  away, as coreutils and sqlite3 are

Global options may come before or after the command. RUST_LOG=debug prints
what the storage service answered in full.";

#[derive(Subcommand)]
enum Command {
    /// Run a query component (wasm32-wasip2 command that imports donut:storage).
    Run(commands::run::Args),
    /// Run SQL against a database and print the result.
    Sql(commands::sql::Args),
    /// An interactive SQL shell (reads statements from stdin; works piped).
    Shell(commands::shell::Args),
    /// Create an empty database.
    Create(commands::create::Args),
    /// List the databases in the store.
    Ls,
    /// Upload a local SQLite file as the next version of a database
    /// (created if missing); readers see all of it or none of it.
    Push(commands::push::Args),
    /// Download a consistent snapshot of a database (or of a kept past
    /// version, DB@VERSION or DB@TIME) into a local file.
    Pull(commands::pull::Args),
    /// List a database's kept versions, newest first.
    Versions(commands::versions::Args),
    /// Write a new version of a database equal to a kept past one.
    Restore(commands::restore::Args),
    /// Create a database sharing another's pages (no copy), then written
    /// independently.
    Fork(commands::fork::Args),
    /// Import a file the Go DonutDB stored (v1 or v2 layout) as a new
    /// database, in one commit, and check it.
    Migrate(commands::migrate::Args),
    /// Remove a database (atomically; its storage is reclaimed by gc).
    Rm(commands::rm::Args),
    /// Retire versions older than the retention (default 7 days) and delete
    /// what only they referenced; removed databases go entirely.
    Gc(commands::gc::Args),
    /// Create the DynamoDB table (hash_key S, range_key N; on-demand billing).
    CreateTable,
    /// What is stored, decoded and checked: root, manifest, sector, verify,
    /// stats.
    #[command(subcommand)]
    Debug(commands::debug::Command),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completion(commands::completion::Args),
    /// Serve tenants' plugins over HTTP (see the README's "Service").
    Serve(commands::serve::Args),
    /// Manage a service's tenants file.
    #[command(subcommand)]
    Tenant(commands::tenant::Command),
}

fn local_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(dir) = &cli.local {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os("DONUT_LOCAL") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("no --local, $DONUT_LOCAL or $HOME")?;
    Ok(PathBuf::from(home).join(".local/share/donutdb"))
}

fn dynamo_options(cli: &Cli, table: &str) -> DynamoOptions {
    DynamoOptions {
        table: table.to_string(),
        region: cli.region.clone(),
        endpoint: cli.endpoint.clone(),
        static_credentials: None,
        max_attempts: 8,
        one_request_commit: !cli.two_request_commit,
        single_writer_region: cli.single_writer_region,
        // A passed check is remembered beside the caches: a new process
        // then pays no DescribeTable.
        table_check_cache: cache_base(cli).map(|base| base.join("tables")),
    }
}

/// Where the CLI caches components, sectors and table checks.
fn cache_base(cli: &Cli) -> Option<PathBuf> {
    cli.cache_dir
        .clone()
        .or_else(donut_host::runtime::default_cache_base)
}

/// The store and runtime the global options ask for.
async fn env(cli: &Cli) -> Result<Env> {
    let (backend, dynamo): (Arc<dyn Backend>, Option<DynamoBackend>) = match &cli.table {
        Some(table) => {
            let dynamo = DynamoBackend::connect(&dynamo_options(cli, table), Vec::new()).await?;
            (Arc::new(dynamo.clone()), Some(dynamo))
        }
        None => {
            let dir = local_dir(cli)?;
            let local = LocalBackend::open(&dir).context("opening the local store")?;
            (Arc::new(local), None)
        }
    };
    let time_limit = cli
        .time_limit_secs
        .filter(|s| s.is_finite() && *s > 0.0)
        // Longer than a `Duration` holds: no limit, as it would never end.
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok());
    let cache_base = cache_base(cli);
    let cache_dir = match (&cache_base, cli.no_cache) {
        (Some(base), false) => Some(base.join("components")),
        _ => None,
    };
    let memory_bytes = match cli.command {
        Command::Serve(_) => donut_host::tenant::SECTOR_CACHE_BYTES,
        _ => SECTOR_CACHE_MEMORY_BYTES,
    };
    let sector_cache =
        SectorCache::with_disk(memory_bytes, sector_disk_cache(cli, cache_base.as_deref()));
    let options = RuntimeOptions {
        cache_dir: cache_dir.clone(),
        // Epoch checks cost ~15% of guest CPU: only when a limit is asked for.
        time_limits: time_limit.is_some(),
        fuel: false,
        pooling: None,
    };
    Ok(Env {
        runtime: Runtime::new(options)?,
        backend,
        dynamo,
        stats: Arc::new(StorageStats::default()),
        memory_limit_bytes: cli.memory_mb.saturating_mul(1 << 20),
        time_limit,
        cache_dir,
        sector_cache,
        change_log: cli.change_log.clone(),
    })
}

/// The memory tier of the CLI's sector cache (`serve`: the service's).
const SECTOR_CACHE_MEMORY_BYTES: usize = 64 << 20;

/// The persistent sector cache the options ask for; `None` (said once, on
/// stderr) if its directory cannot be used: DonutDB works without it.
fn sector_disk_cache(cli: &Cli, base: Option<&std::path::Path>) -> Option<DiskCache> {
    if cli.no_sector_cache {
        return None;
    }
    let dir = base?.join("sectors");
    match DiskCache::open(&dir, cli.sector_cache_mb.saturating_mul(1 << 20)) {
        Ok(cache) => Some(cache),
        Err(e) => {
            eprintln!("warning: running without the persistent sector cache: {e}");
            None
        }
    }
}

async fn main_async(cli: Cli) -> Result<i32> {
    if let Command::CreateTable = cli.command {
        let table = cli
            .table
            .as_deref()
            .ok_or_else(|| commands::usage("create-table needs --table NAME"))?;
        return commands::create_table::run(&dynamo_options(&cli, table)).await;
    }
    if let Command::Tenant(command) = cli.command {
        return commands::tenant::run(command);
    }
    if let Command::Completion(args) = cli.command {
        return commands::completion::run(<Cli as clap::CommandFactory>::command(), args);
    }
    let env = env(&cli).await?;
    // The Go DonutDB's table: reached as the global options say.
    let migrate_source = match &cli.command {
        Command::Migrate(args) => Some(dynamo_options(&cli, args.source_table())),
        _ => None,
    };
    let code = match cli.command {
        Command::Run(args) => commands::run::run(&env, args).await?,
        Command::Sql(args) => commands::sql::run(&env, args).await?,
        Command::Shell(args) => commands::shell::run(&env, args).await?,
        Command::Create(args) => commands::create::run(&env, args).await?,
        Command::Ls => commands::ls::run(&env).await?,
        Command::Push(args) => commands::push::run(&env, args).await?,
        Command::Pull(args) => commands::pull::run(&env, args).await?,
        Command::Rm(args) => commands::rm::run(&env, args).await?,
        Command::Gc(args) => commands::gc::run(&env, args).await?,
        Command::Versions(args) => commands::versions::run(&env, args).await?,
        Command::Restore(args) => commands::restore::run(&env, args).await?,
        Command::Fork(args) => commands::fork::run(&env, args).await?,
        Command::Migrate(args) => {
            let source = migrate_source.context("the source table's options")?;
            commands::migrate::run(&env, args, source).await?
        }
        Command::Serve(args) => commands::serve::run(&env, args).await?,
        Command::Debug(command) => commands::debug::run(&env, command).await?,
        Command::CreateTable | Command::Tenant(_) | Command::Completion(_) => {
            unreachable!("handled before a backend is opened")
        }
    };
    if let Some(e) = env.sector_cache.disk.as_ref().and_then(|d| d.write_error()) {
        eprintln!("warning: the persistent sector cache stopped writing: {e}");
    }
    if cli.stats {
        eprintln!("{}", env.stats.snapshot());
        if let Some(dynamo) = &env.dynamo {
            eprintln!("{}", dynamo.stats());
        }
    }
    Ok(code)
}

fn main() {
    // As coreutils and sqlite3: a reader that goes away (`| head`) ends the
    // process by SIGPIPE, quietly, instead of a write error or a panic.
    // Rust ignores SIGPIPE; `serve` keeps it ignored (a client that hangs
    // up must not end the service).
    restore_default_sigpipe();
    let cli = Cli::parse();
    if let Command::Serve(_) = cli.command {
        ignore_sigpipe();
    } else {
        log_to_stderr();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(exit::FAILURE);
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let failure = exit::classify(&e);
            eprintln!("error: {e:#}");
            if let Some(hint) = failure.hint {
                eprintln!("hint: {hint}");
            }
            std::process::exit(failure.code);
        }
    }
}

/// `RUST_LOG` (e.g. `debug`: the storage service's answers in full) on
/// stderr; nothing when it is not set.
/// Warnings (a local store's failed fold, a cached component refused)
/// reach stderr; `RUST_LOG` changes the level (`debug` shows the SDK's
/// detail of an error). `serve` sets up its own log.
fn log_to_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn restore_default_sigpipe() {
    // SAFETY: called before any thread is started; setting a signal's
    // disposition to its default has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn ignore_sigpipe() {
    // SAFETY: as above; before the runtime's threads start.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
