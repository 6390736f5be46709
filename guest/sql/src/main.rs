//! `donut-sql`: the stock DonutDB component behind `donut-host sql` and
//! `donut-host shell`.
//!
//! ```text
//! donut-sql exec DB SQL [--format table|csv|json] [--param VALUE]...
//! donut-sql shell DB [--format table|csv|json] [--interactive]
//! ```

mod output;

use donut_guest::rusqlite::fallible_iterator::FallibleIterator as _;
use donut_guest::rusqlite::{self, Connection, types::Value};
use output::Format;
use std::io::{BufRead, Write};
use std::process::ExitCode;

struct Args {
    command: String,
    db: String,
    sql: Option<String>,
    format: Format,
    params: Vec<Value>,
    interactive: bool,
}

const USAGE: &str = "usage: donut-sql exec DB SQL [--format table|csv|json] [--param VALUE]...\n       donut-sql shell DB [--format table|csv|json] [--interactive]";

fn parse_param(text: &str) -> Value {
    if let Some(v) = text.strip_prefix("text:") {
        return Value::Text(v.to_string());
    }
    if let Some(v) = text.strip_prefix("int:")
        && let Ok(i) = v.parse()
    {
        return Value::Integer(i);
    }
    if let Some(v) = text.strip_prefix("real:")
        && let Ok(f) = v.parse()
    {
        return Value::Real(f);
    }
    if text == "null" {
        return Value::Null;
    }
    if let Ok(i) = text.parse::<i64>() {
        return Value::Integer(i);
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
    {
        return Value::Real(f);
    }
    Value::Text(text.to_string())
}

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let command = raw.next().ok_or(USAGE)?;
    let db = raw.next().ok_or(USAGE)?;
    let mut args = Args {
        command,
        db,
        sql: None,
        format: Format::Table,
        params: Vec::new(),
        interactive: false,
    };
    while let Some(arg) = raw.next() {
        match arg.as_str() {
            "--format" => {
                let value = raw.next().ok_or("--format needs a value")?;
                args.format = Format::parse(&value).ok_or(format!("unknown format {value:?}"))?;
            }
            "--param" => args
                .params
                .push(parse_param(&raw.next().ok_or("--param needs a value")?)),
            "--interactive" => args.interactive = true,
            _ if args.sql.is_none() && args.command == "exec" => args.sql = Some(arg),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// `donut-host`'s exit code for a database or version that does not exist.
const EXIT_NOT_FOUND: u8 = 3;

/// What to do when `db` (`DB` or `DB@AT`) was not found.
fn not_found_hint(db: &str) -> String {
    match db.split_once('@') {
        Some((name, _)) => {
            format!("`donut-host versions {name}` lists the versions {name} keeps")
        }
        None => {
            format!("create it with `donut-host create {db}` (`donut-host ls` lists the databases)")
        }
    }
}

/// The error SQLite gave, with its code's name and what storage said
/// behind it; a write to a past version says how to write it instead.
fn describe(e: &rusqlite::Error) -> String {
    let text = donut_guest::describe_sqlite_error(e);
    let read_only = matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly
    );
    match (read_only, PAST_VERSION.get()) {
        (true, Some((name, at))) => format!(
            "{text}\n{name}@{at} is a past version (read-only); to make it the current version: `donut-host restore {name} --at {at}`"
        ),
        _ => text,
    }
}

/// The database and version when the command names a past one (`DB@AT`).
static PAST_VERSION: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// An I/O error's words without its errno: WASI's numbers are not the
/// host's (WASI's EPIPE is 64, Linux's 32), so `(os error 64)` misleads.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Runs every statement in `sql`, printing the rows of those that return
/// any. `params` bind to the statements that have parameters.
fn execute(
    conn: &Connection,
    sql: &str,
    params: &[Value],
    format: Format,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut ran = 0;
    while let Some(mut stmt) = batch.next().map_err(|e| describe(&e))? {
        ran += 1;
        let expected = stmt.parameter_count();
        if expected > 0 {
            if expected != params.len() {
                return Err(format!(
                    "the statement has {expected} parameters but {} were given",
                    params.len()
                ));
            }
            for (i, value) in params.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, value)
                    .map_err(|e| describe(&e))?;
            }
        }
        let mut columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
        if let (1, Some(name)) = (columns.len(), vfs_pragma(stmt.expanded_sql())) {
            // SQLite names a VFS pragma's one column after its value
            // (pragma.c); name it after the pragma, as built-in ones are.
            columns[0] = name;
        }
        let table = run_statement(conn, &mut stmt, columns.len())?;
        if !columns.is_empty() {
            output::print(out, format, &columns, &table).map_err(|e| io_text(&e))?;
        }
    }
    if ran == 0 && !params.is_empty() {
        return Err("parameters given but there is no statement".into());
    }
    Ok(())
}

/// The name of DonutDB's pragma `sql` runs (`pragma donut_version`,
/// `PRAGMA main.donut_version`), if it runs one.
fn vfs_pragma(sql: Option<String>) -> Option<String> {
    let sql = sql?.trim_start().to_ascii_lowercase();
    let rest = sql.strip_prefix("pragma")?.trim_start();
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
        .collect();
    let name = name.rsplit('.').next().unwrap_or_default().to_string();
    name.starts_with("donut_").then_some(name)
}

