//! `donut-host migrate --from-table T --from-file NAME [--to DB]`: imports
//! a file the Go DonutDB stored (its v1 or v2 layout) as a new database,
//! in one atomic commit, then checks it (`integrity_check`, rows per
//! table) and prints what it found. The source is only read; a damaged
//! one is refused before anything is written.

use super::{Env, db_name, progress_printer};
use anyhow::{Context, Result, bail, ensure};
use donut_host::backend::dynamo::{DynamoOptions, client};
use donut_host::runtime::{Stdio, StockSql};
use donut_host::storage::{Stored, read_stored};
use donut_host::transfer::push;
use donut_host::{Call, Grant};
use donut_store::migrate::read_go_file;
use std::io::Write;

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
    let name = db_name(&to)?;
    if let Stored::Live(..) = read_stored(&*env.backend, &name).await? {
        bail!(
            "database {to:?} already exists: migrate creates a new one (choose another with --to)"
        );
    }
    let (client, _) = client(&source, Vec::new())
        .await
        .with_context(|| format!("connecting to table {:?}", args.from_table))?;
    let copy = tempfile::Builder::new()
        .prefix("donut-migrate-")
        .tempfile()
        .context("creating a temporary file for the copy")?;
    let mut out = std::io::BufWriter::new(copy.as_file());
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
    let root = push(
        env.backend.clone(),
        &name,
        copy.path(),
        progress_printer("push", to.clone()),
    )
    .await
    .with_context(|| format!("storing {:?} as {to:?}", args.from_file))?;
    eprintln!(
        "stored as {to:?} version {} ({} pages of {} bytes), one commit",
        root.version, root.page_count, root.page_size
    );
    verify(env, &to).await
}

/// `integrity_check` and a row count per table, through the stock
/// component (the host never links SQLite); prints both.
async fn verify(env: &Env, db: &str) -> Result<i32> {
    let integrity = query(env, db, "pragma integrity_check").await?;
    let verdict: Vec<String> = integrity
        .iter()
        .filter_map(|row| row.values().next()?.as_str().map(str::to_string))
        .collect();
    let tables = query(
        env,
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
        false => query(env, db, &counts.join(" union all ")).await?,
    };
    for row in &counted {
        let name = row.get("name").and_then(|v| v.as_str());
        let n = row.get("n").and_then(|v| v.as_u64());
        let (Some(name), Some(n)) = (name, n) else {
            bail!("counting the rows of {db:?}: {row:?}");
        };
        println!("{name}\t{n} rows");
    }
    if verdict != ["ok"] {
        eprintln!("integrity_check of {db:?}: {}", verdict.join("; "));
        return Ok(1);
    }
    eprintln!("integrity_check of {db:?}: ok; {} tables", names.len());
    Ok(0)
}

/// The rows `sql` returns from `db`, as JSON objects.
async fn query(
    env: &Env,
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
    let grant = Grant::only([db_name(db)?], false).read_only();
    let mut call = Call::new(argv, env.storage(grant));
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
