//! A fault-injecting HTTP proxy between the DynamoDB backend (the real
//! aws-sdk-dynamodb client) and a real DynamoDB-compatible server: it can
//! throttle requests, make batch requests come back partly unprocessed,
//! let a request apply and then lose its answer (a 500, a 503, or a
//! connection closed without one: a timeout), and answer with any error
//! DynamoDB documents (a transaction cancelled for a reason, an exception)
//! without forwarding — what real DynamoDB does under load and contention,
//! and the emulators never do by themselves.

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
pub struct Faults {
    /// The next N requests get a ThrottlingException.
    pub throttle_next: AtomicU32,
    /// The next N BatchGetItem / BatchWriteItem requests leave all but one
    /// key/item unprocessed.
    pub unprocess_next: AtomicU32,
    /// What was injected.
    pub throttled: AtomicU32,
    pub unprocessed: AtomicU32,
    /// Forward the next matching requests, then lose their answers.
    pub lose_answers: std::sync::Mutex<Vec<LoseAnswer>>,
    /// Answer the next matching requests with an error, forwarding nothing.
    pub refuse: std::sync::Mutex<Vec<Refuse>>,
    /// Requests that reached the server, by operation (`PutItem`, ...).
    pub forwarded: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    /// Fields merged into every `DescribeTable` answer's `Table` (a status,
    /// replicas: what the emulators never report).
    pub describe_patch: std::sync::Mutex<Option<Value>>,
    /// The `ClientRequestToken` of every `TransactWriteItems` sent.
    pub tokens: std::sync::Mutex<Vec<String>>,
}

/// How an answer is lost after the request applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// HTTP 500 InternalServerError.
    Status500,
    /// HTTP 503 ServiceUnavailable.
    Status503,
    /// The connection closes without an answer (what a client timeout
    /// sees).
    Closed,
}

/// Forward the next `count` requests of `operation` (`PutItem`,
/// `TransactWriteItems`, ...), then lose each answer as `loss` says.
#[derive(Debug, Clone)]
pub struct LoseAnswer {
    pub operation: &'static str,
    pub count: u32,
    pub loss: Loss,
}

/// What a refused request is answered with.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// `TransactionCanceledException` with this reason code on the last
    /// action (the root put) and `None` on the others.
    Cancelled(&'static str),
    /// An exception by its name (`TransactionConflictException`,
    /// `ValidationException`, `AccessDeniedException`, ...).
    Exception(&'static str),
}

/// Answer the next `count` requests of `operation` with `refusal`.
#[derive(Debug, Clone)]
pub struct Refuse {
    pub operation: &'static str,
    pub count: u32,
    pub refusal: Refusal,
}

impl Faults {
    pub fn lose(&self, operation: &'static str, count: u32, loss: Loss) {
        self.lose_answers.lock().unwrap().push(LoseAnswer {
            operation,
            count,
            loss,
        });
    }

    pub fn refuse(&self, operation: &'static str, count: u32, refusal: Refusal) {
        self.refuse.lock().unwrap().push(Refuse {
            operation,
            count,
            refusal,
        });
    }

    /// Answers still to be lost: 0 once every `lose` took effect (a test
    /// whose loss was never consumed tested nothing).
    pub fn losses_left(&self) -> u32 {
        self.lose_answers
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.count)
            .sum()
    }

    pub fn forwarded(&self, operation: &str) -> u32 {
        self.forwarded
            .lock()
            .unwrap()
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    fn take_loss(&self, operation: &str) -> Option<Loss> {
        let mut list = self.lose_answers.lock().unwrap();
        let entry = list
            .iter_mut()
            .find(|e| e.operation == operation && e.count > 0)?;
        entry.count -= 1;
        Some(entry.loss)
    }

    fn take_refusal(&self, operation: &str) -> Option<Refusal> {
        let mut list = self.refuse.lock().unwrap();
        let entry = list
            .iter_mut()
            .find(|e| e.operation == operation && e.count > 0)?;
        entry.count -= 1;
        Some(entry.refusal.clone())
    }
}

fn error_answer(status: &str, kind: &str, message: &str, extra: Option<(&str, Value)>) -> Message {
    let mut body = json!({
        "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"),
        "message": message,
    });
    if let Some((field, value)) = extra {
        body[field] = value;
    }
    Message {
        head: vec![
            format!("HTTP/1.1 {status}"),
            "content-type: application/x-amz-json-1.0".into(),
        ],
        body: Vec::new(),
    }
    .with_body(body.to_string().into_bytes())
}

fn refusal_answer(refusal: &Refusal, request: &Message) -> Message {
    match refusal {
        Refusal::Exception(kind) => {
            error_answer("400 Bad Request", kind, &format!("{kind} (injected)"), None)
        }
        Refusal::Cancelled(code) => {
            let actions = serde_json::from_slice::<Value>(&request.body)
                .ok()
                .and_then(|b| b["TransactItems"].as_array().map(Vec::len))
                .unwrap_or(1);
            let mut reasons = vec![json!({"Code": "None"}); actions];
            reasons[actions - 1] = json!({"Code": code, "Message": "injected"});
            error_answer(
                "400 Bad Request",
                "TransactionCanceledException",
                &format!(
                    "Transaction cancelled, please refer cancellation reasons for specific reasons [{code}] (injected)"
                ),
                Some(("CancellationReasons", Value::Array(reasons))),
            )
        }
    }
}

fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

