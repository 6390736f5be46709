//! The libSQL remote protocol (Hrana over HTTP, JSON) on `donut-host
//! serve`, spoken by hand over real HTTP: streams and batons, typed values,
//! batches with conditions, transactions across requests, stored SQL,
//! describe, and the protocol's errors. (The real `@libsql/client` suite
//! comes on top of this.)

use crate::util::host_bin;
use donut_host::service::config::{to_hex, token_sha256};
use donut_testkit::{Api, Reply, Served};
use serde_json::{Value, json};
use std::collections::HashSet;

struct Setup {
    _dir: tempfile::TempDir,
    served: Served,
    alpha: String,
    beta: String,
}

fn setup() -> Setup {
    setup_on(None)
}

/// Two tenants served over a local store, or over `dynamo`'s table.
fn setup_on(dynamo: Option<&donut_testkit::Dynoxide>) -> Setup {
    let _ = host_bin();
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "[service]\nstream_idle_secs = 60\n{}",
        crate::util::operator_line()
    );
    let mut tokens = Vec::new();
    for name in ["alpha", "beta"] {
        let token = format!("libsql-{name}-{}", std::process::id());
        text.push_str(&format!(
            "\n[[tenant]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nprefixes = [\"{name}-\"]\n",
            to_hex(&token_sha256(&token))
        ));
        tokens.push(token);
    }
    let config = dir.path().join("tenants.toml");
    std::fs::write(&config, text).unwrap();
    let store = match dynamo {
        None => vec![
            "--local".into(),
            dir.path().join("store").display().to_string(),
        ],
        Some(dynamo) => [
            "--table",
            "donut-libsql",
            "--endpoint",
            &dynamo.endpoint,
            "--region",
            "us-east-1",
        ]
        .map(String::from)
        .to_vec(),
    };
    let served = Served::start(&config, &store);
    Setup {
        _dir: dir,
        served,
        alpha: tokens[0].clone(),
        beta: tokens[1].clone(),
    }
}

/// One tenant NAME (databases `NAME-*`) with `limits` appended to its
/// table, and `service` as the `[service]` table's keys, over a local
/// store: the directory to keep alive, the server, its token.
fn serve_one(name: &str, service: &str, limits: &str) -> (tempfile::TempDir, Served, String) {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("{name}-{}", std::process::id());
    let text = format!(
        "[service]\n{}{service}\n[[tenant]]\nname = \"{name}\"\ntoken_sha256 = \"{}\"\nprefixes = [\"{name}-\"]\n{limits}",
        crate::util::operator_line(),
        to_hex(&token_sha256(&token))
    );
    let config = dir.path().join("tenants.toml");
    std::fs::write(&config, text).unwrap();
    let store = dir.path().join("store").display().to_string();
    let served = Served::start(&config, &["--local".into(), store]);
    (dir, served, token)
}

/// A dynoxide with the table `setup_on` serves.
async fn dynoxide_table() -> donut_testkit::Dynoxide {
    let dynamo = donut_testkit::Dynoxide::start();
    let options = donut_testkit::dynamo_options(&dynamo.endpoint, "donut-libsql");
    donut_host::backend::dynamo::create_table(&options)
        .await
        .expect("create table");
    dynamo
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

fn execute(sql: &str, args: Value) -> Value {
    json!({ "type": "execute", "stmt": { "sql": sql, "args": args } })
}

/// The responses of a successful pipeline, and its baton.
fn ok(reply: &Reply) -> (Vec<Value>, Option<String>) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    let mut responses = Vec::new();
    for result in json["results"].as_array().expect("results") {
        assert_eq!(result["type"], "ok", "{json}");
        responses.push(result["response"].clone());
    }
    (responses, json["baton"].as_str().map(str::to_string))
}

