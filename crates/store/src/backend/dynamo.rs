//! The DynamoDB backend (`aws-sdk-dynamodb`). Item layout in
//! `docs/format.md`, "DynamoDB backend".
//!
//! - meta items: `GetItem` (strongly consistent) and conditional `PutItem`
//!   (`ConditionalCheckFailed` → conflict);
//! - sectors: `BatchGetItem` (≤ 100 keys a request) and `BatchWriteItem`
//!   (≤ 25 items a request), requests in parallel, unprocessed keys/items
//!   retried with jittered backoff until a deadline; sector reads are
//!   eventually consistent and a miss is re-read strongly consistent;
//! - sector bytes are zstd-compressed when that makes them smaller (codec
//!   attribute `c`); the storage layer verifies hashes over the plain bytes;
//! - every request asks for consumed capacity; [`RequestStats`] adds it up.

use super::{
    BATCH_GET_MAX, BATCH_WRITE_MAX, Backend, BackendError, Commit, ItemKind, Meta, MetaKind,
    PutMetaError, Replaces, StateSwap, StoredSummary,
};
use crate::stats::RequestStats;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::builders::PutBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, ConsumedCapacity, Delete,
    DeleteRequest, KeySchemaElement, KeyType, KeysAndAttributes, Put, PutRequest,
    ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableStatus,
    TransactWriteItem, WriteRequest,
};
use donut_format::items::dynamo::{
    ATTR_BODY, ATTR_CODEC, ATTR_HOLDS, ATTR_NAME, ATTR_VERSION, CATALOG_KEY, CODEC_RAW, CODEC_ZSTD,
    HASH_KEY, HOLDS_NOTHING, RANGE_KEY, catalog_range, family_item_key, gc_key, intent_key,
    lock_key, root_key, sector_key,
};
use donut_format::{DbId, DbName, Hash, IntentKey, hash, hash_hex};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// zstd's level for sector bodies (the metered backend bills with it too).
pub(crate) const ZSTD_LEVEL: i32 = 3;

/// Requests of one batch call in flight at once.
const REQUESTS_IN_FLIGHT: usize = 16;
/// How long unprocessed keys/items are retried before `throttled`.
const UNPROCESSED_DEADLINE: Duration = Duration::from_secs(30);
/// Most items one `Query` request asks for (a page; DynamoDB also stops
/// at 1 MB).
const QUERY_PAGE_MAX: usize = 1000;

/// Where and how to reach the table.
#[derive(Clone, Debug, Default)]
pub struct DynamoOptions {
    pub table: String,
    pub region: Option<String>,
    /// Overrides the endpoint (else `AWS_ENDPOINT_URL_DYNAMODB`,
    /// `AWS_ENDPOINT_URL`, then AWS's own).
    pub endpoint: Option<String>,
    /// Fixed credentials (else the default chain; a loopback endpoint with
    /// no `AWS_ACCESS_KEY_ID` uses dummy ones, as local servers accept any).
    pub static_credentials: Option<(String, String)>,
    /// Attempts per request for throttling and transient errors (SDK retry).
    pub max_attempts: u32,
    /// Commit with one TransactWriteItems (sectors + conditional root) when
    /// the commit fits its limits: one round trip instead of two, at twice
    /// the write units for those items.
    pub one_request_commit: bool,
    /// Accept a table with replicas (a global table) on the promise that
    /// only one Region ever writes DonutDB's items. Across Regions the last
    /// writer wins and a transaction's items may replicate apart, so the
    /// root's compare-and-swap holds only within one Region.
    pub single_writer_region: bool,
    /// A directory where a passed table check (`DescribeTable`: the key
    /// schema, the status, no replicas) is remembered for
    /// [`TABLE_CHECK_AGE_MAX`], so a new process need not pay a request
    /// for it; a request that finds the table missing or its key schema
    /// wrong still fails with the same clear error, and forgets the check.
    /// `None`: check on every connect.
    pub table_check_cache: Option<std::path::PathBuf>,
}

/// How long a passed table check is trusted (see
/// [`DynamoOptions::table_check_cache`]): a table that gains replicas is
/// refused within this long.
pub const TABLE_CHECK_AGE_MAX: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no AWS region: pass --region, or set AWS_REGION (a local endpoint defaults to us-east-1)"
    )]
    NoRegion,
    #[error(
        "table {table:?} does not exist ({where_}); create it with `donut-host create-table --table {table}`"
    )]
    MissingTable { table: String, where_: String },
    #[error(
        "table {table:?} has the wrong key schema ({found}); DonutDB needs hash_key (S) as the partition key and range_key (N) as the sort key"
    )]
    WrongSchema { table: String, found: String },
    #[error("table {table:?}: {detail}")]
    Describe { table: String, detail: String },
    #[error("table {table:?} already exists ({where_}); use it with --table {table}")]
    TableExists { table: String, where_: String },
    #[error(
        "illegal table name {table:?}: a DynamoDB table name is 3 to 255 characters of a-z, A-Z, 0-9, '_', '-' and '.'"
    )]
    BadTableName { table: String },
    #[error("endpoint {endpoint:?} has no scheme; did you mean --endpoint http://{endpoint}?")]
    EndpointScheme { endpoint: String },
    #[error(
        "table {table:?} is {status}, not ACTIVE ({where_}); wait for it to become active, or use another table"
    )]
    NotActive {
        table: String,
        status: String,
        where_: String,
    },
    #[error(
        "table {table:?} has replicas in {regions} (a global table): DonutDB's compare-and-swap holds only within one Region, where the last writer would win across Regions. Pass --single-writer-region if only this Region ever writes DonutDB's databases"
    )]
    Replicated { table: String, regions: String },
}

#[derive(Clone)]
pub struct DynamoBackend {
    client: Client,
    table: String,
    where_: String,
    one_request_commit: bool,
    stats: Arc<Mutex<RequestStats>>,
    /// One call's share of `stats` (`Backend::billed_to`), if this handle
    /// is a call's.
    bill: Option<Arc<Mutex<RequestStats>>>,
    /// The remembered table check, forgotten when a request finds the
    /// table missing or wrong.
    table_check: Option<Arc<std::path::PathBuf>>,
}

/// The file that remembers a passed check of `table` at `where_`.
fn table_check_path(options: &DynamoOptions, where_: &str) -> Option<std::path::PathBuf> {
    let dir = options.table_check_cache.as_ref()?;
    let id = format!(
        "{where_}\n{}\n{}",
        options.table, options.single_writer_region
    );
    Some(dir.join(format!("{}.checked", &hash_hex(&hash(id.as_bytes()))[..32])))
}

/// Was the check at `path` passed less than [`TABLE_CHECK_AGE_MAX`] ago?
fn table_check_fresh(path: &std::path::Path) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified());
    modified.is_ok_and(|t| t.elapsed().is_ok_and(|age| age < TABLE_CHECK_AGE_MAX))
}

/// Remembers a passed check (best effort: without it, the next process
/// checks again).
fn remember_table_check(path: &std::path::Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let temp = path.with_extension(format!("tmp-{:016x}", crate::random_u64()));
    if std::fs::write(&temp, b"DescribeTable passed\n").is_ok() {
        let _ = std::fs::rename(&temp, path);
    }
    let _ = std::fs::remove_file(&temp);
}

