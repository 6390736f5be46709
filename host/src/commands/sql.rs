//! `donut-host sql DB SQL`: runs SQL through the stock component.

use super::{Env, Format, db_ref, grant_for};
use anyhow::Result;
use donut_host::runtime::StockSql;

#[derive(clap::Args)]
pub struct Args {
    db: String,
    sql: String,
    /// A statement parameter, in order (repeatable). `int:`, `real:`,
    /// `text:`, `null` force a type; otherwise numbers bind as numbers.
    #[arg(long = "param", value_name = "VALUE", allow_hyphen_values = true)]
    params: Vec<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let db = db_ref(&args.db)?;
    let program = env.runtime.stock_sql()?;
    let argv = StockSql::Exec {
        db: &args.db,
        sql: &args.sql,
        format: args.format.as_str(),
        params: &args.params,
    }
    .argv();
    env.run(&program, argv, grant_for(&db)).await
}
