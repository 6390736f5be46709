//! A hostile tenant against the service's execution (issue 30, items 2,
//! 3, 4 and 7): over real HTTP on loopback, one tenant's guests must not
//! stall the server or another tenant, a request's limits hold across all
//! of its statements, work done is charged and counted whether the client
//! waits or hangs up, and what a tenant makes the host hold is bounded.
//! Ordering, never timing, decides each assertion.

use crate::util::{OPERATOR_TOKEN, host_bin, operator_line};
use donut_host::service::config::{to_hex, token_sha256};
use donut_testkit::{Api, Reply, Served};
use serde_json::{Value, json};
use std::time::Duration;

/// A served tenants file: the server, its directory, each tenant's token.
struct Setup {
    _dir: tempfile::TempDir,
    served: Served,
    tokens: Vec<String>,
}

/// Tenants NAME (databases `NAME-*`) with their extra TOML lines, and
/// `service` as the `[service]` table's keys, over a local store.
fn serve(service: &str, tenants: &[(&str, &str)]) -> Setup {
    let _ = host_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = format!("[service]\n{}{service}\n", operator_line());
    let mut tokens = Vec::new();
    for (name, extra) in tenants {
        let token = format!("hostile-{name}-{}", std::process::id());
        text.push_str(&format!(
            "\n[[tenant]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nprefixes = [\"{name}-\"]\n{extra}\n",
            to_hex(&token_sha256(&token))
        ));
        tokens.push(token);
    }
    let config = dir.path().join("tenants.toml");
    std::fs::write(&config, text).expect("writing the tenants file");
    let store = dir.path().join("store").display().to_string();
    let served = Served::start(&config, &["--local".into(), store]);
    Setup {
        _dir: dir,
        served,
        tokens,
    }
}

/// One pipeline on database `db`.
async fn pipeline(api: &Api, token: &str, db: &str, baton: Option<&str>, requests: Value) -> Reply {
    let body = json!({ "baton": baton, "requests": requests }).to_string();
    let path = format!("/db/{db}/v3/pipeline");
    api.send(
        "POST",
        &path,
        Some(token),
        Some("application/json"),
        body.into_bytes(),
    )
    .await
}

fn execute(sql: &str) -> Value {
    json!({ "type": "execute", "stmt": { "sql": sql } })
}

/// The results of a pipeline answered 200, and its baton.
fn results(reply: &Reply) -> (Vec<Value>, Option<String>) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    let results = json["results"].as_array().cloned().expect("results");
    (results, json["baton"].as_str().map(str::to_string))
}

/// The single integer a one-statement pipeline's first result holds.
fn integer(result: &Value) -> i64 {
    assert_eq!(result["type"], "ok", "{result}");
    let value = &result["response"]["result"]["rows"][0][0]["value"];
    value
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not an integer: {result}"))
}

/// `select count(*)` of a CTE of `rows` rows: CPU-bound, no storage.
fn counting(rows: u64) -> String {
    format!(
        "with recursive c(i) as (select 1 union all select i + 1 from c where i < {rows}) select count(*) from c"
    )
}

/// `name{tenant="TENANT"}` from the server's metrics.
async fn tenant_metric(api: &Api, name: &str, tenant: &str) -> f64 {
    let text = api.get("/metrics", Some(OPERATOR_TOKEN)).await.text();
    let prefix = format!("{name}{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in the metrics:\n{text}"))
}

/// Guests yield to the server's reactor: with tenant A's CPU-bound
/// statements on more streams than the server has threads, `/healthz` and
/// tenant B's `select 1` are answered while A's statements still run (they
/// would run for a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_cpu_hogs_do_not_hold_healthz_or_another_tenants_select() {
    let s = serve("", &[("hog", "time_limit_secs = 60"), ("calm", "")]);
    let api = s.served.api();
    let mut hogs = Vec::new();
    for i in 0..4 {
        let (api, token) = (api.fresh(), s.tokens[0].clone());
        hogs.push(tokio::spawn(async move {
            let db = format!("hog-{i}");
            pipeline(
                &api,
                &token,
                &db,
                None,
                json!([execute(&counting(1 << 40))]),
            )
            .await
        }));
    }
    // Let the hogs reach the server's threads first.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bound = Duration::from_secs(120);
    let health = tokio::time::timeout(bound, api.fresh().get("/healthz", None))
        .await
        .expect("healthz answered within the bound");
    assert_eq!(health.status, 200);
    let other = api.fresh();
    let select = pipeline(
        &other,
        &s.tokens[1],
        "calm-1",
        None,
        json!([execute("select 1"), { "type": "close" }]),
    );
    let select = tokio::time::timeout(bound, select)
        .await
        .expect("select 1 answered within the bound");
    let (answers, _) = results(&select);
    assert_eq!(integer(&answers[0]), 1);
    for hog in &hogs {
        assert!(
            !hog.is_finished(),
            "a hog ended before the others were answered"
        );
    }
}