fn rows(response: &Value) -> Vec<Value> {
    response["result"]["rows"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_runs_statements_with_typed_values_and_keeps_a_transaction_across_requests() {
    let s = setup();
    let api = s.served.api();
    assert_eq!(api.get("/db/alpha-1/v3", Some(&s.alpha)).await.status, 200);
    let values = json!([
        { "type": "integer", "value": "9007199254740993" },
        { "type": "float", "value": 1.5 },
        { "type": "text", "value": "héllo" },
        { "type": "blob", "base64": "AAH/" },
        { "type": "null" },
    ]);
    let reply = pipeline(
        &api,
        &s.alpha,
        "alpha-1",
        None,
        json!([
            execute("create table t(i integer, r real, x text, b blob, n)", json!([])),
            execute("insert into t values (?, ?, ?, ?, ?)", values.clone()),
            execute("select * from t", json!([])),
            { "type": "get_autocommit" },
            { "type": "close" },
        ]),
    )
    .await;
    let (responses, baton) = ok(&reply);
    assert_eq!(baton, None, "closed");
    assert_eq!(responses[1]["result"]["affected_row_count"], 1);
    assert_eq!(responses[1]["result"]["last_insert_rowid"], "1");
    assert_eq!(rows(&responses[2]), [values]);
    assert_eq!(
        responses[2]["result"]["cols"][0],
        json!({ "name": "i", "decltype": "INTEGER" })
    );
    assert_eq!(responses[3]["is_autocommit"], true);
    // A transaction over two requests, invisible to another stream until
    // its commit.
    let (_, baton) = ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-1",
        None,
        json!([
            { "type": "sequence", "sql": "begin; insert into t(i) values (2)" },
        ]),
    )
    .await);
    let baton = baton.expect("an open stream");
    let (other, _) = ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-1",
        None,
        json!([
            execute("select count(*) from t", json!([])), { "type": "close" },
        ]),
    )
    .await);
    assert_eq!(
        rows(&other[0]),
        [json!([{ "type": "integer", "value": "1" }])]
    );
    let (done, next) = ok(&pipeline(&api, &s.alpha, "alpha-1", Some(&baton), json!([
        { "type": "get_autocommit" },
        execute("commit", json!([])),
        { "type": "store_sql", "sql_id": 7, "sql": "select count(*) from t where i > ?" },
        { "type": "execute", "stmt": { "sql_id": 7, "args": [{ "type": "integer", "value": "0" }] } },
        { "type": "describe", "sql": "select x from t where i = :i" },
    ]))
    .await);
    assert_eq!(done[0]["is_autocommit"], false);
    assert_eq!(
        rows(&done[3]),
        [json!([{ "type": "integer", "value": "2" }])]
    );
    assert_eq!(done[4]["result"]["params"], json!([{ "name": ":i" }]));
    let next = next.expect("still open");
    assert_ne!(next, baton, "every answer names the stream anew");
    // The old baton is spent; the new one is the owner's alone.
    let spent = pipeline(
        &api,
        &s.alpha,
        "alpha-1",
        Some(&baton),
        json!([{ "type": "close" }]),
    )
    .await;
    assert_eq!(
        (spent.status, spent.json()["code"].as_str()),
        (400, Some("STREAM_EXPIRED"))
    );
    let stolen = pipeline(
        &api,
        &s.beta,
        "beta-1",
        Some(&next),
        json!([execute("select 1", json!([]))]),
    )
    .await;
    assert_eq!(stolen.status, 400, "{}", stolen.text());
    let (closing, gone) = ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-1",
        Some(&next),
        json!([{ "type": "close" }]),
    )
    .await);
    assert_eq!((closing.len(), gone), (1, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_conditions_is_atomic_and_errors_come_back_in_their_step() {
    let s = setup();
    let api = s.served.api();
    ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-b",
        None,
        json!([
            execute("create table kv(k text primary key, v)", json!([])), { "type": "close" },
        ]),
    )
    .await);
    // What `@libsql/client` sends for batch(..., "write"): begin, each
    // step if the one before succeeded, commit if the last did, rollback
    // otherwise.
    let step = |sql: &str, after: usize| json!({ "stmt": { "sql": sql }, "condition": { "type": "ok", "step": after } });
    let batch = json!({ "steps": [
        { "stmt": { "sql": "begin" } },
        step("insert into kv values ('a', 1)", 0),
        step("insert into kv values ('a', 2)", 1),
        step("insert into kv values ('b', 3)", 2),
        step("commit", 3),
        { "stmt": { "sql": "rollback" }, "condition": { "type": "not", "cond": { "type": "ok", "step": 4 } } },
    ]});
    let (responses, _) = ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-b",
        None,
        json!([
            { "type": "batch", "batch": batch },
            execute("select count(*) from kv", json!([])),
            { "type": "close" },
        ]),
    )
    .await);
    let result = &responses[0]["result"];
    assert!(result["step_results"][1].is_object());
    assert_eq!(
        result["step_errors"][2]["code"], "SQLITE_CONSTRAINT_PRIMARYKEY",
        "{result}"
    );
    assert!(
        result["step_results"][3].is_null() && result["step_errors"][3].is_null(),
        "skipped"
    );
    assert!(
        result["step_results"][5].is_object(),
        "rolled back: {result}"
    );
    assert_eq!(
        rows(&responses[1]),
        [json!([{ "type": "integer", "value": "0" }])]
    );
    let reply = pipeline(
        &api,
        &s.alpha,
        "alpha-b",
        None,
        json!([execute("selec 1", json!([]))]),
    )
    .await;
    let json = reply.json();
    assert_eq!(json["results"][0]["type"], "error");
    assert_eq!(json["results"][0]["error"]["code"], "SQLITE_ERROR");
    // Bad input: the protocol's errors, and the server keeps serving.
    let bad = api
        .send(
            "POST",
            "/db/alpha-b/v3/pipeline",
            Some(&s.alpha),
            None,
            br#"{"requests": 1}"#.to_vec(),
        )
        .await;
    assert_eq!(bad.status, 400);
    let theirs = pipeline(
        &api,
        &s.alpha,
        "beta-1",
        None,
        json!([execute("select 1", json!([]))]),
    )
    .await;
    assert_eq!(theirs.status, 403, "{}", theirs.text());
    let unknown = pipeline(&api, &s.alpha, "alpha-b", Some("feedface"), json!([])).await;
    assert_eq!(unknown.status, 400);
    let none = pipeline(&api, "wrong", "alpha-b", None, json!([])).await;
    assert_eq!(none.status, 401);
    ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-b",
        None,
        json!([execute("select 1", json!([])), { "type": "close" }]),
    )
    .await);
}

