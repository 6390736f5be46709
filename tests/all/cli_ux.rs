//! The command line as a new user meets it (issue 37): nothing overwritten
//! without `--force`, `-` for standard output and input, errors in a line or
//! two, quiet broken pipes, exit codes that mean one thing each, help texts.

use crate::util::{Dynoxide, dynamo_options, host_bin};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `donut-host` on the local store `store`, its caches beside it.
fn command(store: &Path) -> Command {
    let mut command = Command::new(host_bin());
    command
        .arg("--local")
        .arg(store)
        .env("XDG_CACHE_HOME", store.join("cache-home"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

fn host(store: &Path, args: &[&str]) -> Output {
    command(store).args(args).output().expect("run donut-host")
}

/// `donut-host ARGS` on `store` with `stdin` piped in.
fn host_with_stdin(store: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(store)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run donut-host");
    use std::io::Write;
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(store: &Path, args: &[&str]) -> String {
    let out = host(store, args);
    assert!(
        out.status.success(),
        "donut-host {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The exit code and standard error of a command that must fail.
fn fails(store: &Path, args: &[&str]) -> (i32, String) {
    let out = host(store, args);
    assert!(!out.status.success(), "donut-host {args:?} succeeded");
    let code = out.status.code().expect("ended by a signal");
    (code, String::from_utf8(out.stderr).unwrap())
}

/// An error a person can act on: one or two lines, no SDK dump.
fn assert_short_error(what: &str, err: &str) {
    let lines = err.trim_end().lines().count();
    assert!(
        (1..=2).contains(&lines),
        "{what}: {lines} lines of error:\n{err}"
    );
    for dump in [
        "ServiceError {",
        "SdkBody",
        "raw: Response",
        "DispatchFailure",
    ] {
        assert!(!err.contains(dump), "{what}: {dump:?} in\n{err}");
    }
    assert!(err.starts_with("error: "), "{what}: {err}");
}

/// Broke: `pull copy.db mylocal.sqlite` replaced an unrelated SQLite file
/// without a word, and `pull app.db -` wrote a file named `-`. Now an
/// existing file is refused (one line naming `--force`) and kept, and `-`
/// is standard output for pull and standard input for push.
#[test]
fn pull_refuses_to_overwrite_without_force_and_dash_is_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["create", "app.db"]);
    ok(
        &store,
        &[
            "sql",
            "app.db",
            "create table t(x); insert into t values (42)",
        ],
    );
    let mine = dir.path().join("mylocal.sqlite");
    std::fs::write(&mine, b"precious bytes").unwrap();
    let (_, err) = fails(&store, &["pull", "app.db", mine.to_str().unwrap()]);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read(&mine).unwrap(), b"precious bytes");
    ok(
        &store,
        &["pull", "app.db", mine.to_str().unwrap(), "--force"],
    );
    let conn = rusqlite::Connection::open(&mine).unwrap();
    let x: i64 = conn.query_row("select x from t", [], |r| r.get(0)).unwrap();
    assert_eq!(x, 42);
    drop(conn);
    // `-`: the file's bytes on standard output, no file named `-`.
    let out = command(&store)
        .current_dir(dir.path())
        .args(["pull", "app.db", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(&mine).unwrap());
    assert!(!dir.path().join("-").exists());
    // And back in from standard input, as another database.
    let pushed = host_with_stdin(&store, &["push", "-", "copy.db"], &out.stdout);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let copied = ok(
        &store,
        &["sql", "copy.db", "select x from t", "--format", "csv"],
    );
    assert_eq!(copied, "x\n42\n");
}

/// `donut-host ARGS` against dynoxide's `endpoint`.
fn on_dynamo(store: &Path, endpoint: &str, args: &[&str]) -> Output {
    command(store)
        .args(["--endpoint", endpoint, "--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "donutdb")
        .env("AWS_SECRET_ACCESS_KEY", "donutdb")
        .output()
        .expect("run donut-host")
}

/// The standard error of a DynamoDB command that must fail.
fn fails_on_dynamo(store: &Path, endpoint: &str, args: &[&str]) -> String {
    let out = on_dynamo(store, endpoint, args);
    assert!(!out.status.success(), "donut-host {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

/// Broke: each of these printed ~1.5 KB of the SDK's
/// `ServiceError(ServiceError { … raw: Response { …`, and OS errors were
/// said twice. Each is now a line or two naming the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_a_line_or_two_without_sdk_dumps() {
    let server = Dynoxide::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let endpoint = server.endpoint.as_str();
    let made = on_dynamo(&store, endpoint, &["--table", "donut", "create-table"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let err = fails_on_dynamo(&store, endpoint, &["--table", "donut", "create-table"]);
    assert_short_error("create-table again", &err);
    assert!(err.contains("\"donut\" already exists"), "{err}");

    let err = fails_on_dynamo(&store, endpoint, &["--table", "ab", "ls"]);
    assert_short_error("a two-letter table", &err);
    assert!(err.contains("\"ab\"") && err.contains("3 to 255"), "{err}");

    let bare = endpoint.trim_start_matches("http://");
    let err = fails_on_dynamo(&store, bare, &["--table", "donut", "ls"]);
    assert_short_error("an endpoint without a scheme", &err);
    assert!(err.contains(&format!("http://{bare}")), "{err}");

    // A port nobody listens on (taken, then freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let refused = format!("http://127.0.0.1:{port}");
    let err = fails_on_dynamo(&store, &refused, &["--table", "donut", "ls"]);
    assert_short_error("a refused connection", &err);
    assert!(err.contains("Connection refused"), "{err}");

    // A table deleted while a passed check is remembered.
    let made = on_dynamo(&store, endpoint, &["--table", "gone", "create-table"]);
    assert!(made.status.success());
    let listed = on_dynamo(&store, endpoint, &["--table", "gone", "ls"]);
    assert!(listed.status.success());
    let (client, _) =
        donut_host::backend::dynamo::client(&dynamo_options(endpoint, "gone"), vec![])
            .await
            .unwrap();
    client
        .delete_table()
        .table_name("gone")
        .send()
        .await
        .unwrap();
    let err = fails_on_dynamo(&store, endpoint, &["--table", "gone", "ls"]);
    assert_short_error("a table deleted under a remembered check", &err);
    assert!(
        err.contains("does not exist") && err.contains("create-table"),
        "{err}"
    );

    let err = fails_on_dynamo(
        &store,
        endpoint,
        &[
            "--table",
            "donut",
            "migrate",
            "--from-table",
            "no-go-table",
            "--from-file",
            "/app.db",
        ],
    );
    assert_short_error("migrate from a missing table", &err);
    assert!(
        err.contains("no-go-table") && err.contains("does not exist"),
        "{err}"
    );

    // An OS error, said once.
    let missing = dir.path().join("nowhere.sqlite");
    let (_, err) = fails(
        &dir.path().join("local"),
        &["push", missing.to_str().unwrap(), "x.db"],
    );
    assert_short_error("push of a missing file", &err);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// Runs `args` with its standard output a pipe whose reader has already
/// gone (as `| head -1` leaves it): the process must end as coreutils and
/// sqlite3 do, killed by SIGPIPE (the shell's status 141), saying nothing.
fn into_a_closed_pipe(store: &Path, args: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = command(store)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run donut-host");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(13),
        "{args:?}: {:?} {err}",
        out.status
    );
    assert!(err.is_empty(), "{args:?} said: {err}");
}

/// Broke: `versions DB --limit 1000 | head -1` and `completion zsh | head`
/// panicked with a backtrace, `sql … | head` said `Broken pipe (os error
/// 64)` (a WASI errno shown as a Linux one).
#[test]
fn broken_pipes_end_quietly_as_sigpipe() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["create", "p.db"]);
    ok(&store, &["sql", "p.db", "create table t(x)"]);
    into_a_closed_pipe(&store, &["versions", "p.db", "--limit", "1000"]);
    into_a_closed_pipe(&store, &["completion", "zsh"]);
    into_a_closed_pipe(
        &store,
        &[
            "sql",
            "p.db",
            "select value from generate_series(1, 100000)",
        ],
    );
    into_a_closed_pipe(&store, &["ls"]);
    into_a_closed_pipe(&store, &["pull", "p.db", "-"]);
    into_a_closed_pipe(&store, &["--help"]);
}

/// The exit code of `donut-host ARGS`, and its standard error.
fn code(store: &Path, args: &[&str]) -> (i32, String) {
    let out = host(store, args);
    let code = out.status.code().expect("ended by a signal");
    (code, String::from_utf8(out.stderr).unwrap())
}

/// Broke: "not found" exited 1 for `sql`, `shell`, `gc` and 2 — also a
/// usage error's code — for `versions`, `rm`, `pull`, `restore`, `fork`,
/// `debug`, with no hint to `donut-host create`. Now: 0 ok, 1 an SQL or
/// storage error, 2 usage, 3 not found (with the hint), every command.
#[test]
fn exit_codes_say_not_found_usage_and_failure_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["create", "here.db"]);
    let file = dir.path().join("out.sqlite");
    let file = file.to_str().unwrap();
    let not_found: &[&[&str]] = &[
        &["sql", "nope.db", "select 1"],
        &["shell", "nope.db"],
        &["versions", "nope.db"],
        &["rm", "nope.db"],
        &["pull", "nope.db", file],
        &["restore", "nope.db", "--at", "1"],
        &["fork", "nope.db", "new.db"],
        &["gc", "nope.db"],
        &["debug", "root", "nope.db"],
        &["debug", "manifest", "nope.db"],
        &["debug", "verify", "nope.db"],
        &["sql", "here.db@99", "select 1"],
        &["pull", "here.db@99", file],
    ];
    for args in not_found {
        let (code, err) = code(&store, args);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(err.contains("not found"), "{args:?}: {err}");
        assert_short_error(&format!("{args:?}"), &err);
        if !args[1].contains('@') {
            assert!(err.contains("donut-host create"), "{args:?}: {err}");
        }
    }
    let usage: &[&[&str]] = &[
        &["sql", "here.db"],
        &["sql", "../etc", "select 1"],
        &["create", "p.db", "--page-size", "1000"],
        &["versions"],
        &["restore", "here.db", "--at", "yesterday"],
        &["no-such-command"],
        &["create-table"],
    ];
    for args in usage {
        let (code, err) = code(&store, args);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    let failure: &[&[&str]] = &[
        &["sql", "here.db", "select * from no_such_table"],
        &["sql", "here.db", "selec 1"],
        &["create", "here.db"],
        &["fork", "here.db", "here.db"],
    ];
    for args in failure {
        let (code, err) = code(&store, args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_short_error(&format!("{args:?}"), &err);
    }
    let help = ok(&store, &["--help"]);
    for line in ["0 ", "1 ", "2 ", "3 "] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(line)),
            "exit code {line}not in --help:\n{help}"
        );
    }
}

/// Broke: the README's `run path/to/query.wasm --db app.db -- …` failed
/// `denied: this instance may not use database "demo.db"` (the example
/// opens the database its own `--db` names), and the example printed
/// "1 rows". The README's line, run as written (the component's path is
/// where the build puts it).
#[test]
fn the_readme_run_example_works_as_written() {
    let readme = include_str!("../../README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("donut-host run "))
        .expect("a run example in the README");
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    assert_eq!(words[1], "target/wasm32-wasip2/guest/query.wasm", "{line}");
    let component = crate::util::guest_path("query.wasm");
    let mut args: Vec<&str> = words.clone();
    args[1] = component.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = ok(&store, &args);
    assert!(out.contains("1 row in app.db"), "{out}");
}

/// The short help (`-h`) of a command: its argument lines, and where the
/// global options are listed.
fn help(args: &[&str]) -> String {
    let out = Command::new(host_bin())
        .args(args)
        .arg("-h")
        .output()
        .expect("run donut-host");
    assert!(out.status.success(), "{args:?} -h failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Broke: every subcommand's `--help` listed the 15 global options among
/// its own (`completion --help` offered `--two-request-commit`), `<DB>`
/// and `<SQL>` had no description, `sql --help` did not mention
/// `DB@VERSION`. Now each argument has a line, the global options stand
/// once under their own heading, and the main commands show examples.
#[test]
fn help_describes_every_argument_and_groups_global_options() {
    let commands: &[&[&str]] = &[
        &["sql"],
        &["shell"],
        &["run"],
        &["create"],
        &["push"],
        &["pull"],
        &["versions"],
        &["restore"],
        &["fork"],
        &["migrate"],
        &["rm"],
        &["gc"],
        &["completion"],
        &["serve"],
        &["debug", "root"],
        &["debug", "sector"],
        &["debug", "verify"],
        &["tenant", "add"],
    ];
    for command in commands {
        let text = help(command);
        let mut arguments = false;
        for line in text.lines() {
            match line {
                "Arguments:" => arguments = true,
                "" => arguments = false,
                _ if arguments => {
                    assert!(
                        line.split_whitespace().count() > 1,
                        "{command:?}: no description for {line:?}\n{text}"
                    );
                }
                _ => {}
            }
        }
        let heading = text
            .find("Global options:")
            .unwrap_or_else(|| panic!("{command:?}: no global options heading\n{text}"));
        let first = text.find("--two-request-commit").unwrap();
        assert!(
            first > heading,
            "{command:?}: a global option among its own\n{text}"
        );
        assert_eq!(text.matches("--two-request-commit").count(), 1, "{text}");
    }
    let sql = help(&["sql"]);
    assert!(
        sql.contains("DB@VERSION") && sql.contains("Examples:"),
        "{sql}"
    );
    for command in ["shell", "run", "serve", "migrate"] {
        let text = help(&[command]);
        assert!(text.contains("Example"), "{command}: no example\n{text}");
    }
}

/// Broke: `donut-bench --help` printed an error with a backtrace.
#[test]
fn donut_bench_help_prints_help() {
    let bench = host_bin().with_file_name("donut-bench");
    let out = Command::new(&bench)
        .arg("--help")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run donut-bench");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("usage: donut-bench"), "{text}");
}

/// Broke: `pragma donut_version` named its column after its value
/// (`{"22": "22"}`); a write to `app.db@3` said only "attempt to write a
/// readonly database". `--param` typing is as documented.
#[test]
fn past_versions_say_read_only_and_pragma_names_its_column() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&store, &["create", "p.db"]);
    ok(&store, &["sql", "p.db", "create table t(x)"]);
    let version = ok(
        &store,
        &["sql", "p.db", "pragma donut_version", "--format", "csv"],
    );
    assert_eq!(version, "donut_version\n2\n");
    let (code, err) = fails(&store, &["sql", "p.db@2", "insert into t values (1)"]);
    assert_eq!(code, 1, "{err}");
    assert_short_error("a write to a past version", &err);
    assert!(
        err.contains("p.db@2 is a past version (read-only)"),
        "{err}"
    );
    assert!(err.contains("donut-host restore p.db --at 2"), "{err}");
    let typed = ok(
        &store,
        &[
            "sql",
            "p.db",
            "select typeof(?1), ?1, typeof(?2), ?2",
            "--param",
            "007",
            "--param",
            "text:007",
            "--format",
            "csv",
        ],
    );
    assert_eq!(typed.lines().nth(1), Some("integer,7,text,007"), "{typed}");
}
