//! `serve`'s background garbage collection (docs/format.md, "Garbage
//! collection"): every `[service] gc_every_secs`, each database some
//! tenant's grant covers — removed ones too, whose items go once their
//! retention has passed — is collected with `gc_retain_secs`, and a round
//! stops once its deletes reach `gc_write_units_max` (estimated write
//! units); the next round starts after the database where this one
//! stopped, so a large database cannot starve the rest.

use super::Service;
use crate::storage::{GcOptions, GcReport, StorageError, collect_garbage};
use donut_format::DbName;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcRound {
    /// Databases collected (a run finished, whatever it found).
    pub databases: u64,
    pub versions_retired: u64,
    pub sectors_deleted: u64,
    pub sector_bytes_deleted: u64,
    /// Intent items dealt with (docs/format.md, "Intents").
    pub intents_collected: u64,
    /// Removed databases of which nothing is left now.
    pub removed: u64,
    /// Runs that failed (logged; the next round tries again).
    pub errors: u64,
    /// The write budget ran out: the next round goes on after `last`.
    pub stopped_at_budget: bool,
    /// The last database this round reached.
    pub last: Option<DbName>,
}

impl GcRound {
    fn add(&mut self, report: &GcReport) {
        self.databases += 1;
        self.versions_retired += report.versions_retired;
        self.sectors_deleted += report.sectors_deleted;
        self.sector_bytes_deleted += report.sector_bytes_deleted;
        self.intents_collected += report.intents_collected;
        self.removed += u64::from(report.removed);
    }
}

impl Service {
    /// One round of garbage collection at `now_ms`, starting after
    /// `after` (the previous round's `last`, if it stopped at its budget).
    pub async fn collect_garbage(
        &self,
        now_ms: u64,
        after: Option<&DbName>,
    ) -> Result<GcRound, StorageError> {
        let backend = self.tenants.backend();
        let mut names: Vec<DbName> = backend
            .list_roots()
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| self.tenants.covers(name))
            .collect();
        // Resume after `after`, then wrap around.
        let start = after.map_or(0, |after| names.partition_point(|name| name <= after));
        names.rotate_left(start);
        let mut round = GcRound::default();
        let mut units_left = self.config.gc_write_units_max;
        for name in names {
            let options = GcOptions {
                retain_ms: (self.config.gc_retain_secs * 1000.0) as u64,
                now_ms,
                write_units_max: Some(units_left),
                keep_from: None,
            };
            round.last = Some(name.clone());
            match collect_garbage(&**backend, &name, options).await {
                Ok(report) => {
                    round.add(&report);
                    units_left = units_left.saturating_sub(report.write_units);
                    if report.stopped_at_budget || units_left == 0 {
                        round.stopped_at_budget = true;
                        break;
                    }
                }
                // Removed meanwhile, or another host's run: not an error.
                Err(StorageError::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(database = %name, "gc: {e}");
                    round.errors += 1;
                }
            }
        }
        self.metrics.record_gc(&round);
        Ok(round)
    }
}

/// Runs a round every `[service] gc_every_secs` until the task is dropped.
pub(super) async fn run_in_background(service: std::sync::Arc<Service>) {
    let every = std::time::Duration::from_secs_f64(service.config.gc_every_secs);
    let mut after: Option<DbName> = None;
    loop {
        tokio::time::sleep(every).await;
        let now_ms = crate::storage::Clock::System.now_ms();
        match service.collect_garbage(now_ms, after.as_ref()).await {
            Ok(round) => {
                tracing::info!(
                    databases = round.databases,
                    versions_retired = round.versions_retired,
                    sectors_deleted = round.sectors_deleted,
                    bytes_deleted = round.sector_bytes_deleted,
                    intents_collected = round.intents_collected,
                    removed = round.removed,
                    errors = round.errors,
                    stopped_at_budget = round.stopped_at_budget,
                    "gc round"
                );
                after = round.stopped_at_budget.then_some(round.last).flatten();
            }
            Err(e) => tracing::warn!("gc round failed: {e}"),
        }
    }
}
