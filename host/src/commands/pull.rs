//! `donut-host pull DB[@AT] FILE`: downloads a consistent snapshot, of the
//! current version or a kept past one.

use super::{Env, db_ref, progress_printer};
use anyhow::{Context, Result};
use donut_host::transfer::pull;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The database, or `DB@VERSION` / `DB@2026-11-29T10:00:00Z` for a
    /// kept past version.
    db: String,
    file: PathBuf,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let db = db_ref(&args.db)?;
    let progress = progress_printer("pull", args.db.clone());
    let root = pull(env.backend.clone(), &db.name, db.at, &args.file, progress)
        .await
        .with_context(|| format!("pulling {:?} to {}", args.db, args.file.display()))?;
    eprintln!(
        "pulled {:?} version {} into {} ({} bytes)",
        db.name,
        root.version,
        args.file.display(),
        root.file_size()
    );
    Ok(0)
}
