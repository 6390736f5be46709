//! The in-memory backend: deterministic, shared by every instance that holds
//! it, and the base of simulation tests. Nothing survives the process.

use super::{
    Backend, BackendError, Commit, ItemKind, Meta, MetaKind, PutMetaError, Replaces, StoredSummary,
};
use async_trait::async_trait;
use donut_format::{DbId, DbName, Hash, IntentKey};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    meta: BTreeMap<(MetaKind, DbName), Meta>,
    /// Every root written, by name and version (docs/format.md, "History").
    history: BTreeMap<(DbName, u64), Meta>,
    sectors: HashMap<(DbId, Hash), Arc<[u8]>>,
    /// Intent items by name and key (docs/format.md, "Intents").
    intents: BTreeMap<(DbName, IntentKey), Vec<u8>>,
}

impl State {
    /// Is the root of `name` at `expected` and does it hold what
    /// `replaces` says?
    fn root_is(&self, name: &DbName, expected: Option<u64>, replaces: Replaces) -> bool {
        match (self.meta.get(&(MetaKind::Root, name.clone())), expected) {
            (None, None) => true,
            (Some(current), Some(version)) => {
                current.version == version && replaces.holds(&current.body)
            }
            (None, Some(_)) | (Some(_), None) => false,
        }
    }

    /// Stores a meta item; a root also as its version's history item.
    fn put_meta(&mut self, kind: MetaKind, name: &DbName, meta: Meta) {
        if kind == MetaKind::Root {
            self.history
                .insert((name.clone(), meta.version), meta.clone());
        }
        self.meta.insert((kind, name.clone()), meta);
    }
}

/// Cloning shares the store.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces a stored sector's bytes, for corruption tests (feature
    /// `testing`: not in the default build).
    #[cfg(feature = "testing")]
    pub fn corrupt_sector(&self, db: DbId, hash: &Hash, bytes: Vec<u8>) -> bool {
        let mut state = self.state();
        match state.sectors.get_mut(&(db, *hash)) {
            Some(stored) => {
                *stored = bytes.into();
                true
            }
            None => false,
        }
    }

    /// Writes a history item whatever the root is, for the simulator's
    /// planted bugs (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn overwrite_history(&self, name: &DbName, meta: Meta) {
        self.state()
            .history
            .insert((name.clone(), meta.version), meta);
    }

    /// Hashes of every sector stored for `db` (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn sector_hashes(&self, db: DbId) -> Vec<Hash> {
        let state = self.state();
        let mut out: Vec<Hash> = state
            .sectors
            .keys()
            .filter(|(id, _)| *id == db)
            .map(|(_, h)| *h)
            .collect();
        out.sort_unstable();
        out
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "in-memory store".to_string()
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        Ok(self.state().meta.get(&(kind, name.clone())).cloned())
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let mut state = self.state();
        let key = (kind, name.clone());
        let current = state.meta.get(&key).map(|m| m.version);
        if current != expected {
            return Err(PutMetaError::Conflict);
        }
        state.put_meta(kind, name, meta);
        Ok(())
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let mut state = self.state();
        if !state.root_is(name, expected, replaces) {
            return Err(PutMetaError::Conflict);
        }
        state.put_meta(MetaKind::Root, name, meta);
        Ok(())
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        Ok(self
            .state()
            .meta
            .iter()
            .filter(|((kind, _), _)| *kind == MetaKind::Root)
            .map(|((_, name), meta)| (name.clone(), meta.clone()))
            .collect())
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        // Bounded by the head, as every backend is: a history item above
        // the current root is an earlier database's of the same name.
        let state = self.state();
        let head = state.meta.get(&(MetaKind::Root, name.clone()));
        if head.is_none_or(|head| version > head.version) {
            return Ok(None);
        }
        Ok(state.history.get(&(name.clone(), version)).cloned())
    }

    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        let state = self.state();
        let range = (name.clone(), 0)..(name.clone(), below.unwrap_or(u64::MAX));
        Ok(state
            .history
            .range(range)
            .rev()
            .take(limit)
            .map(|(_, meta)| meta.clone())
            .collect())
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let state = self.state();
        Ok(hashes
            .iter()
            .map(|h| state.sectors.get(&(db, *h)).map(|b| b.to_vec()))
            .collect())
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        let mut state = self.state();
        for (hash, bytes) in sectors {
            state
                .sectors
                .entry((db, *hash))
                .or_insert_with(|| bytes.as_slice().into());
        }
        Ok(())
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let mut state = self.state();
        for hash in hashes {
            state.sectors.remove(&(db, *hash));
        }
        Ok(())
    }

    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError> {
        let mut state = self.state();
        let current = state.meta.get(&(MetaKind::Root, name.clone()));
        let current = current.map(|m| m.version);
        for &version in versions {
            assert_ne!(Some(version), current, "gc never deletes the current root");
            state.history.remove(&(name.clone(), version));
        }
        Ok(())
    }

    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        let mut state = self.state();
        let key = (kind, name.clone());
        if state.meta.get(&key).map(|m| m.version) != Some(expected) {
            return Err(PutMetaError::Conflict);
        }
        state.meta.remove(&key);
        if kind == MetaKind::Root {
            state.history.remove(&(name.clone(), expected));
        }
        Ok(())
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        self.state().intents.insert((name.clone(), key), body);
        Ok(())
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        let state = self.state();
        let low = IntentKey { bound: 0, id: 0 };
        let high = IntentKey {
            bound: bound_below,
            id: 0,
        };
        Ok(state
            .intents
            .range((name.clone(), low)..(name.clone(), high))
            .take(limit)
            .map(|((_, key), body)| (*key, body.clone()))
            .collect())
    }

    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        let mut state = self.state();
        for key in keys {
            state.intents.remove(&(name.clone(), *key));
        }
        Ok(())
    }

    /// One step under the store's lock: the fence, the root's version (and
    /// whose root it is), the GC state's and the sectors are checked and
    /// written together.
    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        let Commit {
            name,
            db,
            expected,
            replaces,
            sectors,
            fence,
            state: swap,
        } = commit;
        let mut state = self.state();
        if let Some(fence) = fence {
            let lock = state.meta.get(&(MetaKind::Lock, name.clone()));
            if lock.map(|m| m.version) != Some(fence.lock_version) {
                return Err(PutMetaError::Fenced);
            }
        }
        if !state.root_is(name, expected, replaces) {
            return Err(PutMetaError::Conflict);
        }
        if let Some(swap) = swap {
            let gc = state.meta.get(&(MetaKind::Gc, swap.name.clone()));
            if gc.map(|m| m.version) != Some(swap.expected) {
                return Err(PutMetaError::Conflict);
            }
            state.put_meta(MetaKind::Gc, swap.name, swap.meta.clone());
        }
        for (hash, bytes) in sectors {
            state
                .sectors
                .entry((db, *hash))
                .or_insert_with(|| bytes.as_slice().into());
        }
        state.put_meta(MetaKind::Root, name, meta);
        Ok(())
    }

    async fn summary(&self) -> Result<StoredSummary, BackendError> {
        let state = self.state();
        let mut summary = StoredSummary::default();
        for ((kind, _), meta) in &state.meta {
            summary.add(kind.item_kind(), meta.body.len() as u64);
        }
        for meta in state.history.values() {
            summary.add(ItemKind::History, meta.body.len() as u64);
        }
        for sector in state.sectors.values() {
            summary.add(ItemKind::Sector, sector.len() as u64);
        }
        for body in state.intents.values() {
            summary.add(ItemKind::Intent, body.len() as u64);
        }
        Ok(summary)
    }
}
