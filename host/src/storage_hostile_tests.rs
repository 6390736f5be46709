//! A hostile plugin at the storage boundary: seeded random calls straight
//! into the host side of `donut:storage` — names outside the grant,
//! crafted roots and manifest trees, wrong hashes, huge lists, handles used
//! after they were dropped or never existed, leases never released. The
//! host must answer every call (an error or a trap, never a panic, never a
//! stall), and nothing outside the plugin's grant may change.
//! `DONUT_HOSTILE_SEEDS=N` runs more seeds; `DONUT_HOSTILE_SEED=S` one.

use super::donut::storage::storage::{Host, HostDatabase, HostLock};
use super::*;
use crate::backend::memory::MemoryBackend;
use donut_format::{DbId, HASH_LEN, Hash, Root, TreeRef, ZERO_HASH};

/// Seeds run by default (each `OPS_PER_SEED` calls).
const SEEDS_DEFAULT: u64 = 48;
const OPS_PER_SEED: usize = 160;
/// A call that takes longer is a stall.
const CALL_MS_MAX: u64 = 20_000;

/// splitmix64: the same calls for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `len_max` random bytes.
    fn some_bytes(&mut self, len_max: usize) -> Vec<u8> {
        let len = self.below(len_max);
        self.bytes(len)
    }
}

/// Names a hostile plugin tries: its own, the victim's, and tricks.
const NAMES: &[&str] = &[
    "evil-1",
    "evil-2",
    "evil-",
    "victim-1",
    "Victim-1",
    "victim-1 ",
    "evil-1/../victim-1",
    "..",
    "",
    "vіctim-1", // Cyrillic і
    "evil-\u{0}",
    "evil-\u{202e}1",
];

/// What the plugin has seen, to aim its next calls.
#[derive(Default)]
struct Seen {
    dbs: Vec<u32>,
    locks: Vec<u32>,
    hashes: Vec<Vec<u8>>,
    roots: Vec<(u64, Vec<u8>)>,
}

fn borrow<T: 'static>(rep: u32) -> Resource<T> {
    Resource::new_borrow(rep)
}

fn own<T: 'static>(rep: u32) -> Resource<T> {
    Resource::new_own(rep)
}

impl Seen {
    /// A handle seen (maybe dropped since), or one never handed out.
    fn db(&self, rng: &mut Rng) -> u32 {
        match (self.dbs.is_empty(), rng.below(8)) {
            (false, 0..=6) => *rng.pick(&self.dbs),
            _ => rng.next() as u32 % 64,
        }
    }

    fn lock(&self, rng: &mut Rng) -> u32 {
        match (self.locks.is_empty(), rng.below(8)) {
            (false, 0..=6) => *rng.pick(&self.locks),
            _ => rng.next() as u32 % 64,
        }
    }

    fn hashes(&self, rng: &mut Rng) -> Vec<Vec<u8>> {
        let count = *rng.pick(&[0usize, 1, 3, 40, SECTORS_PER_CALL_MAX + 1]);
        (0..count)
            .map(|_| match rng.below(6) {
                0 | 1 if !self.hashes.is_empty() => rng.pick(&self.hashes).clone(),
                2 => rng.some_bytes(40),
                _ => rng.bytes(HASH_LEN),
            })
            .collect()
    }

    fn sectors(&self, rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
        let count = *rng.pick(&[0usize, 1, 2, 5, 120]);
        (0..count)
            .map(|_| {
                let len = *rng.pick(&[0usize, 1, 100, 4096, SECTOR_BYTES_MAX + 1]);
                let bytes = rng.bytes(len);
                let hash = match rng.below(4) {
                    0 => rng.bytes(HASH_LEN),
                    1 => rng.some_bytes(40),
                    _ => donut_format::hash(&bytes).to_vec(),
                };
                (hash, bytes)
            })
            .collect()
    }

    /// A root body: one seen, mutated, or crafted from scratch with trees
    /// that point anywhere.
    fn body(&self, rng: &mut Rng, expected: u64) -> Vec<u8> {
        match rng.below(5) {
            0 if !self.roots.is_empty() => rng.pick(&self.roots).1.clone(),
            1 if !self.roots.is_empty() => {
                let mut body = rng.pick(&self.roots).1.clone();
                let at = rng.below(body.len());
                if let Some(byte) = body.get_mut(at) {
                    *byte ^= 1 << rng.below(8);
                }
                body
            }
            2 => rng.some_bytes(300),
            _ => {
                let seen = self.roots.first().and_then(|(_, b)| Root::decode(b).ok());
                let db_id = match (seen, rng.below(3)) {
                    (Some(root), 0 | 1) => root.db_id,
                    _ => DbId(rng.bytes(16).try_into().unwrap_or([0; 16])),
                };
                let top = match self.hashes.is_empty() {
                    false => Hash::try_from(rng.pick(&self.hashes).as_slice()).unwrap_or(ZERO_HASH),
                    true => ZERO_HASH,
                };
                let mut root = Root::new_database(db_id, 4096, rng.next(), rng.next());
                root.version = expected.wrapping_add(1);
                root.page_count = rng.next() as u32 % 100_000;
                let depth = rng.below(5) as u8;
                root.tree = match depth {
                    0 => TreeRef::EMPTY,
                    depth => TreeRef { depth, top },
                };
                let overlay = rng.below(4);
                root.overlay = (0..overlay)
                    .map(|i| {
                        let hash = rng.bytes(HASH_LEN).try_into().unwrap_or(ZERO_HASH);
                        (i as u32, hash)
                    })
                    .collect();
                root.lease_required = rng.below(4) == 0;
                // Only roots that hold their invariants encode; the
                // mutated and random bodies above cover the others.
                match root.check_invariants() {
                    Ok(()) => root.encode(),
                    Err(_) => rng.some_bytes(200),
                }
            }
        }
    }
}

