//! `--extension`: the engine script (`engine_script`) through the loadable
//! extension in this process's own SQLite — native rusqlite, bundled
//! SQLite, no WebAssembly — on the extension's in-memory store, against
//! the same script on SQLite's in-memory VFS (memdb). What the VFS core
//! and the native port cost beside SQLite itself.

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

/// Best of this many runs of each.
const RUNS: usize = 3;

pub struct ExtensionEngine {
    pub native_ms: f64,
    pub extension_ms: f64,
    pub rows: u64,
}

impl std::fmt::Display for ExtensionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "engine through the loadable extension (same SQL script, {} rows stepped, best of {RUNS}):",
            self.rows
        )?;
        writeln!(
            f,
            "  native rusqlite, SQLite's in-memory VFS (memdb):       {:.1} ms",
            self.native_ms
        )?;
        write!(
            f,
            "  native rusqlite, libdonutdb.so on the in-memory store: {:.1} ms ({:.2}x)",
            self.extension_ms,
            self.extension_ms / self.native_ms
        )
    }
}

pub fn run(script: &str) -> Result<ExtensionEngine> {
    let lib = donut_testkit::ext_lib();
    // SAFETY: set before the extension loads, which reads it once; nothing
    // else in this process reads the environment meanwhile.
    unsafe { std::env::set_var("DONUT_LOCAL", ":memory:") };
    let boot = Connection::open_in_memory()?;
    // SAFETY: our own extension, built from this repository.
    unsafe {
        boot.load_extension_enable()?;
        boot.load_extension(&lib, None::<&str>)
            .with_context(|| format!("loading {}", lib.display()))?;
    }
    drop(boot);
    let (mut native_ms, mut extension_ms, mut rows) = (f64::MAX, f64::MAX, 0);
    for run in 0..RUNS {
        let (ms, native_rows) = crate::run_native(script)?;
        native_ms = native_ms.min(ms);
        let conn = Connection::open_with_flags(
            format!("file:engine{run}.db?vfs=donutdb"),
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        let (ms, extension_rows) = crate::run_script(&conn, script)?;
        anyhow::ensure!(
            extension_rows == native_rows,
            "the extension stepped {extension_rows} rows, native SQLite {native_rows}"
        );
        extension_ms = extension_ms.min(ms);
        rows = native_rows;
    }
    Ok(ExtensionEngine {
        native_ms,
        extension_ms,
        rows,
    })
}