/// The fuel of one pipeline spans its statements: one statement of a
/// fifth of the tenant's fuel runs alone, and a pipeline of twenty of them
/// is stopped at its limit (the statements past it never run) instead of
/// running twenty times the tenant's CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_statements_share_one_cpu_limit() {
    let s = serve("", &[("cpu", &format!("fuel_max = {CPU_FUEL_MAX}"))]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let one = pipeline(
        &api,
        token,
        "cpu-1",
        None,
        json!([execute(&counting(FIFTH_ROWS))]),
    )
    .await;
    let (answers, _) = results(&one);
    assert_eq!(integer(&answers[0]), FIFTH_ROWS as i64);
    let twenty: Vec<Value> = (0..20).map(|_| execute(&counting(FIFTH_ROWS))).collect();
    let (answers, baton) = results(&pipeline(&api, token, "cpu-1", None, json!(twenty)).await);
    let stopped = answers
        .iter()
        .position(|a| a["type"] == "error")
        .unwrap_or_else(|| panic!("twenty fifths of the CPU limit all ran: {answers:?}"));
    assert!(stopped < 10, "stopped only at statement {stopped}");
    assert_eq!(
        answers[stopped]["error"]["code"], "LIMIT_CPU",
        "{answers:?}"
    );
    assert!(baton.is_none(), "the stopped stream ended");
}

/// Fuel of the tenant in [`a_pipelines_statements_share_one_cpu_limit`].
const CPU_FUEL_MAX: u64 = 2_000_000_000;
/// Rows of a counting CTE that burns about a fifth of it.
const FIFTH_ROWS: u64 = 400_000;

/// The time limit of one pipeline spans its statements, as its fuel does:
/// twenty statements each far under the limit, together far over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelines_statements_share_one_time_limit() {
    let s = serve("", &[("slow", "time_limit_secs = 1")]);
    let api = s.served.api();
    let twenty: Vec<Value> = (0..20).map(|_| execute(&counting(FIFTH_ROWS))).collect();
    let (answers, _) = results(&pipeline(&api, &s.tokens[0], "slow-1", None, json!(twenty)).await);
    let stopped = answers.iter().position(|a| a["type"] == "error");
    let stopped = stopped.unwrap_or_else(|| panic!("all twenty ran: {answers:?}"));
    assert_eq!(
        answers[stopped]["error"]["code"], "LIMIT_TIME",
        "{answers:?}"
    );
}

/// A time limit longer than the clock can count (here 10^19 s) is no
/// deadline, not an overflow: the statement runs and is answered (the
/// deadline `now + limit` panicked every request's worker thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_limit_past_the_clocks_range_does_not_panic_the_request() {
    let s = serve("", &[("patient", "time_limit_secs = 1e19")]);
    let api = s.served.api();
    let (answers, _) = results(
        &pipeline(
            &api,
            &s.tokens[0],
            "patient-1",
            None,
            json!([execute("select 6 * 7")]),
        )
        .await,
    );
    assert_eq!(integer(&answers[0]), 42, "{answers:?}");
}

