//! The `flotilla` binary's library: the command-line interface and the API client it
//! (and the end-to-end tests and benches) use.
//!
//! This crate wires the others together; it holds no cluster logic of its own. The CLI
//! talks to a server only over HTTP, as kubectl does.

pub mod cli;
pub mod client;
pub mod testkit;

use std::path::PathBuf;

/// `$FLOTILLA_DATA_DIR`, else `~/.flotilla`: where `server` keeps its state and where
/// the CLI looks for the kubeconfig when neither `--kubeconfig` nor `KUBECONFIG` is set.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLOTILLA_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".flotilla")
}
