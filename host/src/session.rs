//! SQL sessions inside the sandbox: a component that exports
//! `donut:storage/session` (the stock one is `guest/session`) keeps one
//! SQLite connection in one instance for as long as the session lives;
//! the host sends it statements and gets rows back. What the libSQL
//! endpoints of `donut-host serve` are built on.
//!
//! ```no_run
//! # async fn demo(runtime: donut_host::Runtime, storage: donut_host::StorageCtx, bytes: &[u8]) -> anyhow::Result<()> {
//! use donut_host::session::{Session, SessionLimits, Statement};
//! let program = runtime.load_session(bytes, "session")?;
//! let limits = SessionLimits::default();
//! let Ok(mut session) = Session::open(&runtime, &program, storage, limits, "app.db").await? else {
//!     anyhow::bail!("SQLite refused to open app.db");
//! };
//! let rows = session.execute(&runtime, Statement::sql("select 1")).await?;
//! # Ok(()) }
//! ```

use crate::runtime::{HostState, LoadError, RunError, Runtime};
use crate::storage::StorageCtx;
use std::time::Duration;
use wasmtime::Store;
use wasmtime::component::ResourceAny;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "donut:storage/session-plugin",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, Clone],
    with: {
        "donut:storage/types": crate::storage::donut::storage::types,
        "donut:storage/storage": crate::storage::donut::storage::storage,
    },
});

pub use exports::donut::storage::session::{
    Column, Description, SqlError, Statement, StatementResult, Value,
};

impl Statement {
    /// `sql` with no parameters, rows wanted.
    pub fn sql(sql: &str) -> Statement {
        Statement {
            sql: sql.to_string(),
            args: Vec::new(),
            named_args: Vec::new(),
            want_rows: true,
        }
    }
}

/// The stock session component (`guest/session`), built in.
pub static DONUT_SESSION_WASM: &[u8] = include_bytes!(env!("DONUT_SESSION_WASM"));

/// A session component, compiled and linked, ready to open sessions.
pub struct SessionProgram {
    label: String,
    pre: SessionPluginPre<HostState>,
}

impl Runtime {
    /// Loads a component that exports `donut:storage/session`.
    pub fn load_session(&self, bytes: &[u8], label: &str) -> Result<SessionProgram, LoadError> {
        let (instance_pre, _) = self.instance_pre(bytes, label)?;
        let pre = SessionPluginPre::new(instance_pre).map_err(|e| LoadError::Link {
            label: label.to_string(),
            detail: format!("not a session component (no donut:storage/session export): {e:#}"),
        })?;
        Ok(SessionProgram {
            label: label.to_string(),
            pre,
        })
    }
}

/// What one session may use: its instance's memory for its whole life;
/// time, fuel and storage per request (every call of a request draws on
/// one allowance: [`Session::begin_request`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub memory_bytes: usize,
    pub time_limit: Option<Duration>,
    pub fuel_max: Option<u64>,
    /// Storage work per request ([`Session::begin_request`]), as a call's.
    pub quota: crate::storage::CallQuota,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            memory_bytes: 256 << 20,
            time_limit: Some(Duration::from_secs(30)),
            fuel_max: None,
            quota: crate::storage::CallQuota::unlimited(),
        }
    }
}

/// One open connection in one instance. After a call is stopped (a trap or
/// a limit) the instance is dead: every later call fails with
/// [`RunError::Trap`] and the session should be dropped.
pub struct Session {
    label: String,
    store: Store<HostState>,
    plugin: SessionPlugin,
    connection: ResourceAny,
    limits: SessionLimits,
    dead: bool,
}

impl Session {
    /// Instantiates `program` with `storage` and opens database `db` in it:
    /// `Ok(Err(_))` if SQLite or storage refused to open it.
    pub async fn open(
        runtime: &Runtime,
        program: &SessionProgram,
        storage: StorageCtx,
        limits: SessionLimits,
        db: &str,
    ) -> Result<Result<Session, SqlError>, RunError> {
        let mut session =
            match Session::open_in_request(runtime, program, storage, limits, db).await? {
                Ok(session) => session,
                Err(refused) => return Ok(Err(refused)),
            };
        if let Err(refused) = session.settle(runtime).await? {
            return Ok(Err(refused));
        }
        Ok(Ok(session))
    }

    /// Opens a session whose first transaction may use the root read at
    /// open (for a moment): one storage round trip fewer for the request
    /// that opens it. Call [`Session::settle`] once that request is
    /// answered, so a later request's statements read a root no older than
    /// themselves.
    pub async fn open_in_request(
        runtime: &Runtime,
        program: &SessionProgram,
        storage: StorageCtx,
        limits: SessionLimits,
        db: &str,
    ) -> Result<Result<Session, SqlError>, RunError> {
        let label = program.label.clone();
        let storage = storage.with_quota(limits.quota);
        let mut store = runtime.session_store(storage, limits.memory_bytes);
        // Opening is the first request's: its time and fuel count there.
        runtime.arm(&mut store, &label, limits.time_limit, limits.fuel_max)?;
        let plugin = match program.pre.instantiate_async(&mut store).await {
            Ok(plugin) => plugin,
            Err(e) => {
                return Err(RunError::Instantiate {
                    label,
                    detail: format!("{e:#}"),
                });
            }
        };
        let opened = plugin
            .donut_storage_session()
            .connection()
            .call_open(&mut store, db)
            .await;
        let connection = match opened {
            Ok(Ok(connection)) => connection,
            Ok(Err(refused)) => return Ok(Err(refused)),
            Err(e) => {
                let stopped =
                    Runtime::stopped(&store, &e, &label, limits.time_limit, limits.fuel_max);
                return Err(stopped);
            }
        };
        runtime.pause_time(&mut store);
        Ok(Ok(Session {
            label,
            store,
            plugin,
            connection,
            limits,
            dead: false,
        }))
    }

