//! DonutDB's deterministic simulator (test-only): several instances of a
//! real guest component, in wasmtime, on one in-memory store; a seeded
//! scheduler that interleaves their storage calls and injects faults at
//! that boundary; a virtual clock; and a checker for what must hold after
//! every run (`check`). ARCHITECTURE.md, "Concurrency", states the
//! obligations this proves.
//!
//! ```text
//! just sim --seeds 1000 --ops 40        # many seeds
//! just sim --seed 42 --ops 40 --trace   # replay one, with its trace
//! ```

mod admin;
pub mod backend;
pub mod check;
mod gc;
mod history;
mod rng;
mod run;

pub use rng::Rng;

pub use run::{Bug, Options, Report, Sim};
