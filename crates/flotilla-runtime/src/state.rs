//! A pod's shared context and the per-instance `Store` data built from it: WASI and
//! wasi:http contexts, the memory limiter, the CPU meter, the deadline, and how an
//! instance's failure is told apart (trap, OOM, deadline).
//!
//! Memory is kept per pod, not per instance: every memory of every live instance of the
//! pod (concurrent HTTP requests, a component's several memories) draws from one
//! [`MemoryAccount`], and a growth past the pod's limit is an OOM kill of the instance
//! asking.

use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::cpu::{CpuAccount, Meter};
use crate::error::{Error, Result};
use crate::logs::{LogBuffer, LogStream};
use crate::outbound::{AllowedHosts, OutboundHttp};
use crate::service::RouterSlot;
use crate::spec::PodSpec;

/// The `T` of every pod's `Store<T>`.
pub(crate) struct PodState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHttp,
    table: ResourceTable,
    limiter: Limiter,
}

impl WasiView for PodState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PodState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// What happened to an instance, recorded by the limiter and the deadline callback so a
/// failed call can be classified whatever wrapping the error went through.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) out_of_memory: AtomicBool,
    pub(crate) deadline_exceeded: AtomicBool,
    /// Whether the instance's end has been written to the pod's log.
    reported: AtomicBool,
}

/// How an instance's failure reads.
#[derive(Debug)]
pub(crate) enum Failure {
    Trap(String),
    OutOfMemory,
    DeadlineExceeded,
    Exit(i32),
}

impl Outcome {
    /// Pushes `line` to the pod's stderr log, once per instance (an HTTP instance's task
    /// and the request's timeout may both see it end).
    pub(crate) fn report(&self, logs: &LogBuffer, line: String) {
        if !self.reported.swap(true, Ordering::Relaxed) {
            logs.push(LogStream::Stderr, line);
        }
    }

    pub(crate) fn classify(&self, error: &wasmtime::Error) -> Failure {
        if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return Failure::Exit(exit.0);
        }
        if self.out_of_memory.load(Ordering::Relaxed) || error.downcast_ref::<MemoryLimitExceeded>().is_some() {
            return Failure::OutOfMemory;
        }
        if self.deadline_exceeded.load(Ordering::Relaxed) || error.downcast_ref::<DeadlineExceeded>().is_some() {
            return Failure::DeadlineExceeded;
        }
        Failure::Trap(crate::error::chain(error))
    }
}

/// The limiter's error: ends the instance rather than failing `memory.grow`, so going over
/// the limit is an OOM kill, as in Kubernetes.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (growing to {desired} bytes)")]
pub(crate) struct MemoryLimitExceeded {
    limit: usize,
    desired: usize,
}

/// The deadline callback's error.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// The linear memory of a pod's live instances, all together, and the most it has been:
/// the budget the pod's limit is checked against.
#[derive(Debug, Default)]
pub(crate) struct MemoryAccount {
    current: AtomicU64,
    peak: AtomicU64,
}

