//! `donut-bench --gc`: what garbage collection reclaims and costs
//! (BENCHMARKS.md, "Garbage collection").
//!
//! 1. On dynoxide (billed by the server): an 8 MB table (2,000 rows of
//!    3,000 random bytes), then single-row updates, each its own commit
//!    (1,000; smoke: 50): sector items and bytes before `gc`, after it,
//!    and what a fresh push of the same content stores; `gc`'s requests
//!    by kind, read and write units, per reclaimed item.
//! 2. On dynoxide: a family — the 8 MB table forked twice, each of the
//!    three then updating rows of its own (300 single-row updates each;
//!    smoke: 10): `gc` of all three (what it deletes and costs, per
//!    reclaimed item, beside the single database's), then two members
//!    removed and collected: the store must come back to a fresh push of
//!    the survivor.
//! 3. On dynoxide: stored before their commit point — one large commit
//!    (400 rows of 3,000 bytes: its pages go ahead of its root, after an
//!    intent), billed with what its intents cost; then transactions that
//!    spill (SQLite's cache at 10 pages, the VFS's budget at 64 KiB) and
//!    roll back (10; smoke: 2): `gc` of what they left, per reclaimed
//!    item, and the store back to a fresh push.
//! 4. On a local store (full scale only): a 100 MB table (25,000 rows of
//!    4,000 bytes) with a tenth of its rows rewritten in 50 commits: the
//!    same sizes before and after.

use anyhow::{Context, Result, ensure};
use donut_format::DbName;
use donut_host::LocalBackend;
use donut_host::backend::dynamo::{DynamoBackend, DynamoOptions, create_table};
use donut_host::backend::{Backend, ItemKind, StoredSummary};
use donut_host::stats::RequestStats;
use donut_host::storage::{Clock, GcOptions, collect_garbage};
use donut_testkit::Harness;
use donut_testkit::{Dynoxide, dynamo_options, fill};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

pub async fn run(smoke: bool) -> Result<String> {
    let mut out = String::new();
    let server = Dynoxide::try_start().map_err(anyhow::Error::msg)?;
    let options = DynamoOptions {
        max_attempts: 8,
        ..dynamo_options(&server.endpoint, "donut-bench-gc")
    };
    create_table(&options).await?;
    let dynamo = DynamoBackend::connect(&options, Vec::new()).await?;
    let updates = if smoke { 50 } else { 1000 };
    writeln!(
        out,
        "gc after {updates} single-row updates of an 8 MB table (dynoxide, billed by the server)"
    )?;
    workload(
        &mut out,
        Arc::new(dynamo.clone()),
        billed_by(&dynamo),
        2000,
        3000,
        Updates::Single(updates),
    )
    .await?;
    writeln!(
        out,
        "\ngc of a family: an 8 MB table forked twice, each member then updating rows (dynoxide)"
    )?;
    family(
        &mut out,
        Arc::new(dynamo.clone()),
        billed_by(&dynamo),
        if smoke { 10 } else { 300 },
    )
    .await?;
    writeln!(
        out,
        "\nintents: a large commit, then spilled transactions rolled back and collected (dynoxide)"
    )?;
    intents(
        &mut out,
        Arc::new(dynamo.clone()),
        billed_by(&dynamo),
        if smoke { 2 } else { 10 },
    )
    .await?;
    if !smoke {
        let dir = tempfile::tempdir()?;
        let local = LocalBackend::open(dir.path().join("store"))?;
        writeln!(
            out,
            "\ngc after rewriting 10% of a 100 MB table in 50 commits (local store)"
        )?;
        workload(
            &mut out,
            Arc::new(local),
            RequestStats::default,
            25_000,
            4000,
            Updates::Tenth,
        )
        .await?;
    }
    Ok(out)
}

enum Updates {
    /// This many single-row updates, one commit each.
    Single(u32),
    /// A tenth of the rows, in 50 commits.
    Tenth,
}

