//! The HTTP API: routes, handlers and the JSON error shape
//! `{"error": {"code", "message", "limit"?}, "usage"?}` with a stable
//! `code` per kind of failure.

use super::Service;
use super::plugins::PluginError;
use crate::runtime::{RunError, Usage};
use crate::storage::StorageError;
use crate::tenant::{InvokeError, Refusal, TenantOpError};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use donut_format::{DbName, PAGE_SIZE_DEFAULT};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::Instrument;

type Shared = State<Arc<Service>>;

pub fn router(service: Arc<Service>) -> Router {
    let plugin_bytes_max = service.config.plugin_bytes_max;
    let request_bytes_max = service.config.request_bytes_max;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/plugins", get(list_plugins))
        .route(
            "/v1/plugins/{name}",
            put(put_plugin)
                .layer(DefaultBodyLimit::max(plugin_bytes_max))
                .get(get_plugin)
                .delete(delete_plugin),
        )
        .route(
            "/v1/plugins/{name}/invoke",
            post(invoke).layer(DefaultBodyLimit::max(request_bytes_max)),
        )
        // libSQL clients (Hrana over HTTP, JSON): `http://HOST/db/NAME/`
        // selects database NAME.
        .route(
            "/db/{db}/v1/execute",
            post(hrana_v1_route::<super::hrana::ExecuteReq>)
                .layer(DefaultBodyLimit::max(request_bytes_max)),
        )
        .route(
            "/db/{db}/v1/batch",
            post(hrana_v1_route::<super::hrana::BatchReq>)
                .layer(DefaultBodyLimit::max(request_bytes_max)),
        )
        .route("/db/{db}/v2", get(hrana_version))
        .route("/db/{db}/v3", get(hrana_version))
        .route(
            "/db/{db}/v2/pipeline",
            post(hrana_pipeline).layer(DefaultBodyLimit::max(request_bytes_max)),
        )
        .route(
            "/db/{db}/v3/pipeline",
            post(hrana_pipeline).layer(DefaultBodyLimit::max(request_bytes_max)),
        )
        .route("/v1/databases", get(list_databases))
        .route(
            "/v1/databases/{db}",
            put(create_database).delete(remove_database),
        )
        .route_layer(middleware::from_fn_with_state(service.clone(), observe))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            service.clone(),
            body_deadline,
        ))
        .with_state(service)
}

/// A request body not whole by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTimeout(std::time::Duration);

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: axum::body::Body,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: std::time::Duration,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::future::Future as _;
        if let std::task::Poll::Ready(frame) = std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            return std::task::Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            let timeout = self.timeout;
            return std::task::Poll::Ready(Some(Err(BodyTimeout(timeout).into())));
        }
        std::task::Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives every request body a deadline (`[service] body_timeout_secs`,
/// from when its head arrived): a client that trickles a body cannot hold
/// a connection and a handler for longer.
async fn body_deadline(State(service): Shared, request: Request, next: Next) -> Response {
    let timeout = std::time::Duration::from_secs_f64(service.config.body_timeout_secs);
    let request = request.map(|inner| {
        axum::body::Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        })
    });
    next.run(request).await
}

/// Whether `error` or one of its sources is a [`BodyTimeout`].
fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.is::<BodyTimeout>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// An answer that is not a success.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The limit met, for `limit_exceeded`.
    limit: Option<&'static str>,
    retry_after_secs: Option<u64>,
    usage: Option<Box<UsageJson>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            limit: None,
            retry_after_secs: None,
            usage: None,
        }
    }

    fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": ErrorBody { code: self.code, message: &self.message, limit: self.limit },
        });
        if let Some(usage) = &self.usage {
            body["usage"] = serde_json::to_value(usage).unwrap_or_default();
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_path", rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let status = rejection.status();
        if is_body_timeout(&rejection) {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                rejection.body_text(),
            );
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                status,
                "too_large",
                "the request body is over this route's limit",
            );
        }
        ApiError::new(status, "bad_body", rejection.body_text())
    }
}

