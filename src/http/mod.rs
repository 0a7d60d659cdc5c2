//! HTTP rules shared by every path.

pub mod body;
pub mod bufpool;
pub mod canned;
pub mod fields;
pub mod headers;
pub mod hop;
pub mod ip_text;
pub mod lines;
