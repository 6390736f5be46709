//! Embedding DonutDB as a tiny multi-tenant service: two tenants, each with
//! its own databases (a name prefix), limits and capacity budget, run SQL
//! through the stock component on one store; every call reports what it
//! used, and each limit refuses or stops a call with an error naming it.
//!
//! `cargo run --release -p donut-example-tenants [STORE_DIR]` (a temporary
//! local store if none is given).

use anyhow::{Context, Result};
use donut_host::storage::{CallQuota, Grant, create_database};
use donut_host::tenant::{CapacityBudget, Tenant, TenantLimits, Tenants};
use donut_host::{LocalBackend, Runtime, RuntimeOptions, runtime::StockSql};
use std::{sync::Arc, time::Duration};

#[tokio::main]
async fn main() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map_or(scratch.path().join("store"), Into::into);
    let backend = Arc::new(LocalBackend::open(&dir).context("opening the store")?);
    let runtime = Runtime::new(RuntimeOptions::default())?;
    let sql = runtime.stock_sql()?;
    let tenants = Tenants::new(runtime, backend.clone());
    for (name, write_units) in [("acme", 1_000.0), ("tiny", 12.0)] {
        let limits = TenantLimits {
            memory_bytes: 64 << 20,
            time_limit: Some(Duration::from_secs(5)),
            fuel_max: None,
            quota: CallQuota {
                sectors_max: Some(10_000),
                ..CallQuota::unlimited()
            },
            instances_max: 4,
            budget: Some(CapacityBudget {
                read_units: 1_000.0,
                write_units,
                period: Duration::from_secs(3600),
            }),
            response_bytes_max: 1 << 20,
            databases_max: Some(100),
        };
        let grant = Grant::prefixed([format!("{name}-")], false);
        tenants.add(Tenant {
            name: name.into(),
            grant,
            limits,
        })?;
        let db = donut_format::DbName::new(&format!("{name}-orders"))?;
        if let Err(e) = create_database(&*backend, &db, 4096).await {
            println!("{db}: {e}"); // exists from an earlier run
        }
    }
    let calls = [
        (
            "acme",
            "acme-orders",
            "create table if not exists o(item, qty); insert into o values ('donut', 12); select count(*) from o",
        ),
        ("acme", "tiny-orders", "select * from o"), // another tenant's database
        (
            "tiny",
            "tiny-orders",
            "create table if not exists o(x); insert into o values (randomblob(3000))",
        ),
        (
            "tiny",
            "tiny-orders",
            "insert into o values (randomblob(3000))",
        ),
        (
            "tiny",
            "tiny-orders",
            "insert into o values (randomblob(3000))",
        ), // over its write budget
    ];
    for (tenant, db, text) in calls {
        let args = StockSql::Exec {
            db,
            sql: text,
            format: "csv",
            params: &[],
        }
        .argv()[1..]
            .to_vec();
        match tenants.invoke(tenant, &sql, args, Vec::new()).await {
            Ok(done) => {
                let out = String::from_utf8_lossy(if done.outcome.success() {
                    &done.outcome.stdout
                } else {
                    &done.outcome.stderr
                });
                let billed = done.usage.billed.unwrap_or_default();
                println!(
                    "{tenant} on {db}: exit {} · {} storage calls, {} sectors · {:.1} RCU {:.1} WCU · {:?}\n  {}",
                    done.outcome.exit_code,
                    done.usage.storage.storage_calls,
                    done.usage.storage.sectors,
                    billed.read_capacity_units,
                    billed.write_capacity_units,
                    done.usage.wall,
                    out.trim()
                );
            }
            Err(e) => println!("{tenant} on {db}: {e}"),
        }
    }
    Ok(())
}
