//! libSQL's remote protocol, Hrana over HTTP with JSON (versions 2 and 3;
//! tursodatabase/libsql `docs/HRANA_3_SPEC.md`), so `@libsql/client` and
//! the other libSQL clients talk to `donut-host serve` unchanged. A stream
//! is a [`Session`] — one instance of the session component holding one
//! SQLite connection, under its tenant's grant and limits — named by a
//! baton that changes with every answer, belongs to the tenant that opened
//! it, and expires when idle.

use crate::session::{self, Session, SessionProgram, SqlError};
use crate::tenant::Tenants;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `POST …/v2/pipeline`, `…/v3/pipeline`.
#[derive(Debug, Deserialize)]
pub struct PipelineReq {
    #[serde(default)]
    pub baton: Option<String>,
    pub requests: Vec<StreamRequest>,
}

/// `POST …/v1/execute`: one statement on a stream of its own (the
/// stateless HTTP API Python's `libsql-client` speaks).
#[derive(Debug, Deserialize)]
pub struct ExecuteReq {
    pub stmt: Stmt,
}

/// `POST …/v1/batch`: one batch on a stream of its own.
#[derive(Debug, Deserialize)]
pub struct BatchReq {
    pub batch: Batch,
}

impl From<ExecuteReq> for StreamRequest {
    fn from(req: ExecuteReq) -> StreamRequest {
        StreamRequest::Execute { stmt: req.stmt }
    }
}

impl From<BatchReq> for StreamRequest {
    fn from(req: BatchReq) -> StreamRequest {
        StreamRequest::Batch { batch: req.batch }
    }
}

