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
//!   immutable; an in-memory index of them (every copy of every sector:
//!   two writers may store one sector, and a fold killed before its
//!   unlinks leaves two copies) is built at open and refreshed when a
//!   sector is missing (another process may have written it) or a pack it
//!   names is gone. Packs of one size class are folded into one once
//!   `PACK_FOLD_FAN` of them exist — one fold per write, after its commit
//!   point, so a write's stall is bounded whatever the store's size — and
//!   packs whose every sector has a copy elsewhere are removed, so their
//!   number stays bounded whatever the history; at most
//!   `PACK_FILES_OPEN_MAX` are open at once (least recently read closed
//!   first), so open files never grow with commits or with the store;
//! - `.tmp-*`: a file being written, locked (`flock`) by its writer until
//!   it is renamed; one nobody holds is a killed writer's, removed when
//!   its directory is next listed.

use super::{
    Backend, BackendError, Commit, Fence, ITEM_BYTES_MAX, ItemKind, Meta, MetaKind, PutMetaError,
    Replaces, StoredSummary,
};
use async_trait::async_trait;
use donut_format::{DbId, DbName, Hash, IntentKey, hash_hex};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
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

/// Most pack files a store keeps open at once (least recently read closed
/// first): open files do not grow with commits.
pub const PACK_FILES_OPEN_MAX: usize = 32;
/// How many packs of one size class are folded into one.
pub const PACK_FOLD_FAN: usize = 16;
/// Packs this large or larger are never folded (the size classes below it
/// are < 64 KiB, < 1 MiB, < 16 MiB: each 16 times the last).
pub const PACK_FOLD_BYTES_MAX: u64 = 16 << 20;
/// Smallest size class's bound.
const PACK_CLASS_BYTES_MIN: u64 = 64 << 10;
/// How many times a read lists the packs again when one it indexed was
/// folded away meanwhile.
const READ_ATTEMPTS_MAX: usize = 8;
/// Temp files' names start with this.
const TMP_PREFIX: &str = ".tmp-";
/// How many times a writer makes a new temp file when a cleaner removed
/// the last one before the writer held its lock.
const TMP_ATTEMPTS_MAX: usize = 8;

/// The size class a pack of `bytes` folds in, if it folds.
fn fold_class(bytes: u64) -> Option<u32> {
    if bytes >= PACK_FOLD_BYTES_MAX {
        return None;
    }
    let mut class = 0;
    let mut bound = PACK_CLASS_BYTES_MIN;
    while bytes >= bound {
        class += 1;
        bound *= 16;
    }
    Some(class)
}

struct Location {
    pack: usize,
    offset: u64,
    len: u32,
}

/// A pack the index holds.
struct Pack {
    name: String,
    bytes: u64,
    /// Records in the pack file.
    records: u32,
    /// The listing it was indexed from ([`Index::listings`]); a pack
    /// indexed by its writer counts as the next listing's.
    listed_at: u64,
}

type SectorKey = (DbId, Hash);

#[derive(Default)]
struct Index {
    /// Indexed packs by position; `None`: gone from the directory (folded,
    /// or rewritten by `gc`), its records dropped.
    packs: Vec<Option<Pack>>,
    /// Positions in `packs` of the live ones, by file name.
    by_name: HashMap<String, usize>,
    /// Where each sector is read from.
    sectors: HashMap<SectorKey, Location>,
    /// Every further copy of a sector more than one pack holds (two
    /// writers stored it, or a fold was killed before its unlinks): a
    /// delete must reach them all. Empty but for those.
    copies: HashMap<SectorKey, Vec<Location>>,
    /// Listings of the packs directory indexed so far: a listing that
    /// began after listing `n` was indexed lists every pack indexed from
    /// `n` or before that is still there.
    listings: u64,
    open: OpenPacks,
}

impl Index {
    /// Indexes pack `name` (`bytes` long) with `records`.
    fn add_pack(
        &mut self,
        name: String,
        bytes: u64,
        records: &[local::PackRecord],
        listed_at: u64,
    ) {
        assert!(
            !self.by_name.contains_key(&name),
            "pack {name} indexed twice"
        );
        let pack = self.packs.len();
        for r in records {
            let key = (r.db, r.hash);
            let location = Location {
                pack,
                offset: r.offset,
                len: r.len,
            };
            match self.sectors.get(&key) {
                None => {
                    self.sectors.insert(key, location);
                }
                Some(first) if first.pack == pack => {} // twice in one pack
                Some(_) => {
                    let copies = self.copies.entry(key).or_default();
                    if copies.iter().all(|c| c.pack != pack) {
                        copies.push(location);
                    }
                }
            }
        }
        let records = u32::try_from(records.len()).expect("a pack's records fit u32");
        self.packs.push(Some(Pack {
            name: name.clone(),
            bytes,
            records,
            listed_at,
        }));
        self.by_name.insert(name, pack);
    }

    /// Drops the packs `gone` and their records; a sector read from one
    /// of them is read from a copy it has elsewhere.
    fn drop_packs(&mut self, gone: &HashSet<usize>) {
        if gone.is_empty() {
            return;
        }
        for &pack in gone {
            let dropped = self.packs[pack].take().expect("a live pack");
            self.by_name.remove(&dropped.name);
            self.open.files.remove(&pack);
        }
        self.copies.retain(|_, copies| {
            copies.retain(|c| !gone.contains(&c.pack));
            !copies.is_empty()
        });
        let mut moved = Vec::new();
        self.sectors.retain(|key, first| {
            let keep = !gone.contains(&first.pack);
            if !keep {
                moved.push(*key);
            }
            keep
        });
        for key in moved {
            if let Some(mut copies) = self.copies.remove(&key) {
                let first = copies.swap_remove(0);
                self.sectors.insert(key, first);
                if !copies.is_empty() {
                    self.copies.insert(key, copies);
                }
            }
        }
    }