impl MemoryAccount {
    /// Bytes of linear memory the pod's instances hold now.
    pub(crate) fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    /// The most the pod's instances have held at once.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Adds `bytes` unless that takes the pod past `limit`: answers the new total, or
    /// the total it would have been.
    fn try_grow(&self, bytes: u64, limit: Option<u64>) -> Result<u64, u64> {
        let mut current = self.current.load(Ordering::Relaxed);
        loop {
            let next = current.saturating_add(bytes);
            if limit.is_some_and(|limit| next > limit) {
                return Err(next);
            }
            match self.current.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return Ok(next);
                }
                Err(actual) => current = actual,
            }
        }
    }

    fn shrink(&self, bytes: u64) {
        self.current.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// An instance's share of the pod's [`MemoryAccount`]: every memory it creates or grows
/// (wasmtime asks the limiter for both) is added, and all of it is given back when the
/// instance's store is dropped. A growth that would take the pod's instances together
/// past the pod's limit ends the instance (an OOM kill), as does one memory past the
/// runtime's per-instance maximum.
struct Limiter {
    /// The most one memory may have.
    memory_limit: usize,
    /// The most all the pod's memories may have together (`Limits::memory_bytes`).
    pod_limit: Option<u64>,
    outcome: Arc<Outcome>,
    account: Arc<MemoryAccount>,
    /// Bytes this instance holds, counted in `account`.
    held: u64,
    /// The last growth approved, taken back if it then failed.
    last_growth: u64,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.account.shrink(self.held);
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.outcome.out_of_memory.store(true, Ordering::Relaxed);
            return Err(wasmtime::Error::new(MemoryLimitExceeded { limit: self.memory_limit, desired }));
        }
        // The component's own declared maximum fails `memory.grow` as wasm says.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let growth = u64::try_from(desired.saturating_sub(current)).unwrap_or(u64::MAX);
        if let Err(total) = self.account.try_grow(growth, self.pod_limit) {
            self.outcome.out_of_memory.store(true, Ordering::Relaxed);
            let limit = self.pod_limit.map_or(usize::MAX, |limit| usize::try_from(limit).unwrap_or(usize::MAX));
            let desired = usize::try_from(total).unwrap_or(usize::MAX);
            return Err(wasmtime::Error::new(MemoryLimitExceeded { limit, desired }));
        }
        self.held = self.held.saturating_add(growth);
        self.last_growth = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Approved but the pool slot could not hold it: also out of memory.
        let growth = std::mem::take(&mut self.last_growth);
        self.account.shrink(growth);
        self.held = self.held.saturating_sub(growth);
        self.outcome.out_of_memory.store(true, Ordering::Relaxed);
        Err(error.context("growing linear memory failed"))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// What all the instances of one pod share: its spec, log, resolved limits, outbound
/// allow-list, the runtime's Service router and CPU account. Built (and checked) once,
/// when the pod is made.
pub(crate) struct PodContext {
    pub(crate) spec: PodSpec,
    pub(crate) logs: LogBuffer,
    pub(crate) memory_limit: usize,
    outbound: AllowedHosts,
    router: RouterSlot,
    /// `spec.namespace`, or `default` when empty.
    namespace: Arc<str>,
    pub(crate) cpu: Arc<CpuAccount>,
    pub(crate) memory: Arc<MemoryAccount>,
}

impl PodContext {
    /// Checks the spec (outbound hosts, limits, preopened directories) before any instance.
    pub(crate) fn new(
        engine: &wasmtime::Engine,
        memory_limit: usize,
        spec: PodSpec,
        logs: LogBuffer,
        router: RouterSlot,
    ) -> Result<Self> {
        if spec.limits.cpu_millis == Some(0) {
            return Err(Error::InvalidLimit(
                "a CPU quota of 0 millicores would never run; leave it unset for none".into(),
            ));
        }
        let outbound = AllowedHosts::parse(&spec.allowed_outbound_hosts)?;
        let cpu = Arc::new(CpuAccount::new(spec.limits.cpu_millis));
        let namespace = if spec.namespace.is_empty() { "default" } else { spec.namespace.as_str() }.into();
        let memory = Arc::new(MemoryAccount::default());
        let context = PodContext { spec, logs, memory_limit, outbound, router, namespace, cpu, memory };
        // Fail now, not per instance, if a preopened directory cannot be opened.
        context.new_store(engine, None)?;
        Ok(context)
    }

    /// A fresh store for one instance of the pod: its WASI context, memory limit, CPU
    /// meter and deadline.
    pub(crate) fn new_store(&self, engine: &wasmtime::Engine, deadline: Option<Instant>) -> Result<Instance> {
        self.new_store_with(engine, deadline, Stdio::Logs(None))
    }

    /// [`new_store`](Self::new_store) with the given stdio and, for an exec, its argv.
    pub(crate) fn new_store_with(
        &self,
        engine: &wasmtime::Engine,
        deadline: Option<Instant>,
        stdio: Stdio,
    ) -> Result<Instance> {
        let outcome = Arc::new(Outcome::default());
        let meter = Arc::new(Meter::new(self.cpu.clone()));
        let state = PodState {
            wasi: wasi_ctx(&self.spec, &self.logs, stdio)?,
            http: WasiHttpCtx::new(),
            hooks: OutboundHttp::new(
                self.outbound.clone(),
                self.logs.clone(),
                self.router.clone(),
                self.spec.localhost.clone(),
                self.namespace.clone(),
                deadline,
            ),
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_limit: self.memory_limit,
                pod_limit: self.spec.limits.memory_bytes,
                outcome: outcome.clone(),
                account: self.memory.clone(),
                held: 0,
                last_growth: 0,
            },
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limiter);
        // Each epoch tick (10 ms) the instance yields to the executor, so a spinning pod
        // cannot hold a worker thread; it sleeps instead while its pod is out of CPU quota;
        // and past its deadline it ends.
        store.set_epoch_deadline(1);
        let ticker_outcome = outcome.clone();
        let ticker_meter = meter.clone();
        store.epoch_deadline_callback(move |_| {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                ticker_outcome.deadline_exceeded.store(true, Ordering::Relaxed);
                return Err(wasmtime::Error::new(DeadlineExceeded));
            }
            Ok(ticker_meter.on_epoch())
        });
        Ok(Instance { store, outcome, meter })
    }
}

