//! The manifest: page index → page hash, as a small overlay in the root plus
//! a fixed-fanout tree of immutable, content-addressed chunks.
//!
//! A commit that changes few pages touches only the root's overlay (no chunk
//! is written); when the overlay would exceed [`OVERLAY_MAX`] entries it is
//! merged into the tree, rewriting only the chunks on the changed paths.
//! Layout in `docs/format.md`, "Manifest chunk".

use crate::root::TOP_INLINE_BYTES_MAX;
use crate::{FormatError, HASH_LEN, Hash, Root, TreeRef, ZERO_HASH, hash};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Entries per chunk, leaf or interior: 256 × 32 B = 8 KiB at most.
pub const FANOUT: usize = 256;
/// 256^4 = 2^32 entries cover every SQLite page number.
pub const MAX_DEPTH: u8 = 4;
/// Largest overlay a root carries (≈ 1.2 KiB of root).
pub const OVERLAY_MAX: usize = 32;
/// Most interior chunks a lookup fetches beyond the ones it needs: the
/// children of the upper levels it passes through, when that few.
pub const SIBLINGS_PREFETCH_MAX: usize = 16;
/// The file's first pages: page 1 and, in most schemas, the root pages of
/// the first tables and indexes. Their entries stay in the root's overlay
/// once written, so a reader with nothing cached knows their hashes from
/// the root alone and fetches them in one request (docs/format.md).
pub const HEAD_PAGES: u32 = 8;

const CHUNK_HEADER_LEN: usize = 4;
const KIND_LEAF: u8 = 1;
const KIND_INTERIOR: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    Leaf,
    Interior,
}

/// A decoded chunk: `entries[i]` is the hash of page (leaf) or child chunk
/// (interior) `i`; missing trailing entries are ZERO_HASH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// 1 for a leaf, n for an interior chunk whose children are at level n-1.
    pub level: u8,
    pub entries: Vec<Hash>,
}

impl Chunk {
    pub fn empty(level: u8) -> Chunk {
        Chunk {
            level,
            entries: vec![ZERO_HASH; FANOUT],
        }
    }

    pub fn kind(&self) -> ChunkKind {
        if self.level == 1 {
            ChunkKind::Leaf
        } else {
            ChunkKind::Interior
        }
    }

    pub fn entry(&self, slot: usize) -> Hash {
        assert!(slot < FANOUT);
        self.entries.get(slot).copied().unwrap_or(ZERO_HASH)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|h| *h == ZERO_HASH)
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!((1..=MAX_DEPTH).contains(&self.level));
        assert!(self.entries.len() <= FANOUT);
        let count = self
            .entries
            .iter()
            .rposition(|h| *h != ZERO_HASH)
            .map_or(0, |i| i + 1);
        let mut out = Vec::with_capacity(CHUNK_HEADER_LEN + count * HASH_LEN);
        out.push(if self.level == 1 {
            KIND_LEAF
        } else {
            KIND_INTERIOR
        });
        out.push(self.level);
        out.extend_from_slice(&(count as u16).to_le_bytes());
        for entry in &self.entries[..count] {
            out.extend_from_slice(entry);
        }
        out
    }

    /// Decodes a chunk as stored: salted (format v5) or plain.
    pub fn decode(stored: &[u8]) -> Result<Chunk, FormatError> {
        const WHAT: &str = "manifest chunk";
        let bytes = crate::salt::plain(stored);
        if bytes.len() < CHUNK_HEADER_LEN {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need: CHUNK_HEADER_LEN,
            });
        }
        let (kind, level) = (bytes[0], bytes[1]);
        let count = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
        let kind_ok = match kind {
            KIND_LEAF => level == 1,
            KIND_INTERIOR => (2..=MAX_DEPTH).contains(&level),
            _ => false,
        };
        if !kind_ok {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        if count > FANOUT {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("{count} entries > {FANOUT}"),
            });
        }
        let need = CHUNK_HEADER_LEN + count * HASH_LEN;
        if bytes.len() != need {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need,
            });
        }
        let mut entries = vec![ZERO_HASH; FANOUT];
        for (i, entry) in entries.iter_mut().take(count).enumerate() {
            let at = CHUNK_HEADER_LEN + i * HASH_LEN;
            entry.copy_from_slice(&bytes[at..at + HASH_LEN]);
        }
        Ok(Chunk { level, entries })
    }
}

