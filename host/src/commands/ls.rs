//! `donut-host ls`: the databases in the store, each root checked as every
//! reader checks it.

use super::Env;
use anyhow::Result;
use donut_format::format_utc_ms;
use donut_store::db::list_databases;

pub async fn run(env: &Env) -> Result<i32> {
    println!(
        "{:<32} {:>8} {:>10} {:>12} {:>9}  last commit",
        "name", "version", "pages", "bytes", "page size"
    );
    for (name, root) in list_databases(&*env.backend).await? {
        match root {
            Ok(root) => println!(
                "{:<32} {:>8} {:>10} {:>12} {:>9}  {}",
                name.as_str(),
                root.version,
                root.page_count,
                root.file_size(),
                root.page_size,
                // RFC 3339, as `DB@TIME` takes it.
                format_utc_ms(root.commit_ms)
            ),
            Err(e) => println!("{:<32} unusable root: {e}", name.as_str()),
        }
    }
    Ok(0)
}
