//! Helpers shared by integration tests. Each test crate that needs them says
//! `mod common;`.

pub mod register_history;
