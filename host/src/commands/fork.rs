//! `donut-host fork SRC[@AT] DST`: a new database sharing SRC's pages (no
//! data copied), written independently from then on.

use super::{Env, db_name, db_ref};
use anyhow::{Context, Result};
use donut_host::storage::fork;

#[derive(clap::Args)]
pub struct Args {
    /// The source, or `SRC@VERSION` / `SRC@TIME` for a kept past version.
    src: String,
    /// The new database's name (must not exist).
    dst: String,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let src = db_ref(&args.src)?;
    let dst = db_name(&args.dst)?;
    let root = fork(&*env.backend, &src.name, src.at, &dst)
        .await
        .with_context(|| format!("forking {} into {dst:?}", args.src))?;
    eprintln!(
        "forked {} into {dst:?}: {} pages, {} bytes shared, nothing copied",
        args.src,
        root.page_count,
        root.file_size()
    );
    Ok(0)
}