/// One line for a failed SDK request: the service's error code and
/// message (`ResourceInUseException: Table already exists: t`), or what
/// kept the request from being answered (`cannot reach the endpoint:
/// Connection refused (os error 111)`). The SDK's whole account — the raw
/// response, its headers — goes to the `debug` log (`RUST_LOG=debug`).
pub fn sdk_error_text<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    use aws_sdk_dynamodb::error::SdkError;
    tracing::debug!(error = %DisplayErrorContext(e), "DynamoDB request failed");
    match e {
        SdkError::ServiceError(_) => match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => format!("the service refused the request: {}", root_cause(e)),
        },
        SdkError::DispatchFailure(failure) if failure.is_timeout() => {
            "no answer from the endpoint in time".to_string()
        }
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            format!("cannot reach the endpoint: {}", root_cause(e))
        }
        SdkError::DispatchFailure(_) => format!("the request was not sent: {}", root_cause(e)),
        SdkError::TimeoutError(_) => "no answer from the endpoint in time".to_string(),
        SdkError::ResponseError(_) => format!("unreadable answer: {}", root_cause(e)),
        SdkError::ConstructionFailure(_) => {
            format!("the request could not be built: {}", root_cause(e))
        }
        _ => root_cause(e),
    }
}

/// The innermost error of `e`'s source chain, as text (the one that says
/// what happened, e.g. `Connection refused (os error 111)`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// DynamoDB's rule for table names, checked before any request.
fn check_table_name(table: &str) -> Result<(), ConnectError> {
    let legal = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    match legal {
        true => Ok(()),
        false => Err(ConnectError::BadTableName {
            table: table.to_string(),
        }),
    }
}

fn is_loopback(endpoint: &str) -> bool {
    let rest = endpoint.split("://").nth(1).unwrap_or(endpoint);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    matches!(host, "127.0.0.1" | "localhost" | "[")
        || rest.starts_with("[::1]")
        || host.starts_with("127.")
}

/// The SDK client for `options`, with extra interceptors (fault injection in
/// tests, tracing in embedders).
pub async fn client(
    options: &DynamoOptions,
    interceptors: Vec<aws_sdk_dynamodb::config::SharedInterceptor>,
) -> Result<(Client, String), ConnectError> {
    check_table_name(&options.table)?;
    if let Some(endpoint) = &options.endpoint
        && !endpoint.contains("://")
    {
        return Err(ConnectError::EndpointScheme {
            endpoint: endpoint.clone(),
        });
    }
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &options.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &options.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let sdk_config = loader.load().await;
    // The endpoint the SDK resolved (the option, the environment, or the
    // shared config file's `endpoint_url`) decides whether it is local.
    let endpoint = sdk_config
        .endpoint_url()
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_DYNAMODB").ok());
    let local = endpoint.as_deref().is_some_and(is_loopback);
    let credentials = options.static_credentials.clone().or_else(|| {
        (local && std::env::var_os("AWS_ACCESS_KEY_ID").is_none())
            .then(|| ("donutdb".to_string(), "donutdb".to_string()))
    });
    let mut builder = aws_sdk_dynamodb::config::Builder::from(&sdk_config);
    if let Some((key, secret)) = credentials {
        builder = builder.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            key, secret, None, None, "donutdb",
        ));
    }
    builder = builder
        .retry_config(
            aws_sdk_dynamodb::config::retry::RetryConfig::standard()
                .with_max_attempts(options.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(25))
                .with_max_backoff(Duration::from_secs(2)),
        )
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        );
    if sdk_config.region().is_none() {
        if local {
            builder = builder.region(aws_config::Region::new("us-east-1"));
        } else {
            return Err(ConnectError::NoRegion);
        }
    }
    for interceptor in interceptors {
        builder = builder.interceptor(interceptor);
    }
    let config = builder.build();
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let where_ = match &endpoint {
        Some(e) => format!("region {region}, endpoint {e}"),
        None => format!("region {region}"),
    };
    Ok((Client::from_conf(config), where_))
}

/// Creates the table DonutDB needs (on-demand billing) and waits until it is
/// active.
pub async fn create_table(options: &DynamoOptions) -> Result<(), ConnectError> {
    let (client, where_) = client(options, Vec::new()).await?;
    let table = options.table.clone();
    let describe = |detail: String| ConnectError::Describe {
        table: table.clone(),
        detail,
    };
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .map_err(|e| describe(e.to_string()))
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| describe(e.to_string()))
    };
    client
        .create_table()
        .table_name(&table)
        .attribute_definitions(attribute(HASH_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(RANGE_KEY, ScalarAttributeType::N)?)
        .key_schema(key(HASH_KEY, KeyType::Hash)?)
        .key_schema(key(RANGE_KEY, KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| match e.code() {
            Some("ResourceInUseException") => ConnectError::TableExists {
                table: table.clone(),
                where_: where_.clone(),
            },
            _ => describe(format!("creating ({where_}): {}", sdk_error_text(&e))),
        })?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Right after CreateTable, DescribeTable may not know the table yet
        // (AWS documents it as eventually consistent): wait for it too.
        let out = match client.describe_table().table_name(&table).send().await {
            Ok(out) => Some(out),
            Err(e) if e.code() == Some("ResourceNotFoundException") => None,
            Err(e) => return Err(describe(sdk_error_text(&e))),
        };
        let status = out
            .as_ref()
            .and_then(|o| o.table())
            .and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(describe("still not active after 120 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A table DonutDB can use: ACTIVE (or UPDATING, which AWS documents as
/// still serving reads and writes), and without replicas in other Regions
/// unless the user promises a single writing Region.
fn check_usable(
    description: &aws_sdk_dynamodb::types::TableDescription,
    table: &str,
    where_: &str,
    single_writer_region: bool,
) -> Result<(), ConnectError> {
    match description.table_status() {
        Some(TableStatus::Active | TableStatus::Updating) | None => {}
        Some(status) => {
            return Err(ConnectError::NotActive {
                table: table.to_string(),
                status: status.as_str().to_string(),
                where_: where_.to_string(),
            });
        }
    }
    let regions: Vec<&str> = description
        .replicas()
        .iter()
        .filter_map(|r| r.region_name())
        .collect();
    if !regions.is_empty() && !single_writer_region {
        return Err(ConnectError::Replicated {
            table: table.to_string(),
            regions: regions.join(", "),
        });
    }
    Ok(())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn meta_key(kind: MetaKind, name: &DbName) -> String {
    match kind {
        MetaKind::Root => root_key(name),
        MetaKind::Lock => lock_key(name),
        MetaKind::Gc => gc_key(name),
        MetaKind::Family => family_item_key(name),
    }
}

fn key(hash_key: String, range: u64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (HASH_KEY.to_string(), s(hash_key)),
        (RANGE_KEY.to_string(), n(range)),
    ])
}

/// The key of one of `name`'s intent items.
fn intent_item_key(name: &DbName, intent: IntentKey) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (HASH_KEY.to_string(), s(intent_key(name))),
        (
            RANGE_KEY.to_string(),
            AttributeValue::N(intent.sort_number().to_string()),
        ),
    ])
}

fn number(item: &HashMap<String, AttributeValue>, attr: &str) -> Option<u64> {
    item.get(attr)?.as_n().ok()?.parse().ok()
}

fn blob<'a>(item: &'a HashMap<String, AttributeValue>, attr: &str) -> Option<&'a [u8]> {
    Some(item.get(attr)?.as_b().ok()?.as_ref())
}

fn sector_item(db: DbId, sector: &Hash, bytes: &[u8]) -> (HashMap<String, AttributeValue>, usize) {
    let (codec, body) = encode_sector(bytes);
    let len = body.len();
    let mut item = key(sector_key(db, sector), 0);
    item.insert(ATTR_CODEC.to_string(), n(codec as u64));
    item.insert(ATTR_BODY.to_string(), AttributeValue::B(Blob::new(body)));
    (item, len)
}

fn encode_sector(bytes: &[u8]) -> (u8, Vec<u8>) {
    match zstd::bulk::compress(bytes, ZSTD_LEVEL) {
        Ok(packed) if packed.len() < bytes.len() => (CODEC_ZSTD, packed),
        _ => (CODEC_RAW, bytes.to_vec()),
    }
}

