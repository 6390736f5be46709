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

/// The items of a fixture's JSON lines, by key (`hash_key`, `range_key`).
fn items_by_key(file: &str) -> HashMap<(String, String), HashMap<String, AttributeValue>> {
    let text = std::fs::read_to_string(fixtures().join(file)).expect("read the items");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let item = item_from_json(line);
            let key = |name: &str| match item.get(name) {
                Some(AttributeValue::S(s) | AttributeValue::N(s)) => s.clone(),
                other => panic!("key {name}: {other:?}"),
            };
            ((key("hash_key"), key("range_key")), item)
        })
        .collect()
}

/// Turns the table holding the items of `before` into the one holding
/// those of `after` (exported from the real Go DonutDB around one of its
/// commits), item for item as the Go VFS wrote them: puts what is new or
/// changed, and deletes what is gone unless `after` holds only the
/// commit's puts (`puts_only`).
async fn apply_go_commit(client: &Client, table: &str, before: &str, after: &str, puts_only: bool) {
    let (before, after) = (items_by_key(before), items_by_key(after));
    for (key, item) in &after {
        if before.get(key) != Some(item) {
            client
                .put_item()
                .table_name(table)
                .set_item(Some(item.clone()))
                .send()
                .await
                .expect("put an item");
        }
    }
    let gone = before
        .keys()
        .filter(|k| !puts_only && !after.contains_key(*k));
    for (hash_key, range_key) in gone {
        client
            .delete_item()
            .table_name(table)
            .key("hash_key", AttributeValue::S(hash_key.clone()))
            .key("range_key", AttributeValue::N(range_key.clone()))
            .send()
            .await
            .expect("delete an item");
    }
}

/// Reads `file` of the fixture table `table` (loaded from
/// `<table>.before.items.jsonl`) with a Go commit applied once, when
/// `progress` first reports `at` bytes or more: a deterministic
/// interleave of a live Go writer with migrate's read. The commit is
/// `<table>.after.items.jsonl` (the whole table after it) or, if that is
/// missing, `<table>.commit.items.jsonl` (the items it put).
async fn read_with_go_commit_at(
    table: &str,
    file: &str,
    at: u64,
) -> Result<Vec<u8>, donut_store::migrate::MigrateError> {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let before = format!("{table}.before.items.jsonl");
    let mut after = format!("{table}.after.items.jsonl");
    let puts_only = !fixtures().join(&after).exists();
    if puts_only {
        after = format!("{table}.commit.items.jsonl");
    }
    load(&client, table, &before, |_| {}).await;
    let runtime = tokio::runtime::Handle::current();
    let mut committed = false;
    let progress = |done: u64, _total: u64| {
        if !committed && done >= at {
            committed = true;
            tokio::task::block_in_place(|| {
                runtime.block_on(apply_go_commit(&client, table, &before, &after, puts_only))
            });
        }
    };
    let mut out = Vec::new();
    donut_store::migrate::read_go_file(&client, table, file, &mut out, progress).await?;
    assert!(committed, "the commit was applied during the read");
    Ok(out)
}

/// A Go v1 commit (`update acct set bal = bal + 1` of ids 1 and 1200,
/// on sectors 2 and 301 of a 1.2 MB file) lands after migrate read
/// sector 2, with sector 301 in its second `Query` page still to come: v1
/// rewrites sectors in place, the Go lock row is gone again after the
/// commit and v1 metadata never changes, so migrate returned id 1 from
/// before the commit and id 1200 from after it — `bal` 0 and 1, a state
/// that never existed — and `integrity_check` passed. Refused now (every
/// sector is read again and compared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_read_overlapping_a_go_commit_is_refused_not_torn() {
    match read_with_go_commit_at("go-v1-big", "/t.db", 3 * 4096).await {
        Ok(read) => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("read.sqlite");
            std::fs::write(&path, &read).unwrap();
            let out = std::process::Command::new("/usr/bin/sqlite3")
                .arg(&path)
                .arg("select group_concat(bal) from acct where id in (1, 1200)")
                .output()
                .expect("run /usr/bin/sqlite3");
            let bal = text(&out.stdout);
            assert!(
                bal == "0,0\n" || bal == "1,1\n",
                "migrate read bal {bal:?} of ids 1 and 1200: a state the Go writer never committed"
            );
            panic!("the read overlapped a commit: it must be refused");
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains("in use by a Go DonutDB process")
                    && message.contains("changed while it was read"),
                "{message}"
            );
        }
    }
}

/// A Go v2 commit that shrinks the file (`delete` and `vacuum`: 152
/// sectors to 22; the Go VFS deletes the sectors no longer listed) lands
/// after migrate's first `BatchGetItem`: the second found its sectors
/// gone and migrate called the file damaged ("sector 100 … is missing").
/// It is a writer at work: in use, not damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_file_shrunk_by_a_live_writer_is_in_use_not_damaged() {
    let err = read_with_go_commit_at("go-v2-shrink", "/s.db", 4096)
        .await
        .expect_err("the sectors listed when the read began are gone");
    let message = err.to_string();
    assert!(
        message.contains("in use by a Go DonutDB process") && !message.contains("damaged"),
        "{message}"
    );
}

