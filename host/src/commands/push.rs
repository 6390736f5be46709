//! `donut-host push FILE DB`: uploads a local SQLite file as the next
//! version of a database.

use super::{Env, db_name, progress_printer};
use anyhow::{Context, Result};
use donut_host::transfer::push;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    file: PathBuf,
    db: String,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let name = db_name(&args.db)?;
    let progress = progress_printer("push", args.db.clone());
    let root = push(env.backend.clone(), &name, &args.file, progress)
        .await
        .with_context(|| format!("pushing {} to {:?}", args.file.display(), args.db))?;
    eprintln!(
        "pushed {} as {name:?} version {} ({} pages of {} bytes)",
        args.file.display(),
        root.version,
        root.page_count,
        root.page_size
    );
    Ok(0)
}
