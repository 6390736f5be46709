//! The [`Harness`]: one backend, and ways to run components against it.

use crate::{Dynoxide, component_cache_dir, dynamo_options, guest_path};
use aws_sdk_dynamodb::config::SharedInterceptor;
use donut_format::DbName;
use donut_host::backend::dynamo::{DynamoBackend, create_table};
use donut_host::backend::{Backend, StoredSummary};
use donut_host::runtime::{
    Call, Outcome, Program, RunError, Runtime, RuntimeOptions, Stdio, StockSql, Usage,
};
use donut_host::stats::{StatsSnapshot, StorageStats};
use donut_host::storage::{CallQuota, SectorCache};
use donut_host::tenant::{Tenant, TenantLimits};
use donut_host::{Grant, LocalBackend, MemoryBackend, StorageCtx};
use std::sync::{Arc, OnceLock};

/// One engine and the compiled components, shared by every test.
pub struct Components {
    pub runtime: Runtime,
    pub sql: Program,
    pub query: Program,
    pub test_guest: Program,
}

pub fn components() -> &'static Components {
    static COMPONENTS: OnceLock<Components> = OnceLock::new();
    COMPONENTS.get_or_init(|| {
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: Some(component_cache_dir()),
            time_limits: true,
            fuel: false,
            pooling: None,
        })
        .expect("runtime");
        let load = |file: &str| runtime.load_file(&guest_path(file)).expect(file);
        let sql = runtime.stock_sql().expect("stock donut-sql");
        let query = load("query.wasm");
        let test_guest = load("test-guest.wasm");
        Components {
            runtime,
            sql,
            query,
            test_guest,
        }
    })
}

/// One call's result, its usage and its storage counters.
pub struct Run {
    pub outcome: Result<Outcome, RunError>,
    pub usage: Usage,
    pub stats: StatsSnapshot,
}

impl Run {
    /// The outcome of a call that must have run to its exit.
    pub fn ran(&self) -> &Outcome {
        match &self.outcome {
            Ok(outcome) => outcome,
            Err(e) => panic!("the call did not run to its exit: {e}"),
        }
    }
}

/// A store (one backend) and ways to run components against it.
pub struct Harness {
    pub backend: Arc<dyn Backend>,
    pub memory: Option<MemoryBackend>,
    pub dynamo: Option<DynamoBackend>,
    /// Keeps the local store directory alive.
    pub _dir: Option<tempfile::TempDir>,
    /// Keeps the DynamoDB server alive.
    pub _server: Option<Dynoxide>,
    /// A host-wide sector cache the calls share, if set.
    pub cache: Option<Arc<SectorCache>>,
    /// Limits of every call.
    pub memory_limit_bytes: usize,
    pub time_limit: Option<std::time::Duration>,
}

impl Harness {
    /// A harness over `backend` with the default limits and no cache.
    pub fn over(backend: Arc<dyn Backend>) -> Harness {
        Harness {
            backend,
            memory: None,
            dynamo: None,
            _dir: None,
            _server: None,
            cache: None,
            memory_limit_bytes: donut_host::runtime::MEMORY_LIMIT_BYTES_DEFAULT,
            time_limit: None,
        }
    }

    pub fn memory() -> Harness {
        let memory = MemoryBackend::new();
        Harness {
            memory: Some(memory.clone()),
            ..Harness::over(Arc::new(memory))
        }
    }

    /// A fresh dynoxide server with the DonutDB table created.
    pub async fn dynamodb() -> Harness {
        Self::dynamodb_with(Vec::new()).await
    }

    /// Like `dynamodb`, with SDK interceptors (fault injection).
    pub async fn dynamodb_with(interceptors: Vec<SharedInterceptor>) -> Harness {
        let server = Dynoxide::start();
        let mut h = Self::on_endpoint(&server.endpoint, "donut-test", interceptors).await;
        h._server = Some(server);
        h
    }

    /// A new table on an already running DynamoDB-compatible server.
    pub async fn on_endpoint(
        endpoint: &str,
        table: &str,
        interceptors: Vec<SharedInterceptor>,
    ) -> Harness {
        let options = dynamo_options(endpoint, table);
        create_table(&options).await.expect("create table");
        let dynamo = DynamoBackend::connect(&options, interceptors)
            .await
            .expect("connect");
        Harness {
            dynamo: Some(dynamo.clone()),
            ..Harness::over(Arc::new(dynamo))
        }
    }

