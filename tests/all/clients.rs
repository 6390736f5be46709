//! libSQL's real clients, unchanged, against `donut-host serve` on
//! loopback: `@libsql/client` and Drizzle in Node (`clients/node`, from
//! npm) and Python's `libsql-client` (`clients/python`, from PyPI). `just
//! clients` installs them (the `test` task does it first); these tests
//! start the server and run each suite as a child process.

use crate::util::host_bin;
use donut_host::service::config::{to_hex, token_sha256};
use donut_testkit::Served;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One tenant, `apps`, whose databases start with `node-` or `py-`.
struct Server {
    _dir: tempfile::TempDir,
    served: Served,
    token: String,
}

fn serve() -> Server {
    let _ = host_bin();
    let dir = tempfile::tempdir().unwrap();
    let token = format!("clients-{}", std::process::id());
    let text = format!(
        "[service]\nstream_idle_secs = 60\n\n[[tenant]]\nname = \"apps\"\n\
         token_sha256 = \"{}\"\nprefixes = [\"node-\", \"py-\"]\n",
        to_hex(&token_sha256(&token))
    );
    let config = dir.path().join("tenants.toml");
    std::fs::write(&config, text).unwrap();
    let store = dir.path().join("store").display().to_string();
    let served = Served::start(&config, &["--local".into(), store]);
    Server {
        _dir: dir,
        served,
        token,
    }
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients")
}

/// Where `just clients` installs a thing, or a panic saying to run it.
fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `just clients` (the test task does)",
        path.display()
    );
    path
}

/// Runs a client suite against `server` with database names under
/// `prefix`; fails with its output and the server's log.
fn run_suite(server: &Server, mut command: Command, prefix: &str) -> Output {
    let out = command
        .env("DONUT_URL", &server.served.base)
        .env("DONUT_TOKEN", &server.token)
        .env("DONUT_DB_PREFIX", prefix)
        .output()
        .expect("starting the client suite");
    assert!(
        out.status.success(),
        "the client suite failed ({}):\n{}\n{}\n--- server log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.served.log_text()
    );
    out
}

#[test]
fn libsql_client_and_drizzle_for_node_work_unchanged() {
    let dir = clients_dir().join("node");
    installed(dir.join("node_modules/@libsql/client/package.json"));
    installed(dir.join("node_modules/drizzle-orm/package.json"));
    let server = serve();
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=tap", "libsql.test.mjs"])
        .current_dir(&dir);
    let out = run_suite(&server, node, "node-");
    let report = String::from_utf8_lossy(&out.stdout);
    // Every test ran (a suite that skipped or lost some would still pass).
    let suite = std::fs::read_to_string(dir.join("libsql.test.mjs")).unwrap();
    let tests = suite.matches("\ntest(").count();
    assert!(tests >= 10, "{tests} tests found");
    assert!(
        report.contains(&format!("# pass {tests}\n")) && report.contains("# fail 0"),
        "{report}"
    );
}

#[test]
fn libsql_client_for_python_works_unchanged() {
    let target = host_bin()
        .parent()
        .and_then(Path::parent)
        .expect("the host is built under the target directory")
        .to_path_buf();
    let python = installed(target.join("tools/py/bin/python3"));
    let server = serve();
    let mut command = Command::new(python);
    command.arg(clients_dir().join("python/libsql_check.py"));
    let out = run_suite(&server, command, "py-");
    let report = String::from_utf8_lossy(&out.stdout);
    let passed = report.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(passed, 3, "{report}");
}