/// Where the manifest's chunks come from: the guest's cache and storage, or
/// the host's. `load` returns the chunks in the order asked, verified against
/// their hashes; it is called once per tree level with every hash that level
/// needs, so a source can fetch them in one batch.
pub trait ChunkSource {
    type Error: From<FormatError>;
    fn load(&mut self, hashes: &[Hash]) -> Result<Vec<Arc<Chunk>>, Self::Error>;
}

/// How many entries a tree of `depth` levels covers.
fn coverage(depth: u8) -> u64 {
    (FANOUT as u64).pow(depth as u32)
}

/// The smallest depth that covers `entries` entries (at least 1).
fn depth_for(entries: u64) -> u8 {
    let mut depth = 1;
    while coverage(depth) < entries {
        depth += 1;
    }
    assert!(depth <= MAX_DEPTH);
    depth
}

/// Read access to a root's manifest.
pub struct Manifest<'a> {
    root: &'a Root,
}

/// A sector to store: its hash and bytes.
pub type NewSector = (Hash, Vec<u8>);

/// The manifest parts of a new root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestUpdate {
    pub tree: TreeRef,
    pub overlay: Vec<(u32, Hash)>,
    /// Chunks the new root references that may not be stored yet.
    pub new_chunks: Vec<NewSector>,
    /// The top chunk to carry in the root (`Root::top_inline`), if small.
    pub top_inline: Option<Vec<u8>>,
}

impl<'a> Manifest<'a> {
    pub fn new(root: &'a Root) -> Self {
        Manifest { root }
    }

    /// Hashes of the pages at `indices` (page number - 1); ZERO_HASH for a
    /// page that is absent (reads as zeros) or past the end.
    pub fn lookup_many<S: ChunkSource>(
        &self,
        indices: &[u32],
        source: &mut S,
    ) -> Result<Vec<Hash>, S::Error> {
        let root = self.root;
        let mut out = vec![ZERO_HASH; indices.len()];
        // (position in `out`, index, hash of the node at the current level)
        let mut pending: Vec<(usize, u32, Hash)> = Vec::new();
        for (pos, &index) in indices.iter().enumerate() {
            if index >= root.page_count {
                continue;
            }
            if let Ok(at) = root.overlay.binary_search_by_key(&index, |e| e.0) {
                out[pos] = root.overlay[at].1;
            } else if (index as u64) < coverage(root.tree.depth) && root.tree.top != ZERO_HASH {
                pending.push((pos, index, root.tree.top));
            }
        }
        // Interior chunks fetched along with the ones asked for (see below).
        let mut siblings: Vec<Hash> = Vec::new();
        for level in (1..=root.tree.depth).rev() {
            if pending.is_empty() {
                break;
            }
            let mut wanted: Vec<Hash> = pending.iter().map(|p| p.2).collect();
            wanted.append(&mut siblings);
            wanted.sort_unstable();
            wanted.dedup();
            let chunks = source.load(&wanted)?;
            assert_eq!(chunks.len(), wanted.len(), "chunk source returned too few");
            let by_hash: HashMap<Hash, Arc<Chunk>> = wanted.into_iter().zip(chunks).collect();
            let span = coverage(level - 1);
            pending.retain_mut(|(pos, index, node)| {
                let chunk = &by_hash[node];
                let child = chunk.entry(((*index as u64 / span) % FANOUT as u64) as usize);
                if level == 1 {
                    out[*pos] = child;
                    false
                } else {
                    *node = child;
                    child != ZERO_HASH
                }
            });
            for chunk in by_hash.values() {
                if chunk.level != level {
                    return Err(FormatError::Invalid {
                        what: "manifest chunk",
                        detail: format!("found level {} where {level} belongs", chunk.level),
                    }
                    .into());
                }
            }
            // The upper levels are few and every lookup passes through them:
            // when the next level is interior too, its chunks under the
            // parents just loaded come in the same request as the ones
            // needed now (a few at most), so later lookups find them cached.
            if level > 2 {
                let mut all: Vec<Hash> = by_hash
                    .values()
                    .flat_map(|chunk| chunk.entries.iter().copied())
                    .filter(|h| *h != ZERO_HASH)
                    .collect();
                all.sort_unstable();
                all.dedup();
                if all.len() <= SIBLINGS_PREFETCH_MAX {
                    siblings = all;
                }
            }
        }
        Ok(out)
    }