/// Steps `stmt` to the end and returns its rows. A statement that runs in
/// its own transaction (autocommit) and is refused with SQLITE_BUSY —
/// another writer committed first, or storage throttled: nothing of it was
/// stored — is run again after a jittered pause, as SQLite's busy handler
/// waits for a lock, until the connection's `busy_timeout` has passed.
/// Its rows are printed only once it succeeded, so a run that was refused
/// printed nothing.
fn run_statement(
    conn: &Connection,
    stmt: &mut rusqlite::Statement<'_>,
    columns: usize,
) -> Result<Vec<Vec<Value>>, String> {
    let own_transaction = conn.is_autocommit();
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        match step_all(stmt, columns) {
            Ok(table) => return Ok(table),
            Err(e) if own_transaction && is_busy(&e) && started.elapsed() < busy_timeout(conn) => {
                attempt += 1;
                std::thread::sleep(donut_guest::retry_pause(attempt));
            }
            Err(e) => return Err(describe(&e)),
        }
    }
}

fn step_all(
    stmt: &mut rusqlite::Statement<'_>,
    columns: usize,
) -> rusqlite::Result<Vec<Vec<Value>>> {
    let mut rows = stmt.raw_query();
    let mut table: Vec<Vec<Value>> = Vec::new();
    while let Some(row) = rows.next()? {
        let values = (0..columns)
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()?;
        table.push(values);
    }
    Ok(table)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy)
}

/// The connection's `PRAGMA busy_timeout` (0 if it cannot be read).
fn busy_timeout(conn: &Connection) -> std::time::Duration {
    let ms: i64 = conn
        .pragma_query_value(None, "busy_timeout", |row| row.get(0))
        .unwrap_or(0);
    std::time::Duration::from_millis(ms.max(0) as u64)
}

fn is_complete(sql: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(sql) else {
        return false;
    };
    // SAFETY: a NUL-terminated string; sqlite3_complete only reads it.
    unsafe { rusqlite::ffi::sqlite3_complete(c.as_ptr()) != 0 }
}

const SHELL_HELP: &str = ".help            this text
.tables          list tables
.schema [TABLE]  show CREATE statements
.mode FORMAT     table, csv or json
.quit            leave";

fn dot_command(
    conn: &Connection,
    line: &str,
    format: &mut Format,
    out: &mut impl Write,
) -> Result<bool, String> {
    let mut words = line.split_whitespace();
    match words.next().unwrap_or("") {
        ".quit" | ".exit" => return Ok(false),
        ".help" => writeln!(out, "{SHELL_HELP}").map_err(|e| io_text(&e))?,
        ".tables" => execute(
            conn,
            "select name from sqlite_schema where type in ('table','view') and name not like 'sqlite_%' order by name",
            &[],
            *format,
            out,
        )?,
        ".schema" => {
            let (sql, params) = match words.next() {
                Some(table) => (
                    "select sql from sqlite_schema where tbl_name = ?1 and sql is not null",
                    vec![Value::Text(table.to_string())],
                ),
                None => (
                    "select sql from sqlite_schema where sql is not null",
                    vec![],
                ),
            };
            execute(conn, sql, &params, Format::Csv, out)?
        }
        ".mode" => {
            let name = words.next().ok_or(".mode needs table, csv or json")?;
            *format = Format::parse(name).ok_or(format!("unknown format {name:?}"))?;
        }
        other => return Err(format!("unknown command {other:?}; try .help")),
    }
    Ok(true)
}

fn shell(conn: &Connection, mut format: Format, interactive: bool) -> ExitCode {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut buffer = String::new();
    let mut failed = false;
    loop {
        if interactive {
            let prompt = if buffer.is_empty() {
                "donut> "
            } else {
                "   ...> "
            };
            let _ = write!(out, "{prompt}");
            let _ = out.flush();
        }
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading stdin: {}", io_text(&e));
                return ExitCode::FAILURE;
            }
        }
        if buffer.is_empty() && line.trim_start().starts_with('.') {
            match dot_command(conn, line.trim(), &mut format, &mut out) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    eprintln!("error: {e}");
                    failed = true;
                    continue;
                }
            }
        }
        buffer.push_str(&line);
        if is_complete(&buffer) {
            if let Err(e) = execute(conn, &buffer, &[], format, &mut out) {
                eprintln!("error: {e}");
                failed = true;
            }
            buffer.clear();
        }
    }
    if !buffer.trim().is_empty()
        && let Err(e) = execute(conn, &buffer, &[], format, &mut out)
    {
        eprintln!("error: {e}");
        failed = true;
    }
    let _ = out.flush();
    if failed && !interactive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some((name, at)) = args.db.split_once('@') {
        let _ = PAST_VERSION.set((name.to_string(), at.to_string()));
    }
    let conn = match donut_guest::open(&args.db) {
        Ok(conn) => conn,
        Err(e) if e.is_not_found() => {
            eprintln!("error: {e}");
            eprintln!("hint: {}", not_found_hint(&args.db));
            return ExitCode::from(EXIT_NOT_FOUND);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command.as_str() {
        "exec" => {
            let Some(sql) = &args.sql else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let mut out = std::io::stdout().lock();
            match execute(&conn, sql, &args.params, args.format, &mut out) {
                Ok(()) => {
                    let _ = out.flush();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let _ = out.flush();
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "shell" => shell(&conn, args.format, args.interactive),
        other => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