impl From<PluginError> for ApiError {
    fn from(error: PluginError) -> ApiError {
        let message = error.to_string();
        match error {
            PluginError::IllegalName(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "illegal_name", message)
            }
            PluginError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "plugin_not_found", message)
            }
            PluginError::Load(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_component",
                message,
            ),
            PluginError::CompileBudget { renews_in, .. } => ApiError {
                limit: Some("compile_time"),
                retry_after_secs: Some(renews_in.as_secs_f64().ceil() as u64),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "limit_exceeded", message)
            },
            PluginError::CompileBusy => ApiError {
                limit: Some("compiles"),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "limit_exceeded", message)
            },
            PluginError::Io(_) => {
                tracing::error!("plugin store: {message}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(error: StorageError) -> ApiError {
        let message = error.to_string();
        let (status, code) = match error {
            StorageError::NotFound(_) => (StatusCode::NOT_FOUND, "database_not_found"),
            StorageError::AlreadyExists(_) => (StatusCode::CONFLICT, "exists"),
            StorageError::Denied(_) => (StatusCode::FORBIDDEN, "forbidden"),
            StorageError::Conflict | StorageError::Busy(_) => (StatusCode::CONFLICT, "busy"),
            StorageError::Throttled(_) | StorageError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
            }
            StorageError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            StorageError::TooLarge(_) | StorageError::Corrupt(_) | StorageError::Trap(_) => {
                tracing::error!("storage: {message}");
                (StatusCode::INTERNAL_SERVER_ERROR, "storage_error")
            }
        };
        ApiError::new(status, code, message)
    }
}

impl From<TenantOpError> for ApiError {
    fn from(error: TenantOpError) -> ApiError {
        match error {
            TenantOpError::Refused(refusal) => refused(refusal),
            TenantOpError::Storage(error) => error.into(),
        }
    }
}

fn refused(refusal: Refusal) -> ApiError {
    let message = refusal.to_string();
    let retry_after_secs = match &refusal {
        Refusal::BudgetExhausted { renews_in, .. } => Some(renews_in.as_secs_f64().ceil() as u64),
        _ => None,
    };
    let status = match refusal {
        // A token maps to a configured tenant; this is the service's bug.
        Refusal::UnknownTenant(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::TOO_MANY_REQUESTS,
    };
    ApiError {
        limit: Some(refusal.limit_name()),
        retry_after_secs,
        ..ApiError::new(status, "limit_exceeded", message)
    }
}

fn stopped(error: RunError, usage: Usage) -> ApiError {
    let message = error.to_string();
    let mut answer = match error.limit_name() {
        Some(limit) => ApiError {
            limit: Some(limit),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", message)
        },
        None if matches!(error, RunError::Trap { .. }) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugin_trapped", message)
        }
        None => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin_failed", message),
    };
    answer.usage = Some(Box::new(UsageJson::from(&usage)));
    answer
}

/// The tenant whose bearer token the request carries; a request without
/// a known token is answered 401 before its handler runs.
struct Caller(String);

impl axum::extract::FromRequestParts<Arc<Service>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        service: &Arc<Service>,
    ) -> Result<Caller, ApiError> {
        authenticate(service, &parts.headers).map(Caller)
    }
}

/// The request's body, if its content type is `wanted` (415 otherwise)
/// and it is within the route's limit (413 otherwise).
fn body_of(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    wanted: &str,
) -> Result<Bytes, ApiError> {
    require_content_type(headers, wanted)?;
    Ok(body?)
}

/// The tenant whose bearer token the request carries.
fn authenticate(service: &Service, headers: &HeaderMap) -> Result<String, ApiError> {
    service
        .tenant_of(bearer(headers)?)
        .ok_or_else(|| ApiError::unauthorized("unknown token"))
}

/// The request's bearer token.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must be Bearer <token>"))?;
    Ok(token.trim())
}

/// Passes only the operator (`[service] operator_token_sha256`).
fn require_operator(service: &Service, headers: &HeaderMap) -> Result<(), ApiError> {
    if service.is_operator(bearer(headers)?) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "this route answers only to the operator's token ([service] operator_token_sha256)",
        ))
    }
}

fn require_content_type(headers: &HeaderMap, wanted: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(wanted) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type must be {wanted}, not {given:?}"),
    ))
}

