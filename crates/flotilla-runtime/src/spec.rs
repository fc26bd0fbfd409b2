//! What a pod is given: env, args, directories and limits.

use std::path::PathBuf;
use std::time::Duration;

/// A pod as the runtime sees it, already resolved from the API object (ConfigMaps,
/// Secrets and volumes turned into env pairs and host directories).
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// The pod's name; also its `HOSTNAME` unless `env` sets one, as in Kubernetes.
    pub name: String,
    pub env: Vec<(String, String)>,
    /// `argv[1..]`; `argv[0]` is the pod's name.
    pub args: Vec<String>,
    pub preopens: Vec<Preopen>,
    pub limits: Limits,
}

/// A host directory the pod may use, and where it sees it.
#[derive(Debug, Clone)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// A pod's limits; each instance (an HTTP request, a command run) gets its own.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Cap on each linear memory of an instance; going over it is `OutOfMemory`. `None`
    /// means the runtime's `max_memory_per_instance`, which also caps any value here.
    pub memory_bytes: Option<u64>,
    /// Wall-clock bound on one HTTP request, from instantiation to the end of the handler.
    pub request_timeout: Option<Duration>,
    /// Wall-clock bound on a command pod's run (`activeDeadlineSeconds`).
    pub active_deadline: Option<Duration>,
    /// HTTP requests running at once; more wait their turn. At least 1.
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: None, request_timeout: None, active_deadline: None, max_concurrent_requests: 100 }
    }
}