#[derive(Debug, Serialize)]
pub struct PipelineResp {
    pub baton: Option<String>,
    pub base_url: Option<String>,
    pub results: Vec<StreamResult>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamRequest {
    Close,
    Execute {
        stmt: Stmt,
    },
    Batch {
        batch: Batch,
    },
    Sequence {
        sql: Option<String>,
        sql_id: Option<i32>,
    },
    Describe {
        sql: Option<String>,
        sql_id: Option<i32>,
    },
    StoreSql {
        sql_id: i32,
        sql: String,
    },
    CloseSql {
        sql_id: i32,
    },
    GetAutocommit,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamResult {
    Ok { response: StreamResponse },
    Error { error: Error },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamResponse {
    Close,
    Execute { result: StmtResult },
    Batch { result: BatchResult },
    Sequence,
    Describe { result: DescribeResult },
    StoreSql,
    CloseSql,
    GetAutocommit { is_autocommit: bool },
}

/// A protocol error: SQLite's message and code name.
#[derive(Debug, Clone, Serialize)]
pub struct Error {
    pub message: String,
    pub code: Option<String>,
}

impl Error {
    fn new(code: &str, message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            code: Some(code.to_string()),
        }
    }
}

impl From<SqlError> for Error {
    fn from(e: SqlError) -> Error {
        Error {
            message: e.message,
            code: Some(e.code),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Stmt {
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    sql_id: Option<i32>,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    named_args: Vec<NamedArg>,
    #[serde(default)]
    want_rows: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct NamedArg {
    name: String,
    value: Value,
}

/// A value as Hrana's JSON carries it: integers as strings, blobs in base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Value {
    Null,
    Integer { value: IntegerText },
    Float { value: f64 },
    Text { value: String },
    Blob { base64: String },
}

/// An integer in JSON: a string (the spec), or a number (some clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntegerText {
    Text(String),
    Number(i64),
}

#[derive(Debug, Serialize)]
pub struct StmtResult {
    cols: Vec<Col>,
    rows: Vec<Vec<Value>>,
    affected_row_count: u64,
    last_insert_rowid: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Col {
    name: Option<String>,
    decltype: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Batch {
    steps: Vec<BatchStep>,
}

#[derive(Debug, Deserialize)]
pub struct BatchStep {
    #[serde(default)]
    condition: Option<BatchCond>,
    stmt: Stmt,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BatchCond {
    Ok { step: usize },
    Error { step: usize },
    Not { cond: Box<BatchCond> },
    And { conds: Vec<BatchCond> },
    Or { conds: Vec<BatchCond> },
    IsAutocommit,
}

#[derive(Debug, Serialize)]
pub struct BatchResult {
    step_results: Vec<Option<StmtResult>>,
    step_errors: Vec<Option<Error>>,
}

#[derive(Debug, Serialize)]
pub struct DescribeResult {
    params: Vec<DescribeParam>,
    cols: Vec<Col>,
    is_explain: bool,
    is_readonly: bool,
}

#[derive(Debug, Serialize)]
pub struct DescribeParam {
    name: Option<String>,
}

fn to_session(value: Value) -> Result<session::Value, Error> {
    Ok(match value {
        Value::Null => session::Value::Null,
        Value::Integer {
            value: IntegerText::Number(i),
        } => session::Value::Integer(i),
        Value::Integer {
            value: IntegerText::Text(text),
        } => session::Value::Integer(text.parse().map_err(|_| {
            Error::new("ARGS_INVALID", format!("{text:?} is not a 64-bit integer"))
        })?),
        Value::Float { value } => session::Value::Real(value),
        Value::Text { value } => session::Value::Text(value),
        Value::Blob { base64 } => session::Value::Blob(
            base64::engine::general_purpose::STANDARD
                .decode(base64.as_bytes())
                .map_err(|e| Error::new("ARGS_INVALID", format!("blob: {e}")))?,
        ),
    })
}

fn from_session(value: session::Value) -> Value {
    match value {
        session::Value::Null => Value::Null,
        session::Value::Integer(i) => Value::Integer {
            value: IntegerText::Text(i.to_string()),
        },
        session::Value::Real(f) => Value::Float { value: f },
        session::Value::Text(t) => Value::Text { value: t },
        session::Value::Blob(b) => Value::Blob {
            base64: base64::engine::general_purpose::STANDARD.encode(b),
        },
    }
}

fn cols(cols: Vec<session::Column>) -> Vec<Col> {
    cols.into_iter()
        .map(|c| Col {
            name: Some(c.name),
            decltype: c.decltype,
        })
        .collect()
}

/// How long an autocommit statement that lost a commit race is run again.
const AUTOCOMMIT_RETRY_MS_MAX: u64 = 5_000;

/// One open stream. While a pipeline runs on it, it is out of the map of
/// idle streams: a baton names it only between requests.
pub struct Stream {
    tenant: String,
    /// The database it is open on.
    db: String,
    session: Session,
    /// `store_sql` texts, by id (a stream's own).
    sqls: HashMap<i32, String>,
    last_used: Instant,
    /// Its place in its tenant's count of open streams, freed on drop
    /// however the stream ends (closed, stopped, expired, or its request
    /// abandoned by the client).
    _slot: Slot,
}

/// Open streams by tenant.
type Live = Arc<Mutex<HashMap<String, usize>>>;

struct Slot {
    live: Live,
    tenant: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = live.get_mut(&self.tenant) {
            assert!(*count > 0, "a stream slot freed twice");
            *count -= 1;
        }
    }
}

/// Why a pipeline could not run at all (an HTTP error, not a result).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("unknown or expired baton")]
    UnknownBaton,
    #[error("tenant {tenant:?} already has its limit of {max} open streams")]
    TooManyStreams { tenant: String, max: usize },
    #[error("{0}")]
    Refused(#[from] crate::tenant::Refusal),
    #[error("{0}")]
    Open(String),
    #[error(transparent)]
    Stopped(#[from] crate::runtime::RunError),
}

/// Every open stream of a service.
pub struct Streams {
    program: SessionProgram,
    /// Streams between requests, by baton.
    idle: Mutex<HashMap<String, Stream>>,
    live: Live,
    writers: WriteGates,
    /// Whether an SQL text only reads, as SQLite's prepare said.
    readonly: Mutex<HashMap<String, bool>>,
    pub idle_max: Duration,
    pub per_tenant_max: usize,
}

impl Streams {
    pub fn new(program: SessionProgram, idle_max: Duration, per_tenant_max: usize) -> Streams {
        Streams {
            program,
            idle: Mutex::default(),
            live: Live::default(),
            writers: WriteGates::default(),
            readonly: Mutex::default(),
            idle_max,
            per_tenant_max,
        }
    }

    fn idle_streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stream>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes streams idle longer than `idle_max`; returns how many.
    pub fn expire(&self) -> usize {
        let mut idle = self.idle_streams();
        let before = idle.len();
        idle.retain(|_, stream| stream.last_used.elapsed() < self.idle_max);
        before - idle.len()
    }

    /// A slot for a new stream of `tenant`, if it is under its cap.
    fn take_slot(&self, tenant: &str) -> Result<Slot, PipelineError> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let count = live.entry(tenant.to_string()).or_default();
        if *count >= self.per_tenant_max {
            return Err(PipelineError::TooManyStreams {
                tenant: tenant.to_string(),
                max: self.per_tenant_max,
            });
        }
        *count += 1;
        Ok(Slot {
            live: self.live.clone(),
            tenant: tenant.to_string(),
        })
    }

    /// The stream `baton` names, if it is `tenant`'s (another tenant's is
    /// left where it was and answered like an unknown one).
    fn take(&self, baton: &str, tenant: &str) -> Result<Stream, PipelineError> {
        let mut idle = self.idle_streams();
        match idle.get(baton) {
            Some(stream) if stream.tenant == tenant => {
                idle.remove(baton).ok_or(PipelineError::UnknownBaton)
            }
            _ => Err(PipelineError::UnknownBaton),
        }
    }

    /// Whether `sql` only reads (SQLite's `sqlite3_stmt_readonly` through
    /// `describe`), remembered per text. SQL that does not prepare counts
    /// as a read: it fails the same way when it runs.
    async fn is_readonly(
        &self,
        runtime: &crate::runtime::Runtime,
        stream: &mut Stream,
        sql: &str,
    ) -> Result<bool, Error> {
        const REMEMBERED_MAX: usize = 4096;
        let known = self
            .readonly
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sql)
            .copied();
        if let Some(readonly) = known {
            return Ok(readonly);
        }
        let readonly = match stream
            .session
            .describe(runtime, sql)
            .await
            .map_err(stopped)?
        {
            Ok(description) => description.is_readonly,
            Err(_) => return Ok(true),
        };
        let mut remembered = self.readonly.lock().unwrap_or_else(|e| e.into_inner());
        if remembered.len() >= REMEMBERED_MAX {
            remembered.clear();
        }
        remembered.insert(sql.to_string(), readonly);
        Ok(readonly)
    }

    /// Runs `req` for `tenant` on database `db` (for a new stream).
    pub async fn pipeline(
        &self,
        tenants: &Tenants,
        tenant: &str,
        db: &str,
        req: PipelineReq,
    ) -> Result<PipelineResp, PipelineError> {
        let mut stream = match &req.baton {
            Some(baton) => {
                tenants.check_session_budget(tenant)?;
                let mut stream = self.take(baton, tenant)?;
                stream.session.begin_request();
                stream
            }
            None => {
                let slot = self.take_slot(tenant)?;
                let (storage, limits) = tenants.session_storage(tenant)?;
                let runtime = tenants.runtime();
                let session = Session::open_in_request(runtime, &self.program, storage, limits, db)
                    .await?
                    .map_err(|e| PipelineError::Open(e.message))?;
                Stream {
                    tenant: tenant.to_string(),
                    db: db.to_string(),
                    session,
                    sqls: HashMap::new(),
                    last_used: Instant::now(),
                    _slot: slot,
                }
            }
        };
        let opened_here = req.baton.is_none();
        // A new stream's own opening (its root read) is this request's too.
        let (billed_before, used_before) = if opened_here {
            Default::default()
        } else {
            (
                stream.session.bill().unwrap_or_default(),
                stream.session.storage_used(),
            )
        };
        let mut results = Vec::with_capacity(req.requests.len());
        let mut closed = false;
        for request in req.requests {
            if closed {
                results.push(StreamResult::Error {
                    error: Error::new("STREAM_CLOSED", "the stream was closed"),
                });
                continue;
            }
            if matches!(request, StreamRequest::Close) {
                closed = true;
            }
            let result = run(self, tenants, &mut stream, request).await;
            results.push(match result {
                Ok(response) => StreamResult::Ok { response },
                Err(error) => StreamResult::Error { error },
            });
        }
        // A stream kept past the request that opened it: its next
        // statements read a root no older than themselves.
        if opened_here
            && !closed
            && !stream.session.is_dead()
            && let Err(e) = stream.session.settle(tenants.runtime()).await?
        {
            return Err(PipelineError::Open(e.message));
        }
        let billed = stream.session.bill().unwrap_or_default();
        let used = stream.session.storage_used();
        let storage = crate::storage::QuotaUse {
            storage_calls: used.storage_calls - used_before.storage_calls,
            sectors: used.sectors - used_before.sectors,
            bytes: used.bytes - used_before.bytes,
        };
        tenants.charge_session(
            tenant,
            storage,
            billed.read_capacity_units - billed_before.read_capacity_units,
            billed.write_capacity_units - billed_before.write_capacity_units,
        );
        stream.last_used = Instant::now();
        let baton = if closed || stream.session.is_dead() {
            None
        } else {
            let baton = new_baton()?;
            self.idle_streams().insert(baton.clone(), stream);
            Some(baton)
        };
        Ok(PipelineResp {
            baton,
            base_url: None,
            results,
        })
    }
}

/// One turn at a time per database for autocommit writers, in arrival
/// order (`tokio::sync::Mutex` is fair). Entries live while someone holds
/// or waits for them.
#[derive(Default)]
struct WriteGates {
    gates: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A writer's turn; the next one's begins on drop.
struct Turn {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    key: String,
    gates: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl WriteGates {
    /// Waits up to `wait_max` for `key`'s turn.
    async fn enter(&self, key: String, wait_max: Duration) -> Option<Turn> {
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = tokio::time::timeout(wait_max, gate.lock_owned()).await.ok();
        let turn = Turn {
            guard,
            key,
            gates: self.gates.clone(),
        };
        // Dropped on a timeout, so the entry can go.
        turn.guard.is_some().then_some(turn)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: nobody has or waits for this turn.
        if gates
            .get(&self.key)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            gates.remove(&self.key);
        }
    }
}

/// A new baton: 192 random bits, unpredictable as the spec asks (and
/// checked against the caller's tenant besides).
fn new_baton() -> Result<String, PipelineError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| PipelineError::Open(format!("no randomness: {e}")))?;
    Ok(super::config::to_hex(&bytes))
}

fn sql_of(stream: &Stream, sql: Option<String>, sql_id: Option<i32>) -> Result<String, Error> {
    match (sql, sql_id) {
        (Some(sql), None) => Ok(sql),
        (None, Some(id)) => stream
            .sqls
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::new("SQL_NOT_FOUND", format!("no stored SQL text {id}"))),
        _ => Err(Error::new(
            "SQL_INVALID",
            "exactly one of sql and sql_id must be given",
        )),
    }
}

fn stopped(e: crate::runtime::RunError) -> Error {
    let code = match e.limit_name() {
        Some(limit) => format!("LIMIT_{}", limit.to_uppercase()),
        None => "PLUGIN_STOPPED".to_string(),
    };
    Error {
        message: e.to_string(),
        code: Some(code),
    }
}

async fn run(
    streams: &Streams,
    tenants: &Tenants,
    stream: &mut Stream,
    request: StreamRequest,
) -> Result<StreamResponse, Error> {
    let runtime = tenants.runtime();
    match request {
        StreamRequest::Close => Ok(StreamResponse::Close),
        StreamRequest::Execute { stmt } => {
            let result = execute(streams, runtime, stream, stmt).await?;
            Ok(StreamResponse::Execute { result })
        }
        StreamRequest::Batch { batch } => {
            let result = batch_run(streams, runtime, stream, batch).await?;
            Ok(StreamResponse::Batch { result })
        }
        StreamRequest::Sequence { sql, sql_id } => {
            let sql = sql_of(stream, sql, sql_id)?;
            stream
                .session
                .execute_script(runtime, &sql)
                .await
                .map_err(stopped)??;
            Ok(StreamResponse::Sequence)
        }
        StreamRequest::Describe { sql, sql_id } => {
            let sql = sql_of(stream, sql, sql_id)?;
            let d = stream
                .session
                .describe(runtime, &sql)
                .await
                .map_err(stopped)??;
            Ok(StreamResponse::Describe {
                result: DescribeResult {
                    params: d
                        .params
                        .into_iter()
                        .map(|name| DescribeParam { name })
                        .collect(),
                    cols: cols(d.cols),
                    is_explain: d.is_explain,
                    is_readonly: d.is_readonly,
                },
            })
        }
        StreamRequest::StoreSql { sql_id, sql } => {
            if stream.sqls.contains_key(&sql_id) {
                return Err(Error::new(
                    "SQL_ID_IN_USE",
                    format!("SQL text {sql_id} exists"),
                ));
            }
            stream.sqls.insert(sql_id, sql);
            Ok(StreamResponse::StoreSql)
        }
        StreamRequest::CloseSql { sql_id } => {
            stream.sqls.remove(&sql_id);
            Ok(StreamResponse::CloseSql)
        }
        StreamRequest::GetAutocommit => {
            let is_autocommit = stream
                .session
                .is_autocommit(runtime)
                .await
                .map_err(stopped)?;
            Ok(StreamResponse::GetAutocommit { is_autocommit })
        }
    }
}

/// One statement. In autocommit, a statement that lost a commit race to
/// another writer (SQLITE_BUSY*) runs again, for up to
/// `AUTOCOMMIT_RETRY_MS_MAX`, as a `busy_timeout` would; inside a
/// transaction the client gets the error and retries the transaction.
async fn execute(
    streams: &Streams,
    runtime: &crate::runtime::Runtime,
    stream: &mut Stream,
    stmt: Stmt,
) -> Result<StmtResult, Error> {
    let sql = sql_of(stream, stmt.sql, stmt.sql_id)?;
    let args = stmt
        .args
        .into_iter()
        .map(to_session)
        .collect::<Result<Vec<_>, _>>()?;
    let named_args = stmt
        .named_args
        .into_iter()
        .map(|a| Ok((a.name, to_session(a.value)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let statement = session::Statement {
        sql,
        args,
        named_args,
        want_rows: stmt.want_rows.unwrap_or(true),
    };
    let autocommit = stream
        .session
        .is_autocommit(runtime)
        .await
        .map_err(stopped)?;
    let started = Instant::now();
    // Autocommit writers of one database take turns here: racing, most of
    // 64 concurrent ones lost every commit until they gave up.
    let _turn = if autocommit && !streams.is_readonly(runtime, stream, &statement.sql).await? {
        let key = format!("{}\n{}", stream.tenant, stream.db);
        let wait_max = Duration::from_millis(AUTOCOMMIT_RETRY_MS_MAX);
        Some(streams.writers.enter(key, wait_max).await.ok_or_else(|| {
            Error::new(
                "SQLITE_BUSY",
                format!(
                    "database {:?} is busy: other writers held it for {} ms",
                    stream.db, AUTOCOMMIT_RETRY_MS_MAX
                ),
            )
        })?)
    } else {
        None
    };
    let mut pause_ms = 5;
    loop {
        let done = stream
            .session
            .execute(runtime, statement.clone())
            .await
            .map_err(stopped)?;
        match done {
            Ok(result) => {
                return Ok(StmtResult {
                    cols: cols(result.cols),
                    rows: result
                        .rows
                        .into_iter()
                        .map(|row| row.into_iter().map(from_session).collect())
                        .collect(),
                    affected_row_count: result.affected_row_count,
                    last_insert_rowid: result.last_insert_rowid.map(|id| id.to_string()),
                });
            }
            Err(e)
                if autocommit
                    && e.code.starts_with("SQLITE_BUSY")
                    && started.elapsed() < Duration::from_millis(AUTOCOMMIT_RETRY_MS_MAX) =>
            {
                tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                pause_ms = (pause_ms * 2).min(200);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn batch_run(
    streams: &Streams,
    runtime: &crate::runtime::Runtime,
    stream: &mut Stream,
    batch: Batch,
) -> Result<BatchResult, Error> {
    let mut step_results: Vec<Option<StmtResult>> = Vec::with_capacity(batch.steps.len());
    let mut step_errors: Vec<Option<Error>> = Vec::with_capacity(batch.steps.len());
    for step in batch.steps {
        let run_it = match &step.condition {
            None => true,
            Some(cond) => eval(runtime, stream, cond, &step_results, &step_errors).await?,
        };
        if !run_it {
            step_results.push(None);
            step_errors.push(None);
            continue;
        }
        match execute(streams, runtime, stream, step.stmt).await {
            Ok(result) => {
                step_results.push(Some(result));
                step_errors.push(None);
            }
            Err(error) => {
                step_results.push(None);
                step_errors.push(Some(error));
            }
        }
    }
    Ok(BatchResult {
        step_results,
        step_errors,
    })
}

/// A batch condition over the steps so far.
fn eval<'a>(
    runtime: &'a crate::runtime::Runtime,
    stream: &'a mut Stream,
    cond: &'a BatchCond,
    results: &'a [Option<StmtResult>],
    errors: &'a [Option<Error>],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, Error>> + Send + 'a>> {
    Box::pin(async move {
        Ok(match cond {
            BatchCond::Ok { step } => results.get(*step).is_some_and(Option::is_some),
            BatchCond::Error { step } => errors.get(*step).is_some_and(Option::is_some),
            BatchCond::Not { cond } => !eval(runtime, stream, cond, results, errors).await?,
            BatchCond::And { conds } => {
                for cond in conds {
                    if !eval(runtime, stream, cond, results, errors).await? {
                        return Ok(false);
                    }
                }
                true
            }
            BatchCond::Or { conds } => {
                for cond in conds {
                    if eval(runtime, stream, cond, results, errors).await? {
                        return Ok(true);
                    }
                }
                false
            }
            BatchCond::IsAutocommit => stream
                .session
                .is_autocommit(runtime)
                .await
                .map_err(stopped)?,
        })
    })
}