/// A tenant whose budget is used can still close its stream: a baton's
/// pipeline was refused (429) before it ran, close included, and the
/// stream kept one of the tenant's instances until it idled out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closes_after_its_tenants_budget_is_used() {
    let budget = "budget = { read_units = 100000.0, write_units = 10.0, period_secs = 3600 }";
    let s = serve("", &[("spent", budget)]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let opened = pipeline(&api, token, "spent-1", None, json!([execute("select 1")])).await;
    let (_, baton) = results(&opened);
    let baton = baton.expect("a baton for the open stream");
    let spend: Vec<Value> = [execute("create table t(x)")]
        .into_iter()
        .chain((0..4).map(|i| execute(&format!("insert into t values ({i})"))))
        .chain([json!({ "type": "close" })])
        .collect();
    let spent = pipeline(&api, token, "spent-2", None, json!(spend)).await;
    let (answers, _) = results(&spent);
    assert!(
        answers.iter().any(|a| a["type"] == "error"),
        "the budget of 10 WCU was not used up: {answers:?}"
    );
    let close = pipeline(
        &api,
        token,
        "spent-1",
        Some(&baton),
        json!([{ "type": "close" }]),
    )
    .await;
    let (answers, baton) = results(&close);
    assert_eq!(answers[0]["type"], "ok", "{answers:?}");
    assert_eq!(baton, None);
}

/// A stream holds one of its tenant's instances for its whole life, idle
/// or not: with `instances_max = 1`, a second stream and a plugin call are
/// refused while the first stream is open, the live-instance gauge says 1,
/// and closing the stream frees its instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_holds_an_instance_of_its_tenant_until_it_closes() {
    let s = serve("", &[("one", "instances_max = 1")]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let (_, baton) =
        results(&pipeline(&api, token, "one-1", None, json!([execute("select 1")])).await);
    assert!(baton.is_some());
    let second = pipeline(&api, token, "one-1", None, json!([execute("select 1")])).await;
    assert_eq!(second.status, 429, "{}", second.text());
    assert_eq!(
        second.json()["error"]["limit"],
        "instances",
        "{}",
        second.text()
    );
    assert_eq!(
        tenant_metric(&api, "donut_tenant_live_instances", "one").await,
        1.0
    );
    let (_, after) = results(
        &pipeline(
            &api,
            token,
            "one-1",
            baton.as_deref(),
            json!([{ "type": "close" }]),
        )
        .await,
    );
    assert!(after.is_none());
    assert_eq!(
        tenant_metric(&api, "donut_tenant_live_instances", "one").await,
        0.0
    );
    let (answers, _) = results(
        &pipeline(
            &api,
            token,
            "one-1",
            None,
            json!([execute("select 7"), { "type": "close" }]),
        )
        .await,
    );
    assert_eq!(integer(&answers[0]), 7);
}

/// The capacity budget is checked before each statement and charged after
/// it: a pipeline of 200 autocommit inserts of a tenant with a 20-WCU
/// budget is refused once the budget is used, and the tenant is charged at
/// most one insert's worth past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_overruns_its_tenants_budget_by_at_most_one_statement() {
    let budget = "budget = { read_units = 100000.0, write_units = 20.0, period_secs = 3600 }";
    let s = serve("", &[("thrifty", budget)]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let mut requests = vec![execute("create table t(x)")];
    requests.extend((0..200).map(|i| execute(&format!("insert into t values ({i})"))));
    let (answers, _) = results(&pipeline(&api, token, "thrifty-1", None, json!(requests)).await);
    let refused = answers
        .iter()
        .position(|a| a["type"] == "error")
        .unwrap_or_else(|| panic!("the budget never refused a statement: {answers:?}"));
    assert_eq!(
        answers[refused]["error"]["code"], "LIMIT_WRITE_UNITS",
        "{answers:?}"
    );
    let charged = tenant_metric(&api, "donut_tenant_write_capacity_units_total", "thrifty").await;
    // One insert commits a root and a sector or two: a few units at most.
    assert!(
        charged <= 20.0 + 8.0,
        "charged {charged} WCU against a budget of 20"
    );
}

/// A tenant given no storage quota is still bounded per request by the
/// library's default.
#[test]
fn a_tenant_without_a_quota_gets_the_default_quota() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tenants.toml");
    let text = format!(
        "[service]\n[[tenant]]\nname = \"bare\"\ntoken_sha256 = \"{}\"\nprefixes = [\"bare-\"]\n",
        to_hex(&token_sha256("bare"))
    );
    std::fs::write(&path, text).expect("writing");
    let file = donut_host::service::config::ConfigFile::read(&path).expect("reading");
    let config = file.check(&path).expect("checking");
    let quota = config.tenants[0].0.limits.quota;
    assert_eq!(quota, donut_host::tenant::TenantLimits::default().quota);
    assert!(
        quota.storage_calls_max.is_some()
            && quota.sectors_max.is_some()
            && quota.bytes_max.is_some(),
        "{quota:?}"
    );
}

