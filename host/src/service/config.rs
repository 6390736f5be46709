//! The service's configuration file (TOML): the service's own settings and
//! its tenants, each with a grant, limits and the SHA-256 of its bearer
//! token (never the token itself).
//!
//! ```toml
//! [service]
//! plugins_dir = "plugins"        # relative to this file
//!
//! [[tenant]]
//! name = "acme"
//! token_sha256 = "9f86d0…"
//! prefixes = ["acme-"]
//! memory_mb = 128
//! time_limit_secs = 10
//! budget = { read_units = 5000.0, write_units = 1000.0, period_secs = 60 }
//! ```

use crate::runtime::COMPONENT_BYTES_MAX;
use crate::storage::{CallQuota, Grant};
use crate::tenant::{AddTenantError, CapacityBudget, Tenant, TenantLimits, check_new_tenant};
use donut_format::DbName;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("{path}: tenant {tenant:?}: {detail}")]
    Tenant {
        path: PathBuf,
        tenant: String,
        detail: String,
    },
    #[error("{path}: {error}")]
    Grants {
        path: PathBuf,
        error: AddTenantError,
    },
    #[error("{path}: [service] {detail}")]
    Service { path: PathBuf, detail: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub service: ServiceSection,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantSection>,
}

/// `[service]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSection {
    /// Where uploaded plugins are kept, one directory per tenant; relative
    /// paths are relative to the configuration file.
    pub plugins_dir: PathBuf,
    /// Largest invoke request body (JSON), in bytes.
    pub request_bytes_max: usize,
    /// Largest plugin upload, in bytes.
    pub plugin_bytes_max: usize,
    /// How long in-flight calls may run on after SIGTERM/SIGINT.
    pub shutdown_grace_secs: f64,
    /// Component instances alive at once, host-wide (the pooling
    /// allocator's slots).
    pub instances_max: u32,
    /// The largest `memory_mb` a tenant may have (the size of one slot).
    pub instance_memory_mb_max: usize,
    /// A libSQL stream idle this long is closed (its instance freed).
    pub stream_idle_secs: f64,
    /// libSQL streams one tenant may hold open at once.
    pub streams_per_tenant_max: usize,
    /// Garbage collection runs in the background every this long (0:
    /// never; `donut-host gc` can run instead).
    pub gc_every_secs: f64,
    /// Every version committed within this long is kept (readable as
    /// `NAME@VERSION`, restorable); must exceed the longest transaction.
    pub gc_retain_secs: f64,
    /// Estimated write units one round may spend deleting (1 per KB of
    /// each deleted item); the next round goes on.
    pub gc_write_units_max: u64,
    /// A connection whose request head (the first, or the next one on a
    /// kept-alive connection: this is the idle timeout too) has not
    /// arrived within this long is closed.
    pub header_timeout_secs: f64,
    /// A request body that has not arrived whole within this long fails.
    pub body_timeout_secs: f64,
    /// Connections served at once; more wait in the listen backlog.
    pub connections_max: usize,
    /// Hex SHA-256 of the operator's bearer token: `/metrics` and
    /// `POST /v1/admin/reload` answer only to it (without one, they
    /// answer 403 to everyone). `donut-host tenant token` draws one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator_token_sha256: Option<String>,
    /// Compile time (uploads) one tenant may use per `compile_period_secs`.
    pub compile_secs_max: f64,
    pub compile_period_secs: f64,
    /// Compiled code kept in memory, host-wide (least recently used out).
    pub compiled_memory_mb_max: usize,
    /// Compiled code kept in the cache directory (least recently used out).
    pub compiled_disk_mb_max: u64,
}

impl Default for ServiceSection {
    fn default() -> Self {
        ServiceSection {
            plugins_dir: PathBuf::from("plugins"),
            request_bytes_max: 1 << 20,
            plugin_bytes_max: COMPONENT_BYTES_MAX,
            shutdown_grace_secs: 30.0,
            instances_max: 1000,
            instance_memory_mb_max: 256,
            stream_idle_secs: 30.0,
            streams_per_tenant_max: 32,
            gc_every_secs: 3600.0,
            gc_retain_secs: (donut_store::gc::RETAIN_MS_DEFAULT / 1000) as f64,
            gc_write_units_max: 20_000,
            header_timeout_secs: 10.0,
            body_timeout_secs: 60.0,
            connections_max: 512,
            operator_token_sha256: None,
            compile_secs_max: 120.0,
            compile_period_secs: 3600.0,
            compiled_memory_mb_max: 1024,
            compiled_disk_mb_max: 4096,
        }
    }
}