/// A Go v2 writer killed mid-transaction (`pragma cache_size = 5`, an
/// update of every row, `kill -9`) leaves a hot journal. migrate's advice
/// was v1's — open it with the Go DonutDB, which rolls it back — but the
/// Go v2 VFS buffers journal sectors, so that rollback leaves part of the
/// uncommitted transaction in the file, and the next migrate imported
/// it. The v2 advice says the file cannot be recovered exactly; v1's
/// advice (it held) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_hot_journal_advice_does_not_promise_a_rollback() {
    let err = crash_fixture_refused("go-crash-v2-hot", |_| {}).await;
    assert!(
        err.contains("hot rollback journal")
            && err.contains("part of an uncommitted transaction")
            && err.contains("cannot be recovered exactly")
            && !err.contains("SQLite then rolls the journal back"),
        "{err}"
    );
    let err = crash_fixture_refused("go-crash-v1", |_| {}).await;
    assert!(err.contains("SQLite then rolls the journal back"), "{err}");
}

/// migrate checked that its database did not exist, then read the Go
/// file (minutes, for a large one), then pushed — and push swaps over
/// whatever version is there, so a database created meanwhile (another
/// migrate's, say) was replaced. `push_new` creates or fails: here the
/// database is created while its pages are stored, before the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_does_not_replace_a_database_created_during_its_read() {
    use donut_host::storage::{Stored, create_database, read_stored};
    let backend: std::sync::Arc<dyn donut_host::Backend> =
        std::sync::Arc::new(donut_host::MemoryBackend::new());
    let name = donut_format::DbName::new("t.db").unwrap();
    let file = fixtures().join("go-v1-default.file0.db.sqlite");
    let runtime = tokio::runtime::Handle::current();
    let mut created = None;
    let progress = |_: u64, _: u64| {
        if created.is_none() {
            created = Some(tokio::task::block_in_place(|| {
                runtime
                    .block_on(create_database(&*backend, &name, 8192))
                    .expect("create the database")
            }));
        }
    };
    let err = donut_host::transfer::push_new(backend.clone(), &name, &file, progress)
        .await
        .expect_err("the database was created during the push");
    assert!(err.to_string().contains("already exists"), "{err}");
    let Stored::Live(meta, root) = read_stored(&*backend, &name).await.unwrap() else {
        panic!("the database created during the push is gone");
    };
    let created = created.expect("the database was created");
    assert_eq!((meta.version, root.db_id), (created.version, created.db_id));
    assert_eq!(
        root.page_count, created.page_count,
        "nothing was overwritten"
    );
}

/// A Go v1 file whose second 64 KiB sector (pages 9-16 of the kv
/// b-tree) is zeros: structurally corrupt, yet every sector reads. It was
/// stored, and `integrity_check` failed only after the commit; now the
/// assembled file is checked first and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structurally_corrupt_go_file_is_refused_before_storing() {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let table = "go-v1-default";
    let mut zeroed = 0;
    load(&client, table, "go-v1-default.items.jsonl", |item| {
        let second = matches!(item.get("range_key"), Some(AttributeValue::N(n)) if n == "65536");
        if let (true, Some(AttributeValue::B(bytes))) = (second, item.get_mut("bytes")) {
            let plain = zstd::bulk::decompress(bytes.as_ref(), 65536).unwrap();
            let zeros = vec![0u8; plain.len()];
            *bytes = Blob::new(zstd::bulk::compress(&zeros, 3).unwrap());
            zeroed += 1;
        }
    })
    .await;
    assert_eq!(zeroed, 1);
    let args = ["migrate", "--from-table", table, "--from-file", "/file0.db"];
    let out = host(&store, &server, &args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("integrity_check") && err.contains("nothing was written"),
        "{err}"
    );
    let listed = host(&store, &server, &["ls"]);
    assert!(
        !text(&listed.stdout).contains("file0.db"),
        "a damaged file was stored: {}",
        text(&listed.stdout)
    );
}

/// migrate stopped by Ctrl-C left its full copy of the source in the
/// temporary directory. Here it waits on an endpoint that never answers
/// (a listener on 127.0.0.1 that accepts and stays silent); once its
/// temporary entry exists it gets SIGINT: it must say so and leave
/// nothing behind.
#[test]
fn interrupted_migrate_leaves_no_copy_behind() {
    interrupted_migrate_leaves_nothing("INT");
}

/// A closed terminal (SIGHUP) ended migrate with its copy left behind
/// (only SIGINT and SIGTERM were caught), and the directory holding the
/// copy and the check's store (rows in the clear) was 0755 under the
/// usual umask, not the private 0700 its docs promised.
#[test]
fn a_hung_up_migrate_leaves_no_copy_and_its_directory_was_private() {
    interrupted_migrate_leaves_nothing("HUP");
}