fn decode_sector(
    item: &HashMap<String, AttributeValue>,
    key: &str,
) -> Result<Vec<u8>, BackendError> {
    let corrupt = |what: &str| BackendError::Corrupt(format!("item {key}: {what}"));
    let body = blob(item, ATTR_BODY).ok_or_else(|| corrupt("no body"))?;
    match number(item, ATTR_CODEC).unwrap_or(CODEC_RAW as u64) {
        c if c == CODEC_RAW as u64 => Ok(body.to_vec()),
        c if c == CODEC_ZSTD as u64 => zstd::bulk::decompress(body, super::ITEM_BYTES_MAX)
            .map_err(|e| corrupt(&format!("zstd: {e}"))),
        c => Err(corrupt(&format!("unknown codec {c}"))),
    }
}

impl DynamoBackend {
    /// Connects and checks the table's key schema.
    pub async fn connect(
        options: &DynamoOptions,
        interceptors: Vec<aws_sdk_dynamodb::config::SharedInterceptor>,
    ) -> Result<DynamoBackend, ConnectError> {
        let stats = Arc::new(Mutex::new(RequestStats::default()));
        let mut interceptors = interceptors;
        interceptors.push(aws_sdk_dynamodb::config::SharedInterceptor::new(
            AttemptCounter {
                stats: stats.clone(),
            },
        ));
        let (client, where_) = client(options, interceptors).await?;
        let table_check = table_check_path(options, &where_);
        match &table_check {
            Some(path) if table_check_fresh(path) => {}
            _ => {
                check_table(&client, options, &where_).await?;
                if let Some(path) = &table_check {
                    remember_table_check(path);
                }
            }
        }
        Ok(DynamoBackend {
            client,
            table: options.table.clone(),
            where_,
            one_request_commit: options.one_request_commit,
            stats,
            bill: None,
            table_check: table_check.map(Arc::new),
        })
    }
}

/// Does a `ValidationException`'s message say the request's key does not
/// fit the table's key schema (AWS: "The provided key element does not
/// match the schema", "Query condition missed key schema element",
/// "Missing the key … in the item")?
fn names_the_key_schema(message: &str) -> bool {
    ["key element", "key schema", "Missing the key"]
        .iter()
        .any(|words| message.contains(words))
}

/// `DescribeTable`: the table exists, has DonutDB's key schema, is usable.
async fn check_table(
    client: &Client,
    options: &DynamoOptions,
    where_: &str,
) -> Result<(), ConnectError> {
    let table = options.table.clone();
    let described = match client.describe_table().table_name(&table).send().await {
        Ok(out) => out,
        Err(e) if e.code() == Some("ResourceNotFoundException") => {
            let where_ = where_.to_string();
            return Err(ConnectError::MissingTable { table, where_ });
        }
        Err(e) => {
            let detail = format!("({where_}) {}", sdk_error_text(&e));
            return Err(ConnectError::Describe { table, detail });
        }
    };
    let description = described.table().ok_or_else(|| ConnectError::Describe {
        table: table.clone(),
        detail: "DescribeTable returned no table".into(),
    })?;
    check_usable(description, &table, where_, options.single_writer_region)?;
    let schema = key_schema(description);
    let expected = [
        (HASH_KEY, KeyType::Hash, Some(ScalarAttributeType::S)),
        (RANGE_KEY, KeyType::Range, Some(ScalarAttributeType::N)),
    ];
    let matches = schema.len() == expected.len()
        && schema
            .iter()
            .zip(&expected)
            .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && a.2 == b.2);
    if !matches {
        let found = schema
            .iter()
            .map(|(name, kind, ty)| {
                let ty = ty.as_ref().map_or("?", |t| t.as_str());
                format!("{name} {} ({ty})", kind.as_str())
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ConnectError::WrongSchema { table, found });
    }
    Ok(())
}

/// The table's key attributes: name, role, type.
fn key_schema(
    description: &aws_sdk_dynamodb::types::TableDescription,
) -> Vec<(String, KeyType, Option<ScalarAttributeType>)> {
    let types: HashMap<&str, &ScalarAttributeType> = description
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name(), a.attribute_type()))
        .collect();
    description
        .key_schema()
        .iter()
        .map(|k| {
            let ty = types.get(k.attribute_name()).map(|t| (*t).clone());
            (k.attribute_name().to_string(), k.key_type().clone(), ty)
        })
        .collect()
}

impl DynamoBackend {
    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn stats(&self) -> RequestStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `record` to the backend's counters and to the call's bill.
    fn record(&self, record: impl Fn(&mut RequestStats)) {
        for sink in std::iter::once(&self.stats).chain(self.bill.as_ref()) {
            record(&mut sink.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    fn count<'a>(
        &self,
        op: &'static str,
        capacity: impl IntoIterator<Item = &'a ConsumedCapacity>,
    ) {
        let (mut read_units, mut write_units) = (0.0, 0.0);
        for c in capacity {
            read_units += c.read_capacity_units().unwrap_or(0.0);
            write_units += c.write_capacity_units().unwrap_or(0.0);
            // Some servers report only the total.
            if c.read_capacity_units().is_none() && c.write_capacity_units().is_none() {
                let units = c.capacity_units().unwrap_or(0.0);
                if op.starts_with("Get") || op.starts_with("BatchGet") || op == "Query" {
                    read_units += units;
                } else {
                    write_units += units;
                }
            }
        }
        self.record(|stats| {
            *stats.requests.entry(op).or_default() += 1;
            stats.read_capacity_units += read_units;
            stats.write_capacity_units += write_units;
        });
    }

    /// Counts a request whose answer carried no consumed capacity but
    /// which DynamoDB bills: a write of `item_bytes` (1 KB units).
    fn count_estimated_write(&self, op: &'static str, item_bytes: usize) {
        self.record(|stats| {
            *stats.requests.entry(op).or_default() += 1;
            stats.write_capacity_units += item_bytes.div_ceil(1024).max(1) as f64;
        });
    }

    /// Write units a request consumed that its answer did not report.
    fn add_estimated_write_units(&self, units: f64) {
        self.record(|stats| stats.write_capacity_units += units);
    }

    fn add_bytes(&self, read: usize, written: usize, retries: usize) {
        self.record(|stats| {
            stats.bytes_read += read as u64;
            stats.bytes_written += written as u64;
            stats.unprocessed_retries += retries as u64;
        });
    }

    fn forget_table_check(&self) {
        if let Some(path) = &self.table_check {
            let _ = std::fs::remove_file(path.as_path());
        }
    }

    fn error<E: ProvideErrorMetadata + std::error::Error + 'static, R>(
        &self,
        op: &str,
        e: aws_sdk_dynamodb::error::SdkError<E, R>,
    ) -> BackendError
    where
        R: fmt::Debug + 'static,
    {
        let message = format!(
            "{op} on table {} ({}): {}",
            self.table,
            self.where_,
            sdk_error_text(&e)
        );
        match e.code() {
            Some(
                "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded",
            ) => BackendError::Throttled(message),
            // Another transaction holds the item: refused, nothing applied.
            Some("TransactionConflictException") => BackendError::Throttled(message),
            Some("ItemCollectionSizeLimitExceededException") => BackendError::TooLarge(message),
            Some("ValidationException") if names_the_key_schema(&message) => {
                self.forget_table_check();
                let wrong = ConnectError::WrongSchema {
                    table: self.table.clone(),
                    found: "the request's key was refused".into(),
                };
                BackendError::Invalid(format!("{message}: {wrong}"))
            }
            Some("ValidationException") if message.contains("size") => {
                BackendError::TooLarge(message)
            }
            Some("ValidationException" | "SerializationException") => {
                BackendError::Invalid(message)
            }
            // With the table check remembered, this is where a table
            // removed or replaced since is found: the same words as the
            // check's, and the check is forgotten.
            Some("ResourceNotFoundException") => {
                self.forget_table_check();
                let missing = ConnectError::MissingTable {
                    table: self.table.clone(),
                    where_: self.where_.clone(),
                };
                BackendError::Denied(format!("{message}: {missing}"))
            }
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "MissingAuthenticationTokenException",
            ) => BackendError::Denied(message),
            _ => BackendError::Unavailable(message),
        }
    }