    /// Every location of sector `key`.
    fn locations(&self, key: &SectorKey) -> impl Iterator<Item = &Location> {
        self.sectors
            .get(key)
            .into_iter()
            .chain(self.copies.get(key).into_iter().flatten())
    }

    /// Packs whose every record has a copy in a pack not among them:
    /// removing them loses nothing. Only packs indexed from listing
    /// `listed_by` or before count (a pack its writer indexed since may
    /// already be gone: one the last listing under `meta.lock` saw is not).
    fn redundant_packs(&self, listed_by: u64) -> Vec<usize> {
        if self.copies.is_empty() {
            return Vec::new();
        }
        let seen = |pack: usize| {
            self.packs[pack]
                .as_ref()
                .is_some_and(|p| p.listed_at <= listed_by)
        };
        let mut shared: HashMap<usize, u32> = HashMap::new();
        for key in self.copies.keys() {
            for location in self.locations(key) {
                *shared.entry(location.pack).or_default() += 1;
            }
        }
        shared.retain(|&pack, _| seen(pack));
        let mut candidates: Vec<(u64, usize)> = shared
            .into_iter()
            .filter_map(|(pack, n)| {
                let p = self.packs[pack].as_ref().expect("located in a live pack");
                (p.records == n).then_some((p.bytes, pack))
            })
            .collect();
        candidates.sort_unstable();
        let mut chosen: HashSet<usize> = HashSet::new();
        for (_, pack) in candidates {
            let elsewhere = self.copies.keys().all(|key| {
                let holds = self.locations(key).any(|l| l.pack == pack);
                !holds
                    || self
                        .locations(key)
                        .any(|l| l.pack != pack && seen(l.pack) && !chosen.contains(&l.pack))
            });
            if elsewhere {
                chosen.insert(pack);
            }
        }
        chosen.into_iter().collect()
    }
}

/// Open pack files by position, at most [`PACK_FILES_OPEN_MAX`].
#[derive(Default)]
struct OpenPacks {
    files: HashMap<usize, (File, u64)>,
    tick: u64,
}

impl OpenPacks {
    /// The open file of pack `pack` at `path`, opening it (and closing the
    /// least recently used one if as many as allowed are open).
    fn get(&mut self, pack: usize, path: &Path) -> io::Result<&File> {
        self.tick += 1;
        let tick = self.tick;
        if !self.files.contains_key(&pack) {
            let file = File::open(path)?;
            if self.files.len() >= PACK_FILES_OPEN_MAX {
                let oldest = self
                    .files
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(&p, _)| p)
                    .expect("a full set has an entry");
                self.files.remove(&oldest);
            }
            self.files.insert(pack, (file, tick));
        }
        assert!(self.files.len() <= PACK_FILES_OPEN_MAX);
        let entry = self.files.get_mut(&pack).expect("just opened");
        entry.1 = tick;
        Ok(&entry.0)
    }
}

struct Inner {
    dir: PathBuf,
    index: Mutex<Index>,
    /// Tests' seam: called at [`HookPoint`]s to interleave threads in a
    /// chosen order or inject a failure.
    #[cfg(test)]
    hook: Mutex<Option<Hook>>,
}

/// Where [`Inner::hook`] is called.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HookPoint {
    /// In a refresh, between listing the packs and indexing them.
    Listed,
    /// In a read, between its refresh and its second look at the index.
    Refreshed,
    /// In a fold, before its new pack is written.
    Folding,
}

#[cfg(test)]
type Hook = Arc<dyn Fn(HookPoint) -> io::Result<()> + Send + Sync>;

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