async fn workload(
    out: &mut String,
    backend: Arc<dyn Backend>,
    meter: impl Fn() -> RequestStats,
    rows: u64,
    row_bytes: u64,
    updates: Updates,
) -> Result<()> {
    let h = Harness::over(backend.clone());
    h.create("g.db").await;
    h.sql_ok(
        "g.db",
        &format!(
            "create table t(id integer primary key, v blob); {}",
            fill("t(v)", rows, &format!("randomblob({row_bytes})"))
        ),
    )
    .await;
    let started = sectors(&h.summary().await);
    let clock = Instant::now();
    match updates {
        Updates::Single(n) => {
            for i in 0..n as u64 {
                let id = 1 + (i * 7919) % rows;
                let sql = format!("update t set v = randomblob({row_bytes}) where id = {id}");
                h.sql_ok("g.db", &sql).await;
            }
        }
        Updates::Tenth => {
            let per_commit = rows / 10 / 50;
            for c in 0..50 {
                let (from, to) = (1 + c * per_commit * 10, 1 + (c + 1) * per_commit * 10);
                let sql = format!(
                    "update t set v = randomblob({row_bytes}) where id >= {from} and id < {to} and id % 10 = 0"
                );
                h.sql_ok("g.db", &sql).await;
            }
        }
    }
    let updated_s = clock.elapsed().as_secs_f64();
    let before = sectors(&h.summary().await);
    let billed_before = meter();
    let clock = Instant::now();
    let options = GcOptions {
        retain_ms: 0,
        now_ms: Clock::System.now_ms() + 1,
        write_units_max: None,
        keep_from: None,
    };
    let name = DbName::new("g.db").expect("legal");
    let report = collect_garbage(&*backend, &name, options).await?;
    let gc_s = clock.elapsed().as_secs_f64();
    let billed = meter().since(&billed_before);
    let after = sectors(&h.summary().await);
    // A fresh push of the same content, into the same store.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("g.sqlite");
    donut_host::transfer::pull(backend.clone(), &name, None, &file, |_, _| {})
        .await
        .context("pull")?;
    let fresh_name = DbName::new("fresh.db").expect("legal");
    donut_host::transfer::push(backend.clone(), &fresh_name, &file, |_, _| {})
        .await
        .context("push")?;
    let with_fresh = sectors(&h.summary().await);
    let fresh = (with_fresh.0 - after.0, with_fresh.1 - after.1);
    ensure!(report.sectors_deleted == before.0 - after.0, "{report:?}");
    writeln!(
        out,
        "  sectors: created {} items / {:.1} MB; after the updates {} / {:.1} MB ({updated_s:.1} s); \
         after gc {} / {:.1} MB; a fresh push {} / {:.1} MB: {:.3}x items, {:.3}x bytes",
        started.0,
        mb(started.1),
        before.0,
        mb(before.1),
        after.0,
        mb(after.1),
        fresh.0,
        mb(fresh.1),
        after.0 as f64 / fresh.0 as f64,
        after.1 as f64 / fresh.1 as f64,
    )?;
    let reclaimed = report.sectors_deleted + report.versions_retired;
    writeln!(
        out,
        "  gc: {} versions retired, {} sectors deleted ({:.1} MB) in {gc_s:.2} s",
        report.versions_retired,
        report.sectors_deleted,
        mb(report.sector_bytes_deleted)
    )?;
    if !billed.requests.is_empty() {
        let requests: Vec<String> = billed
            .requests
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        writeln!(
            out,
            "  billed: {}; {:.1} RCU, {:.1} WCU = {:.3} RCU and {:.3} WCU per reclaimed item \
             ({} sectors + {} history items)",
            requests.join(", "),
            billed.read_capacity_units,
            billed.write_capacity_units,
            billed.read_capacity_units / reclaimed as f64,
            billed.write_capacity_units / reclaimed as f64,
            report.sectors_deleted,
            report.versions_retired,
        )?;
    }
    Ok(())
}

