//! The `donut-host` command line.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use donut_format::{DbName, PAGE_SIZE_DEFAULT, Root, Tombstone, validate_page_size};
use donut_host::backend::Backend;
use donut_host::backend::dynamo::{DynamoBackend, DynamoOptions, create_table};
use donut_host::stats::StorageStats;
use donut_host::storage::{create_database, remove_database};
use donut_host::transfer::{pull, push};
use donut_host::{Call, Grant, LocalBackend, Runtime, RuntimeOptions, StorageCtx};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "donut-host",
    version,
    about = "DonutDB: SQLite on one storage table, run as WebAssembly components"
)]
struct Cli {
    /// Local store directory (the default backend when there is no --table;
    /// no AWS account needed).
    /// Default: $DONUT_LOCAL, else ~/.local/share/donutdb.
    #[arg(long, global = true, value_name = "PATH")]
    local: Option<PathBuf>,

    /// DynamoDB table to use instead of a local store.
    #[arg(long, global = true, value_name = "TABLE")]
    table: Option<String>,

    /// AWS region of the table (else the default chain, e.g. AWS_REGION).
    #[arg(long, global = true)]
    region: Option<String>,

    /// DynamoDB endpoint URL (else AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL).
    #[arg(long, global = true, value_name = "URL")]
    endpoint: Option<String>,

    /// Print storage calls, sectors and bytes on stderr afterwards (and, for
    /// DynamoDB, requests by operation and capacity units consumed).
    #[arg(long, global = true)]
    stats: bool,

    /// Commit with BatchWriteItem then PutItem even when one
    /// TransactWriteItems would do (half the write units, one more round trip).
    #[arg(long, global = true)]
    two_request_commit: bool,

    /// Accept a DynamoDB table with replicas (a global table), promising
    /// that only this Region writes DonutDB's databases: across Regions the
    /// root's compare-and-swap does not hold.
    #[arg(long, global = true)]
    single_writer_region: bool,

    /// Memory limit of a component instance, in MiB.
    #[arg(long, global = true, default_value_t = 2048, value_name = "MIB")]
    memory_mb: usize,

    /// Stop a component that runs longer than this many seconds.
    #[arg(long, global = true, value_name = "SECS")]
    time_limit_secs: Option<f64>,

