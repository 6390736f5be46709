//! Leases on a database's lock item: taking, renewing and releasing them by
//! compare-and-swap (docs/format.md, "Lock item").

use crate::backend::{Backend, Meta, MetaKind, PutMetaError};
use crate::clock::Clock;
use crate::error::StorageError;
use crate::random_u64;
use crate::stats::StorageStats;
use donut_format::{DbName, LOCK_HOLDERS_MAX, LockHolder, LockMode, LockState};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Attempts at a lock item's compare-and-swap before answering `busy`.
const LOCK_CAS_ATTEMPTS: u32 = 8;

/// A lease held by a guest: what the host knows of it. Shared between the
/// guest's handle and the task that renews it, behind an async mutex so a
/// renewal never changes the fence under a commit in flight.
pub struct Lease {
    pub name: DbName,
    pub owner: u64,
    pub token: u64,
    pub exclusive: bool,
    pub lease_ms: u32,
    /// The lock item's version as this holder last wrote it: the fence.
    pub lock_version: u64,
    /// When the lease lapses by this host's clock.
    pub expires_ms: u64,
    /// The lock item's state as this holder last wrote it (at
    /// `lock_version`): the next renewal or release starts from it.
    pub state: LockState,
    /// Released, lost, or its handle dropped: nothing renews it any more.
    pub ended: bool,
}

pub type SharedLease = Arc<tokio::sync::Mutex<Lease>>;

/// How a held lease is kept alive while its guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeaseRenewal {
    /// A task on the current tokio runtime renews every third of the lease.
    #[default]
    Background,
    /// Renewed when the guest makes a storage call and a third of the lease
    /// has passed (deterministic: for the simulator, which runs no tasks).
    OnCall,
}

/// How long a host operation (push, rm) holds a lease it takes.
const HOST_LEASE_MS: u32 = 60_000;

/// An exclusive lease a host operation takes on a database whose root
/// requires it; released right after the swap.
pub(crate) struct HostLease {
    owner: u64,
    pub(crate) lock_version: u64,
    state: LockState,
}

impl HostLease {
    pub(crate) async fn take(
        backend: &dyn Backend,
        name: &DbName,
    ) -> Result<HostLease, StorageError> {
        let owner = random_u64();
        let ((), lock_version, state) =
            update_lock(backend, &Clock::System, name, None, |state, now| {
                let state = with_holder(state, now, name, owner, true, HOST_LEASE_MS)?;
                Ok((state, ()))
            })
            .await
            .map_err(|e| match e {
                StorageError::Busy(m) => StorageError::Busy(format!(
                    "{name:?} has an exclusive writer: {m}; try again once it closes"
                )),
                e => e,
            })?;
        Ok(HostLease {
            owner,
            lock_version,
            state,
        })
    }

    pub(crate) async fn release(
        self,
        backend: &dyn Backend,
        name: &DbName,
    ) -> Result<(), StorageError> {
        let known = Some((self.lock_version, self.state));
        without_holder(backend, &Clock::System, name, known, self.owner)
            .await
            .map(drop)
    }
}

/// Removes `owner` from the lock item of `name` (a release); returns the
/// version and state written.
pub async fn without_holder(
    backend: &dyn Backend,
    clock: &Clock,
    name: &DbName,
    known: Option<(u64, LockState)>,
    owner: u64,
) -> Result<(u64, LockState), StorageError> {
    let ((), version, state) = update_lock(backend, clock, name, known, |mut state, _| {
        state.holders.retain(|h| h.owner != owner);
        Ok((state, ()))
    })
    .await?;
    Ok((version, state))
}

/// `state` with `owner` added as a holder of a lease of `lease_ms` from
/// `now`, or `busy` if the lease cannot be shared with its live holders.
pub fn with_holder(
    state: LockState,
    now: u64,
    name: &DbName,
    owner: u64,
    exclusive: bool,
    lease_ms: u32,
) -> Result<LockState, StorageError> {
    let live: Vec<LockHolder> = state.live_holders(now).copied().collect();
    let blocked = if exclusive {
        !live.is_empty()
    } else {
        state.mode == LockMode::Exclusive && !live.is_empty()
    };
    if blocked || live.len() >= LOCK_HOLDERS_MAX {
        let until = live.iter().map(|h| h.expires_ms).max().unwrap_or(now);
        return Err(StorageError::Busy(format!(
            "the lock of {name:?} is held for another {} ms",
            until.saturating_sub(now)
        )));
    }
    let mut holders = live;
    holders.push(LockHolder {
        owner,
        expires_ms: now + lease_ms as u64,
    });
    Ok(LockState {
        token: state.token + 1,
        mode: if exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        },
        holders,
    })
}