/// The family workload (module docs, 2).
async fn family(
    out: &mut String,
    backend: Arc<dyn Backend>,
    meter: impl Fn() -> RequestStats,
    updates: u64,
) -> Result<()> {
    let (rows, row_bytes) = (2000u64, 3000u64);
    let h = Harness::over(backend.clone());
    // What the store held before (the other workloads'): not counted.
    let base = sectors(&h.summary().await);
    let ours = |(items, bytes): (u64, u64)| (items - base.0, bytes - base.1);
    let members = ["src.db", "fork-a.db", "fork-b.db"];
    h.create(members[0]).await;
    h.sql_ok(
        members[0],
        &format!(
            "create table t(id integer primary key, v blob); {}",
            fill("t(v)", rows, &format!("randomblob({row_bytes})"))
        ),
    )
    .await;
    let db = |n: &str| DbName::new(n).expect("legal");
    for fork in &members[1..] {
        donut_host::storage::fork(&*backend, &db(members[0]), None, &db(fork)).await?;
    }
    for (m, member) in members.iter().enumerate() {
        for i in 0..updates {
            let id = 1 + (i * 7919 + m as u64 * 613) % rows;
            let sql = format!("update t set v = randomblob({row_bytes}) where id = {id}");
            h.sql_ok(member, &sql).await;
        }
    }
    let before = ours(sectors(&h.summary().await));
    let billed_before = meter();
    let clock = Instant::now();
    let options = GcOptions {
        retain_ms: 0,
        now_ms: Clock::System.now_ms() + 1,
        write_units_max: None,
        keep_from: None,
    };
    let (mut deleted, mut retired) = (0, 0);
    for member in members {
        let report = collect_garbage(&*backend, &db(member), options).await?;
        ensure!(!report.forked, "a listed family is collected: {report:?}");
        deleted += report.sectors_deleted;
        retired += report.versions_retired;
    }
    let gc_s = clock.elapsed().as_secs_f64();
    let billed = meter().since(&billed_before);
    let after = ours(sectors(&h.summary().await));
    ensure!(deleted == before.0 - after.0);
    let reclaimed = (deleted + retired) as f64;
    writeln!(
        out,
        "  {updates} updates per member: sectors {} items / {:.1} MB, after gc of all three {} / {:.1} MB \
         ({deleted} deleted, {retired} versions retired, {gc_s:.2} s)",
        before.0,
        mb(before.1),
        after.0,
        mb(after.1),
    )?;
    per_reclaimed_item(out, &billed, reclaimed)?;
    for member in &members[..2] {
        donut_host::storage::remove_database(&*backend, &db(member)).await?;
        let options = GcOptions {
            now_ms: Clock::System.now_ms() + 1,
            ..options
        };
        let report = collect_garbage(&*backend, &db(member), options).await?;
        ensure!(report.removed, "{report:?}");
    }
    let left = ours(sectors(&h.summary().await));
    let survivor = db(members[2]);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("survivor.sqlite");
    donut_host::transfer::pull(backend.clone(), &survivor, None, &file, |_, _| {})
        .await
        .context("pull")?;
    let fresh_name = db("fresh-survivor.db");
    donut_host::transfer::push(backend.clone(), &fresh_name, &file, |_, _| {})
        .await
        .context("push")?;
    let with_fresh = ours(sectors(&h.summary().await));
    let fresh = (with_fresh.0 - left.0, with_fresh.1 - left.1);
    writeln!(
        out,
        "  two members removed and collected: {} items / {:.1} MB left; a fresh push of the survivor \
         {} / {:.1} MB: {:.3}x items, {:.3}x bytes",
        left.0,
        mb(left.1),
        fresh.0,
        mb(fresh.1),
        left.0 as f64 / fresh.0 as f64,
        left.1 as f64 / fresh.1 as f64,
    )?;
    Ok(())
}

