//! Reading a file the Go DonutDB stored (psanford/donutdb), for
//! `donut-host migrate` (docs/format.md, "Import from the Go DonutDB").
//!
//! The Go VFS keeps one item per table, `hash_key = "file-meta-v1"`,
//! `range_key = 0`, with one string attribute per file: the file's name,
//! holding its metadata as JSON (`meta_version` 1 or 2, `sector_size`,
//! `orig_name`, `rand_id`, `compress_alg`; v2 also `file_size` and
//! `sectors`). A v1 file's sectors are rewritten in place: items
//! `file-v1-<rand_id>-<name>` whose sort key is the sector's byte offset;
//! the file ends where its last sector does. A v2 file's sectors are
//! content-addressed: the metadata lists each sector's id, the hex of
//! SHA-512/256 over `"<index>-"` and the sector's bytes, stored at
//! `file-v2-<rand_id>-<name>-<id>` (sort key 0). Sector bytes are in the
//! attribute `bytes`, zstd-compressed (Go versions before compression
//! stored them raw: recognised by the absence of zstd's magic number).
//!
//! Nothing here writes: the source is read, every sector checked (v1:
//! contiguous offsets, full sectors but the last; v2: each id against its
//! bytes; both: the size), and only a whole, checked file is returned.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::Deserialize;
use sha2::{Digest, Sha512_256};
use std::collections::HashMap;
use std::io::Write;

/// The item that lists the Go DonutDB's files.
pub const GO_META_KEY: &str = "file-meta-v1";
/// Largest sector size accepted (the Go default is 64 KiB; v1 once 128).
pub const GO_SECTOR_BYTES_MAX: u64 = 1 << 20;
/// zstd's frame magic number, little-endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Keys per `BatchGetItem`.
const BATCH_GET_MAX: usize = 100;

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
    #[error("reading table {table:?}: {detail}")]
    Dynamo { table: String, detail: String },
    #[error("writing the copy of {name:?}: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
}

/// The Go DonutDB's metadata of one file.
#[derive(Debug, Clone, Deserialize)]
pub struct GoFileMeta {
    pub meta_version: u32,
    pub sector_size: u64,
    pub orig_name: String,
    pub rand_id: String,
    #[serde(default)]
    pub compress_alg: String,
    #[serde(default)]
    pub file_size: u64,
    #[serde(default)]
    pub sectors: Vec<String>,
}

/// What was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFileRead {
    pub meta_version: u32,
    pub sector_size: u64,
    pub sectors: u64,
    pub bytes: u64,
}

/// The Go file `name` in `table`, written whole to `out`, checked.
/// `progress(done, total)` in bytes (total 0 until v1's size is known).
pub async fn read_go_file(
    client: &Client,
    table: &str,
    name: &str,
    out: &mut impl Write,
    mut progress: impl FnMut(u64, u64),
) -> Result<GoFileRead, MigrateError> {
    let meta = read_meta(client, table, name).await?;
    let source = Source {
        client,
        table,
        name,
        meta: &meta,
    };
    match meta.meta_version {
        0 | 1 => source.read_v1(out, &mut progress).await,
        2 => source.read_v2(out, &mut progress).await,
        v => Err(source.bad_meta(format!("meta_version {v}: only 1 and 2 exist"))),
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

async fn read_meta(client: &Client, table: &str, name: &str) -> Result<GoFileMeta, MigrateError> {
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
    if meta.sector_size == 0 || meta.sector_size > GO_SECTOR_BYTES_MAX {
        return Err(bad(format!("sector_size {}", meta.sector_size)));
    }
    if !matches!(meta.compress_alg.as_str(), "" | "zstd") {
        return Err(bad(format!("compress_alg {:?}", meta.compress_alg)));
    }
    Ok(meta)
}

fn dynamo_error(
    table: &str,
    operation: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> MigrateError {
    MigrateError::Dynamo {
        table: table.to_string(),
        detail: format!(
            "{operation}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        ),
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

    fn write(&self, out: &mut impl Write, bytes: &[u8]) -> Result<(), MigrateError> {
        out.write_all(bytes).map_err(|source| MigrateError::Io {
            name: self.name.to_string(),
            source,
        })
    }

    /// A sector's plain bytes from its stored ones.
    fn plain(&self, what: &str, stored: &[u8]) -> Result<Vec<u8>, MigrateError> {
        let compressed = self.meta.compress_alg == "zstd" || stored.starts_with(&ZSTD_MAGIC);
        if !compressed {
            return Ok(stored.to_vec());
        }
        let limit = self.meta.sector_size as usize;
        zstd::bulk::decompress(stored, limit)
            .map_err(|e| self.damaged(format!("{what} does not decompress (zstd): {e}")))
    }

    /// v1: the sectors in offset order, by `Query` pages.
    async fn read_v1(
        &self,
        out: &mut impl Write,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<GoFileRead, MigrateError> {
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
                if plain.is_empty() || plain.len() as u64 > size {
                    return Err(
                        self.damaged(format!("the sector at {at} holds {} bytes", plain.len()))
                    );
                }
                self.write(out, &plain)?;
                last_len = plain.len() as u64;
                offset += size;
                count += 1;
                progress(at + last_len, 0);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        let bytes = match count {
            0 => 0,
            n => (n - 1) * size + last_len,
        };
        Ok(GoFileRead {
            meta_version: 1,
            sector_size: size,
            sectors: count,
            bytes,
        })
    }

    /// v2: the sectors the metadata lists, `BatchGetItem` 100 at a time.
    async fn read_v2(
        &self,
        out: &mut impl Write,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<GoFileRead, MigrateError> {
        let (size, total) = (self.meta.sector_size, self.meta.file_size);
        let expected = total.div_ceil(size);
        if self.meta.sectors.len() as u64 != expected {
            return Err(self.bad_meta(format!(
                "{} sectors listed for {total} bytes in sectors of {size}",
                self.meta.sectors.len()
            )));
        }
        let prefix = format!("file-v2-{}-{}-", self.meta.rand_id, self.meta.orig_name);
        let mut written = 0u64;
        for (batch_no, batch) in self.meta.sectors.chunks(BATCH_GET_MAX).enumerate() {
            let found = self.batch_get(&prefix, batch).await?;
            for (i, id) in batch.iter().enumerate() {
                let index = batch_no * BATCH_GET_MAX + i;
                let what = format!("sector {index} ({id})");
                let stored = found
                    .get(id)
                    .ok_or_else(|| self.damaged(format!("{what} is missing")))?;
                let plain = self.plain(&what, stored)?;
                let mut hasher = Sha512_256::new();
                hasher.update(format!("{index}-").as_bytes());
                hasher.update(&plain);
                let actual: String = hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if actual != *id {
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
                .map_err(|e| dynamo_error(self.table, "BatchGetItem", e))?;
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
