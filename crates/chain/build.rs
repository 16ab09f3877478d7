//! The `sol!` bindings read `contracts/out/*.json` at compile time; make cargo rebuild this
//! crate when those artifacts change (`node contracts/build.mjs`).

fn main() {
    println!("cargo:rerun-if-changed=../../contracts/out");
}
