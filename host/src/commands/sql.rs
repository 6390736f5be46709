//! `donut-host sql DB SQL`: runs SQL through the stock component.

use super::{Env, Format, db_ref, grant_for};
use anyhow::Result;
use donut_host::runtime::StockSql;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  donut-host sql app.db \"create table t(x); insert into t values (1), (2)\"
  donut-host sql app.db \"select * from t where x > ?1\" --param 1 --format json
  donut-host sql app.db@3 \"select count(*) from t\"      # as version 3 was (read-only)
  donut-host sql app.db@2026-11-29T10:00:00Z \"select * from t\"
  donut-host sql app.db \"insert into t values (?1)\" --param text:007   # the text '007'")]
pub struct Args {
    /// The database, or `DB@VERSION` / `DB@2026-11-29T10:00:00Z` for a
    /// kept past version (read-only).
    db: String,
    /// The SQL: one statement or several separated by `;`; the rows of
    /// each that returns any are printed.
    sql: String,
    /// A statement parameter, `?1`, `?2`, ... in order (repeatable).
    /// Typed by its form: an integer (`7`, `007` binds 7) or a finite
    /// real binds as a number, `null` as NULL, anything else as text;
    /// `text:`, `int:`, `real:` force a type (`text:007` binds '007').
    #[arg(long = "param", value_name = "VALUE", allow_hyphen_values = true)]
    params: Vec<String>,
    /// How rows are printed.
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
    let code = env.run(&program, argv, grant_for(&db)).await?;
    Ok(super::stock_exit_code(env, &db, code).await)
}
