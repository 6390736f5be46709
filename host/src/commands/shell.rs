//! `donut-host shell DB`: the stock component's shell on stdin.

use super::{Env, Format, db_ref, grant_for};
use anyhow::Result;
use donut_host::runtime::StockSql;
use std::io::IsTerminal;

#[derive(clap::Args)]
#[command(after_help = "Statements end with `;`; dot-commands: .help lists them.

Examples:
  donut-host shell app.db                       # interactive
  donut-host shell app.db@3                     # version 3, read-only
  donut-host shell app.db --format csv < script.sql")]
pub struct Args {
    /// The database, or `DB@VERSION` / `DB@2026-11-29T10:00:00Z` for a
    /// kept past version (read-only).
    db: String,
    /// How rows are printed (`.mode` changes it).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let db = db_ref(&args.db)?;
    let program = env.runtime.stock_sql()?;
    let argv = StockSql::Shell {
        db: &args.db,
        format: args.format.as_str(),
        interactive: std::io::stdin().is_terminal(),
    }
    .argv();
    let code = env.run(&program, argv, grant_for(&db)).await?;
    Ok(super::stock_exit_code(env, &db, code).await)
}
