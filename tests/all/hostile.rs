//! The service against a hostile tenant (issue 30): what one tenant does
//! cannot run its code under another's name, take the server down,
//! learn about other tenants, or go unbilled; the tenants file survives
//! concurrent writers and changes while the server runs.

use crate::util::{Harness, guest_path, host_bin};
use donut_host::runtime::{CachedArtifact, LoadError, Runtime, RuntimeOptions, program_key};
use donut_host::service::config::{ConfigFile, to_hex, token_sha256};
use donut_host::service::{Service, serve};
use donut_host::storage::Grant;
use donut_host::tenant::{Refusal, Tenant, TenantLimits, TenantOpError, Tenants};
use donut_testkit::{Api, Served};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn component(file: &str) -> Vec<u8> {
    std::fs::read(guest_path(file)).expect("reading a component")
}

/// A runtime caching compiled components in `dir`.
fn runtime_caching_in(dir: &Path) -> Runtime {
    Runtime::new(RuntimeOptions {
        cache_dir: Some(dir.to_owned()),
        time_limits: true,
        fuel: false,
        pooling: None,
    })
    .expect("runtime")
}

/// The cache file of `key` in `dir`.
fn cache_file(dir: &Path, key: &[u8; 32]) -> PathBuf {
    let prefix = &to_hex(key)[..32];
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reading the cache directory")
        .map(|e| e.expect("a cache entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".cwasm"))
        })
        .collect();
    assert_eq!(found.len(), 1, "one cache file for {prefix}: {found:?}");
    found[0].clone()
}

/// The key and engine a cache file's header names, after checking that
/// the file is whole for them.
fn checked_entry(path: &Path) -> [u8; 32] {
    let file = std::fs::read(path).expect("reading a cache file");
    assert!(file.len() > CachedArtifact::HEADER_BYTES, "{path:?} torn");
    let key: [u8; 32] = file[8..40].try_into().expect("32 bytes");
    let engine = u64::from_le_bytes(file[40..48].try_into().expect("8 bytes"));
    if let Err(why) = CachedArtifact::check(&file, &key, engine) {
        panic!("{path:?} {why}");
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        name.starts_with(&to_hex(&key)[..32]),
        "{name} holds the code of {}",
        to_hex(&key)
    );
    key
}

/// Issue 30, item 1: two tenants compiling different components at once
/// (two runtimes over one cache directory, as two processes would be)
/// each cache their own bytes' code; a cache file planted from other bytes,
/// or torn, is compiled again, never run.
#[test]
fn concurrent_compiles_cache_their_own_code_and_a_planted_or_torn_file_is_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = component("query.wasm");
    let others = [
        component("donut-sql.wasm"),
        component("test-guest.wasm"),
        component("bench-guest.wasm"),
    ];
    let done = std::sync::atomic::AtomicBool::new(false);
    let (a, b) = (
        runtime_caching_in(dir.path()),
        runtime_caching_in(dir.path()),
    );
    let mut expected = BTreeSet::new();
    std::thread::scope(|threads| {
        let hog = threads.spawn(|| {
            let mut keys = Vec::new();
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || i < 2 {
                let scope = format!("a{i}");
                a.load_shared(&scope, &small, "loop").expect("a's upload");
                keys.push(program_key(&scope, &small));
                i += 1;
            }
            keys
        });
        for (i, bytes) in others.iter().enumerate() {
            b.load_shared("b", bytes, &format!("p{i}"))
                .expect("b's upload");
            expected.insert(program_key("b", bytes));
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        expected.extend(hog.join().expect("a's thread"));
    });
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(dir.path()).expect("reading the cache") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        assert!(!name.starts_with('.'), "a temporary file left: {name}");
        found.insert(checked_entry(&path));
    }
    assert_eq!(found, expected, "every upload cached, each its own code");

    // Planted: b's first component's file holds a's code; torn: b's
    // second is cut short. A new process compiles both again.
    let sql_key = program_key("b", &others[0]);
    let planted = std::fs::read(cache_file(dir.path(), &program_key("a0", &small)))
        .expect("reading a's entry");
    std::fs::write(cache_file(dir.path(), &sql_key), planted).expect("planting");
    let guest_file = cache_file(dir.path(), &program_key("b", &others[1]));
    let whole = std::fs::read(&guest_file).expect("reading");
    std::fs::write(&guest_file, &whole[..whole.len() / 2]).expect("tearing");
    let restarted = runtime_caching_in(dir.path());
    for (bytes, from_cache) in [(&others[0], false), (&others[1], false), (&others[2], true)] {
        let program = restarted.load_shared("b", bytes, "p").expect("b's plugin");
        assert_eq!(program.from_cache, from_cache, "{}", to_hex(program.key()));
    }
    assert_eq!(restarted.compiles(), 2, "the planted and the torn file");
    assert_eq!(checked_entry(&cache_file(dir.path(), &sql_key)), sql_key);
}

