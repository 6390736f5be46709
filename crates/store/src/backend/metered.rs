//! Wrappers for benchmarks and simulation: [`Metered`] counts what a
//! backend call would cost on DynamoDB (requests by kind, capacity units as
//! billed, bytes), and [`Latency`] delays every call, modelling a remote
//! store on top of the in-memory one.

use super::{
    BATCH_GET_MAX, BATCH_WRITE_MAX, Backend, BackendError, Commit, Meta, MetaKind, PutMetaError,
    Replaces,
};
use crate::stats::RequestStats;
use async_trait::async_trait;
use donut_format::items::dynamo::{
    META_ITEM_OVERHEAD_BYTES as META_ITEM_OVERHEAD,
    SECTOR_ITEM_OVERHEAD_BYTES as SECTOR_ITEM_OVERHEAD,
};
use donut_format::{DbId, DbName, Hash, IntentKey};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a workload cost, as DynamoDB would bill it.
/// Read units: 4 KB each, halved for eventually consistent reads.
fn read_units(item_bytes: usize, consistent: bool) -> f64 {
    let units = item_bytes.div_ceil(4096).max(1) as f64;
    if consistent { units } else { units / 2.0 }
}

/// A meta item's size as DynamoDB bills it: its body, keys and version.
fn meta_item_bytes(name: &DbName, meta: &Meta) -> usize {
    meta.body.len() + META_ITEM_OVERHEAD + name.as_str().len()
}

/// An intent item's size as DynamoDB bills it: its body, keys and sort
/// number (up to 29 digits: 16 bytes).
fn intent_item_bytes(name: &DbName, body: &[u8]) -> usize {
    body.len() + META_ITEM_OVERHEAD + name.as_str().len() + 8
}

/// Write units: 1 KB each.
fn write_units(item_bytes: usize) -> f64 {
    item_bytes.div_ceil(1024).max(1) as f64
}

/// Sector bytes as the DynamoDB backend would store them (zstd when smaller).
fn stored_len(bytes: &[u8]) -> usize {
    match zstd::bulk::compress(bytes, super::dynamo::ZSTD_LEVEL) {
        Ok(packed) if packed.len() < bytes.len() => packed.len(),
        _ => bytes.len(),
    }
}

/// Counts DynamoDB-equivalent requests and capacity of every call.
/// A commit the inner backend sends as one request is billed as one
/// TransactWriteItems (twice the write units), as DynamoDB bills it.
pub struct Metered<B> {
    inner: B,
    meter: Arc<Mutex<RequestStats>>,
    /// The size of each meta item as last seen (read or written): DynamoDB
    /// bills a put on the larger of the item it replaces and the new one.
    meta_sizes: Mutex<std::collections::HashMap<(MetaKind, String), usize>>,
    /// The size of each intent item written or listed through this meter:
    /// DynamoDB bills a delete by the size of the item it deletes.
    intent_sizes: Mutex<std::collections::HashMap<(String, IntentKey), usize>>,
}

/// `backend` with what its requests cost added to `bill`: what DynamoDB
/// answered, for a backend that reports it, else the billing model's
/// figures ([`Metered`]). One call's share of the cost.
pub fn billed(backend: &Arc<dyn Backend>, bill: &Arc<Mutex<RequestStats>>) -> Arc<dyn Backend> {
    backend.billed_to(bill).unwrap_or_else(|| {
        Arc::new(Metered {
            inner: backend.clone(),
            meter: bill.clone(),
            meta_sizes: Mutex::new(std::collections::HashMap::new()),
            intent_sizes: Mutex::new(std::collections::HashMap::new()),
        })
    })
}

