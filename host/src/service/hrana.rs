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

/// How long an autocommit statement that lost a commit race is run again,
/// and the most it waits for its writer's turn: both counted from the
/// statement's start, so together they wait at most this long (plus the
/// last run). Neither counts toward the request's time limit, which
/// measures the guest's own execution; this bound is theirs.
const AUTOCOMMIT_RETRY_MS_MAX: u64 = 5_000;

/// Most `store_sql` texts one stream keeps (sqld keeps 50 too).
pub const STORED_SQL_MAX: usize = 50;
/// Largest `store_sql` text.
pub const STORED_SQL_BYTES_MAX: usize = 64 << 10;

/// Most SQL texts whose read-only-ness is remembered per tenant (each
/// entry a hash: a few dozen bytes). A tenant past it forgets its own,
/// never another tenant's.
const READONLY_REMEMBERED_PER_TENANT_MAX: usize = 1024;

/// Answer bytes set aside for each request of a pipeline: room for the
/// short `RESPONSE_TOO_LARGE` error that replaces a result that does not
/// fit, so the whole answer stays within `response_bytes_max`.
const RESULT_RESERVE_BYTES: usize = 320;

/// Answer bytes set aside for a pipeline's envelope (baton, base URL,
/// braces).
const ENVELOPE_BYTES: usize = 160;

/// One open stream. While a pipeline runs on it, it is out of the map of
/// idle streams: a baton names it only between requests.
pub struct Stream {
    tenant: String,
    /// The database it is open on.
    db: String,
    session: Session,
    /// `store_sql` texts, by id (a stream's own): at most
    /// [`STORED_SQL_MAX`] of at most [`STORED_SQL_BYTES_MAX`] each.
    sqls: HashMap<i32, String>,
    last_used: Instant,
    /// What the tenant was charged for this stream so far: capacity units
    /// (read, write) and storage use, as the session counted them.
    charged_units: (f64, f64),
    charged_use: crate::storage::QuotaUse,
    /// Bytes the current request's answer may still take.
    response_bytes_left: usize,
    /// The tenant's `response_bytes_max`, for errors that name it.
    response_bytes_max: usize,
    /// Whether the request being run (one of a pipeline's) committed a
    /// write (or, a `sequence`, may have): an error that replaces its
    /// result must say so, or the client would run it again.
    committed: bool,
    /// Its place in its tenant's count of open streams, freed on drop
    /// however the stream ends (closed, stopped, expired, or its request
    /// abandoned by the client).
    _slot: Slot,
    /// The tenant's instance it holds, idle or not, until it ends.
    _instance: crate::tenant::InstanceSlot,
}

impl Stream {
    /// Charges the tenant what the session used since the last charge:
    /// after each statement, and when a request ends however it ends.
    fn charge(&mut self, tenants: &Tenants) {
        let billed = self.session.bill().unwrap_or_default();
        let used = self.session.storage_used();
        let (read_before, write_before) = self.charged_units;
        let before = self.charged_use;
        let storage = crate::storage::QuotaUse {
            storage_calls: used.storage_calls - before.storage_calls,
            sectors: used.sectors - before.sectors,
            bytes: used.bytes - before.bytes,
        };
        tenants.charge_session(
            &self.tenant,
            storage,
            billed.read_capacity_units - read_before,
            billed.write_capacity_units - write_before,
        );
        self.charged_units = (billed.read_capacity_units, billed.write_capacity_units);
        self.charged_use = used;
    }
}

/// A stream while a request runs on it: if the request's future is
/// dropped before its end (the client hung up, and hyper dropped the
/// handler), what it did is still charged, once, and logged.
struct Running<'a> {
    tenants: &'a Tenants,
    stream: Option<Stream>,
}

