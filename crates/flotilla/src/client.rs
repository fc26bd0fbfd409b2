//! The API client the CLI, the end-to-end tests and the benches use: `flotilla-client`'s,
//! over HTTP only, as kubectl talks to a server.

pub use flotilla_client::{Client, LineReader, Response};
use std::path::{Path, PathBuf};

/// The kubeconfig to use: the flag, then `KUBECONFIG`, then the default data dir's.
pub fn kubeconfig_path(flag: Option<&Path>) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    crate::default_data_dir().join("kubeconfig")
}