impl<B: Backend> Metered<B> {
    pub fn new(inner: B) -> Self {
        Metered {
            inner,
            meter: Arc::new(Mutex::new(RequestStats::default())),
            meta_sizes: Mutex::new(std::collections::HashMap::new()),
            intent_sizes: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Records `new_size` as the size of a meta item; returns the size it
    /// had (0: unknown or absent).
    fn swap_meta_size(&self, kind: MetaKind, name: &DbName, new_size: Option<usize>) -> usize {
        let mut sizes = self.meta_sizes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind, name.as_str().to_string());
        let old = sizes.get(&key).copied().unwrap_or(0);
        if let Some(size) = new_size {
            sizes.insert(key, size);
        }
        old
    }

    /// Remembers intent items' sizes as DynamoDB bills them.
    fn saw_intents<'a>(
        &self,
        name: &DbName,
        items: impl IntoIterator<Item = (IntentKey, &'a [u8])>,
    ) {
        let mut sizes = self.intent_sizes.lock().unwrap_or_else(|e| e.into_inner());
        for (key, body) in items {
            sizes.insert(
                (name.as_str().to_string(), key),
                intent_item_bytes(name, body),
            );
        }
    }

    pub fn meter(&self) -> RequestStats {
        self.meter.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn add(
        &self,
        op: &'static str,
        requests: u64,
        rcu: f64,
        wcu: f64,
        read: usize,
        written: usize,
    ) {
        let mut m = self.meter.lock().unwrap_or_else(|e| e.into_inner());
        *m.requests.entry(op).or_default() += requests;
        m.read_capacity_units += rcu;
        m.write_capacity_units += wcu;
        m.bytes_read += read as u64;
        m.bytes_written += written as u64;
    }
}

#[async_trait]
impl<B: Backend> super::Layer for Metered<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        let out = self.inner.get_meta(kind, name).await?;
        let size = out.as_ref().map_or(0, |m| meta_item_bytes(name, m));
        self.swap_meta_size(kind, name, Some(size));
        // A key not found costs a read unit too.
        self.add("GetItem", 1, read_units(size, true), 0.0, size, 0);
        Ok(out)
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let size = meta_item_bytes(name, &meta);
        let out = self.inner.put_meta(kind, name, expected, meta).await;
        // Billed on the larger of the replaced and the new item, and a
        // failed condition is billed too (AWS, "DynamoDB read and write
        // operations").
        let old = self.swap_meta_size(kind, name, out.is_ok().then_some(size));
        match kind {
            // A root goes with its history item, in one transaction
            // (docs/format.md, "History"): both written at twice the units.
            MetaKind::Root => {
                let wcu = 2.0 * (write_units(size.max(old)) + write_units(size));
                self.add("TransactWriteItems", 1, 0.0, wcu, 0, 2 * size);
            }
            MetaKind::Lock | MetaKind::Gc | MetaKind::Family => {
                self.add("PutItem", 1, 0.0, write_units(size.max(old)), 0, size)
            }
        }
        out
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let size = meta_item_bytes(name, &meta);
        let out = self.inner.put_root(name, expected, replaces, meta).await;
        // As a root's `put_meta`: with its history item, in one transaction.
        let old = self.swap_meta_size(MetaKind::Root, name, out.is_ok().then_some(size));
        let wcu = 2.0 * (write_units(size.max(old)) + write_units(size));
        self.add("TransactWriteItems", 1, 0.0, wcu, 0, 2 * size);
        out
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        let out = self.inner.get_root_version(name, version).await?;
        let size = out.as_ref().map_or(0, |m| meta_item_bytes(name, m));
        self.add("GetItem", 1, read_units(size, true), 0.0, size, 0);
        Ok(out)
    }

    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        let out = self.inner.root_history(name, below, limit).await?;
        let size: usize = out.iter().map(|m| meta_item_bytes(name, m)).sum();
        self.add("Query", 1, read_units(size, true), 0.0, size, 0);
        Ok(out)
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        let out = self.inner.list_roots().await?;
        let size: usize = out
            .iter()
            .map(|(n, m)| n.as_str().len() + m.body.len())
            .sum();
        self.add("Query", 1, read_units(size, true), 0.0, size, 0);
        Ok(out)
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let out = self.inner.get_sectors(db, hashes).await?;
        let mut rcu = 0.0;
        let mut bytes = 0;
        for sector in out.iter().flatten() {
            let size = stored_len(sector) + SECTOR_ITEM_OVERHEAD;
            rcu += read_units(size, false);
            bytes += size;
        }
        let requests = hashes.len().div_ceil(BATCH_GET_MAX) as u64;
        self.add("BatchGetItem", requests, rcu, 0.0, bytes, 0);
        Ok(out)
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        self.inner.put_sectors(db, sectors).await?;
        let mut wcu = 0.0;
        let mut bytes = 0;
        for (_, sector) in sectors {
            let size = stored_len(sector) + SECTOR_ITEM_OVERHEAD;
            wcu += write_units(size);
            bytes += size;
        }
        let requests = sectors.len().div_ceil(BATCH_WRITE_MAX) as u64;
        self.add("BatchWriteItem", requests, 0.0, wcu, 0, bytes);
        Ok(())
    }

    /// Billed as DynamoDB bills a delete: the units of the item deleted
    /// (sized by reading it from the inner store, which is not billed).
    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let found = self.inner.get_sectors(db, hashes).await?;
        self.inner.delete_sectors(db, hashes).await?;
        let wcu: f64 = found
            .iter()
            .flatten()
            .map(|sector| write_units(stored_len(sector) + SECTOR_ITEM_OVERHEAD))
            .sum::<f64>()
            + found.iter().filter(|s| s.is_none()).count() as f64;
        let requests = hashes.len().div_ceil(BATCH_WRITE_MAX) as u64;
        self.add("BatchWriteItem", requests, 0.0, wcu, 0, 0);
        Ok(())
    }

    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError> {
        let mut wcu = 0.0;
        for version in versions {
            let size = match self.inner.get_root_version(name, *version).await? {
                Some(meta) => meta_item_bytes(name, &meta),
                None => 0,
            };
            wcu += write_units(size);
        }
        self.inner.delete_root_versions(name, versions).await?;
        let requests = versions.len().div_ceil(BATCH_WRITE_MAX) as u64;
        self.add("BatchWriteItem", requests, 0.0, wcu, 0, 0);
        Ok(())
    }

    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        let size = self.swap_meta_size(kind, name, None);
        let out = self.inner.delete_meta(kind, name, expected).await;
        match kind {
            // The root, its history item and its catalog entry, in one
            // transaction: twice the units of each.
            MetaKind::Root => {
                let wcu = 2.0 * (2.0 * write_units(size) + 1.0);
                self.add("TransactWriteItems", 1, 0.0, wcu, 0, 0);
            }
            _ => self.add("DeleteItem", 1, 0.0, write_units(size), 0, 0),
        }
        out
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        let size = intent_item_bytes(name, &body);
        self.saw_intents(name, [(key, &body[..])]);
        self.inner.put_intent(name, key, body).await?;
        self.add("PutItem", 1, 0.0, write_units(size), 0, size);
        Ok(())
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        let out = self.inner.list_intents(name, bound_below, limit).await?;
        self.saw_intents(name, out.iter().map(|(k, b)| (*k, &b[..])));
        let size: usize = out.iter().map(|(_, b)| intent_item_bytes(name, b)).sum();
        self.add("Query", 1, read_units(size, true), 0.0, size, 0);
        Ok(out)
    }

    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        // Billed by the size of the item deleted, as this meter saw it
        // written or listed (gc lists before it deletes); 1 unit if not.
        let wcu: f64 = {
            let mut sizes = self.intent_sizes.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .map(|key| {
                    let known = sizes.remove(&(name.as_str().to_string(), *key));
                    write_units(known.unwrap_or(0))
                })
                .sum()
        };
        self.inner.delete_intents(name, keys).await?;
        let requests = keys.len().div_ceil(BATCH_WRITE_MAX) as u64;
        self.add("BatchWriteItem", requests, 0.0, wcu, 0, 0);
        Ok(())
    }

    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        let one_request = self
            .inner
            .commits_in_one_request(commit.sectors, commit.fence.is_some());
        let Some((ahead, inside)) = super::transaction_plan(one_request, &commit) else {
            return super::commit_in_two(self, commit, meta).await;
        };
        if !ahead.is_empty() {
            super::Layer::put_sectors(self, commit.db, ahead).await?; // billed as BatchWriteItem
        }
        let name = commit.name.as_str();
        // Transactional writes cost twice the write units, each on the
        // larger of the replaced and the new item.
        let root_size = meta_item_bytes(commit.name, &meta);
        let old_root = self.swap_meta_size(MetaKind::Root, commit.name, None);
        // The root and its history item.
        let mut wcu = 2.0 * (write_units(root_size.max(old_root)) + write_units(root_size));
        if commit.fence.is_some() {
            // The lock item's ConditionCheck is billed like a write of it.
            wcu += 2.0 * write_units(META_ITEM_OVERHEAD + name.len() + 64);
        }
        if let Some(state) = commit.state {
            // A restore's or fork's GC state, put in the same transaction.
            let size = META_ITEM_OVERHEAD + state.name.as_str().len() + state.meta.body.len();
            wcu += 2.0 * write_units(size);
        }
        let mut bytes = 2 * root_size;
        for (_, sector) in inside {
            let size = stored_len(sector) + SECTOR_ITEM_OVERHEAD;
            wcu += 2.0 * write_units(size);
            bytes += size;
        }
        let mut transaction = commit;
        transaction.sectors = inside;
        let out = self.inner.commit(transaction, meta).await;
        if out.is_ok() {
            self.swap_meta_size(MetaKind::Root, commit.name, Some(root_size));
        }
        self.add("TransactWriteItems", 1, 0.0, wcu, 0, bytes);
        out
    }
}

