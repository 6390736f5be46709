//! DonutDB's integration tests: one binary (`cargo test -p donut-tests`).
//! The components under test are built by `just guest` first.

mod bad_input;
mod cli;
mod cli_ux;
mod clients;
mod conformance;
mod counts;
mod dynamo;
mod exclusive;
mod extension;
mod faults;
mod fence;
mod fuzz;
mod gc;
mod history;
mod hostile;
mod hostile_exec;
mod libsql;
mod lost_answers;
mod migrate;
mod migrate_go;
mod name_reuse;
mod open_files;
mod randomness;
mod sector_cache;
mod serve;
mod session;
mod sim;
mod sql;
mod surface;
mod tenancy;
mod util;
