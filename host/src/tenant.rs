//! Many tenants' plugins on one store: who may run, within which limits,
//! and what each tenant's storage may cost per period. A service embeds a
//! [`Tenants`] registry and calls [`Tenants::invoke`]; every refusal and
//! every stopped call is a typed error naming the limit.
//!
//! ```no_run
//! # async fn demo(runtime: donut_host::Runtime, backend: std::sync::Arc<dyn donut_host::Backend>,
//! #               plugin: donut_host::Program) -> anyhow::Result<()> {
//! use donut_host::tenant::{Tenant, TenantLimits, Tenants};
//! use donut_host::Grant;
//! let tenants = Tenants::new(runtime, backend);
//! tenants.add(Tenant {
//!     name: "acme".into(),
//!     grant: Grant::prefixed(["acme-".to_string()], true),
//!     limits: TenantLimits::default(),
//! })?;
//! let done = tenants.invoke("acme", &plugin, vec!["report".into()], Vec::new()).await?;
//! println!("{} RCU", done.usage.billed.map_or(0.0, |b| b.read_capacity_units));
//! # Ok(()) }
//! ```

use crate::Backend;
use crate::runtime::{Call, Outcome, Program, RunError, Runtime, Stdio, Usage};
use crate::stats::{StatsSnapshot, StorageStats};
use crate::storage::{
    CallQuota, Clock, Grant, QuotaUse, SectorCache, StorageCtx, StorageError, create_database,
    remove_database,
};
use donut_format::DbName;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one tenant's requests may use. A request is one plugin call, or
/// one Hrana pipeline with all of its statements: time, fuel, storage
/// quota and response size are per request, not per statement.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Linear memory of one instance.
    pub memory_bytes: usize,
    /// Time one request's guest may run: its own execution (host calls
    /// it waits on included), not the time it waits for a thread while
    /// other instances run.
    pub time_limit: Option<Duration>,
    /// CPU of one request, in fuel (needs a runtime built with
    /// `RuntimeOptions::fuel`).
    pub fuel_max: Option<u64>,
    /// Storage calls, sectors and bytes of one request.
    pub quota: CallQuota,
    /// Instances of the tenant alive at once: running calls and open
    /// libSQL streams (idle or not) together; one more is refused, not
    /// queued. With [`TenantLimits::memory_bytes`] it bounds the
    /// tenant's instance memory.
    pub instances_max: usize,
    /// Capacity units the tenant's requests may consume per period.
    pub budget: Option<CapacityBudget>,
    /// Largest answer of one request (a pipeline's results as JSON; a
    /// call's stdout and stderr each): past it the request gets an error,
    /// and the answer is never built.
    pub response_bytes_max: usize,
    /// Live databases the tenant may have; creating one more is refused.
    pub databases_max: Option<usize>,
}

/// The storage quota of one request of a tenant given none: generous for
/// any OLTP request, yet a bound on what one runaway request can cost.
pub const QUOTA_DEFAULT: CallQuota = CallQuota {
    storage_calls_max: Some(100_000),
    sectors_max: Some(1_000_000),
    bytes_max: Some(4 << 30),
};

/// [`TenantLimits::response_bytes_max`] of a tenant given none.
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 32 << 20;

impl Default for TenantLimits {
    fn default() -> Self {
        TenantLimits {
            memory_bytes: 256 << 20,
            time_limit: Some(Duration::from_secs(30)),
            fuel_max: None,
            quota: QUOTA_DEFAULT,
            instances_max: 16,
            budget: None,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
            databases_max: None,
        }
    }
}

/// DynamoDB capacity units a tenant may consume per period, as billed.
/// Checked before each statement of a pipeline (before a plugin call) and
/// charged after it, so a request overruns what was left by at most one
/// statement's worth (a call's: its [`CallQuota`] bounds that).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityBudget {
    pub read_units: f64,
    pub write_units: f64,
    pub period: Duration,
}

/// What is left of a tenant's budget in the current period, capacity
/// units (`None`: no budget).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UnitsLeft {
    pub read: Option<f64>,
    pub write: Option<f64>,
}

/// A tenant: its name, its grant and its limits.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    pub grant: Grant,
    pub limits: TenantLimits,
}

/// Which capacity a budget ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    Read,
    Write,
}

