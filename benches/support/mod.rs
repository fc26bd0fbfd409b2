//! What the benches share.

pub mod cluster;
