//! `donut-host`: runs DonutDB WebAssembly components under wasmtime and
//! gives them one capability, `donut:storage`, over a storage backend.
//!
//! - [`backend`]: where items live (in memory, a local directory);
//! - [`storage`]: the `donut:storage` host implementation (grants, hash
//!   checks, limits, counters);
//! - [`runtime`]: engine, compiled-component cache, one store per call;
//! - [`stats`]: request counters.

pub mod backend;
pub mod runtime;
pub mod stats;
pub mod storage;
pub mod transfer;

pub use backend::{Backend, local::LocalBackend, memory::MemoryBackend};
pub use runtime::{Call, Outcome, Program, Runtime, RuntimeOptions, Stdio};
pub use storage::{Grant, StorageCtx};