/// A client that hangs up mid-pipeline is still charged for what its
/// statements committed, and the request is logged and counted: the
/// tenant's write units cover every committed insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_pipeline_is_charged_for_what_committed() {
    let s = serve("", &[("quitter", "")]);
    let api = s.served.api();
    let token = s.tokens[0].clone();
    let (_, _) = results(
        &pipeline(
            &api,
            &token,
            "quitter-1",
            None,
            json!([execute("create table t(x)"), { "type": "close" }]),
        )
        .await,
    );
    let charged_before =
        tenant_metric(&api, "donut_tenant_write_capacity_units_total", "quitter").await;
    let inserts: Vec<Value> = (0..3000)
        .map(|i| execute(&format!("insert into t values ({i})")))
        .collect();
    let (hang_api, hang_token) = (api.fresh(), token.clone());
    let pipeline_task = tokio::spawn(async move {
        pipeline(&hang_api, &hang_token, "quitter-1", None, json!(inserts)).await
    });
    let count = || async {
        let reply = pipeline(
            &api,
            &token,
            "quitter-1",
            None,
            json!([execute("select count(*) from t"), { "type": "close" }]),
        )
        .await;
        integer(&results(&reply).0[0])
    };
    // Hang up once some inserts committed (bounded: 60 s of polling).
    let mut polls = 0;
    while count().await < 10 {
        polls += 1;
        assert!(polls < 600, "no insert committed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pipeline_task.abort();
    assert!(pipeline_task.await.is_err_and(|e| e.is_cancelled()));
    // The server notices the hang-up, stops the pipeline and logs it.
    let mut polls = 0;
    while !s.served.log_text().contains("client hung up") {
        polls += 1;
        assert!(
            polls < 600,
            "no log line for the abandoned request:\n{}",
            s.served.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let committed = count().await;
    assert!(
        committed < 3000,
        "the pipeline ran to its end: hang up earlier"
    );
    let charged = tenant_metric(&api, "donut_tenant_write_capacity_units_total", "quitter").await
        - charged_before;
    assert!(
        charged >= committed as f64,
        "{committed} inserts committed, {charged} WCU charged"
    );
    let metrics = api.get("/metrics", Some(OPERATOR_TOKEN)).await.text();
    assert!(
        metrics.contains("route=\"/db/{db}/v3/pipeline\",status=\"499\"} 1"),
        "the abandoned request is not counted:\n{metrics}"
    );
}

/// Stored SQL texts are bounded per stream, in count and in bytes, with a
/// clear error; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_sql_is_bounded_per_stream() {
    let s = serve("", &[("hoard", "")]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let store: Vec<Value> = (0..51)
        .map(|i| json!({ "type": "store_sql", "sql_id": i, "sql": "select 1" }))
        .collect();
    let (answers, baton) = results(&pipeline(&api, token, "hoard-1", None, json!(store)).await);
    assert!(
        answers[..50].iter().all(|a| a["type"] == "ok"),
        "{answers:?}"
    );
    assert_eq!(
        answers[50]["error"]["code"], "SQL_STORE_LIMIT",
        "{answers:?}"
    );
    let big = "select 1 -- ".to_string() + &"x".repeat(64 << 10);
    let (answers, _) = results(
        &pipeline(
            &api,
            token,
            "hoard-1",
            baton.as_deref(),
            json!([{ "type": "close_sql", "sql_id": 0 }, { "type": "store_sql", "sql_id": 0, "sql": big }, execute("select 2")]),
        )
        .await,
    );
    assert_eq!(
        answers[1]["error"]["code"], "SQL_STORE_LIMIT",
        "{answers:?}"
    );
    assert_eq!(integer(&answers[2]), 2);
}

/// A response past the tenant's cap is refused with a clear error instead
/// of being built: a text of 30 MB of NUL bytes (six JSON bytes each)
/// would answer 180 MB, past the default cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_cap_is_refused_not_built() {
    let s = serve("", &[("big", "")]);
    let api = s.served.api();
    let sql = "select cast(zeroblob(30000000) as text), 1";
    let (answers, _) = results(
        &pipeline(
            &api,
            &s.tokens[0],
            "big-1",
            None,
            json!([execute(sql), execute("select 3")]),
        )
        .await,
    );
    assert_eq!(
        answers[0]["error"]["code"], "RESPONSE_TOO_LARGE",
        "{answers:?}"
    );
    assert_eq!(integer(&answers[1]), 3);
}

/// A plugin's captured output is bounded by its tenant's answer cap: a
/// call printing 40 MB (of NUL bytes, six JSON bytes each) is stopped at
/// the limit with a clear error, not buffered and answered as 240 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_output_past_the_cap_stops_it_with_a_clear_error() {
    let s = serve("", &[("loud", "")]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let wasm = std::fs::read(donut_testkit::guest_path("donut-sql.wasm")).expect("component");
    let put = api.put_plugin(token, "sql", &wasm).await;
    assert_eq!(put.status, 201, "{}", put.text());
    let create = api
        .send("PUT", "/v1/databases/loud-1", Some(token), None, Vec::new())
        .await;
    assert_eq!(create.status, 201, "{}", create.text());
    let reply = api
        .sql(
            token,
            "sql",
            "loud-1",
            "select cast(zeroblob(40000000) as text)",
        )
        .await;
    assert_eq!(
        reply.status,
        422,
        "{}",
        &reply.text()[..reply.text().len().min(500)]
    );
    assert_eq!(reply.json()["error"]["limit"], "output", "{}", reply.text());
}

/// The answer cap of the tenants in the answer-size tests below.
const SMALL_CAP: usize = 1_000_000;

/// A pipeline's answer must stay within the cap, and what did not fit
/// must say so (`RESPONSE_TOO_LARGE`).
fn assert_capped(reply: &Reply, cap: usize) {
    assert!(
        reply.body.len() <= cap,
        "status {}: an answer of {} bytes, over the cap of {cap}",
        reply.status,
        reply.body.len()
    );
    let (answers, _) = results(reply);
    assert!(
        answers
            .iter()
            .any(|a| a["error"]["code"] == "RESPONSE_TOO_LARGE"),
        "nothing was refused: {}",
        &reply.text()[..reply.text().len().min(500)]
    );
}

/// `describe` answers count toward the answer cap: 100 describes of one
/// stored 60 KB text (a small request) answered 6 MB past a 1 MB cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_answers_count_toward_the_response_cap() {
    let s = serve("", &[("d", &format!("response_bytes_max = {SMALL_CAP}"))]);
    let api = s.served.api();
    let alias = "x".repeat(60_000);
    let mut requests = vec![
        json!({ "type": "store_sql", "sql_id": 1, "sql": format!("select 1 as \"{alias}\"") }),
    ];
    requests.extend((0..100).map(|_| json!({ "type": "describe", "sql_id": 1 })));
    let reply = pipeline(&api, &s.tokens[0], "d-1", None, json!(requests)).await;
    assert_capped(&reply, SMALL_CAP);
    assert_eq!(
        results(&reply).0[1]["type"],
        "ok",
        "the first describe fits"
    );
}

/// Declared types count toward the answer cap: two statements selecting
/// a column with a 60 KB declared type 100 times answered 12 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_types_count_toward_the_response_cap() {
    let s = serve("", &[("t", &format!("response_bytes_max = {SMALL_CAP}"))]);
    let api = s.served.api();
    let decltype = "x".repeat(60_000);
    let cols = vec!["a"; 100].join(",");
    let mut requests = vec![
        execute(&format!("create table t(a {decltype})")),
        execute("insert into t values (1)"),
        json!({ "type": "store_sql", "sql_id": 1, "sql": format!("select {cols} from t") }),
    ];
    requests.extend((0..2).map(|_| json!({ "type": "execute", "stmt": { "sql_id": 1 } })));
    let reply = pipeline(&api, &s.tokens[0], "t-1", None, json!(requests)).await;
    assert_capped(&reply, SMALL_CAP);
}

