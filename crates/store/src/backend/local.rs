//! The local embedded backend: a directory, so everything runs with no AWS
//! account. Layout (docs/format.md, "Local backend"):
//!
//! - `DONUTDB`: marker naming the layout version;
//! - `meta/<kind>-<sha256(name)>`: one file per root or lock, replaced by
//!   write-temp + fsync + rename + fsync(dir) under `meta.lock` (an exclusive
//!   file lock, so several processes can share the directory);
//! - `history/<sha256(name)>/<version>`: every root written, in the meta
//!   file format, written before the root swap under the same lock (a
//!   version past the current root is a swap that never happened: ignored,
//!   and overwritten by the next commit);
//! - `packs/<random>.pack`: every `put-sectors` call writes one pack the same
//!   crash-safe way (one fsync per call, not per sector). Packs are
//!   immutable; an in-memory index of them is built at open and refreshed
//!   when a sector is missing (another process may have written it).

use super::{
    Backend, BackendError, Commit, Fence, ITEM_BYTES_MAX, ItemKind, Meta, MetaKind, PutMetaError,
    StoredSummary,
};
use async_trait::async_trait;
use donut_format::{DbId, DbName, Hash, IntentKey, hash_hex};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use donut_format::items::local::{self, MARKER, MARKER_FILE};

#[derive(Debug, thiserror::Error)]
pub enum OpenLocalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a DonutDB local store (its {MARKER_FILE} file says {found:?})")]
    NotAStore { path: PathBuf, found: String },
}

struct Location {
    pack: usize,
    offset: u64,
    len: u32,
}

#[derive(Default)]
struct Index {
    packs: Vec<File>,
    /// File names of `packs`, by position.
    pack_files: Vec<String>,
    pack_names: HashSet<String>,
    sectors: HashMap<(DbId, Hash), Location>,
    bytes: u64,
    largest: u64,
}

struct Inner {
    dir: PathBuf,
    index: Mutex<Index>,
}

#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<Inner>,
}

