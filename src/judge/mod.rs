//! Whether the canary breaks or keeps its limits. The recorder counts each exchange into the
//! current slice; the evaluator (in `control/`) takes the slice every `evaluate_every` and hands
//! it to the judgement, which pushes it into the window and the sequential test and reports
//! the verdict and its evidence.
//!
//! No IO, no clock, no JSON: time arrives as slices, and whoever shows the evidence makes the
//! JSON from its typed values (tests/it/architecture.rs holds the folder to that).

pub mod evidence;
pub mod histogram;
pub mod judgement;
pub mod promotion;
pub mod recorder;
pub mod sequential;
pub mod window;