    /// Counts `count` unprocessed keys or items about to be sent again, and
    /// waits (jittered backoff) unless the deadline passed.
    async fn before_resending(
        &self,
        op: &str,
        count: usize,
        deadline: Instant,
        attempt: u32,
    ) -> Result<(), BackendError> {
        self.add_bytes(0, 0, count);
        if Instant::now() > deadline {
            return Err(BackendError::Throttled(format!(
                "{op} on table {}: {count} keys or items still unprocessed after {} s",
                self.table,
                UNPROCESSED_DEADLINE.as_secs()
            )));
        }
        backoff(attempt).await;
        Ok(())
    }

    /// Reads `keys` with BatchGetItem, in parallel requests, re-sending
    /// unprocessed keys; returns the items found by hash key.
    async fn batch_get(
        &self,
        keys: Vec<String>,
        consistent: bool,
    ) -> Result<HashMap<String, HashMap<String, AttributeValue>>, BackendError> {
        let mut found = HashMap::new();
        let mut pending: Vec<Vec<String>> =
            keys.chunks(BATCH_GET_MAX).map(|c| c.to_vec()).collect();
        let deadline = Instant::now() + UNPROCESSED_DEADLINE;
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let mut unprocessed: Vec<String> = Vec::new();
            for wave in pending.chunks(REQUESTS_IN_FLIGHT) {
                let mut requests = JoinSet::new();
                for chunk in wave {
                    let request = KeysAndAttributes::builder()
                        .set_keys(Some(chunk.iter().map(|k| key(k.clone(), 0)).collect()))
                        .consistent_read(consistent)
                        .build()
                        .map_err(|e| BackendError::Unavailable(e.to_string()))?;
                    let call = self
                        .client
                        .batch_get_item()
                        .request_items(&self.table, request)
                        .return_consumed_capacity(ReturnConsumedCapacity::Total);
                    requests.spawn(call.send());
                }
                while let Some(result) = requests.join_next().await {
                    let out = result
                        .map_err(|e| BackendError::Unavailable(e.to_string()))?
                        .map_err(|e| self.error("BatchGetItem", e))?;
                    self.count("BatchGetItem", out.consumed_capacity());
                    if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                        for item in items {
                            if let Some(k) = item.get(HASH_KEY).and_then(|v| v.as_s().ok()) {
                                let bytes = blob(item, ATTR_BODY).map_or(0, <[u8]>::len);
                                self.add_bytes(bytes, 0, 0);
                                found.insert(k.clone(), item.clone());
                            }
                        }
                    }
                    if let Some(rest) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                        for k in rest.keys() {
                            if let Some(k) = k.get(HASH_KEY).and_then(|v| v.as_s().ok()) {
                                unprocessed.push(k.clone());
                            }
                        }
                    }
                }
            }
            if unprocessed.is_empty() {
                break;
            }
            self.before_resending("BatchGetItem", unprocessed.len(), deadline, attempt)
                .await?;
            attempt += 1;
            pending = unprocessed
                .chunks(BATCH_GET_MAX)
                .map(|c| c.to_vec())
                .collect();
        }
        Ok(found)
    }

    async fn batch_write(
        &self,
        items: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<(), BackendError> {
        let mut pending: Vec<Vec<WriteRequest>> = Vec::new();
        let mut requests_of =
            |items: Vec<HashMap<String, AttributeValue>>| -> Result<(), BackendError> {
                let writes = items
                    .into_iter()
                    .map(|item| {
                        Ok(WriteRequest::builder()
                            .put_request(
                                PutRequest::builder()
                                    .set_item(Some(item))
                                    .build()
                                    .map_err(|e| BackendError::Unavailable(e.to_string()))?,
                            )
                            .build())
                    })
                    .collect::<Result<Vec<_>, BackendError>>()?;
                pending.extend(writes.chunks(BATCH_WRITE_MAX).map(|c| c.to_vec()));
                Ok(())
            };
        requests_of(items)?;
        self.send_batch_writes(pending).await
    }

    /// `BatchWriteItem` of deletes of the items at `keys`.
    async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), BackendError> {
        let deletes = keys
            .into_iter()
            .map(|k| {
                Ok(WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(k))
                            .build()
                            .map_err(|e| BackendError::Unavailable(e.to_string()))?,
                    )
                    .build())
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        let pending = deletes
            .chunks(BATCH_WRITE_MAX)
            .map(|c| c.to_vec())
            .collect();
        self.send_batch_writes(pending).await
    }

    /// Sends batches of writes, several at a time, and their unprocessed
    /// items again (with backoff) until the deadline.
    async fn send_batch_writes(
        &self,
        mut pending: Vec<Vec<WriteRequest>>,
    ) -> Result<(), BackendError> {
        let deadline = Instant::now() + UNPROCESSED_DEADLINE;
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let mut unprocessed: Vec<WriteRequest> = Vec::new();
            for wave in pending.chunks(REQUESTS_IN_FLIGHT) {
                let mut requests = JoinSet::new();
                for chunk in wave {
                    let call = self
                        .client
                        .batch_write_item()
                        .request_items(&self.table, chunk.clone())
                        .return_consumed_capacity(ReturnConsumedCapacity::Total);
                    requests.spawn(call.send());
                }
                while let Some(result) = requests.join_next().await {
                    let out = result
                        .map_err(|e| BackendError::Unavailable(e.to_string()))?
                        .map_err(|e| self.error("BatchWriteItem", e))?;
                    self.count("BatchWriteItem", out.consumed_capacity());
                    if let Some(rest) = out.unprocessed_items().and_then(|u| u.get(&self.table)) {
                        unprocessed.extend(rest.iter().cloned());
                    }
                }
            }
            if unprocessed.is_empty() {
                break;
            }
            self.before_resending("BatchWriteItem", unprocessed.len(), deadline, attempt)
                .await?;
            attempt += 1;
            pending = unprocessed
                .chunks(BATCH_WRITE_MAX)
                .map(|c| c.to_vec())
                .collect();
        }
        Ok(())
    }

    /// A new database's catalog entry, written before its first root
    /// (idempotent), so `ls` finds every root; an entry whose root never
    /// came is skipped.
    async fn put_catalog_entry(&self, name: &DbName) -> Result<(), BackendError> {
        let mut entry = key(CATALOG_KEY.to_string(), catalog_range(name));
        entry.insert(ATTR_NAME.to_string(), s(name.as_str()));
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.error("PutItem", e))?;
        self.count("PutItem", out.consumed_capacity());
        Ok(())
    }

    /// A conditional put. The SDK re-sends it when an answer is lost (a
    /// timeout, a 5xx); if the first attempt applied, the next one fails its
    /// condition against our own item. So a failed condition is a conflict
    /// only if the stored item (returned with the failure) is not the one
    /// we are writing: every meta item we write is unique (a root carries
    /// its transaction id, a lock item its version and holders).
    async fn put_item(
        &self,
        item: HashMap<String, AttributeValue>,
        expected: Option<u64>,
    ) -> Result<(), PutMetaError> {
        let mut call = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        call = match expected {
            None => call.condition_expression("attribute_not_exists(hash_key)"),
            Some(version) => call
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", ATTR_VERSION)
                .expression_attribute_values(":v", n(version)),
        };
        match call.send().await {
            Ok(out) => {
                self.count("PutItem", out.consumed_capacity());
                Ok(())
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                let stored = match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(failed)) => failed.item(),
                    _ => None,
                };
                // A failed condition consumes write units on the larger of
                // the stored and the new item (AWS, "DynamoDB read and write
                // operations"); the error carries no consumed capacity, so
                // it is computed from the two items.
                let size = item_bytes(&item).max(stored.map_or(0, item_bytes));
                self.count_estimated_write("PutItem", size);
                if stored.is_some_and(|stored| same_meta(stored, &item)) {
                    return Ok(()); // an earlier attempt of ours applied
                }
                Err(PutMetaError::Conflict)
            }
            Err(e) => Err(PutMetaError::Backend(self.error("PutItem", e))),
        }
    }

    /// Up to `limit` items (`usize::MAX`: all) of a strongly consistent
    /// `Query` (what `build` adds to it: the key condition, the order),
    /// page after page.
    async fn query(
        &self,
        limit: usize,
        build: impl Fn(QueryFluentBuilder) -> QueryFluentBuilder,
    ) -> Result<Vec<Item>, BackendError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        while items.len() < limit {
            // Unlimited: DynamoDB's own pages (1 MB each).
            let page =
                (limit < usize::MAX).then(|| (limit - items.len()).min(QUERY_PAGE_MAX) as i32);
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .set_limit(page)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            let out = build(query)
                .send()
                .await
                .map_err(|e| self.error("Query", e))?;
            self.count("Query", out.consumed_capacity());
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// The meta item (a root, a lock, a kept root version) at
    /// (`hash_key`, `range`), strongly consistent.
    async fn get_meta_item(
        &self,
        hash_key: String,
        range: u64,
    ) -> Result<Option<Meta>, BackendError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(hash_key.clone(), range)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        self.count("GetItem", out.consumed_capacity());
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let meta = meta_from_item(item, &format!("{hash_key} (range {range})"))?;
        self.add_bytes(meta.body.len(), 0, 0);
        Ok(Some(meta))
    }

    /// Deletes the root of `name` at version `expected` with its history
    /// item and catalog entry, atomically.
    async fn delete_root(&self, name: &DbName, expected: u64) -> Result<(), PutMetaError> {
        let delete = |k: Item| Delete::builder().table_name(&self.table).set_key(Some(k));
        let root = delete(key(root_key(name), 0))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", ATTR_VERSION)
            .expression_attribute_values(":v", n(expected));
        let items = [
            root,
            delete(key(root_key(name), expected)),
            delete(key(CATALOG_KEY.to_string(), catalog_range(name))),
        ]
        .into_iter()
        .map(|d| Ok(TransactWriteItem::builder().delete(d.build()?).build()))
        .collect::<Result<Vec<_>, aws_sdk_dynamodb::error::BuildError>>()
        .map_err(build_error)?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match result {
            Ok(out) => {
                self.count("TransactWriteItems", out.consumed_capacity());
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                self.count("TransactWriteItems", None);
                // Gone already (a lost answer's first attempt) or moved on.
                match self.get_meta(MetaKind::Root, name).await? {
                    None => Ok(()),
                    Some(_) => Err(PutMetaError::Conflict),
                }
            }
            Err(e) => Err(PutMetaError::Backend(self.error("TransactWriteItems", e))),
        }
    }

    /// A root swap with no sectors and no fence; `replaces`: whose root item
    /// is at `expected` (`None`: not checked).
    async fn put_root_item(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Option<Replaces>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        if expected.is_none() {
            self.put_catalog_entry(name).await?;
        }
        // With its history item: one transaction (docs/format.md, "History").
        let swap = RootSwap {
            name,
            expected,
            replaces,
            fenced: false,
            token: commit_token(name, expected, None, &[], &meta, None),
        };
        self.swap_root(swap, Vec::new(), 0.0, meta).await
    }

    /// A root swap as one `TransactWriteItems`: `before` (a fence's check,
    /// sector puts), the new root's history item, then the root's
    /// conditional put — last, so its cancellation reason is the root's.
    /// `prepare_units`: what `before` is billed if cancelled. A root item
    /// written before [`ATTR_HOLDS`] existed fails the check of whose root
    /// it is: if it is the expected one, the swap is sent again
    /// conditioned on its whole body (docs/format.md, "DynamoDB backend").
    async fn swap_root(
        &self,
        swap: RootSwap<'_>,
        mut before: Vec<TransactWriteItem>,
        prepare_units: f64,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let history_item = meta_item(root_key(swap.name), meta.version, &meta);
        let prepare_units = prepare_units + kb(item_bytes(&history_item));
        let history = Put::builder()
            .table_name(&self.table)
            .set_item(Some(history_item))
            .build()
            .map_err(build_error)?;
        before.push(TransactWriteItem::builder().put(history).build());
        let mut root_item = meta_item(meta_key(MetaKind::Root, swap.name), 0, &meta);
        root_item.insert(ATTR_HOLDS.to_string(), s(holds(&meta.body)));
        let mut expect = swap.replaces.map(Expect::Holds);
        let mut token = swap.token.clone();
        for attempt in 0..2 {
            self.add_bytes(0, 2 * meta.body.len(), 0);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(root_item.clone()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            let put = root_condition(put, swap.expected, expect.clone());
            let mut items = before.clone();
            items.push(
                TransactWriteItem::builder()
                    .put(put.build().map_err(build_error)?)
                    .build(),
            );
            let outcome = self
                .send_root_swap(&swap, items, token.clone(), prepare_units, &root_item)
                .await;
            let old_body = match (outcome, swap.replaces, swap.expected) {
                (Err(SwapFailed::Conflict(Some(stored))), Some(replaces), Some(version))
                    if attempt == 0
                        && !stored.contains_key(ATTR_HOLDS)
                        && number(&stored, ATTR_VERSION) == Some(version)
                        && blob(&stored, ATTR_BODY).is_some_and(|b| replaces.holds(b)) =>
                {
                    blob(&stored, ATTR_BODY).unwrap_or_default().to_vec()
                }
                (Err(SwapFailed::Conflict(_)), ..) => return Err(PutMetaError::Conflict),
                (Err(SwapFailed::Other(e)), ..) => return Err(e),
                (Ok(()), ..) => return Ok(()),
            };
            expect = Some(Expect::Body(old_body));
            // Another request: another token (DynamoDB refuses a token
            // sent again with other parameters).
            token = hash_hex(&hash(format!("{token} old root").as_bytes()))[..36].to_string();
        }
        Err(PutMetaError::Conflict)
    }

    /// Sends a root swap's transaction `items` (the root's put last) and
    /// classifies the answer; a failed condition returns the stored root.
    async fn send_root_swap(
        &self,
        swap: &RootSwap<'_>,
        items: Vec<TransactWriteItem>,
        token: String,
        mut prepare_units: f64,
        root_item: &Item,
    ) -> Result<(), SwapFailed> {
        assert!(
            items.len() <= super::TRANSACTION_ACTIONS_MAX,
            "the plan keeps a transaction within DynamoDB's action limit"
        );
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        let e = match result {
            Ok(out) => {
                self.count("TransactWriteItems", out.consumed_capacity());
                return Ok(());
            }
            Err(e) => e,
        };
        self.count("TransactWriteItems", None);
        let Some(TransactWriteItemsError::TransactionCanceledException(t)) = e.as_service_error()
        else {
            let e = PutMetaError::Backend(self.error("TransactWriteItems", e));
            return Err(SwapFailed::Other(e));
        };
        let stored_root = t.cancellation_reasons().last().and_then(|r| r.item());
        prepare_units += kb(item_bytes(root_item).max(stored_root.map_or(0, item_bytes)));
        self.add_estimated_write_units(prepare_units);
        let reasons: Vec<_> = t
            .cancellation_reasons()
            .iter()
            .map(|r| (r.code(), r.item()))
            .collect();
        let where_ = format!(
            "TransactWriteItems on table {} ({})",
            self.table, self.where_
        );
        let e: PutMetaError = match cancelled(&reasons, swap.fenced, root_item) {
            Cancelled::AppliedBefore => return Ok(()),
            Cancelled::Conflict => return Err(SwapFailed::Conflict(stored_root.cloned())),
            Cancelled::Fenced => PutMetaError::Fenced,
            Cancelled::Throttled(m) => BackendError::Throttled(format!("{where_}: {m}")).into(),
            Cancelled::TooLarge(m) => BackendError::TooLarge(format!("{where_}: {m}")).into(),
            Cancelled::Invalid(m) => BackendError::Invalid(format!("{where_}: {m}")).into(),
        };
        Err(SwapFailed::Other(e))
    }
}

