//! Tenants at the library boundary: grants by name and prefix, read-only
//! grants, per-call storage quotas, and the usage every call reports.

use crate::backend_tests;
use crate::util::{Harness, Tenant, fill, stderr};
use donut_format::DbName;
use donut_host::backend::Backend;
use donut_host::runtime::RunError;
use donut_host::storage::{CallQuota, Grant, QuotaExceeded};

fn prefixed(prefix: &str) -> Tenant {
    Tenant::granted(Grant::prefixed([prefix.to_string()], true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_grant_refuses_other_names_by_any_spelling() {
    let h = Harness::memory();
    h.create("alpha").await;
    h.create("alphabet").await;
    h.create("beta-1").await;
    h.create("alpha-1").await;
    let alpha = prefixed("alpha-");
    let own = h.sql_as(&alpha, "alpha-1", "select 1").await;
    assert!(own.ran().success(), "{}", stderr(own.ran()));
    for name in [
        "alpha",
        "alphabet",
        "beta-1",
        "Alpha-1",
        "ALPHA-1",
        "аlpha-1",   // Cyrillic а
        "alpha‐1",   // U+2010, not a hyphen-minus
        "alpha%2D1", // percent-encoding is not decoded
        "beta-alpha-1",
    ] {
        let run = h.sql_as(&alpha, name, "select 1").await;
        let out = run.ran();
        assert!(!out.success(), "{name:?} was let through");
        assert!(
            stderr(out).contains("may not use database"),
            "{name:?}: {}",
            stderr(out)
        );
    }
    for illegal in ["alpha-/../beta-1", "..", "alpha-\u{0}"] {
        let run = h.sql_as(&alpha, illegal, "select 1").await;
        assert!(!run.ran().success(), "{illegal:?} was let through");
    }
    // Nothing was created outside the prefix.
    let mut names: Vec<String> = h
        .backend
        .list_roots()
        .await
        .unwrap()
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "alpha-1", "alphabet", "beta-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_grant_reads_and_cannot_change_anything() {
    let h = Harness::memory();
    h.create("r.db").await;
    h.sql_ok("r.db", "create table t(x); insert into t values (1);")
        .await;
    let version = h.version("r.db").await;
    let reader = Tenant::granted(Grant::only([DbName::new("r.db").unwrap()], false).read_only());
    let read = h.sql_as(&reader, "r.db", "select count(*) from t").await;
    assert!(read.ran().success(), "{}", stderr(read.ran()));
    for write in [
        "insert into t values (2)",
        "pragma donut_writer = lease; insert into t values (2)",
        "vacuum",
    ] {
        let run = h.sql_as(&reader, "r.db", write).await;
        let out = run.ran();
        assert!(!out.success(), "{write:?} succeeded");
        assert!(stderr(out).contains("may only read"), "{}", stderr(out));
    }
    let create = h.sql_as(&reader, "other.db", "select 1").await;
    assert!(!create.ran().success());
    assert_eq!(h.version("r.db").await, version);
    assert_eq!(h.value("r.db", "select count(*) from t").await, "1");
}

backend_tests!(a_call_past_its_sector_quota_is_stopped_and_its_commit_never_lands);

async fn a_call_past_its_sector_quota_is_stopped_and_its_commit_never_lands(h: Harness) {
    h.create("q.db").await;
    h.create("o.db").await;
    h.sql_ok("q.db", "create table t(id integer primary key, v blob)")
        .await;
    let version = h.version("q.db").await;
    let hungry = Tenant {
        quota: CallQuota {
            sectors_max: Some(200),
            ..CallQuota::unlimited()
        },
        ..prefixed("q")
    };
    // ~1,000 pages of 4 KiB: past the quota only when the commit stores them.
    let insert = fill("t(v)", 2000, "randomblob(2000)");
    let other_tenant = prefixed("o");
    let (hungry_run, other) = tokio::join!(
        h.sql_as(&hungry, "q.db", &insert),
        h.sql_as(&other_tenant, "o.db", "select 1"),
    );
    match hungry_run.outcome {
        Err(RunError::StorageLimit { exceeded, .. }) => {
            assert_eq!(exceeded, QuotaExceeded::Sectors { max: 200 });
            assert_eq!(exceeded.limit_name(), "sectors");
        }
        other => panic!("expected the sector limit, got {other:?}"),
    }
    assert!(hungry_run.usage.storage.sectors <= 200);
    assert!(other.ran().success(), "the other tenant was disturbed");
    assert_eq!(h.version("q.db").await, version, "nothing landed");
    h.assert_integrity("q.db").await;
    assert_eq!(h.value("q.db", "select count(*) from t").await, "0");
    // Within its quota the same tenant's work goes through.
    let small = h
        .sql_as(&hungry, "q.db", &fill("t(v)", 10, "randomblob(100)"))
        .await;
    assert!(small.ran().success(), "{}", stderr(small.ran()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_storage_call_quota_is_stopped_naming_the_limit() {
    let h = Harness::memory();
    h.create("c.db").await;
    h.sql_ok(
        "c.db",
        &format!("create table t(v); {}", fill("t", 3000, "randomblob(3000)")),
    )
    .await;
    let tenant = Tenant {
        quota: CallQuota {
            storage_calls_max: Some(3),
            ..CallQuota::unlimited()
        },
        ..prefixed("c")
    };
    let run = h
        .sql_as(&tenant, "c.db", "select sum(length(v)) from t")
        .await;
    let Err(e @ RunError::StorageLimit { .. }) = &run.outcome else {
        panic!("expected the storage-call limit, got {:?}", run.outcome);
    };
    assert!(e.to_string().contains("limit of 3 storage calls"), "{e}");
    assert_eq!(run.usage.storage.storage_calls, 3);
    assert_eq!(run.usage.exit_code, None, "stopped, not exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_reports_what_it_used() {
    let h = Harness::memory();
    h.create("u.db").await;
    h.sql_ok(
        "u.db",
        &format!("create table t(v); {}", fill("t", 500, "randomblob(1000)")),
    )
    .await;
    let run = h
        .sql_as(&prefixed("u"), "u.db", "select count(*) from t")
        .await;
    assert!(run.ran().success());
    let (usage, stats) = (&run.usage, &run.stats);
    assert_eq!(usage.exit_code, Some(0));
    assert_eq!(usage.storage.storage_calls, stats.round_trips());
    assert_eq!(
        usage.storage.sectors,
        stats.get_sectors_items + stats.sector_cache_hits
    );
    assert!(
        usage.storage.bytes > stats.get_sectors_bytes,
        "sector bytes plus the root's: {usage:?} vs {stats:?}"
    );
    assert!(usage.peak_memory_bytes > 0);
    assert!(usage.busy > std::time::Duration::ZERO);
    assert!(usage.busy <= usage.wall, "{usage:?}");
}