/// `[[tenant]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    pub name: String,
    /// Hex SHA-256 of the tenant's bearer token.
    pub token_sha256: String,
    /// Database names the tenant may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<String>,
    /// Name prefixes the tenant may use (`acme-` covers `acme-1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default = "yes")]
    pub may_create: bool,
    #[serde(default)]
    pub may_remove: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_secs: Option<f64>,
    /// CPU per call, in fuel (about one unit per WebAssembly instruction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_calls_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sectors_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances_max: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSection>,
    /// Live databases the tenant may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases_max: Option<usize>,
    /// Largest answer of one request, in bytes (every byte of it: rows,
    /// descriptions, errors, a plugin's output); at most
    /// [`RESPONSE_BYTES_MAX_MAX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bytes_max: Option<usize>,
}

/// The largest `response_bytes_max` a tenant may be given (1 GiB): an
/// answer is built in the host's memory.
pub const RESPONSE_BYTES_MAX_MAX: usize = 1 << 30;

impl TenantSection {
    /// A tenant `name` with token hash `token_sha256` over `databases`
    /// and `prefixes`, may create, may not remove, and a bound on every
    /// limit (what `donut-host tenant add` writes): 256 MB and 30 s per
    /// call, 16 calls at once, 100,000 storage calls, 1,000,000 sectors
    /// and 4 GB per call, 100,000 read and 20,000 write units a minute,
    /// 100 databases. CPU in fuel stays unset: metering it costs every
    /// tenant's guests ~20% (BENCHMARKS.md, "Fuel"); the time limit bounds
    /// CPU meanwhile.
    pub fn with_defaults(
        name: &str,
        token_sha256: String,
        databases: Vec<String>,
        prefixes: Vec<String>,
    ) -> TenantSection {
        let limits = TenantLimits::default();
        TenantSection {
            name: name.to_string(),
            token_sha256,
            databases,
            prefixes,
            read_only: false,
            may_create: true,
            may_remove: false,
            memory_mb: Some(limits.memory_bytes >> 20),
            time_limit_secs: limits.time_limit.map(|t| t.as_secs_f64()),
            fuel_max: None,
            storage_calls_max: Some(100_000),
            sectors_max: Some(1_000_000),
            bytes_max: Some(4 << 30),
            instances_max: Some(limits.instances_max),
            budget: Some(BudgetSection {
                read_units: 100_000.0,
                write_units: 20_000.0,
                period_secs: 60.0,
            }),
            databases_max: Some(100),
            response_bytes_max: Some(limits.response_bytes_max),
        }
    }
}

fn yes() -> bool {
    true
}

/// `budget = { read_units, write_units, period_secs }`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSection {
    pub read_units: f64,
    pub write_units: f64,
    pub period_secs: f64,
}

/// A checked configuration, paths resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceSection,
    /// Each tenant and the SHA-256 of its token.
    pub tenants: Vec<(Tenant, [u8; 32])>,
}

/// Tenant and plugin names: 1 to 64 of `[A-Za-z0-9_.-]`, starting with a
/// letter or digit (so never `.`, `..` or a hidden file).
pub fn check_simple_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "illegal name {name:?}: 1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or digit"
        ))
    }
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_owned(),
            error,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// Checks every tenant and resolves paths against `path`'s directory.
    pub fn check(self, path: &Path) -> Result<Config, ConfigError> {
        let service = self.service.check(path)?;
        let mut tenants: Vec<(Tenant, [u8; 32])> = Vec::new();
        for section in &self.tenants {
            let invalid = |detail: String| ConfigError::Tenant {
                path: path.to_owned(),
                tenant: section.name.clone(),
                detail,
            };
            let (tenant, token_sha256) = section.to_tenant(&service).map_err(invalid)?;
            check_new_tenant(&tenant, tenants.iter().map(|(t, _)| t)).map_err(|error| {
                ConfigError::Grants {
                    path: path.to_owned(),
                    error,
                }
            })?;
            if tenants.iter().any(|(_, hash)| *hash == token_sha256) {
                return Err(invalid("shares its token with another tenant".into()));
            }
            tenants.push((tenant, token_sha256));
        }
        Ok(Config { service, tenants })
    }
}