impl std::fmt::Display for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Units::Read => "read",
            Units::Write => "write",
        })
    }
}

/// Why a call was not started.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no tenant {0:?}")]
    UnknownTenant(String),
    #[error("tenant {tenant:?} already runs its limit of {max} calls at once")]
    TooManyInstances { tenant: String, max: usize },
    #[error(
        "tenant {tenant:?} used its budget of {budget} {units} capacity units per {period:?}; it renews in {renews_in:?}"
    )]
    BudgetExhausted {
        tenant: String,
        units: Units,
        budget: f64,
        period: Duration,
        renews_in: Duration,
    },
    #[error("tenant {tenant:?} has its limit of {max} databases")]
    TooManyDatabases { tenant: String, max: usize },
}

impl Refusal {
    /// A stable name for the limit (metrics, JSON errors).
    pub fn limit_name(&self) -> &'static str {
        match self {
            Refusal::UnknownTenant(_) => "tenant",
            Refusal::TooManyInstances { .. } => "instances",
            Refusal::BudgetExhausted {
                units: Units::Read, ..
            } => "read_units",
            Refusal::BudgetExhausted {
                units: Units::Write,
                ..
            } => "write_units",
            Refusal::TooManyDatabases { .. } => "databases",
        }
    }
}

/// Registering a tenant failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddTenantError {
    #[error("tenant {0:?} exists")]
    Exists(String),
    #[error("tenant {tenant:?} would share databases with {other:?}: {detail}")]
    Overlaps {
        tenant: String,
        other: String,
        detail: String,
    },
    #[error("tenant {0:?} has no databases: give it names or prefixes")]
    Unbounded(String),
}

/// A call that was started: how it ended, or why it was stopped, and what
/// it used either way.
#[derive(Debug)]
pub enum InvokeError {
    Refused(Refusal),
    Stopped { error: RunError, usage: Usage },
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InvokeError::Refused(refusal) => write!(f, "refused: {refusal}"),
            InvokeError::Stopped { error, .. } => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for InvokeError {}

/// A database operation on a tenant's behalf failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantOpError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A call that ran to its exit.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: Outcome,
    pub usage: Usage,
}

/// The budget's ledger: units used in the current period.
#[derive(Debug, Default)]
struct Ledger {
    period_start_ms: u64,
    read_units: f64,
    write_units: f64,
}

/// What one tenant's calls have used and met since it was added.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantTotals {
    /// Calls started (refused ones are not).
    pub calls: u64,
    /// Storage calls, sectors and bytes, as call quotas count them.
    pub storage: QuotaUse,
    /// Capacity units as billed.
    pub read_units: f64,
    pub write_units: f64,
    /// Instances alive now: calls running and libSQL streams open.
    pub live: usize,
    /// Calls refused or stopped, by the limit's stable name
    /// ([`Refusal::limit_name`], [`RunError::limit_name`]).
    pub limited: BTreeMap<&'static str, u64>,
}

/// One of a tenant's instances ([`TenantLimits::instances_max`]), held
/// by a call or a libSQL stream for as long as it lives; freed on drop.
pub struct InstanceSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

struct TenantState {
    tenant: Tenant,
    /// Held while a database of the tenant is created or removed: its
    /// count is checked and changed by one at a time.
    control: tokio::sync::Mutex<()>,
    live: Arc<tokio::sync::Semaphore>,
    ledger: Mutex<Ledger>,
    totals: Mutex<TenantTotals>,
}

impl TenantState {
    fn totals(&self) -> std::sync::MutexGuard<'_, TenantTotals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count_limit(&self, limit: &'static str) {
        *self.totals().limited.entry(limit).or_default() += 1;
    }
}

/// The tenants of one service, over one store.
pub struct Tenants {
    runtime: Runtime,
    backend: Arc<dyn Backend>,
    cache: Arc<SectorCache>,
    /// Every call's storage counters, added up host-wide.
    stats: Arc<StorageStats>,
    clock: Clock,
    tenants: Mutex<BTreeMap<String, Arc<TenantState>>>,
}

/// The host-wide sector cache of a [`Tenants`]: sectors are immutable and
/// keyed by database id, so tenants share it without seeing each other's.
pub const SECTOR_CACHE_BYTES: usize = 256 << 20;

