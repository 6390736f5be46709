//! The change log: one JSON line per VFS call SQLite makes on a file of
//! this VFS (the Go DonutDB's `WithChangeLogWriter`, for the same use:
//! seeing what SQLite asked of storage and what it got). Off unless a sink
//! is set ([`crate::Vfs::set_change_log`]); off, a call pays one check.
//!
//! A line: `{"ts_ms":…,"action":"read","file":"app.db","offset":0,
//! "length":4096,"result":"SQLITE_OK","duration_us":12,"version":5}` —
//! `offset`/`length` where the call has them (a truncate's `length` is the
//! new size; a lock's is the level asked for), `version` the root version
//! a main database file reads after the call (absent for journals and
//! temporary files).

use std::fmt::Write as _;
use std::io::Write;
use std::time::Instant;

/// What one logged call was.
pub(crate) struct Call<'a> {
    pub action: &'static str,
    pub file: &'a str,
    pub offset: Option<u64>,
    pub length: Option<u64>,
    pub started: Instant,
}

/// The JSON line of `call`, which returned `code`.
pub(crate) fn line(call: &Call<'_>, code: i32, version: Option<u64>) -> String {
    let mut out = String::with_capacity(160);
    let _ = write!(
        out,
        "{{\"ts_ms\":{},\"action\":\"{}\",\"file\":",
        crate::main_file::now_ms(),
        call.action
    );
    json_string(&mut out, call.file);
    if let Some(offset) = call.offset {
        let _ = write!(out, ",\"offset\":{offset}");
    }
    if let Some(length) = call.length {
        let _ = write!(out, ",\"length\":{length}");
    }
    let result = match code {
        0 => "SQLITE_OK",
        code => crate::error_code_name(code).unwrap_or("SQLITE_UNKNOWN"),
    };
    let _ = write!(
        out,
        ",\"result\":\"{result}\",\"duration_us\":{}",
        call.started.elapsed().as_micros()
    );
    if let Some(version) = version {
        let _ = write!(out, ",\"version\":{version}");
    }
    out.push_str("}\n");
    out
}

fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Where the lines go.
pub(crate) type Sink = Box<dyn Write>;

/// Writes `line` to `sink`; a sink that fails is dropped (the log is a
/// diagnostic: it never fails a call), with one note on stderr.
pub(crate) fn write(sink: &mut Option<Sink>, line: &str) {
    if let Some(out) = sink
        && let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush())
    {
        eprintln!("donutdb: the change log stopped: {e}");
        *sink = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_json_with_what_the_call_had() {
        let call = Call {
            action: "write",
            file: "a\"b.db",
            offset: Some(4096),
            length: Some(4096),
            started: Instant::now(),
        };
        let line = line(&call, 0, Some(7));
        assert!(line.ends_with("}\n"));
        assert!(line.contains("\"action\":\"write\""), "{line}");
        assert!(line.contains("\"file\":\"a\\\"b.db\""), "{line}");
        assert!(line.contains("\"offset\":4096,\"length\":4096"), "{line}");
        assert!(line.contains("\"result\":\"SQLITE_OK\""), "{line}");
        assert!(line.contains("\"version\":7}"), "{line}");
        let bare = Call {
            action: "sync",
            file: "x",
            offset: None,
            length: None,
            started: Instant::now(),
        };
        assert!(!super::line(&bare, 10, None).contains("offset"));
    }
}
