//! Tenants' plugins: components kept on disk, one directory per tenant
//! (`<plugins_dir>/<tenant>/<plugin>.wasm`), loaded once per content.

use super::config::{check_simple_name, to_hex};
use crate::runtime::{LoadError, Program, Runtime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
}

/// Programs by (tenant, plugin), with the hash of their bytes.
type Loaded = HashMap<(String, String), (String, Arc<Program>)>;

/// The plugins of every tenant of a service.
pub struct Plugins {
    dir: PathBuf,
    loaded: Mutex<Loaded>,
}

impl Plugins {
    pub fn open(dir: &Path) -> Result<Plugins, std::io::Error> {
        std::fs::create_dir_all(dir)?;
        Ok(Plugins {
            dir: dir.to_owned(),
            loaded: Mutex::default(),
        })
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
        let program = runtime.load_shared(bytes, name)?;
        let sha256 = to_hex(&sha256(bytes));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = path.with_extension("wasm.tmp");
        std::fs::write(&temp, bytes)?;
        std::fs::rename(&temp, &path)?;
        self.loaded().insert(
            (tenant.to_string(), name.to_string()),
            (sha256.clone(), program),
        );
        Ok(PluginInfo {
            name: name.to_string(),
            sha256,
            bytes: bytes.len() as u64,
        })
    }

    /// `tenant`'s plugin `name` if it is loaded already: no disk, no
    /// blocking (the common case of an invoke).
    pub fn cached(&self, tenant: &str, name: &str) -> Option<Arc<Program>> {
        let key = (tenant.to_string(), name.to_string());
        self.loaded().get(&key).map(|(_, program)| program.clone())
    }

    /// `tenant`'s plugin `name`, loaded from disk on first use. Blocking.
    pub fn get(
        &self,
        runtime: &Runtime,
        tenant: &str,
        name: &str,
    ) -> Result<Arc<Program>, PluginError> {
        let path = self.path(tenant, name)?;
        if let Some(program) = self.cached(tenant, name) {
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
        let program = runtime.load_shared(&bytes, name)?;
        let sha256 = to_hex(&sha256(&bytes));
        self.loaded().insert(key, (sha256, program.clone()));
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