/// Error messages count toward the answer cap: 100 syntax errors near a
/// 30 KB token of one stored text answered 3 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_count_toward_the_response_cap() {
    let s = serve("", &[("e", &format!("response_bytes_max = {SMALL_CAP}"))]);
    let api = s.served.api();
    let token = "x".repeat(30_000);
    let mut requests = vec![
        json!({ "type": "store_sql", "sql_id": 1, "sql": format!("select 1 {token} {token}") }),
    ];
    requests.extend((0..100).map(|_| json!({ "type": "execute", "stmt": { "sql_id": 1 } })));
    let reply = pipeline(&api, &s.tokens[0], "e-1", None, json!(requests)).await;
    assert_capped(&reply, SMALL_CAP);
}

/// The stateless `/v1/execute` answer counts toward the cap too: an
/// error message of 30 KB answered past a 20 KB cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_answer_counts_toward_the_response_cap() {
    let cap = 20_000;
    let s = serve("", &[("v", &format!("response_bytes_max = {cap}"))]);
    let api = s.served.api();
    let token = "x".repeat(30_000);
    let body = json!({ "stmt": { "sql": format!("select 1 {token} {token}") } }).to_string();
    let reply = api
        .send(
            "POST",
            "/db/v-1/v1/execute",
            Some(&s.tokens[0]),
            Some("application/json"),
            body.into_bytes(),
        )
        .await;
    assert!(
        reply.body.len() <= cap,
        "status {}: an answer of {} bytes, over the cap of {cap}",
        reply.status,
        reply.body.len()
    );
    assert_eq!(
        reply.json()["code"],
        "RESPONSE_TOO_LARGE",
        "{}",
        reply.text()
    );
}

