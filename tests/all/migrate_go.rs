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

use crate::migrate::{host, text};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use donut_testkit::{Dynoxide, dynamo_options};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// Migrates `file` of `table` as `to` (default: the file's name without
/// its leading '/'), pulls it back, and requires the reference's bytes and
/// `.dump`.
fn migrate_matches(
    store: &Path,
    server: &Dynoxide,
    table: &str,
    file: &str,
    to: Option<&str>,
    reference: &str,
) {
    let mut args = vec!["migrate", "--from-table", table, "--from-file", file];
    args.extend(to.iter().flat_map(|to| ["--to", *to]));
    let to = to.unwrap_or(file.trim_start_matches('/'));
    let out = host(store, server, &args);
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
    let (got, want) = (
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&reference).unwrap(),
    );
    assert_eq!(got.len(), want.len(), "{table} {file}: size");
    assert!(
        got == want,
        "{table} {file}: bytes differ from {}",
        reference.display()
    );
    assert_eq!(dump(&pulled), dump(&reference), "{table} {file}: .dump");
}

/// Loads the fixture table `table` and migrates each `(file, reference)`
/// of it, each as a new database.
async fn table_migrates(table: &str, files: &[(&str, &str)]) {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let items = load(&client, table, &format!("{table}.items.jsonl"), |_| {}).await;
    assert!(items > files.len(), "{table}: {items} items");
    for (n, (file, reference)) in files.iter().enumerate() {
        // The first under its default name: the file's without its '/'.
        let to = match n {
            0 => None,
            _ => Some(format!("m{n}.db")),
        };
        migrate_matches(&store, &server, table, file, to.as_deref(), reference);
    }
}

/// v1 as the Go code writes it: the metadata says `"file_size":0,
/// "sectors":null` (it failed to parse: "expected a sequence"); sectors
/// keyed by byte offset under `file-v1-<rand_id>-<name>`, 64 KiB sectors,
/// 8 KiB pages, six full sectors and one of 8 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_go_v1_table_with_null_sectors_migrates() {
    table_migrates(
        "go-v1-default",
        &[("/file0.db", "go-v1-default.file0.db.sqlite")],
    )
    .await;
}

/// v2 as the Go code writes it: sector ids `<index>__<sha512/256 hex of
/// the bytes>` (we hashed `"<index>-"` and the bytes), one zstd frame each
/// from klauspost/compress, 21 stale sector items beside the 7 listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_go_v2_table_with_index_prefixed_sector_ids_migrates() {
    table_migrates(
        "go-v2-default",
        &[("/file0.db", "go-v2-default.file0.db.sqlite")],
    )
    .await;
}

/// 4 KiB sectors, two files per table. `/a.db` was VACUUMed after
/// deletes: in v1 that truncation leaves an empty sector at the new end
/// (offset 208896), in v2 it leaves 44 ids past `file_size` in the
/// metadata's list. `/b.db` has 1 KiB pages: 108544 bytes, half a sector
/// past the last full one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_go_4k_sector_tables_of_two_files_after_truncation_migrate() {
    let files = [
        ("/a.db", "go-4k.a.db.sqlite"),
        ("/b.db", "go-4k.b.db.sqlite"),
    ];
    table_migrates("go-v1-4k", &files).await;
    table_migrates("go-v2-4k", &files).await;
}

/// A Chinook-like file (Debian's sqlite3, 1 KiB pages, 389 KiB) pushed
/// the way `donutdb-cli push` does, as a v2 and a v1 file of one table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_go_pushed_v1_and_v2_files_of_one_table_migrate() {
    table_migrates(
        "go-push",
        &[
            ("/chinook-v2.db", "go-push.chinook.sqlite"),
            ("/chinook-v1.db", "go-push.chinook.sqlite"),
        ],
    )
    .await;
}

/// Runs migrate of `/c.db` in a crash fixture loaded through `edit`;
/// returns its stderr after checking it failed and wrote nothing.
async fn crash_fixture_refused(
    table: &str,
    edit: impl FnMut(&mut HashMap<String, AttributeValue>),
) -> String {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    load(&client, table, &format!("{table}.items.jsonl"), edit).await;
    let out = host(
        &store,
        &server,
        &[
            "migrate",
            "--from-table",
            table,
            "--from-file",
            "/c.db",
            "--to",
            "c.db",
        ],
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "{table}: migrated a file in use: {err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    let listed = host(&store, &server, &["ls"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        !text(&listed.stdout).contains("c.db"),
        "nothing was written: {}",
        text(&listed.stdout)
    );
    err
}

