//! `donut-host migrate --from-table T --from-file NAME [--to DB]`: imports
//! a file the Go DonutDB stored (its v1 or v2 layout) as a new database,
//! in one atomic commit that creates it (never replacing a database,
//! even one created during the import). The source is only read. The
//! assembled file is checked (`integrity_check`, rows per table) in a
//! scratch store before anything is written: a damaged one is refused.
//! The copy and the scratch store live in a private temporary directory
//! (mode 0700), removed on every exit, Ctrl-C, SIGTERM and SIGHUP included.

use super::{Env, db_name, progress_printer};
use anyhow::{Context, Result, bail, ensure};
use donut_host::backend::dynamo::{DynamoOptions, client};
use donut_host::runtime::{Stdio, StockSql};
use donut_host::storage::{Stored, read_stored};
use donut_host::transfer::push_new;
use donut_host::{Backend, Call, Grant, LocalBackend, StorageCtx};
use donut_store::migrate::read_go_file;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

#[derive(clap::Args)]
#[command(after_help = "Example:
  donut-host --table donut migrate --from-table go-donutdb --from-file /app.db --to app.db")]
pub struct Args {
    /// The Go DonutDB's DynamoDB table (the same account, Region and
    /// endpoint as the global options say).
    #[arg(long, value_name = "TABLE")]
    from_table: String,
    /// The file's name as the Go DonutDB knows it (its `file-meta-v1`
    /// attribute).
    #[arg(long, value_name = "NAME")]
    from_file: String,
    /// The new database's name (default: the file's, without the leading
    /// `/` the Go VFS gives every name).
    #[arg(long, value_name = "DB")]
    to: Option<String>,
}

impl Args {
    pub fn source_table(&self) -> &str {
        &self.from_table
    }
}