    pub fn local() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = LocalBackend::open(dir.path().join("store")).expect("local store");
        Harness {
            _dir: Some(dir),
            ..Harness::over(Arc::new(backend))
        }
    }

    /// Runs `program` with `args` (argv[0] added) and captured output.
    pub async fn run_with(
        &self,
        program: &Program,
        args: &[&str],
        stdin: &str,
    ) -> (Outcome, StatsSnapshot) {
        let (outcome, stats) = self.try_run_with(program, args, stdin).await;
        let outcome = outcome.unwrap_or_else(|e| panic!("running {}: {e}", program.label()));
        (outcome, stats)
    }

    /// Like `run_with`, but a trap is returned, not a panic.
    pub async fn try_run_with(
        &self,
        program: &Program,
        args: &[&str],
        stdin: &str,
    ) -> (Result<Outcome, RunError>, StatsSnapshot) {
        self.try_run_within(self.memory_limit_bytes, program, args, stdin)
            .await
    }

    /// Runs SQL through the stock component in an instance limited to
    /// `memory_limit_bytes` (csv output); a trap is returned, not a panic.
    pub async fn sql_within(
        &self,
        memory_limit_bytes: usize,
        db: &str,
        sql: &str,
    ) -> Result<Outcome, RunError> {
        let argv = csv_exec(db, sql);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.try_run_within(memory_limit_bytes, &components().sql, &args, "")
            .await
            .0
    }

    async fn try_run_within(
        &self,
        memory_limit_bytes: usize,
        program: &Program,
        args: &[&str],
        stdin: &str,
    ) -> (Result<Outcome, RunError>, StatsSnapshot) {
        let tenant = Tenant {
            name: "harness".into(),
            grant: Grant::all(),
            limits: TenantLimits {
                memory_bytes: memory_limit_bytes,
                time_limit: self.time_limit,
                quota: CallQuota::unlimited(),
                response_bytes_max: donut_host::runtime::CAPTURE_BYTES_MAX,
                ..TenantLimits::default()
            },
        };
        let run = self.run_as(&tenant, program, args, stdin).await;
        (run.outcome, run.stats)
    }

    /// Runs SQL through the stock component as `tenant` (csv output).
    pub async fn sql_as(&self, tenant: &Tenant, db: &str, sql: &str) -> Run {
        let argv = csv_exec(db, sql);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.run_as(tenant, &components().sql, &args, "").await
    }

    /// Runs `program` with `args` (argv[0] added) under `tenant`'s grant,
    /// quota, memory and time limits (straight on the harness's backend,
    /// not through a `Tenants` registry), with captured output; a trap or
    /// a limit is returned, not a panic.
    pub async fn run_as(
        &self,
        tenant: &Tenant,
        program: &Program,
        args: &[&str],
        stdin: &str,
    ) -> Run {
        let stats = Arc::new(StorageStats::default());
        let mut storage = StorageCtx::new(self.backend.clone(), tenant.grant.clone())
            .with_stats(stats.clone())
            .with_quota(tenant.limits.quota);
        if let Some(cache) = &self.cache {
            storage = storage.with_cache(cache.clone());
        }
        let argv = std::iter::once(program.label().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .collect();
        let mut call = Call::new(argv, storage);
        call.stdio = Stdio::Capture {
            stdin: stdin.as_bytes().to_vec(),
        };
        call.memory_limit_bytes = tenant.limits.memory_bytes;
        call.time_limit = tenant.limits.time_limit;
        let (outcome, usage) = components().runtime.run_with_usage(program, call).await;
        Run {
            outcome,
            usage,
            stats: stats.snapshot(),
        }
    }

    /// Runs SQL through the stock component (csv output).
    pub async fn sql(&self, db: &str, sql: &str) -> Outcome {
        let argv = csv_exec(db, sql);
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.run_with(&components().sql, &args, "").await.0
    }

    /// Runs SQL that must succeed; returns stdout.
    pub async fn sql_ok(&self, db: &str, sql: &str) -> String {
        let out = self.sql(db, sql).await;
        assert!(
            out.success(),
            "{sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs a one-value query; returns the value as text.
    pub async fn value(&self, db: &str, sql: &str) -> String {
        let out = self.sql_ok(db, sql).await;
        let mut lines = out.lines();
        lines.next().expect("csv header");
        lines.next().unwrap_or("").to_string()
    }

    /// Runs the stock shell with `script` on stdin.
    pub async fn shell(&self, db: &str, script: &str) -> (Outcome, StatsSnapshot) {
        let argv = StockSql::Shell {
            db,
            format: "csv",
            interactive: false,
        }
        .argv();
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        self.run_with(&components().sql, &args, script).await
    }

    pub async fn create(&self, db: &str) {
        self.create_with_page_size(db, 4096).await;
    }

    pub async fn create_with_page_size(&self, db: &str, page_size: u32) {
        let name = DbName::new(db).expect("test database names are legal");
        donut_host::storage::create_database(&*self.backend, &name, page_size)
            .await
            .expect("create database");
    }

    pub async fn assert_integrity(&self, db: &str) {
        assert_eq!(self.value(db, "pragma integrity_check").await, "ok");
    }

    /// The stored root version of `db`.
    pub async fn version(&self, db: &str) -> u64 {
        let name = DbName::new(db).expect("legal name");
        donut_host::storage::read_root(&*self.backend, &name)
            .await
            .expect("root")
            .1
            .version
    }

    pub async fn summary(&self) -> StoredSummary {
        self.backend.summary().await.expect("summary")
    }
}

pub fn stderr(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stderr).into_owned()
}

pub fn stdout(outcome: &Outcome) -> String {
    String::from_utf8_lossy(&outcome.stdout).into_owned()
}

/// The stock component's arguments (after its name) for `sql` with csv
/// output: the contract lives in `donut_host::runtime::StockSql`.
pub fn csv_exec(db: &str, sql: &str) -> Vec<String> {
    let mut argv = StockSql::Exec {
        db,
        sql,
        format: "csv",
        params: &[],
    }
    .argv();
    argv.remove(0);
    argv
}
