//! `donut-host rm DB`: removes a database atomically.

use super::{Env, db_name};
use anyhow::Result;
use donut_store::db::remove_database;

#[derive(clap::Args)]
pub struct Args {
    /// The database to remove (its versions stay restorable until gc
    /// retires them).
    db: String,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let name = db_name(&args.db)?;
    remove_database(&*env.backend, &name).await?;
    eprintln!("removed {name:?}");
    Ok(0)
}
