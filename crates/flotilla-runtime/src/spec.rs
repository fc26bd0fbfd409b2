//! What a pod is given: its namespace, env, args, directories, outbound hosts and limits.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A pod as the runtime sees it, already resolved from the API object (ConfigMaps,
/// Secrets and volumes turned into env pairs and host directories).
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// The pod's name; also its `HOSTNAME` unless `env` sets one, as in Kubernetes.
    pub name: String,
    /// The pod's namespace (`metadata.namespace`), where the short Service names of its
    /// outgoing requests resolve (`http://SVC` is `SVC` in this namespace). Empty means
    /// `default`.
    pub namespace: String,
    pub env: Vec<(String, String)>,
    /// `argv[1..]`; `argv[0]` is the pod's name.
    pub args: Vec<String>,
    pub preopens: Vec<Preopen>,
    /// Hosts the pod may send outgoing `wasi:http` requests to, besides cluster Services
    /// (which it always may, see [`ServiceRouter`](crate::ServiceRouter)); any other is
    /// refused with `HTTP-request-denied`. Each entry is `HOST` (the scheme's default
    /// port: 80 for `http`, 443 for `https`), `HOST:PORT`, or `HOST:*` (any port); `HOST`
    /// is a DNS name, an IPv4 address, a bracketed IPv6 address (`[::1]:8080`),
    /// `*.DOMAIN` (any name under DOMAIN, not DOMAIN itself) or `*` (any host). Names are
    /// compared as written, case-insensitively, never resolved. Empty: no outgoing HTTP
    /// but to cluster Services.
    pub allowed_outbound_hosts: Vec<String>,
    pub limits: Limits,
    /// Where the pod's `http://localhost[:PORT]` requests go (`127.0.0.1`, `[::1]`): its
    /// own containers' listeners, as the containers of a pod share localhost. A router
    /// for these hosts only; without one, such requests are refused.
    pub localhost: Option<std::sync::Arc<dyn crate::ServiceRouter>>,
}

/// A host directory the pod may use, and where it sees it.
#[derive(Debug, Clone)]
pub struct Preopen {
    /// The directory on the host; only named in messages when [`dir`](Self::dir) is set.
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
    /// The directory, already opened (a volume's subPath resolved without following
    /// links out of the volume): each instance opens this very directory (through
    /// `/proc/self/fd`), never `host` by path again, so a link planted on that path later
    /// leads nowhere. Held as long as the pod.
    pub dir: Option<Arc<OwnedFd>>,
}

/// A pod's limits. Timeouts bound each instance (an HTTP request, a command run); the
/// memory limit and the CPU quota are the pod's, shared by all its instances.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Cap on the linear memory of all the pod's live instances together: every memory
    /// of every instance (concurrent HTTP requests share it, as a container's processes
    /// share its cgroup). The instance whose growth would go over it is killed
    /// (`OutOfMemory`); the others run on. Each memory is also capped by the runtime's
    /// `max_memory_per_instance`. `None`: only that per-memory cap.
    pub memory_bytes: Option<u64>,
    /// Wall-clock bound on one HTTP request, from instantiation to the end of the handler.
    pub request_timeout: Option<Duration>,
    /// Wall-clock bound on a command pod's run (`activeDeadlineSeconds`).
    pub active_deadline: Option<Duration>,
    /// HTTP requests running at once; more wait their turn. At least 1.
    pub max_concurrent_requests: usize,
    /// CPU quota in millicores (`resources.limits.cpu`; 1000 is one core), for the whole
    /// pod: all its instances together run at most `cpu_millis / 1000 ×`
    /// [`CPU_PERIOD`](crate::CPU_PERIOD) of CPU per period, as cgroups' `cfs_quota_us` /
    /// `cfs_period_us`. A pod that spent its quota is throttled (its instances sleep,
    /// without holding a thread) until the period that pays its overrun back; it is
    /// never killed for CPU. `None`: no quota. Must not be 0.
    pub cpu_millis: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: None,
            request_timeout: None,
            active_deadline: None,
            max_concurrent_requests: 100,
            cpu_millis: None,
        }
    }
}
