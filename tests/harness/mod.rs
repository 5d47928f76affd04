//! The in-process cluster, for a test file that still says
//! `#[path = "harness/mod.rs"] mod harness;`: the same code as
//! `support::inproc` (new test files say `mod support;`).

#[path = "../support/mod.rs"]
mod support;

pub use support::inproc::*;