impl ServiceSection {
    fn check(mut self, path: &Path) -> Result<ServiceSection, ConfigError> {
        let invalid = |detail: &str| ConfigError::Service {
            path: path.to_owned(),
            detail: detail.to_string(),
        };
        if !(self.shutdown_grace_secs.is_finite() && self.shutdown_grace_secs >= 0.0) {
            return Err(invalid(
                "shutdown_grace_secs must be a number of seconds ≥ 0",
            ));
        }
        if !(self.stream_idle_secs.is_finite() && self.stream_idle_secs > 0.0) {
            return Err(invalid("stream_idle_secs must be a number of seconds > 0"));
        }
        for (name, secs) in [
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("compile_secs_max", self.compile_secs_max),
            ("compile_period_secs", self.compile_period_secs),
        ] {
            if !(secs.is_finite() && secs > 0.0) {
                return Err(invalid(&format!("{name} must be a number of seconds > 0")));
            }
        }
        for (name, secs) in [
            ("shutdown_grace_secs", self.shutdown_grace_secs),
            ("stream_idle_secs", self.stream_idle_secs),
            ("gc_every_secs", self.gc_every_secs),
            ("gc_retain_secs", self.gc_retain_secs),
            ("header_timeout_secs", self.header_timeout_secs),
            ("body_timeout_secs", self.body_timeout_secs),
            ("compile_secs_max", self.compile_secs_max),
            ("compile_period_secs", self.compile_period_secs),
        ] {
            // Every duration becomes a `Duration` later: one too large for
            // it (or negative, or not a number) is refused here, not a panic.
            if Duration::try_from_secs_f64(secs).is_err() {
                return Err(invalid(&format!(
                    "{name} must be a number of seconds ≥ 0 that fits a duration"
                )));
            }
        }
        if self.connections_max == 0 {
            return Err(invalid("connections_max must be ≥ 1"));
        }
        if let Some(hex) = &self.operator_token_sha256
            && parse_sha256(hex).is_none()
        {
            return Err(invalid(
                "operator_token_sha256 must be 64 hex digits (the SHA-256 of the token)",
            ));
        }
        if self.instances_max == 0 || self.instance_memory_mb_max == 0 {
            return Err(invalid(
                "instances_max and instance_memory_mb_max must be ≥ 1",
            ));
        }
        if self.plugin_bytes_max > COMPONENT_BYTES_MAX {
            return Err(invalid(&format!(
                "plugin_bytes_max is at most {COMPONENT_BYTES_MAX}"
            )));
        }
        if self.plugins_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            self.plugins_dir = base.join(&self.plugins_dir);
        }
        Ok(self)
    }
}

