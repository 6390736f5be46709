//! The commit fence on every backend: a lease-holding writer's commit is
//! refused once the lock item moved on (a takeover), and nothing of it is
//! visible.

use crate::backend_tests;
use crate::util::Harness;
use donut_host::backend::{Commit, Fence, Meta, MetaKind, PutMetaError};

backend_tests!(a_fenced_commit_is_refused_once_the_lock_item_moved);

/// A stale fence refuses the commit — on DynamoDB in the same
/// TransactWriteItems as the root put, elsewhere under the store's lock —
/// whether the sectors travel with the root or before it.
async fn a_fenced_commit_is_refused_once_the_lock_item_moved(h: Harness) {
    let backend = h.backend.clone();
    let name = donut_format::DbName::new("fence.db").unwrap();
    let root = donut_host::storage::create_database(&backend, &name, 4096)
        .await
        .expect("create");
    let lock = |version: u64| Meta {
        version,
        body: donut_format::LockState::unlocked(version).encode(),
    };
    backend
        .put_meta(MetaKind::Lock, &name, None, lock(1))
        .await
        .unwrap();
    let small: Vec<(donut_format::Hash, Vec<u8>)> = vec![(donut_format::hash(b"p"), b"p".to_vec())];
    let large: Vec<(donut_format::Hash, Vec<u8>)> = (0..120u32)
        .map(|i| {
            let page = i.to_le_bytes().repeat(100);
            (donut_format::hash(&page), page)
        })
        .collect();
    let mut version = root.version;
    for sectors in [&small, &large] {
        let next = |v: u64| {
            let mut r = root.clone();
            r.version = v + 1;
            Meta {
                version: v + 1,
                body: r.encode(),
            }
        };
        // Someone took the lease over: the lock item moved on.
        let current_lock = backend
            .get_meta(MetaKind::Lock, &name)
            .await
            .unwrap()
            .unwrap();
        backend
            .put_meta(
                MetaKind::Lock,
                &name,
                Some(current_lock.version),
                lock(current_lock.version + 1),
            )
            .await
            .unwrap();
        let commit = |sectors, fence| Commit {
            name: &name,
            db: root.db_id,
            expected: Some(version),
            replaces: donut_host::backend::Replaces::Database(root.db_id),
            sectors,
            fence: Some(fence),
            state: None,
        };
        let stale = Fence {
            lock_version: current_lock.version,
        };
        let refused = backend.commit(commit(sectors, stale), next(version)).await;
        assert_eq!(
            refused,
            Err(PutMetaError::Fenced),
            "{} sectors",
            sectors.len()
        );
        assert_eq!(
            h.version("fence.db").await,
            version,
            "nothing of it is visible"
        );
        let held = Fence {
            lock_version: current_lock.version + 1,
        };
        backend
            .commit(commit(sectors, held), next(version))
            .await
            .expect("the holder commits");
        version += 1;
        assert_eq!(h.version("fence.db").await, version);
    }
}