/// A Hrana value as `donut-host sql --format json` prints it: integers as
/// numbers, blobs as lowercase hex.
fn as_cli_json(value: &Value) -> Value {
    match value["type"].as_str() {
        Some("integer") => json!(value["value"].as_str().unwrap().parse::<i64>().unwrap()),
        Some("float") => value["value"].clone(),
        Some("text") => value["value"].clone(),
        Some("blob") => {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value["base64"].as_str().unwrap())
                .unwrap();
            json!(to_hex(&bytes))
        }
        Some("null") => Value::Null,
        other => panic!("not a Hrana value: {other:?} in {value}"),
    }
}

/// Runs `sql` with the CLI on database `db` of the local store `store`.
fn cli_sql(store: &std::path::Path, db: &str, sql: &str) -> Value {
    let out = std::process::Command::new(host_bin())
        .arg("--local")
        .arg(store)
        .args(["sql", db, sql, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The same statements through Hrana and through `donut-host sql` give the
/// same rows: every value type, joins, aggregates, windows, JSON, integer
/// edges, a generated series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hrana_and_the_cli_give_the_same_rows() {
    let s = setup();
    let api = s.served.api();
    let schema = "create table p(id integer primary key, name text, score real, data blob, big integer, note);
        insert into p values
          (1, 'Ada', 9.5, x'00ff10', 9007199254740993, null),
          (2, 'Grace', -1.25, zeroblob(3), -9223372036854775808, 'x'),
          (3, 'héllo ✓', 0.5, x'', 9223372036854775807, 7),
          (4, null, 1e300, null, 0, 2.5);
        create table q(p_id integer, tag text);
        insert into q values (1, 'a'), (1, 'b'), (2, 'a'), (3, 'c');";
    let queries = [
        "select * from p order by id",
        "select p.id, name, count(tag) as tags, group_concat(tag, ',') as all_tags from p left join q on q.p_id = p.id group by p.id order by p.id",
        "select id, typeof(data) as t, length(data) as l, hex(data) as h from p order by id",
        "select id, sum(score) over (order by id) as running, rank() over (order by name) as r from p order by id",
        "select json_object('id', id, 'name', name) as j, json_array(big, note) as a from p order by id",
        "select id, big / 3 as third, big % 7 as rest, score * 2 as doubled, -big as negated from p where id <> 2 order by id",
        "select 1 / 2 as i, 1.0 / 4 as r, 'it''s' as s, null as n, x'cafe' as b, 9007199254740993 + 2 as past_2_53",
        "with recursive c(i) as (select 1 union all select i + 1 from c where i < 50) select i, i * i as sq, printf('%05d', i) as f from c",
        "select * from p where id > 100",
    ];
    let store = tempfile::tempdir().unwrap();
    let create = std::process::Command::new(host_bin())
        .arg("--local")
        .arg(store.path())
        .args(["create", "d.db"])
        .output()
        .unwrap();
    assert!(create.status.success());
    cli_sql(store.path(), "d.db", schema);
    let mut requests = vec![json!({ "type": "sequence", "sql": schema })];
    requests.extend(queries.iter().map(|q| execute(q, json!([]))));
    requests.push(json!({ "type": "close" }));
    let (responses, _) = ok(&pipeline(&api, &s.alpha, "alpha-diff", None, json!(requests)).await);
    for (query, response) in queries.iter().zip(&responses[1..]) {
        let names: Vec<&str> = response["result"]["cols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let hrana: Vec<Value> = rows(response)
            .iter()
            .map(|row| {
                let values = row.as_array().unwrap().iter().map(as_cli_json);
                Value::Object(names.iter().map(|n| n.to_string()).zip(values).collect())
            })
            .collect();
        let cli = cli_sql(store.path(), "d.db", query);
        assert_eq!(json!(hrana), cli, "{query}");
    }
}

/// `donut_storage_round_trips_total` now: requests the host sent to storage.
async fn storage_round_trips(api: &Api) -> f64 {
    let metrics = api
        .get("/metrics", Some(crate::util::OPERATOR_TOKEN))
        .await
        .text();
    metrics
        .lines()
        .find(|l| l.starts_with("donut_storage_round_trips_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no storage round trips in:\n{metrics}"))
}

/// A request that opens a stream uses the root read at open for its first
/// statement, as the CLI does (BENCHMARKS.md, W1 and W3): on DynamoDB a
/// warm point select is one storage round trip, an insert two (the root
/// read and the one-request commit). Before, the session spent that root on
/// opening and every request paid one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hrana_read_costs_one_storage_round_trip_and_an_insert_two() {
    let dynamo = dynoxide_table().await;
    let s = setup_on(Some(&dynamo));
    let api = s.served.api();
    let one = |sql: &str| json!([execute(sql, json!([])), { "type": "close" }]);
    ok(&pipeline(&api, &s.alpha, "alpha-c", None, json!([
        { "type": "sequence", "sql": "create table t(k integer primary key, v); insert into t values (1, 'one')" },
        { "type": "close" },
    ]))
    .await);
    // Warm the host's sector cache.
    ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-c",
        None,
        one("select v from t where k = 1"),
    )
    .await);
    let before = storage_round_trips(&api).await;
    let (read, _) = ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-c",
        None,
        one("select v from t where k = 1"),
    )
    .await);
    assert_eq!(
        rows(&read[0]),
        [json!([{ "type": "text", "value": "one" }])]
    );
    let after_read = storage_round_trips(&api).await;
    ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-c",
        None,
        one("insert into t values (2, 'two')"),
    )
    .await);
    let after_insert = storage_round_trips(&api).await;
    assert_eq!(
        (after_read - before, after_insert - after_read),
        (1.0, 2.0),
        "storage round trips of a warm read and an insert"
    );
}

