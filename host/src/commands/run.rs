//! `donut-host run COMPONENT [--db NAME]... [-- ARGS]`: runs a query
//! component with the databases it may use.

use super::{Env, db_name};
use anyhow::Result;
use donut_host::Grant;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  donut-host run target/wasm32-wasip2/guest/query.wasm -- hello
  donut-host run query.wasm --db app.db -- --db app.db hello   # only app.db granted (the example takes --db too)")]
pub struct Args {
    /// The component file.
    component: PathBuf,
    /// Databases the component may use (repeatable); default: all.
    #[arg(long = "db", value_name = "NAME")]
    dbs: Vec<String>,
    /// Arguments passed to the component (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

pub async fn run(env: &Env, args: Args) -> Result<i32> {
    let program = env.runtime.load_file(&args.component)?;
    let grant = if args.dbs.is_empty() {
        Grant::all()
    } else {
        let names = args
            .dbs
            .iter()
            .map(|n| db_name(n))
            .collect::<Result<Vec<_>>>()?;
        Grant::only(names, true)
    };
    let name = args
        .component
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let argv = std::iter::once(name).chain(args.args).collect();
    env.run(&program, argv, grant).await
}