/// Directories synced, for tests to check (every test filters by its own
/// temporary directory).
#[cfg(test)]
static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    SYNCED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir.to_path_buf());
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` crash-safely: temp file, fsync, rename, fsync dir.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with(path, |out| out.write_all(bytes))
}

/// A new temp file in `dir`, locked: a cleaner removes only temp files
/// nobody holds (their writer was killed).
fn create_tmp(dir: &Path) -> io::Result<(PathBuf, File)> {
    for _ in 0..TMP_ATTEMPTS_MAX {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
        let tmp = dir.join(format!("{TMP_PREFIX}{:016x}", u64::from_le_bytes(suffix)));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.lock()?;
        // A cleaner that locked it between the two removed it: the name
        // must still be this file's.
        let ours = match fs::metadata(&tmp) {
            Ok(named) => {
                use std::os::unix::fs::MetadataExt;
                let held = file.metadata()?;
                (named.dev(), named.ino()) == (held.dev(), held.ino())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if ours {
            return Ok((tmp, file));
        }
    }
    Err(io::Error::other(format!(
        "temp files in {} removed under their writer {TMP_ATTEMPTS_MAX} times in a row",
        dir.display()
    )))
}

/// Removes the temp files `names` in `dir` that no writer holds (a killed
/// writer's); one still held, or renamed meanwhile, is left.
fn remove_dead_tmps(dir: &Path, names: &[String]) {
    for name in names {
        assert!(name.starts_with(TMP_PREFIX));
        let path = dir.join(name);
        let Ok(file) = File::open(&path) else {
            continue; // renamed or removed meanwhile
        };
        if file.try_lock().is_ok() {
            // Nobody writes it: its writer is gone (a writer still at work
            // holds the lock until its rename).
            let _ = fs::remove_file(&path);
        }
    }
}

/// Names of the temp files among `names`.
fn tmp_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| n.starts_with(TMP_PREFIX))
        .map(str::to_string)
        .collect()
}

/// Removes the temp files of killed writers in `dir`.
fn clean_dir(dir: &Path) -> io::Result<()> {
    let names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    remove_dead_tmps(dir, &tmp_names(names.iter().map(String::as_str)));
    Ok(())
}

/// Creates directory `dir` if missing; `true` if it did (its parent must
/// then be synced for the new entry to be durable).
fn create_dir(dir: &Path) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes what `fill` writes to `path` crash-safely: temp file, fsync,
/// rename, fsync dir.
fn write_atomically_with(
    path: &Path,
    fill: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().expect("store files live in a directory");
    let (tmp, file) = create_tmp(dir)?;
    let result = (|| {
        let mut out = io::BufWriter::new(&file);
        fill(&mut out)?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Drops the index's slots of vanished packs: positions renumbered, open
/// files closed (they reopen on the next read).
fn renumber(index: &mut Index) {
    let mut moved: HashMap<usize, usize> = HashMap::new();
    let mut packs = Vec::with_capacity(index.by_name.len());
    for (old, pack) in std::mem::take(&mut index.packs).into_iter().enumerate() {
        if let Some(pack) = pack {
            moved.insert(old, packs.len());
            index.by_name.insert(pack.name.clone(), packs.len());
            packs.push(Some(pack));
        }
    }
    for loc in index.sectors.values_mut() {
        loc.pack = moved[&loc.pack];
    }
    for loc in index.copies.values_mut().flatten() {
        loc.pack = moved[&loc.pack];
    }
    index.packs = packs;
    index.open = OpenPacks::default();
}

impl LocalBackend {
    /// Opens the store in `dir`, creating it if the directory is missing or
    /// empty.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalBackend, OpenLocalError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let marker = dir.join(MARKER_FILE);
        let mut created = false;
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
                // The store's own entry, made by `create_dir_all` or by
                // whoever made the empty directory.
                if let Some(parent) = dir.parent() {
                    let parent = match parent.as_os_str().is_empty() {
                        true => Path::new("."),
                        false => parent,
                    };
                    sync_dir(parent).map_err(|e| io_err(parent, e))?;
                }
                created = true;
            }
            Err(e) => return Err(io_err(&marker, e)),
        }
        for sub in ["meta", "packs", "history"] {
            let path = dir.join(sub);
            created |= create_dir(&path).map_err(|e| io_err(&path, e))?;
        }
        if created {
            sync_dir(&dir).map_err(|e| io_err(&dir, e))?;
        }
        for path in [dir.clone(), dir.join("meta")] {
            clean_dir(&path).map_err(|e| io_err(&path, e))?;
        }
        let inner = Inner {
            dir,
            index: Mutex::new(Index::default()),
            #[cfg(test)]
            hook: Mutex::new(None),
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
    /// Runs the tests' hook at `point`, if one is set.
    #[cfg(test)]
    fn hook(&self, point: HookPoint) -> io::Result<()> {
        let hook = self.hook.lock().unwrap_or_else(|e| e.into_inner()).clone();
        hook.map_or(Ok(()), |hook| hook(point))
    }

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
        let (tmp, mut file) = create_tmp(&dir).map_err(|e| unavailable("writing", &path, e))?;
        file.write_all(body)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                unavailable("writing", &path, e)
            }) // dropping `file` unlocks
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
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        remove_dead_tmps(&dir, &tmp_names(names.iter().map(String::as_str)));
        let mut keys: Vec<IntentKey> = names
            .iter()
            .filter_map(|n| local::parse_intent_file_name(n))
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
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        remove_dead_tmps(&dir, &tmp_names(names.iter().map(String::as_str)));
        let mut versions: Vec<u64> = names
            .iter()
            .filter_map(|n| n.parse::<u64>().ok())
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

    /// Brings the index up to the packs directory (new packs of any
    /// process indexed, vanished ones dropped), listing and reading it
    /// under `meta.lock` shared, so no fold or `gc` rewrite runs between
    /// the listing and the reading.
    fn refresh(&self) -> Result<(), BackendError> {
        let lock = self.lock_file()?;
        let path = self.dir.join("meta.lock");
        lock.lock_shared()
            .map_err(|e| unavailable("locking", &path, e))?;
        self.refresh_locked() // dropping `lock` unlocks
    }

    /// [`Inner::refresh`] for a caller that holds `meta.lock` already.
    /// Temp files of killed writers in `packs/` are removed.
    fn refresh_locked(&self) -> Result<(), BackendError> {
        let packs_dir = self.dir.join("packs");
        // Listings indexed before this one begins: their packs, if still
        // there, are in it; a pack indexed since may be newer than it.
        let before = self.index().listings;
        let entries =
            fs::read_dir(&packs_dir).map_err(|e| unavailable("listing", &packs_dir, e))?;
        let all: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let tmps = tmp_names(all.iter().map(String::as_str));
        let mut names: Vec<String> = all.into_iter().filter(|n| n.ends_with(".pack")).collect();
        names.sort();
        #[cfg(test)]
        self.hook(HookPoint::Listed)
            .map_err(|e| unavailable("listing", &packs_dir, e))?;
        let listed: HashSet<&String> = names.iter().collect();
        let mut index = self.index();
        index.listings += 1;
        let listing = index.listings;
        // Folded or rewritten: every record still needed is in a pack
        // written before this one went, so in this listing.
        let vanished: HashSet<usize> = index
            .by_name
            .iter()
            .filter(|(name, _)| !listed.contains(name))
            .map(|(_, &pack)| pack)
            .filter(|&pack| index.packs[pack].as_ref().expect("live").listed_at <= before)
            .collect();
        index.drop_packs(&vanished);
        if index.packs.len() > 2 * index.by_name.len() + 64 {
            renumber(&mut index);
        }
        for name in names {
            if index.by_name.contains_key(&name) {
                continue;
            }
            let path = packs_dir.join(&name);
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Removed by hand: nothing to index.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable("reading", &path, e)),
            };
            let records = local::decode_pack(&bytes)
                .map_err(|detail| BackendError::Corrupt(format!("{}: {detail}", path.display())))?;
            index.add_pack(name, bytes.len() as u64, &records, listing);
        }
        drop(index);
        remove_dead_tmps(&packs_dir, &tmps);
        Ok(())
    }

    /// The sectors `hashes` of `db` as the index places them; `None` if a
    /// pack the index names is gone (folded away since it was indexed).
    fn read_indexed(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Option<Vec<Option<Vec<u8>>>>, BackendError> {
        let packs_dir = self.dir.join("packs");
        let mut index = self.index();
        let index = &mut *index;
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            let Some(loc) = index.sectors.get(&(db, *h)) else {
                out.push(None);
                continue;
            };
            let pack = index.packs[loc.pack]
                .as_ref()
                .expect("located in a live pack");
            let path = packs_dir.join(&pack.name);
            let file = match index.open.get(loc.pack, &path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(unavailable("opening", &path, e)),
            };
            let mut buf = vec![0u8; loc.len as usize];
            file.read_exact_at(&mut buf, loc.offset).map_err(|e| {
                BackendError::Unavailable(format!(
                    "reading sector {} from {}: {e}",
                    hash_hex(h),
                    path.display()
                ))
            })?;
            out.push(Some(buf));
        }
        Ok(Some(out))
    }

    fn get_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut refreshed = false;
        for _ in 0..READ_ATTEMPTS_MAX {
            if let Some(found) = self.read_indexed(db, hashes)?
                && (refreshed || found.iter().all(Option::is_some))
            {
                return Ok(found);
            }
            // Another process may have written them since we looked, or
            // folded a pack we knew.
            self.refresh()?;
            #[cfg(test)]
            self.hook(HookPoint::Refreshed)
                .map_err(|e| unavailable("reading", &self.dir, e))?;
            refreshed = true;
        }
        Err(BackendError::Unavailable(format!(
            "reading sectors from {}: its packs were folded away {READ_ATTEMPTS_MAX} times in a row",
            self.dir.display()
        )))
    }

    /// Stores `sectors`, then folds packs if due (a failed fold is logged:
    /// the sectors are stored).
    fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        self.write_pack(db, sectors)?;
        self.fold_logged();
        Ok(())
    }

    /// Writes the sectors of `sectors` the index lacks as one pack and
    /// indexes it.
    fn write_pack(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
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
        let records = local::decode_pack(&pack).expect("a pack just encoded decodes");
        let mut index = self.index();
        if !index.by_name.contains_key(&name) {
            // Renamed before the next listing to be indexed began.
            let listed_at = index.listings + 1;
            index.add_pack(name, pack.len() as u64, &records, listed_at);
        }
        Ok(())
    }

    /// [`Inner::fold_step`], its failure logged: what the caller wrote is
    /// stored (a commit: past its commit point), and the next write folds.
    fn fold_logged(&self) {
        if let Err(e) = self.fold_step() {
            tracing::warn!(
                store = %self.dir.display(),
                "folding packs failed (nothing is lost; the next write folds again): {e}"
            );
        }
    }

    /// Whether some size class holds [`PACK_FOLD_FAN`] packs, or some pack
    /// has all its sectors elsewhere.
    fn fold_due(&self) -> bool {
        let index = self.index();
        if !index.redundant_packs(u64::MAX).is_empty() {
            return true;
        }
        let mut per_class: HashMap<u32, usize> = HashMap::new();
        for pack in index.packs.iter().flatten() {
            if let Some(class) = fold_class(pack.bytes) {
                let count = per_class.entry(class).or_default();
                *count += 1;
                if *count >= PACK_FOLD_FAN {
                    return true;
                }
            }
        }
        false
    }

    /// One step of folding, if due and `meta.lock` is free (a writer that
    /// would wait for it leaves the folding to the next one): packs whose
    /// sectors all have copies elsewhere are removed, and one group of
    /// [`PACK_FOLD_FAN`] packs of a size class is folded. The bound on a
    /// write's stall: one fold reads and writes at most `PACK_FOLD_FAN`
    /// packs below [`PACK_FOLD_BYTES_MAX`] (< 256 MiB; < 1 MiB for a
    /// group of the smallest class), whatever the store's size. Each fold
    /// removes `PACK_FOLD_FAN - 1` packs and each write adds one, so the
    /// count stays bounded (a store of many packs folds down over later
    /// writes).
    fn fold_step(&self) -> Result<(), BackendError> {
        if !self.fold_due() {
            return Ok(());
        }
        let lock = self.lock_file()?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(()),
            Err(fs::TryLockError::Error(e)) => {
                return Err(unavailable("locking", &self.dir.join("meta.lock"), e));
            }
        }
        self.refresh_locked()?;
        self.remove_redundant_packs()?;
        if let Some(group) = self.fold_group() {
            self.fold(&group)?;
            self.refresh_locked()?;
        }
        Ok(()) // dropping `lock` unlocks
    }

    /// Unlinks the packs whose every sector has a copy in a pack that
    /// stays (what a fold killed before its unlinks left); the caller
    /// holds `meta.lock` and refreshed the index under it.
    fn remove_redundant_packs(&self) -> Result<(), BackendError> {
        let names: Vec<String> = {
            let index = self.index();
            index
                .redundant_packs(index.listings)
                .into_iter()
                .map(|pack| index.packs[pack].as_ref().expect("live").name.clone())
                .collect()
        };
        if names.is_empty() {
            return Ok(());
        }
        let packs_dir = self.dir.join("packs");
        for name in &names {
            let path = packs_dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("removing", &path, e)),
            }
        }
        sync_dir(&packs_dir).map_err(|e| unavailable("syncing", &packs_dir, e))?;
        self.refresh_locked()
    }

    /// [`PACK_FOLD_FAN`] packs of one size class (the smallest class that
    /// has as many), by file name.
    fn fold_group(&self) -> Option<Vec<String>> {
        let index = self.index();
        let mut classes: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        for pack in index.packs.iter().flatten() {
            if let Some(class) = fold_class(pack.bytes) {
                classes.entry(class).or_default().push(pack.name.clone());
            }
        }
        classes
            .into_values()
            .find(|names| names.len() >= PACK_FOLD_FAN)
            .map(|mut names| {
                names.truncate(PACK_FOLD_FAN);
                names
            })
    }

    /// Folds the packs `names` into one, under `meta.lock`: every record
    /// (each sector once) goes to a new pack, written and synced first;
    /// then the old packs are unlinked and the directory synced. A crash
    /// between leaves some sectors in two packs — the same bytes.
    fn fold(&self, names: &[String]) -> Result<(), BackendError> {
        let packs_dir = self.dir.join("packs");
        let path = packs_dir.join(format!("{}.pack", DbId(random_id()?).hex()));
        let mut seen = HashSet::new();
        write_atomically_with(&path, |out| {
            #[cfg(test)]
            self.hook(HookPoint::Folding)?;
            out.write_all(local::PACK_MAGIC)?;
            for name in names {
                let bytes = fs::read(packs_dir.join(name))?;
                let records = local::decode_pack(&bytes)
                    .map_err(|detail| io::Error::other(format!("pack {name}: {detail}")))?;
                for r in records {
                    if !seen.insert((r.db, r.hash)) {
                        continue;
                    }
                    let body = &bytes[r.offset as usize..r.offset as usize + r.len as usize];
                    let mut record = Vec::with_capacity(local::RECORD_HEADER_BYTES + body.len());
                    local::push_record(&mut record, r.db, &r.hash, body);
                    out.write_all(&record)?;
                }
            }
            Ok(())
        })
        .map_err(|e| unavailable("folding packs into", &path, e))?;
        for name in names {
            let old = packs_dir.join(name);
            match fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("removing", &old, e)),
            }
        }
        sync_dir(&packs_dir).map_err(|e| unavailable("syncing", &packs_dir, e))
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

    /// `meta.lock`, opened (not locked).
    fn lock_file(&self) -> Result<File, BackendError> {
        let lock_path = self.dir.join("meta.lock");
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| unavailable("opening", &lock_path, e))
    }

    /// The store's lock (`meta.lock`, an exclusive file lock): held while
    /// meta items are compared and written, and while packs are folded or
    /// `gc` rewrites them (readers list packs holding it shared).
    fn lock(&self) -> Result<File, BackendError> {
        let lock = self.lock_file()?;
        lock.lock()
            .map_err(|e| unavailable("locking", &self.dir.join("meta.lock"), e))?;
        Ok(lock)
    }

    /// Deletes sectors by rewriting each pack that holds a copy of one:
    /// its other records go to a new pack (written and synced first), then
    /// the old pack is unlinked. Readers holding it open still read it; a
    /// process that lists it and finds it gone skips it.
    fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let _lock = self.lock()?;
        self.refresh_locked()?;
        let doomed: HashSet<(DbId, Hash)> = hashes.iter().map(|h| (db, *h)).collect();
        let packs: std::collections::BTreeSet<String> = {
            let index = self.index();
            doomed
                .iter()
                .flat_map(|key| index.locations(key))
                .filter_map(|loc| index.packs[loc.pack].as_ref().map(|p| p.name.clone()))
                .collect()
        };
        if packs.is_empty() {
            return Ok(());
        }
        let packs_dir = self.dir.join("packs");
        for name in packs {
            let old = packs_dir.join(&name);
            let bytes = match fs::read(&old) {
                Ok(bytes) => bytes,
                // Gone since its writer indexed it: its copies with it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable("reading", &old, e)),
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
            match fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("removing", &old, e)),
            }
        }
        sync_dir(&packs_dir).map_err(|e| unavailable("syncing", &packs_dir, e))?;
        self.refresh_locked()
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
        let meta_dir = self.dir.join("meta");
        sync_dir(&meta_dir).map_err(|e| unavailable("syncing", &meta_dir, e))?;
        if kind == MetaKind::Root {
            // After the root: a crash between leaves a history file past
            // no root, which `gc` of a new root of the name never reads.
            let dir = self.history_dir(name);
            let file = dir.join(local::history_file_name(expected));
            match fs::remove_file(&file) {
                Ok(()) => sync_dir(&dir).map_err(|e| unavailable("syncing", &dir, e))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable("removing", &file, e).into()),
            }
            if fs::remove_dir(&dir).is_ok() {
                // Only if empty.
                let top = self.dir.join("history");
                sync_dir(&top).map_err(|e| unavailable("syncing", &top, e))?;
            }
        }
        Ok(())
    }

    /// Compare-and-swap of a meta item under the store's lock; with a
    /// `fence`, the lock item must also be at its version, with `replaces`
    /// (a root) it must hold that, and with a `state` swap that GC state
    /// item must be at its version (checked under the same lock, so they
    /// are one step). The state is written after the root: readers do not
    /// take the lock, and a reader that sees the state a fork's landing
    /// wrote (its mark gone) must find its root. A crash between the two
    /// leaves the mark standing, which only keeps more (a fork's landed
    /// root holds what it copied as a member, and `gc` finds a restore's
    /// root by its version).
    fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
        check: (Option<Fence>, Option<Replaces>),
        state: Option<(DbName, u64, Meta)>,
    ) -> Result<(), PutMetaError> {
        let (fence, replaces) = check;
        let _lock = self.lock()?;
        if let Some(fence) = fence {
            let lock_item = self.meta_path(MetaKind::Lock, name);
            let at = self.read_meta_file(&lock_item)?.map(|(_, m)| m.version);
            if at != Some(fence.lock_version) {
                return Err(PutMetaError::Fenced);
            }
        }
        let path = self.meta_path(kind, name);
        let current = self.read_meta_file(&path)?.map(|(_, m)| m);
        if current.as_ref().map(|m| m.version) != expected {
            return Err(PutMetaError::Conflict);
        }
        if let (Some(replaces), Some(current)) = (replaces, &current)
            && !replaces.holds(&current.body)
        {
            return Err(PutMetaError::Conflict);
        }
        let state = match state {
            None => None,
            Some((state_name, state_expected, state_meta)) => {
                let state_path = self.meta_path(MetaKind::Gc, &state_name);
                let at = self.read_meta_file(&state_path)?.map(|(_, m)| m.version);
                if at != Some(state_expected) {
                    return Err(PutMetaError::Conflict);
                }
                Some((state_name, state_path, state_meta))
            }
        };
        if kind == MetaKind::Root {
            // History first: a crash between the two leaves a version past
            // the root, which readers ignore and the next commit replaces.
            let dir = self.history_dir(name);
            if create_dir(&dir).map_err(|e| unavailable("creating", &dir, e))? {
                let top = self.dir.join("history");
                sync_dir(&top).map_err(|e| unavailable("syncing", &top, e))?;
            }
            let file = dir.join(local::history_file_name(meta.version));
            write_atomically(&file, &local::encode_meta(name, meta.version, &meta.body))
                .map_err(|e| unavailable("writing", &file, e))?;
        }
        write_atomically(&path, &local::encode_meta(name, meta.version, &meta.body))
            .map_err(|e| unavailable("writing", &path, e))?;
        if let Some((state_name, state_path, state_meta)) = state {
            let body = local::encode_meta(&state_name, state_meta.version, &state_meta.body);
            write_atomically(&state_path, &body)
                .map_err(|e| unavailable("writing", &state_path, e))?;
        }
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
        self.blocking(move |inner| inner.put_meta(kind, &name, expected, meta, (None, None), None))
            .await?
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let name = name.clone();
        let check = (None, Some(replaces));
        self.blocking(move |inner| {
            inner.put_meta(MetaKind::Root, &name, expected, meta, check, None)
        })
        .await?
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        self.blocking(|inner| {
            let dir = inner.dir.join("meta");
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir).map_err(|e| unavailable("listing", &dir, e))? {
                let entry = entry.map_err(|e| unavailable("listing", &dir, e))?;
                let file_name = entry.file_name();
                if let Some(tmp) = file_name.to_str().filter(|n| n.starts_with(TMP_PREFIX)) {
                    remove_dead_tmps(&dir, &[tmp.to_string()]);
                }
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

    /// Sectors first, then the root swap with its fence, whose root it
    /// replaces and its GC state under one lock; then packs are folded if
    /// due (a failed fold is logged: the commit is stored, and reported).
    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        let (name, expected) = (commit.name.clone(), commit.expected);
        let check = (commit.fence, Some(commit.replaces));
        let (db, sectors) = (commit.db, commit.sectors.to_vec());
        let state = commit
            .state
            .map(|s| (s.name.clone(), s.expected, s.meta.clone()));
        self.blocking(move |inner| {
            if !sectors.is_empty() {
                inner.write_pack(db, &sectors)?;
            }
            inner.put_meta(MetaKind::Root, &name, expected, meta, check, state)?;
            inner.fold_logged();
            Ok(())
        })
        .await?
    }

    async fn summary(&self) -> Result<StoredSummary, BackendError> {
        self.blocking(|inner| {
            inner.refresh()?;
            let index = inner.index();
            let mut summary = StoredSummary::default();
            let lens = || index.sectors.values().map(|loc| loc.len as u64);
            summary.add_many(
                ItemKind::Sector,
                index.sectors.len() as u64,
                lens().sum(),
                lens().max().unwrap_or(0),
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

    /// Open files of this process under `dir`.
    fn open_files_under(dir: &Path) -> usize {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    }

    fn pack_count(dir: &Path) -> usize {
        fs::read_dir(dir.join("packs"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".pack"))
            })
            .count()
    }

    /// One small sector per call, as a commit of one page writes.
    fn sector(i: u32) -> (Hash, Vec<u8>) {
        let bytes = format!("sector {i}").repeat(50).into_bytes();
        (hash(&bytes), bytes)
    }

    #[tokio::test]
    async fn packs_fold_and_open_files_stay_bounded_over_many_writes() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let writer = LocalBackend::open(&dir).unwrap();
        let reader = LocalBackend::open(&dir).unwrap();
        let db = DbId([7; 16]);
        let writes = 1_000;
        for i in 0..writes {
            writer.put_sectors(db, &[sector(i)]).await.unwrap();
            if i % 97 == 0 {
                // The other handle reads as the packs fold under it.
                let hashes: Vec<Hash> = (0..=i).map(|j| sector(j).0).collect();
                let found = reader.get_sectors(db, &hashes).await.unwrap();
                assert!(found.iter().all(Option::is_some), "after {i} writes");
            }
        }
        let packs = pack_count(&dir);
        assert!(
            packs <= 3 * PACK_FOLD_FAN,
            "{packs} packs after {writes} writes"
        );
        let hashes: Vec<Hash> = (0..writes).map(|j| sector(j).0).collect();
        for store in [&writer, &reader, &LocalBackend::open(&dir).unwrap()] {
            let found = store.get_sectors(db, &hashes).await.unwrap();
            for (j, bytes) in found.into_iter().enumerate() {
                assert_eq!(bytes, Some(sector(j as u32).1), "sector {j}");
            }
        }
        // Three handles, each with at most its bound of packs open.
        let open = open_files_under(&dir);
        assert!(
            open <= 3 * PACK_FILES_OPEN_MAX,
            "{open} files open under the store"
        );
    }

    /// Writes a pack by hand (as an older store, or a crash, left it).
    fn write_pack(dir: &Path, name: &str, db: DbId, sectors: &[(Hash, Vec<u8>)]) {
        let mut pack = local::PACK_MAGIC.to_vec();
        for (h, bytes) in sectors {
            local::push_record(&mut pack, db, h, bytes);
        }
        fs::write(dir.join("packs").join(name), pack).unwrap();
    }

    /// How many records of `(db, h)` the packs on disk hold.
    fn copies_on_disk(dir: &Path, db: DbId, h: &Hash) -> usize {
        let mut copies = 0;
        for entry in fs::read_dir(dir.join("packs")).unwrap() {
            let entry = entry.unwrap();
            if !entry.file_name().to_string_lossy().ends_with(".pack") {
                continue;
            }
            let bytes = fs::read(entry.path()).unwrap();
            let records = local::decode_pack(&bytes).unwrap();
            copies += records
                .iter()
                .filter(|r| r.db == db && r.hash == *h)
                .count();
        }
        copies
    }

    /// What a fold killed between its rename and its unlinks leaves:
    /// `PACK_FOLD_FAN` packs of one sector each, and the fold's pack with
    /// all of them.
    fn crashed_fold(dir: &Path, db: DbId) -> Vec<(Hash, Vec<u8>)> {
        LocalBackend::open(dir).unwrap();
        let sectors: Vec<(Hash, Vec<u8>)> = (0..PACK_FOLD_FAN as u32).map(sector).collect();
        for (i, s) in sectors.iter().enumerate() {
            write_pack(dir, &format!("{i:032x}.pack"), db, std::slice::from_ref(s));
        }
        write_pack(dir, &format!("{}.pack", "f".repeat(32)), db, &sectors);
        sectors
    }

    #[tokio::test]
    async fn a_write_to_a_store_of_many_unfolded_packs_folds_one_group_not_the_whole_store() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let db = DbId([8; 16]);
        LocalBackend::open(&dir).unwrap();
        // Packs as a store written before folding was (one per call).
        let writes = 20 * PACK_FOLD_FAN as u32;
        for i in 0..writes {
            write_pack(&dir, &format!("{i:032x}.pack"), db, &[sector(i)]);
        }
        let store = LocalBackend::open(&dir).unwrap();
        assert_eq!(open_files_under(&dir), 0, "opening keeps no pack open");
        // The next write folds one group: its stall does not grow with
        // the store.
        store.put_sectors(db, &[sector(writes)]).await.unwrap();
        let packs = pack_count(&dir);
        assert_eq!(packs, writes as usize + 1 - (PACK_FOLD_FAN - 1));
        // Later writes fold the rest, one group each.
        let mut more = 0;
        while pack_count(&dir) > 2 * PACK_FOLD_FAN {
            more += 1;
            assert!(more <= writes, "{} packs left", pack_count(&dir));
            store
                .put_sectors(db, &[sector(writes + more)])
                .await
                .unwrap();
        }
        let hashes: Vec<Hash> = (0..=writes + more).map(|j| sector(j).0).collect();
        for store in [&store, &LocalBackend::open(&dir).unwrap()] {
            let found = store.get_sectors(db, &hashes).await.unwrap();
            assert!(found.iter().all(Option::is_some));
        }
    }

    #[test]
    fn a_pack_indexed_while_a_slower_listing_ran_is_not_dropped_from_the_index() {
        use std::sync::mpsc;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::open(dir.path()).unwrap();
        let writer = LocalBackend::open(dir.path()).unwrap();
        let db = DbId([9; 16]);
        let (h, bytes) = sector(1);
        let (listed_tx, listed_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (go_rx, done_rx) = (Mutex::new(go_rx), Mutex::new(done_rx));
        // The slow lister lists before the pack exists and indexes after
        // the reader's refresh indexed it, before the reader reads.
        let hook: Hook = Arc::new(move |point| {
            match (std::thread::current().name(), point) {
                (Some("slow-lister"), HookPoint::Listed) => {
                    listed_tx.send(()).unwrap();
                    go_rx.lock().unwrap().recv().unwrap();
                }
                (Some("reader"), HookPoint::Refreshed) => {
                    go_tx.send(()).unwrap();
                    done_rx.lock().unwrap().recv().unwrap();
                }
                _ => {}
            }
            Ok(())
        });
        *store.inner.hook.lock().unwrap() = Some(hook);
        let slow = store.clone();
        let slow = std::thread::Builder::new()
            .name("slow-lister".into())
            .spawn(move || {
                slow.inner.refresh().unwrap();
                done_tx.send(()).unwrap();
            })
            .unwrap();
        listed_rx.recv().unwrap();
        // Another process writes the pack; this one's reader finds it.
        writer.inner.put_sectors(db, &[(h, bytes.clone())]).unwrap();
        let reader = store.clone();
        let found = std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || reader.inner.get_sectors(db, &[h]).unwrap())
            .unwrap()
            .join()
            .unwrap();
        slow.join().unwrap();
        assert_eq!(found, vec![Some(bytes)], "a stored sector read as missing");
    }

    #[tokio::test]
    async fn a_sector_deleted_after_a_crashed_fold_is_gone_from_every_pack() {
        let dir = tempfile::tempdir().unwrap();
        let db = DbId([10; 16]);
        let sectors = crashed_fold(dir.path(), db);
        let store = LocalBackend::open(dir.path()).unwrap();
        let (doomed, _) = &sectors[3];
        store.delete_sectors(db, &[*doomed]).await.unwrap();
        assert_eq!(
            copies_on_disk(dir.path(), db, doomed),
            0,
            "a deleted sector leaked"
        );
        for reader in [&store, &LocalBackend::open(dir.path()).unwrap()] {
            let hashes: Vec<Hash> = sectors.iter().map(|s| s.0).collect();
            let found = reader.get_sectors(db, &hashes).await.unwrap();
            for (i, (found, (_, bytes))) in found.into_iter().zip(&sectors).enumerate() {
                let expected = (i != 3).then(|| bytes.clone());
                assert_eq!(found, expected, "sector {i}");
            }
        }
    }

    #[tokio::test]
    async fn a_fold_killed_before_its_unlinks_leaves_one_copy_of_each_sector_after_the_next_write()
    {
        let dir = tempfile::tempdir().unwrap();
        let db = DbId([11; 16]);
        let sectors = crashed_fold(dir.path(), db);
        let store = LocalBackend::open(dir.path()).unwrap();
        store.put_sectors(db, &[sector(100)]).await.unwrap();
        for (i, (h, _)) in sectors.iter().enumerate() {
            assert_eq!(copies_on_disk(dir.path(), db, h), 1, "sector {i}");
        }
        let hashes: Vec<Hash> = sectors.iter().map(|s| s.0).collect();
        let found = LocalBackend::open(dir.path())
            .unwrap()
            .get_sectors(db, &hashes)
            .await
            .unwrap();
        assert!(found.iter().all(Option::is_some));
    }

    #[tokio::test]
    async fn a_fold_that_fails_after_the_commit_point_leaves_the_commit_reported_and_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalBackend::open(dir.path()).unwrap();
        let db = DbId([12; 16]);
        for i in 0..PACK_FOLD_FAN as u32 - 1 {
            store.put_sectors(db, &[sector(i)]).await.unwrap();
        }
        let hook: Hook = Arc::new(|point| match point {
            HookPoint::Folding => Err(io::Error::new(io::ErrorKind::StorageFull, "disk full")),
            _ => Ok(()),
        });
        *store.inner.hook.lock().unwrap() = Some(hook);
        let name = DbName::new("f.db").unwrap();
        let new = [sector(99)];
        let meta = Meta {
            version: 1,
            body: vec![1],
        };
        let commit = Commit {
            name: &name,
            db,
            expected: None,
            replaces: Replaces::Nothing,
            sectors: &new,
            fence: None,
            state: None,
        };
        // The pack is durable and the root swapped before the fold runs.
        store.commit(commit, meta.clone()).await.unwrap();
        *store.inner.hook.lock().unwrap() = None;
        let fresh = LocalBackend::open(dir.path()).unwrap();
        assert_eq!(
            fresh.get_meta(MetaKind::Root, &name).await.unwrap(),
            Some(meta)
        );
        assert_eq!(
            fresh.get_sectors(db, &[new[0].0]).await.unwrap(),
            vec![Some(new[0].1.clone())]
        );
        // The next write folds.
        store.put_sectors(db, &[sector(100)]).await.unwrap();
        assert!(pack_count(dir.path()) < PACK_FOLD_FAN);
    }

    #[tokio::test]
    async fn tmp_files_of_killed_writers_are_removed_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let store = LocalBackend::open(dir).unwrap();
        let name = DbName::new("t.db").unwrap();
        let meta = Meta {
            version: 1,
            body: vec![1],
        };
        store
            .put_meta(MetaKind::Root, &name, None, meta)
            .await
            .unwrap();
        let key = IntentKey { bound: 1, id: 2 };
        store.put_intent(&name, key, vec![3]).await.unwrap();
        let history = dir.join("history").join(local::history_dir_name(&name));
        let intents = dir.join("intents").join(local::history_dir_name(&name));
        let dead = [
            dir.join("packs").join(".tmp-1"),
            dir.join("meta").join(".tmp-2"),
            history.join(".tmp-3"),
            intents.join(".tmp-4"),
        ];
        for path in &dead {
            fs::write(path, b"left by a killed writer").unwrap();
        }
        // A writer still at work holds its temp file's lock.
        let live_path = dir.join("packs").join(".tmp-5");
        let live = File::create(&live_path).unwrap();
        live.lock().unwrap();
        let store = LocalBackend::open(dir).unwrap();
        store
            .put_sectors(DbId([13; 16]), &[sector(1)])
            .await
            .unwrap();
        store.root_history(&name, None, 10).await.unwrap();
        store.list_intents(&name, u64::MAX, 10).await.unwrap();
        for path in &dead {
            assert!(!path.exists(), "{} left", path.display());
        }
        assert!(live_path.exists(), "a live writer's temp file was removed");
    }

    #[tokio::test]
    async fn a_new_store_and_a_new_databases_history_are_synced_directories() {
        let top = tempfile::tempdir().unwrap();
        let top = top.path().canonicalize().unwrap();
        let dir = top.join("store");
        let synced = |path: &Path| {
            SYNCED
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.as_path() == path)
                .count()
        };
        let store = LocalBackend::open(&dir).unwrap();
        for path in [&top, &dir] {
            assert!(synced(path) > 0, "{} not synced", path.display());
        }
        let name = DbName::new("h.db").unwrap();
        let history = dir.join("history");
        let before = synced(&history);
        let meta = Meta {
            version: 1,
            body: vec![1],
        };
        store
            .put_meta(MetaKind::Root, &name, None, meta)
            .await
            .unwrap();
        assert!(
            synced(&history) > before,
            "a new history directory not synced"
        );
        let own = history.join(local::history_dir_name(&name));
        let (own_before, history_before) = (synced(&own), synced(&history));
        store.delete_meta(MetaKind::Root, &name, 1).await.unwrap();
        assert!(
            synced(&own) > own_before && synced(&history) > history_before,
            "a removed version and its directory not synced"
        );
    }

    /// The stall of writes on a store of 20,000 unfolded packs (one 4 KiB
    /// sector each, as a store written before folding was): the first
    /// write's, and the longest of the next 100 (BENCHMARKS.md).
    /// `cargo test --release -p donut-store --lib -- --ignored --nocapture fold_stall`
    #[tokio::test]
    #[ignore = "a benchmark: writes 20,000 packs"]
    async fn fold_stall_on_a_store_of_20000_packs() {
        let dir = tempfile::tempdir().unwrap();
        let db = DbId([14; 16]);
        LocalBackend::open(dir.path()).unwrap();
        let packs = 20_000u32;
        let page = |i: u32| {
            let bytes = format!("page {i} ").repeat(4096 / 10).into_bytes();
            (hash(&bytes), bytes)
        };
        for i in 0..packs {
            write_pack(dir.path(), &format!("{i:032x}.pack"), db, &[page(i)]);
        }
        let started = std::time::Instant::now();
        let store = LocalBackend::open(dir.path()).unwrap();
        let opened = started.elapsed();
        let started = std::time::Instant::now();
        store.put_sectors(db, &[page(packs)]).await.unwrap();
        let first = started.elapsed();
        let mut longest = std::time::Duration::ZERO;
        for i in 1..=100 {
            let started = std::time::Instant::now();
            store.put_sectors(db, &[page(packs + i)]).await.unwrap();
            longest = longest.max(started.elapsed());
        }
        println!(
            "{packs} packs: open {opened:?}, first write {first:?}, longest of the next 100 {longest:?}, {} packs after",
            pack_count(dir.path())
        );
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