/// A stream kept past the request that opened it reads the root again in
/// its next request: a commit another server made between the two requests
/// is visible (the root read at open stands in only for the opening
/// request; a commit on the same host was caught already, the host having
/// seen its version). Without `Session::settle` the later request read the
/// root of the open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_request_on_a_stream_sees_a_commit_another_server_made_since_it_opened() {
    let dynamo = dynoxide_table().await;
    let (s, other) = (setup_on(Some(&dynamo)), setup_on(Some(&dynamo)));
    let (api, other_api) = (s.served.api(), other.served.api());
    let fresh = || execute("pragma donut_open_root_fresh", json!([]));
    ok(&pipeline(
        &api,
        &s.alpha,
        "alpha-f",
        None,
        json!([
            { "type": "sequence", "sql": "create table t(k integer primary key)" },
            { "type": "close" },
        ]),
    )
    .await);
    for round in 0..5 {
        // Opened, nothing read yet; then the other server commits; then the
        // first stream's next request, well within 100 ms of its opening.
        let (opening, baton) =
            ok(&pipeline(&api, &s.alpha, "alpha-f", None, json!([fresh()])).await);
        assert_eq!(
            rows(&opening[0]),
            [json!([{ "type": "text", "value": "1" }])]
        );
        ok(&pipeline(&other_api, &other.alpha, "alpha-f", None, json!([
            execute("insert into t values (?)", json!([{ "type": "integer", "value": round.to_string() }])),
            { "type": "close" },
        ]))
        .await);
        let (seen, _) = ok(&pipeline(
            &api,
            &s.alpha,
            "alpha-f",
            baton.as_deref(),
            json!([
                fresh(),
                execute("select count(*) from t", json!([])),
                { "type": "close" },
            ]),
        )
        .await);
        assert_eq!(
            rows(&seen[0]),
            [json!([{ "type": "text", "value": "0" }])],
            "round {round}"
        );
        assert_eq!(
            rows(&seen[1]),
            [json!([{ "type": "integer", "value": (round + 1).to_string() }])],
            "round {round}"
        );
    }
}