/// One hostile call. `Err` is the host's answer (an error value or a
/// trap); only a panic or a stall fails the test.
async fn hostile_call(ctx: &mut StorageCtx, seen: &mut Seen, rng: &mut Rng) {
    let op = rng.below(16);
    match op {
        0 => {
            if let Ok(db) = HostDatabase::open(ctx, rng.pick(NAMES).to_string()).await {
                seen.dbs.push(db.rep());
            }
        }
        1 => {
            let page_size = *rng.pick(&[0u32, 1, 511, 512, 4096, 65536, 131072, u32::MAX]);
            if let Ok(db) = HostDatabase::create(ctx, rng.pick(NAMES).to_string(), page_size).await
            {
                seen.dbs.push(db.rep());
            }
        }
        2 => {
            if let Ok(root) = HostDatabase::read_root(ctx, borrow(seen.db(rng))).await {
                seen.roots.push((root.version, root.body));
            }
        }
        3 => {
            let hashes = seen.hashes(rng);
            let _ = HostDatabase::get_sectors(ctx, borrow(seen.db(rng)), hashes).await;
        }
        4 => {
            let sectors = seen.sectors(rng);
            let hashes: Vec<Vec<u8>> = sectors.iter().map(|s| s.0.clone()).collect();
            if HostDatabase::put_sectors(ctx, borrow(seen.db(rng)), sectors)
                .await
                .is_ok()
            {
                seen.hashes.extend(hashes);
            }
        }
        5 => {
            let expected = match (seen.roots.is_empty(), rng.below(3)) {
                (false, 0 | 1) => rng.pick(&seen.roots).0,
                _ => rng.next() % 4,
            };
            let body = seen.body(rng, expected);
            let fence = (rng.below(3) == 0).then(|| borrow(seen.lock(rng)));
            let sectors = if rng.below(2) == 0 {
                Vec::new()
            } else {
                seen.sectors(rng)
            };
            let db = borrow(seen.db(rng));
            let _ = HostDatabase::commit_root(ctx, db, expected, body, fence, sectors).await;
        }
        6 => {
            let mode = if rng.below(2) == 0 {
                WitLockMode::Shared
            } else {
                WitLockMode::Exclusive
            };
            let lease_ms = *rng.pick(&[0u32, 1, 1000, LEASE_MS_MAX, LEASE_MS_MAX + 1, u32::MAX]);
            if let Ok(lock) = HostDatabase::acquire(ctx, borrow(seen.db(rng)), mode, lease_ms).await
            {
                seen.locks.push(lock.rep());
            }
        }
        7 => {
            let _ = HostLock::token(ctx, borrow(seen.lock(rng))).await;
        }
        8 => {
            let ms = *rng.pick(&[0u32, 500, LEASE_MS_MAX + 1, u32::MAX]);
            let _ = HostLock::renew(ctx, borrow(seen.lock(rng)), ms).await;
        }
        9 => {
            let _ = HostLock::release(ctx, borrow(seen.lock(rng))).await;
        }
        10 => {
            let _ = HostLock::remaining_ms(ctx, borrow(seen.lock(rng))).await;
        }
        11 => {
            let _ = HostDatabase::drop(ctx, own(seen.db(rng))).await;
        }
        12 => {
            let _ = HostLock::drop(ctx, own(seen.lock(rng))).await;
        }
        13 => {
            let count = *rng.pick(&[0usize, 5, SECTORS_PER_CALL_MAX + 1]);
            let items = (0..count).map(|_| rng.some_bytes(64)).collect();
            let _ = Host::hash_all(ctx, items).await;
        }
        14 => {
            let _ = HostDatabase::newest_version_seen(ctx, borrow(seen.db(rng))).await;
        }
        _ => {
            let _ = HostDatabase::name(ctx, borrow(seen.db(rng))).await;
        }
    }
}

/// Every database outside `prefix`, with its stored root.
async fn outside(backend: &dyn Backend, prefix: &str) -> Vec<(String, Option<(u64, Vec<u8>)>)> {
    let all = donut_store::db::list_databases(backend)
        .await
        .expect("list");
    let mut out = Vec::new();
    for (name, _) in all {
        if name.as_str().starts_with(prefix) {
            continue;
        }
        let root = read_root(backend, &name)
            .await
            .ok()
            .map(|(m, _)| (m.version, m.body));
        out.push((name.to_string(), root));
    }
    out
}

