//! `donut-host versions DB`: the kept versions of a database, newest first.

use super::{Env, db_name};
use anyhow::Result;
use donut_format::format_utc_ms;
use donut_host::storage::{Version, list_versions};

#[derive(clap::Args)]
pub struct Args {
    /// The database.
    db: String,
    /// Most versions to list.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let name = db_name(&args.db)?;
    let versions = list_versions(&*env.backend, &name, args.limit.max(1)).await?;
    println!(
        "{:>10}  {:<24}  {:>10}  {:>14}",
        "version", "committed", "pages", "bytes"
    );
    for version in &versions {
        let time = format_utc_ms(version.time_ms());
        match version {
            Version::Live(root) => println!(
                "{:>10}  {:<24}  {:>10}  {:>14}",
                root.version,
                time,
                root.page_count,
                root.file_size()
            ),
            Version::Removed(tombstone) => {
                println!("{:>10}  {time:<24}  removed", tombstone.version)
            }
        }
    }
    Ok(0)
}
