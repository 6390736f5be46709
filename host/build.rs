//! Embeds the stock `donut-sql` and session components, built for wasm32-wasip2 by
//! `just guest` before the host.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DONUT_SQL_WASM");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let path = match std::env::var_os("DONUT_SQL_WASM") {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../target")
                });
            target.join("wasm32-wasip2/guest/donut-sql.wasm")
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    if !path.exists() {
        panic!(
            "the stock donut-sql component is not built ({} is missing): run `just guest` \
             first, or set DONUT_SQL_WASM to a built donut-sql.wasm",
            path.display()
        );
    }
    let path = path
        .canonicalize()
        .expect("canonical path of donut-sql.wasm");
    println!("cargo:rustc-env=DONUT_SQL_WASM={}", path.display());
    // The stock session component, beside it.
    let session = path.with_file_name("donut_session.wasm");
    println!("cargo:rerun-if-changed={}", session.display());
    if !session.exists() {
        panic!(
            "the stock session component is not built ({} is missing): run `just guest` first",
            session.display()
        );
    }
    println!("cargo:rustc-env=DONUT_SESSION_WASM={}", session.display());
}