/// A write whose answer is too large still committed, and its error says
/// so and names the limit that tripped (it said "this tenant's limit of"
/// the answer's own size, and nothing of the commit: a client would run
/// the insert again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_too_large_says_it_committed() {
    let s = serve("", &[("w", &format!("response_bytes_max = {SMALL_CAP}"))]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let (answers, _) = results(
        &pipeline(
            &api,
            token,
            "w-1",
            None,
            json!([
                execute("create table t(x)"),
                execute("insert into t values (cast(zeroblob(2000000) as text)) returning x"),
                execute("select count(*) from t"),
                { "type": "close" }
            ]),
        )
        .await,
    );
    let error = &answers[1]["error"];
    assert_eq!(error["code"], "RESPONSE_TOO_LARGE", "{answers:?}");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("committed"), "{message}");
    assert!(
        message.contains(&format!("response_bytes_max = {SMALL_CAP}")),
        "{message}"
    );
    assert_eq!(integer(&answers[2]), 1, "the insert committed");
}

/// A `sequence` is bounded by its tenant's budget too: it was checked
/// once and then ran all of its statements (300 inserts against a 20-WCU
/// budget were all charged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_overruns_its_tenants_budget_by_at_most_one_statement() {
    let budget = "budget = { read_units = 100000.0, write_units = 20.0, period_secs = 3600 }";
    let s = serve("", &[("seq", budget)]);
    let api = s.served.api();
    let token = &s.tokens[0];
    let created = pipeline(
        &api,
        token,
        "seq-1",
        None,
        json!([execute("create table t(x)"), { "type": "close" }]),
    )
    .await;
    let _ = results(&created);
    let script: String = (0..300)
        .map(|i| format!("insert into t values ({i});"))
        .collect();
    let (answers, _) = results(
        &pipeline(
            &api,
            token,
            "seq-1",
            None,
            json!([{ "type": "sequence", "sql": script }, { "type": "close" }]),
        )
        .await,
    );
    assert_eq!(
        answers[0]["error"]["code"], "LIMIT_WRITE_UNITS",
        "{answers:?}"
    );
    let charged = tenant_metric(&api, "donut_tenant_write_capacity_units_total", "seq").await;
    assert!(
        charged <= 20.0 + 8.0,
        "charged {charged} WCU against a budget of 20"
    );
}

