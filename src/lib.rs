//! canary-proxy: a reverse proxy for canary releases. Sticky SHA-256 cohorts, per-cohort
//! windows, a sequential judge, and a rollback latch that survives restarts.
//!
//! The binary (`main.rs`) is a thin layer over `app::App`; everything here is usable from tests.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod body;
pub mod bufpool;
pub mod checks;
pub mod cli;
pub mod client;
pub mod cohort;
pub mod config;
pub mod conn;
pub mod control;
pub mod demo;
pub mod direct;
pub mod drain;
pub mod error;
pub mod fields;
pub mod fleet;
pub mod h1;
pub mod headers;
pub mod histogram;
pub mod identity;
pub mod ip_text;
pub mod judge;
pub mod judgement;
pub mod memory;
pub mod metrics;
pub mod proxy;
pub mod recorder;
pub mod reload;
pub mod report;
pub mod routing;
pub mod schedule;
pub mod server;
pub mod state;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod window;
