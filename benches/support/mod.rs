//! What the benches share.

pub mod cluster;
pub mod report;
