//! Reading a file the Go DonutDB stored (psanford/donutdb at 927d137), for
//! `donut-host migrate` (docs/format.md, "Import from the Go DonutDB").
//! Checked against tables the real Go code wrote
//! (tests/fixtures/go-donutdb).
//!
//! The Go VFS keeps one item per table, `hash_key = "file-meta-v1"`,
//! `range_key = 0`, with one string attribute per file: the file's name,
//! holding its metadata as JSON (`meta_version` 1 or 2, `sector_size`,
//! `orig_name`, `rand_id`, `data_row_key`, `lock_row_key`,
//! `compress_alg`, `file_size`, `sectors`; v1 writes `"file_size":0,
//! "sectors":null`). A v1 file's sectors are rewritten in place: items
//! `file-v1-<rand_id>-<orig_name>` whose sort key is the sector's byte
//! offset; the file ends where its last sector does (that sector may be
//! empty: a truncation to a sector boundary leaves one). A v2 file's
//! sectors are content-addressed: the metadata lists each sector's id,
//! `<index>__<hex of SHA-512/256 over the sector's bytes>`, stored at
//! `file-v2-<rand_id>-<orig_name>-<id>` (sort key 0); ids past
//! `file_size` are left there by a truncation and are not the file's.
//! Sector bytes are in the attribute `bytes`, one zstd frame each
//! (klauspost/compress; Go versions before compression stored them raw:
//! recognised by the absence of zstd's magic number).
//!
//! Nothing here writes: the source is read, every sector checked (v1:
//! contiguous offsets, full sectors but the last; v2: each id against its
//! index and bytes; both: the size), a file a Go process is writing is
//! refused (its lock row held, its metadata changed during the read, a
//! v1 sector changed between two reads, or a hot journal beside it), and
//! only a whole, checked file is returned.
//!
//! Why v1 is read twice. A v1 commit rewrites sectors in place, v1
//! metadata never changes, and the Go lock manager deletes its lock row
//! on unlock: a whole commit between two lock-row reads leaves no trace
//! in either, and one `Query` pass can return some sectors from before a
//! commit and some from after it (a state that never existed, and
//! `integrity_check` need not notice). So the sectors are read (pass A),
//! the lock row is checked (time M), and they are read again (pass B) and
//! compared, sector by sector, by SHA-512/256. A commit C that went
//! unnoticed would have to give pass A a mix: C wrote sector Y before A
//! read it and sector X after A read X. If C wrote X before B read X, B's
//! X differs from A's: refused. So C wrote X after B read it, and C's
//! writes span [A's read of Y, B's read of X], which contains M — but a
//! Go writer holds its lock row for its whole transaction, and the lock
//! row at M is not held (and equals the one before the read): no such C.
//! What remains is a sector written and then written back to the same
//! bytes between its two reads by two commits; every SQLite commit in
//! rollback-journal mode also bumps the change counter in the header
//! (sector 0, bytes 24..28), so sector 0 never returns to its bytes and
//! two such commits are seen there unless both wrote sector 0 outside
//! [A's read, B's read] of it — only a cache spill writes pages before
//! page 1, and it would have to restore a whole sector byte for byte.
//! The change counter alone would not do: a spilled transaction writes
//! other sectors before sector 0, and a commit can start between the
//! lock check and the read of sector 0. The cost: v1 is read twice.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::Deserialize;
use sha2::{Digest, Sha512_256};
use std::collections::HashMap;
use std::io::Write;