/// A tenant's per-call storage limits apply to each request on a stream,
/// not to the stream's life: 25 small requests pass (together past the
/// limit), one that asks too
/// much is stopped (the protocol's error, nothing of it stored) and its
/// stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_call_storage_limit_applies_to_each_request_on_a_stream() {
    let (_dir, served, token) = serve_one("gamma", "", "sectors_max = 40\n");
    let api = served.api();
    let (_, mut baton) = ok(&pipeline(
        &api,
        &token,
        "gamma-q",
        None,
        json!([execute("create table t(x)", json!([])),]),
    )
    .await);
    for i in 0..25 {
        let (_, next) = ok(&pipeline(
            &api,
            &token,
            "gamma-q",
            baton.as_deref(),
            json!([execute(
                "insert into t values (?)",
                json!([{ "type": "integer", "value": i.to_string() }])
            ),]),
        )
        .await);
        baton = next;
    }
    let big = pipeline(
        &api,
        &token,
        "gamma-q",
        baton.as_deref(),
        json!([execute(
            "with recursive c(i) as (select 1 union all select i + 1 from c where i < 100) insert into t select randomblob(4000) from c",
            json!([])
        ),]),
    )
    .await;
    let json = big.json();
    assert_eq!(json["results"][0]["type"], "error", "{json}");
    assert_eq!(
        json["results"][0]["error"]["code"], "LIMIT_SECTORS",
        "{json}"
    );
    assert!(json["baton"].is_null(), "the stopped stream ended: {json}");
    let (count, _) = ok(&pipeline(
        &api,
        &token,
        "gamma-q",
        None,
        json!([
            execute("select count(*) from t", json!([])), { "type": "close" },
        ]),
    )
    .await);
    assert_eq!(
        rows(&count[0]),
        [json!([{ "type": "integer", "value": "25" }])]
    );
}

/// An idle stream expires and frees its tenant's slot: with one stream
/// allowed, a second is refused while the first is open, its baton is
/// refused once it expired, and a new stream opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_expires_and_frees_its_slot() {
    let (_dir, served, token) = serve_one(
        "delta",
        "stream_idle_secs = 0.2\nstreams_per_tenant_max = 1\n",
        "",
    );
    let api = served.api();
    let begin = json!([{ "type": "sequence", "sql": "create table if not exists t(x); begin; insert into t values (1)" }]);
    let (_, baton) = ok(&pipeline(&api, &token, "delta-i", None, begin.clone()).await);
    let second = pipeline(&api, &token, "delta-i", None, json!([{ "type": "close" }])).await;
    assert_eq!(
        (second.status, second.json()["code"].as_str()),
        (429, Some("STREAMS_LIMIT"))
    );
    // The sweep runs every second; the stream is idle after 0.2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let expired = loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let log = served.log_text();
        if log.contains("idle libSQL streams closed") || std::time::Instant::now() > deadline {
            break log.contains("idle libSQL streams closed");
        }
    };
    assert!(expired, "no stream expired:\n{}", served.log_text());
    let stale = pipeline(
        &api,
        &token,
        "delta-i",
        baton.as_deref(),
        json!([{ "type": "close" }]),
    )
    .await;
    assert_eq!(
        (stale.status, stale.json()["code"].as_str()),
        (400, Some("STREAM_EXPIRED"))
    );
    // Its transaction never committed; the slot is free again.
    let (count, _) = ok(&pipeline(
        &api,
        &token,
        "delta-i",
        None,
        json!([
            execute("select count(*) from t", json!([])), { "type": "close" },
        ]),
    )
    .await);
    assert_eq!(
        rows(&count[0]),
        [json!([{ "type": "integer", "value": "0" }])]
    );
}

/// Hrana streams draw different random numbers and keys: each stream is
/// its own instance, and SQLite in it seeds from `wasi:random` (it seeded
/// from the time in seconds, so streams opened within a second made the
/// same `randomblob` keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hrana_streams_draw_different_random_numbers() {
    let (_dir, served, token) = serve_one("rho", "", "");
    let api = served.api();
    let mut draws = HashSet::new();
    for _ in 0..4 {
        let (responses, _) = ok(&pipeline(
            &api,
            &token,
            "rho-r",
            None,
            json!([
                execute("select hex(randomblob(16)), random()", json!([])),
                { "type": "close" },
            ]),
        )
        .await);
        let row = rows(&responses[0]);
        assert!(
            draws.insert(row[0].to_string()),
            "a draw repeated: {row:?} in {draws:?}"
        );
    }
}
