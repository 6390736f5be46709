//! `donut-host migrate` on tables the real Go DonutDB wrote
//! (psanford/donutdb 927d137; how each was made: tests/fixtures/go-donutdb/
//! README.md). Every fixture is a table exported item for item as DynamoDB
//! JSON lines, and for each file in it the SQLite file the Go VFS holds
//! (pulled through the Go VFS). A test loads the items into dynoxide with
//! aws-sdk-dynamodb, item for item, migrates every file with the CLI into
//! a local store, pulls it back, and requires both the same bytes and the
//! same `.dump` (Debian's `sqlite3`) as the reference file. Damaged and
//! edge cases written by our own encoder of the Go layouts stay in
//! `migrate.rs`.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use donut_testkit::{Dynoxide, dynamo_options, host_bin};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The fixtures' directory.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/go-donutdb")
}

/// One item of a fixture's JSON lines, as aws-sdk-dynamodb takes it.
fn item_from_json(line: &str) -> HashMap<String, AttributeValue> {
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).expect("a DynamoDB JSON item");
    json.into_iter()
        .map(|(name, typed)| {
            let (kind, value) = typed
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("one typed value");
            let text = value.as_str().expect("a string value").to_string();
            let value = match kind.as_str() {
                "S" => AttributeValue::S(text),
                "N" => AttributeValue::N(text),
                "B" => AttributeValue::B(Blob::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(&text)
                        .expect("base64"),
                )),
                other => panic!("attribute type {other} is not in the fixtures"),
            };
            (name, value)
        })
        .collect()
}

/// A client of `server`.
async fn client(server: &Dynoxide) -> Client {
    let options = dynamo_options(&server.endpoint, "unused");
    let (client, _) = donut_host::backend::dynamo::client(&options, Vec::new())
        .await
        .expect("client");
    client
}

/// Creates `table` as the Go DonutDB's (hash_key S, range_key N) and puts
/// every item of `file` (JSON lines), each through `edit` first. Returns
/// how many items were put.
async fn load(
    client: &Client,
    table: &str,
    file: &str,
    mut edit: impl FnMut(&mut HashMap<String, AttributeValue>),
) -> usize {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("hash_key", ScalarAttributeType::S))
        .attribute_definitions(attribute("range_key", ScalarAttributeType::N))
        .key_schema(key("hash_key", KeyType::Hash))
        .key_schema(key("range_key", KeyType::Range))
        .send()
        .await
        .expect("create the table");
    let text = std::fs::read_to_string(fixtures().join(file)).expect("read the items");
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut item = item_from_json(line);
        edit(&mut item);
        client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .expect("put an item");
        count += 1;
    }
    count
}

fn host(store: &Path, server: &Dynoxide, args: &[&str]) -> Output {
    std::process::Command::new(host_bin())
        .arg("--local")
        .arg(store)
        .args(["--endpoint", &server.endpoint, "--region", "us-east-1"])
        .args(args)
        .env("XDG_CACHE_HOME", store.join("cache-home"))
        .env("AWS_ACCESS_KEY_ID", "donutdb")
        .env("AWS_SECRET_ACCESS_KEY", "donutdb")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run donut-host")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `.dump` of the SQLite file at `path`, by Debian's sqlite3.
fn dump(path: &Path) -> String {
    let out = std::process::Command::new("/usr/bin/sqlite3")
        .arg(path)
        .arg(".dump")
        .output()
        .expect("run /usr/bin/sqlite3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Migrates `file` of `table` as `to`, pulls it back, and requires the
/// reference's bytes and `.dump`.
fn migrate_matches(store: &Path, server: &Dynoxide, table: &str, file: &str, to: &str, reference: &str) {
    let out = host(
        store,
        server,
        &["migrate", "--from-table", table, "--from-file", file, "--to", to],
    );
    assert!(
        out.status.success(),
        "migrate {file} of {table}: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("integrity_check of") && text(&out.stderr).contains(": ok"),
        "{}",
        text(&out.stderr)
    );
    let pulled = store.join(format!("{to}.pulled"));
    let out = host(store, server, &["pull", to, pulled.to_str().unwrap()]);
    assert!(out.status.success(), "pull {to}: {}", text(&out.stderr));
    let reference = fixtures().join(reference);
    let (got, want) = (std::fs::read(&pulled).unwrap(), std::fs::read(&reference).unwrap());
    assert_eq!(got.len(), want.len(), "{table} {file}: size");
    assert!(got == want, "{table} {file}: bytes differ from {}", reference.display());
    assert_eq!(dump(&pulled), dump(&reference), "{table} {file}: .dump");
}

/// The two tables of ../shared/fixtures/go-donutdb: v1 (its metadata
/// says `"file_size":0,"sectors":null`, its sectors are keyed by byte
/// offset) and v2 (content-addressed sectors `<index>__<sha512/256 hex>`,
/// 21 stale sector items beside the 8 the metadata lists), 64 KiB sectors,
/// 8 KiB pages, a file of 6 full sectors and one of 8 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_go_donutdb_default_tables_migrate_v1_and_v2() {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for version in ["v1", "v2"] {
        let table = format!("go-{version}-default");
        let items = load(&client, &table, &format!("{table}.items.jsonl"), |_| {}).await;
        assert!(items > 1, "{table}: {items} items");
        migrate_matches(
            &store,
            &server,
            &table,
            "/file0.db",
            &format!("{version}.db"),
            &format!("{table}.file0.db.sqlite"),
        );
    }
}