pub struct Proxy {
    pub endpoint: String,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Message {
    head: Vec<String>,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn with_body(mut self, body: Vec<u8>) -> Message {
        self.head
            .retain(|l| !l.to_ascii_lowercase().starts_with("content-length:"));
        self.head.push(format!("content-length: {}", body.len()));
        self.body = body;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.head.join("\r\n").into_bytes();
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

async fn read_message<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<Message>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let mut message = Message {
        head,
        body: Vec::new(),
    };
    let len: usize = message
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    message.body = vec![0; len];
    reader.read_exact(&mut message.body).await?;
    Ok(Some(message))
}

/// Sends one request upstream on a fresh connection; returns the response.
async fn forward(upstream: &str, mut request: Message) -> std::io::Result<Message> {
    request
        .head
        .retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    request.head.push("connection: close".into());
    let stream = TcpStream::connect(upstream).await?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(&request.bytes()).await?;
    read_message(&mut stream)
        .await?
        .ok_or_else(|| std::io::Error::other("upstream closed"))
}

fn table_entries(body: &Value, field: &str) -> Option<(String, Vec<Value>)> {
    let (table, value) = body.get(field)?.as_object()?.iter().next()?;
    let list = value.get("Keys").unwrap_or(value).as_array()?.clone();
    Some((table.clone(), list))
}

/// `Some(answer)`: answer the client; `None`: close the connection without
/// an answer.
async fn handle(
    faults: &Faults,
    upstream: &str,
    request: Message,
) -> std::io::Result<Option<Message>> {
    let target = request.header("x-amz-target").unwrap_or("").to_string();
    let operation = target.rsplit('.').next().unwrap_or("").to_string();
    if operation == "TransactWriteItems"
        && let Ok(body) = serde_json::from_slice::<Value>(&request.body)
        && let Some(token) = body["ClientRequestToken"].as_str()
    {
        faults.tokens.lock().unwrap().push(token.to_string());
    }
    if let Some(refusal) = faults.take_refusal(&operation) {
        return Ok(Some(refusal_answer(&refusal, &request)));
    }
    if let Some(loss) = faults.take_loss(&operation) {
        forward(upstream, request).await?;
        *faults
            .forwarded
            .lock()
            .unwrap()
            .entry(operation)
            .or_default() += 1;
        return Ok(match loss {
            Loss::Status500 => Some(error_answer(
                "500 Internal Server Error",
                "InternalServerError",
                "Internal server error (injected after the request applied)",
                None,
            )),
            Loss::Status503 => Some(error_answer(
                "503 Service Unavailable",
                "ServiceUnavailable",
                "Service unavailable (injected after the request applied)",
                None,
            )),
            Loss::Closed => None,
        });
    }
    *faults
        .forwarded
        .lock()
        .unwrap()
        .entry(operation.clone())
        .or_default() += 1;
    let response = pass_on(faults, upstream, request, &target).await?;
    let patch = faults.describe_patch.lock().unwrap().clone();
    match patch {
        Some(patch) if operation == "DescribeTable" => {
            let mut out: Value =
                serde_json::from_slice(&response.body).map_err(std::io::Error::other)?;
            if let (Some(table), Some(fields)) = (out["Table"].as_object_mut(), patch.as_object()) {
                for (k, v) in fields {
                    table.insert(k.clone(), v.clone());
                }
            }
            Ok(Some(response.with_body(out.to_string().into_bytes())))
        }
        _ => Ok(Some(response)),
    }
}

async fn pass_on(
    faults: &Faults,
    upstream: &str,
    request: Message,
    target: &str,
) -> std::io::Result<Message> {
    if take(&faults.throttle_next) {
        faults.throttled.fetch_add(1, Ordering::SeqCst);
        let body = json!({
            "__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            "message": "Rate of requests exceeds the allowed throughput (injected)"
        });
        return Ok(Message {
            head: vec![
                "HTTP/1.1 400 Bad Request".into(),
                "content-type: application/x-amz-json-1.0".into(),
            ],
            body: Vec::new(),
        }
        .with_body(body.to_string().into_bytes()));
    }
    let batch = target.ends_with(".BatchGetItem") || target.ends_with(".BatchWriteItem");
    if !batch || faults.unprocess_next.load(Ordering::SeqCst) == 0 {
        return forward(upstream, request).await;
    }
    let mut body: Value = serde_json::from_slice(&request.body).map_err(std::io::Error::other)?;
    let Some((table, entries)) = table_entries(&body, "RequestItems") else {
        return forward(upstream, request).await;
    };
    if entries.len() < 2 || !take(&faults.unprocess_next) {
        return forward(upstream, request).await;
    }
    faults.unprocessed.fetch_add(1, Ordering::SeqCst);
    // Send only the first key/item; report the rest unprocessed.
    let (first, rest) = entries.split_at(1);
    let get = target.ends_with(".BatchGetItem");
    if get {
        body["RequestItems"][&table]["Keys"] = Value::Array(first.to_vec());
    } else {
        body["RequestItems"][&table] = Value::Array(first.to_vec());
    }
    let request = request.with_body(body.to_string().into_bytes());
    let response = forward(upstream, request).await?;
    let mut out: Value = serde_json::from_slice(&response.body).map_err(std::io::Error::other)?;
    if get {
        let consistent = body["RequestItems"][&table]["ConsistentRead"].clone();
        out["UnprocessedKeys"] = json!({ table: { "Keys": rest, "ConsistentRead": consistent } });
    } else {
        out["UnprocessedItems"] = json!({ table: rest });
    }
    Ok(response.with_body(out.to_string().into_bytes()))
}

impl Proxy {
    pub async fn start(upstream_endpoint: &str) -> Proxy {
        let upstream = upstream_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Faults::default());
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let faults = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let mut client = BufReader::new(client);
                    while let Ok(Some(request)) = read_message(&mut client).await {
                        let Ok(Some(response)) = handle(&faults, &upstream, request).await else {
                            return; // an error, or an answer lost on purpose
                        };
                        if client.get_mut().write_all(&response.bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Proxy {
            endpoint,
            faults,
            task,
        }
    }
}