/// Counts, times and logs every routed request; tags it with an id.
async fn observe(State(service): Shared, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let id = service.next_request_id.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("request", id, method = %request.method(), route = %route);
    let mut unanswered = Unanswered {
        service: service.clone(),
        route: Some(route),
        span: span.clone(),
        started,
    };
    let mut response = next.run(request).instrument(span.clone()).await;
    let route = unanswered.route.take().expect("answered once");
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    service.metrics.record(&route, status, elapsed);
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    span.in_scope(|| tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered"));
    response
}

/// The status a request is counted with when its client hung up before
/// the answer (nginx's "client closed request").
const CLIENT_HUNG_UP_STATUS: u16 = 499;

/// A request not answered yet: dropped so (hyper drops the handler when
/// its client hangs up), it is still counted and logged, once.
struct Unanswered {
    service: Arc<Service>,
    /// Taken when the request is answered.
    route: Option<String>,
    span: tracing::Span,
    started: std::time::Instant,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(route) = self.route.take() else {
            return;
        };
        let elapsed = self.started.elapsed();
        let status = CLIENT_HUNG_UP_STATUS;
        self.service.metrics.record(&route, status, elapsed);
        self.span.in_scope(|| {
            tracing::info!(
                status,
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                "client hung up before the answer"
            )
        });
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /metrics`: every tenant's name and use, so the operator's only.
async fn metrics(State(service): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    require_operator(&service, &headers)?;
    let mut text = service.metrics.render(&service.tenants);
    super::metrics::render_compiles(
        &mut text,
        &service.plugins.compile_totals(),
        service.tenants.runtime(),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Runs blocking plugin-store work (reading, compiling) off the async
/// threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PluginError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Ok(done?),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("plugin work failed: {e}"),
        )),
    }
}

async fn list_plugins(
    State(service): Shared,
    Caller(tenant): Caller,
) -> Result<Response, ApiError> {
    let svc = service.clone();
    let plugins = blocking(move || svc.plugins.list(&tenant)).await?;
    Ok(Json(serde_json::json!({ "plugins": plugins })).into_response())
}

async fn put_plugin(
    State(service): Shared,
    Caller(tenant): Caller,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let body = body_of(&headers, body, "application/wasm")?;
    let svc = service.clone();
    let info = blocking(move || {
        let runtime = svc.tenants.runtime();
        svc.plugins.put(runtime, &tenant, &name, &body)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn get_plugin(
    State(service): Shared,
    Caller(tenant): Caller,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let svc = service.clone();
    let plugins = blocking(move || svc.plugins.list(&tenant)).await?;
    match plugins.into_iter().find(|p| p.name == name) {
        Some(info) => Ok(Json(info).into_response()),
        None => Err(PluginError::NotFound(name).into()),
    }
}

async fn delete_plugin(
    State(service): Shared,
    Caller(tenant): Caller,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let svc = service.clone();
    blocking(move || svc.plugins.remove(&tenant, &name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/plugins/{name}/invoke`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvokeRequest {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    stdin: String,
}

#[derive(Serialize)]
struct InvokeResponse {
    exit_code: i32,
    stdout: String,
    stderr: String,
    usage: UsageJson,
}

/// A call's [`Usage`] as JSON.
#[derive(Debug, Serialize)]
struct UsageJson {
    wall_ms: f64,
    cpu_ms: f64,
    storage_calls: u64,
    sectors: u64,
    bytes: u64,
    read_units: f64,
    write_units: f64,
    /// Storage requests by operation, as billed.
    requests: BTreeMap<&'static str, u64>,
    peak_memory_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    fuel: Option<u64>,
    exit_code: Option<i32>,
}

impl From<&Usage> for UsageJson {
    fn from(usage: &Usage) -> UsageJson {
        let billed = usage.billed.clone().unwrap_or_default();
        UsageJson {
            wall_ms: usage.wall.as_secs_f64() * 1e3,
            cpu_ms: usage.busy.as_secs_f64() * 1e3,
            storage_calls: usage.storage.storage_calls,
            sectors: usage.storage.sectors,
            bytes: usage.storage.bytes,
            read_units: billed.read_capacity_units,
            write_units: billed.write_capacity_units,
            requests: billed.requests,
            peak_memory_bytes: usage.peak_memory_bytes,
            fuel: usage.fuel,
            exit_code: usage.exit_code,
        }
    }
}

async fn invoke(
    State(service): Shared,
    Caller(tenant): Caller,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let body = body_of(&headers, body, "application/json")?;
    let request: InvokeRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?;
    let program = match service
        .plugins
        .cached(service.tenants.runtime(), &tenant, &name)
    {
        Some(program) => program,
        None => {
            let svc = service.clone();
            let (who, plugin) = (tenant.clone(), name.clone());
            blocking(move || svc.plugins.get(svc.tenants.runtime(), &who, &plugin)).await?
        }
    };
    // The call runs in a task of its own: if the client hangs up, it
    // still ends (within its limits), and is charged and logged once.
    // Every outcome is logged here, in the task: the handler is dropped
    // on a hang-up, the task is not.
    let svc = service.clone();
    let (who, plugin) = (tenant.clone(), name.clone());
    let call = tokio::spawn(
        async move {
            let called = svc
                .tenants
                .invoke(&who, &program, request.args, request.stdin.into_bytes())
                .await;
            match &called {
                Ok(done) => {
                    let usage = UsageJson::from(&done.usage);
                    tracing::info!(
                        tenant = who,
                        plugin,
                        exit_code = done.outcome.exit_code,
                        wall_ms = usage.wall_ms,
                        storage_calls = usage.storage_calls,
                        read_units = usage.read_units,
                        write_units = usage.write_units,
                        "invoked"
                    );
                }
                Err(InvokeError::Refused(refusal)) => {
                    tracing::info!(
                        tenant = who,
                        plugin,
                        limit = refusal.limit_name(),
                        "refused"
                    );
                }
                Err(InvokeError::Stopped { error, .. }) => {
                    tracing::info!(tenant = who, plugin, %error, "stopped");
                }
            }
            called
        }
        .in_current_span(),
    );
    let called = call.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the call failed: {e}"),
        )
    })?;
    match called {
        Ok(done) => {
            let response_bytes_max = service
                .tenants
                .limits(&tenant)
                .map_or(0, |l| l.response_bytes_max);
            let too_large = || ApiError {
                limit: Some("response"),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "response_too_large",
                    format!(
                        "the call ended (exit code {}; what it wrote to storage stays), but its answer does not fit in response_bytes_max = {response_bytes_max}",
                        done.outcome.exit_code
                    ),
                )
            };
            // The output's bytes first: as JSON each takes at least one,
            // so output past the cap is refused before it is copied.
            let raw = done.outcome.stdout.len() + done.outcome.stderr.len();
            if raw > response_bytes_max {
                return Err(too_large());
            }
            let answer = InvokeResponse {
                exit_code: done.outcome.exit_code,
                stdout: String::from_utf8_lossy(&done.outcome.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&done.outcome.stderr).into_owned(),
                usage: UsageJson::from(&done.usage),
            };
            // Every byte of the answer, counted before it is written.
            if super::hrana::json_bytes_within(&answer, response_bytes_max).is_none() {
                return Err(too_large());
            }
            Ok(Json(answer).into_response())
        }
        // Logged in the call's task.
        Err(InvokeError::Refused(refusal)) => Err(refused(refusal)),
        Err(InvokeError::Stopped { error, usage }) => Err(stopped(error, usage)),
    }
}

