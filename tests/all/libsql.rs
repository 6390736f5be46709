//! The libSQL remote protocol (Hrana over HTTP, JSON) on `donut-host
//! serve`, spoken by hand over real HTTP: streams and batons, typed values,
//! batches with conditions, transactions across requests, stored SQL,
//! describe, and the protocol's errors. (The real `@libsql/client` suite
//! comes on top of this.)

use crate::util::host_bin;
use donut_host::service::config::{to_hex, token_sha256};
use donut_testkit::{Api, Reply, Served};
use serde_json::{Value, json};

struct Setup {
    _dir: tempfile::TempDir,
    served: Served,
    alpha: String,
    beta: String,
}

fn setup() -> Setup {
    let _ = host_bin();
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("[service]\nstream_idle_secs = 60\n");
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
    let store = dir.path().join("store").display().to_string();
    let served = Served::start(&config, &["--local".into(), store]);
    Setup {
        _dir: dir,
        served,
        alpha: tokens[0].clone(),
        beta: tokens[1].clone(),
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
        result["step_errors"][2]["code"], "SQLITE_CONSTRAINT",
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
