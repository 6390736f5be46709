//! `donut-host pull DB[@AT] FILE|-`: downloads a consistent snapshot, of the
//! current version or a kept past one, into a new file (`--force` to
//! replace one) or standard output.

use super::{Env, db_ref, progress_printer};
use anyhow::{Context, Result};
use donut_host::transfer::{TransferError, pull, pull_new, pull_to_writer};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  donut-host pull app.db app.sqlite          # a new file
  donut-host pull app.db@3 old.sqlite        # a kept past version
  donut-host pull app.db - | gzip > app.sqlite.gz   # standard output")]
pub struct Args {
    /// The database, or `DB@VERSION` / `DB@2026-11-29T10:00:00Z` for a
    /// kept past version.
    db: String,
    /// The local file to write (`-`: standard output). An existing file is
    /// left alone unless --force.
    file: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let db = db_ref(&args.db)?;
    let progress = progress_printer("pull", args.db.clone());
    let to_stdout = args.file.as_os_str() == "-";
    let pulled = if to_stdout {
        let mut out = std::io::stdout().lock();
        let label = PathBuf::from("standard output");
        pull_to_writer(
            env.backend.clone(),
            &db.name,
            db.at,
            &mut out,
            &label,
            progress,
        )
        .await
    } else if args.force {
        pull(env.backend.clone(), &db.name, db.at, &args.file, progress).await
    } else {
        pull_new(env.backend.clone(), &db.name, db.at, &args.file, progress).await
    };
    let root = match pulled {
        Err(TransferError::Exists { path }) => {
            anyhow::bail!(
                "{} exists; not replaced (pass --force to replace it)",
                path.display()
            )
        }
        other => other.with_context(|| format!("pulling {}", args.db))?,
    };
    let into = match to_stdout {
        true => "standard output".to_string(),
        false => args.file.display().to_string(),
    };
    eprintln!(
        "pulled {:?} version {} into {into} ({} bytes)",
        db.name,
        root.version,
        root.file_size()
    );
    Ok(0)
}