pub async fn lock_state(
    backend: &dyn Backend,
    name: &DbName,
) -> Result<(Option<u64>, LockState), StorageError> {
    match backend.get_meta(MetaKind::Lock, name).await? {
        None => Ok((None, LockState::unlocked(0))),
        Some(meta) => {
            let state = LockState::decode(&meta.body)
                .map_err(|e| StorageError::Corrupt(format!("lock of {name:?}: {e}")))?;
            Ok((Some(meta.version), state))
        }
    }
}

/// Applies `change` to the lock item of `name` by compare-and-swap,
/// re-reading on conflict a bounded number of times.
/// `known`: the lock item as this host last wrote it, if it did; tried
/// first without reading (one request instead of two when nobody wrote it
/// since — the compare-and-swap tells). Returns `change`'s output, the
/// version written and the state written.
pub async fn update_lock<T>(
    backend: &dyn Backend,
    clock: &Clock,
    name: &DbName,
    known: Option<(u64, LockState)>,
    mut change: impl FnMut(LockState, u64) -> Result<(LockState, T), StorageError>,
) -> Result<(T, u64, LockState), StorageError> {
    let mut guess = known;
    for _ in 0..LOCK_CAS_ATTEMPTS {
        let guessed = guess.is_some();
        let (version, state) = match guess.take() {
            Some((version, state)) => (Some(version), state),
            None => lock_state(backend, name).await?,
        };
        let (next, out) = match change(state, clock.now_ms()) {
            Ok(changed) => changed,
            // A refusal based on a guess is checked against the real item.
            Err(_) if guessed => continue,
            Err(e) => return Err(e),
        };
        let written = version.map_or(1, |v| v + 1);
        let meta = Meta {
            version: written,
            body: next.encode(),
        };
        match backend
            .put_meta(MetaKind::Lock, name, version, meta.clone())
            .await
        {
            Ok(()) => return Ok((out, written, next)),
            Err(PutMetaError::Conflict | PutMetaError::Fenced) => continue,
            // The answer was lost: the item tells whether our write applied
            // (then it is ours, and the lease is held), else try again.
            Err(PutMetaError::Backend(e)) if !e.is_definite() => {
                match backend.get_meta(MetaKind::Lock, name).await {
                    Ok(Some(stored)) if stored == meta => return Ok((out, written, next)),
                    Ok(_) => continue,
                    Err(_) => return Err(e.into()),
                }
            }
            Err(PutMetaError::Backend(e)) => return Err(e.into()),
        }
    }
    Err(StorageError::Busy(format!(
        "the lock of {name:?} is contended"
    )))
}

/// Extends `lease` by its length from now; marks it ended if it was lost.
pub async fn renew_lease(
    backend: &dyn Backend,
    clock: &Clock,
    lease: &mut Lease,
) -> Result<(), StorageError> {
    if lease.ended {
        return Err(StorageError::Busy(format!(
            "the lease on {:?} was released or lost",
            lease.name
        )));
    }
    let (owner, token, lease_ms, name) = (lease.owner, lease.token, lease.lease_ms, &lease.name);
    let known = Some((lease.lock_version, lease.state.clone()));
    let result = update_lock(backend, clock, name, known, |mut state, now| {
        let mine = state
            .holders
            .iter_mut()
            .find(|h| h.owner == owner && h.expires_ms > now);
        match mine {
            Some(holder) if state.token >= token => {
                holder.expires_ms = now + lease_ms as u64;
                Ok((state, now + lease_ms as u64))
            }
            _ => Err(StorageError::Busy(format!(
                "the lease on {name:?} was lost"
            ))),
        }
    })
    .await;
    match result {
        Ok((expires_ms, version, state)) => {
            lease.expires_ms = expires_ms;
            lease.lock_version = version;
            lease.state = state;
            Ok(())
        }
        Err(e) => {
            if matches!(e, StorageError::Busy(_)) {
                lease.ended = true;
            }
            Err(e)
        }
    }
}

/// Renews `lease` every third of its length until it ends or the task is
/// aborted (its handle dropped).
pub async fn renew_in_background(
    backend: Arc<dyn Backend>,
    clock: Clock,
    lease: SharedLease,
    stats: Arc<StorageStats>,
) {
    loop {
        let lease_ms = lease.lock().await.lease_ms;
        tokio::time::sleep(std::time::Duration::from_millis(
            (lease_ms / 3).max(1) as u64
        ))
        .await;
        let mut held = lease.lock().await;
        if held.ended {
            return;
        }
        // A failed renewal (backend down) is retried next round; a lost
        // lease ends the loop. Either way a commit re-checks the fence.
        stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
        if renew_lease(&*backend, &clock, &mut held).await.is_err() && held.ended {
            return;
        }
    }
}