/// The item that lists the Go DonutDB's files.
pub const GO_META_KEY: &str = "file-meta-v1";
/// Largest sector size read. The Go default is 64 KiB, and the Go VFS
/// takes any size (`WithSectorSize` checks nothing): a sector is one
/// item, so DynamoDB's 400 KB item limit bounds only its compressed
/// bytes, and a 4 MiB sector of zstd fits when it compresses well. This
/// bounds migrate's memory per sector, not what Go may write.
pub const GO_SECTOR_BYTES_MAX: u64 = 64 << 20;
/// zstd's frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd's magic number as base64 text: bytes stored twice-encoded.
const ZSTD_MAGIC_BASE64: &[u8] = b"KLUv/";
/// Keys per `BatchGetItem`.
const BATCH_GET_MAX: usize = 100;
/// SQLite's suffix of a database's rollback journal.
const JOURNAL_SUFFIX: &str = "-journal";

/// Why a Go DonutDB file could not be read. Every variant names the table
/// and file.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "table {table:?} has no Go DonutDB file list (no item {GO_META_KEY:?}): is it a Go DonutDB table?"
    )]
    NoFileList { table: String },
    #[error("table {table:?} has no Go DonutDB file {name:?}; its files: {listed}")]
    NoFile {
        table: String,
        name: String,
        listed: String,
    },
    #[error(
        "the metadata of {name:?} in table {table:?} is not what the Go DonutDB writes: {detail}"
    )]
    BadMeta {
        table: String,
        name: String,
        detail: String,
    },
    #[error("{name:?} in table {table:?} is damaged: {detail}; nothing was written")]
    Damaged {
        table: String,
        name: String,
        detail: String,
    },
    #[error(
        "{name:?} in table {table:?} is in use by a Go DonutDB process: {detail}; nothing was written. Stop every Go DonutDB process using the table (or wait until it finishes), then migrate again"
    )]
    InUse {
        table: String,
        name: String,
        detail: String,
    },
    #[error(
        "{name:?} in table {table:?} has a hot rollback journal {journal:?} ({bytes} bytes): a Go DonutDB writer stopped mid-transaction and the file holds part of it; nothing was written. {}",
        advice(.meta_version)
    )]
    HotJournal {
        table: String,
        name: String,
        journal: String,
        bytes: u64,
        meta_version: u32,
    },
    #[error(
        "{name:?} in table {table:?} was left mid-transaction: Go DonutDB process {owner:?} stopped while it held the file's lock, and its journal {journal:?} is still listed (the Go VFS can store a transaction's database sectors before its journal); nothing was written. {}",
        advice(.meta_version)
    )]
    DeadWriter {
        table: String,
        name: String,
        journal: String,
        owner: String,
        meta_version: u32,
    },
    #[error(
        "{name:?} in table {table:?} is in WAL mode and its write-ahead log {wal:?} holds {bytes} bytes of transactions not in the file; nothing was written. The Go DonutDB cannot open a WAL database again (its VFS has no shared memory); to keep those transactions, pull both files with the Go DonutDB (`donutdb-cli pull`) as files named {name:?} and {wal:?} (without the leading /) in one directory, run `PRAGMA journal_mode=DELETE` on the database with sqlite3 (which checkpoints the WAL into it), and bring the result in with `donut-host push`"
    )]
    Wal {
        table: String,
        name: String,
        wal: String,
        bytes: u64,
    },
    #[error(
        "table {table:?} does not exist (in the account, Region and endpoint given); nothing was written"
    )]
    NoTable { table: String },
    #[error("{name:?} in table {table:?} is too large for migrate: {detail}; nothing was written")]
    TooLarge {
        table: String,
        name: String,
        detail: String,
    },
    #[error("reading table {table:?}: {detail}")]
    Dynamo { table: String, detail: String },
    #[error("writing the copy of {name:?}: {error}")]
    Io { name: String, error: std::io::Error },
}

