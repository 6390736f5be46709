//! Bad input gets a clear error and changes nothing.

use crate::util::{Harness, components, fill, guest_path, stderr};
use donut_host::runtime::LoadError;

fn load_error(bytes: &[u8]) -> LoadError {
    match components().runtime.load(bytes, "input.wasm") {
        Err(e) => e,
        Ok(_) => panic!("loading garbage succeeded"),
    }
}

#[test]
fn a_file_that_is_not_webassembly() {
    let e = load_error(b"SELECT 1; -- not a component");
    assert!(matches!(e, LoadError::NotWasm { .. }), "{e}");
    assert!(e.to_string().contains("not WebAssembly"), "{e}");
}

#[test]
fn a_core_module_is_not_a_component() {
    let e = load_error(b"\0asm\x01\0\0\0");
    assert!(matches!(e, LoadError::CoreModule { .. }), "{e}");
    assert!(e.to_string().contains("wasm32-wasip2"), "{e}");
}

#[test]
fn a_truncated_component() {
    let bytes = std::fs::read(guest_path("query.wasm")).unwrap();
    let e = load_error(&bytes[..bytes.len() / 2]);
    assert!(matches!(e, LoadError::Invalid { .. }), "{e}");
}

#[test]
fn a_component_without_the_storage_import() {
    let e = match components().runtime.load_file(&guest_path("plain.wasm")) {
        Err(e) => e,
        Ok(_) => panic!("a component without donut:storage was accepted"),
    };
    assert!(matches!(e, LoadError::MissingStorageImport { .. }), "{e}");
    assert!(e.to_string().contains("donut:storage"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_database() {
    let h = Harness::memory();
    let before = h.summary().await;
    let out = h.sql("missing.db", "select 1").await;
    assert!(!out.success());
    let err = stderr(&out);
    assert!(
        err.contains("not found") && err.contains("missing.db"),
        "{err}"
    );
    assert_eq!(h.summary().await, before, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_database_names() {
    let h = Harness::memory();
    let long = "x".repeat(256);
    for name in [
        "",
        "/",
        "a/b",
        "..",
        ".",
        "a\u{1}b",
        "tab\there",
        long.as_str(),
    ] {
        // Through the guest: the host refuses to open it.
        let out = h.sql(name, "select 1").await;
        assert!(!out.success(), "{name:?} was accepted");
        assert!(
            stderr(&out).contains("denied"),
            "{name:?}: {}",
            stderr(&out)
        );
        // Through the query component, which would create it.
        let (out, _) = h
            .run_with(&components().query, &["--db", name, "x"], "")
            .await;
        assert!(!out.success(), "{name:?} was created");
    }
    assert_eq!(h.summary().await.items, 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_size_that_is_not_a_power_of_two() {
    let h = Harness::memory();
    let name = donut_format::DbName::new("p.db").unwrap();
    for size in [1000u32, 0, 256, 131072] {
        let e = donut_host::storage::create_database(&*h.backend, &name, size)
            .await
            .expect_err("bad page size accepted");
        assert!(e.to_string().contains("power of two"), "{e}");
    }
    assert_eq!(h.summary().await.items, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pragmas() {
    let h = Harness::memory();
    h.create("p.db").await;
    h.sql_ok("p.db", "create table t(x)").await;
    for pragma in [
        "pragma locking_mode = exclusive",
        "PRAGMA Locking_Mode='EXCLUSIVE'",
    ] {
        let out = h.sql("p.db", pragma).await;
        assert!(!out.success(), "{pragma} accepted");
        assert!(
            stderr(&out).contains("DonutDB does not support"),
            "{}",
            stderr(&out)
        );
    }
    h.assert_integrity("p.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_page_is_an_error_not_wrong_rows() {
    let h = Harness::memory();
    h.create("k.db").await;
    h.sql_ok(
        "k.db",
        &format!(
            "create table t(id integer primary key, v text);
         {}",
            fill("t(v)", 500, "'value ' || i")
        ),
    )
    .await;
    let name = donut_format::DbName::new("k.db").unwrap();
    let (_, root) = donut_host::storage::read_root(&*h.backend, &name)
        .await
        .unwrap();
    let memory = h.memory.as_ref().unwrap();
    for hash in memory.sector_hashes(root.db_id) {
        memory.corrupt_sector(root.db_id, &hash, vec![0x55; 4096]);
    }
    let out = h.sql("k.db", "select sum(length(v)) from t").await;
    assert!(!out.success(), "corrupt pages were read as rows");
    let err = stderr(&out);
    assert!(
        err.contains("corrupt") && err.contains("hash") && err.contains("[SQLITE_IOERR_CORRUPTFS]"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_leaves_the_destination_untouched() {
    let h = Harness::memory();
    h.create("p.db").await;
    h.sql_ok(
        "p.db",
        &format!(
            "create table t(v blob);
         {}",
            fill("t", 300, "randomblob(200)")
        ),
    )
    .await;
    let name = donut_format::DbName::new("p.db").unwrap();
    let (_, root) = donut_host::storage::read_root(&*h.backend, &name)
        .await
        .unwrap();
    let memory = h.memory.as_ref().unwrap();
    // Every sector: one picked at random may be garbage no root references
    // (a superseded page or chunk), which a pull rightly never reads.
    for victim in memory.sector_hashes(root.db_id) {
        memory.corrupt_sector(root.db_id, &victim, vec![1; 4096]);
    }
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("keep.db");
    std::fs::write(&dest, b"precious").unwrap();
    let e = donut_host::transfer::pull(h.backend.clone(), &name, None, &dest, |_, _| {})
        .await
        .expect_err("pulled a corrupt database");
    assert!(e.to_string().contains("hash"), "{e}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "the temporary file was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_a_file_that_is_not_sqlite() {
    let h = Harness::memory();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, vec![b'x'; 8192]).unwrap();
    let name = donut_format::DbName::new("n.db").unwrap();
    let e = donut_host::transfer::push(h.backend.clone(), &name, &file, |_, _| {})
        .await
        .expect_err("pushed a text file");
    assert!(e.to_string().contains("not a SQLite database"), "{e}");
    assert_eq!(h.summary().await.items, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_guest_is_stopped_at_its_time_limit() {
    let mut h = Harness::memory();
    h.create("r.db").await;
    h.sql_ok("r.db", "create table t(x); insert into t values (1);")
        .await;
    let version = h.version("r.db").await;
    h.time_limit = Some(std::time::Duration::from_millis(300));
    let (result, _) = h
        .try_run_with(&components().test_guest, &["spin", "r.db"], "")
        .await;
    let e = result.expect_err("a runaway guest finished");
    assert!(
        matches!(e, donut_host::runtime::RunError::TimeLimit { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("time limit"), "{e}");
    h.time_limit = None;
    assert_eq!(h.version("r.db").await, version);
    h.assert_integrity("r.db").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_over_its_memory_limit_is_stopped() {
    let mut h = Harness::memory();
    h.create("m.db").await;
    h.memory_limit_bytes = 128 << 20;
    let (result, _) = h
        .try_run_with(&components().test_guest, &["hog", "m.db"], "")
        .await;
    let e = result.expect_err("a memory hog finished");
    assert!(
        matches!(e, donut_host::runtime::RunError::MemoryLimit { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("memory limit"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_on_a_runtime_without_time_limits_is_refused() {
    use donut_host::runtime::{Call, RunError, Runtime, RuntimeOptions};
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: None,
        time_limits: false,
        fuel: false,
        pooling: None,
    })
    .expect("runtime");
    let program = runtime
        .load_file(&guest_path("test-guest.wasm"))
        .expect("load");
    let h = Harness::memory();
    let storage = donut_host::StorageCtx::new(h.backend.clone(), donut_host::Grant::all());
    let mut call = Call::new(
        vec!["test-guest".into(), "spin".into(), "r.db".into()],
        storage,
    );
    call.time_limit = Some(std::time::Duration::from_millis(300));
    let e = runtime
        .run(&program, call)
        .await
        .expect_err("a time limit nobody enforces was accepted");
    assert!(matches!(e, RunError::NoTimeLimits { .. }), "{e}");
    assert!(e.to_string().contains("without time limits"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_on_a_runtime_without_fuel_is_refused_and_one_with_fuel_stops_a_spin() {
    use donut_host::runtime::{Call, RunError, Runtime, RuntimeOptions};
    let h = Harness::memory();
    h.create("r.db").await;
    for fuel in [false, true] {
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: Some(donut_testkit::component_cache_dir()),
            time_limits: true,
            fuel,
            pooling: None,
        })
        .expect("runtime");
        let program = runtime
            .load_file(&guest_path("test-guest.wasm"))
            .expect("load");
        let storage = donut_host::StorageCtx::new(h.backend.clone(), donut_host::Grant::all());
        let args = ["test-guest", "spin", "r.db"].map(String::from).to_vec();
        let mut call = Call::new(args, storage);
        call.fuel_max = Some(30_000_000);
        call.time_limit = Some(std::time::Duration::from_secs(60));
        let (e, usage) = runtime.run_with_usage(&program, call).await;
        let e = e.expect_err("a spin ran to its end");
        if fuel {
            assert!(
                matches!(
                    e,
                    RunError::CpuLimit {
                        fuel_max: 30_000_000,
                        ..
                    }
                ),
                "{e}"
            );
            assert_eq!(e.limit_name(), Some("cpu"));
            assert!(usage.fuel >= Some(30_000_000), "{usage:?}");
        } else {
            assert!(matches!(e, RunError::NoFuel { .. }), "{e}");
            assert!(e.to_string().contains("without fuel"), "{e}");
        }
    }
}