/// One statement is bounded by what is left of its tenant's budget: an
/// insert of 2 MB (about 2,000 WCU) against a 20-WCU budget is stopped
/// before its sectors are written, not charged in full after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_statement_is_bounded_by_what_is_left_of_the_budget() {
    let budget = "budget = { read_units = 100000.0, write_units = 20.0, period_secs = 3600 }";
    let s = serve("", &[("big", budget)]);
    let api = s.served.api();
    let (answers, _) = results(
        &pipeline(
            &api,
            &s.tokens[0],
            "big-1",
            None,
            json!([
                execute("create table t(x)"),
                execute("insert into t values (randomblob(2000000))"),
                { "type": "close" }
            ]),
        )
        .await,
    );
    assert_eq!(
        answers[1]["error"]["code"], "LIMIT_WRITE_UNITS",
        "{answers:?}"
    );
    let charged = tenant_metric(&api, "donut_tenant_write_capacity_units_total", "big").await;
    assert!(
        charged <= 20.0 + 8.0,
        "charged {charged} WCU against a budget of 20"
    );
}

/// The time limit measures a request's own execution, not the time it
/// waits for a thread: with a hog tenant's eight CPU-bound streams on the
/// server's two threads, another tenant's statement that needs a fraction
/// of its one-second limit is answered (it was stopped at LIMIT_TIME: its
/// wall clock ran while the hogs ran) while the hogs still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_statement_keeps_its_time_limit_while_a_hog_runs() {
    let s = serve(
        "",
        &[
            ("hog", "time_limit_secs = 3\ninstances_max = 16"),
            ("calm", "time_limit_secs = 1"),
        ],
    );
    let api = s.served.api();
    let mut hogs = Vec::new();
    for i in 0..8 {
        let (api, token) = (api.fresh(), s.tokens[0].clone());
        hogs.push(tokio::spawn(async move {
            let db = format!("hog-{i}");
            pipeline(
                &api,
                &token,
                &db,
                None,
                json!([execute(&counting(1 << 40))]),
            )
            .await
        }));
    }
    // Let the hogs reach the server's threads first.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (answers, _) = results(
        &pipeline(
            &api.fresh(),
            &s.tokens[1],
            "calm-1",
            None,
            json!([execute(&counting(CALM_ROWS)), { "type": "close" }]),
        )
        .await,
    );
    assert_eq!(integer(&answers[0]), CALM_ROWS as i64, "{answers:?}");
    for hog in &hogs {
        assert!(
            !hog.is_finished(),
            "a hog ended before the other tenant was answered"
        );
    }
    for hog in &hogs {
        hog.abort();
    }
}

/// Rows of a counting CTE that takes a few tenths of a second alone.
const CALM_ROWS: u64 = 1_000_000;

/// A plugin call stopped at its time limit after its client hung up is
/// logged and counted once, as when the client waits (the log line was
/// written by the handler, which hyper drops on a hang-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_call_stopped_after_its_client_hung_up_is_logged() {
    let s = serve("", &[("gone", "time_limit_secs = 1")]);
    let api = s.served.api();
    let token = s.tokens[0].clone();
    let wasm = std::fs::read(donut_testkit::guest_path("donut-sql.wasm")).expect("component");
    let put = api.put_plugin(&token, "sql", &wasm).await;
    assert_eq!(put.status, 201, "{}", put.text());
    let create = api
        .send(
            "PUT",
            "/v1/databases/gone-1",
            Some(&token),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(create.status, 201, "{}", create.text());
    let (call_api, call_token) = (api.fresh(), token.clone());
    let call = tokio::spawn(async move {
        call_api
            .sql(&call_token, "sql", "gone-1", &counting(1 << 40))
            .await
    });
    // Hang up once the call runs.
    let mut polls = 0;
    while tenant_metric(&api, "donut_tenant_live_instances", "gone").await < 1.0 {
        polls += 1;
        assert!(polls < 600, "the call never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    call.abort();
    assert!(call.await.is_err_and(|e| e.is_cancelled()));
    let mut polls = 0;
    let stopped = |log: &str| {
        log.lines()
            .filter(|l| l.contains("stopped") && l.contains("time limit"))
            .count()
    };
    while stopped(&s.served.log_text()) == 0 {
        polls += 1;
        assert!(
            polls < 600,
            "no log line for the stopped call:\n{}",
            s.served.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stopped(&s.served.log_text()), 1, "{}", s.served.log_text());
    let metrics = api.get("/metrics", Some(OPERATOR_TOKEN)).await.text();
    assert!(
        metrics.contains("donut_limit_refusals_total{tenant=\"gone\",limit=\"time\"} 1"),
        "{metrics}"
    );
}
