//! Tells the test kit where the built components, the host binary and the
//! test servers are.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../target")
        });
    let target = std::fs::canonicalize(&target).unwrap_or(target);
    println!(
        "cargo:rustc-env=DONUT_GUEST_DIR={}",
        target.join("wasm32-wasip2/guest").display()
    );
    println!(
        "cargo:rustc-env=DONUT_HOST_BIN={}",
        target.join("release/donut-host").display()
    );
    println!(
        "cargo:rustc-env=DONUT_EXT_LIB={}",
        target.join("release/libdonutdb.so").display()
    );
    println!(
        "cargo:rustc-env=DONUT_DYNOXIDE_BIN={}",
        target.join("tools/bin/dynoxide").display()
    );
    println!(
        "cargo:rustc-env=DONUT_TEST_CACHE={}",
        target.join("test-component-cache").display()
    );
}
