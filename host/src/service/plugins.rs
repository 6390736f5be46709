//! Tenants' plugins: components kept on disk, one directory per tenant
//! (`<plugins_dir>/<tenant>/<plugin>.wasm`), compiled once per content
//! and tenant (each tenant's compiled code apart: an upload's timing says
//! nothing about other tenants' uploads). Compiling is charged to the
//! tenant: an upload compiles one component at a time per tenant, within
//! a budget of compile time per period.

use super::config::{check_simple_name, to_hex};
use crate::runtime::{LoadError, Program, Runtime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A plugin as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    /// Hex SHA-256 of the component's bytes.
    pub sha256: String,
    pub bytes: u64,
}

/// A plugin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{0}")]
    IllegalName(String),
    #[error("no plugin {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("plugin store: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "this tenant used its compile time of {used:?} per {period:?}; it renews in {renews_in:?}"
    )]
    CompileBudget {
        used: Duration,
        period: Duration,
        renews_in: Duration,
    },
    #[error("this tenant is compiling another plugin; upload one at a time")]
    CompileBusy,
}

/// The program key of each loaded (tenant, plugin): the compiled code
/// itself lives in the runtime's bounded cache.
type Loaded = HashMap<(String, String), donut_format::Hash>;

/// Compile time one tenant may use per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompileBudget {
    pub time_max: Duration,
    pub period: Duration,
}

/// One tenant's compile time: this period's and in all.
#[derive(Debug, Default)]
struct CompileLedger {
    period_start: Option<Instant>,
    used: Duration,
    total: Duration,
    compiling: bool,
}

/// The plugins of every tenant of a service.
pub struct Plugins {
    dir: PathBuf,
    loaded: Mutex<Loaded>,
    budget: CompileBudget,
    compiles: Mutex<HashMap<String, CompileLedger>>,
}

/// Marks a tenant's compile done when dropped.
struct Compiling<'a> {
    plugins: &'a Plugins,
    tenant: &'a str,
}

impl Drop for Compiling<'_> {
    fn drop(&mut self) {
        if let Some(ledger) = self.plugins.compiles().get_mut(self.tenant) {
            ledger.compiling = false;
        }
    }
}

impl Plugins {
    pub fn open(dir: &Path, budget: CompileBudget) -> Result<Plugins, std::io::Error> {
        std::fs::create_dir_all(dir)?;
        Ok(Plugins {
            dir: dir.to_owned(),
            loaded: Mutex::default(),
            budget,
            compiles: Mutex::default(),
        })
    }

    fn compiles(&self) -> std::sync::MutexGuard<'_, HashMap<String, CompileLedger>> {
        self.compiles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an upload's compile for `tenant`: refused while another of
    /// its uploads compiles or when its compile time this period is used.
    fn start_compile<'a>(&'a self, tenant: &'a str) -> Result<Compiling<'a>, PluginError> {
        let mut compiles = self.compiles();
        let ledger = compiles.entry(tenant.to_string()).or_default();
        let now = Instant::now();
        let start = *ledger.period_start.get_or_insert(now);
        if now.duration_since(start) >= self.budget.period {
            ledger.period_start = Some(now);
            ledger.used = Duration::ZERO;
        }
        if ledger.compiling {
            return Err(PluginError::CompileBusy);
        }
        if ledger.used >= self.budget.time_max {
            let start = ledger.period_start.unwrap_or(now);
            return Err(PluginError::CompileBudget {
                used: ledger.used,
                period: self.budget.period,
                renews_in: (start + self.budget.period).saturating_duration_since(now),
            });
        }
        ledger.compiling = true;
        Ok(Compiling {
            plugins: self,
            tenant,
        })
    }

    /// Charges `tenant` for the compile `program` took, if it was compiled.
    fn charge_compile(&self, tenant: &str, program: &Program) {
        if let Some(took) = program.compile_time {
            let mut compiles = self.compiles();
            let ledger = compiles.entry(tenant.to_string()).or_default();
            ledger.used += took;
            ledger.total += took;
        }
    }