    /// Runs one statement.
    pub async fn execute(
        &mut self,
        runtime: &Runtime,
        statement: Statement,
    ) -> Result<Result<StatementResult, SqlError>, RunError> {
        self.call(runtime, |plugin, store, connection| {
            Box::pin(async move {
                plugin
                    .donut_storage_session()
                    .connection()
                    .call_execute(store, connection, &statement)
                    .await
            })
        })
        .await
    }

    /// Ends the root read at open standing in for a transaction's: every
    /// later transaction reads the root when it starts. No storage call.
    pub async fn settle(&mut self, runtime: &Runtime) -> Result<Result<(), SqlError>, RunError> {
        self.execute_script(runtime, "pragma donut_open_root_fresh = 0")
            .await
    }

    /// Runs statements separated by semicolons, without results.
    pub async fn execute_script(
        &mut self,
        runtime: &Runtime,
        sql: &str,
    ) -> Result<Result<(), SqlError>, RunError> {
        let sql = sql.to_string();
        self.call(runtime, |plugin, store, connection| {
            Box::pin(async move {
                plugin
                    .donut_storage_session()
                    .connection()
                    .call_execute_script(store, connection, &sql)
                    .await
            })
        })
        .await
    }

    /// Describes `sql` without running it.
    pub async fn describe(
        &mut self,
        runtime: &Runtime,
        sql: &str,
    ) -> Result<Result<Description, SqlError>, RunError> {
        let sql = sql.to_string();
        self.call(runtime, |plugin, store, connection| {
            Box::pin(async move {
                plugin
                    .donut_storage_session()
                    .connection()
                    .call_describe(store, connection, &sql)
                    .await
            })
        })
        .await
    }

    /// Outside a transaction?
    pub async fn is_autocommit(&mut self, runtime: &Runtime) -> Result<bool, RunError> {
        self.call(runtime, |plugin, store, connection| {
            Box::pin(async move {
                plugin
                    .donut_storage_session()
                    .connection()
                    .call_is_autocommit(store, connection)
                    .await
            })
        })
        .await
    }

    /// Was the instance stopped (a trap or a limit)? Then every call fails.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// What the session's storage requests cost so far, if billed.
    pub fn bill(&self) -> Option<crate::stats::RequestStats> {
        self.store.data().storage_ctx().bill()
    }

    /// Starts a request on a kept session: it gets the time limit, fuel
    /// and storage quota of [`SessionLimits`] of its own, shared by all of
    /// its calls (the opening request has them from `open`); past one the
    /// instance is stopped and the session dead.
    pub fn begin_request(&mut self, runtime: &Runtime) -> Result<(), RunError> {
        let limits = self.limits;
        self.store
            .data_mut()
            .storage_ctx_mut()
            .limit_from_now(limits.quota);
        runtime.arm_time(&mut self.store, &self.label, limits.time_limit)?;
        runtime.pause_time(&mut self.store);
        runtime.arm_fuel(&mut self.store, &self.label, limits.fuel_max)
    }

    /// Caps what the session's storage calls may cost from now on at
    /// `read_units` and `write_units` more capacity units (what is left of
    /// its tenant's budget; `None`: no cap): a call past a cap stops the
    /// instance, as a quota does.
    pub fn limit_units(&mut self, read_units: Option<f64>, write_units: Option<f64>) {
        self.store
            .data_mut()
            .storage_ctx_mut()
            .limit_units_from_now(read_units, write_units);
    }

    /// Storage calls, sectors and bytes the session has used so far.
    pub fn storage_used(&self) -> crate::storage::QuotaUse {
        self.store.data().storage_ctx().quota_used()
    }

    /// One call into the instance, armed with the per-call limits; a trap
    /// kills the session.
    async fn call<T>(
        &mut self,
        runtime: &Runtime,
        f: impl for<'a> FnOnce(
            &'a SessionPlugin,
            &'a mut Store<HostState>,
            ResourceAny,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<T>> + Send + 'a>,
        >,
    ) -> Result<T, RunError> {
        if self.dead {
            return Err(RunError::Trap {
                label: self.label.clone(),
                detail: "the session was stopped by an earlier call".into(),
            });
        }
        let limits = self.limits;
        // The request's time so far goes on, not a fresh limit per call: a
        // pipeline of many statements gets one time limit, as it gets one
        // fuel allowance (both set by `begin_request`, not here). Time
        // between calls (the host's own work, waits for a writer's turn)
        // does not count: those waits are bounded on their own.
        runtime.resume_time(&mut self.store);
        let answered = f(&self.plugin, &mut self.store, self.connection).await;
        runtime.pause_time(&mut self.store);
        match answered {
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.dead = true;
                Err(Runtime::stopped(
                    &self.store,
                    &e,
                    &self.label,
                    limits.time_limit,
                    limits.fuel_max,
                ))
            }
        }
    }
}
