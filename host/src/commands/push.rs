//! `donut-host push FILE|- DB`: uploads a local SQLite file (or one read
//! from standard input) as the next version of a database.

use super::{Env, db_name, progress_printer};
use anyhow::{Context, Result};
use donut_host::transfer::push;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  donut-host push app.sqlite app.db
  curl -s https://example.com/app.sqlite | donut-host push - app.db")]
pub struct Args {
    /// The local SQLite file (`-`: standard input).
    file: PathBuf,
    /// The database to write (created if missing).
    db: String,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let name = db_name(&args.db)?;
    let progress = progress_printer("push", args.db.clone());
    // Standard input is spooled to a temporary file first: push reads the
    // header, then the pages, and needs the length.
    let spooled = match args.file.as_os_str() == "-" {
        true => Some(spool_stdin()?),
        false => None,
    };
    let (path, label) = match &spooled {
        Some(file) => (file.path().to_path_buf(), "standard input".to_string()),
        None => (args.file.clone(), args.file.display().to_string()),
    };
    let root = push(env.backend.clone(), &name, &path, progress)
        .await
        .with_context(|| format!("pushing {label} to {:?}", args.db))?;
    eprintln!(
        "pushed {label} as {name:?} version {} ({} pages of {} bytes)",
        root.version, root.page_count, root.page_size
    );
    Ok(0)
}

/// Standard input, copied to a temporary file (removed when dropped).
fn spool_stdin() -> Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new().context("a temporary file for standard input")?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file).context("reading standard input")?;
    Ok(file)
}
