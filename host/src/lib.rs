//! `donut-host`: runs DonutDB WebAssembly components under wasmtime and
//! gives them one capability, `donut:storage`, over a storage backend.
//!
//! - [`backend`], [`stats`], [`transfer`]: re-exported from `donut-store`
//!   (no wasmtime), where items live and the operations on them;
//! - [`storage`]: the `donut:storage` host implementation over the store
//!   (handles, grants, hash checks, limits, counters);
//! - [`runtime`]: engine, compiled-component cache, one store per call,
//!   the stock component's argument contract (`StockSql`);
//! - [`session`]: SQL sessions in a long-lived instance (the session world);
//! - [`tenant`]: many tenants' calls under grants, limits and budgets;
//! - [`service`]: `donut-host serve`, the tenants over HTTP.

pub mod runtime;
pub mod service;
pub mod session;
pub mod storage;
pub mod tenant;

// The store (`donut-store`) under the paths callers know.
pub use donut_store::{backend, stats, transfer};

pub use backend::{Backend, local::LocalBackend, memory::MemoryBackend};
pub use runtime::{Call, Outcome, Program, Runtime, RuntimeOptions, Stdio};
pub use storage::{Grant, StorageCtx};