fn io_err(path: &Path, source: io::Error) -> OpenLocalError {
    OpenLocalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn unavailable(what: &str, path: &Path, e: io::Error) -> BackendError {
    BackendError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// 16 random bytes (pack names).
fn random_id() -> Result<[u8; 16], BackendError> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| BackendError::Unavailable(e.to_string()))?;
    Ok(id)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` crash-safely: temp file, fsync, rename, fsync dir.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("store files live in a directory");
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp = dir.join(format!(".tmp-{}", u64::from_le_bytes(suffix)));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl LocalBackend {
    /// Opens the store in `dir`, creating it if the directory is missing or
    /// empty.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalBackend, OpenLocalError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let marker = dir.join(MARKER_FILE);
        match fs::read_to_string(&marker) {
            Ok(found) if found == MARKER => {}
            Ok(found) => return Err(OpenLocalError::NotAStore { path: dir, found }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let is_empty = fs::read_dir(&dir)
                    .map_err(|e| io_err(&dir, e))?
                    .next()
                    .is_none();
                if !is_empty {
                    return Err(OpenLocalError::NotAStore {
                        path: dir,
                        found: "nothing: the directory has other files".into(),
                    });
                }
                write_atomically(&marker, MARKER.as_bytes()).map_err(|e| io_err(&marker, e))?;
            }
            Err(e) => return Err(io_err(&marker, e)),
        }
        for sub in ["meta", "packs", "history"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| io_err(&path, e))?;
        }
        let inner = Inner {
            dir,
            index: Mutex::new(Index::default()),
        };
        inner.refresh().map_err(|e| OpenLocalError::Io {
            path: inner.dir.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        Ok(LocalBackend {
            inner: Arc::new(inner),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> Result<T, BackendError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| BackendError::Unavailable(format!("local store task failed: {e}")))
    }
}

impl Inner {
    fn meta_path(&self, kind: MetaKind, name: &DbName) -> PathBuf {
        self.dir
            .join("meta")
            .join(local::meta_file_name(kind.as_str(), name))
    }

    fn history_dir(&self, name: &DbName) -> PathBuf {
        self.dir.join("history").join(local::history_dir_name(name))
    }

    fn intent_dir(&self, name: &DbName) -> PathBuf {
        self.dir.join("intents").join(local::history_dir_name(name))
    }

    /// Writes an intent file: temp file and rename, not synced — an
    /// intent lost to a machine crash leaks the sectors it lists, loses
    /// nothing, and a commit pays no fsync for it.
    fn put_intent(&self, name: &DbName, key: IntentKey, body: &[u8]) -> Result<(), BackendError> {
        let dir = self.intent_dir(name);
        fs::create_dir_all(&dir).map_err(|e| unavailable("creating", &dir, e))?;
        let path = dir.join(local::intent_file_name(key));
        let tmp = dir.join(format!(".tmp-{}", crate::random_u64()));
        fs::write(&tmp, body)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                unavailable("writing", &path, e)
            })
    }

    fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        let dir = self.intent_dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unavailable("listing", &dir, e)),
        };
        let mut keys: Vec<IntentKey> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| local::parse_intent_file_name(e.file_name().to_str()?))
            .filter(|key| key.bound < bound_below)
            .collect();
        keys.sort_unstable();
        let mut out = Vec::new();
        for key in keys.into_iter().take(limit) {
            let path = dir.join(local::intent_file_name(key));
            match fs::read(&path) {
                Ok(body) => out.push((key, body)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => return Err(unavailable("reading", &path, e)),
            }
        }
        Ok(out)
    }

    fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        let dir = self.intent_dir(name);
        for key in keys {
            let path = dir.join(local::intent_file_name(*key));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("removing", &path, e)),
            }
        }
        let _ = fs::remove_dir(&dir); // only if empty
        Ok(())
    }

    /// Kept root versions of `name` below `below`, newest first, at most
    /// `limit`; versions past the current root (a swap that did not
    /// happen) are left out.
    fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        let current = self.current_root_version(name)?;
        let dir = self.history_dir(name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(unavailable("listing", &dir, e)),
        };
        let top = below.unwrap_or(u64::MAX).min(current.saturating_add(1));
        let mut versions: Vec<u64> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
            .filter(|v| *v < top)
            .collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for version in versions.into_iter().take(limit) {
            out.extend(self.read_history_file(name, version)?);
        }
        Ok(out)
    }

    fn current_root_version(&self, name: &DbName) -> Result<u64, BackendError> {
        let path = self.meta_path(MetaKind::Root, name);
        Ok(self.read_meta_file(&path)?.map_or(0, |(_, m)| m.version))
    }

    /// Kept version `version` of `name`'s root, if written and not past
    /// the current root.
    fn root_version(&self, name: &DbName, version: u64) -> Result<Option<Meta>, BackendError> {
        if version > self.current_root_version(name)? {
            return Ok(None);
        }
        self.read_history_file(name, version)
    }

    fn read_history_file(&self, name: &DbName, version: u64) -> Result<Option<Meta>, BackendError> {
        let path = self
            .history_dir(name)
            .join(local::history_file_name(version));
        let Some((stored, meta)) = self.read_meta_file(&path)? else {
            return Ok(None);
        };
        if stored != *name || meta.version != version {
            return Err(BackendError::Corrupt(format!(
                "{} holds version {} of {stored:?}",
                path.display(),
                meta.version
            )));
        }
        Ok(Some(meta))
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Indexes packs written since the last look (by any process).
    fn refresh(&self) -> Result<(), BackendError> {
        let packs_dir = self.dir.join("packs");
        let entries =
            fs::read_dir(&packs_dir).map_err(|e| unavailable("listing", &packs_dir, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".pack"))
            .collect();
        names.sort();
        let mut index = self.index();
        for name in names {
            if index.pack_names.contains(&name) {
                continue;
            }
            let path = packs_dir.join(&name);
            let mut file = match File::open(&path) {
                Ok(file) => file,
                // `gc` compacted it away since the listing: its live
                // sectors are in a newer pack (found by the next refresh).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable("opening", &path, e)),
            };
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| unavailable("reading", &path, e))?;
            let records = local::decode_pack(&bytes)
                .map_err(|detail| BackendError::Corrupt(format!("{}: {detail}", path.display())))?;
            let pack = index.packs.len();
            for record in records {
                let location = Location {
                    pack,
                    offset: record.offset,
                    len: record.len,
                };
                if index
                    .sectors
                    .insert((record.db, record.hash), location)
                    .is_none()
                {
                    index.bytes += record.len as u64;
                    index.largest = index.largest.max(record.len as u64);
                }
            }
            index.packs.push(file);
            index.pack_files.push(name.clone());
            index.pack_names.insert(name);
        }
        Ok(())
    }

    fn read_indexed(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let index = self.index();
        hashes
            .iter()
            .map(|h| match index.sectors.get(&(db, *h)) {
                None => Ok(None),
                Some(loc) => {
                    let mut buf = vec![0u8; loc.len as usize];
                    index.packs[loc.pack]
                        .read_exact_at(&mut buf, loc.offset)
                        .map_err(|e| {
                            BackendError::Unavailable(format!(
                                "reading sector {} from {}: {e}",
                                hash_hex(h),
                                self.dir.display()
                            ))
                        })?;
                    Ok(Some(buf))
                }
            })
            .collect()
    }

    fn get_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let found = self.read_indexed(db, hashes)?;
        if found.iter().all(Option::is_some) {
            return Ok(found);
        }
        // Another process may have written them since we looked.
        self.refresh()?;
        self.read_indexed(db, hashes)
    }

    fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        let new: Vec<&(Hash, Vec<u8>)> = {
            let index = self.index();
            let mut seen = HashSet::new();
            sectors
                .iter()
                .filter(|(h, _)| !index.sectors.contains_key(&(db, *h)) && seen.insert(*h))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let mut pack = Vec::with_capacity(
            local::PACK_MAGIC.len()
                + new
                    .iter()
                    .map(|s| local::RECORD_HEADER_BYTES + s.1.len())
                    .sum::<usize>(),
        );
        pack.extend_from_slice(local::PACK_MAGIC);
        for (sector_hash, bytes) in &new {
            if bytes.len() > ITEM_BYTES_MAX {
                return Err(BackendError::TooLarge(format!(
                    "sector {} is {} bytes; the limit is {ITEM_BYTES_MAX}",
                    hash_hex(sector_hash),
                    bytes.len()
                )));
            }
            local::push_record(&mut pack, db, sector_hash, bytes);
        }
        let name = format!("{}.pack", DbId(random_id()?).hex());
        let path = self.dir.join("packs").join(&name);
        write_atomically(&path, &pack).map_err(|e| unavailable("writing", &path, e))?;
        self.refresh()
    }

    fn read_meta_file(&self, path: &Path) -> Result<Option<(DbName, Meta)>, BackendError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable("reading", path, e)),
        };
        local::decode_meta(&bytes)
            .map(|(name, version, body)| Some((name, Meta { version, body })))
            .ok_or_else(|| BackendError::Corrupt(format!("{} is damaged", path.display())))
    }

    /// The store's lock (`meta.lock`, an exclusive file lock): held while
    /// meta items are compared and written, and while `gc` compacts packs.
    fn lock(&self) -> Result<File, BackendError> {
        let lock_path = self.dir.join("meta.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| unavailable("opening", &lock_path, e))?;
        lock.lock()
            .map_err(|e| unavailable("locking", &lock_path, e))?;
        Ok(lock)
    }

    /// Deletes sectors by rewriting each pack that holds one: its other
    /// records go to a new pack (written and synced first), then the old
    /// pack is unlinked. Readers holding it open still read it; a process
    /// that lists it and finds it gone skips it.
    fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let _lock = self.lock()?;
        self.refresh()?;
        let doomed: HashSet<(DbId, Hash)> = hashes.iter().map(|h| (db, *h)).collect();
        let packs: std::collections::BTreeSet<usize> = {
            let index = self.index();
            doomed
                .iter()
                .filter_map(|key| index.sectors.get(key).map(|loc| loc.pack))
                .collect()
        };
        if packs.is_empty() {
            return Ok(());
        }
        let packs_dir = self.dir.join("packs");
        for pack in packs {
            let (bytes, name) = {
                let index = self.index();
                let name = index.pack_files[pack].clone();
                let file = &index.packs[pack];
                let len = file
                    .metadata()
                    .map_err(|e| unavailable("sizing", &packs_dir, e))?;
                let mut bytes = vec![0u8; len.len() as usize];
                file.read_exact_at(&mut bytes, 0)
                    .map_err(|e| unavailable("reading", &packs_dir.join(&name), e))?;
                (bytes, name)
            };
            let records = local::decode_pack(&bytes)
                .map_err(|detail| BackendError::Corrupt(format!("pack {name}: {detail}")))?;
            let survivors: Vec<&local::PackRecord> = records
                .iter()
                .filter(|r| !doomed.contains(&(r.db, r.hash)))
                .collect();
            if !survivors.is_empty() {
                let mut pack = local::PACK_MAGIC.to_vec();
                for r in survivors {
                    let body = &bytes[r.offset as usize..r.offset as usize + r.len as usize];
                    local::push_record(&mut pack, r.db, &r.hash, body);
                }
                let path = packs_dir.join(format!("{}.pack", DbId(random_id()?).hex()));
                write_atomically(&path, &pack).map_err(|e| unavailable("writing", &path, e))?;
            }
            let old = packs_dir.join(&name);
            match fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("removing", &old, e)),
            }
        }
        sync_dir(&packs_dir).map_err(|e| unavailable("syncing", &packs_dir, e))?;
        // Index again from what is there now.
        *self.index() = Index::default();
        self.refresh()
    }

    /// Unlinks history files of `name` (never its current root's).
    fn delete_root_versions(&self, name: &DbName, versions: &[u64]) -> Result<(), BackendError> {
        let _lock = self.lock()?;
        let current = self.current_root_version(name)?;
        let dir = self.history_dir(name);
        for &version in versions {
            assert_ne!(version, current, "gc never deletes the current root");
            let path = dir.join(local::history_file_name(version));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("removing", &path, e)),
            }
        }
        sync_dir(&dir).or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => Ok(()),
            _ => Err(unavailable("syncing", &dir, e)),
        })
    }

    /// Deletes a meta item at version `expected`, under the store's lock
    /// (a root: with its history file of that version, and its history
    /// directory once empty).
    fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        let _lock = self.lock()?;
        let path = self.meta_path(kind, name);
        let current = self.read_meta_file(&path)?.map(|(_, m)| m.version);
        if current != Some(expected) {
            return Err(PutMetaError::Conflict);
        }
        fs::remove_file(&path).map_err(|e| unavailable("removing", &path, e))?;
        if kind == MetaKind::Root {
            let dir = self.history_dir(name);
            let _ = fs::remove_file(dir.join(local::history_file_name(expected)));
            let _ = fs::remove_dir(&dir); // only if empty
        }
        let meta_dir = self.dir.join("meta");
        sync_dir(&meta_dir).map_err(|e| unavailable("syncing", &meta_dir, e))?;
        Ok(())
    }

    /// Compare-and-swap of a meta item under the store's lock; with a
    /// `fence`, the lock item must also be at its version (checked under the
    /// same lock, so the two are one step).
    fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
        fence: Option<Fence>,
    ) -> Result<(), PutMetaError> {
        let _lock = self.lock()?;
        if let Some(fence) = fence {
            let lock_item = self.meta_path(MetaKind::Lock, name);
            let at = self.read_meta_file(&lock_item)?.map(|(_, m)| m.version);
            if at != Some(fence.lock_version) {
                return Err(PutMetaError::Fenced);
            }
        }
        let path = self.meta_path(kind, name);
        let current = self.read_meta_file(&path)?.map(|(_, m)| m.version);
        if current != expected {
            return Err(PutMetaError::Conflict);
        }
        if kind == MetaKind::Root {
            // History first: a crash between the two leaves a version past
            // the root, which readers ignore and the next commit replaces.
            let dir = self.history_dir(name);
            fs::create_dir_all(&dir).map_err(|e| unavailable("creating", &dir, e))?;
            let file = dir.join(local::history_file_name(meta.version));
            write_atomically(&file, &local::encode_meta(name, meta.version, &meta.body))
                .map_err(|e| unavailable("writing", &file, e))?;
        }
        write_atomically(&path, &local::encode_meta(name, meta.version, &meta.body))
            .map_err(|e| unavailable("writing", &path, e))?;
        Ok(()) // dropping `_lock` unlocks
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn describe(&self) -> String {
        format!("local store {}", self.inner.dir.display())
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        let name = name.clone();
        self.blocking(move |inner| {
            let path = inner.meta_path(kind, &name);
            Ok(inner.read_meta_file(&path)?.map(|(_, meta)| meta))
        })
        .await?
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let name = name.clone();
        self.blocking(move |inner| inner.put_meta(kind, &name, expected, meta, None))
            .await?
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        self.blocking(|inner| {
            let dir = inner.dir.join("meta");
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir).map_err(|e| unavailable("listing", &dir, e))? {
                let entry = entry.map_err(|e| unavailable("listing", &dir, e))?;
                if entry.file_name().to_string_lossy().starts_with("root-")
                    && let Some(found) = inner.read_meta_file(&entry.path())?
                {
                    out.push(found);
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .await?
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        let name = name.clone();
        self.blocking(move |inner| inner.root_version(&name, version))
            .await?
    }

    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        let name = name.clone();
        self.blocking(move |inner| inner.root_history(&name, below, limit))
            .await?
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let hashes = hashes.to_vec();
        self.blocking(move |inner| inner.get_sectors(db, &hashes))
            .await?
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        let sectors = sectors.to_vec();
        self.blocking(move |inner| inner.put_sectors(db, &sectors))
            .await?
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let hashes = hashes.to_vec();
        self.blocking(move |inner| inner.delete_sectors(db, &hashes))
            .await?
    }

    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError> {
        let (name, versions) = (name.clone(), versions.to_vec());
        self.blocking(move |inner| inner.delete_root_versions(&name, &versions))
            .await?
    }

    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        let name = name.clone();
        self.blocking(move |inner| inner.delete_meta(kind, &name, expected))
            .await?
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        let name = name.clone();
        self.blocking(move |inner| inner.put_intent(&name, key, &body))
            .await?
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        let name = name.clone();
        self.blocking(move |inner| inner.list_intents(&name, bound_below, limit))
            .await?
    }

    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        let (name, keys) = (name.clone(), keys.to_vec());
        self.blocking(move |inner| inner.delete_intents(&name, &keys))
            .await?
    }

    /// Sectors first, then the root swap with its fence under one lock.
    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        if !commit.sectors.is_empty() {
            self.put_sectors(commit.db, commit.sectors).await?;
        }
        let (name, expected, fence) = (commit.name.clone(), commit.expected, commit.fence);
        self.blocking(move |inner| inner.put_meta(MetaKind::Root, &name, expected, meta, fence))
            .await?
    }

    async fn summary(&self) -> Result<StoredSummary, BackendError> {
        self.blocking(|inner| {
            inner.refresh()?;
            let index = inner.index();
            let mut summary = StoredSummary::default();
            summary.add_many(
                ItemKind::Sector,
                index.sectors.len() as u64,
                index.bytes,
                index.largest,
            );
            let meta = inner.dir.join("meta");
            for entry in fs::read_dir(&meta).map_err(|e| unavailable("listing", &meta, e))? {
                let entry = entry.map_err(|e| unavailable("listing", &meta, e))?;
                let kind = match entry.file_name().to_string_lossy() {
                    name if name.starts_with("root-") => ItemKind::Root,
                    name if name.starts_with("lock-") => ItemKind::Lock,
                    name if name.starts_with("gc-") || name.starts_with("family-") => ItemKind::Gc,
                    _ => ItemKind::Other,
                };
                summary.add(kind, entry.metadata().map_or(0, |m| m.len()));
            }
            for (sub, kind) in [
                ("history", ItemKind::History),
                ("intents", ItemKind::Intent),
            ] {
                let top = inner.dir.join(sub);
                let dirs = match fs::read_dir(&top) {
                    Ok(dirs) => dirs,
                    // A store no intent was ever written to has none.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(unavailable("listing", &top, e)),
                };
                for dir in dirs {
                    let dir = dir.map_err(|e| unavailable("listing", &top, e))?.path();
                    for entry in fs::read_dir(&dir).map_err(|e| unavailable("listing", &dir, e))? {
                        let entry = entry.map_err(|e| unavailable("listing", &dir, e))?;
                        summary.add(kind, entry.metadata().map_or(0, |m| m.len()));
                    }
                }
            }
            Ok(summary)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use donut_format::hash;

    #[test]
    fn refuses_a_directory_that_is_not_a_store() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), "data").unwrap();
        assert!(matches!(
            LocalBackend::open(dir.path()),
            Err(OpenLocalError::NotAStore { .. })
        ));
        assert!(dir.path().join("precious.txt").exists());
    }

    #[tokio::test]
    async fn sectors_written_by_another_handle_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalBackend::open(dir.path()).unwrap();
        let b = LocalBackend::open(dir.path()).unwrap();
        let db = DbId([5; 16]);
        let bytes = vec![9u8; 4096];
        let h = hash(&bytes);
        a.put_sectors(db, &[(h, bytes.clone())]).await.unwrap();
        assert_eq!(b.get_sectors(db, &[h]).await.unwrap(), vec![Some(bytes)]);
        let other = DbId([6; 16]);
        assert_eq!(b.get_sectors(other, &[h]).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn meta_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::open(dir.path()).unwrap();
        let name = DbName::new("x").unwrap();
        let v1 = Meta {
            version: 1,
            body: vec![1],
        };
        store
            .put_meta(MetaKind::Root, &name, None, v1.clone())
            .await
            .unwrap();
        assert_eq!(
            store
                .put_meta(MetaKind::Root, &name, None, v1.clone())
                .await,
            Err(PutMetaError::Conflict)
        );
        let v2 = Meta {
            version: 2,
            body: vec![2],
        };
        store
            .put_meta(MetaKind::Root, &name, Some(1), v2.clone())
            .await
            .unwrap();
        assert_eq!(
            store.get_meta(MetaKind::Root, &name).await.unwrap(),
            Some(v2)
        );
        assert_eq!(store.list_roots().await.unwrap().len(), 1);
    }
}
