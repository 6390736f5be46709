//! One file per `donut-host` command, each one entry point over library
//! calls; [`Env`] is what a command runs with (the store, the runtime,
//! the counters).

pub mod completion;
pub mod create;
pub mod create_table;
pub mod debug;
pub mod fork;
pub mod gc;
pub mod ls;
pub mod migrate;
pub mod pull;
pub mod push;
pub mod restore;
pub mod rm;
pub mod run;
pub mod serve;
pub mod shell;
pub mod sql;
pub mod tenant;
pub mod versions;

use anyhow::Result;
use clap::ValueEnum;
use donut_format::{DbName, DbRef, DbRefError};
use donut_host::backend::Backend;
use donut_host::backend::dynamo::DynamoBackend;
use donut_host::stats::StorageStats;
use donut_host::storage::SectorCache;
use donut_host::{Call, Grant, Runtime, StorageCtx};
use std::sync::Arc;

/// How `sql` and `shell` print rows.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// What every command runs with.
pub struct Env {
    pub runtime: Runtime,
    pub backend: Arc<dyn Backend>,
    pub dynamo: Option<DynamoBackend>,
    pub stats: Arc<StorageStats>,
    pub memory_limit_bytes: usize,
    pub time_limit: Option<std::time::Duration>,
    /// Where compiled components are cached (`None`: --no-cache).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Sectors in memory and, unless --no-sector-cache, on disk.
    pub sector_cache: Arc<SectorCache>,
    /// `--change-log FILE`: where components append a JSON line per VFS call.
    pub change_log: Option<std::path::PathBuf>,
}

impl Env {
    pub fn storage(&self, grant: Grant) -> StorageCtx {
        StorageCtx::new(self.backend.clone(), grant)
            .with_stats(self.stats.clone())
            .with_cache(self.sector_cache.clone())
    }

    /// Runs `program` with `args` (program name first) under `grant`;
    /// returns its exit code.
    pub async fn run(
        &self,
        program: &donut_host::Program,
        args: Vec<String>,
        grant: Grant,
    ) -> Result<i32> {
        let mut call = Call::new(args, self.storage(grant));
        call.memory_limit_bytes = self.memory_limit_bytes;
        call.time_limit = self.time_limit;
        call.change_log = self.change_log.clone();
        let outcome = self.runtime.run(program, call).await?;
        Ok(outcome.exit_code)
    }
}

/// A usage error (exit code 2): `message` says what is wrong.
pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(crate::exit::UsageError(message.into()))
}

/// A database name from the command line (a usage error if illegal).
pub fn db_name(name: &str) -> Result<DbName> {
    DbName::new(name).map_err(|e| usage(format!("illegal database name {name:?}: {e}")))
}

/// `DB` or `DB@VERSION` / `DB@TIME` (a past version, read-only).
pub fn db_ref(text: &str) -> Result<DbRef> {
    DbRef::parse(text).map_err(|e| match e {
        DbRefError::Name(e) => usage(format!("illegal database name {text:?}: {e}")),
        DbRefError::At(_) => usage(format!("illegal version in {text:?}: {e}")),
    })
}

/// The exit code of the stock component's run on `db`: WASI lets a
/// component exit only 0 or 1, so a failure whose database (or version)
/// does not exist — the component said so, with a hint — becomes
/// "not found" (3). Costs a read only on failure.
pub async fn stock_exit_code(env: &Env, db: &DbRef, code: i32) -> i32 {
    use donut_host::storage::{StorageError, Stored, read_root_at, read_stored};
    if code != crate::exit::FAILURE {
        return code;
    }
    let missing = match db.at {
        None => matches!(
            read_stored(&*env.backend, &db.name).await,
            Ok(Stored::Absent | Stored::Removed(_))
        ),
        Some(at) => matches!(
            read_root_at(&*env.backend, &db.name, at).await,
            Err(StorageError::NotFound(_))
        ),
    };
    match missing {
        true => crate::exit::NOT_FOUND,
        false => code,
    }
}

/// What an instance reading `db` may touch: that database, read-only if
/// it names a past version.
pub fn grant_for(db: &DbRef) -> Grant {
    let grant = Grant::only([db.name.clone()], false);
    match db.at {
        Some(_) => grant.read_only(),
        None => grant,
    }
}

/// A progress bar for `push`/`pull` (bytes, rate, time left) on a
/// terminal; nothing when stderr is not one.
pub fn progress_printer(verb: &'static str, name: String) -> impl FnMut(u64, u64) {
    // indicatif draws only on a terminal (stderr); piped, it prints nothing.
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|style| style.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_message(format!("{verb} {name}"));
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    }
}
