//! Whether the canary breaks its limits.

pub mod evidence;
pub mod histogram;
pub mod judgement;
pub mod recorder;
pub mod sequential;
pub mod window;
