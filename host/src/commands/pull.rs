//! `donut-host pull DB FILE`: downloads a consistent snapshot.

use super::{Env, db_name, progress_printer};
use anyhow::{Context, Result};
use donut_host::transfer::pull;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    db: String,
    file: PathBuf,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let name = db_name(&args.db)?;
    let progress = progress_printer("pull", args.db.clone());
    let root = pull(env.backend.clone(), &name, &args.file, progress)
        .await
        .with_context(|| format!("pulling {:?} to {}", args.db, args.file.display()))?;
    eprintln!(
        "pulled {name:?} version {} into {} ({} bytes)",
        root.version,
        args.file.display(),
        root.file_size()
    );
    Ok(0)
}