    /// The manifest after a commit that sets the pages in `changes` (index →
    /// hash, ZERO_HASH for "absent") and leaves `new_page_count` pages.
    /// Pages exposed by growth that `changes` does not set become absent.
    /// `changes` is taken by value and becomes the merge: a large commit's
    /// bookkeeping is held once (a 32 MiB instance committing 80,000 pages
    /// held it several times over and stopped at its limit). Every new
    /// chunk is salted with its position and `txn_id`, the committing
    /// transaction's (`crate::salt`).
    pub fn update<S: ChunkSource>(
        &self,
        changes: BTreeMap<u32, Hash>,
        new_page_count: u32,
        txn_id: u64,
        source: &mut S,
    ) -> Result<ManifestUpdate, S::Error> {
        let root = self.root;
        let mut merged = changes;
        drop(merged.split_off(&new_page_count));
        for index in root.page_count..new_page_count {
            merged.entry(index).or_insert(ZERO_HASH);
        }
        for &(index, hash) in &root.overlay {
            if index < root.page_count.min(new_page_count) {
                merged.entry(index).or_insert(hash);
            }
        }
        if merged.len() <= OVERLAY_MAX {
            return Ok(ManifestUpdate {
                tree: root.tree,
                overlay: merged.into_iter().collect(),
                new_chunks: Vec::new(),
                top_inline: root.top_inline.clone(),
            });
        }
        let (tree, new_chunks, head) = update_tree(root.tree, &merged, txn_id, source)?;
        // The head pages stay in the overlay (their entries are now in the
        // tree as well): all of them when the merge rewrote the first leaf,
        // else those the overlay had.
        let head_count = HEAD_PAGES.min(new_page_count);
        let overlay = match head {
            Some(head) => (0..head_count).zip(head).collect(),
            None => merged.range(..head_count).map(|(&i, &h)| (i, h)).collect(),
        };
        let top_inline = new_chunks
            .iter()
            .find(|c| c.0 == tree.top)
            .filter(|c| c.1.len() <= TOP_INLINE_BYTES_MAX)
            .map(|c| c.1.clone());
        Ok(ManifestUpdate {
            tree,
            overlay,
            new_chunks,
            top_inline,
        })
    }
}

/// What `update_tree` returns: the new tree, its new chunks, and the
/// entries of the head pages if the first leaf was rewritten.
type TreeUpdate = (TreeRef, Vec<NewSector>, Option<Vec<Hash>>);