/// The victim's database with a few sectors; their hashes.
async fn victim(backend: &Arc<dyn Backend>) -> Vec<Vec<u8>> {
    let mut ctx = StorageCtx::new(backend.clone(), Grant::prefixed(["victim-".into()], true));
    let db = HostDatabase::create(&mut ctx, "victim-1".into(), 4096)
        .await
        .expect("victim database");
    let sectors: Vec<(Vec<u8>, Vec<u8>)> = (0..5u8)
        .map(|i| {
            let bytes = vec![i; 4096];
            (donut_format::hash(&bytes).to_vec(), bytes)
        })
        .collect();
    let hashes = sectors.iter().map(|s| s.0.clone()).collect();
    HostDatabase::put_sectors(&mut ctx, borrow(db.rep()), sectors)
        .await
        .expect("victim sectors");
    hashes
}

async fn one_seed(seed: u64) {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let victim_hashes = victim(&backend).await;
    let before = outside(&*backend, "evil-").await;
    let cache = SectorCache::new(64 << 20);
    let mut rng = Rng(seed);
    let quota = match seed % 3 {
        0 => CallQuota {
            storage_calls_max: Some(60),
            sectors_max: Some(5_000),
            bytes_max: Some(8 << 20),
        },
        _ => CallQuota::unlimited(),
    };
    let grant = Grant::prefixed(["evil-".into()], true);
    let mut ctx = StorageCtx::new(backend.clone(), grant)
        .with_cache(cache.clone())
        .with_quota(quota);
    // It knows the victim's sector hashes (content addressing is no secret).
    let mut seen = Seen {
        hashes: victim_hashes.clone(),
        ..Seen::default()
    };
    for op in 0..OPS_PER_SEED {
        let call = hostile_call(&mut ctx, &mut seen, &mut rng);
        let within = tokio::time::timeout(std::time::Duration::from_millis(CALL_MS_MAX), call);
        assert!(within.await.is_ok(), "seed {seed}: call {op} stalled");
    }
    drop(ctx);
    let after = outside(&*backend, "evil-").await;
    assert_eq!(
        before, after,
        "seed {seed}: a database outside the grant changed"
    );
    // The victim still reads its sectors and takes its lock.
    let mut victim = StorageCtx::new(backend.clone(), Grant::prefixed(["victim-".into()], false))
        .with_cache(cache);
    let db = HostDatabase::open(&mut victim, "victim-1".into())
        .await
        .expect("open");
    let read = HostDatabase::get_sectors(&mut victim, borrow(db.rep()), victim_hashes.clone())
        .await
        .expect("victim sectors");
    assert!(
        read.iter().all(Option::is_some),
        "seed {seed}: a victim sector is gone"
    );
    let lock = HostDatabase::acquire(&mut victim, borrow(db.rep()), WitLockMode::Exclusive, 5_000)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: the victim's lock: {e}"));
    HostLock::release(&mut victim, lock).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_never_panics_or_stalls_the_host_and_damages_only_its_own_grant() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("DONUT_HOSTILE_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("DONUT_HOSTILE_SEEDS").unwrap_or(SEEDS_DEFAULT)).collect(),
    };
    for seed in seeds {
        one_seed(seed).await;
    }
}

#[tokio::test]
async fn sectors_before_a_root_read_count_the_root_read_against_the_quota() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    victim(&backend).await;
    let quota = CallQuota {
        storage_calls_max: Some(1),
        ..CallQuota::unlimited()
    };
    let mut ctx = StorageCtx::new(backend, Grant::all()).with_quota(quota);
    let db = HostDatabase::open(&mut ctx, "victim-1".into())
        .await
        .expect("open");
    // One call for get-sectors, one for the root read that finds the
    // database's id: past a quota of one.
    let got = HostDatabase::get_sectors(&mut ctx, borrow(db.rep()), vec![vec![0; HASH_LEN]]).await;
    assert!(matches!(got, Err(StorageError::Trap(_))), "{got:?}");
    assert_eq!(ctx.quota_used().storage_calls, 1);
    assert!(ctx.quota_exceeded().is_some());
}

#[tokio::test]
async fn an_instance_holds_a_bounded_number_of_handles() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    victim(&backend).await;
    let mut ctx = StorageCtx::new(backend, Grant::all());
    let mut held = Vec::new();
    for _ in 0..HANDLES_PER_INSTANCE_MAX {
        held.push(
            HostDatabase::open(&mut ctx, "victim-1".into())
                .await
                .expect("open"),
        );
    }
    let over = HostDatabase::open(&mut ctx, "victim-1".into()).await;
    assert!(
        matches!(over, Err(StorageError::TooLarge(_))),
        "{:?}",
        over.map(|r| r.rep())
    );
    let first = held.swap_remove(0);
    HostDatabase::drop(&mut ctx, first).await.expect("drop");
    HostDatabase::open(&mut ctx, "victim-1".into())
        .await
        .expect("a freed slot is usable again");
}
