//! What DonutDB's tests and benchmarks share, so a new test is a line or
//! two: where the built artifacts are ([`guest_path`], [`host_bin`]), a
//! DynamoDB-compatible server on loopback ([`Dynoxide`]), the [`Harness`]
//! that runs components against one backend, and SQL that fills tables
//! ([`fill`]), and `donut-host serve` with a client ([`Served`], [`Api`]).

mod dynoxide;
mod harness;
mod service;

pub use dynoxide::{Dynoxide, dynamo_options};
pub use harness::{Components, Harness, Run, components, csv_exec, stderr, stdout};
pub use service::{Api, Reply, Served};

use std::path::{Path, PathBuf};

/// The built guest component `file` (`just guest` builds them).
pub fn guest_path(file: &str) -> PathBuf {
    let path = guest_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: build the guests first (`just guest`)",
        path.display()
    );
    path
}

/// Where `just guest` puts the components.
pub fn guest_dir() -> &'static Path {
    Path::new(env!("DONUT_GUEST_DIR"))
}

/// The compiled-component cache the tests share.
pub fn component_cache_dir() -> PathBuf {
    PathBuf::from(env!("DONUT_TEST_CACHE"))
}

/// The release `donut-host` binary (`just host` builds it).
pub fn host_bin() -> PathBuf {
    let path = PathBuf::from(env!("DONUT_HOST_BIN"));
    assert!(
        path.exists(),
        "{} is missing: build the host first (`just host`)",
        path.display()
    );
    path
}

/// The SQLite loadable extension (`just ext` builds it).
pub fn ext_lib() -> PathBuf {
    let path = PathBuf::from(env!("DONUT_EXT_LIB"));
    assert!(
        path.exists(),
        "{} is missing: build the extension first (`just ext`)",
        path.display()
    );
    path
}

/// One statement that inserts `rows` rows into `target` (a table, with
/// columns if wanted), each `select` evaluated for `i` = 1..=`rows`:
/// `fill("t(v)", 300, "randomblob(200)")`.
pub fn fill(target: &str, rows: u64, select: &str) -> String {
    format!(
        "with recursive c(i) as (select 1 union all select i + 1 from c where i < {rows}) \
         insert into {target} select {select} from c;"
    )
}
