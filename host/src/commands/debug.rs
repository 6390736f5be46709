//! `donut-host debug …`: what is stored, decoded — a database's root, its
//! manifest, one sector — and checked: `verify` reads everything a root
//! reaches, `stats` counts the store's items by kind.

use super::{Env, db_ref};
use anyhow::{Context, Result, bail};
use donut_format::salt::{plain, salt_of};
use donut_format::{
    Chunk, ChunkKind, DbRef, Hash, Root, ZERO_HASH, format_utc_ms, hash_hex, verify,
};
use donut_host::storage::{read_root, read_root_at};
use donut_host::transfer::{page_hashes, verify_root};
use serde_json::json;
use std::io::Write;

#[derive(clap::Subcommand)]
pub enum Command {
    /// The decoded root of DB (or DB@VERSION / DB@TIME), as JSON.
    Root {
        /// The database, or DB@VERSION / DB@TIME.
        db: String,
    },
    /// Page number → hash for every page of DB, or only page N.
    Manifest {
        /// The database, or DB@VERSION / DB@TIME.
        db: String,
        /// One page (SQLite's numbering, from 1).
        #[arg(long)]
        page: Option<u32>,
    },
    /// One sector of DB by its hash: what it is, as JSON (`--raw`: its
    /// bytes on stdout).
    Sector {
        /// The database the sector belongs to.
        db: String,
        /// The sector's hash (64 hex digits, as `debug manifest` prints).
        hash: String,
        /// Print the sector's stored bytes instead of a description.
        #[arg(long)]
        raw: bool,
    },
    /// Reads every page and manifest chunk DB's root reaches and checks
    /// each against its hash; exit code 1 if one is missing or wrong.
    Verify {
        /// The database, or DB@VERSION / DB@TIME.
        db: String,
    },
    /// Items and bytes in the store, by kind (DynamoDB: a Scan of the
    /// table — for debugging, not for production paths).
    Stats,
}

pub async fn run(env: &Env, command: Command) -> Result<i32> {
    match command {
        Command::Root { db } => root(env, &db_ref(&db)?).await,
        Command::Manifest { db, page } => manifest(env, &db_ref(&db)?, page).await,
        Command::Sector { db, hash, raw } => sector(env, &db_ref(&db)?, &hash, raw).await,
        Command::Verify { db } => verify_db(env, &db_ref(&db)?).await,
        Command::Stats => stats(env).await,
    }
}

/// The root `db` names, with its stored body.
async fn read(env: &Env, db: &DbRef) -> Result<(Vec<u8>, Root)> {
    let (meta, root) = match db.at {
        None => read_root(&*env.backend, &db.name).await?,
        Some(at) => read_root_at(&*env.backend, &db.name, at).await?,
    };
    Ok((meta.body, root))
}

async fn root(env: &Env, db: &DbRef) -> Result<i32> {
    let (body, root) = read(env, db).await?;
    let format_version = body.get(8..10).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let overlay: Vec<_> = root
        .overlay
        .iter()
        .map(|(index, hash)| json!({"page": index + 1, "hash": hash_hex(hash)}))
        .collect();
    let doc = json!({
        "name": db.name.as_str(),
        "format_version": format_version,
        "bytes": body.len(),
        "db_id": root.db_id.hex(),
        "version": root.version,
        "page_size": root.page_size,
        "page_count": root.page_count,
        "file_size": root.file_size(),
        "commit_ms": root.commit_ms,
        "committed": format_utc_ms(root.commit_ms),
        "txn_id": format!("{:016x}", root.txn_id),
        "lease_required": root.lease_required,
        "tree": {"depth": root.tree.depth, "top": hash_hex(&root.tree.top)},
        "top_inline_bytes": root.top_inline.as_ref().map(Vec::len),
        "overlay": overlay,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

async fn manifest(env: &Env, db: &DbRef, page: Option<u32>) -> Result<i32> {
    let (_, root) = read(env, db).await?;
    let pages: Vec<u32> = match page {
        Some(0) => bail!("pages are numbered from 1"),
        Some(n) if n > root.page_count => {
            bail!("{} has {} pages; there is no page {n}", db, root.page_count)
        }
        Some(n) => vec![n - 1],
        None => (0..root.page_count).collect(),
    };
    let mut out = std::io::stdout().lock();
    for batch in pages.chunks(4096) {
        let hashes = page_hashes(env.backend.clone(), &root, batch).await?;
        for (index, hash) in batch.iter().zip(hashes) {
            let shown = match hash == ZERO_HASH {
                true => "zero".to_string(),
                false => hash_hex(&hash),
            };
            writeln!(out, "{} {shown}", index + 1)?;
        }
    }
    Ok(0)
}

fn parse_hash(text: &str) -> Result<Hash> {
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).unwrap_or("x"), 16))
        .collect::<Result<Vec<u8>, _>>();
    match bytes {
        Ok(bytes) if bytes.len() == 32 && text.len() == 64 => {
            Ok(bytes.try_into().expect("32 bytes"))
        }
        _ => bail!("{text:?} is not a hash: 64 hex digits"),
    }
}

