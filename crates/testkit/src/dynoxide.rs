//! dynoxide, a DynamoDB-compatible server, on a free loopback port.

use donut_host::backend::dynamo::DynamoOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A dynoxide server on 127.0.0.1, killed on drop. One per test: every
/// test gets its own empty DynamoDB.
pub struct Dynoxide {
    child: std::process::Child,
    pub endpoint: String,
}

/// How long a server may take to accept connections.
const START_MS_MAX: u64 = 10_000;
/// Ports tried before giving up (another process may take a free port
/// between our probe and dynoxide's bind).
const PORT_ATTEMPTS_MAX: u32 = 20;

impl Dynoxide {
    /// The binary: `$DONUT_DYNOXIDE`, or the one `just tools` installs.
    pub fn bin() -> PathBuf {
        std::env::var_os("DONUT_DYNOXIDE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("DONUT_DYNOXIDE_BIN")))
    }

    /// Starts a server; panics if it cannot (a test's setup).
    pub fn start() -> Dynoxide {
        Self::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server, or says why it could not.
    pub fn try_start() -> Result<Dynoxide, String> {
        let bin = Self::bin();
        if !bin.exists() {
            return Err(format!(
                "{} is missing: install the test servers first (`just tools`)",
                bin.display()
            ));
        }
        for _ in 0..PORT_ATTEMPTS_MAX {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free port: {e}"))?
                .port();
            let mut child = std::process::Command::new(&bin)
                .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--log", "quiet"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            let deadline = Instant::now() + Duration::from_millis(START_MS_MAX);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // lost the port to someone else: try another
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Dynoxide {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Err("dynoxide did not start".to_string())
    }
}

impl Drop for Dynoxide {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options for table `table` on the server at `endpoint`: static
/// credentials, one-request commits, the SDK's retries at 4 attempts.
pub fn dynamo_options(endpoint: &str, table: &str) -> DynamoOptions {
    DynamoOptions {
        table: table.to_string(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.to_string()),
        static_credentials: Some(("donutdb".into(), "donutdb".into())),
        max_attempts: 4,
        one_request_commit: true,
        single_writer_region: false,
        table_check_cache: None,
    }
}