/// Issue 30, item 1: a component that imports what the host does not
/// offer, or not donut:storage, is refused before any compile.
#[test]
fn a_component_is_validated_before_it_is_compiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime_caching_in(dir.path());
    match runtime.load_shared("a", &component("plain.wasm"), "plain") {
        Err(LoadError::MissingStorageImport { .. }) => {}
        Err(e) => panic!("expected MissingStorageImport, got {e}"),
        Ok(_) => panic!("a component without donut:storage was loaded"),
    }
    assert_eq!(runtime.compiles(), 0, "refused after compiling");
    let cached = std::fs::read_dir(dir.path()).map_or(0, |d| d.count());
    assert_eq!(cached, 0, "a refused component was cached");
}

/// Issue 30, item 8: bytes loaded under several plugin names run under
/// each caller's own name (a time-limit error named another tenant's
/// plugin), and another tenant's upload of the same bytes compiles its
/// own (its answer's timing says nothing about the first upload).
#[test]
fn the_same_bytes_under_two_names_keep_each_name_and_each_tenant_compiles_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = runtime_caching_in(dir.path());
    let bytes = component("query.wasm");
    let theirs = runtime
        .load_shared("other", &bytes, "payroll-export")
        .expect("their upload");
    let mine = runtime
        .load_shared("me", &bytes, "mine")
        .expect("my upload");
    assert_eq!(theirs.label(), "payroll-export");
    assert_eq!(mine.label(), "mine");
    assert_eq!(runtime.compiles(), 2, "the second tenant compiled its own");
    let again = runtime.load_shared("me", &bytes, "renamed").expect("again");
    assert_eq!(again.label(), "renamed");
    assert_eq!(
        runtime.compiles(),
        2,
        "the same tenant's bytes compiled once"
    );
}

/// A tenants file for a service in a temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

const OPERATOR: &str = "operator-token-of-the-hostile-suite";

fn tenant_token(name: &str) -> String {
    format!("token-of-{name}-in-the-hostile-suite")
}

/// A tenant over `NAME-*` with `extra` lines.
fn tenant_toml(name: &str, extra: &str) -> String {
    let hash = to_hex(&token_sha256(&tenant_token(name)));
    format!(
        "\n[[tenant]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\nprefixes = [\"{name}-\"]\nmay_remove = true\n{extra}\n"
    )
}

impl Setup {
    fn new(service: &str, tenants: &[(&str, &str)]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("tenants.toml");
        let setup = Setup { dir, config };
        setup.write(service, tenants);
        setup
    }

    fn write(&self, service: &str, tenants: &[(&str, &str)]) {
        let operator = to_hex(&token_sha256(OPERATOR));
        let mut text = format!("[service]\noperator_token_sha256 = \"{operator}\"\n{service}\n");
        for (name, extra) in tenants {
            text.push_str(&tenant_toml(name, extra));
        }
        std::fs::write(&self.config, text).expect("writing the tenants file");
    }

    /// Serves in this process over memory; stops when the sender drops.
    async fn serve_here(&self) -> (Api, std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let config = ConfigFile::read(&self.config)
            .expect("reading")
            .check(&self.config)
            .expect("checking");
        let h = Harness::memory();
        let service = Service::new(
            config,
            h.backend.clone(),
            Some(donut_testkit::component_cache_dir()),
        )
        .expect("service");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(Arc::new(service), listener, async {
            let _ = stopped.await;
        }));
        (Api::new(&format!("http://{address}")), address, stop)
    }
}

/// Issue 30, item 8: `/metrics` names every tenant: it answers the
/// operator's token only; `/healthz` is the one route without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_only_the_operator() {
    let setup = Setup::new("", &[("alpha", ""), ("beta", "")]);
    let (api, _, _stop) = setup.serve_here().await;
    for token in [None, Some("wrong"), Some(tenant_token("alpha").as_str())] {
        let reply = api.get("/metrics", token).await;
        assert_eq!(reply.status, 401, "{token:?}: {}", reply.text());
        assert!(!reply.text().contains("beta"), "{}", reply.text());
    }
    let reply = api.get("/metrics", Some(OPERATOR)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("tenant=\"beta\""), "{}", reply.text());
    assert_eq!(api.get("/healthz", None).await.status, 200);
}