/// Rewrites the chunks on the paths to `changes` (non-empty), bottom-up.
fn update_tree<S: ChunkSource>(
    tree: TreeRef,
    changes: &BTreeMap<u32, Hash>,
    txn_id: u64,
    source: &mut S,
) -> Result<TreeUpdate, S::Error> {
    let max_index = *changes.keys().next_back().expect("changes not empty") as u64;
    let depth = tree.depth.max(depth_for(max_index + 1));
    // Modified nodes by (level, node number); a level-L node covers
    // FANOUT^L entries.
    let mut nodes: BTreeMap<(u8, u64), Chunk> = BTreeMap::new();
    if tree.top != ZERO_HASH {
        // Growth: new levels above the old top, whose slot 0 leads to it.
        for level in tree.depth + 1..=depth {
            let mut node = Chunk::empty(level);
            if level == tree.depth + 1 {
                node.entries[0] = tree.top;
            }
            nodes.insert((level, 0), node);
        }
    }
    for level in (1..=depth).rev() {
        let span = coverage(level);
        let mut wanted: Vec<(u64, Hash)> = Vec::new();
        let mut needed: Vec<u64> = changes.keys().map(|&i| i as u64 / span).collect();
        needed.dedup();
        for node_no in needed {
            if nodes.contains_key(&(level, node_no)) {
                continue;
            }
            let existing = if level == depth {
                if level == tree.depth {
                    tree.top
                } else {
                    ZERO_HASH
                }
            } else {
                let parent = &nodes[&(level + 1, node_no / FANOUT as u64)];
                parent.entry((node_no % FANOUT as u64) as usize)
            };
            if existing == ZERO_HASH {
                nodes.insert((level, node_no), Chunk::empty(level));
            } else {
                wanted.push((node_no, existing));
            }
        }
        if !wanted.is_empty() {
            let hashes: Vec<Hash> = wanted.iter().map(|w| w.1).collect();
            let chunks = source.load(&hashes)?;
            assert_eq!(chunks.len(), hashes.len(), "chunk source returned too few");
            for ((node_no, _), chunk) in wanted.into_iter().zip(chunks) {
                if chunk.level != level {
                    return Err(FormatError::Invalid {
                        what: "manifest chunk",
                        detail: format!("found level {} where {level} belongs", chunk.level),
                    }
                    .into());
                }
                nodes.insert((level, node_no), (*chunk).clone());
            }
        }
    }
    for (&index, &hash) in changes {
        let leaf = nodes
            .get_mut(&(1, index as u64 / FANOUT as u64))
            .expect("leaf loaded for every change");
        leaf.entries[index as usize % FANOUT] = hash;
    }
    let head = nodes
        .get(&(1, 0))
        .map(|leaf| (0..HEAD_PAGES as usize).map(|i| leaf.entry(i)).collect());
    let mut new_chunks = Vec::new();
    let mut top = ZERO_HASH;
    for level in 1..=depth {
        let at_level: Vec<u64> = nodes
            .range((level, 0)..=(level, u64::MAX))
            .map(|(k, _)| k.1)
            .collect();
        for node_no in at_level {
            // Encoded nodes are freed as they go: decoded and encoded, the
            // tree a large commit rewrites would be held twice.
            let chunk = nodes.remove(&(level, node_no)).expect("listed");
            let chunk_hash = if chunk.is_empty() {
                ZERO_HASH
            } else {
                let salt = crate::Salt::chunk(level, node_no, txn_id);
                let bytes = crate::salt::salted(&chunk.encode(), salt);
                let chunk_hash = hash(&bytes);
                new_chunks.push((chunk_hash, bytes));
                chunk_hash
            };
            if level == depth {
                assert_eq!(node_no, 0, "one node at the top level");
                top = chunk_hash;
            } else {
                let parent = nodes
                    .get_mut(&(level + 1, node_no / FANOUT as u64))
                    .expect("parent on the path");
                parent.entries[(node_no % FANOUT as u64) as usize] = chunk_hash;
            }
        }
    }
    new_chunks.sort_by_key(|c| c.0);
    new_chunks.dedup_by(|a, b| a.0 == b.0);
    Ok((TreeRef { depth, top }, new_chunks, head))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DbId, Root};

    /// A chunk store that counts loads, like a real source would batch them.
    #[derive(Default)]
    struct Store {
        chunks: HashMap<Hash, Vec<u8>>,
        load_calls: usize,
    }

    impl ChunkSource for Store {
        type Error = FormatError;
        fn load(&mut self, hashes: &[Hash]) -> Result<Vec<Arc<Chunk>>, FormatError> {
            self.load_calls += 1;
            hashes
                .iter()
                .map(|h| {
                    let bytes = self.chunks.get(h).expect("chunk stored before use");
                    crate::verify(h, bytes)?;
                    Ok(Arc::new(Chunk::decode(bytes)?))
                })
                .collect()
        }
    }

    /// Applies a commit to `root` and the store, like the guest does.
    fn commit(root: &Root, store: &mut Store, changes: &BTreeMap<u32, Hash>, count: u32) -> Root {
        let update = Manifest::new(root)
            .update(changes.clone(), count, root.version + 1, store)
            .unwrap();
        for (h, bytes) in update.new_chunks {
            store.chunks.insert(h, bytes);
        }
        let next = Root {
            version: root.version + 1,
            page_count: count,
            tree: update.tree,
            overlay: update.overlay,
            top_inline: update.top_inline,
            ..root.clone()
        };
        Root::decode(&next.encode()).unwrap()
    }

    fn page_hash(index: u32, generation: u32) -> Hash {
        hash(&[index.to_le_bytes(), generation.to_le_bytes()].concat())
    }

    fn check(root: &Root, store: &mut Store, model: &BTreeMap<u32, Hash>) {
        let indices: Vec<u32> = (0..root.page_count + 3).collect();
        let got = Manifest::new(root).lookup_many(&indices, store).unwrap();
        for (&index, got) in indices.iter().zip(got) {
            let want = if index < root.page_count {
                model.get(&index).copied().unwrap_or(ZERO_HASH)
            } else {
                ZERO_HASH
            };
            assert_eq!(got, want, "page index {index}");
        }
    }

    /// Caches what it loaded, as the guest's source does, and records the
    /// misses of each load.
    struct Cached {
        inner: Store,
        cache: HashMap<Hash, Arc<Chunk>>,
        misses: Vec<Vec<Hash>>,
    }

    impl ChunkSource for Cached {
        type Error = FormatError;
        fn load(&mut self, hashes: &[Hash]) -> Result<Vec<Arc<Chunk>>, FormatError> {
            let missing: Vec<Hash> = hashes
                .iter()
                .copied()
                .filter(|h| !self.cache.contains_key(h))
                .collect();
            if !missing.is_empty() {
                for (h, chunk) in missing.iter().zip(self.inner.load(&missing)?) {
                    self.cache.insert(*h, chunk);
                }
                self.misses.push(missing);
            }
            Ok(hashes.iter().map(|h| self.cache[h].clone()).collect())
        }
    }

    #[test]
    fn head_pages_stay_in_the_overlay() {
        let mut store = Store::default();
        let root = Root::new_database(DbId([1; 16]), 4096, 0, 0);
        // A first commit large enough to go to the tree: the head pages'
        // entries are in the overlay as well.
        let changes: BTreeMap<u32, Hash> = (0..100).map(|i| (i, page_hash(i, 1))).collect();
        let root = commit(&root, &mut store, &changes, 100);
        let head: Vec<(u32, Hash)> = (0..HEAD_PAGES).map(|i| (i, page_hash(i, 1))).collect();
        assert_eq!(root.overlay, head);
        // Later commits change page 1 and others; the head stays, up to
        // date, through overlay merges into the tree.
        let mut root = root;
        for generation in 2..40u32 {
            let changes: BTreeMap<u32, Hash> = [0, 20 + generation]
                .iter()
                .map(|&i| (i, page_hash(i, generation)))
                .collect();
            root = commit(&root, &mut store, &changes, 100);
            let head_now: Vec<u32> = root
                .overlay
                .iter()
                .map(|e| e.0)
                .filter(|&i| i < HEAD_PAGES)
                .collect();
            assert_eq!(
                head_now,
                (0..HEAD_PAGES).collect::<Vec<_>>(),
                "{generation}"
            );
            let got = Manifest::new(&root).lookup_many(&[0], &mut store).unwrap();
            assert_eq!(got, vec![page_hash(0, generation)]);
        }
        // A file shorter than the head keeps only the pages it has.
        let root = commit(&root, &mut store, &BTreeMap::new(), 3);
        assert!(root.overlay.iter().all(|e| e.0 < 3), "{:?}", root.overlay);
    }

    #[test]
    fn upper_interior_chunks_come_with_the_first_lookup() {
        // Depth 3: four level-2 chunks under the top.
        let mut store = Store::default();
        let root = Root::new_database(DbId([1; 16]), 4096, 0, 0);
        let far = [0u32, 70_000, 140_000, 200_000];
        let changes: BTreeMap<u32, Hash> = far
            .iter()
            .flat_map(|&i| (i..i + 20).map(|j| (j, page_hash(j, 1))))
            .collect();
        let root = commit(&root, &mut store, &changes, 200_020);
        assert_eq!(root.tree.depth, 3);
        let mut source = Cached {
            inner: store,
            cache: HashMap::new(),
            misses: Vec::new(),
        };
        let got = Manifest::new(&root)
            .lookup_many(&[10], &mut source)
            .unwrap();
        assert_eq!(got, vec![page_hash(10, 1)]);
        // top; all four level-2 chunks together; one leaf chunk.
        let sizes: Vec<usize> = source.misses.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 4, 1]);
        // A page under another level-2 chunk now costs only its leaf chunk.
        source.misses.clear();
        let got = Manifest::new(&root)
            .lookup_many(&[140_005], &mut source)
            .unwrap();
        assert_eq!(got, vec![page_hash(140_005, 1)]);
        assert_eq!(source.misses.len(), 1, "{:?}", source.misses);
    }

    #[test]
    fn chunk_round_trips_and_trims() {
        let mut chunk = Chunk::empty(2);
        chunk.entries[3] = [7; 32];
        let bytes = chunk.encode();
        assert_eq!(bytes.len(), CHUNK_HEADER_LEN + 4 * HASH_LEN);
        assert_eq!(Chunk::decode(&bytes).unwrap(), chunk);
        assert!(Chunk::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(Chunk::decode(&bad).is_err());
        let mut bad_level = bytes;
        bad_level[1] = 1; // interior kind with leaf level
        assert!(Chunk::decode(&bad_level).is_err());
    }

    #[test]
    fn small_commits_stay_in_the_overlay() {
        let mut store = Store::default();
        let root = Root::new_database(DbId([1; 16]), 4096, 0, 0);
        let changes: BTreeMap<u32, Hash> = (0..5).map(|i| (i, page_hash(i, 1))).collect();
        let next = commit(&root, &mut store, &changes, 5);
        assert_eq!(next.overlay.len(), 5);
        assert_eq!(next.tree, TreeRef::EMPTY);
        assert!(
            store.chunks.is_empty(),
            "no chunk written for a small commit"
        );
        check(&next, &mut store, &changes);
    }

    #[test]
    fn large_commit_flushes_into_a_tree_and_reads_back() {
        let mut store = Store::default();
        let mut root = Root::new_database(DbId([1; 16]), 4096, 0, 0);
        let mut model = BTreeMap::new();
        // Grow through depths 1, 2 and 3.
        for (generation, count) in [(1u32, 100u32), (2, 300), (3, 70_000), (4, 70_001)] {
            let changes: BTreeMap<u32, Hash> = (root.page_count..count)
                .chain([0, count / 2])
                .map(|i| (i, page_hash(i, generation)))
                .collect();
            model.extend(changes.clone());
            root = commit(&root, &mut store, &changes, count);
            check(&root, &mut store, &model);
        }
        assert_eq!(root.tree.depth, 3);
    }

    #[test]
    fn lookups_load_one_batch_per_level() {
        let mut store = Store::default();
        let root = Root::new_database(DbId([1; 16]), 4096, 0, 0);
        let changes: BTreeMap<u32, Hash> = (0..70_000).map(|i| (i, page_hash(i, 1))).collect();
        let root = commit(&root, &mut store, &changes, 70_000);
        assert_eq!(root.tree.depth, 3);
        store.load_calls = 0;
        let got = Manifest::new(&root)
            .lookup_many(&[1, 500, 69_999, 40_000], &mut store)
            .unwrap();
        assert_eq!(got[2], page_hash(69_999, 1));
        assert_eq!(store.load_calls, 3, "one load per level");
    }

    #[test]
    fn truncate_then_grow_exposes_no_stale_page() {
        let mut store = Store::default();
        let root = Root::new_database(DbId([1; 16]), 4096, 0, 0);
        let all: BTreeMap<u32, Hash> = (0..600).map(|i| (i, page_hash(i, 1))).collect();
        let root = commit(&root, &mut store, &all, 600);
        // Shrink to 10 pages, then grow to 700 writing only page 699.
        let root = commit(
            &root,
            &mut store,
            &BTreeMap::from([(0, page_hash(0, 2))]),
            10,
        );
        let last = BTreeMap::from([(699, page_hash(699, 3))]);
        let root = commit(&root, &mut store, &last, 700);
        let mut model: BTreeMap<u32, Hash> = (0..10).map(|i| (i, page_hash(i, 1))).collect();
        model.insert(0, page_hash(0, 2));
        model.insert(699, page_hash(699, 3));
        check(&root, &mut store, &model);
    }

    #[test]
    fn absent_pages_leave_no_chunks() {
        let mut store = Store::default();
        let root = Root::new_database(DbId([1; 16]), 4096, 0, 0);
        let changes: BTreeMap<u32, Hash> = (0..40).map(|i| (i * 300, ZERO_HASH)).collect();
        let root = commit(&root, &mut store, &changes, 40 * 300);
        assert_eq!(root.tree.top, ZERO_HASH);
        assert!(store.chunks.is_empty());
        check(&root, &mut store, &BTreeMap::new());
    }
}
