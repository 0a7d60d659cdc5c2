//! canary-proxy: a reverse proxy for canary releases. Sticky SHA-256 cohorts, per-cohort
//! windows, a sequential judge, and a rollback latch that survives restarts.
//!
//! The binary (`main.rs`) is a thin layer over `app::App`; everything here is usable from tests.
//! The folders and the rules between them: docs/ARCHITECTURE.md.

#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod cohort;
pub mod config;
pub mod control;
pub mod demo;
pub mod fleet;
pub mod http;
pub mod judge;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod server;
#[allow(unsafe_code)]
pub mod sys;
pub mod upstream;
