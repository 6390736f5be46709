//! `donut-host tenant add NAME --config FILE ...`: adds a tenant to a
//! service's tenants file, with a bound on every limit (printed), and
//! prints its new bearer token (last line); `donut-host tenant ls --config
//! FILE` lists them; `donut-host tenant token` draws a token for the
//! operator (`[service] operator_token_sha256`).

use anyhow::{Context, Result};
use donut_host::service::config::{
    ConfigFile, TenantSection, append_tenant, new_token, to_hex, token_sha256,
};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Add a tenant; its bearer token is the last line printed (only its
    /// SHA-256 is stored).
    Add(AddArgs),
    /// List the tenants and their grants.
    Ls {
        /// The tenants file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Draw a new token (last line) and print its SHA-256 for the
    /// tenants file (e.g. `[service] operator_token_sha256`, which
    /// `/metrics` answers to).
    Token,
}

#[derive(clap::Args)]
pub struct AddArgs {
    /// The tenant's name (its default grant: databases named NAME-*).
    name: String,
    /// The tenants file (created if missing).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A database name prefix the tenant may use (repeatable). Without
    /// --db-prefix or --db: NAME followed by "-".
    #[arg(long = "db-prefix", value_name = "PREFIX")]
    prefixes: Vec<String>,
    /// A database name the tenant may use (repeatable).
    #[arg(long = "db", value_name = "DB")]
    databases: Vec<String>,
    /// Reads only: no writes, no creations, no removals.
    #[arg(long)]
    read_only: bool,
    /// The tenant may not create databases.
    #[arg(long)]
    no_create: bool,
    /// The tenant may remove its databases.
    #[arg(long)]
    may_remove: bool,
}

pub fn run(command: Command) -> Result<i32> {
    match command {
        Command::Add(args) => add(args),
        Command::Ls { config } => ls(&config),
        Command::Token => {
            let token = new_token().context("drawing a random token")?;
            eprintln!("its SHA-256, for the tenants file:");
            eprintln!(
                "operator_token_sha256 = \"{}\"",
                to_hex(&token_sha256(&token))
            );
            eprintln!("the token, shown only now:");
            println!("{token}");
            Ok(0)
        }
    }
}

fn add(args: AddArgs) -> Result<i32> {
    let mut prefixes = args.prefixes;
    if prefixes.is_empty() && args.databases.is_empty() {
        prefixes.push(format!("{}-", args.name));
    }
    let token = new_token().context("drawing a random token")?;
    let mut section = TenantSection::with_defaults(
        &args.name,
        to_hex(&token_sha256(&token)),
        args.databases,
        prefixes,
    );
    section.read_only = args.read_only;
    section.may_create = !args.no_create;
    section.may_remove = args.may_remove;
    append_tenant(&args.config, section.clone())?;
    let mut shown = section;
    shown.token_sha256 = "…".into();
    #[derive(serde::Serialize)]
    struct One {
        tenant: [TenantSection; 1],
    }
    let block = toml::to_string(&One { tenant: [shown] }).context("printing the tenant")?;
    eprintln!(
        "added tenant {:?} to {} with these limits (edit its [[tenant]] table to change them; \
         SIGHUP makes a running server read them):\n{block}",
        args.name,
        args.config.display()
    );
    eprintln!("its bearer token, shown only now:");
    println!("{token}");
    Ok(0)
}

fn ls(config: &std::path::Path) -> Result<i32> {
    let checked = ConfigFile::read(config)?.check(config)?;
    for (tenant, _) in &checked.tenants {
        let grant = &tenant.grant;
        let names: Vec<&str> = grant.names.iter().flatten().map(|n| n.as_str()).collect();
        let prefixes: Vec<String> = grant.prefixes.iter().map(|p| format!("{p}*")).collect();
        println!(
            "{}\t{}\t{}{}",
            tenant.name,
            [names.join(","), prefixes.join(",")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(","),
            if grant.read_only {
                "read-only"
            } else {
                "read-write"
            },
            if grant.may_remove { ",may-remove" } else { "" },
        );
    }
    Ok(0)
}