impl TenantSection {
    fn to_tenant(&self, service: &ServiceSection) -> Result<(Tenant, [u8; 32]), String> {
        check_simple_name(&self.name)?;
        let token_sha256 = parse_sha256(&self.token_sha256)
            .ok_or("token_sha256 must be 64 hex digits (the SHA-256 of the token)")?;
        let mut names = std::collections::BTreeSet::new();
        for name in &self.databases {
            names.insert(DbName::new(name).map_err(|e| format!("databases: {e}"))?);
        }
        for prefix in &self.prefixes {
            // A prefix is the start of a legal name; "" would grant every
            // database of the table.
            DbName::new(prefix).map_err(|e| format!("prefixes: {e}"))?;
        }
        if names.is_empty() && self.prefixes.is_empty() {
            return Err("give it databases or prefixes".into());
        }
        let grant = Grant {
            names: Some(names),
            prefixes: self.prefixes.iter().cloned().collect(),
            may_create: self.may_create && !self.read_only,
            may_remove: self.may_remove && !self.read_only,
            read_only: self.read_only,
        };
        let defaults = TenantLimits::default();
        let memory_mb = self
            .memory_mb
            .unwrap_or(defaults.memory_bytes >> 20)
            .min(service.instance_memory_mb_max);
        let time_limit = match self.time_limit_secs {
            Some(secs) if secs > 0.0 && Duration::try_from_secs_f64(secs).is_ok() => {
                Some(Duration::from_secs_f64(secs))
            }
            Some(_) => {
                return Err(
                    "time_limit_secs must be a number of seconds > 0 that fits a duration".into(),
                );
            }
            None => defaults.time_limit,
        };
        let budget = match self.budget {
            None => None,
            Some(b)
                if b.period_secs > 0.0 && Duration::try_from_secs_f64(b.period_secs).is_ok() =>
            {
                Some(CapacityBudget {
                    read_units: b.read_units,
                    write_units: b.write_units,
                    period: Duration::from_secs_f64(b.period_secs),
                })
            }
            Some(_) => return Err("budget.period_secs must be a number of seconds > 0".into()),
        };
        let response_bytes_max = match self.response_bytes_max {
            None => defaults.response_bytes_max,
            Some(max) if (1..=RESPONSE_BYTES_MAX_MAX).contains(&max) => max,
            Some(_) => {
                return Err(format!(
                    "response_bytes_max must be 1 to {RESPONSE_BYTES_MAX_MAX} bytes"
                ));
            }
        };
        let limits = TenantLimits {
            memory_bytes: memory_mb << 20,
            time_limit,
            fuel_max: self.fuel_max,
            // A limit not given is the library's default, never none.
            quota: CallQuota {
                storage_calls_max: self.storage_calls_max.or(defaults.quota.storage_calls_max),
                sectors_max: self.sectors_max.or(defaults.quota.sectors_max),
                bytes_max: self.bytes_max.or(defaults.quota.bytes_max),
            },
            instances_max: self.instances_max.unwrap_or(defaults.instances_max).max(1),
            budget,
            response_bytes_max,
            databases_max: self.databases_max,
        };
        let tenant = Tenant {
            name: self.name.clone(),
            grant,
            limits,
        };
        Ok((tenant, token_sha256))
    }
}

/// The SHA-256 a hex string spells, if it is 64 hex digits.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a bearer token.
pub fn token_sha256(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// A new bearer token: `donut_` and 256 random bits in hex.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    Ok(format!("donut_{}", to_hex(&secret)))
}

/// Appends `tenant` to the configuration at `path` (created if missing)
/// after checking the whole file with it, keeping the file's text (and
/// its comments) as it was. Writers take turns (an exclusive lock on
/// `<path>.lock`), so two at once each add their tenant; the file is
/// replaced atomically (a temporary file of its own, renamed) and readable
/// by its owner only (mode 0600: it holds token hashes).
pub fn append_tenant(path: &Path, tenant: TenantSection) -> Result<(), ConfigError> {
    let io = |error| ConfigError::Io {
        path: path.to_owned(),
        error,
    };
    let _lock = lock_for_writing(path).map_err(io)?;
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    let mut file: ConfigFile = toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_owned(),
        error: Box::new(error),
    })?;
    file.tenants.push(tenant.clone());
    file.check(path)?;
    #[derive(Serialize)]
    struct One {
        tenant: [TenantSection; 1],
    }
    let block = toml::to_string(&One { tenant: [tenant] }).map_err(|e| ConfigError::Service {
        path: path.to_owned(),
        detail: format!("writing the tenant: {e}"),
    })?;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(&block);
    replace_file(path, text.as_bytes()).map_err(io)
}

/// An exclusive lock on `<path>.lock` (created, mode 0600), held until
/// the file it returns is dropped.
fn lock_for_writing(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(PathBuf::from(name))?;
    lock.lock()?;
    Ok(lock)
}

/// Replaces `path` with `bytes`: written and synced to a temporary file
/// of its own (mode 0600) in the same directory, renamed over `path`,
/// the directory synced.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".tenants-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.as_file_mut().write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}
