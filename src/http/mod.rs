//! HTTP rules shared by every path.

pub mod bufpool;
pub mod fields;
pub mod headers;
pub mod ip_text;
pub mod lines;