pub async fn run(env: &Env, args: Args, source: DynamoOptions) -> Result<i32> {
    // The Go VFS names every file by its full path ("/app.db"): the
    // default database name is that without the leading slashes.
    let to = args
        .to
        .clone()
        .unwrap_or_else(|| args.from_file.trim_start_matches('/').to_string());
    let name = db_name(&to).with_context(|| match args.to {
        None if to.contains('/') => format!(
            "the Go file {:?} is in a directory: name the new database with --to NAME",
            args.from_file
        ),
        _ => format!("the new database's name {to:?}"),
    })?;
    if let Stored::Live(..) = read_stored(&*env.backend, &name).await? {
        bail!(
            "database {to:?} already exists: migrate creates a new one (choose another with --to)"
        );
    }
    // Handlers first: a signal from here on runs the branches below,
    // which drop `scratch` and so remove it.
    let mut stop = Stop::new()?;
    // Private whatever the umask: the copy and the check's store hold the
    // database's rows in the clear.
    let scratch = tempfile::Builder::new()
        .prefix("donut-migrate-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("creating a private temporary directory for the copy")?;
    let copy = scratch.path().join("copy.sqlite");
    tokio::select! {
        checked = read_and_check(env, &args, &to, &copy, source) => checked?,
        signal = stop.recv() => bail!("migrate stopped by {signal}: nothing was written"),
    }
    let stored = tokio::select! {
        stored = push_new(env.backend.clone(), &name, &copy, progress_printer("push", to.clone())) => stored,
        signal = stop.recv() => bail!(
            "migrate stopped by {signal} while storing {to:?}: it exists only if `ls` lists it (its one commit is atomic)"
        ),
    };
    let root = stored.with_context(|| format!("storing {:?} as {to:?}", args.from_file))?;
    eprintln!(
        "stored as {to:?} version {} ({} pages of {} bytes), one commit",
        root.version, root.page_count, root.page_size
    );
    drop(scratch);
    Ok(0)
}

/// Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal), caught
/// (from `new` on, for the rest of the process) instead of ending it with
/// the scratch copy left behind.
struct Stop {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> Result<Stop> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Stop {
            int: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("catching SIGHUP")?,
        })
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Reads the Go file into `copy` and checks it in a scratch store beside
/// it: refused unless `integrity_check` says ok.
async fn read_and_check(
    env: &Env,
    args: &Args,
    to: &str,
    copy: &Path,
    source: DynamoOptions,
) -> Result<()> {
    let (client, _) = client(&source, Vec::new())
        .await
        .with_context(|| format!("connecting to table {:?}", args.from_table))?;
    let file = private_file(copy)?;
    let mut out = std::io::BufWriter::new(&file);
    let mut bar = progress_printer("read", args.from_file.clone());
    // A v1 file's size is known only at its end (total 0 until then).
    let progress = move |done: u64, total: u64| match total {
        0 => bar(done, done + 1),
        total => bar(done, total),
    };
    let read = read_go_file(
        &client,
        &args.from_table,
        &args.from_file,
        &mut out,
        progress,
    )
    .await?;
    out.flush().context("writing the copy")?;
    drop(out);
    ensure!(
        read.bytes > 0,
        "{:?} in table {:?} is empty: nothing to migrate",
        args.from_file,
        args.from_table
    );
    eprintln!(
        "read {:?} from table {:?}: Go DonutDB v{} layout, {} sectors of {} bytes, {} bytes",
        args.from_file,
        args.from_table,
        read.meta_version,
        read.sectors,
        read.sector_size,
        read.bytes
    );
    if read.wal_mode {
        to_rollback_journal(&file)?;
        eprintln!(
            "{:?} was in WAL mode with no write-ahead log left (every commit is in the file): imported in rollback-journal mode",
            args.from_file
        );
    }
    let store = copy.with_file_name("check");
    let backend: Arc<dyn Backend> =
        Arc::new(LocalBackend::open(&store).context("opening a scratch store to check the copy")?);
    let name = db_name(to)?;
    push_new(backend.clone(), &name, copy, |_, _| {})
        .await
        .with_context(|| format!("checking {:?}: nothing was written", args.from_file))?;
    let ctx = || {
        StorageCtx::new(
            backend.clone(),
            Grant::only([name.clone()], false).read_only(),
        )
    };
    verify(env, ctx, to, &args.from_file)
        .await
        .with_context(|| {
            format!(
                "checking the copy of {:?}: nothing was written",
                args.from_file
            )
        })
}

/// Creates `path` readable and writable by its owner only.
fn private_file(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Sets header bytes 18 and 19 (write and read format version) from 2,
/// WAL, to 1, rollback journal: the only bytes `PRAGMA
/// journal_mode=DELETE` changes in the file. Called only when no
/// write-ahead log holds anything, so every commit is already in it.
fn to_rollback_journal(mut file: &std::fs::File) -> Result<()> {
    file.seek(SeekFrom::Start(18))
        .and_then(|_| file.write_all(&[1, 1]))
        .and_then(|_| file.flush())
        .context("switching the copy to rollback-journal mode")
}

/// `integrity_check` and a row count per table of the copy `db` of the Go
/// file `from`, through the stock component (the host never links
/// SQLite) over the storage `ctx` gives; prints both; an error unless
/// the check says ok.
async fn verify(env: &Env, ctx: impl Fn() -> StorageCtx, db: &str, from: &str) -> Result<()> {
    let integrity = query(env, ctx(), db, "pragma integrity_check").await?;
    let verdict: Vec<String> = integrity
        .iter()
        .filter_map(|row| row.values().next()?.as_str().map(str::to_string))
        .collect();
    let tables = query(
        env,
        ctx(),
        db,
        "select name from sqlite_schema where type = 'table' and name not like 'sqlite\\_%' escape '\\' order by name",
    )
    .await?;
    let names: Vec<String> = tables
        .iter()
        .filter_map(|row| row.get("name")?.as_str().map(str::to_string))
        .collect();
    // Every table's count in one query: one instance, one root read.
    let counts: Vec<String> = names
        .iter()
        .map(|name| {
            let (text, ident) = (name.replace('\'', "''"), name.replace('"', "\"\""));
            format!("select '{text}' as name, count(*) as n from \"{ident}\"")
        })
        .collect();
    let counted = match counts.is_empty() {
        true => Vec::new(),
        false => query(env, ctx(), db, &counts.join(" union all ")).await?,
    };
    for row in &counted {
        let name = row.get("name").and_then(|v| v.as_str());
        let n = row.get("n").and_then(|v| v.as_u64());
        let (Some(name), Some(n)) = (name, n) else {
            bail!("counting the rows of {db:?}: {row:?}");
        };
        println!("{name}\t{n} rows");
    }
    ensure!(
        verdict == ["ok"],
        "{from:?} is damaged: integrity_check of its copy: {}; nothing was written",
        verdict.join("; ")
    );
    eprintln!("integrity_check of {db:?}: ok; {} tables", names.len());
    Ok(())
}

/// The rows `sql` returns from `db`, as JSON objects.
async fn query(
    env: &Env,
    storage: StorageCtx,
    db: &str,
    sql: &str,
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let program = env.runtime.stock_sql()?;
    let argv = StockSql::Exec {
        db,
        sql,
        format: "json",
        params: &[],
    }
    .argv();
    let mut call = Call::new(argv, storage);
    call.stdio = Stdio::Capture { stdin: Vec::new() };
    call.memory_limit_bytes = env.memory_limit_bytes;
    let outcome = env.runtime.run(&program, call).await?;
    ensure!(
        outcome.success(),
        "checking {db:?} ({sql}): {}",
        String::from_utf8_lossy(&outcome.stderr).trim()
    );
    serde_json::from_slice(&outcome.stdout)
        .with_context(|| format!("reading what {sql:?} returned"))
}
