//! `donut-host restore DB --at VERSION|TIME`: writes a new version equal to
//! a kept past one (so the restore can itself be undone the same way).

use super::{Env, db_name};
use anyhow::{Context, Result};
use donut_format::parse_at;
use donut_host::storage::restore;

#[derive(clap::Args)]
pub struct Args {
    /// The database.
    db: String,
    /// The version to bring back: a number, or a time such as
    /// 2026-11-29T10:00:00Z (the version current then).
    #[arg(long)]
    at: String,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let name = db_name(&args.db)?;
    let at = parse_at(&args.at).map_err(|e| super::usage(format!("--at {:?}: {e}", args.at)))?;
    let restored = restore(&*env.backend, &name, at)
        .await
        .with_context(|| format!("restoring {name:?} to {at}"))?;
    let undo = match restored.undid_removal {
        true => format!("rm {name}"),
        false => format!("restore {name} --at {}", restored.version - 1),
    };
    eprintln!(
        "restored {name:?} to version {} as version {} (undo: {undo})",
        restored.from, restored.version
    );
    Ok(0)
}
