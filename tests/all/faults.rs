//! A fault-injecting HTTP proxy between the DynamoDB backend (the real
//! aws-sdk-dynamodb client) and a real DynamoDB-compatible server: it can
//! throttle requests and make batch requests come back partly unprocessed,
//! exactly as DynamoDB does under load.

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

async fn handle(faults: &Faults, upstream: &str, request: Message) -> std::io::Result<Message> {
    let target = request.header("x-amz-target").unwrap_or("").to_string();
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
                        let Ok(response) = handle(&faults, &upstream, request).await else {
                            return;
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
