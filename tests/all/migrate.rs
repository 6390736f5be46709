//! `donut-host migrate` from the Go DonutDB (docs/format.md, "Import from
//! the Go DonutDB"): the cases the real Go code cannot be made to write
//! on demand. Tables the real Go DonutDB wrote are tested in
//! `migrate_go.rs`; here SQLite files written by native SQLite are stored
//! in a dynoxide table by our own encoder of the Go layouts (`GoTable`,
//! checked against those real tables: v1 sectors rewritten in place under
//! `"sectors":null` metadata, v2 sectors `<index>__<sha512/256>`), for
//! raw sectors (what Go versions before zstd stored; 927d137 cannot),
//! several files in one table, and damaged sources (a missing v1 sector,
//! a v2 sector that is not zstd, a v2 sector whose bytes changed), which
//! are refused and write nothing. Each good file is migrated by the CLI
//! into a local store, pulled back and compared byte for byte with its
//! source, and the row counts the CLI prints are checked against native
//! SQLite.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use donut_testkit::{Dynoxide, dynamo_options, host_bin};
use sha2::{Digest, Sha512_256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

const TABLE: &str = "go-donutdb";

/// A Go DonutDB table, written as its VFS writes one.
struct GoTable {
    client: Client,
}

/// Which layout and sector size a fixture is stored in.
#[derive(Clone, Copy)]
struct Layout {
    version: u32,
    sector_size: usize,
    zstd: bool,
}

impl GoTable {
    async fn new(server: &Dynoxide) -> GoTable {
        let options = dynamo_options(&server.endpoint, TABLE);
        donut_host::backend::dynamo::create_table(&options)
            .await
            .expect("create the table");
        let (client, _) = donut_host::backend::dynamo::client(&options, Vec::new())
            .await
            .expect("client");
        GoTable { client }
    }

    async fn put_item(&self, item: HashMap<String, AttributeValue>) {
        self.client
            .put_item()
            .table_name(TABLE)
            .set_item(Some(item))
            .send()
            .await
            .expect("put item");
    }

    /// Stores `bytes` as file `name`: its sectors, then its entry in the
    /// file list. Returns the sectors' item keys, in order.
    async fn store(&self, name: &str, bytes: &[u8], layout: Layout) -> Vec<(String, u64)> {
        let rand_id = format!("rand{}", name.len());
        let mut keys = Vec::new();
        let mut ids = Vec::new();
        for (index, sector) in bytes.chunks(layout.sector_size).enumerate() {
            let stored = match layout.zstd {
                true => zstd::bulk::compress(sector, 1).expect("zstd"),
                false => sector.to_vec(),
            };
            let (hash_key, range) = match layout.version {
                1 => (
                    format!("file-v1-{rand_id}-{name}"),
                    (index * layout.sector_size) as u64,
                ),
                _ => {
                    let hash: String = Sha512_256::digest(sector)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let id = format!("{index}__{hash}");
                    ids.push(id.clone());
                    (format!("file-v2-{rand_id}-{name}-{id}"), 0)
                }
            };
            self.put_item(HashMap::from([
                ("hash_key".into(), AttributeValue::S(hash_key.clone())),
                ("range_key".into(), AttributeValue::N(range.to_string())),
                ("bytes".into(), AttributeValue::B(stored.into())),
            ]))
            .await;
            keys.push((hash_key, range));
        }
        // As the Go code marshals it: every field, v1 with a data row key
        // and `"file_size":0,"sectors":null`, v2 without a data row key.
        let v2 = layout.version == 2;
        let meta = serde_json::json!({
            "meta_version": layout.version,
            "sector_size": layout.sector_size,
            "orig_name": name,
            "rand_id": rand_id,
            "data_row_key": if v2 { String::new() } else { format!("file-v1-{rand_id}-{name}") },
            "lock_row_key": format!("lock-global-v1-{rand_id}-{name}"),
            "compress_alg": if layout.zstd { "zstd" } else { "" },
            "file_size": if v2 { bytes.len() } else { 0 },
            "sectors": if v2 { serde_json::json!(ids) } else { serde_json::Value::Null },
        });
        self.client
            .update_item()
            .table_name(TABLE)
            .key("hash_key", AttributeValue::S("file-meta-v1".into()))
            .key("range_key", AttributeValue::N("0".into()))
            .update_expression("SET #f = :m")
            .expression_attribute_names("#f", name)
            .expression_attribute_values(":m", AttributeValue::S(meta.to_string()))
            .send()
            .await
            .expect("file list");
        keys
    }
}

/// A SQLite file of two tables (`rows` rows of random blobs, and their
/// squares), its page size `page_size`; its bytes and row counts.
fn sqlite_fixture(dir: &Path, name: &str, rows: u32, page_size: u32) -> (Vec<u8>, [i64; 2]) {
    let path = dir.join(name);
    let db = rusqlite::Connection::open(&path).expect("open");
    db.execute_batch(&format!(
        "pragma page_size = {page_size}; pragma journal_mode = delete;
         create table blobs(id integer primary key, v blob, note text);
         create table squares(n integer, sq integer);
         with recursive c(x) as (select 1 union all select x + 1 from c where x < {rows})
         insert into blobs(v, note) select randomblob(300 + x % 700), 'row ' || x from c;
         insert into squares select id, id * id from blobs where id % 3 = 0;"
    ))
    .expect("fill");
    let count = |table: &str| -> i64 {
        db.query_row(&format!("select count(*) from {table}"), [], |r| r.get(0))
            .expect("count")
    };
    let counts = [count("blobs"), count("squares")];
    drop(db);
    (std::fs::read(&path).expect("read"), counts)
}

/// `donut-host` over local store `store` with dynoxide `server` as the
/// DynamoDB to migrate from (shared with `migrate_go`).
pub(crate) fn host(store: &Path, server: &Dynoxide, args: &[&str]) -> Output {
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

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Migrates `name`, pulls it back: the bytes must be `source`'s, and the
/// counts printed native SQLite's.
fn migrate_and_compare(
    store: &Path,
    server: &Dynoxide,
    name: &str,
    source: &[u8],
    counts: [i64; 2],
) {
    let out = host(
        store,
        server,
        &["migrate", "--from-table", TABLE, "--from-file", name],
    );
    assert!(
        out.status.success(),
        "migrate {name}: {}",
        text(&out.stderr)
    );
    let printed = text(&out.stdout);
    assert!(
        printed.contains(&format!("blobs\t{} rows", counts[0]))
            && printed.contains(&format!("squares\t{} rows", counts[1])),
        "{printed}"
    );
    assert!(
        text(&out.stderr).contains("integrity_check"),
        "{}",
        text(&out.stderr)
    );
    let pulled: PathBuf = store.join(format!("{name}.pulled"));
    let out = host(store, server, &["pull", name, pulled.to_str().unwrap()]);
    assert!(out.status.success(), "pull {name}: {}", text(&out.stderr));
    let bytes = std::fs::read(&pulled).unwrap();
    assert_eq!(bytes.len(), source.len(), "{name}: size");
    assert!(
        bytes == source,
        "{name}: the pulled file differs from the source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_donutdb_files_of_both_layouts_migrate_byte_for_byte() {
    let server = Dynoxide::start();
    let go = GoTable::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // (file, rows, page size, layout): four files in one table.
    let cases = [
        (
            "v1-4k.db",
            600,
            4096,
            Layout {
                version: 1,
                sector_size: 4096,
                zstd: true,
            },
        ),
        (
            "v1-64k-raw.db",
            900,
            4096,
            Layout {
                version: 1,
                sector_size: 65536,
                zstd: false,
            },
        ),
        (
            "v2-64k.db",
            900,
            4096,
            Layout {
                version: 2,
                sector_size: 65536,
                zstd: true,
            },
        ),
        (
            "v2-4k.db",
            600,
            1024,
            Layout {
                version: 2,
                sector_size: 4096,
                zstd: true,
            },
        ),
    ];
    let mut fixtures = Vec::new();
    for (name, rows, page_size, layout) in cases {
        let (bytes, counts) = sqlite_fixture(dir.path(), name, rows, page_size);
        go.store(name, &bytes, layout).await;
        fixtures.push((name, bytes, counts, layout));
    }
    // Sizes that exercise both ends: an exact multiple of the sector
    // size, and a partial last sector.
    assert_eq!(fixtures[0].1.len() % 4096, 0);
    assert_ne!(fixtures[1].1.len() % 65536, 0);
    assert_ne!(fixtures[2].1.len() % 65536, 0);
    for (name, bytes, counts, _) in &fixtures {
        migrate_and_compare(&store, &server, name, bytes, *counts);
    }
    // The source is untouched and a second migrate of the same file is
    // refused (the database exists), naming --to.
    let again = host(
        &store,
        &server,
        &["migrate", "--from-table", TABLE, "--from-file", "v1-4k.db"],
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--to"),
        "{}",
        text(&again.stderr)
    );
    let renamed = host(
        &store,
        &server,
        &[
            "migrate",
            "--from-table",
            TABLE,
            "--from-file",
            "v1-4k.db",
            "--to",
            "copy.db",
        ],
    );
    assert!(renamed.status.success(), "{}", text(&renamed.stderr));
    // A file that is not there: the error lists what is.
    let missing = host(
        &store,
        &server,
        &["migrate", "--from-table", TABLE, "--from-file", "nope.db"],
    );
    assert!(!missing.status.success());
    let err = text(&missing.stderr);
    assert!(
        err.contains("nope.db") && err.contains("v2-64k.db"),
        "{err}"
    );
}

/// A damaged source — a v1 sector missing in the middle, a v2 sector
/// whose bytes are not zstd, a v2 sector whose bytes were changed — is
/// refused with an error that says what is wrong, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_go_donutdb_file_is_refused_and_nothing_is_written() {
    let server = Dynoxide::start();
    let go = GoTable::new(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (bytes, _) = sqlite_fixture(dir.path(), "f.db", 600, 4096);
    let v1 = Layout {
        version: 1,
        sector_size: 4096,
        zstd: true,
    };
    let v2 = Layout { version: 2, ..v1 };
    let keys = go.store("hole.db", &bytes, v1).await;
    let (hash_key, range) = &keys[keys.len() / 2];
    go.client
        .delete_item()
        .table_name(TABLE)
        .key("hash_key", AttributeValue::S(hash_key.clone()))
        .key("range_key", AttributeValue::N(range.to_string()))
        .send()
        .await
        .unwrap();
    let keys = go.store("badzstd.db", &bytes, v2).await;
    let mut garbled = zstd::bulk::compress(&bytes[4096..8192], 1).unwrap();
    let at = garbled.len() / 2;
    garbled.truncate(at);
    go.put_item(HashMap::from([
        ("hash_key".into(), AttributeValue::S(keys[1].0.clone())),
        ("range_key".into(), AttributeValue::N("0".into())),
        ("bytes".into(), AttributeValue::B(garbled.into())),
    ]))
    .await;
    let keys = go.store("changed.db", &bytes, v2).await;
    let mut other = bytes[8192..12288].to_vec();
    other[100] ^= 0xff;
    go.put_item(HashMap::from([
        ("hash_key".into(), AttributeValue::S(keys[2].0.clone())),
        ("range_key".into(), AttributeValue::N("0".into())),
        (
            "bytes".into(),
            AttributeValue::B(zstd::bulk::compress(&other, 1).unwrap().into()),
        ),
    ]))
    .await;
    for (name, says) in [
        ("hole.db", "is missing"),
        ("badzstd.db", "does not decompress"),
        ("changed.db", "hashes to"),
    ] {
        let out = host(
            &store,
            &server,
            &["migrate", "--from-table", TABLE, "--from-file", name],
        );
        assert!(!out.status.success(), "{name} was accepted");
        let err = text(&out.stderr);
        assert!(
            err.contains(says) && err.contains("nothing was written"),
            "{name}: {err}"
        );
    }
    let listed = host(&store, &server, &["ls"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        !text(&listed.stdout).contains(".db"),
        "nothing was written: {}",
        text(&listed.stdout)
    );
}