impl Running<'_> {
    fn stream(&mut self) -> &mut Stream {
        self.stream
            .as_mut()
            .expect("a running request has its stream until it ends")
    }

    /// The stream, charged for all it did, at the request's end.
    fn finish(mut self) -> Stream {
        let mut stream = self.stream.take().expect("finished once");
        stream.charge(self.tenants);
        stream
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            stream.charge(self.tenants);
            tracing::info!(
                tenant = stream.tenant,
                db = stream.db,
                "a libSQL request ended before its answer (client hung up, or stopped): its work is charged and its stream closed"
            );
        }
    }
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
    #[error(
        "a pipeline of {requests} requests cannot be answered within this tenant's response_bytes_max = {max}: send fewer requests at once"
    )]
    TooManyRequests { requests: usize, max: usize },
}

/// Every open stream of a service.
pub struct Streams {
    program: SessionProgram,
    /// Streams between requests, by baton.
    idle: Mutex<HashMap<String, Stream>>,
    live: Live,
    writers: WriteGates,
    /// Whether an SQL text only reads, as SQLite's prepare said, by
    /// tenant and SHA-256 of the text: its memory does not grow with the
    /// texts' lengths, and each tenant's is bounded on its own.
    readonly: Mutex<Remembered>,
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
        let hash = donut_format::hash(sql.as_bytes());
        let known = self
            .readonly
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&stream.tenant, &hash);
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
        self.readonly
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(&stream.tenant, hash, readonly);
        Ok(readonly)
    }

    /// Runs `req` for `tenant` on database `db` (for a new stream). Its
    /// statements share one request's limits; the budget is checked before
    /// each statement and charged after it, and what ran is charged even
    /// if the request is dropped before its end.
    pub async fn pipeline(
        &self,
        tenants: &Tenants,
        tenant: &str,
        db: &str,
        req: PipelineReq,
    ) -> Result<PipelineResp, PipelineError> {
        let response_bytes_max = tenants.limits(tenant)?.response_bytes_max;
        // Every result gets room for the error that would replace it, so
        // a pipeline whose answer could not hold even those is refused
        // before anything runs.
        let reserved = req
            .requests
            .len()
            .saturating_mul(RESULT_RESERVE_BYTES)
            .saturating_add(ENVELOPE_BYTES);
        let Some(response_bytes_left) = response_bytes_max.checked_sub(reserved) else {
            return Err(PipelineError::TooManyRequests {
                requests: req.requests.len(),
                max: response_bytes_max,
            });
        };
        let runtime = tenants.runtime();
        let mut stream = match &req.baton {
            Some(baton) => {
                // No budget check here: each statement checks it before it
                // runs, and a tenant whose budget is used must still be able
                // to close its stream or roll back (a check here refused
                // even that, and the stream held an instance until it idled
                // out).
                let mut stream = self.take(baton, tenant)?;
                stream.session.begin_request(runtime)?;
                stream
            }
            None => {
                let slot = self.take_slot(tenant)?;
                let (storage, limits, instance) = tenants.session_storage(tenant)?;
                // What opening costs is charged however it ends: failed,
                // or dropped with the request (the client hung up).
                let opening = Opening {
                    tenants,
                    tenant,
                    db,
                    bill: storage.bill_handle(),
                    done: false,
                };
                let opened =
                    Session::open_in_request(runtime, &self.program, storage, limits, db).await;
                let session = opening.settle(opened)?;
                Stream {
                    tenant: tenant.to_string(),
                    db: db.to_string(),
                    session,
                    sqls: HashMap::new(),
                    last_used: Instant::now(),
                    // A new stream's own opening (its root read) is this
                    // request's too.
                    charged_units: (0.0, 0.0),
                    charged_use: Default::default(),
                    response_bytes_left: 0,
                    response_bytes_max,
                    committed: false,
                    _slot: slot,
                    _instance: instance,
                }
            }
        };
        stream.response_bytes_left = response_bytes_left;
        stream.response_bytes_max = response_bytes_max;
        let opened_here = req.baton.is_none();
        let mut running = Running {
            tenants,
            stream: Some(stream),
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
            let stream = running.stream();
            // The units cap of every storage call of this request: what is
            // left of the tenant's budget (statements check and set it
            // again, each before it runs).
            let left = tenants.units_left(&stream.tenant);
            stream.session.limit_units(left.read, left.write);
            let left_before = stream.response_bytes_left;
            stream.committed = false;
            let result = run(self, tenants, stream, request).await;
            stream.charge(tenants);
            let result = match result {
                Ok(response) => StreamResult::Ok { response },
                Err(error) => StreamResult::Error { error },
            };
            // Its exact size, written to nothing: it takes what is left and
            // its own reserve, or is replaced by an error that fits the
            // reserve.
            stream.response_bytes_left = left_before;
            let result = fit(stream, result, RESULT_RESERVE_BYTES);
            results.push(result);
        }
        // A stream kept past the request that opened it: its next
        // statements read a root no older than themselves.
        // Settling happens after the statements ran: some may have
        // committed, so its failure (a limit reached, an error) must not
        // discard their results — the client would run them again. The
        // stream is closed instead (no baton), and what settling used is
        // charged like the rest.
        let stream = running.stream();
        let mut settled = true;
        if opened_here && !closed && !stream.session.is_dead() {
            let failure = match stream.session.settle(runtime).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.message),
                Err(e) => Some(e.to_string()),
            };
            if let Some(failure) = failure {
                tracing::warn!(
                    tenant = %stream.tenant,
                    db = %stream.db,
                    "closing a new stream that could not be kept: {failure}"
                );
                settled = false;
            }
            stream.charge(tenants);
        }
        let mut stream = running.finish();
        stream.last_used = Instant::now();
        let baton = if closed || !settled || stream.session.is_dead() {
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

/// Whether SQL texts only read, by tenant and text hash: at most
/// [`READONLY_REMEMBERED_PER_TENANT_MAX`] per tenant, so one tenant's
/// stream of distinct texts flushes only its own.
#[derive(Default)]
struct Remembered {
    by_tenant: HashMap<String, HashMap<donut_format::Hash, bool>>,
}

impl Remembered {
    fn get(&self, tenant: &str, hash: &donut_format::Hash) -> Option<bool> {
        self.by_tenant.get(tenant)?.get(hash).copied()
    }

    fn insert(&mut self, tenant: &str, hash: donut_format::Hash, readonly: bool) {
        let own = self.by_tenant.entry(tenant.to_string()).or_default();
        if own.len() >= READONLY_REMEMBERED_PER_TENANT_MAX {
            own.clear();
        }
        own.insert(hash, readonly);
        assert!(own.len() <= READONLY_REMEMBERED_PER_TENANT_MAX);
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

/// A stream's opening until it is a stream: charged to the tenant if it
/// fails or its request is dropped, logged if dropped.
struct Opening<'a> {
    tenants: &'a Tenants,
    tenant: &'a str,
    db: &'a str,
    bill: Option<Arc<Mutex<crate::stats::RequestStats>>>,
    /// Settled: the stream charges from here on (its counters start at
    /// zero, so it charges the opening too), or the failure was charged.
    done: bool,
}

impl Opening<'_> {
    /// The opened session, or why not (its cost charged).
    fn settle(
        mut self,
        opened: Result<Result<Session, SqlError>, crate::runtime::RunError>,
    ) -> Result<Session, PipelineError> {
        self.done = true;
        match opened {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(refused)) => {
                self.charge();
                Err(PipelineError::Open(refused.message))
            }
            Err(stopped) => {
                self.charge();
                if let Some(limit) = stopped.limit_name() {
                    self.tenants.count_limit(self.tenant, limit);
                }
                Err(stopped.into())
            }
        }
    }

    fn charge(&self) {
        let Some(bill) = &self.bill else {
            return;
        };
        let bill = bill.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.tenants.charge_session(
            self.tenant,
            crate::storage::QuotaUse::default(),
            bill.read_capacity_units,
            bill.write_capacity_units,
        );
    }
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.charge();
            tracing::info!(
                tenant = self.tenant,
                db = self.db,
                "a libSQL stream's opening ended before its answer (client hung up): its work is charged"
            );
        }
    }
}

