//! Flotilla's wasm runtime: turns component bytes into running pods on one node.
//!
//! It owns the node's wasmtime [`Engine`](wasmtime::Engine) (async, epoch interruption, the
//! pooling allocator, the on-disk compile cache), compiling components into [`Image`]s and
//! telling their kind from their exports, and running them:
//!
//! - an [`HttpPod`] (exports `wasi:http/incoming-handler`) is pre-instantiated once; each
//!   request gets a fresh `Store` and instance with the pod's memory limit and deadline, and
//!   a semaphore bounds concurrent requests (the shape of `wasmtime serve`);
//! - a [`CommandPod`] (exports `wasi:cli/run`) runs one instance to an [`Exit`];
//! - either kind runs commands in its sandbox on demand (`kubectl exec`): a command
//!   image instantiated with the pod's env, directories, limits and allow-list, and the
//!   caller's argv and streams ([`ExecIo`]);
//! - a pod's stdout and stderr land in its [`LogBuffer`] (bounded in lines and in bytes,
//!   each line counted with its overhead), and so does a line when an
//!   instance traps, is OOM-killed or runs past its deadline;
//! - a pod's CPU quota ([`Limits::cpu_millis`]) is shared by all its instances and kept
//!   per [`CPU_PERIOD`] as cgroups do: a pod that spent it sleeps (asynchronously, holding
//!   no thread) until it may run again; `cpu_time()` reports what each pod has used.
//!
//! A pod gets the env, args and preopened directories of its [`PodSpec`] and nothing else:
//! no sockets, and outgoing `wasi:http` requests only to cluster Services and to the hosts
//! of its [`allowed_outbound_hosts`](PodSpec::allowed_outbound_hosts) (denied otherwise).
//! A request to a cluster Service (`http://SVC`, `SVC.NS`, `SVC.NS.svc.cluster.local`,
//! `CLUSTER_IP:PORT`) goes, in process, to the [`ServiceRouter`] the binary sets with
//! [`Runtime::set_service_router`]: the Service proxy, which this crate does not know.
//!
//! It must not know about the API, the store or scheduling: callers resolve a pod object
//! into a [`PodSpec`] and decide what an [`Exit`] means for the pod's status.

mod command;
mod cpu;
mod error;
mod exec;
mod http;
mod logs;
mod outbound;
mod runtime;
mod service;
mod spec;
mod state;
#[cfg(test)]
mod tests;

pub use crate::command::{CommandPod, Exit};
pub use crate::cpu::CPU_PERIOD;
pub use crate::error::{Error, PodError, Result};
pub use crate::exec::{ExecIo, ExecReader, ExecWriter};
pub use crate::http::{HttpPod, ResponseBody};
pub use crate::logs::{DEFAULT_MAX_LINES, LINE_OVERHEAD, LogBuffer, LogLine, LogStream, LogWriter};
pub use crate::runtime::{EPOCH_TICK, Image, ImageKind, Runtime, RuntimeConfig};
pub use crate::service::{BoxError, BoxFuture, EdgeBody, ServiceRouter};
pub use crate::spec::{Limits, PodSpec, Preopen};
/// The error type of request and response bodies (wasi:http's error code).
pub use wasmtime_wasi_http::Error as BodyError;