/// Runs a migrate that waits on a silent endpoint, checks its temporary
/// directory is private, sends it `signal`, and requires it to say so
/// and leave nothing behind.
fn interrupted_migrate_leaves_nothing(signal: &str) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        // Holds the first connections open, silent, until the test ends.
        let mut kept = Vec::new();
        for conn in silent.incoming().take(4).flatten() {
            kept.push(conn);
        }
        std::thread::sleep(std::time::Duration::from_secs(60));
    });
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let child = std::process::Command::new(donut_testkit::host_bin())
        .arg("--local")
        .arg(dir.path().join("store"))
        .args(["--endpoint", &endpoint, "--region", "us-east-1"])
        .args(["migrate", "--from-table", "go-t", "--from-file", "/a.db"])
        .env("TMPDIR", &tmp)
        .env("XDG_CACHE_HOME", dir.path().join("cache-home"))
        .env("AWS_ACCESS_KEY_ID", "donutdb")
        .env("AWS_SECRET_ACCESS_KEY", "donutdb")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run donut-host");
    let mut polls = 0;
    while std::fs::read_dir(&tmp).unwrap().next().is_none() {
        polls += 1;
        assert!(polls < 3000, "migrate made no temporary copy");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for entry in std::fs::read_dir(&tmp).unwrap().flatten() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{:?} is {mode:o}", entry.path());
    }
    let killed = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}; {err}");
    assert!(
        err.contains(&format!("SIG{signal}")) && err.contains("nothing was written"),
        "{err}"
    );
    drop(held);
}

/// A Go v2 file switched to WAL mode (`locking_mode = exclusive`, the
/// only way the Go VFS, which has no shared memory, takes WAL) and closed
/// cleanly: every commit is in the file, no write-ahead log is left, and
/// its header still says WAL (bytes 18 and 19 are 2). It was refused
/// with a message naming migrate's deleted temporary file; it migrates,
/// in rollback-journal mode (those two bytes 1, all else the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_file_in_wal_mode_closed_cleanly_migrates_in_rollback_mode() {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    load(&client, "go-wal-clean", "go-wal-clean.items.jsonl", |_| {}).await;
    let args = [
        "migrate",
        "--from-table",
        "go-wal-clean",
        "--from-file",
        "/w.db",
    ];
    let out = host(&store, &server, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pulled = dir.path().join("w.pulled");
    let out = host(&store, &server, &["pull", "w.db", pulled.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut want = std::fs::read(fixtures().join("go-wal-clean.w.db.sqlite")).unwrap();
    assert_eq!(&want[18..20], &[2, 2], "the Go file is in WAL mode");
    want[18..20].copy_from_slice(&[1, 1]);
    assert!(std::fs::read(&pulled).unwrap() == want, "bytes differ");
    let out = std::process::Command::new("/usr/bin/sqlite3")
        .arg(&pulled)
        .arg("select group_concat(x) from t; pragma journal_mode;")
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "1,2,3\ndelete\n");
}

/// A Go v1 writer in WAL mode that exited without closing: its
/// write-ahead log `/w.db-wal` (three sectors) holds the commits the file
/// lacks. Refused, naming the WAL and what to do; nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_file_with_a_wal_holding_commits_is_refused_naming_the_wal() {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    load(&client, "go-wal-left", "go-wal-left.items.jsonl", |_| {}).await;
    let args = [
        "migrate",
        "--from-table",
        "go-wal-left",
        "--from-file",
        "/w.db",
    ];
    let out = host(&store, &server, &args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("write-ahead log \"/w.db-wal\"")
            && err.contains("journal_mode=DELETE")
            && err.contains("nothing was written")
            && !err.contains("donut-migrate-"),
        "{err}"
    );
    let listed = host(&store, &server, &["ls"]);
    assert!(
        !text(&listed.stdout).contains("w.db"),
        "{}",
        text(&listed.stdout)
    );
}

/// A table that does not exist printed a multi-KB SDK dump; one line now.
/// A Go name with a directory cannot be a database name: say `--to`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_one_line_and_a_directory_name_asks_for_to() {
    let server = Dynoxide::start();
    let client = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let args = [
        "migrate",
        "--from-table",
        "no-such-table",
        "--from-file",
        "/a.db",
    ];
    let out = host(&store, &server, &args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("\"no-such-table\" does not exist") && err.trim().lines().count() <= 2,
        "{err}"
    );
    load(
        &client,
        "go-v2-default",
        "go-v2-default.items.jsonl",
        |_| {},
    )
    .await;
    let args = [
        "migrate",
        "--from-table",
        "go-v2-default",
        "--from-file",
        "/dir/a.db",
    ];
    let out = host(&store, &server, &args);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("--to"), "{err}");
}