/// `result` if its JSON fits in what is left of the stream's answer plus
/// `reserve` (taking it), else the short error that fits `reserve`.
fn fit<T: Serialize + From<Error>>(stream: &mut Stream, result: T, reserve: usize) -> T {
    let allowed = stream.response_bytes_left.saturating_add(reserve);
    if let Some(bytes) = json_bytes_within(&result, allowed) {
        stream.response_bytes_left = allowed - bytes;
        return result;
    }
    let replaced = T::from(too_large(stream, None));
    let bytes = json_bytes_within(&replaced, usize::MAX).unwrap_or(usize::MAX);
    // A pipeline's result always fits its reserve; a batch step's error
    // may not fit what is left (then its batch does not fit, and the
    // pipeline replaces the batch).
    assert!(reserve == 0 || bytes <= reserve, "{bytes} bytes of error");
    stream.response_bytes_left = allowed.saturating_sub(bytes);
    replaced
}

impl From<Error> for StreamResult {
    fn from(error: Error) -> StreamResult {
        StreamResult::Error { error }
    }
}

/// The error of an answer that does not fit in what is left of the
/// tenant's `response_bytes_max` (`at_least`: its size, if known), saying
/// whether what did not fit committed a write.
fn too_large(stream: &Stream, at_least: Option<usize>) -> Error {
    let size = at_least.map_or(String::new(), |bytes| format!(" (at least {bytes} bytes)"));
    let committed = if stream.committed {
        "it committed, but "
    } else {
        ""
    };
    Error::new(
        "RESPONSE_TOO_LARGE",
        format!(
            "{committed}its answer{size} does not fit in response_bytes_max = {} ({} bytes were left of it)",
            stream.response_bytes_max, stream.response_bytes_left
        ),
    )
}