/// Why a root swap's transaction failed.
enum SwapFailed {
    /// The root's condition failed; the stored root item, if returned.
    Conflict(Option<Item>),
    Other(PutMetaError),
}

/// What a root put's condition checks besides the version.
#[derive(Clone)]
enum Expect {
    /// [`ATTR_HOLDS`] says so.
    Holds(Replaces),
    /// The stored body is exactly this (a root item without [`ATTR_HOLDS`]).
    Body(Vec<u8>),
}

/// The root put's condition: absent (`expected` `None`), or at version
/// `expected` and holding what `expect` says (`None`: any root item).
fn root_condition(put: PutBuilder, expected: Option<u64>, expect: Option<Expect>) -> PutBuilder {
    let Some(version) = expected else {
        return put.condition_expression("attribute_not_exists(hash_key)");
    };
    let put = put
        .expression_attribute_names("#v", ATTR_VERSION)
        .expression_attribute_values(":v", n(version));
    match expect {
        None => put.condition_expression("#v = :v"),
        Some(Expect::Holds(replaces)) => put
            .condition_expression("#v = :v AND #d = :d")
            .expression_attribute_names("#d", ATTR_HOLDS)
            .expression_attribute_values(":d", s(holds_value(replaces))),
        Some(Expect::Body(body)) => put
            .condition_expression("#v = :v AND #b = :b")
            .expression_attribute_names("#b", ATTR_BODY)
            .expression_attribute_values(":b", AttributeValue::B(Blob::new(body))),
    }
}

