//! `donut-host serve` over real HTTP on loopback: tokens and grants keep
//! tenants apart, limits stop calls with typed answers while other
//! tenants run on, bad input gets a 4xx and the server keeps serving,
//! load and shutdown lose nothing, two processes share one table.

use crate::tenancy::{LOAD_TENANTS, peak_rss, under_load};
use crate::util::{Dynoxide, Harness, guest_path, host_bin};
use donut_host::service::config::{ConfigFile, to_hex, token_sha256};
use donut_host::service::{Service, serve};
use donut_testkit::{Api, Reply, Served, dynamo_options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A tenants file in a temporary directory, with each tenant's token.
struct Tenants {
    dir: tempfile::TempDir,
    config: PathBuf,
    tokens: BTreeMap<String, String>,
}

impl Tenants {
    /// `[service]` lines, then each tenant as (name, extra TOML lines).
    fn new(service: &str, tenants: &[(&str, &str)]) -> Tenants {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = format!("[service]\n{}{service}\n", crate::util::operator_line());
        let mut tokens = BTreeMap::new();
        for (name, extra) in tenants {
            let token = format!("token-of-{name}-{}", std::process::id());
            let hash = to_hex(&token_sha256(&token));
            text.push_str(&format!(
                "\n[[tenant]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n{extra}\n"
            ));
            tokens.insert(name.to_string(), token);
        }
        let config = dir.path().join("tenants.toml");
        std::fs::write(&config, text).expect("writing the tenants file");
        Tenants {
            dir,
            config,
            tokens,
        }
    }

    fn token(&self, tenant: &str) -> &str {
        &self.tokens[tenant]
    }

    /// `donut-host serve` over a local store in this directory.
    fn serve_local(&self) -> Served {
        Served::start(&self.config, &local_args(&self.store()))
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

fn local_args(store: &Path) -> Vec<String> {
    vec!["--local".into(), store.display().to_string()]
}

/// A tenant over the databases `NAME-*`, default limits.
fn own_prefix(name: &str) -> String {
    format!("prefixes = [\"{name}-\"]\nmay_remove = true")
}

fn component(file: &str) -> Vec<u8> {
    std::fs::read(guest_path(file)).expect("reading a component")
}

/// Uploads the stock SQL component as `tenant`'s plugin `sql`.
async fn upload_sql(api: &Api, token: &str) {
    let put = api
        .put_plugin(token, "sql", &component("donut-sql.wasm"))
        .await;
    assert_eq!(put.status, 201, "{}", put.text());
}

/// Creates database `db` for `token`'s tenant.
async fn create_db(api: &Api, token: &str, db: &str) {
    let path = format!("/v1/databases/{db}");
    let reply = api.send("PUT", &path, Some(token), None, Vec::new()).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
}

/// Asserts an invoke ran to exit 0; returns its stdout.
fn ran(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["exit_code"], 0, "{json}");
    json["stdout"].as_str().unwrap_or_default().to_string()
}

/// `error.code` and `error.limit` of an answer with `status`.
fn refused(reply: &Reply, status: u16) -> (String, String) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let json = reply.json();
    let limit = json["error"]["limit"].as_str().unwrap_or_default();
    (reply.code(), limit.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_databases_or_plugins_by_any_name() {
    let tenants = Tenants::new(
        "",
        &[
            ("alpha", &own_prefix("alpha")),
            ("beta", &own_prefix("beta")),
        ],
    );
    let served = tenants.serve_local();
    let api = served.api();
    let (a, b) = (tenants.token("alpha"), tenants.token("beta"));
    // Without a token, or with a wrong one: 401 on every route.
    for token in [None, Some("not-a-token"), Some("")] {
        for (method, path) in [
            ("GET", "/v1/plugins"),
            ("PUT", "/v1/plugins/sql"),
            ("GET", "/v1/plugins/sql"),
            ("DELETE", "/v1/plugins/sql"),
            ("POST", "/v1/plugins/sql/invoke"),
            ("GET", "/v1/databases"),
            ("PUT", "/v1/databases/alpha-1"),
            ("DELETE", "/v1/databases/alpha-1"),
        ] {
            let reply = api.send(method, path, token, None, Vec::new()).await;
            assert_eq!(reply.status, 401, "{method} {path} with {token:?}");
            assert_eq!(reply.code(), "unauthorized");
        }
    }
    assert_eq!(
        api.send("PUT", "/v1/databases/beta-1", Some(b), None, vec![])
            .await
            .status,
        201
    );
    assert_eq!(
        api.send("PUT", "/v1/databases/alpha-1", Some(a), None, vec![])
            .await
            .status,
        201
    );
    upload_sql(&api, b).await;
    ran(&api
        .sql(
            b,
            "sql",
            "beta-1",
            "create table t(x); insert into t values ('b''s')",
        )
        .await);
    // Alpha's token on beta's databases, by every spelling: 403 (outside
    // the grant) or 400 (not a legal name), and nothing changes.
    for name in [
        "beta-1",
        "Beta-1",
        "BETA-1",
        "b%D0%B5ta-1",
        "beta-1%20",
        "alpha",
        "alphabet",
        "alph",
        "..",
        "%2E%2E",
        "alpha-1%2F..%2Fbeta-1",
        "..%2Fbeta-1",
        "alpha-%00",
        "%2Fbeta-1",
    ] {
        for method in ["PUT", "DELETE"] {
            let path = format!("/v1/databases/{name}");
            let reply = api.send(method, &path, Some(a), None, Vec::new()).await;
            assert!(
                [400, 403].contains(&reply.status),
                "{method} {path}: {} {}",
                reply.status,
                reply.text()
            );
            assert!(["forbidden", "illegal_name"].contains(&reply.code().as_str()));
        }
    }
    let listed = api.get("/v1/databases", Some(a)).await.json();
    assert_eq!(listed["databases"], serde_json::json!(["alpha-1"]));
    let listed = api.get("/v1/databases", Some(b)).await.json();
    assert_eq!(listed["databases"], serde_json::json!(["beta-1"]));
    // Beta's plugins are not in alpha's namespace: not listed, not found.
    assert_eq!(
        api.get("/v1/plugins", Some(a)).await.json()["plugins"],
        serde_json::json!([])
    );
    for (method, path) in [
        ("GET", "/v1/plugins/sql"),
        ("DELETE", "/v1/plugins/sql"),
        ("POST", "/v1/plugins/sql/invoke"),
    ] {
        let ct = (method == "POST").then_some("application/json");
        let body = if method == "POST" {
            b"{}".to_vec()
        } else {
            Vec::new()
        };
        let reply = api.send(method, path, Some(a), ct, body).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (404, "plugin_not_found"),
            "{method} {path}"
        );
    }
    for name in ["..%2Fbeta%2Fsql", "%2E%2E", ".hidden", "a%2Fb"] {
        let reply = api.put_plugin(a, name, &component("donut-sql.wasm")).await;
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (400, "illegal_name"),
            "{name}"
        );
    }
    // Alpha's own plugin, pointed at beta's database: the grant refuses it
    // inside the sandbox.
    upload_sql(&api, a).await;
    let reply = api.sql(a, "sql", "beta-1", "delete from t").await;
    assert_eq!(reply.status, 200);
    assert_ne!(reply.json()["exit_code"], 0);
    assert!(
        reply.json()["stderr"].as_str().unwrap().contains("denied"),
        "{}",
        reply.text()
    );
    assert_eq!(
        ran(&api.sql(b, "sql", "beta-1", "select x from t").await),
        "x\nb's\n"
    );
    // Removing a plugin removes only one's own.
    let gone = api
        .send("DELETE", "/v1/plugins/sql", Some(a), None, Vec::new())
        .await;
    assert_eq!(gone.status, 204);
    ran(&api.sql(b, "sql", "beta-1", "select 1").await);
    let reply = api
        .send("DELETE", "/v1/databases/beta-1", Some(b), None, Vec::new())
        .await;
    assert_eq!(reply.status, 204);
    let reply = api
        .send("DELETE", "/v1/databases/beta-1", Some(b), None, Vec::new())
        .await;
    assert_eq!(
        (reply.status, reply.code().as_str()),
        (404, "database_not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_stops_its_call_over_http_while_another_tenant_runs_undisturbed() {
    let tenants = Tenants::new(
        "",
        &[
            ("calm", &own_prefix("calm")),
            ("slow", "prefixes = [\"slow-\"]\ntime_limit_secs = 0.3"),
            ("busy", "prefixes = [\"busy-\"]\nfuel_max = 100000000"),
            ("hungry", "prefixes = [\"hungry-\"]\nmemory_mb = 48"),
            ("greedy", "prefixes = [\"greedy-\"]\nbytes_max = 300000"),
            (
                "thrifty",
                "prefixes = [\"thrifty-\"]\nbudget = { read_units = 1000.0, write_units = 30.0, period_secs = 3600.0 }",
            ),
        ],
    );
    let served = tenants.serve_local();
    let api = served.api();
    let guest = component("test-guest.wasm");
    for name in ["calm", "slow", "busy", "hungry", "greedy", "thrifty"] {
        let token = tenants.token(name);
        upload_sql(&api, token).await;
        assert_eq!(api.put_plugin(token, "guest", &guest).await.status, 201);
        create_db(&api, token, &format!("{name}-db")).await;
        let created = ran(&api
            .sql(token, "sql", &format!("{name}-db"), "create table t(x)")
            .await);
        assert_eq!(created, "");
    }
    // The calm tenant inserts all along.
    let calm_api = api.clone();
    let calm_token = tenants.token("calm").to_string();
    let calm = tokio::spawn(async move {
        for i in 0..30 {
            let sql = format!("insert into t values ({i})");
            ran(&calm_api.sql(&calm_token, "sql", "calm-db", &sql).await);
        }
    });
    let stopped = |reply: &Reply| {
        let (code, limit) = refused(reply, 422);
        assert_eq!(code, "limit_exceeded");
        assert!(
            reply.json()["usage"]["wall_ms"].as_f64().is_some(),
            "{}",
            reply.text()
        );
        limit
    };
    let spin = api
        .invoke(tenants.token("slow"), "guest", &["spin", "slow-db"])
        .await;
    assert_eq!(stopped(&spin), "time");
    let spin = api
        .invoke(tenants.token("busy"), "guest", &["spin", "busy-db"])
        .await;
    assert_eq!(stopped(&spin), "cpu");
    assert!(
        spin.json()["usage"]["fuel"].as_u64() >= Some(100_000_000),
        "{}",
        spin.text()
    );
    let hog = api
        .invoke(tenants.token("hungry"), "guest", &["hog", "hungry-db"])
        .await;
    assert_eq!(stopped(&hog), "memory");
    // A commit stopped at the storage limit never lands: the database stays
    // at its previous version.
    let greedy = tenants.token("greedy");
    ran(&api
        .sql(greedy, "sql", "greedy-db", "insert into t values ('kept')")
        .await);
    let big = crate::util::fill("t(x)", 2000, "randomblob(400)");
    let stuffed = api.sql(greedy, "sql", "greedy-db", &big).await;
    assert_eq!(stopped(&stuffed), "bytes");
    let check = "select count(*), (select x from t) from t; pragma integrity_check";
    assert_eq!(
        ran(&api.sql(greedy, "sql", "greedy-db", check).await),
        "count(*),(select x from t)\n1,kept\nintegrity_check\nok\n"
    );
    // The thrifty tenant's writes outrun its budget (30 WCU: creating its
    // database and table are billed too): 429 naming it once it is used,
    // or — a request's writes are capped by what is left of it, refused
    // before they run — 422 naming it when the next insert would pass it.
    let thrifty = tenants.token("thrifty");
    let mut outcome = None;
    for i in 0..20 {
        let reply = api
            .sql(
                thrifty,
                "sql",
                "thrifty-db",
                &format!("insert into t values ({i})"),
            )
            .await;
        if reply.status != 200 {
            outcome = Some(reply);
            break;
        }
    }
    let over = outcome.expect("the budget should run out");
    let over_status = over.status;
    assert_eq!(
        refused(&over, if over_status == 422 { 422 } else { 429 }),
        ("limit_exceeded".into(), "write_units".into())
    );
    if over_status == 429 {
        let retry_after: u64 = over.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after > 0 && retry_after <= 3600, "{retry_after}");
    }
    calm.await.expect("the calm tenant's calls");
    let rows = ran(&api
        .sql(
            tenants.token("calm"),
            "sql",
            "calm-db",
            "select count(*) from t",
        )
        .await);
    assert_eq!(rows, "count(*)\n30\n");
    let metrics = api
        .get("/metrics", Some(crate::util::OPERATOR_TOKEN))
        .await
        .text();
    let (stops, refusals) = match over_status {
        422 => (5, 0),
        _ => (4, 1),
    };
    let stop_line = format!(
        "donut_http_requests_total{{route=\"/v1/plugins/{{name}}/invoke\",status=\"422\"}} {stops}"
    );
    assert!(
        metrics.contains(&stop_line),
        "{stop_line} missing from\n{metrics}"
    );
    if refusals > 0 {
        let line =
            "donut_http_requests_total{route=\"/v1/plugins/{name}/invoke\",status=\"429\"} 1";
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    for line in [
        "donut_limit_refusals_total{tenant=\"slow\",limit=\"time\"} 1",
        "donut_limit_refusals_total{tenant=\"busy\",limit=\"cpu\"} 1",
        "donut_limit_refusals_total{tenant=\"hungry\",limit=\"memory\"} 1",
        "donut_limit_refusals_total{tenant=\"greedy\",limit=\"bytes\"} 1",
        "donut_limit_refusals_total{tenant=\"thrifty\",limit=\"write_units\"} 1",
        "donut_tenant_calls_total{tenant=\"calm\"} 32",
        "donut_http_request_duration_seconds_bucket{route=\"/v1/plugins/{name}/invoke\",le=\"+Inf\"}",
        "donut_live_instances 0",
        "donut_commits_total ",
        "donut_sector_cache_hits_total ",
        "donut_tenant_write_capacity_units_total{tenant=\"thrifty\"} ",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

/// `serve` keeps sectors in the persistent sector cache: after a restart
/// its first query reads them from disk, not from storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_reads_sectors_from_the_disk_cache() {
    let tenants = Tenants::new("", &[("alpha", &own_prefix("alpha"))]);
    let token = tenants.token("alpha");
    let mut served = tenants.serve_local();
    let api = served.api();
    upload_sql(&api, token).await;
    create_db(&api, token, "alpha-1").await;
    let fill = crate::util::fill("t(v)", 200, "randomblob(1000)");
    ran(&api
        .sql(
            token,
            "sql",
            "alpha-1",
            &format!("create table t(v); {fill}"),
        )
        .await);
    served.terminate();
    let served = tenants.serve_local();
    let api = served.api();
    let sum = ran(&api
        .sql(token, "sql", "alpha-1", "select sum(length(v)) from t")
        .await);
    assert!(sum.contains("200000"), "{sum}");
    let metrics = api
        .get("/metrics", Some(crate::util::OPERATOR_TOKEN))
        .await
        .text();
    let hits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("donut_disk_cache_hits_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no disk cache hits in\n{metrics}"));
    assert!(hits > 40, "{hits} sectors from the disk cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_clear_4xx_and_the_server_keeps_serving() {
    let tenants = Tenants::new(
        "request_bytes_max = 65536\nplugin_bytes_max = 3000000",
        &[("alpha", &own_prefix("alpha"))],
    );
    let served = tenants.serve_local();
    let api = served.api();
    let a = tenants.token("alpha");
    upload_sql(&api, a).await;
    create_db(&api, a, "alpha-1").await;
    let invoke = |body: &[u8], ct: Option<&'static str>| {
        let (api, body) = (api.clone(), body.to_vec());
        async move {
            api.send("POST", "/v1/plugins/sql/invoke", Some(a), ct, body)
                .await
        }
    };
    let json = Some("application/json");
    let cases: Vec<(Reply, u16, &str)> = vec![
        (invoke(b"{\"args\": [", json).await, 400, "malformed_json"),
        (invoke(b"\"args\"", json).await, 400, "malformed_json"),
        (
            invoke(b"{\"args\": [1]}", json).await,
            400,
            "malformed_json",
        ),
        (invoke(b"{\"argv\": []}", json).await, 400, "malformed_json"),
        (
            // Its own connection, as the plugin upload's below.
            api.fresh()
                .send(
                    "POST",
                    "/v1/plugins/sql/invoke",
                    Some(a),
                    json,
                    vec![b' '; 70_000],
                )
                .await,
            413,
            "too_large",
        ),
        (
            invoke(b"{}", Some("text/plain")).await,
            415,
            "unsupported_media_type",
        ),
        (invoke(b"{}", None).await, 415, "unsupported_media_type"),
        (
            api.send(
                "POST",
                "/v1/plugins/nope/invoke",
                Some(a),
                json,
                b"{}".to_vec(),
            )
            .await,
            404,
            "plugin_not_found",
        ),
        (
            api.put_plugin(a, "text", b"hello, I am not WebAssembly")
                .await,
            422,
            "invalid_component",
        ),
        (
            api.put_plugin(a, "core", b"\0asm\x01\0\0\0").await,
            422,
            "invalid_component",
        ),
        (
            api.put_plugin(a, "cut", &component("donut-sql.wasm")[..100_000])
                .await,
            422,
            "invalid_component",
        ),
        (
            api.put_plugin(a, "plain", &component("plain.wasm")).await,
            422,
            "invalid_component",
        ),
        (
            // Its own connection: the server answers before reading the
            // body and closes it (this test failed once in CI when the
            // next request was sent on that connection).
            api.fresh()
                .put_plugin(a, "huge", &vec![0u8; 3_500_000])
                .await,
            413,
            "too_large",
        ),
        (
            api.send(
                "PUT",
                "/v1/plugins/x",
                Some(a),
                Some("application/json"),
                b"{}".to_vec(),
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (api.get("/v1/nowhere", Some(a)).await, 404, "not_found"),
        (
            api.send("PATCH", "/v1/plugins/sql", Some(a), None, Vec::new())
                .await,
            405,
            "method_not_allowed",
        ),
        (
            api.send("PUT", "/v1/databases/alpha-%FF", Some(a), None, Vec::new())
                .await,
            400,
            "bad_path",
        ),
    ];
    for (i, (reply, status, code)) in cases.iter().enumerate() {
        assert_eq!(
            (reply.status, reply.code().as_str()),
            (*status, *code),
            "case {i}: {}",
            reply.text()
        );
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.len() > 5, "case {i}: no message: {}", reply.text());
    }
    // Nothing was kept, and the server still serves.
    let listed = api.get("/v1/plugins", Some(a)).await.json();
    assert_eq!(
        listed["plugins"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(api.get("/healthz", None).await.text(), "ok\n");
    ran(&api
        .sql(a, "sql", "alpha-1", "create table t(x); select 1")
        .await);
    assert_eq!(
        api.get("/v1/databases", Some(a)).await.json()["databases"],
        serde_json::json!(["alpha-1"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tenants_file_is_refused_before_serving() {
    let cases = [
        ("[[tenant]]\nname = \"a\"\ntoken_sha256 = \"00\"\nprefixes = [\"a-\"]\n", "token_sha256"),
        (&format!("[[tenant]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n", "0".repeat(64)), "databases or prefixes"),
        (&format!("[[tenant]]\nname = \"a\"\ntoken_sha256 = \"{}\"\nprefixes = [\"\"]\n", "0".repeat(64)), "prefixes"),
        (&format!("[[tenant]]\nname = \"../a\"\ntoken_sha256 = \"{}\"\nprefixes = [\"a-\"]\n", "0".repeat(64)), "illegal name"),
        ("[service]\nlisten = 1\n", "unknown field"),
        (
            &format!(
                "[[tenant]]\nname = \"a\"\ntoken_sha256 = \"{0}\"\nprefixes = [\"x\"]\n[[tenant]]\nname = \"b\"\ntoken_sha256 = \"{1}\"\nprefixes = [\"x-\"]\n",
                "0".repeat(64),
                "1".repeat(64)
            ),
            "overlap",
        ),
    ]
    .map(|(text, why)| (text.to_string(), why));
    let dir = tempfile::tempdir().unwrap();
    for (text, why) in cases {
        let config = dir.path().join("tenants.toml");
        std::fs::write(&config, &text).unwrap();
        let out = std::process::Command::new(host_bin())
            .args(local_args(&dir.path().join("store")))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .expect("donut-host serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(why), "{text}: expected {why:?} in {stderr}");
    }
}

#[test]
fn tenant_add_prints_a_token_that_only_its_tenant_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    std::fs::write(
        &config,
        "# our tenants\n[service]\nshutdown_grace_secs = 5\n",
    )
    .unwrap();
    let add = |args: &[&str]| {
        std::process::Command::new(host_bin())
            .args(["tenant", "add"])
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("donut-host tenant add")
    };
    let acme = add(&["acme", "--db-prefix", "acme-"]);
    assert!(
        acme.status.success(),
        "{}",
        String::from_utf8_lossy(&acme.stderr)
    );
    let token = String::from_utf8(acme.stdout).unwrap();
    let token = token.lines().last().expect("a token").to_string();
    let overlapping = add(&["acme2", "--db-prefix", "acme-x"]);
    assert_eq!(overlapping.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&overlapping.stderr).contains("overlap"));
    assert!(add(&["acme"]).status.code() == Some(2), "a second acme");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.starts_with("# our tenants\n"), "comments kept: {text}");
    assert!(!text.contains(&token), "the token itself is never stored");
    assert!(text.contains(&to_hex(&token_sha256(&token))));
    let checked = ConfigFile::read(&config).unwrap().check(&config).unwrap();
    assert_eq!(checked.tenants.len(), 1);
    assert_eq!(checked.service.shutdown_grace_secs, 5.0);
}

/// The load test's tenants file: `t{i}` over `t{i}-*`.
fn load_tenants() -> Tenants {
    let names: Vec<String> = (0..LOAD_TENANTS).map(|t| format!("t{t}")).collect();
    let grants: Vec<String> = names.iter().map(|n| own_prefix(n)).collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(String::as_str)
        .zip(grants.iter().map(String::as_str))
        .collect();
    Tenants::new("instances_max = 200", &pairs)
}

/// Serves `tenants` in this process over `h`'s backend, on loopback.
async fn serve_in_process(
    tenants: &Tenants,
    h: &Harness,
) -> (Api, tokio::sync::oneshot::Sender<()>) {
    let config = ConfigFile::read(&tenants.config)
        .unwrap()
        .check(&tenants.config)
        .unwrap();
    let service = Service::new(
        config,
        h.backend.clone(),
        Some(donut_testkit::component_cache_dir()),
    )
    .expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(Arc::new(service), listener, async {
        let _ = stopped.await;
    }));
    (Api::new(&base), stop)
}

/// `serve` collects garbage in the background: each round goes over the
/// databases tenants' grants cover (never others), stops at its write
/// budget and the next resumes after where it stopped; /metrics counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_collects_garbage_in_the_background_within_its_budget() {
    let h = Harness::memory();
    for db in ["a-1", "a-2", "other"] {
        h.create(db).await;
        h.sql_ok(
            db,
            "create table t(id integer primary key, v blob);
             insert into t(v) select randomblob(2000) from generate_series(1, 50)",
        )
        .await;
        for i in 0..4 {
            let update = format!("update t set v = randomblob(2000) where id % 4 = {i}");
            h.sql_ok(db, &update).await;
        }
    }
    let versions = |db: &'static str| {
        let backend = h.backend.clone();
        async move {
            let name = donut_format::DbName::new(db).unwrap();
            donut_host::storage::list_versions(&*backend, &name, usize::MAX)
                .await
                .unwrap()
                .len()
        }
    };
    let tenants = Tenants::new(
        "gc_every_secs = 0\ngc_retain_secs = 0\ngc_write_units_max = 1",
        &[("a", &own_prefix("a"))],
    );
    let config = ConfigFile::read(&tenants.config)
        .unwrap()
        .check(&tenants.config)
        .unwrap();
    let service = Service::new(config, h.backend.clone(), None).expect("service");
    let other_versions = versions("other").await;
    assert!(other_versions > 1);
    let now = donut_host::storage::Clock::System.now_ms() + 1;
    let first = service.collect_garbage(now, None).await.unwrap();
    assert!(first.stopped_at_budget, "{first:?}");
    assert_eq!(first.databases, 1, "{first:?}");
    assert_eq!(first.last.as_ref().map(|n| n.as_str()), Some("a-1"));
    // Within a budget of 1 write unit it got somewhere: deleted the first
    // run's garbage, or the intent its table's creation wrote.
    assert!(
        first.sectors_deleted + first.intents_collected > 0,
        "{first:?}"
    );
    let second = service
        .collect_garbage(now, first.last.as_ref())
        .await
        .unwrap();
    assert_eq!(second.last.as_ref().map(|n| n.as_str()), Some("a-2"));
    assert_eq!((versions("a-1").await, versions("a-2").await), (1, 1));
    assert_eq!(
        versions("other").await,
        other_versions,
        "no grant covers it: left alone"
    );
    h.assert_integrity("a-1").await;
    h.assert_integrity("a-2").await;
    // In the background: a round runs by itself and shows in /metrics.
    let tenants = Tenants::new("gc_every_secs = 0.05", &[("a", &own_prefix("a"))]);
    let (api, _stop) = serve_in_process(&tenants, &h).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let metrics = api
            .get("/metrics", Some(crate::util::OPERATOR_TOKEN))
            .await
            .text();
        if !metrics.contains("donut_gc_rounds_total 0") && metrics.contains("donut_gc_rounds_total")
        {
            assert!(metrics.contains("donut_gc_errors_total 0"), "{metrics}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no gc round: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The load test through HTTP: each call a POST to the service.
async fn load_over_http(h: Harness) {
    let tenants = load_tenants();
    let (api, _stop) = serve_in_process(&tenants, &h).await;
    for token in tenants.tokens.values() {
        upload_sql(&api, token).await;
    }
    let tokens = Arc::new(tenants.tokens.clone());
    under_load(&h, move |tenant, args| {
        let (api, tokens) = (api.clone(), tokens.clone());
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let reply = api.invoke(&tokens[&tenant], "sql", &args).await;
            assert_eq!(reply.status, 200, "{tenant}: {}", reply.text());
            let json = reply.json();
            let stderr = json["stderr"].as_str().unwrap_or_default().to_string();
            (json["exit_code"] == 0, stderr)
        }
    })
    .await;
    eprintln!("HTTP load: peak RSS of client and server {}", peak_rss());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_http_load_on_memory_with_latency() {
    let latency = donut_host::backend::metered::Latency::new(
        donut_host::MemoryBackend::new(),
        std::time::Duration::from_millis(2),
        true,
    );
    load_over_http(Harness::over(Arc::new(latency))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_http_load_on_dynamodb() {
    load_over_http(Harness::dynamodb().await).await;
}

/// Inserts `value` through `api`; `Some(true)` acknowledged, `Some(false)`
/// refused, `None` no answer (the server is gone).
async fn insert(api: &Api, token: &str, db: &str, value: u64) -> Option<bool> {
    let sql = format!("insert into t values ({value})");
    let args = ["exec", db, &sql, "--format", "csv"];
    let body = serde_json::json!({ "args": args }).to_string().into_bytes();
    let reply = api
        .try_send(
            "POST",
            "/v1/plugins/sql/invoke",
            Some(token),
            Some("application/json"),
            body,
        )
        .await
        .ok()?;
    match reply.status {
        200 => Some(reply.json()["exit_code"] == 0),
        // Refused before running (a new connection after shutdown began).
        503 | 429 => Some(false),
        other => panic!("insert {value}: {other} {}", reply.text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_load_keeps_every_acknowledged_call() {
    let tenants = Tenants::new(
        "shutdown_grace_secs = 20",
        &[("alpha", &own_prefix("alpha"))],
    );
    let mut served = tenants.serve_local();
    let api = served.api();
    let a = tenants.token("alpha").to_string();
    upload_sql(&api, &a).await;
    create_db(&api, &a, "alpha-1").await;
    ran(&api
        .sql(&a, "sql", "alpha-1", "create table t(x integer)")
        .await);
    let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8u64 {
        let (api, a, acked) = (api.clone(), a.clone(), acked.clone());
        clients.spawn(async move {
            for i in 0.. {
                let value = client * 1_000_000 + i;
                match insert(&api, &a, "alpha-1", value).await {
                    Some(true) => acked.lock().unwrap().push(value),
                    Some(false) => {}
                    None => return,
                }
            }
        });
    }
    while acked.lock().unwrap().len() < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let status = served.terminate();
        (status, served.log_text())
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "serve exited with {:?}:\n{}",
        status.0,
        status.1
    );
    assert!(status.1.contains("shutting down"), "{}", status.1);
    while clients.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    let out = std::process::Command::new(host_bin())
        .args(local_args(&tenants.store()))
        .args([
            "sql",
            "alpha-1",
            "select x from t order by x; pragma integrity_check",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("integrity_check\nok\n"), "{text}");
    let mut stored = std::collections::BTreeSet::new();
    for line in text.lines().skip(1).take_while(|l| *l != "integrity_check") {
        assert!(
            stored.insert(line.parse::<u64>().unwrap()),
            "{line} stored twice"
        );
    }
    for value in &acked {
        assert!(
            stored.contains(value),
            "acknowledged insert {value} is missing"
        );
    }
    eprintln!(
        "{} acknowledged before and during shutdown, {} stored",
        acked.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_still_running_when_the_grace_period_ends_does_not_hold_up_shutdown() {
    let tenants = Tenants::new(
        "shutdown_grace_secs = 0.5",
        &[("alpha", "prefixes = [\"alpha-\"]\ntime_limit_secs = 600")],
    );
    let mut served = tenants.serve_local();
    let api = served.api();
    let a = tenants.token("alpha").to_string();
    assert_eq!(
        api.put_plugin(&a, "guest", &component("test-guest.wasm"))
            .await
            .status,
        201
    );
    create_db(&api, &a, "alpha-1").await;
    let spinning = {
        let (api, a) = (api.clone(), a.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({ "args": ["spin", "alpha-1"] }).to_string();
            let path = "/v1/plugins/guest/invoke";
            api.try_send(
                "POST",
                path,
                Some(&a),
                Some("application/json"),
                body.into_bytes(),
            )
            .await
        })
    };
    // The spin is running once the service counts it live.
    loop {
        let metrics = api
            .get("/metrics", Some(crate::util::OPERATOR_TOKEN))
            .await
            .text();
        if metrics.contains("donut_live_instances 1") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, log) =
        tokio::task::spawn_blocking(move || (served.terminate(), served.log_text()))
            .await
            .unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(log.contains("grace period over"), "{log}");
    let answer = spinning.await.unwrap();
    assert!(
        answer.is_err(),
        "the spinning call was answered: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_dynoxide_share_the_table_and_nothing_else() {
    let dynamo = Dynoxide::start();
    let options = dynamo_options(&dynamo.endpoint, "donut-serve");
    donut_host::backend::dynamo::create_table(&options)
        .await
        .expect("create table");
    let store = vec![
        "--table".to_string(),
        "donut-serve".into(),
        "--endpoint".into(),
        dynamo.endpoint.clone(),
        "--region".into(),
        "us-east-1".into(),
    ];
    // Two processes, each with its own tenants file and plugins directory.
    let first = Tenants::new("", &[("alpha", &own_prefix("alpha"))]);
    let second = Tenants::new("", &[("alpha", &own_prefix("alpha"))]);
    let servers = [
        Served::start(&first.config, &store),
        Served::start(&second.config, &store),
    ];
    let (one, two) = (servers[0].api(), servers[1].api());
    let (a1, a2) = (
        first.token("alpha").to_string(),
        second.token("alpha").to_string(),
    );
    upload_sql(&one, &a1).await;
    // Plugins are the process's own: the second has none yet.
    assert_eq!(
        two.get("/v1/plugins", Some(&a2)).await.json()["plugins"],
        serde_json::json!([])
    );
    upload_sql(&two, &a2).await;
    create_db(&one, &a1, "alpha-1").await;
    ran(&one
        .sql(&a1, "sql", "alpha-1", "create table t(x integer)")
        .await);
    let mut calls = tokio::task::JoinSet::new();
    // Under the tenant's 16 calls at once per server: none refused.
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    for value in 0..60u64 {
        let (api, token) = if value % 2 == 0 {
            (one.clone(), a1.clone())
        } else {
            (two.clone(), a2.clone())
        };
        let gate = gate.clone();
        calls.spawn(async move {
            let _slot = gate.acquire_owned().await;
            (value, insert(&api, &token, "alpha-1", value).await)
        });
    }
    let mut acked = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (value, outcome) = done.unwrap();
        if outcome.expect("both servers answer") {
            acked.push(value);
        }
    }
    let rows = ran(&two
        .sql(&a2, "sql", "alpha-1", "select x from t order by x")
        .await);
    let stored: Vec<u64> = rows.lines().skip(1).map(|l| l.parse().unwrap()).collect();
    acked.sort();
    assert_eq!(stored, acked, "exactly the acknowledged inserts, once each");
    let check = ran(&one
        .sql(&a1, "sql", "alpha-1", "pragma integrity_check")
        .await);
    assert_eq!(check, "integrity_check\nok\n");
    // Each counts only its own calls.
    let count = |api: Api| async move {
        let metrics = api
            .get("/metrics", Some(crate::util::OPERATOR_TOKEN))
            .await
            .text();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("donut_tenant_calls_total{tenant=\"alpha\"}"))
            .map(str::to_string);
        line.and_then(|l| l.rsplit(' ').next().map(|n| n.parse::<u64>().unwrap()))
    };
    let (c1, c2) = (count(one.clone()).await, count(two.clone()).await);
    assert_eq!(c1.unwrap() + c2.unwrap(), 60 + 3, "{c1:?} + {c2:?}");
    eprintln!(
        "{} of 60 inserts acknowledged across two servers",
        acked.len()
    );
}