impl Tenants {
    pub fn new(runtime: Runtime, backend: Arc<dyn Backend>) -> Tenants {
        Tenants {
            runtime,
            backend,
            cache: SectorCache::new(SECTOR_CACHE_BYTES),
            stats: Arc::new(StorageStats::default()),
            clock: Clock::System,
            tenants: Mutex::new(BTreeMap::new()),
        }
    }

    /// The sector cache every tenant's calls share.
    pub fn set_sector_cache(&mut self, cache: Arc<SectorCache>) {
        self.cache = cache;
    }

    /// Budget periods follow `clock` (tests move virtual time).
    pub fn with_clock(mut self, clock: Clock) -> Tenants {
        self.clock = clock;
        self
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The storage counters of every call so far, added up (commits,
    /// conflicts, sector cache hits...).
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Each tenant's totals, in name order.
    pub fn totals(&self) -> Vec<(String, TenantTotals)> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .iter()
            .map(|(name, state)| {
                let mut totals = state.totals().clone();
                totals.live = state.tenant.limits.instances_max - state.live.available_permits();
                (name.clone(), totals)
            })
            .collect()
    }

    /// Tenant `name`, as added.
    pub fn tenant(&self, name: &str) -> Option<Tenant> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.get(name).map(|state| state.tenant.clone())
    }

    /// Registers `tenant`. Its grant must name databases (names or
    /// prefixes), and no database may fall under two tenants' grants.
    pub fn add(&self, tenant: Tenant) -> Result<(), AddTenantError> {
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        check_new_tenant(&tenant, tenants.values().map(|state| &state.tenant))?;
        let live = Arc::new(tokio::sync::Semaphore::new(tenant.limits.instances_max));
        let state = TenantState {
            tenant,
            control: tokio::sync::Mutex::new(()),
            live,
            ledger: Mutex::new(Ledger::default()),
            totals: Mutex::default(),
        };
        tenants.insert(state.tenant.name.clone(), Arc::new(state));
        Ok(())
    }

    /// Replaces every tenant with `tenants` (a reloaded configuration):
    /// new ones are added, missing ones removed, changed ones take their
    /// new grant and limits from their next call on. What they used so far
    /// (totals, the budget's ledger) carries over; calls running keep the
    /// limits they started with. All or nothing: refused if the new set
    /// would not be accepted from scratch.
    pub fn replace_all(&self, tenants: Vec<Tenant>) -> Result<(), AddTenantError> {
        for (i, tenant) in tenants.iter().enumerate() {
            check_new_tenant(tenant, &tenants[..i])?;
        }
        let mut current = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeMap::new();
        for tenant in tenants {
            let (ledger, totals) = match current.get(&tenant.name) {
                Some(old) => {
                    let ledger = old.ledger.lock().unwrap_or_else(|e| e.into_inner());
                    let carried = Ledger {
                        period_start_ms: ledger.period_start_ms,
                        read_units: ledger.read_units,
                        write_units: ledger.write_units,
                    };
                    (carried, old.totals().clone())
                }
                None => (Ledger::default(), TenantTotals::default()),
            };
            let live = Arc::new(tokio::sync::Semaphore::new(tenant.limits.instances_max));
            let state = TenantState {
                tenant,
                control: tokio::sync::Mutex::new(()),
                live,
                ledger: Mutex::new(ledger),
                totals: Mutex::new(totals),
            };
            next.insert(state.tenant.name.clone(), Arc::new(state));
        }
        *current = next;
        Ok(())
    }

    fn state(&self, name: &str) -> Result<Arc<TenantState>, Refusal> {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants
            .get(name)
            .cloned()
            .ok_or_else(|| Refusal::UnknownTenant(name.to_string()))
    }

    /// The store the tenants share.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Does some tenant's grant cover database `db`?
    pub fn covers(&self, db: &DbName) -> bool {
        let tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        tenants.values().any(|state| state.tenant.grant.covers(db))
    }

    /// The live databases tenant `name` may use, in name order. The
    /// listing is billed to the tenant, within its budget.
    pub async fn databases(&self, name: &str) -> Result<Vec<DbName>, TenantOpError> {
        let state = self.state(name)?;
        self.check_budget(&state)?;
        self.own_databases(&state).await
    }

