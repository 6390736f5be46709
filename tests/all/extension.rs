//! The loadable extension (`libdonutdb.so`) in the programs users run:
//! Debian's `sqlite3` shell (3.40, built without
//! `SQLITE_ENABLE_BATCH_ATOMIC_WRITE`, so every commit takes the
//! rollback-journal path) and Debian's Python (`/usr/bin/python3`, whose
//! `sqlite3` can load extensions), each a separate process, against the
//! local store and DynamoDB (dynoxide) — and `donut-host` on the same
//! store, both ways.

use donut_testkit::{Dynoxide, dynamo_options, ext_lib, fill, host_bin};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Debian's shell and Python: what a user of the Go DonutDB has.
const SQLITE3: &str = "/usr/bin/sqlite3";
const PYTHON: &str = "/usr/bin/python3";

/// Where a test's databases live, as both the extension (environment)
/// and `donut-host` (options) are told.
struct Store {
    dir: tempfile::TempDir,
    dynamo: Option<(Dynoxide, String)>,
}

impl Store {
    fn local() -> Store {
        Store {
            dir: tempfile::tempdir().unwrap(),
            dynamo: None,
        }
    }

    async fn dynamodb() -> Store {
        let server = Dynoxide::start();
        let table = "donut-ext".to_string();
        donut_host::backend::dynamo::create_table(&dynamo_options(&server.endpoint, &table))
            .await
            .unwrap();
        Store {
            dir: tempfile::tempdir().unwrap(),
            dynamo: Some((server, table)),
        }
    }

    fn local_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `command` told where the store is, as users tell the extension.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env_remove("DONUTDB_TABLE")
            .env("DONUT_LOCAL", self.local_dir())
            .env("XDG_CACHE_HOME", self.dir.path().join("cache-home"))
            .env("HOME", self.dir.path());
        if let Some((server, table)) = &self.dynamo {
            command
                .env("DONUTDB_TABLE", table)
                .env("AWS_ENDPOINT_URL", &server.endpoint)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "donutdb")
                .env("AWS_SECRET_ACCESS_KEY", "donutdb");
        }
        command
    }

    /// `donut-host ARGS` on this store.
    fn host(&self, args: &[&str]) -> Command {
        let mut command = self.command(host_bin());
        command.arg("--local").arg(self.local_dir());
        if let Some((server, table)) = &self.dynamo {
            command.args(["--table", table, "--endpoint", &server.endpoint]);
        }
        command.args(args);
        command
    }

    fn host_ok(&self, args: &[&str]) -> String {
        succeeded(&format!("donut-host {args:?}"), run(self.host(args), ""))
    }

    /// The shell with the extension loaded, `script` on stdin.
    fn sqlite3(&self, script: &str) -> Output {
        let mut command = self.command(SQLITE3);
        command.arg("-bail");
        run(command, &format!(".load {}\n{script}", ext_stem()))
    }

    fn sqlite3_ok(&self, script: &str) -> String {
        succeeded("sqlite3", self.sqlite3(script))
    }

    /// Python with `connect(name)` opening a DonutDB database.
    fn python(&self, code: &str) -> Command {
        let mut command = self.command(PYTHON);
        command
            .arg("-c")
            .arg(format!("{}\n{code}", python_preamble()));
        command
    }

    fn python_ok(&self, code: &str) -> String {
        succeeded("python3", run(self.python(code), ""))
    }
}

/// The extension's path without `.so`, as users write `.load` (SQLite
/// tries the name, then the name with the suffix).
fn ext_stem() -> String {
    let path = ext_lib();
    path.with_extension("").display().to_string()
}

/// Loads the extension; `connect(name)` opens a DonutDB database, and
/// `committed(db, sql, params)` runs a statement and commits, again while
/// SQLite refuses it as busy (a lost commit race: nothing of it stored),
/// returning how many times it was refused. Any other error is raised.
fn python_preamble() -> String {
    format!(
        "import sqlite3, sys, time
boot = sqlite3.connect(':memory:')
boot.enable_load_extension(True)
boot.load_extension({ext:?})
boot.close()
def connect(name):
    return sqlite3.connect(f'file:{{name}}?vfs=donutdb', uri=True)
def committed(db, *statement):
    refused = 0
    while True:
        try:
            db.execute(*statement)
            db.commit()
            return refused
        except sqlite3.OperationalError as e:
            if 'locked' not in str(e) and 'busy' not in str(e):
                raise
            db.rollback()
            refused += 1
            time.sleep(0.001)
",
        ext = ext_stem()
    )
}

