//! HTTP rules shared by every path — our HTTP/1 server, hyper's servers and clients, the
//! direct path — so that one rule has one spelling: the hop-by-hop fields, the forwarded ones,
//! a head's fields read where they came, answers the proxy makes itself, read buffers.
//!
//! Nothing here knows of cohorts, the config or routing: it imports nothing else of the crate
//! (tests/it/architecture.rs holds it to that).

pub mod body;
pub mod bufpool;
pub mod canned;
pub mod fields;
pub mod headers;
pub mod hop;
pub mod ip_text;
pub mod lines;