    /// `state`'s live databases, the listing billed to it.
    ///
    /// The catalog is keyed by a hash of each name (docs/format.md), so
    /// the listing reads every name in the table; what the tenant pays
    /// for is what the listing cost.
    async fn own_databases(&self, state: &TenantState) -> Result<Vec<DbName>, TenantOpError> {
        let (backend, bill) = self.billed_backend();
        let listed = donut_store::db::list_databases(&*backend).await;
        self.charge_bill(state, &bill);
        Ok(listed?
            .into_iter()
            .filter(|(db, root)| root.is_ok() && state.tenant.grant.covers(db))
            .map(|(db, _)| db)
            .collect())
    }

    /// The backend with every request's cost added to a bill of its own.
    fn billed_backend(&self) -> (Arc<dyn Backend>, Arc<Mutex<crate::stats::RequestStats>>) {
        let bill = Arc::new(Mutex::new(crate::stats::RequestStats::default()));
        let backend = donut_store::backend::metered::billed(&self.backend, &bill);
        (backend, bill)
    }

    /// Charges `state` what `bill` says its requests cost.
    fn charge_bill(&self, state: &TenantState, bill: &Mutex<crate::stats::RequestStats>) {
        let bill = bill.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.charge_units(state, bill.read_capacity_units, bill.write_capacity_units);
    }

    /// Creates database `db` for tenant `name`, if its grant allows and
    /// it has fewer than its `databases_max`; billed to the tenant, within
    /// its budget.
    pub async fn create_database(
        &self,
        name: &str,
        db: &str,
        page_size: u32,
    ) -> Result<DbName, TenantOpError> {
        let state = self.state(name)?;
        let grant = &state.tenant.grant;
        let db = grant.check(db)?;
        if !grant.may_create {
            return Err(
                StorageError::Denied(format!("tenant {name:?} may not create databases")).into(),
            );
        }
        self.check_budget(&state)?;
        let _control = state.control.lock().await;
        if let Some(max) = state.tenant.limits.databases_max {
            let count = self.own_databases(&state).await?.len();
            if count >= max {
                state.count_limit("databases");
                return Err(Refusal::TooManyDatabases {
                    tenant: name.to_string(),
                    max,
                }
                .into());
            }
        }
        let (backend, bill) = self.billed_backend();
        let created = create_database(&*backend, &db, page_size).await;
        self.charge_bill(&state, &bill);
        created?;
        Ok(db)
    }

    /// Removes database `db` of tenant `name`, if its grant allows;
    /// billed to the tenant, within its budget.
    pub async fn remove_database(&self, name: &str, db: &str) -> Result<(), TenantOpError> {
        let state = self.state(name)?;
        let grant = &state.tenant.grant;
        let db = grant.check(db)?;
        if !grant.may_remove || grant.read_only {
            return Err(
                StorageError::Denied(format!("tenant {name:?} may not remove databases")).into(),
            );
        }
        self.check_budget(&state)?;
        let _control = state.control.lock().await;
        let (backend, bill) = self.billed_backend();
        let removed = remove_database(&*backend, &db).await;
        self.charge_bill(&state, &bill);
        removed?;
        Ok(())
    }

    /// Storage for a SQL session of tenant `name` (its grant, the shared
    /// cache, billed), the session's limits, and one of the tenant's
    /// instances for the session to hold as long as it lives, if the
    /// tenant has one free and its budget has room.
    pub fn session_storage(
        &self,
        name: &str,
    ) -> Result<(StorageCtx, crate::session::SessionLimits, InstanceSlot), Refusal> {
        let state = self.state(name)?;
        let slot = self.instance_slot(&state)?;
        self.check_budget(&state).inspect_err(|refusal| {
            state.count_limit(refusal.limit_name());
        })?;
        let limits = &state.tenant.limits;
        let mut storage = self.storage(&state);
        // Opening is bounded by what is left of the budget too.
        let left = self.left(&state);
        storage.limit_units_from_now(left.read, left.write);
        let session = crate::session::SessionLimits {
            memory_bytes: limits.memory_bytes,
            time_limit: limits.time_limit,
            fuel_max: limits.fuel_max,
            quota: limits.quota,
        };
        Ok((storage, session, slot))
    }

