//! One module per command group. Each `run` opens what it needs, does the work, and prints
//! an outcome through [`crate::output::Out`]; the functions they call are public so the demo
//! drives exactly what users type.

pub mod jobs;
pub mod market;
pub mod models;
pub mod rewards;
pub mod royalties;
pub mod verify;
pub mod wallet;
