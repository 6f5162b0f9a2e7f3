//! Library half of the `bitriver` binary: the parts of the node that tests and `main` share.
//!
//! `main.rs` stays thin: it parses [`config`], sets up tracing, binds listeners and runs the roles.

pub mod config;