    /// One of `state`'s instances, if it has one free (counted as a
    /// refusal if not).
    fn instance_slot(&self, state: &TenantState) -> Result<InstanceSlot, Refusal> {
        let permit = state.live.clone().try_acquire_owned().map_err(|_| {
            state.count_limit("instances");
            Refusal::TooManyInstances {
                tenant: state.tenant.name.clone(),
                max: state.tenant.limits.instances_max,
            }
        })?;
        Ok(InstanceSlot { _permit: permit })
    }

    /// Counts a request of tenant `name` stopped at `limit`.
    pub fn count_limit(&self, name: &str, limit: &'static str) {
        if let Ok(state) = self.state(name) {
            state.count_limit(limit);
        }
    }

    /// Checks tenant `name`'s budget before a request, or a statement of
    /// one, on a session (a refusal is counted): what is left of it, the
    /// cap of what the statement may cost ([`crate::session::Session::limit_units`]).
    pub fn check_session_budget(&self, name: &str) -> Result<UnitsLeft, Refusal> {
        let state = self.state(name)?;
        self.check_budget(&state).inspect_err(|refusal| {
            state.count_limit(refusal.limit_name());
        })?;
        Ok(self.left(&state))
    }

    /// What is left of tenant `name`'s budget (none for an unknown tenant:
    /// nothing of it may be spent).
    pub fn units_left(&self, name: &str) -> UnitsLeft {
        match self.state(name) {
            Ok(state) => self.left(&state),
            Err(_) => UnitsLeft {
                read: Some(0.0),
                write: Some(0.0),
            },
        }
    }

    fn left(&self, state: &TenantState) -> UnitsLeft {
        let Some(budget) = state.tenant.limits.budget else {
            return UnitsLeft::default();
        };
        let ledger = self.ledger(state);
        UnitsLeft {
            read: Some((budget.read_units - ledger.read_units).max(0.0)),
            write: Some((budget.write_units - ledger.write_units).max(0.0)),
        }
    }

    /// Tenant `name`'s limits.
    pub fn limits(&self, name: &str) -> Result<TenantLimits, Refusal> {
        Ok(self.state(name)?.tenant.limits.clone())
    }

    /// Charges tenant `name` for what a session used in one request: its
    /// storage calls, sectors and bytes, and the capacity they took.
    pub fn charge_session(&self, name: &str, storage: QuotaUse, read_units: f64, write_units: f64) {
        if let Ok(state) = self.state(name) {
            add_storage(&mut state.totals(), storage);
            self.charge_units(&state, read_units, write_units);
        }
    }

    /// Storage for one of `state`'s calls or sessions: its grant, the
    /// shared sector cache, the host-wide counters, billed.
    fn storage(&self, state: &TenantState) -> StorageCtx {
        StorageCtx::new(self.backend.clone(), state.tenant.grant.clone())
            .with_cache(self.cache.clone())
            .with_stats(self.stats.clone())
            .billed()
    }

    /// Runs `program` for tenant `name` with `args` (argv[0] added) and
    /// `stdin`, output captured, storage billed.
    pub async fn invoke(
        &self,
        name: &str,
        program: &Program,
        args: Vec<String>,
        stdin: Vec<u8>,
    ) -> Result<Invocation, InvokeError> {
        let state = self.state(name).map_err(InvokeError::Refused)?;
        let tenant = &state.tenant;
        let refuse = |refusal: Refusal| {
            state.count_limit(refusal.limit_name());
            InvokeError::Refused(refusal)
        };
        let _slot = self.instance_slot(&state).map_err(InvokeError::Refused)?;
        self.check_budget(&state).map_err(refuse)?;
        state.totals().calls += 1;
        let mut storage = self.storage(&state).with_quota(tenant.limits.quota);
        // A call overruns what is left of the budget by at most one
        // storage call's reads (its writes are refused before they run).
        let left = self.left(&state);
        storage.limit_units_from_now(left.read, left.write);
        let argv = std::iter::once(program.label().to_string())
            .chain(args)
            .collect();
        let mut call = Call::new(argv, storage);
        call.stdio = Stdio::Capture { stdin };
        call.memory_limit_bytes = tenant.limits.memory_bytes;
        call.time_limit = tenant.limits.time_limit;
        call.fuel_max = tenant.limits.fuel_max;
        call.capture_bytes_max = tenant.limits.response_bytes_max;
        let (outcome, usage) = self.runtime.run_with_usage(program, call).await;
        self.charge(&state, &usage);
        match outcome {
            Ok(outcome) => Ok(Invocation { outcome, usage }),
            Err(error) => {
                if let Some(limit) = error.limit_name() {
                    state.count_limit(limit);
                }
                Err(InvokeError::Stopped { error, usage })
            }
        }
    }