/// [`ATTR_HOLDS`] of a root item whose body is `body`.
fn holds(body: &[u8]) -> String {
    match super::root_db(body) {
        Some(db) => holds_value(Replaces::Database(db)),
        None => holds_value(Replaces::Nothing),
    }
}

/// [`ATTR_HOLDS`] of a root item holding `replaces`.
fn holds_value(replaces: Replaces) -> String {
    match replaces {
        Replaces::Database(db) => db.hex(),
        Replaces::Nothing => HOLDS_NOTHING.to_string(),
    }
}

/// What a root swap needs besides its items: whose root, from which
/// version, whether the first item is a fence's check, and the request's
/// idempotency token.
struct RootSwap<'a> {
    name: &'a DbName,
    expected: Option<u64>,
    /// Whose root item is at `expected`; `None`: not checked (a plain
    /// `put_meta` of a root).
    replaces: Option<Replaces>,
    fenced: bool,
    token: String,
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> PutMetaError {
    PutMetaError::Backend(BackendError::Unavailable(e.to_string()))
}

/// Write units of an item of `bytes`: one per KB started.
fn kb(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// The item of a meta item (a root, a lock, a kept root version) at
/// (`hash_key`, `range`).
fn meta_item(hash_key: String, range: u64, meta: &Meta) -> Item {
    let mut item = key(hash_key, range);
    item.insert(ATTR_VERSION.to_string(), n(meta.version));
    item.insert(
        ATTR_BODY.to_string(),
        AttributeValue::B(Blob::new(meta.body.clone())),
    );
    item
}

/// A meta item's version and body.
fn meta_from_item(item: &Item, k: &str) -> Result<Meta, BackendError> {
    let version = number(item, ATTR_VERSION)
        .ok_or_else(|| BackendError::Corrupt(format!("item {k}: no version")))?;
    let body = blob(item, ATTR_BODY)
        .ok_or_else(|| BackendError::Corrupt(format!("item {k}: no body")))?
        .to_vec();
    Ok(Meta { version, body })
}

/// Which of DonutDB's items `item` is, by its keys (docs/format.md).
fn item_kind(item: &Item) -> ItemKind {
    let hash_key = item.get(HASH_KEY).and_then(|v| v.as_s().ok());
    let range = number(item, RANGE_KEY);
    match (hash_key.map(String::as_str), range) {
        (Some(k), Some(0)) if k.starts_with("r/") => ItemKind::Root,
        (Some(k), Some(_)) if k.starts_with("r/") => ItemKind::History,
        (Some(k), _) if k.starts_with("l/") => ItemKind::Lock,
        (Some(k), _) if k.starts_with("g/") || k.starts_with("f/") => ItemKind::Gc,
        (Some(k), _) if k.starts_with("i/") => ItemKind::Intent,
        (Some(k), _) if k.starts_with("s/") => ItemKind::Sector,
        (Some(CATALOG_KEY), _) => ItemKind::Catalog,
        _ => ItemKind::Other,
    }
}

/// An item's size as DynamoDB bills it: attribute names and values.
fn item_bytes(item: &Item) -> usize {
    item.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    AttributeValue::S(s) => s.len(),
                    AttributeValue::N(n) => n.len().div_ceil(2) + 1,
                    AttributeValue::B(b) => b.as_ref().len(),
                    _ => 8,
                }
        })
        .sum()
}

/// Counts every attempt the SDK sends, by operation (`RequestStats::attempts`).
#[derive(Debug)]
struct AttemptCounter {
    stats: Arc<Mutex<RequestStats>>,
}

impl aws_sdk_dynamodb::config::Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "DonutDB attempt counter"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_dynamodb::config::RuntimeComponents,
        cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let op = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("?", |m| m.name())
            .to_string();
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        *stats.attempts.entry(op).or_default() += 1;
        Ok(())
    }
}

/// Is the stored meta item the one in `ours` (same version, same body)?
fn same_meta(
    stored: &HashMap<String, AttributeValue>,
    ours: &HashMap<String, AttributeValue>,
) -> bool {
    let version = |item| number(item, ATTR_VERSION);
    let body = |item| blob(item, ATTR_BODY);
    version(stored).is_some() && version(stored) == version(ours) && body(stored) == body(ours)
}

/// What a cancelled TransactWriteItems means. DynamoDB cancels the whole
/// transaction — nothing of it applied — and gives a reason per action,
/// in request order.
#[derive(Debug, PartialEq, Eq)]
enum Cancelled {
    /// Our root put's condition failed against our own root: an earlier
    /// attempt (its answer lost) applied.
    AppliedBefore,
    Fenced,
    Conflict,
    /// Another transaction was writing one of the items
    /// (`TransactionConflict`), or throttling: retry later.
    Throttled(String),
    TooLarge(String),
    Invalid(String),
}

/// An item as the SDK returns it.
type Item = HashMap<String, AttributeValue>;

/// A cancellation reason: its code and, for a failed condition asked to
/// return it, the stored item.
type Reason<'a> = (Option<&'a str>, Option<&'a Item>);