async fn sector(env: &Env, db: &DbRef, hash: &str, raw: bool) -> Result<i32> {
    let hash = parse_hash(hash)?;
    let (_, root) = read(env, db).await?;
    let found = env.backend.get_sectors(root.db_id, &[hash]).await?;
    let Some(bytes) = found.into_iter().next().flatten() else {
        bail!(
            "no sector {} of {} (database id {}) in the {}",
            hash_hex(&hash),
            db,
            root.db_id.hex(),
            env.backend.describe()
        );
    };
    verify(&hash, &bytes).with_context(|| format!("sector {}", hash_hex(&hash)))?;
    if raw {
        std::io::stdout().lock().write_all(&bytes)?;
        return Ok(0);
    }
    // A salted sector says what it is; an older one is a chunk if it
    // decodes as one (a page is whatever SQLite wrote).
    let salt = salt_of(&bytes).with_context(|| format!("sector {}", hash_hex(&hash)))?;
    let plain_len = plain(&bytes).len();
    let decoded = match salt {
        Some(salt) if salt.level == 0 => Err(()),
        _ => Chunk::decode(&bytes).map_err(|_| ()),
    };
    let kind = match decoded {
        Ok(chunk) => {
            let entries = (0..donut_format::FANOUT)
                .filter(|&slot| chunk.entry(slot) != ZERO_HASH)
                .count();
            let kind = match chunk.kind() {
                ChunkKind::Leaf => "manifest leaf chunk",
                ChunkKind::Interior => "manifest interior chunk",
            };
            json!({"kind": kind, "level": chunk.level, "entries": entries})
        }
        Err(_) => {
            json!({"kind": "page", "page_size_matches": plain_len == root.page_size as usize})
        }
    };
    let salt = salt.map(|s| json!({"level": s.level, "slot": s.slot, "txn_id": s.txn_id}));
    let doc = json!({
        "hash": hash_hex(&hash),
        "bytes": bytes.len(),
        "hash_checked": true,
        "salt": salt,
        "sector": kind,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}

async fn verify_db(env: &Env, db: &DbRef) -> Result<i32> {
    let (_, root) = read(env, db).await?;
    match verify_root(env.backend.clone(), &root).await {
        Ok(checked) => {
            println!(
                "{db} version {}: ok — {} pages and {} manifest chunks read and checked, {} zero pages",
                root.version, checked.pages, checked.chunks, checked.zero_pages
            );
            Ok(0)
        }
        Err(e) => {
            println!("{db} version {}: damaged — {e}", root.version);
            Ok(1)
        }
    }
}

async fn stats(env: &Env) -> Result<i32> {
    let summary = env.backend.summary().await?;
    println!("{:<10} {:>12} {:>16}", "kind", "items", "bytes");
    for (kind, of_kind) in &summary.by_kind {
        println!(
            "{:<10} {:>12} {:>16}",
            kind.as_str(),
            of_kind.items,
            of_kind.bytes
        );
    }
    println!("{:<10} {:>12} {:>16}", "all", summary.items, summary.bytes);
    println!("largest item: {} bytes", summary.largest_item_bytes);
    Ok(0)
}
