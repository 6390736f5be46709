//! `donut-host shell DB`: the stock component's shell on stdin.

use super::{Env, Format, db_ref, grant_for};
use anyhow::Result;
use donut_host::runtime::StockSql;
use std::io::IsTerminal;

#[derive(clap::Args)]
pub struct Args {
    db: String,
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
    env.run(&program, argv, grant_for(&db)).await
}