/// What to do about a file a Go writer left mid-transaction, by layout.
/// v1 writes the journal through, so SQLite's rollback restores the last
/// commit. The Go v2 VFS buffers journal sectors until a sync SQLite
/// skips, so the journal can lack pages the file already holds: the
/// rollback leaves part of the transaction in the file (seen with a
/// killed writer: the "rolled back" file migrated with rows it never
/// committed).
fn advice(meta_version: &u32) -> &'static str {
    match meta_version {
        2 => {
            "The file may hold part of an uncommitted transaction that cannot be recovered exactly: the Go v2 VFS buffers journal sectors, so the journal may lack pages the file already holds, and opening it with the Go DonutDB (which rolls the journal back) can leave part of the transaction in place. Restore the table to a time before the writer stopped (a backup or point-in-time recovery) and migrate that; or, accepting that some uncommitted changes may remain, open it once with the Go DonutDB, check it (`pragma integrity_check`), then migrate again"
        }
        _ => {
            "Open the database once with the Go DonutDB (SQLite then rolls the journal back), then migrate again"
        }
    }
}

/// The Go DonutDB's metadata of one file (its `dynamo.FileMetaV1V2`).
#[derive(Debug, Clone, Deserialize)]
pub struct GoFileMeta {
    /// 0 or 1: v1 layout; 2: v2.
    pub meta_version: u32,
    /// Bytes per sector.
    pub sector_size: u64,
    /// The file's name (the attribute's).
    pub orig_name: String,
    /// The file's random id, part of every item key.
    pub rand_id: String,
    /// v1's sector key as written (the Go reader recomputes it from
    /// `rand_id` and `orig_name`, and so do we); empty in v2.
    #[serde(default)]
    pub data_row_key: String,
    /// The item a Go process holds while it uses the file.
    #[serde(default)]
    pub lock_row_key: String,
    /// `"zstd"`, or empty before compression existed.
    #[serde(default)]
    pub compress_alg: String,
    /// v2: the file's size in bytes (v1 writes 0).
    #[serde(default)]
    pub file_size: u64,
    /// v2: sector ids in file order, possibly followed by stale ones (v1
    /// writes `null`).
    #[serde(default)]
    pub sectors: Option<Vec<String>>,
}

/// What was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFileRead {
    /// 1 or 2.
    pub meta_version: u32,
    /// Bytes per sector.
    pub sector_size: u64,
    /// Sectors read.
    pub sectors: u64,
    /// The file's size.
    pub bytes: u64,
    /// The file's header says WAL mode (bytes 18 and 19 are 2) and the
    /// table holds no write-ahead log with anything in it: every commit
    /// is in the file (docs/format.md, "Import from the Go DonutDB").
    pub wal_mode: bool,
}

/// SQLite's header bytes 18 and 19 (write and read format version): 2 is
/// WAL mode.
const WAL_MODE_BYTES: std::ops::Range<usize> = 18..20;

/// The Go file `name` in `table`, written whole to `out`, checked; refused
/// if a Go process is using it (its lock row held before or after the
/// read, or changed during it; its metadata changed during the read; a v1
/// sector changed between its two reads; a hot rollback journal beside
/// it), or if it is in WAL mode with a write-ahead log holding
/// transactions. `progress(done, total)` in bytes (total 0 until v1's
/// size is known).
pub async fn read_go_file(
    client: &Client,
    table: &str,
    name: &str,
    out: &mut impl Write,
    mut progress: impl FnMut(u64, u64),
) -> Result<GoFileRead, MigrateError> {
    let (meta, meta_json) = read_meta(client, table, name).await?;
    let source = Source {
        client,
        table,
        name,
        meta: &meta,
    };
    let lock_before = source.lock_row().await?;
    source.refuse_if_held(&lock_before)?;
    source.refuse_if_unfinished(&lock_before).await?;
    let mut out = HeaderTee {
        out,
        header: Vec::new(),
    };
    let read = source.read(&mut out, &mut progress).await;
    // A writer at work explains whatever the read found (a sector gone, a
    // size that does not add up) before damage does.
    source.refuse_if_changed(&lock_before, &meta_json).await?;
    let (mut read, hashes) = read?;
    if let Some(hashes) = hashes {
        source.refuse_if_v1_changed(&hashes).await?;
        source.refuse_if_changed(&lock_before, &meta_json).await?;
    }
    read.wal_mode = out.header.get(WAL_MODE_BYTES) == Some(&[2, 2]);
    if read.wal_mode {
        source.refuse_if_wal_holds_commits().await?;
    }
    Ok(read)
}