async fn list_databases(
    State(service): Shared,
    Caller(tenant): Caller,
) -> Result<Response, ApiError> {
    let names = service.tenants.databases(&tenant).await?;
    let names: Vec<&str> = names.iter().map(DbName::as_str).collect();
    Ok(Json(serde_json::json!({ "databases": names })).into_response())
}

/// The database named in the path, if legal and within `tenant`'s grant:
/// 400 for an illegal name, 403 for a name outside the grant.
fn granted_database(service: &Service, tenant: &str, db: &str) -> Result<DbName, ApiError> {
    let name = DbName::new(db)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "illegal_name", e.to_string()))?;
    let granted = service
        .tenants
        .tenant(tenant)
        .is_some_and(|t| t.grant.covers(&name));
    if !granted {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("database {db:?} is not this tenant's"),
        ));
    }
    Ok(name)
}

async fn create_database(
    State(service): Shared,
    Caller(tenant): Caller,
    db: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(db) = db?;
    let name = granted_database(&service, &tenant, &db)?;
    service
        .tenants
        .create_database(&tenant, name.as_str(), PAGE_SIZE_DEFAULT)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "database": name.as_str() })),
    )
        .into_response())
}

async fn remove_database(
    State(service): Shared,
    Caller(tenant): Caller,
    db: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(db) = db?;
    let name = granted_database(&service, &tenant, &db)?;
    service
        .tenants
        .remove_database(&tenant, name.as_str())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /db/{db}/v2`, `/v3`: this version of Hrana over HTTP (JSON) is
/// served.
async fn hrana_version() -> StatusCode {
    StatusCode::OK
}

/// A Hrana error as the protocol's clients parse it: `{message, code}`.
fn hrana_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "message": message, "code": code });
    (status, Json(body)).into_response()
}

/// The protocol's error for a request body that is not what it should be.
fn malformed(e: serde_json::Error) -> Response {
    hrana_error(StatusCode::BAD_REQUEST, "MALFORMED_JSON", e.to_string())
}

/// `POST /db/{db}/v2/pipeline`, `/v3/pipeline`: a pipeline of requests on
/// a stream (a new one on database `db` without a baton).
async fn hrana_pipeline(
    State(service): Shared,
    Caller(tenant): Caller,
    db: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(db) = db?;
    let body = body?;
    let request: super::hrana::PipelineReq = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return Ok(malformed(e)),
    };
    let db = granted_database(&service, &tenant, &db)?;
    let answer = service
        .streams
        .pipeline(&service.tenants, &tenant, db.as_str(), request)
        .await;
    Ok(match answer {
        Ok(response) => Json(response).into_response(),
        Err(e) => pipeline_error(e),
    })
}

/// Why a pipeline did not run, as the protocol's error.
fn pipeline_error(e: super::hrana::PipelineError) -> Response {
    use super::hrana::PipelineError;
    match e {
        e @ PipelineError::UnknownBaton => {
            hrana_error(StatusCode::BAD_REQUEST, "STREAM_EXPIRED", e.to_string())
        }
        e @ PipelineError::TooManyStreams { .. } => hrana_error(
            StatusCode::TOO_MANY_REQUESTS,
            "STREAMS_LIMIT",
            e.to_string(),
        ),
        PipelineError::Refused(refusal) => refused(refusal).into_response(),
        e @ PipelineError::Open(_) => {
            hrana_error(StatusCode::BAD_REQUEST, "DB_OPEN", e.to_string())
        }
        PipelineError::Stopped(e) => hrana_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PLUGIN_STOPPED",
            e.to_string(),
        ),
        e @ PipelineError::TooManyRequests { .. } => hrana_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RESPONSE_TOO_LARGE",
            e.to_string(),
        ),
    }
}

/// `POST /db/{db}/v1/execute` (`{stmt}`) and `/v1/batch` (`{batch}`):
/// `{result}`, on a stream opened and closed for the request.
async fn hrana_v1_route<T>(
    State(service): Shared,
    Caller(tenant): Caller,
    db: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError>
where
    T: serde::de::DeserializeOwned + Into<super::hrana::StreamRequest>,
{
    let Path(db) = db?;
    let request: T = match serde_json::from_slice(&body?) {
        Ok(request) => request,
        Err(e) => return Ok(malformed(e)),
    };
    hrana_v1(&service, &tenant, &db, request.into()).await
}

/// One request of the stateless API: a pipeline of it and `close`; its
/// result as `{result}`, its error as the protocol's (HTTP 400).
async fn hrana_v1(
    service: &Arc<Service>,
    tenant: &str,
    db: &str,
    request: super::hrana::StreamRequest,
) -> Result<Response, ApiError> {
    use super::hrana::{PipelineReq, StreamRequest, StreamResponse, StreamResult};
    let db = granted_database(service, tenant, db)?;
    let pipeline = PipelineReq {
        baton: None,
        requests: vec![request, StreamRequest::Close],
    };
    let answer = service
        .streams
        .pipeline(&service.tenants, tenant, db.as_str(), pipeline)
        .await;
    let mut response = match answer {
        Ok(response) => response,
        Err(e) => return Ok(pipeline_error(e)),
    };
    assert_eq!(response.results.len(), 2, "one result per request");
    /// `{result}`, written straight from the typed result (a JSON value
    /// tree of it took ~20 times the answer's bytes).
    #[derive(Serialize)]
    struct Answer<T> {
        result: T,
    }
    // Its size was counted as the pipeline's first result, which wraps
    // it: within the tenant's response_bytes_max.
    Ok(match response.results.swap_remove(0) {
        StreamResult::Ok {
            response: StreamResponse::Execute { result },
        } => Json(Answer { result }).into_response(),
        StreamResult::Ok {
            response: StreamResponse::Batch { result },
        } => Json(Answer { result }).into_response(),
        StreamResult::Ok { response } => {
            unreachable!("an execute or batch request answered {response:?}")
        }
        StreamResult::Error { error } => hrana_error(
            StatusCode::BAD_REQUEST,
            error.code.as_deref().unwrap_or("UNKNOWN"),
            error.message,
        ),
    })
}
