//! The stock session component: SQLite connections on DonutDB, exported as
//! `donut:storage/session` so that a host can serve SQL over the network
//! (the libSQL protocol of `donut-host serve`) while SQLite and the VFS
//! run here, in the tenant's sandbox.

#[allow(clippy::all, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        world: "session-plugin",
        path: "../../wit",
        with: {
            "donut:storage/types@0.1.0": donut_guest::bindings::donut::storage::types,
            "donut:storage/storage@0.1.0": donut_guest::bindings::donut::storage::storage,
        },
    });

    use super::Component;
    export!(Component);
}

use bindings::exports::donut::storage::session::{
    Column, Description, Guest, GuestConnection, SqlError, Statement, StatementResult, Value,
};
use donut_guest::rusqlite::{self, Connection, types::ValueRef};
use std::cell::RefCell;

/// Page size of a database this component creates.
const PAGE_SIZE_NEW: u32 = 4096;

struct Component;

impl Guest for Component {
    type Connection = Session;
}

/// One open connection.
struct Session {
    conn: RefCell<Connection>,
}

fn sql_error(e: &rusqlite::Error) -> SqlError {
    let extended_code = match e {
        rusqlite::Error::SqliteFailure(failure, _) => failure.extended_code,
        _ => rusqlite::ffi::SQLITE_ERROR,
    };
    let code = donut_guest::error_code_name(extended_code)
        .map(str::to_string)
        .unwrap_or_else(|| primary_code_name(extended_code));
    SqlError {
        message: donut_guest::describe_sqlite_error(e),
        code,
        extended_code,
    }
}

/// Opening failed: storage refused (the grant, a missing database it may
/// not create), the database is corrupt, or SQLite failed.
fn open_error(e: donut_guest::Error) -> SqlError {
    use rusqlite::ffi;
    let extended_code = match &e {
        donut_guest::Error::Sqlite { source, .. } => {
            return SqlError {
                message: e.to_string(),
                ..sql_error(source)
            };
        }
        donut_guest::Error::Corrupt { .. } => ffi::SQLITE_CORRUPT,
        donut_guest::Error::Storage { detail, .. } if detail.starts_with("denied") => {
            ffi::SQLITE_PERM
        }
        donut_guest::Error::Storage { .. } => ffi::SQLITE_CANTOPEN,
    };
    SqlError {
        message: e.to_string(),
        code: primary_code_name(extended_code),
        extended_code,
    }
}

/// The primary code's name for an extended code SQLite does not define
/// (one from a newer SQLite), with the number beside it.
fn primary_code_name(extended_code: i32) -> String {
    donut_guest::error_code_name(extended_code & 0xff)
        .map_or_else(|| format!("SQLITE_CODE_{extended_code}"), str::to_string)
}

fn to_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn to_sql(value: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        Value::Null => V::Null,
        Value::Integer(i) => V::Integer(*i),
        Value::Real(f) => V::Real(*f),
        Value::Text(t) => V::Text(t.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn columns(stmt: &rusqlite::Statement<'_>) -> Vec<Column> {
    stmt.columns()
        .map(|c| Column {
            name: c.name().to_string(),
            decltype: c.decl_type().map(str::to_string),
        })
        .collect()
}

/// The index of named parameter `name`, with or without its prefix.
fn named_index(stmt: &rusqlite::Statement<'_>, name: &str) -> Result<usize, rusqlite::Error> {
    let spellings: Vec<String> = if name.starts_with([':', '@', '$']) {
        vec![name.to_string()]
    } else {
        [':', '@', '$']
            .iter()
            .map(|p| format!("{p}{name}"))
            .collect()
    };
    for spelling in &spellings {
        if let Some(index) = stmt.parameter_index(spelling)? {
            return Ok(index);
        }
    }
    Err(rusqlite::Error::InvalidParameterName(name.to_string()))
}

/// Binds every argument; a parameter left without one is an error (the
/// protocol's rule), not the NULL SQLite would bind.
fn bind(stmt: &mut rusqlite::Statement<'_>, statement: &Statement) -> Result<(), rusqlite::Error> {
    let count = stmt.parameter_count();
    if statement.args.len() > count {
        return Err(rusqlite::Error::InvalidParameterCount(
            statement.args.len(),
            count,
        ));
    }
    let mut bound = vec![false; count + 1];
    for (i, value) in statement.args.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, to_sql(value))?;
        bound[i + 1] = true;
    }
    for (name, value) in &statement.named_args {
        let index = named_index(stmt, name)?;
        stmt.raw_bind_parameter(index, to_sql(value))?;
        bound[index] = true;
    }
    if let Some(index) = (1..=count).find(|&i| !bound[i]) {
        let name = stmt
            .parameter_name(index)
            .map_or_else(|| format!("?{index}"), str::to_string);
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_RANGE),
            Some(format!(
                "no value for parameter {name} (the statement has {count}, {} given)",
                statement.args.len() + statement.named_args.len()
            )),
        ));
    }
    Ok(())
}

fn execute(conn: &Connection, statement: &Statement) -> Result<StatementResult, rusqlite::Error> {
    let mut stmt = conn.prepare(&statement.sql)?;
    bind(&mut stmt, statement)?;
    let cols = columns(&stmt);
    let width = cols.len();
    let mut out = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        if statement.want_rows {
            let values = (0..width)
                .map(|i| row.get_ref(i).map(to_value))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(values);
        }
    }
    drop(rows);
    let rowid = conn.last_insert_rowid();
    Ok(StatementResult {
        cols,
        rows: out,
        affected_row_count: conn.changes(),
        last_insert_rowid: (rowid != 0).then_some(rowid),
    })
}

impl GuestConnection for Session {
    fn open(
        name: String,
    ) -> Result<bindings::exports::donut::storage::session::Connection, SqlError> {
        let conn = donut_guest::open_or_create(&name, PAGE_SIZE_NEW).map_err(open_error)?;
        // The root read at open stands in for the first transaction's for
        // a moment (FRESH_ROOT_MS in the VFS): right for the statements of
        // the request that opened the connection, stale for later ones. The
        // host ends it when that request is answered (`PRAGMA
        // donut_open_root_fresh = 0`, `Session::settle`).
        Ok(bindings::exports::donut::storage::session::Connection::new(
            Session {
                conn: RefCell::new(conn),
            },
        ))
    }

    fn execute(&self, statement: Statement) -> Result<StatementResult, SqlError> {
        let conn = self.conn.borrow();
        execute(&conn, &statement).map_err(|e| sql_error(&e))
    }

    fn execute_script(&self, sql: String) -> Result<(), SqlError> {
        self.conn
            .borrow()
            .execute_batch(&sql)
            .map_err(|e| sql_error(&e))
    }

    fn describe(&self, sql: String) -> Result<Description, SqlError> {
        let conn = self.conn.borrow();
        let stmt = conn.prepare(&sql).map_err(|e| sql_error(&e))?;
        let params = (1..=stmt.parameter_count())
            .map(|i| stmt.parameter_name(i).map(str::to_string))
            .collect();
        Ok(Description {
            params,
            cols: columns(&stmt),
            is_explain: stmt.is_explain() != 0,
            is_readonly: stmt.readonly(),
        })
    }

    fn is_autocommit(&self) -> bool {
        self.conn.borrow().is_autocommit()
    }
}