/// A fresh instance's store, how it ended, and its CPU meter (poll the instance's future
/// through [`Meter::run`] so its CPU time is counted).
pub(crate) struct Instance {
    pub(crate) store: Store<PodState>,
    pub(crate) outcome: Arc<Outcome>,
    pub(crate) meter: Arc<Meter>,
}

/// Where an instance's stdio goes.
pub(crate) enum Stdio {
    /// The pod's own instances: stdout and stderr into its log, argv is the pod's name
    /// and its args, and a stdin when the container has one (`stdin: true`).
    Logs(Option<crate::ExecReader>),
    /// A command run in the pod (`kubectl exec`): its own argv and streams.
    Exec(crate::exec::ExecIo),
}

fn wasi_ctx(spec: &PodSpec, logs: &LogBuffer, stdio: Stdio) -> Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    match stdio {
        Stdio::Logs(stdin) => {
            builder.stdout(logs.stdout()).stderr(logs.stderr());
            if let Some(stdin) = stdin {
                builder.stdin(wasmtime_wasi::cli::AsyncStdinStream::new(stdin));
            }
            builder.arg(&spec.name).args(&spec.args);
        }
        Stdio::Exec(io) => {
            // The exec's own variables replace the pod's of the same name.
            let own: Vec<String> = io.env.iter().map(|(key, _)| key.clone()).collect();
            io.install(&mut builder);
            if !spec.env.iter().any(|(key, _)| key == "HOSTNAME") {
                builder.env("HOSTNAME", &spec.name);
            }
            builder.envs(&spec.env.iter().filter(|(key, _)| !own.contains(key)).cloned().collect::<Vec<_>>());
            return preopen(builder, spec);
        }
    }
    if !spec.env.iter().any(|(key, _)| key == "HOSTNAME") {
        builder.env("HOSTNAME", &spec.name);
    }
    builder.envs(&spec.env);
    preopen(builder, spec)
}

/// The spec's preopened directories, then the context.
fn preopen(mut builder: WasiCtxBuilder, spec: &PodSpec) -> Result<WasiCtx> {
    for preopen in &spec.preopens {
        let perms = if preopen.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        // An opened directory is reopened through its descriptor, not looked up by path.
        let host = match &preopen.dir {
            Some(dir) => std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())),
            None => preopen.host.clone(),
        };
        builder.preopened_dir(&host, &preopen.guest, perms).map_err(|e| Error::Preopen {
            host: preopen.host.clone(),
            guest: preopen.guest.clone(),
            message: crate::error::chain(&e),
        })?;
    }
    // No sockets: `WasiCtxBuilder` denies every address and name lookup by default.
    Ok(builder.build())
}