/// The intents workload (module docs, 3).
async fn intents(
    out: &mut String,
    backend: Arc<dyn Backend>,
    meter: impl Fn() -> RequestStats,
    rollbacks: u32,
) -> Result<()> {
    let h = Harness::over(backend.clone());
    let base = sectors(&h.summary().await);
    let ours = |(items, bytes): (u64, u64)| (items - base.0, bytes - base.1);
    let intent_items = |summary: &StoredSummary| {
        let kind = summary.by_kind.get(&ItemKind::Intent).copied();
        kind.unwrap_or_default()
    };
    let large = fill("t(v)", 400, "randomblob(3000)");
    h.create("i.db").await;
    h.sql_ok(
        "i.db",
        "create table t(id integer primary key, v blob); insert into t(v) values (1);",
    )
    .await;
    let intents_before = intent_items(&h.summary().await);
    let billed_before = meter();
    h.sql_ok("i.db", &large).await;
    let billed = meter().since(&billed_before);
    let written = intent_items(&h.summary().await);
    let (items, bytes) = (
        written.items - intents_before.items,
        written.bytes - intents_before.bytes,
    );
    // What the intent items were billed: 1 WCU per KB of each (keys
    // and attribute names add under 100 bytes to each).
    let intent_wcu = (bytes + 100 * items).div_ceil(1024);
    writeln!(
        out,
        "  a commit of 400 rows of 3,000 bytes: {:.0} WCU in {} requests; its {items} intent item(s), \
         {:.1} KB: ~{intent_wcu} WCU ({:.2}%)",
        billed.write_capacity_units,
        billed.requests.values().sum::<u64>(),
        bytes as f64 / 1e3,
        100.0 * intent_wcu as f64 / billed.write_capacity_units,
    )?;
    let name = DbName::new("i.db").expect("legal");
    let options = || GcOptions {
        retain_ms: 0,
        now_ms: Clock::System.now_ms() + 1,
        write_units_max: None,
        keep_from: None,
    };
    collect_garbage(&*backend, &name, options()).await?;
    let settled = ours(sectors(&h.summary().await));
    let spill = format!(
        "pragma cache_size = 10; pragma donut_spill_bytes = 65536; begin; {large}; rollback;"
    );
    for _ in 0..rollbacks {
        h.sql_ok("i.db", &spill).await;
    }
    // The commit that settles their fate.
    h.sql_ok("i.db", "update t set v = randomblob(3000) where id = 1")
        .await;
    let before = ours(sectors(&h.summary().await));
    let billed_before = meter();
    let report = collect_garbage(&*backend, &name, options()).await?;
    let billed = meter().since(&billed_before);
    let after = ours(sectors(&h.summary().await));
    ensure!(report.sectors_deleted == before.0 - after.0, "{report:?}");
    // (Other databases' intents, the fresh pushes' above, stay theirs.)
    ensure!(
        intent_items(&h.summary().await).items == intents_before.items,
        "every intent of i.db collected"
    );
    let reclaimed =
        (report.sectors_deleted + report.intents_collected + report.versions_retired) as f64;
    writeln!(
        out,
        "  {rollbacks} spilled transactions rolled back: sectors {} items / {:.1} MB (settled: {} / {:.1} MB); \
         after gc {} / {:.1} MB ({} deleted, {} intents, {} versions)",
        before.0,
        mb(before.1),
        settled.0,
        mb(settled.1),
        after.0,
        mb(after.1),
        report.sectors_deleted,
        report.intents_collected,
        report.versions_retired,
    )?;
    per_reclaimed_item(out, &billed, reclaimed)?;
    Ok(())
}

/// The line with what a `gc` run was billed, in all and per item it
/// reclaimed.
fn per_reclaimed_item(out: &mut String, billed: &RequestStats, reclaimed: f64) -> Result<()> {
    writeln!(
        out,
        "  billed: {:.1} RCU, {:.1} WCU = {:.3} RCU and {:.3} WCU per reclaimed item",
        billed.read_capacity_units,
        billed.write_capacity_units,
        billed.read_capacity_units / reclaimed,
        billed.write_capacity_units / reclaimed,
    )?;
    Ok(())
}

/// What dynoxide billed `dynamo`'s requests so far.
fn billed_by(dynamo: &DynamoBackend) -> impl Fn() -> RequestStats + use<> {
    let dynamo = dynamo.clone();
    move || dynamo.stats()
}

fn sectors(summary: &StoredSummary) -> (u64, u64) {
    let kind = summary
        .by_kind
        .get(&ItemKind::Sector)
        .copied()
        .unwrap_or_default();
    (kind.items, kind.bytes)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
