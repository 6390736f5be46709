//! After a run: garbage collection, attacked (docs/format.md, "Garbage
//! collection"). `gc` retires the versions before a sampled one — killed
//! at a drawn point of its deletes, then run again — and every kept
//! version must read as it did, every retired one be refused ("no longer
//! kept"), never read as other rows. The history checks then restore a
//! kept version and collect again while the restore's mark stands: the
//! restored version must read as its source. Then a fork: both collected
//! down to their newest versions, the fork removed and collected away —
//! the source must read as before throughout.

use crate::Rng;
use async_trait::async_trait;
use donut_format::{DbId, DbName, GcState, Hash, Root};
use donut_host::MemoryBackend;
use donut_host::backend::{Backend, BackendError, Layer, Meta, MetaKind};
use donut_host::storage::{GcOptions, GcReport, collect_garbage};
use std::sync::atomic::{AtomicU32, Ordering};

/// A planted bug in what `gc` sees of the GC state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blind {
    /// `gc-ignores-restores`: runs do not see restore marks.
    Restores,
    /// `gc-ignores-forks`: runs take a forked database for one alone.
    Forks,
    /// `gc-misjudges-intents`: every kept root reads as written by another
    /// transaction, so no intent's transaction seems to have committed.
    IntentFates,
}

/// Collects `name`'s garbage as it stood at `horizon_ms` (retention 0 at
/// that time): first through a backend that dies at a drawn delete call
/// (its error is the kill), then to the end.
pub fn collect_at(
    reader: &impl crate::history::Reader,
    store: &MemoryBackend,
    name: &DbName,
    horizon_ms: u64,
    rng: &mut Rng,
    blind: Option<Blind>,
) -> Result<GcReport, String> {
    let options = GcOptions {
        retain_ms: 0,
        now_ms: horizon_ms,
        write_units_max: None,
        keep_from: None,
    };
    let killing = Faulty {
        inner: store.clone(),
        deletes_left: AtomicU32::new(rng.below(4) as u32),
        blind,
    };
    // The killed run: whatever it did must leave nothing live lost.
    let _ = reader.block_on(collect_garbage(&killing, name, options));
    let whole = Faulty {
        inner: store.clone(),
        deletes_left: AtomicU32::new(u32::MAX),
        blind,
    };
    reader
        .block_on(collect_garbage(&whole, name, options))
        .map_err(|e| format!("gc at {horizon_ms}: {e}"))
}

/// The store as a gc run sees it: `delete_sectors` dies after
/// `deletes_left` calls (deleting half its batch first); `blind` hides
/// restore marks or forks from the GC state it reads.
struct Faulty {
    inner: MemoryBackend,
    deletes_left: AtomicU32,
    blind: Option<Blind>,
}

#[async_trait]
impl Layer for Faulty {
    type Inner = MemoryBackend;

    fn inner(&self) -> &MemoryBackend {
        &self.inner
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        let found = self.inner.get_meta(kind, name).await?;
        match (kind, found) {
            (MetaKind::Gc, Some(meta))
                if matches!(self.blind, Some(Blind::Restores | Blind::Forks)) =>
            {
                let mut state = GcState::decode(&meta.body)
                    .map_err(|e| BackendError::Corrupt(e.to_string()))?;
                match self.blind {
                    Some(Blind::Restores) => state.restores.clear(),
                    _ => (state.forked, state.family) = (false, None),
                }
                Ok(Some(Meta {
                    version: meta.version,
                    body: state.encode(),
                }))
            }
            (_, found) => Ok(found),
        }
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        let found = self.inner.get_root_version(name, version).await?;
        match found {
            Some(meta) if self.blind == Some(Blind::IntentFates) => {
                let Ok(mut root) = Root::decode(&meta.body) else {
                    return Ok(Some(meta)); // a tombstone
                };
                root.txn_id ^= 1;
                Ok(Some(Meta {
                    version: meta.version,
                    body: root.encode(),
                }))
            }
            found => Ok(found),
        }
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let left = self.deletes_left.load(Ordering::SeqCst);
        if left == 0 {
            self.inner
                .delete_sectors(db, &hashes[..hashes.len() / 2])
                .await?;
            return Err(BackendError::Unavailable("gc killed".into()));
        }
        self.deletes_left
            .store(left.saturating_sub(1), Ordering::SeqCst);
        self.inner.delete_sectors(db, hashes).await
    }
}
