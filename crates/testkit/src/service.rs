//! `donut-host serve` as tests meet it: a [`Served`] process on 127.0.0.1
//! (any free port, stopped on drop), and an [`Api`] client that speaks
//! real HTTP/1.1 to it.

use crate::host_bin;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// A `donut-host serve` process, killed on drop.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its log (stderr).
    pub log: PathBuf,
}

impl Served {
    /// Serves the tenants of `config` over the store that `store_args`
    /// (global options such as `--local DIR`) name; waits until it listens.
    pub fn start(config: &Path, store_args: &[String]) -> Served {
        let log = config.with_extension(format!("{}.log", unique()));
        let log_file = std::fs::File::create(&log).expect("creating the server log");
        let mut child = Command::new(host_bin())
            .args(store_args)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            // Compiled components shared by every test's servers.
            .env("XDG_CACHE_HOME", crate::component_cache_dir().join("xdg"))
            // For a DynamoDB-compatible server on loopback.
            .env("AWS_ACCESS_KEY_ID", "donutdb")
            .env("AWS_SECRET_ACCESS_KEY", "donutdb")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("starting donut-host serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let Some(base) = line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_string)
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve did not start ({read:?}, {line:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        Served { child, base, log }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    /// Sends SIGTERM and waits for the process to stop.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        self.child.wait().expect("waiting for serve")
    }

    /// Sends SIGHUP: the server reads its tenants file again.
    pub fn hang_up(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -HUP {pid}");
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) << 20 | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `error.code` of a JSON error.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client of one service.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// A client of the same service with connections of its own: for a
    /// request the server may answer before reading its body (413), after
    /// which it closes the connection — a pooled client could pick that
    /// connection for its next request and see it cut.
    pub fn fresh(&self) -> Api {
        Api::new(&self.base)
    }

    /// Any request; `Err` only if no answer came (connection refused or
    /// cut).
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        self.try_send(method, path, token, content_type, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send("GET", path, token, None, Vec::new()).await
    }

    /// Uploads `component` as `token`'s plugin `name`.
    pub async fn put_plugin(&self, token: &str, name: &str, component: &[u8]) -> Reply {
        let path = format!("/v1/plugins/{name}");
        let body = component.to_vec();
        self.send("PUT", &path, Some(token), Some("application/wasm"), body)
            .await
    }

    /// Invokes `token`'s plugin `name` with `args` and no stdin.
    pub async fn invoke(&self, token: &str, name: &str, args: &[&str]) -> Reply {
        let body = serde_json::json!({ "args": args }).to_string().into_bytes();
        let path = format!("/v1/plugins/{name}/invoke");
        self.send("POST", &path, Some(token), Some("application/json"), body)
            .await
    }

    /// The stock SQL plugin (uploaded as `plugin`) run on `db`, CSV out.
    pub async fn sql(&self, token: &str, plugin: &str, db: &str, sql: &str) -> Reply {
        self.invoke(token, plugin, &["exec", db, sql, "--format", "csv"])
            .await
    }
}