/// Bytes `value` takes as JSON, if at most `max` (counted by writing it to
/// nothing, stopped once past `max`).
pub(super) fn json_bytes_within<T: Serialize + ?Sized>(value: &T, max: usize) -> Option<usize> {
    struct Bounded {
        bytes: usize,
        max: usize,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.max {
                return Err(std::io::Error::other("over the bound"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Bounded { bytes: 0, max };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.bytes)
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
            let result = execute(streams, tenants, stream, stmt).await?;
            Ok(StreamResponse::Execute { result })
        }
        StreamRequest::Batch { batch } => {
            let result = batch_run(streams, tenants, stream, batch).await?;
            Ok(StreamResponse::Batch { result })
        }
        StreamRequest::Sequence { sql, sql_id } => {
            let sql = sql_of(stream, sql, sql_id)?;
            let left = tenants
                .check_session_budget(&stream.tenant)
                .map_err(over_budget)?;
            // Its storage calls are capped by what is left of the budget:
            // the script's statements run in one call.
            stream.session.limit_units(left.read, left.write);
            stream
                .session
                .execute_script(runtime, &sql)
                .await
                .map_err(stopped)??;
            stream.committed = true;
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
            if stream.sqls.len() >= STORED_SQL_MAX {
                return Err(Error::new(
                    "SQL_STORE_LIMIT",
                    format!("a stream keeps at most {STORED_SQL_MAX} SQL texts: close one first"),
                ));
            }
            if sql.len() > STORED_SQL_BYTES_MAX {
                return Err(Error::new(
                    "SQL_STORE_LIMIT",
                    format!(
                        "a stored SQL text is at most {STORED_SQL_BYTES_MAX} bytes; this one is {}",
                        sql.len()
                    ),
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
    tenants: &Tenants,
    stream: &mut Stream,
    stmt: Stmt,
) -> Result<StmtResult, Error> {
    let runtime = tenants.runtime();
    let left = tenants
        .check_session_budget(&stream.tenant)
        .map_err(over_budget)?;
    stream.session.limit_units(left.read, left.write);
    let answered = execute_statement(streams, runtime, stream, stmt).await;
    stream.charge(tenants);
    let (result, committed) = answered?;
    stream.committed |= committed;
    // Sized before it is built (each text, blob and name in full): a
    // result that cannot fit is never turned into JSON values.
    let bytes = result_json_bytes(&result);
    if bytes > stream.response_bytes_left {
        return Err(too_large(stream, Some(bytes)));
    }
    Ok(StmtResult {
        cols: cols(result.cols),
        rows: result
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(from_session).collect())
            .collect(),
        affected_row_count: result.affected_row_count,
        last_insert_rowid: result.last_insert_rowid.map(|id| id.to_string()),
    })
}

/// A statement refused because its tenant's budget is used up.
fn over_budget(refusal: crate::tenant::Refusal) -> Error {
    Error::new(
        &format!("LIMIT_{}", refusal.limit_name().to_uppercase()),
        refusal.to_string(),
    )
}

/// Bytes `value` takes in a JSON string, quotes included, as serde_json
/// writes it (a control character is six: `\u0000`).
fn json_string_bytes(value: &str) -> usize {
    2 + value
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Bytes a statement's result takes in the answer's JSON, at least (the
/// fixed parts of each value as Hrana writes them, and each text, blob
/// and name in full).
fn result_json_bytes(result: &session::StatementResult) -> usize {
    /// `{"type":"integer","value":""}` and the like, and a comma.
    const VALUE_OVERHEAD_BYTES: usize = 32;
    let names: usize = result
        .cols
        .iter()
        .map(|c| {
            json_string_bytes(&c.name)
                + c.decltype.as_deref().map_or(0, json_string_bytes)
                + VALUE_OVERHEAD_BYTES
        })
        .sum();
    let values: usize = result
        .rows
        .iter()
        .flatten()
        .map(|value| {
            VALUE_OVERHEAD_BYTES
                + match value {
                    session::Value::Null => 0,
                    session::Value::Integer(_) | session::Value::Real(_) => 24,
                    session::Value::Text(text) => json_string_bytes(text),
                    session::Value::Blob(blob) => blob.len().div_ceil(3) * 4,
                }
        })
        .sum();
    names + values
}

/// One statement, run (SQLite's answer or error, and whether it committed
/// a write: one that writes, run in autocommit), not yet charged or sized.
async fn execute_statement(
    streams: &Streams,
    runtime: &crate::runtime::Runtime,
    stream: &mut Stream,
    stmt: Stmt,
) -> Result<(session::StatementResult, bool), Error> {
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
    let writes = autocommit && !streams.is_readonly(runtime, stream, &statement.sql).await?;
    let _turn = if writes {
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
            Ok(result) => return Ok((result, writes)),
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
    tenants: &Tenants,
    stream: &mut Stream,
    batch: Batch,
) -> Result<BatchResult, Error> {
    let runtime = tenants.runtime();
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
        // Each step takes its share of the answer as it is built (a
        // step's `null` in the other list: a few bytes, in the reserve).
        let done = execute(streams, tenants, stream, step.stmt).await;
        match fit(stream, done, 0) {
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

impl From<Error> for Result<StmtResult, Error> {
    fn from(error: Error) -> Self {
        Err(error)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One tenant's flood of distinct SQL texts forgets only its own
    /// texts' read-only-ness (a shared memory cleared at 4,096 entries let
    /// any tenant flush every other tenant's).
    #[test]
    fn one_tenants_texts_do_not_flush_anothers_write_detection() {
        let mut remembered = Remembered::default();
        let kept = donut_format::hash(b"insert into t values (1)");
        remembered.insert("calm", kept, false);
        for i in 0..READONLY_REMEMBERED_PER_TENANT_MAX * 3 {
            let text = format!("select {i}");
            remembered.insert("flood", donut_format::hash(text.as_bytes()), true);
        }
        assert_eq!(remembered.get("calm", &kept), Some(false));
        assert!(remembered.by_tenant["flood"].len() <= READONLY_REMEMBERED_PER_TENANT_MAX);
    }

    /// An answer is counted to its last byte, and counting stops past the
    /// bound.
    #[test]
    fn json_bytes_within_counts_every_byte_up_to_its_bound() {
        let error = Error::new("X", "a\u{0}b");
        let exact = serde_json::to_vec(&StreamResult::Error {
            error: error.clone(),
        })
        .expect("json")
        .len();
        let result = StreamResult::Error { error };
        assert_eq!(json_bytes_within(&result, exact), Some(exact));
        assert_eq!(json_bytes_within(&result, exact - 1), None);
    }
}
