//! `donut-host tenant add NAME --config FILE ...`: adds a tenant to a
//! service's tenants file and prints its new bearer token (last line);
//! `donut-host tenant ls --config FILE` lists them.

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
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct AddArgs {
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
    }
}

fn add(args: AddArgs) -> Result<i32> {
    let mut prefixes = args.prefixes;
    if prefixes.is_empty() && args.databases.is_empty() {
        prefixes.push(format!("{}-", args.name));
    }
    let token = new_token().context("drawing a random token")?;
    let section = TenantSection {
        name: args.name.clone(),
        token_sha256: to_hex(&token_sha256(&token)),
        databases: args.databases,
        prefixes,
        read_only: args.read_only,
        may_create: !args.no_create,
        may_remove: args.may_remove,
        memory_mb: None,
        time_limit_secs: None,
        fuel_max: None,
        storage_calls_max: None,
        sectors_max: None,
        bytes_max: None,
        instances_max: None,
        budget: None,
    };
    append_tenant(&args.config, section)?;
    eprintln!(
        "added tenant {:?} to {} (edit its [[tenant]] table to set limits)",
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
