//! Intents (docs/format.md, "Intents"): before sectors are stored outside
//! a one-request commit — a large commit's first request, a transaction's
//! spilled pages, a push — their keys are recorded under the database's
//! name, so `gc` can find what a refused or killed commit left without a
//! scan. Written here; read and collected by `gc`.

use crate::backend::Backend;
use crate::error::StorageError;
use donut_format::salt::salt_of;
use donut_format::{DbId, DbName, Hash, INTENT_KEYS_MAX, Intent, IntentSector};
use std::collections::BTreeMap;

/// Records the intents for storing `sectors` of database `db` (named
/// `name`): one per writing transaction (the salts say which) and per
/// [`INTENT_KEYS_MAX`] keys. `bound`: a version that exists and is at
/// least the one the writing transaction read, so it can only commit as
/// `bound + 1` or never. Unsalted sectors (written by components older
/// than format v5) are not recorded: `gc` never deletes those anyway.
/// Must complete before the sectors are stored.
pub async fn record(
    backend: &dyn Backend,
    name: &DbName,
    db: DbId,
    bound: u64,
    sectors: &[(Hash, Vec<u8>)],
    now_ms: u64,
) -> Result<(), StorageError> {
    for intent in intents(db, bound, sectors, now_ms) {
        let key = intent.key();
        backend.put_intent(name, key, intent.encode()).await?;
    }
    Ok(())
}

/// The intents [`record`] writes.
pub fn intents(db: DbId, bound: u64, sectors: &[(Hash, Vec<u8>)], now_ms: u64) -> Vec<Intent> {
    let mut by_txn: BTreeMap<u64, Vec<IntentSector>> = BTreeMap::new();
    for (key, bytes) in sectors {
        // A malformed salt is refused when the sector is read; here it is
        // one the guest could not have meant as a salt: not recorded.
        if let Ok(Some(salt)) = salt_of(bytes) {
            by_txn
                .entry(salt.txn_id)
                .or_default()
                .push(IntentSector::of(*key, salt));
        }
    }
    let mut out = Vec::new();
    for (txn_id, mut listed) in by_txn {
        listed.sort_unstable();
        listed.dedup();
        for part in listed.chunks(INTENT_KEYS_MAX) {
            out.push(Intent {
                db_id: db,
                txn_id,
                bound,
                written_ms: now_ms,
                sectors: part.to_vec(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use donut_format::salt::salted;
    use donut_format::{Salt, hash};

    fn sector(index: u32, txn_id: u64) -> (Hash, Vec<u8>) {
        let stored = salted(&[index as u8; 512], Salt::page(index, txn_id));
        (hash(&stored), stored)
    }

    #[test]
    fn intents_are_one_per_transaction_and_skip_unsalted_sectors() {
        let unsalted = vec![7u8; 512];
        let sectors = vec![
            sector(3, 10),
            sector(1, 10),
            sector(2, 11),
            (hash(&unsalted), unsalted),
            sector(3, 10),
        ];
        let made = intents(DbId([1; 16]), 5, &sectors, 99);
        assert_eq!(made.len(), 2);
        assert_eq!(made[0].txn_id, 10);
        assert_eq!(made[0].sectors.len(), 2, "the repeated sector once");
        assert_eq!(made[0].sectors.iter().map(|s| s.slot).min(), Some(1));
        assert_eq!(made[1].txn_id, 11);
        assert!(made.iter().all(|i| i.bound == 5 && i.written_ms == 99));
    }
}