/// Passes bytes to `out`, keeping the first [`WAL_MODE_BYTES`]`.end`.
struct HeaderTee<'a, W: Write> {
    out: &'a mut W,
    header: Vec<u8>,
}

impl<W: Write> Write for HeaderTee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        let want = WAL_MODE_BYTES.end.saturating_sub(self.header.len()).min(n);
        self.header.extend_from_slice(&buf[..want]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The file list of `table`: every Go DonutDB file's name.
pub async fn list_go_files(client: &Client, table: &str) -> Result<Vec<String>, MigrateError> {
    let item = meta_item(client, table).await?;
    let mut names: Vec<String> = item.keys().filter(|k| !is_key(k)).cloned().collect();
    names.sort();
    Ok(names)
}

fn is_key(attribute: &str) -> bool {
    attribute == "hash_key" || attribute == "range_key"
}

async fn meta_item(
    client: &Client,
    table: &str,
) -> Result<HashMap<String, AttributeValue>, MigrateError> {
    let out = client
        .get_item()
        .table_name(table)
        .key("hash_key", AttributeValue::S(GO_META_KEY.to_string()))
        .key("range_key", AttributeValue::N("0".to_string()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| dynamo_error(table, "GetItem", e))?;
    out.item.ok_or_else(|| MigrateError::NoFileList {
        table: table.to_string(),
    })
}

/// The metadata of `name`, and its JSON as stored.
async fn read_meta(
    client: &Client,
    table: &str,
    name: &str,
) -> Result<(GoFileMeta, String), MigrateError> {
    let item = meta_item(client, table).await?;
    let Some(value) = item.get(name) else {
        let mut listed: Vec<&str> = item
            .keys()
            .map(String::as_str)
            .filter(|k| !is_key(k))
            .collect();
        listed.sort_unstable();
        return Err(MigrateError::NoFile {
            table: table.to_string(),
            name: name.to_string(),
            listed: if listed.is_empty() {
                "none".to_string()
            } else {
                listed.join(", ")
            },
        });
    };
    let bad = |detail: String| MigrateError::BadMeta {
        table: table.to_string(),
        name: name.to_string(),
        detail,
    };
    let json = value
        .as_s()
        .map_err(|_| bad("not a string attribute".into()))?;
    let meta: GoFileMeta = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    if meta.orig_name != name {
        return Err(bad(format!("it names the file {:?}", meta.orig_name)));
    }
    if meta.sector_size == 0 {
        return Err(bad("sector_size 0".into()));
    }
    if meta.sector_size > GO_SECTOR_BYTES_MAX {
        return Err(MigrateError::TooLarge {
            table: table.to_string(),
            name: name.to_string(),
            detail: format!(
                "its sectors are {} bytes; migrate reads sectors of up to {GO_SECTOR_BYTES_MAX}",
                meta.sector_size
            ),
        });
    }
    if !matches!(meta.compress_alg.as_str(), "" | "zstd") {
        return Err(bad(format!("compress_alg {:?}", meta.compress_alg)));
    }
    Ok((meta, json.clone()))
}

fn dynamo_error<E, R>(table: &str, operation: &str, e: SdkError<E, R>) -> MigrateError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if e.code() == Some("ResourceNotFoundException") {
        return MigrateError::NoTable {
            table: table.to_string(),
        };
    }
    // One line (the SDK's detail goes to the debug log).
    let detail = format!(
        "{operation}: {}",
        crate::backend::dynamo::sdk_error_text(&e)
    );
    MigrateError::Dynamo {
        table: table.to_string(),
        detail,
    }
}

/// A Go lock row as read: its owner and deadline (µs since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockRow {
    owner_id: String,
    deadline_us: i64,
}