    /// Each tenant's compile time in all, in name order.
    pub fn compile_totals(&self) -> Vec<(String, Duration)> {
        let mut totals: Vec<(String, Duration)> = self
            .compiles()
            .iter()
            .map(|(tenant, ledger)| (tenant.clone(), ledger.total))
            .collect();
        totals.sort();
        totals
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, tenant: &str, name: &str) -> Result<PathBuf, PluginError> {
        check_simple_name(name).map_err(PluginError::IllegalName)?;
        // Tenant names are checked by the configuration; checked again
        // here because they become a directory.
        check_simple_name(tenant).map_err(PluginError::IllegalName)?;
        Ok(self.dir.join(tenant).join(format!("{name}.wasm")))
    }

    /// Validates and compiles `bytes`, then keeps them as `tenant`'s
    /// plugin `name` (replacing one of that name). Blocking: compiling
    /// takes CPU time.
    pub fn put(
        &self,
        runtime: &Runtime,
        tenant: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<PluginInfo, PluginError> {
        let path = self.path(tenant, name)?;
        let program = {
            let _compiling = self.start_compile(tenant)?;
            runtime.load_shared(tenant, bytes, name)?
        };
        self.charge_compile(tenant, &program);
        let sha256 = to_hex(&sha256(bytes));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut temp = tempfile::Builder::new()
            .prefix(".upload-")
            .tempfile_in(path.parent().unwrap_or(&self.dir))?;
        std::io::Write::write_all(temp.as_file_mut(), bytes)?;
        temp.persist(&path).map_err(|e| e.error)?;
        self.loaded()
            .insert((tenant.to_string(), name.to_string()), *program.key());
        Ok(PluginInfo {
            name: name.to_string(),
            sha256,
            bytes: bytes.len() as u64,
        })
    }

    /// `tenant`'s plugin `name` if its compiled code is in memory: no
    /// disk, no blocking (the common case of an invoke).
    pub fn cached(&self, runtime: &Runtime, tenant: &str, name: &str) -> Option<Arc<Program>> {
        let key = (tenant.to_string(), name.to_string());
        let program_key = *self.loaded().get(&key)?;
        runtime.cached_program(&program_key, name)
    }

    /// `tenant`'s plugin `name`, loaded from disk on first use (or after
    /// its compiled code left memory). Blocking.
    pub fn get(
        &self,
        runtime: &Runtime,
        tenant: &str,
        name: &str,
    ) -> Result<Arc<Program>, PluginError> {
        let path = self.path(tenant, name)?;
        if let Some(program) = self.cached(runtime, tenant, name) {
            return Ok(program);
        }
        let key = (tenant.to_string(), name.to_string());
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PluginError::NotFound(name.to_string()));
            }
            Err(e) => return Err(e.into()),
        };
        let program = runtime.load_shared(tenant, &bytes, name)?;
        self.charge_compile(tenant, &program);
        self.loaded().insert(key, *program.key());
        Ok(program)
    }

    /// `tenant`'s plugins, in name order.
    pub fn list(&self, tenant: &str) -> Result<Vec<PluginInfo>, PluginError> {
        check_simple_name(tenant).map_err(PluginError::IllegalName)?;
        let dir = self.dir.join(tenant);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut plugins = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wasm"))
            else {
                continue;
            };
            if check_simple_name(name).is_err() {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            plugins.push(PluginInfo {
                name: name.to_string(),
                sha256: to_hex(&sha256(&bytes)),
                bytes: bytes.len() as u64,
            });
        }
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(plugins)
    }

    /// Removes `tenant`'s plugin `name`.
    pub fn remove(&self, tenant: &str, name: &str) -> Result<(), PluginError> {
        let path = self.path(tenant, name)?;
        self.loaded()
            .remove(&(tenant.to_string(), name.to_string()));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PluginError::NotFound(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