    /// Do not cache compiled components.
    #[arg(long, global = true)]
    no_cache: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a query component (wasm32-wasip2 command that imports donut:storage).
    Run {
        /// The component file.
        component: PathBuf,
        /// Databases the component may use (repeatable); default: all.
        #[arg(long = "db", value_name = "NAME")]
        dbs: Vec<String>,
        /// Arguments passed to the component (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run SQL against a database and print the result.
    Sql {
        db: String,
        sql: String,
        /// A statement parameter, in order (repeatable). `int:`, `real:`,
        /// `text:`, `null` force a type; otherwise numbers bind as numbers.
        #[arg(long = "param", value_name = "VALUE", allow_hyphen_values = true)]
        params: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// An interactive SQL shell (reads statements from stdin; works piped).
    Shell {
        db: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Create an empty database.
    Create {
        db: String,
        /// Page size: a power of two from 512 to 65536.
        #[arg(long, default_value_t = PAGE_SIZE_DEFAULT as u64)]
        page_size: u64,
    },
    /// List the databases in the store.
    Ls,
    /// Upload a local SQLite file as the next version of a database
    /// (created if missing); readers see all of it or none of it.
    Push { file: PathBuf, db: String },
    /// Download a consistent snapshot of a database into a local file.
    Pull { db: String, file: PathBuf },
    /// Remove a database (atomically; its storage is reclaimed by gc).
    Rm { db: String },
    /// Create the DynamoDB table (hash_key S, range_key N; on-demand billing).
    CreateTable,
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

fn db_name(name: &str) -> Result<DbName> {
    DbName::new(name).with_context(|| format!("illegal database name {name:?}"))
}

struct Env {
    runtime: Runtime,
    backend: Arc<dyn Backend>,
    dynamo: Option<DynamoBackend>,
    stats: Arc<StorageStats>,
    memory_limit_bytes: usize,
    time_limit: Option<std::time::Duration>,
}

impl Env {
    fn storage(&self, grant: Grant) -> StorageCtx {
        StorageCtx::new(self.backend.clone(), grant).with_stats(self.stats.clone())
    }

    async fn run(
        &self,
        program: &donut_host::Program,
        args: Vec<String>,
        grant: Grant,
    ) -> Result<i32> {
        let mut call = Call::new(args, self.storage(grant));
        call.memory_limit_bytes = self.memory_limit_bytes;
        call.time_limit = self.time_limit;
        let outcome = self.runtime.run(program, call).await?;
        Ok(outcome.exit_code)
    }
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
    }
}

/// Prints `push`/`pull` progress on a terminal, in whole percents.
fn progress_printer(verb: &'static str, name: String) -> impl FnMut(u64, u64) {
    let tty = std::io::stderr().is_terminal();
    let mut last = u64::MAX;
    move |done, total| {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        if tty && percent != last {
            last = percent;
            eprint!(
                "\r{verb} {name}: {:.1} / {:.1} MiB ({percent}%)",
                done as f64 / 1048576.0,
                total as f64 / 1048576.0
            );
            if done >= total {
                eprintln!();
            }
        }
    }
}

async fn main_async(cli: Cli) -> Result<i32> {
    if let Command::CreateTable = cli.command {
        let table = cli
            .table
            .as_deref()
            .context("create-table needs --table NAME")?;
        create_table(&dynamo_options(&cli, table)).await?;
        eprintln!("created table {table:?} (hash_key S, range_key N, on-demand)");
        return Ok(0);
    }
    let (backend, dynamo): (Arc<dyn Backend>, Option<DynamoBackend>) = match &cli.table {
        Some(table) => {
            let dynamo = DynamoBackend::connect(&dynamo_options(&cli, table), Vec::new()).await?;
            (Arc::new(dynamo.clone()), Some(dynamo))
        }
        None => {
            let dir = local_dir(&cli)?;
            let local = LocalBackend::open(&dir).context("opening the local store")?;
            (Arc::new(local), None)
        }
    };
    let time_limit = cli
        .time_limit_secs
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(std::time::Duration::from_secs_f64);
    let options = RuntimeOptions {
        cache_dir: if cli.no_cache {
            None
        } else {
            donut_host::runtime::default_cache_dir()
        },
        // Epoch checks cost ~15% of guest CPU: only when a limit is asked for.
        time_limits: time_limit.is_some(),
    };
    let env = Env {
        runtime: Runtime::new(options)?,
        backend,
        dynamo,
        stats: Arc::new(StorageStats::default()),
        memory_limit_bytes: cli.memory_mb.saturating_mul(1 << 20),
        time_limit,
    };
    let code = match cli.command {
        Command::Run {
            component,
            dbs,
            args,
        } => {
            let program = env.runtime.load_file(&component)?;
            let grant = if dbs.is_empty() {
                Grant::all()
            } else {
                let names = dbs.iter().map(|n| db_name(n)).collect::<Result<Vec<_>>>()?;
                Grant::only(names, true)
            };
            let name = component
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let argv = std::iter::once(name).chain(args).collect();
            env.run(&program, argv, grant).await?
        }
        Command::Sql {
            db,
            sql,
            params,
            format,
        } => {
            let name = db_name(&db)?;
            let program = env.runtime.stock_sql()?;
            let mut argv = vec![
                "donut-sql".to_string(),
                "exec".into(),
                db,
                sql,
                "--format".into(),
                format.as_str().into(),
            ];
            for p in params {
                argv.push("--param".into());
                argv.push(p);
            }
            env.run(&program, argv, Grant::only([name], false)).await?
        }
        Command::Shell { db, format } => {
            let name = db_name(&db)?;
            let program = env.runtime.stock_sql()?;
            let mut argv = vec![
                "donut-sql".to_string(),
                "shell".into(),
                db,
                "--format".into(),
                format.as_str().into(),
            ];
            if std::io::stdin().is_terminal() {
                argv.push("--interactive".into());
            }
            env.run(&program, argv, Grant::only([name], false)).await?
        }
        Command::Create { db, page_size } => {
            let name = db_name(&db)?;
            let page_size = validate_page_size(page_size)?;
            create_database(&*env.backend, &name, page_size).await?;
            env.stats
                .commit_root
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            eprintln!(
                "created {name:?} (page size {page_size}) in the {}",
                env.backend.describe()
            );
            0
        }
        Command::Ls => {
            let roots = env.backend.list_roots().await?;
            let roots: Vec<_> = roots
                .into_iter()
                .filter(|(_, meta)| !Tombstone::is_tombstone(&meta.body))
                .collect();
            println!(
                "{:<32} {:>8} {:>10} {:>12} {:>9}  last commit (UTC)",
                "name", "version", "pages", "bytes", "page size"
            );
            for (name, meta) in roots {
                match Root::decode(&meta.body) {
                    Ok(root) => println!(
                        "{:<32} {:>8} {:>10} {:>12} {:>9}  {}",
                        name.as_str(),
                        root.version,
                        root.page_count,
                        root.file_size(),
                        root.page_size,
                        format_utc(root.commit_ms)
                    ),
                    Err(e) => println!("{:<32} corrupt root: {e}", name.as_str()),
                }
            }
            0
        }
        Command::Push { file, db } => {
            let name = db_name(&db)?;
            let progress = progress_printer("push", db.clone());
            let root = push(env.backend.clone(), &name, &file, progress)
                .await
                .with_context(|| format!("pushing {} to {db:?}", file.display()))?;
            eprintln!(
                "pushed {} as {name:?} version {} ({} pages of {} bytes)",
                file.display(),
                root.version,
                root.page_count,
                root.page_size
            );
            0
        }
        Command::Pull { db, file } => {
            let name = db_name(&db)?;
            let progress = progress_printer("pull", db.clone());
            let root = pull(env.backend.clone(), &name, &file, progress)
                .await
                .with_context(|| format!("pulling {db:?} to {}", file.display()))?;
            eprintln!(
                "pulled {name:?} version {} into {} ({} bytes)",
                root.version,
                file.display(),
                root.file_size()
            );
            0
        }
        Command::Rm { db } => {
            let name = db_name(&db)?;
            remove_database(&*env.backend, &name).await?;
            eprintln!("removed {name:?}");
            0
        }
        Command::CreateTable => unreachable!("handled before a backend is opened"),
    };
    if cli.stats {
        eprintln!("{}", env.stats.snapshot());
        if let Some(dynamo) = &env.dynamo {
            eprintln!("{}", dynamo.stats());
        }
    }
    Ok(code)
}

/// `YYYY-MM-DD HH:MM:SS` for milliseconds since the Unix epoch.
fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(2);
        }
    };
    match runtime.block_on(main_async(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_utc(1_709_251_199_000), "2024-02-29 23:59:59");
    }
}