/// Classifies the cancellation `reasons` (code, old item) of a
/// transaction whose first action is the fence's check if `fenced` and
/// whose last is the root put of `root`.
fn cancelled(
    reasons: &[Reason<'_>],
    fenced: bool,
    root: &HashMap<String, AttributeValue>,
) -> Cancelled {
    let code_of = |i: usize| reasons.get(i).and_then(|r| r.0);
    let last = reasons.len().saturating_sub(1);
    if fenced && code_of(0) == Some("ConditionalCheckFailed") {
        return Cancelled::Fenced;
    }
    if code_of(last) == Some("ConditionalCheckFailed") {
        let stored = reasons.get(last).and_then(|r| r.1);
        return match stored {
            Some(stored) if same_meta(stored, root) => Cancelled::AppliedBefore,
            _ => Cancelled::Conflict,
        };
    }
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(|r| r.0)
        .filter(|c| *c != "None")
        .collect();
    let detail = format!(
        "transaction cancelled ({}); nothing was applied",
        codes.join(", ")
    );
    let has = |wanted: &[&str]| codes.iter().any(|c| wanted.contains(c));
    if has(&["ConditionalCheckFailed"]) {
        Cancelled::Conflict // a sector put's condition: none are conditional today
    } else if has(&["ItemCollectionSizeLimitExceeded"]) {
        Cancelled::TooLarge(detail)
    } else if has(&["ValidationError"]) {
        Cancelled::Invalid(detail)
    } else {
        // TransactionConflict, ThrottlingError, ProvisionedThroughputExceeded
        Cancelled::Throttled(detail)
    }
}

/// The `ClientRequestToken` of a commit: the same for every re-send of the
/// same commit (same items), so DynamoDB answers a re-send within ten
/// minutes with the first attempt's outcome instead of applying it again.
fn commit_token(
    name: &DbName,
    expected: Option<u64>,
    fence_version: Option<u64>,
    in_transaction: &[(Hash, Vec<u8>)],
    meta: &Meta,
    state: Option<&StateSwap<'_>>,
) -> String {
    let mut text = Vec::new();
    text.extend_from_slice(name.as_str().as_bytes());
    text.push(0);
    text.extend_from_slice(&expected.unwrap_or(0).to_le_bytes());
    text.extend_from_slice(&meta.version.to_le_bytes());
    text.extend_from_slice(&hash(&meta.body));
    text.extend_from_slice(&fence_version.unwrap_or(0).to_le_bytes());
    for (sector, _) in in_transaction {
        text.extend_from_slice(sector);
    }
    if let Some(state) = state {
        text.extend_from_slice(state.name.as_str().as_bytes());
        text.push(0);
        text.extend_from_slice(&state.expected.to_le_bytes());
        text.extend_from_slice(&hash(&state.meta.body));
    }
    // DynamoDB takes 1 to 36 characters.
    hash_hex(&hash(&text))[..36].to_string()
}

/// Jittered exponential backoff: 20 ms · 2^attempt, at most 1 s.
async fn backoff(attempt: u32) {
    let base_ms = (20u64 << attempt.min(6)).min(1000);
    let mut jitter = [0u8; 2];
    let _ = getrandom::fill(&mut jitter);
    let ms = base_ms / 2 + (u16::from_le_bytes(jitter) as u64 % (base_ms / 2 + 1));
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[async_trait]
impl Backend for DynamoBackend {
    fn billed_to(&self, bill: &Arc<Mutex<RequestStats>>) -> Option<Arc<dyn Backend>> {
        let mut billed = self.clone();
        billed.bill = Some(bill.clone());
        Some(Arc::new(billed))
    }

    fn describe(&self) -> String {
        format!("DynamoDB table {} ({})", self.table, self.where_)
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        self.get_meta_item(meta_key(kind, name), 0).await
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        if kind == MetaKind::Root {
            return self.put_root_item(name, expected, None, meta).await;
        }
        let item = meta_item(meta_key(kind, name), 0, &meta);
        self.add_bytes(0, meta.body.len(), 0);
        self.put_item(item, expected).await
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        self.put_root_item(name, expected, Some(replaces), meta)
            .await
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        let entries = self
            .query(usize::MAX, |query| {
                query
                    .key_condition_expression("hash_key = :c")
                    .expression_attribute_values(":c", s(CATALOG_KEY))
            })
            .await?;
        let names: Vec<DbName> = entries
            .iter()
            .filter_map(|item| item.get(ATTR_NAME).and_then(|v| v.as_s().ok()))
            .filter_map(|name| DbName::new(name).ok())
            .collect();
        let keys: Vec<String> = names.iter().map(|n| meta_key(MetaKind::Root, n)).collect();
        let found = self.batch_get(keys, true).await?;
        let mut roots = Vec::new();
        for name in names {
            let k = meta_key(MetaKind::Root, &name);
            if let Some(item) = found.get(&k) {
                roots.push((name, meta_from_item(item, &k)?));
            }
        }
        roots.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(roots)
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        if version == 0 {
            return Ok(None); // range key 0 is the current root, not a version
        }
        // Bounded by the head, as every backend is: a history item above
        // the current root is an earlier database's of the same name (the
        // head first: a version at or below it is this database's, which
        // wrote its history item with that root).
        let head = self.get_meta_item(root_key(name), 0).await?;
        if head.is_none_or(|head| version > head.version) {
            return Ok(None);
        }
        self.get_meta_item(root_key(name), version).await
    }

    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        let k = root_key(name);
        let top = below.unwrap_or(u64::MAX).saturating_sub(1);
        if top == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query(limit, |query| {
                query
                    .key_condition_expression("hash_key = :k AND range_key BETWEEN :lo AND :hi")
                    .expression_attribute_values(":k", s(k.as_str()))
                    .expression_attribute_values(":lo", n(1))
                    .expression_attribute_values(":hi", n(top))
                    .scan_index_forward(false)
            })
            .await?;
        items
            .iter()
            .map(|item| {
                let meta = meta_from_item(item, &k)?;
                self.add_bytes(meta.body.len(), 0, 0);
                Ok(meta)
            })
            .collect()
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let keys: Vec<String> = hashes.iter().map(|h| sector_key(db, h)).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        let mut found = self.batch_get(unique.clone(), false).await?;
        // A sector written just now may not have reached every replica yet:
        // what is missing is read again, strongly consistent, before it is
        // reported absent.
        let missing: Vec<String> = unique
            .into_iter()
            .filter(|k| !found.contains_key(k))
            .collect();
        if !missing.is_empty() {
            found.extend(self.batch_get(missing, true).await?);
        }
        keys.iter()
            .map(|k| found.get(k).map(|item| decode_sector(item, k)).transpose())
            .collect()
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let keys = hashes.iter().map(|h| key(sector_key(db, h), 0)).collect();
        self.batch_delete(keys).await
    }

    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError> {
        assert!(!versions.contains(&0), "range key 0 is the current root");
        let keys = versions.iter().map(|&v| key(root_key(name), v)).collect();
        self.batch_delete(keys).await
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        let written = body.len();
        let mut item = intent_item_key(name, key);
        item.insert(ATTR_BODY.to_string(), AttributeValue::B(Blob::new(body)));
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.error("PutItem", e))?;
        self.count("PutItem", out.consumed_capacity());
        self.add_bytes(0, written, 0);
        Ok(())
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        let k = intent_key(name);
        let high = IntentKey {
            bound: bound_below,
            id: 0,
        };
        if limit == 0 || bound_below == 0 {
            return Ok(Vec::new());
        }
        let items = self
            .query(limit, |query| {
                query
                    .key_condition_expression("hash_key = :k AND range_key < :hi")
                    .expression_attribute_values(":k", s(k.as_str()))
                    .expression_attribute_values(
                        ":hi",
                        AttributeValue::N(high.sort_number().to_string()),
                    )
            })
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let corrupt =
                || BackendError::Corrupt(format!("intent item of {k} without a key or body"));
            let sort = item
                .get(RANGE_KEY)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<u128>().ok())
                .and_then(IntentKey::from_sort_number)
                .ok_or_else(corrupt)?;
            let body = blob(item, ATTR_BODY).ok_or_else(corrupt)?.to_vec();
            self.add_bytes(body.len(), 0, 0);
            out.push((sort, body));
        }
        Ok(out)
    }

    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        let keys = keys.iter().map(|k| intent_item_key(name, *k)).collect();
        self.batch_delete(keys).await
    }

    /// A conditional `DeleteItem`; a root goes in one `TransactWriteItems`
    /// with its history item of that version and its catalog entry (a
    /// `create` of the name after it writes both again; one before it
    /// moved the root, and nothing is deleted).
    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        if kind == MetaKind::Root {
            return self.delete_root(name, expected).await;
        }
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(meta_key(kind, name), 0)))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", ATTR_VERSION)
            .expression_attribute_values(":v", n(expected))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match out {
            Ok(out) => self.count("DeleteItem", out.consumed_capacity()),
            // Absent is what a lost answer's first attempt leaves too.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                if self.get_meta(kind, name).await?.is_some() {
                    return Err(PutMetaError::Conflict);
                }
            }
            Err(e) => return Err(PutMetaError::Backend(self.error("DeleteItem", e))),
        }
        Ok(())
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        let mut seen = std::collections::HashSet::new();
        let mut items = Vec::with_capacity(sectors.len());
        let mut written = 0;
        for (sector, bytes) in sectors {
            if !seen.insert(*sector) {
                continue; // BatchWriteItem refuses duplicate keys
            }
            let (item, len) = sector_item(db, sector, bytes);
            written += len;
            items.push(item);
        }
        self.add_bytes(0, written, 0);
        self.batch_write(items).await
    }

    fn commits_in_one_request(&self, sectors: &[(Hash, Vec<u8>)], fenced: bool) -> bool {
        self.one_request_commit && !sectors.is_empty() && super::fits_one_request(sectors, fenced)
    }

    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        let Commit {
            name,
            db,
            expected,
            replaces,
            sectors,
            fence,
            state,
        } = commit;
        let Some((ahead, in_transaction)) = super::transaction_plan(
            self.commits_in_one_request(sectors, fence.is_some()),
            &commit,
        ) else {
            return super::commit_in_two(self, commit, meta).await;
        };
        if !ahead.is_empty() {
            self.put_sectors(db, ahead).await?;
        }
        if expected.is_none() {
            self.put_catalog_entry(name).await?;
        }
        let fence_version = fence.map(|f| f.lock_version);
        let token = commit_token(
            name,
            expected,
            fence_version,
            in_transaction,
            &meta,
            state.as_ref(),
        );
        let mut items = Vec::with_capacity(in_transaction.len() + 4);
        if let Some(lock_version) = fence_version {
            let check = ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key(meta_key(MetaKind::Lock, name), 0)))
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", ATTR_VERSION)
                .expression_attribute_values(":v", n(lock_version))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().condition_check(check).build());
        }
        // What a cancelled transaction is billed (estimated; its answer
        // reports none): DynamoDB writes every item twice, to prepare and
        // to commit, and a cancellation ends it after the prepare — one
        // write unit per KB per item, the check counted as one.
        let mut prepare_units = if fence.is_some() { 1.0 } else { 0.0 };
        if let Some(state) = state {
            // The GC state holding a restore's or fork's mark: the root
            // lands only while it is the state that held the mark (its
            // cancellation is a conflict: the caller reads the state again).
            let item = meta_item(meta_key(MetaKind::Gc, state.name), 0, state.meta);
            prepare_units += kb(item_bytes(&item));
            self.add_bytes(0, state.meta.body.len(), 0);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", ATTR_VERSION)
                .expression_attribute_values(":v", n(state.expected))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let mut written = 0;
        let mut seen = std::collections::HashSet::new();
        for (sector, bytes) in in_transaction {
            if !seen.insert(*sector) {
                continue; // a transaction refuses two writes of one key
            }
            let (item, len) = sector_item(db, sector, bytes);
            written += len;
            prepare_units += kb(item_bytes(&item));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(build_error)?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        let swap = RootSwap {
            name,
            expected,
            replaces: Some(replaces),
            fenced: fence.is_some(),
            token,
        };
        self.add_bytes(0, written, 0);
        self.swap_root(swap, items, prepare_units, meta).await
    }

    async fn summary(&self) -> Result<StoredSummary, BackendError> {
        // A full count needs a Scan; only tests and debugging ask for it.
        let mut summary = StoredSummary::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| self.error("Scan", e))?;
            self.count("Scan", out.consumed_capacity());
            for item in out.items() {
                summary.add(item_kind(item), item_bytes(item) as u64);
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_endpoints() {
        assert!(is_loopback("http://127.0.0.1:8000"));
        assert!(is_loopback("http://localhost:8000/"));
        assert!(is_loopback("http://[::1]:8000"));
        assert!(!is_loopback("https://dynamodb.us-east-1.amazonaws.com"));
    }

    #[test]
    fn sectors_compress_only_when_smaller() {
        let zeros = vec![0u8; 4096];
        let (codec, body) = encode_sector(&zeros);
        assert_eq!(codec, CODEC_ZSTD);
        assert!(body.len() < 100);
        let mut item = HashMap::new();
        item.insert(ATTR_CODEC.to_string(), n(codec as u64));
        item.insert(ATTR_BODY.to_string(), AttributeValue::B(Blob::new(body)));
        assert_eq!(decode_sector(&item, "k").unwrap(), zeros);
        let mut noise = vec![0u8; 4096];
        getrandom::fill(&mut noise).unwrap();
        let (codec, _) = encode_sector(&noise);
        assert_eq!(codec, CODEC_RAW);
    }

    fn meta_item(version: u64, body: &[u8]) -> Item {
        let mut item = key("r/x".into(), 0);
        item.insert(ATTR_VERSION.into(), n(version));
        item.insert(
            ATTR_BODY.into(),
            AttributeValue::B(Blob::new(body.to_vec())),
        );
        item
    }

    #[test]
    fn cancellation_reasons_are_read_in_action_order() {
        let ours = meta_item(8, b"ours");
        let theirs = meta_item(8, b"theirs");
        let failed = Some("ConditionalCheckFailed");
        let none = Some("None");
        // [fence check, sector put, root put]
        assert_eq!(
            cancelled(&[(failed, None), (none, None), (none, None)], true, &ours),
            Cancelled::Fenced
        );
        assert_eq!(
            cancelled(&[(none, None), (failed, Some(&ours))], false, &ours),
            Cancelled::AppliedBefore
        );
        assert_eq!(
            cancelled(&[(none, None), (failed, Some(&theirs))], false, &ours),
            Cancelled::Conflict
        );
        assert_eq!(
            cancelled(&[(none, None), (failed, None)], false, &ours),
            Cancelled::Conflict
        );
        for (code, kind) in [
            ("TransactionConflict", "throttled"),
            ("ThrottlingError", "throttled"),
            ("ProvisionedThroughputExceeded", "throttled"),
            ("ItemCollectionSizeLimitExceeded", "too large"),
            ("ValidationError", "invalid"),
        ] {
            let outcome = cancelled(&[(Some(code), None), (none, None)], false, &ours);
            let found = match outcome {
                Cancelled::Throttled(m) if m.contains(code) => "throttled",
                Cancelled::TooLarge(m) if m.contains(code) => "too large",
                Cancelled::Invalid(m) if m.contains(code) => "invalid",
                other => panic!("{code}: {other:?}"),
            };
            assert_eq!(found, kind, "{code}");
        }
    }

    #[test]
    fn a_stored_item_is_ours_only_with_our_version_and_body() {
        let ours = meta_item(3, b"body");
        assert!(same_meta(&meta_item(3, b"body"), &ours));
        assert!(!same_meta(&meta_item(4, b"body"), &ours));
        assert!(!same_meta(&meta_item(3, b"other"), &ours));
        assert!(!same_meta(&key("r/x".into(), 0), &ours));
    }

    #[test]
    fn catalog_range_fits_a_dynamodb_number() {
        let name = DbName::new("app.db").unwrap();
        assert!(catalog_range(&name) < 1 << 63);
        assert_eq!(catalog_range(&name), catalog_range(&name));
    }
}
