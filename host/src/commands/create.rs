//! `donut-host create DB [--page-size N]`: creates an empty database.

use super::{Env, db_name};
use anyhow::Result;
use donut_format::{PAGE_SIZE_DEFAULT, validate_page_size};
use donut_host::Grant;

#[derive(clap::Args)]
pub struct Args {
    /// The new database's name (letters, digits, `.`, `_`, `-`; no `@`).
    db: String,
    /// Page size: a power of two from 512 to 65536.
    #[arg(long, default_value_t = PAGE_SIZE_DEFAULT as u64)]
    page_size: u64,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let name = db_name(&args.db)?;
    let page_size = validate_page_size(args.page_size)
        .map_err(|e| super::usage(format!("--page-size {}: {e}", args.page_size)))?;
    let mut storage = env.storage(Grant::all());
    storage.create_database(name.as_str(), page_size).await?;
    eprintln!(
        "created {name:?} (page size {page_size}) in the {}",
        env.backend.describe()
    );
    Ok(0)
}
