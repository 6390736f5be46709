//! How an instance's memory limit is divided among what the VFS keeps in
//! memory: the two sector caches, the in-memory journals' budget and the
//! pending pages a write transaction holds before it spills them.
//!
//! Every share scales with the limit the host tells
//! ([`donut_format::limits::MEMORY_LIMIT_ENV`]): a fixed share (the caches
//! were 40 MiB whatever the limit) let a statement that reads a large
//! database — dropping a 40 MB table reads every page — fill the caches
//! past a 32 MiB limit and stop the instance, where SQLite on a disk
//! succeeds (found by the differential fuzzer, seed 272).

/// What a share of memory is set to when the host does not say its limit.
const PAGE_CACHE_BYTES_MAX: usize = 32 << 20;
const CHUNK_CACHE_BYTES_MAX: usize = 8 << 20;
pub(crate) const JOURNAL_BYTES_MAX_DEFAULT: usize = 1 << 30;
const SPILL_BYTES_MAX: usize = 64 << 20;
/// Set aside for SQLite's heap (its own page cache, schema, statements), a
/// transaction's bookkeeping (the hashes of spilled pages, the manifest
/// changes a commit builds) and the copies host calls make.
const MARGIN_BYTES_MAX: usize = 24 << 20;

/// The bytes each use may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryPlan {
    /// Page bytes (with [`CACHE_ENTRY_OVERHEAD_BYTES`] each) the page cache
    /// keeps.
    pub page_cache_bytes: usize,
    /// Encoded manifest-chunk bytes the chunk cache keeps.
    pub chunk_cache_bytes: usize,
    /// What every in-memory file of the VFS may hold together (rollback
    /// journals, temporary files).
    pub journal_bytes_max: usize,
    /// Pending page bytes past which a write transaction stores its pages
    /// early (`PRAGMA donut_spill_bytes` changes it per connection).
    pub spill_bytes: usize,
}

/// What a cached sector costs besides its bytes: the map entry, the key
/// (database id and hash), the reference count. Small pages (512 bytes)
/// would otherwise overrun the cache's share by a quarter.
pub(crate) const CACHE_ENTRY_OVERHEAD_BYTES: usize = 128;

impl MemoryPlan {
    /// The plan for an instance with this memory limit (`None`: the host
    /// did not say one).
    pub(crate) fn for_limit(limit_bytes: Option<usize>) -> MemoryPlan {
        let Some(limit) = limit_bytes else {
            return MemoryPlan {
                page_cache_bytes: PAGE_CACHE_BYTES_MAX,
                chunk_cache_bytes: CHUNK_CACHE_BYTES_MAX,
                journal_bytes_max: JOURNAL_BYTES_MAX_DEFAULT,
                spill_bytes: SPILL_BYTES_MAX,
            };
        };
        let page_cache_bytes = PAGE_CACHE_BYTES_MAX.min(limit / 8);
        let chunk_cache_bytes = CHUNK_CACHE_BYTES_MAX.min(limit / 16);
        let margin_bytes = MARGIN_BYTES_MAX.min(limit / 8 * 3);
        let available_bytes = limit - page_cache_bytes - chunk_cache_bytes - margin_bytes;
        let plan = MemoryPlan {
            page_cache_bytes,
            chunk_cache_bytes,
            journal_bytes_max: available_bytes / 2,
            spill_bytes: SPILL_BYTES_MAX.min(available_bytes / 4),
        };
        assert!(
            plan.page_cache_bytes
                + plan.chunk_cache_bytes
                + plan.journal_bytes_max
                + plan.spill_bytes
                + margin_bytes
                <= limit,
            "the plan fits its limit"
        );
        plan
    }

    /// The plan for this instance (its limit read once).
    pub(crate) fn instance() -> MemoryPlan {
        MemoryPlan::for_limit(crate::memory_limit_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_limit_the_shares_are_their_maximums() {
        let plan = MemoryPlan::for_limit(None);
        assert_eq!(plan.page_cache_bytes, 32 << 20);
        assert_eq!(plan.journal_bytes_max, 1 << 30);
        assert_eq!(plan.spill_bytes, 64 << 20);
    }

    #[test]
    fn every_share_scales_with_a_small_limit() {
        let limit = 32 << 20;
        let plan = MemoryPlan::for_limit(Some(limit));
        assert_eq!(plan.page_cache_bytes, 4 << 20);
        assert_eq!(plan.chunk_cache_bytes, 2 << 20);
        assert!(plan.journal_bytes_max >= 6 << 20, "{plan:?}");
        assert!(plan.spill_bytes >= 3 << 20, "{plan:?}");
        let sum = plan.page_cache_bytes
            + plan.chunk_cache_bytes
            + plan.journal_bytes_max
            + plan.spill_bytes;
        assert!(sum <= limit * 3 / 4, "{plan:?}");
    }

    #[test]
    fn a_large_limit_caps_the_caches_and_the_spill_threshold() {
        let plan = MemoryPlan::for_limit(Some(2 << 30));
        assert_eq!(plan.page_cache_bytes, 32 << 20);
        assert_eq!(plan.chunk_cache_bytes, 8 << 20);
        assert_eq!(plan.spill_bytes, 64 << 20);
        assert_eq!(plan.journal_bytes_max, ((2 << 30) - (64 << 20)) / 2);
    }

    #[test]
    fn tiny_limits_do_not_underflow() {
        for limit in [0, 1, 7, 4096, 1 << 20] {
            let plan = MemoryPlan::for_limit(Some(limit));
            assert!(plan.page_cache_bytes + plan.journal_bytes_max <= limit);
        }
    }
}