/// Delays every call by a fixed latency: one round trip to a remote store
/// (a batch call's requests run in parallel, so it costs one latency too;
/// so does a commit that fits one request, if `one_request_commit`).
pub struct Latency<B> {
    inner: B,
    latency: Duration,
    one_request_commit: bool,
}

impl<B: Backend> Latency<B> {
    pub fn new(inner: B, latency: Duration, one_request_commit: bool) -> Self {
        Latency {
            inner,
            latency,
            one_request_commit,
        }
    }

    async fn wait(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait]
impl<B: Backend> super::Layer for Latency<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        &self.inner
    }

    fn describe(&self) -> String {
        format!(
            "{} (+{} ms a call)",
            self.inner.describe(),
            self.latency.as_millis()
        )
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        self.wait().await;
        self.inner.get_meta(kind, name).await
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        self.wait().await;
        self.inner.put_meta(kind, name, expected, meta).await
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        self.wait().await;
        self.inner.put_root(name, expected, replaces, meta).await
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        self.wait().await;
        self.inner.list_roots().await
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.wait().await;
        self.inner.get_sectors(db, hashes).await
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        self.wait().await;
        self.inner.put_sectors(db, sectors).await
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        self.wait().await;
        self.inner.put_intent(name, key, body).await
    }

    fn commits_in_one_request(&self, sectors: &[(Hash, Vec<u8>)], fenced: bool) -> bool {
        self.one_request_commit && !sectors.is_empty() && super::fits_one_request(sectors, fenced)
    }

    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        let one_request =
            super::Layer::commits_in_one_request(self, commit.sectors, commit.fence.is_some());
        let Some((ahead, inside)) = super::transaction_plan(one_request, &commit) else {
            return super::commit_in_two(self, commit, meta).await;
        };
        if !ahead.is_empty() {
            super::Layer::put_sectors(self, commit.db, ahead).await?;
        }
        self.wait().await;
        let mut transaction = commit;
        transaction.sectors = inside;
        self.inner.commit(transaction, meta).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[tokio::test]
    async fn bills_like_dynamodb() {
        let store = Metered::new(MemoryBackend::new());
        let db = DbId([1; 16]);
        let pages: Vec<(Hash, Vec<u8>)> = (0..30u8)
            .map(|i| {
                let mut page = vec![0u8; 4096];
                getrandom::fill(&mut page).unwrap();
                page[0] = i;
                (donut_format::hash(&page), page)
            })
            .collect();
        store.put_sectors(db, &pages).await.unwrap();
        let m = store.meter();
        assert_eq!(
            m.requests["BatchWriteItem"], 2,
            "30 items = 2 requests of ≤ 25"
        );
        // Random 4 KiB + ~120 B of key: 5 write units each.
        assert_eq!(m.write_capacity_units, 150.0);
        let hashes: Vec<Hash> = pages.iter().map(|p| p.0).collect();
        store.get_sectors(db, &hashes).await.unwrap();
        let m = store.meter();
        assert_eq!(m.requests["BatchGetItem"], 1);
        // 4,216 B = 2 read units each, halved for eventual consistency.
        assert_eq!(m.read_capacity_units, 30.0);
        // Deletes (gc) are billed by the size of what they delete: 5 units
        // a page, and 1 for an item that is not there.
        let mut doomed = hashes[..10].to_vec();
        doomed.push([9; 32]);
        let before = store.meter();
        store.delete_sectors(db, &doomed).await.unwrap();
        let m = store.meter();
        assert_eq!(
            m.requests["BatchWriteItem"] - before.requests["BatchWriteItem"],
            1
        );
        assert_eq!(m.write_capacity_units - before.write_capacity_units, 51.0);
    }

    /// A fenced commit whose sectors do not travel with the root is billed
    /// as DynamoDB runs it: the sectors in a batch, then one transaction
    /// (root put + lock check) — not a lock read and a plain put.
    #[tokio::test]
    async fn a_fenced_two_request_commit_is_one_transaction() {
        use crate::backend::Fence;
        let store = Metered::new(MemoryBackend::new());
        let name = DbName::new("f.db").unwrap();
        let db = DbId([1; 16]);
        let meta = |version: u64| {
            let mut root = donut_format::Root::new_database(db, 4096, 0, version);
            root.version = version;
            Meta {
                version,
                body: root.encode(),
            }
        };
        store
            .put_meta(MetaKind::Root, &name, None, meta(1))
            .await
            .unwrap();
        store
            .put_meta(MetaKind::Lock, &name, None, meta(1))
            .await
            .unwrap();
        let page = vec![5u8; 4096];
        let sectors = vec![(donut_format::hash(&page), page)];
        let before = store.meter();
        let commit = Commit {
            name: &name,
            db,
            expected: Some(1),
            replaces: Replaces::Database(db),
            sectors: &sectors,
            fence: Some(Fence { lock_version: 1 }),
            state: None,
        };
        store.commit(commit, meta(2)).await.unwrap();
        let spent = store.meter().since(&before);
        assert_eq!(spent.requests.get("BatchWriteItem"), Some(&1), "{spent:?}");
        assert_eq!(
            spent.requests.get("TransactWriteItems"),
            Some(&1),
            "{spent:?}"
        );
        assert_eq!(spent.requests.get("GetItem"), None, "{spent:?}");
        assert_eq!(spent.requests.get("PutItem"), None, "{spent:?}");
    }
}