/// The Go writer's transaction is open (exported while it was): its lock
/// row's deadline, 2 s ahead when exported, is moved 10 minutes past now,
/// as a live writer keeps renewing it. Refused, naming the lock row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_go_writer_holds_is_refused() {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    for table in ["go-crash-v1", "go-crash-v2"] {
        let mut locks = 0;
        let err = crash_fixture_refused(table, |item| {
            if let Some(AttributeValue::N(deadline)) = item.get_mut("deadline_us") {
                *deadline = (now_us + 600_000_000).to_string();
                locks += 1;
            }
        })
        .await;
        assert_eq!(locks, 1, "{table}: the fixture holds one lock row");
        assert!(
            err.contains("in use by a Go DonutDB process") && err.contains("lock row"),
            "{table}: {err}"
        );
    }
}

/// The same tables as exported: the writer stopped with its transaction
/// open, its lock row's deadline long past. v1: its journal is hot (the
/// database holds part of the transaction); v2: the journal is listed but
/// still empty on DynamoDB (the Go VFS buffers it until a sync that
/// never came) while the database already holds uncommitted sectors, and
/// the lock row of the process that died is there. Both refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_go_writer_left_mid_transaction_is_refused() {
    let err = crash_fixture_refused("go-crash-v1", |_| {}).await;
    assert!(err.contains("hot rollback journal"), "{err}");
    let err = crash_fixture_refused("go-crash-v2", |_| {}).await;
    assert!(
        err.contains("stopped while it held") && err.contains("/c.db-journal"),
        "{err}"
    );
}

/// Sector bytes stored as their base64 text (what a loader does that
/// hands base64 strings to an SDK that encodes binary attributes itself;
/// this made v2 fail with "Unknown frame descriptor"): refused, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sector_bytes_stored_as_base64_text_are_named() {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    load(
        &client,
        "go-v2-default",
        "go-v2-default.items.jsonl",
        |item| {
            if let Some(AttributeValue::B(bytes)) = item.get_mut("bytes") {
                let text = base64::engine::general_purpose::STANDARD.encode(bytes.as_ref());
                *bytes = Blob::new(text.into_bytes());
            }
        },
    )
    .await;
    let out = host(
        &store,
        &server,
        &[
            "migrate",
            "--from-table",
            "go-v2-default",
            "--from-file",
            "/file0.db",
        ],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Unknown frame descriptor") && err.contains("encoded twice"),
        "{err}"
    );
}

/// A lock row whose deadline passed, with no journal listed, is what a Go
/// process that died outside a write transaction (a reader, or a writer
/// after its commit) leaves: the file is whole and migrates. The same row
/// with a deadline ahead is a live holder: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_readers_lock_row_does_not_stop_migrate_a_live_one_does() {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let table = "go-v2-default";
    load(&client, table, "go-v2-default.items.jsonl", |_| {}).await;
    // The key the file's metadata names.
    let lock_key = "lock-global-v1-LHaRr4jZuyDMPVwGtlmR443zf8g=-/file0.db";
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let put_lock = |deadline_us: u128| {
        client
            .put_item()
            .table_name(table)
            .item("hash_key", AttributeValue::S(lock_key.into()))
            .item("range_key", AttributeValue::N("0".into()))
            .item("owner_id", AttributeValue::S("0123456789abcdef".into()))
            .item("deadline_us", AttributeValue::N(deadline_us.to_string()))
            .send()
    };
    put_lock(now_us + 600_000_000)
        .await
        .expect("put the lock row");
    let args = ["migrate", "--from-table", table, "--from-file", "/file0.db"];
    let out = host(&store, &server, &args);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "migrated a file a live process holds"
    );
    assert!(err.contains("0123456789abcdef"), "{err}");
    put_lock(now_us - 60_000_000)
        .await
        .expect("put the lock row");
    migrate_matches(
        &store,
        &server,
        table,
        "/file0.db",
        None,
        "go-v2-default.file0.db.sqlite",
    );
}