    /// The ledger of `state`'s budget, its period renewed if it is over.
    fn ledger<'a>(&self, state: &'a TenantState) -> std::sync::MutexGuard<'a, Ledger> {
        let mut ledger = state.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(budget) = state.tenant.limits.budget {
            let now_ms = self.clock.now_ms();
            let period_ms = budget.period.as_millis() as u64;
            if now_ms >= ledger.period_start_ms.saturating_add(period_ms) {
                *ledger = Ledger {
                    period_start_ms: now_ms,
                    ..Ledger::default()
                };
            }
        }
        ledger
    }

    fn check_budget(&self, state: &TenantState) -> Result<(), Refusal> {
        let Some(budget) = state.tenant.limits.budget else {
            return Ok(());
        };
        let ledger = self.ledger(state);
        let exhausted = if ledger.read_units >= budget.read_units {
            Some((Units::Read, budget.read_units))
        } else if ledger.write_units >= budget.write_units {
            Some((Units::Write, budget.write_units))
        } else {
            None
        };
        let Some((units, limit)) = exhausted else {
            return Ok(());
        };
        let renews_ms = (ledger.period_start_ms + budget.period.as_millis() as u64)
            .saturating_sub(self.clock.now_ms());
        Err(Refusal::BudgetExhausted {
            tenant: state.tenant.name.clone(),
            units,
            budget: limit,
            period: budget.period,
            renews_in: Duration::from_millis(renews_ms),
        })
    }

    fn charge(&self, state: &TenantState, usage: &Usage) {
        add_storage(&mut state.totals(), usage.storage);
        if let Some(billed) = &usage.billed {
            self.charge_units(
                state,
                billed.read_capacity_units,
                billed.write_capacity_units,
            );
        }
    }

    /// Adds capacity units to `state`'s totals and its budget's ledger.
    fn charge_units(&self, state: &TenantState, read_units: f64, write_units: f64) {
        {
            let mut totals = state.totals();
            totals.read_units += read_units;
            totals.write_units += write_units;
        }
        let mut ledger = self.ledger(state);
        ledger.read_units += read_units;
        ledger.write_units += write_units;
    }
}

fn add_storage(totals: &mut TenantTotals, storage: QuotaUse) {
    totals.storage.storage_calls += storage.storage_calls;
    totals.storage.sectors += storage.sectors;
    totals.storage.bytes += storage.bytes;
}

/// Refuses `tenant` beside `others`: a name taken, a grant without bounds,
/// or a database two grants would share. Service configurations check
/// their tenants with it before serving.
pub fn check_new_tenant<'a>(
    tenant: &Tenant,
    others: impl IntoIterator<Item = &'a Tenant>,
) -> Result<(), AddTenantError> {
    if tenant.grant.names.is_none() {
        return Err(AddTenantError::Unbounded(tenant.name.clone()));
    }
    for other in others {
        if other.name == tenant.name {
            return Err(AddTenantError::Exists(tenant.name.clone()));
        }
        if let Some(detail) = overlap(&tenant.grant, &other.grant) {
            return Err(AddTenantError::Overlaps {
                tenant: tenant.name.clone(),
                other: other.name.clone(),
                detail,
            });
        }
    }
    Ok(())
}

/// Why two grants would share a database, if they would.
fn overlap(a: &Grant, b: &Grant) -> Option<String> {
    let (a_names, b_names) = (a.names.as_ref()?, b.names.as_ref()?);
    if let Some(name) = a_names.iter().find(|n| b.covers(n)) {
        return Some(format!("both cover {name:?}"));
    }
    if let Some(name) = b_names.iter().find(|n| a.covers(n)) {
        return Some(format!("both cover {name:?}"));
    }
    for p in &a.prefixes {
        for q in &b.prefixes {
            if p.starts_with(q.as_str()) || q.starts_with(p.as_str()) {
                return Some(format!("prefixes {p:?} and {q:?} overlap"));
            }
        }
    }
    None
}