/// Keeps the first byte and the length of what is written (a journal's
/// hot-ness needs no more).
#[derive(Default)]
struct HeadAndLength {
    first: Option<u8>,
    length: u64,
}

impl Write for HeadAndLength {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.first.is_none() {
            self.first = buf.first().copied();
        }
        self.length += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One file being read.
struct Source<'a> {
    client: &'a Client,
    table: &'a str,
    name: &'a str,
    meta: &'a GoFileMeta,
}

impl Source<'_> {
    fn bad_meta(&self, detail: String) -> MigrateError {
        MigrateError::BadMeta {
            table: self.table.to_string(),
            name: self.name.to_string(),
            detail,
        }
    }

    fn damaged(&self, detail: String) -> MigrateError {
        MigrateError::Damaged {
            table: self.table.to_string(),
            name: self.name.to_string(),
            detail,
        }
    }

    fn in_use(&self, detail: String) -> MigrateError {
        MigrateError::InUse {
            table: self.table.to_string(),
            name: self.name.to_string(),
            detail,
        }
    }

    fn write(&self, out: &mut impl Write, bytes: &[u8]) -> Result<(), MigrateError> {
        out.write_all(bytes).map_err(|error| MigrateError::Io {
            name: self.name.to_string(),
            error,
        })
    }

    /// The file's bytes, by its layout; for v1 also each sector's
    /// SHA-512/256, to compare with a second read.
    async fn read(
        &self,
        out: &mut impl Write,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(GoFileRead, Option<Vec<[u8; 32]>>), MigrateError> {
        match self.meta.meta_version {
            0 | 1 => {
                let (read, hashes) = self.read_v1(out, progress).await?;
                Ok((read, Some(hashes)))
            }
            2 => Ok((self.read_v2(out, progress).await?, None)),
            v => Err(self.bad_meta(format!("meta_version {v}: only 1 and 2 exist"))),
        }
    }

    /// Refuses the file if its lock row is held now or differs from
    /// `lock_before`, or its metadata's JSON is not `meta_json`.
    async fn refuse_if_changed(
        &self,
        lock_before: &Option<LockRow>,
        meta_json: &str,
    ) -> Result<(), MigrateError> {
        let lock_now = self.lock_row().await?;
        self.refuse_if_held(&lock_now)?;
        if lock_now != *lock_before {
            return Err(self.in_use(format!(
                "its lock row {:?} changed while it was read",
                self.meta.lock_row_key
            )));
        }
        let (_, meta_json_now) = read_meta(self.client, self.table, self.name).await?;
        if meta_json_now != meta_json {
            return Err(self.in_use("its metadata changed while it was read".into()));
        }
        Ok(())
    }

    /// v1: reads every sector again and refuses the file unless each has
    /// the SHA-512/256 of its first read (why: the module's doc).
    async fn refuse_if_v1_changed(&self, first: &[[u8; 32]]) -> Result<(), MigrateError> {
        let mut second = Vec::with_capacity(first.len());
        self.read_v1_sectors(|_, plain| {
            second.push(sector_hash(plain));
            Ok(())
        })
        .await?;
        let size = self.meta.sector_size;
        if let Some(i) = (0..first.len().max(second.len())).find(|&i| first.get(i) != second.get(i))
        {
            return Err(self.in_use(format!(
                "its sector at offset {} changed while it was read (a Go writer committed; v1 rewrites sectors in place)",
                i as u64 * size
            )));
        }
        Ok(())
    }

    /// A file in WAL mode: refused if the table holds its write-ahead log
    /// (`NAME-wal`) with anything in it. A database closed cleanly in WAL
    /// mode has every commit checkpointed into the file and its WAL
    /// deleted (or emptied).
    async fn refuse_if_wal_holds_commits(&self) -> Result<(), MigrateError> {
        let wal = format!("{}-wal", self.name);
        let item = meta_item(self.client, self.table).await?;
        if !item.contains_key(&wal) {
            return Ok(());
        }
        let (meta, _) = read_meta(self.client, self.table, &wal).await?;
        let source = Source {
            name: &wal,
            meta: &meta,
            ..*self
        };
        let mut head = HeadAndLength::default();
        Box::pin(source.read(&mut head, &mut |_, _| {})).await?;
        if head.length == 0 {
            return Ok(());
        }
        Err(MigrateError::Wal {
            table: self.table.to_string(),
            name: self.name.to_string(),
            wal,
            bytes: head.length,
        })
    }

    /// The file's lock row, if there is one. A Go process holds it from
    /// its first SHARED lock to its last unlock (reader or writer),
    /// renewing `deadline_us` every 750 ms, 2 s ahead.
    async fn lock_row(&self) -> Result<Option<LockRow>, MigrateError> {
        if self.meta.lock_row_key.is_empty() {
            return Ok(None);
        }
        let out = self
            .client
            .get_item()
            .table_name(self.table)
            .key(
                "hash_key",
                AttributeValue::S(self.meta.lock_row_key.clone()),
            )
            .key("range_key", AttributeValue::N("0".to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error(self.table, "GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let owner_id = item
            .get("owner_id")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let deadline_us = item
            .get("deadline_us")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                self.in_use(format!(
                    "its lock row {:?} has no numeric deadline_us",
                    self.meta.lock_row_key
                ))
            })?;
        Ok(Some(LockRow {
            owner_id,
            deadline_us,
        }))
    }

    /// Refuses a lock row whose deadline has not passed. One whose
    /// deadline passed was left by a process that stopped; the Go VFS
    /// lets anyone take it, and so does migrate.
    fn refuse_if_held(&self, lock: &Option<LockRow>) -> Result<(), MigrateError> {
        let Some(lock) = lock else { return Ok(()) };
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(i64::MAX);
        if now_us > lock.deadline_us {
            return Ok(());
        }
        Err(self.in_use(format!(
            "its lock row {:?} is held by owner {:?} for another {} ms",
            self.meta.lock_row_key,
            lock.owner_id,
            (lock.deadline_us - now_us) / 1000
        )))
    }

    /// Refuses a file a Go writer left mid-transaction: its rollback
    /// journal (`NAME-journal`, listed only while a transaction runs in
    /// SQLite's default journal mode) is hot — not empty, header not
    /// zeroed — or is listed while a lock row of a process that died
    /// holding the lock remains. The second matters because the Go v2 VFS
    /// buffers the journal's sectors until a sync and SQLite skips that
    /// sync (the VFS reports SEQUENTIAL): database sectors of an open
    /// transaction can be in the table while its journal is still empty.
    async fn refuse_if_unfinished(&self, lock: &Option<LockRow>) -> Result<(), MigrateError> {
        let journal = format!("{}{JOURNAL_SUFFIX}", self.name);
        let item = meta_item(self.client, self.table).await?;
        if !item.contains_key(&journal) {
            return Ok(());
        }
        let (meta, _) = read_meta(self.client, self.table, &journal).await?;
        let source = Source {
            name: &journal,
            meta: &meta,
            ..*self
        };
        let mut head = HeadAndLength::default();
        if let Err(e) = Box::pin(source.read(&mut head, &mut |_, _| {})).await {
            return Err(self.in_use(format!("its journal {journal:?} is unreadable ({e})")));
        }
        if head.length > 0 && head.first != Some(0) {
            return Err(MigrateError::HotJournal {
                table: self.table.to_string(),
                name: self.name.to_string(),
                journal,
                bytes: head.length,
                meta_version: self.meta.meta_version.max(1),
            });
        }
        if let Some(lock) = lock {
            return Err(MigrateError::DeadWriter {
                table: self.table.to_string(),
                name: self.name.to_string(),
                journal,
                owner: lock.owner_id.clone(),
                meta_version: self.meta.meta_version.max(1),
            });
        }
        Ok(())
    }

    /// A sector's plain bytes from its stored ones.
    fn plain(&self, what: &str, stored: &[u8]) -> Result<Vec<u8>, MigrateError> {
        let compressed = self.meta.compress_alg == "zstd" || stored.starts_with(&ZSTD_MAGIC);
        if !compressed {
            return Ok(stored.to_vec());
        }
        let limit = self.meta.sector_size as usize;
        zstd::bulk::decompress(stored, limit).map_err(|e| {
            let hint = match stored.starts_with(ZSTD_MAGIC_BASE64) {
                true => " — its bytes are the base64 text of a zstd frame: the item was stored with its binary attribute encoded twice (a loader gave base64 text where the SDK expects raw bytes)",
                false => "",
            };
            self.damaged(format!("{what} does not decompress (zstd): {e}{hint}"))
        })
    }

    /// v1: the file, and each sector's SHA-512/256.
    async fn read_v1(
        &self,
        out: &mut impl Write,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(GoFileRead, Vec<[u8; 32]>), MigrateError> {
        let mut hashes = Vec::new();
        let (count, last_len) = self
            .read_v1_sectors(|at, plain| {
                self.write(out, plain)?;
                hashes.push(sector_hash(plain));
                progress(at + plain.len() as u64, 0);
                Ok(())
            })
            .await?;
        let size = self.meta.sector_size;
        let bytes = match count {
            0 => 0,
            n => (n - 1) * size + last_len,
        };
        let read = GoFileRead {
            meta_version: 1,
            sector_size: size,
            sectors: count,
            bytes,
            wal_mode: false,
        };
        Ok((read, hashes))
    }

    /// v1: each sector's offset and plain bytes to `each`, in offset
    /// order, by `Query` pages, checked; returns the sector count and the
    /// last sector's length.
    async fn read_v1_sectors(
        &self,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), MigrateError>,
    ) -> Result<(u64, u64), MigrateError> {
        let key = format!("file-v1-{}-{}", self.meta.rand_id, self.meta.orig_name);
        let size = self.meta.sector_size;
        let (mut offset, mut count, mut last_len) = (0u64, 0u64, size);
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(self.table)
                .key_condition_expression("hash_key = :k")
                .expression_attribute_values(":k", AttributeValue::S(key.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| dynamo_error(self.table, "Query", e))?;
            for item in page.items() {
                let at: u64 = item
                    .get("range_key")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| self.damaged("a sector without a numeric offset".into()))?;
                if last_len != size {
                    return Err(self.damaged(format!(
                        "the sector at {} holds {last_len} bytes, not {size}, and is not the last",
                        offset - size
                    )));
                }
                if at != offset {
                    return Err(self.damaged(format!(
                        "the sector at offset {offset} is missing (the next is at {at})"
                    )));
                }
                let stored = item
                    .get("bytes")
                    .and_then(|v| v.as_b().ok())
                    .ok_or_else(|| self.damaged(format!("the sector at {at} has no bytes")))?;
                let plain = self.plain(&format!("the sector at {at}"), stored.as_ref())?;
                // Only the last sector may be short, even empty: a v1
                // truncation to a sector boundary writes an empty sector
                // there (checked when the next one arrives).
                if plain.len() as u64 > size {
                    return Err(
                        self.damaged(format!("the sector at {at} holds {} bytes", plain.len()))
                    );
                }
                each(at, &plain)?;
                last_len = plain.len() as u64;
                offset += size;
                count += 1;
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok((count, last_len))
    }

    /// v2: the sectors the metadata lists, `BatchGetItem` 100 at a time.
    /// Ids past `file_size` are a truncation's leftovers (the Go VFS keeps
    /// them in the list and never reads them): not read.
    async fn read_v2(
        &self,
        out: &mut impl Write,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<GoFileRead, MigrateError> {
        let (size, total) = (self.meta.sector_size, self.meta.file_size);
        let expected = total.div_ceil(size);
        let listed = self.meta.sectors.as_deref().unwrap_or_default();
        if (listed.len() as u64) < expected {
            return Err(self.bad_meta(format!(
                "{} sectors listed for {total} bytes in sectors of {size}",
                listed.len()
            )));
        }
        let ids = &listed[..expected as usize];
        let prefix = format!("file-v2-{}-{}-", self.meta.rand_id, self.meta.orig_name);
        let mut written = 0u64;
        for (batch_no, batch) in ids.chunks(BATCH_GET_MAX).enumerate() {
            let found = self.batch_get(&prefix, batch).await?;
            for (i, id) in batch.iter().enumerate() {
                let index = batch_no * BATCH_GET_MAX + i;
                let what = format!("sector {index} ({id})");
                let Some(hash) = id.strip_prefix(&format!("{index}__")) else {
                    return Err(
                        self.bad_meta(format!("{what}: a sector id is <index>__<sha512/256 hex>"))
                    );
                };
                let stored = found
                    .get(id)
                    .ok_or_else(|| self.damaged(format!("{what} is missing")))?;
                let plain = self.plain(&what, stored)?;
                let actual: String = sector_hash(&plain)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if actual != hash {
                    return Err(self.damaged(format!("{what} hashes to {actual}")));
                }
                let want = (total - index as u64 * size).min(size);
                if plain.len() as u64 != want {
                    return Err(
                        self.damaged(format!("{what} holds {} bytes, not {want}", plain.len()))
                    );
                }
                self.write(out, &plain)?;
                written += plain.len() as u64;
                progress(written, total);
            }
        }
        Ok(GoFileRead {
            meta_version: 2,
            sector_size: size,
            sectors: expected,
            bytes: written,
            wal_mode: false,
        })
    }

    /// Stored bytes of the sectors `ids`, by id; unprocessed keys again.
    async fn batch_get(
        &self,
        prefix: &str,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<u8>>, MigrateError> {
        let mut keys: Vec<HashMap<String, AttributeValue>> = ids
            .iter()
            .map(|id| {
                HashMap::from([
                    (
                        "hash_key".to_string(),
                        AttributeValue::S(format!("{prefix}{id}")),
                    ),
                    ("range_key".to_string(), AttributeValue::N("0".to_string())),
                ])
            })
            .collect();
        let mut found = HashMap::new();
        let mut pause_ms = 25;
        while !keys.is_empty() {
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut keys)))
                .consistent_read(true)
                .build()
                .map_err(|e| MigrateError::Dynamo {
                    table: self.table.to_string(),
                    detail: format!("BatchGetItem: {e}"),
                })?;
            let out = self
                .client
                .batch_get_item()
                .request_items(self.table, request)
                .send()
                .await
                .map_err(|e| dynamo_error(self.table, "BatchGetItem", e))?;
            for item in out
                .responses()
                .and_then(|r| r.get(self.table))
                .into_iter()
                .flatten()
            {
                let key = item.get("hash_key").and_then(|v| v.as_s().ok());
                let bytes = item.get("bytes").and_then(|v| v.as_b().ok());
                if let (Some(key), Some(bytes)) = (key, bytes) {
                    let id = key.strip_prefix(prefix).unwrap_or(key).to_string();
                    found.insert(id, bytes.as_ref().to_vec());
                }
            }
            if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(self.table)) {
                keys = left.keys().to_vec();
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                pause_ms = (pause_ms * 2).min(2_000);
            }
        }
        Ok(found)
    }
}

/// SHA-512/256 of a sector's plain bytes (the Go v2 sector id's hash).
fn sector_hash(plain: &[u8]) -> [u8; 32] {
    Sha512_256::digest(plain).into()
}