fn run(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the process");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn succeeded(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\nstdout: {stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// What a user does in the shell: a schema, rows, transactions committed
/// and rolled back, a CSV imported, the dot commands. Run on a native
/// file and through the extension, the output must be the same.
fn shell_session(csv: &Path) -> String {
    format!(
        "create table kv(k text primary key, v integer);
         insert into kv values ('a', 1), ('b', 2);
         begin; insert into kv values ('c', 3); update kv set v = v * 10; commit;
         begin; delete from kv; rollback;
         create table big(id integer primary key, body text);
         {fill}
         create index big_body on big(body);
         .import --csv {csv} people
         .mode csv
         select * from kv order by k;
         select count(*), sum(length(body)) from big;
         select name, age + 1 from people order by name;
         .mode list
         .tables
         .schema kv
         pragma integrity_check;
         .dump kv people
         ",
        fill = fill("big(body)", 3_000, "hex(randomblob(40)) || i"),
        csv = csv.display(),
    )
    .lines()
    .map(|line| format!("{}\n", line.trim()))
    .collect()
}

fn write_csv(dir: &Path) -> PathBuf {
    let path = dir.join("people.csv");
    std::fs::write(
        &path,
        "name,age\nada,36\n\"grace, rear admiral\",85\nlinus,28\n",
    )
    .unwrap();
    path
}

/// The session's output with the big table's random bytes left out.
fn comparable(output: &str) -> String {
    output
        .lines()
        .filter(|line| !line.contains("sum(length"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn the_shell_works_as_on_a_file(store: Store) {
    let csv = write_csv(store.dir.path());
    let session = shell_session(&csv);
    let native_file = store.dir.path().join("native.db");
    let native = succeeded(
        "native sqlite3",
        run(
            {
                let mut c = Command::new(SQLITE3);
                c.arg("-bail").arg(&native_file);
                c
            },
            &session,
        ),
    );
    let donut = store.sqlite3_ok(&format!(".open 'file:app.db?vfs=donutdb'\n{session}"));
    assert_eq!(comparable(&donut), comparable(&native));
    assert!(donut.contains("\"grace, rear admiral\",86"), "{donut}");
    assert!(donut.contains("3000,"), "{donut}");
    // donut-host reads what the shell wrote, and the shell what it writes.
    let counted = store.host_ok(&[
        "sql",
        "app.db",
        "select (select count(*) from big) || ' ' || (select sum(v) from kv)",
    ]);
    assert!(counted.contains("3000 60"), "{counted}");
    let before = store.sqlite3_ok(".open 'file:app.db?vfs=donutdb'\npragma donut_version;");
    store.host_ok(&["sql", "app.db", "insert into kv values ('d', 4)"]);
    let read = store.sqlite3_ok(".open 'file:app.db?vfs=donutdb'\nselect group_concat(k) from kv;");
    assert_eq!(read.trim(), "a,b,c,d");
    // The version before that insert, as `NAME@VERSION`: read-only.
    let past = format!(".open 'file:app.db@{}?vfs=donutdb'\n", before.trim());
    let read = store.sqlite3_ok(&format!("{past}select group_concat(k) from kv;"));
    assert_eq!(read.trim(), "a,b,c");
    let write = store.sqlite3(&format!("{past}insert into kv values ('e', 5);"));
    let stderr = String::from_utf8_lossy(&write.stderr);
    assert!(stderr.contains("readonly database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite3_shell_works_through_the_extension_as_on_a_file_local() {
    the_shell_works_as_on_a_file(Store::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite3_shell_works_through_the_extension_as_on_a_file_dynamodb() {
    the_shell_works_as_on_a_file(Store::dynamodb().await).await;
}

async fn python_and_donut_host_share_databases(store: Store) {
    store.python_ok(
        "db = connect('py.db')
db.execute('create table t(x integer, who text)')
db.executemany('insert into t values (?, ?)', [(i, 'python') for i in range(500)])
db.commit()
db.execute('insert into t values (-1, \"rolled back\")')
db.rollback()",
    );
    let read = store.host_ok(&[
        "sql",
        "py.db",
        "select count(*) || ' ' || sum(x) || ' ' || count(distinct who) from t",
    ]);
    assert!(read.contains("500 124750 1"), "{read}");
    store.host_ok(&["sql", "py.db", "insert into t values (1000, 'host')"]);
    let read = store.python_ok(
        "db = connect('py.db')
print(db.execute('select count(*), max(x), group_concat(distinct who) from t').fetchone())
print(db.execute('pragma integrity_check').fetchone()[0])",
    );
    assert_eq!(read, "(501, 1000, 'python,host')\nok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_donut_host_read_each_others_writes_local() {
    python_and_donut_host_share_databases(Store::local()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_donut_host_read_each_others_writes_dynamodb() {
    python_and_donut_host_share_databases(Store::dynamodb().await).await;
}

/// Increments per writer.
const INCREMENTS: u32 = 40;

#[test]
fn writers_in_python_and_donut_host_at_once_lose_no_update() {
    let store = Store::local();
    store.sqlite3_ok(
        ".open 'file:count.db?vfs=donutdb'\ncreate table c(n integer); insert into c values (0);",
    );
    // Python runs again what SQLite refuses as busy (`committed`).
    let python = store
        .python(&format!(
            "db = connect('count.db')
refused = sum(committed(db, 'update c set n = n + 1') for _ in range({INCREMENTS}))
print('refused', refused)"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // donut-host's shell runs a statement that lost the race again until
    // the busy timeout.
    let script = format!(
        "pragma busy_timeout = 60000;\n{}",
        "update c set n = n + 1;\n".repeat(INCREMENTS as usize)
    );
    let host = store.host(&["shell", "count.db"]);
    let host = run(host, &script);
    let python = python.wait_with_output().unwrap();
    succeeded("donut-host shell", host);
    let python = succeeded("python3", python);
    let n = store.host_ok(&["sql", "count.db", "select n from c", "--format", "csv"]);
    assert_eq!(
        n.lines().last(),
        Some((2 * INCREMENTS).to_string().as_str()),
        "python said {python}"
    );
}

/// Waits until `log` has at least `lines` lines holding `text`; false if
/// `child` ended first (or, so a broken build fails instead of hanging,
/// after [`LOG_WAIT_MS_MAX`]).
fn wait_for_log(child: &mut Child, log: &Path, text: &str, lines: usize) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOG_WAIT_MS_MAX);
    while std::time::Instant::now() < deadline {
        let written = std::fs::read_to_string(log).unwrap_or_default();
        let logged = written.lines().filter(|l| l.contains(text)).count();
        if logged >= lines {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

const LOG_WAIT_MS_MAX: u64 = 300_000;

#[test]
fn killing_sqlite3_in_a_large_commit_leaves_the_previous_version() {
    let store = Store::local();
    store.sqlite3_ok(&format!(
        ".open 'file:big.db?vfs=donutdb'\ncreate table t(id integer primary key, body blob);\n{}",
        fill("t(body)", 100, "randomblob(1000)")
    ));
    let log = store.dir.path().join("changes.jsonl");
    let mut shell = store.command(SQLITE3);
    shell.arg("-bail").env("DONUT_CHANGE_LOG", &log);
    let mut child = shell
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // One statement, one commit: ~200 MB of rows, far more than the page
    // cache holds, so SQLite writes pages through the VFS long before the
    // commit point; the process dies among them.
    let script = format!(
        ".load {}\n.open 'file:big.db?vfs=donutdb'\npragma cache_size = 100;\n{}\n",
        ext_stem(),
        fill("t(body)", 200_000, "randomblob(1000)")
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).unwrap();
    let writing = wait_for_log(&mut child, &log, "\"write\"", 2_000);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    assert!(writing, "sqlite3 ended before it wrote 2,000 pages");
    // Every line of the change log is JSON with the fields the Go
    // DonutDB's writer had.
    let text = std::fs::read_to_string(&log).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for field in ["ts_ms", "action", "file", "result", "duration_us"] {
        assert!(first.get(field).is_some(), "no {field} in {first}");
    }
    let read = store.sqlite3_ok(
        ".open 'file:big.db?vfs=donutdb'\nselect count(*) from t;\npragma integrity_check;",
    );
    assert_eq!(read, "100\nok\n");
    let read = store.host_ok(&["sql", "big.db", "select count(*) from t"]);
    assert!(read.contains("100"), "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_with_a_missing_table_says_which_table() {
    let store = Store::dynamodb().await;
    let mut command = store.command(SQLITE3);
    command.env("DONUTDB_TABLE", "no-such-table");
    let out = run(command, &format!(".load {}\n", ext_stem()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-table"), "{stderr}");
}

#[test]
fn threads_of_one_python_process_write_through_the_vfs_at_once() {
    let store = Store::local();
    let out = store.python_ok(
        "import threading
setup = connect('threads.db')
setup.execute('create table t(thread integer, i integer)')
setup.commit()
def work(thread):
    db = connect('threads.db')
    for i in range(50):
        committed(db, 'insert into t values (?, ?)', (thread, i))
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(setup.execute('select count(*), count(distinct thread) from t').fetchone())
print(setup.execute('pragma integrity_check').fetchone()[0])",
    );
    assert_eq!(out, "(200, 4)\nok\n");
}

/// Through the extension, SQLite's random numbers are the operating
/// system's (the loading SQLite's default VFS seeds them; the extension
/// does not make itself the default): two `sqlite3` processes on one
/// DonutDB database draw differently, and `now` is the wall clock.
#[test]
fn sqlite3_processes_draw_different_random_numbers_through_the_extension() {
    let store = Store::local();
    let draw = ".open 'file:r.db?vfs=donutdb'\nselect hex(randomblob(16)) || ':' || random() || ':' || unixepoch('now');\n";
    let first = store.sqlite3_ok(draw);
    let second = store.sqlite3_ok(draw);
    let parts = |s: &str| -> Vec<String> { s.trim().split(':').map(String::from).collect() };
    let (first, second) = (parts(&first), parts(&second));
    assert_eq!(first.len(), 3, "{first:?}");
    assert_ne!(first[..2], second[..2], "the same draws");
    let host_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let guest_s: i64 = first[2].parse().expect("seconds");
    assert!((guest_s - host_s).abs() < 60, "{guest_s} vs {host_s}");
}
