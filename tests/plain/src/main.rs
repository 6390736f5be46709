//! A plain WASI command: no donut:storage import.
fn main() {
    println!("hello from a component without storage");
}