/// Issue 30, item 5: idle connections (more than the server serves at
/// once) are closed by the server, and `/healthz` is answered meanwhile
/// or after; a body that stops arriving is answered 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_are_closed_and_healthz_still_answers() {
    let setup = Setup::new(
        "header_timeout_secs = 1\nbody_timeout_secs = 1\nconnections_max = 4",
        &[("alpha", "")],
    );
    let (api, address, _stop) = setup.serve_here().await;
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(
            tokio::net::TcpStream::connect(address)
                .await
                .expect("connecting"),
        );
    }
    let health = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        api.get("/healthz", None),
    )
    .await
    .expect("/healthz answered while idle connections were open");
    assert_eq!(health.status, 200);
    for mut stream in idle {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(std::time::Duration::from_secs(60), stream.read(&mut buf))
            .await
            .expect("the server closed the idle connection");
        // Closed: end of stream, or reset.
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // A body promised and not sent.
    let mut slow = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting");
    let head = format!(
        "PUT /v1/plugins/p HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/wasm\r\ncontent-length: 1000\r\n\r\n0123456789",
        tenant_token("alpha")
    );
    slow.write_all(head.as_bytes()).await.expect("writing");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        slow.read_to_end(&mut answer),
    )
    .await
    .expect("the server answered the stalled body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// Issue 30, item 9: two `tenant add` at once each add their tenant; the
/// file is its owner's only; every limit is written and printed.
#[test]
fn concurrent_tenant_adds_keep_every_tenant_in_a_private_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tenants.toml");
    let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let children: Vec<_> = names
        .iter()
        .map(|name| {
            std::process::Command::new(host_bin())
                .args(["tenant", "add", name, "--config"])
                .arg(&config)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("starting tenant add")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().expect("tenant add");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        for limit in [
            "memory_mb = 256",
            "time_limit_secs = 30",
            "instances_max = 16",
            "databases_max = 100",
            "write_units = 20000",
        ] {
            assert!(err.contains(limit), "{limit} not printed: {err}");
        }
    }
    let file = ConfigFile::read(&config).expect("reading");
    let added: BTreeSet<String> = file.tenants.iter().map(|t| t.name.clone()).collect();
    assert_eq!(added, names.iter().cloned().collect::<BTreeSet<_>>());
    let checked = file.check(&config).expect("checking");
    for (tenant, _) in &checked.tenants {
        assert!(tenant.limits.budget.is_some() && tenant.limits.databases_max.is_some());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// Issue 30, item 9: SIGHUP reads the tenants file again: a removed
/// tenant's token stops working and a changed limit holds from the next
/// request on, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_revokes_a_token_and_changes_a_limit_on_the_next_request() {
    let setup = Setup::new("", &[("alpha", ""), ("beta", "")]);
    let store = setup.dir.path().join("store");
    let served = Served::start(
        &setup.config,
        &["--local".to_string(), store.display().to_string()],
    );
    let api = served.api();
    let (alpha, beta) = (tenant_token("alpha"), tenant_token("beta"));
    let create = |token: String, db: &'static str| {
        let api = api.clone();
        async move {
            api.send(
                "PUT",
                &format!("/v1/databases/{db}"),
                Some(&token),
                None,
                Vec::new(),
            )
            .await
        }
    };
    assert_eq!(create(alpha.clone(), "alpha-1").await.status, 201);
    assert_eq!(create(beta.clone(), "beta-1").await.status, 201);
    setup.write("", &[("alpha", "databases_max = 1")]);
    served.hang_up();
    let mut revoked = false;
    for _ in 0..200 {
        if api.get("/v1/databases", Some(&beta)).await.status == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(revoked, "beta's token still works:\n{}", served.log_text());
    let refused = create(alpha.clone(), "alpha-2").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["limit"], "databases");
    assert!(served.log_text().contains("reloaded the tenants file"));
}

/// Issue 30, TLS: plain HTTP serves loopback only unless the operator
/// says a TLS-terminating proxy stands in front.
#[test]
fn plain_http_beyond_loopback_needs_the_operators_flag() {
    let setup = Setup::new("", &[("alpha", "")]);
    let mut child = std::process::Command::new(host_bin())
        .arg("--local")
        .arg(setup.dir.path().join("store"))
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&setup.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running serve");
    // A server that started anyway is stopped, and the test fails.
    let mut exited = None;
    for _ in 0..600 {
        exited = child.try_wait().expect("waiting for serve");
        if exited.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("serve's output");
    assert!(exited.is_some(), "serve listened beyond loopback");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plain-http-beyond-loopback"), "{err}");
}

/// Issue 30, item 10: listing, creating and removing databases are
/// billed to the tenant, and its databases are bounded in count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_requests_are_billed_and_databases_bounded_in_count() {
    let h = Harness::memory();
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: None,
        time_limits: true,
        fuel: false,
        pooling: None,
    })
    .expect("runtime");
    let tenants = Tenants::new(runtime, h.backend.clone());
    tenants
        .add(Tenant {
            name: "alpha".into(),
            grant: Grant::prefixed(["alpha-".to_string()], true),
            limits: TenantLimits {
                databases_max: Some(2),
                ..TenantLimits::default()
            },
        })
        .expect("adding");
    let units = |tenants: &Tenants| {
        let totals = tenants.totals();
        let (_, t) = totals.iter().find(|(n, _)| n == "alpha").expect("alpha");
        (t.read_units, t.write_units)
    };
    for db in ["alpha-1", "alpha-2"] {
        tenants
            .create_database("alpha", db, 4096)
            .await
            .expect("creating");
    }
    let (read, write) = units(&tenants);
    assert!(read > 0.0 && write > 0.0, "creating billed nothing");
    match tenants.create_database("alpha", "alpha-3", 4096).await {
        Err(TenantOpError::Refused(Refusal::TooManyDatabases { max: 2, .. })) => {}
        other => panic!("expected TooManyDatabases, got {other:?}"),
    }
    let listed = tenants.databases("alpha").await.expect("listing");
    assert_eq!(listed.len(), 2);
    assert!(units(&tenants).0 > read, "listing billed nothing");
}
