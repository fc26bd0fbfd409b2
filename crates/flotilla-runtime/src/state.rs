//! The per-instance `Store` data: WASI and wasi:http contexts, the memory limiter, the
//! deadline, and how an instance's failure is told apart (trap, OOM, deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::error::{Error, Result};
use crate::logs::LogBuffer;
use crate::spec::PodSpec;

/// The `T` of every pod's `Store<T>`.
pub(crate) struct PodState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutgoing,
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

struct Limiter {
    memory_limit: usize,
    outcome: Arc<Outcome>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.outcome.out_of_memory.store(true, Ordering::Relaxed);
            return Err(wasmtime::Error::new(MemoryLimitExceeded { limit: self.memory_limit, desired }));
        }
        // The component's own declared maximum fails `memory.grow` as wasm says.
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Approved but the pool slot could not hold it: also out of memory.
        self.outcome.out_of_memory.store(true, Ordering::Relaxed);
        Err(error.context("growing linear memory failed"))
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// Outgoing `wasi:http` requests are denied until the proxy routes them in process.
struct DenyOutgoing;

type SendRequestFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendRequestFuture {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A fresh store for one instance of a pod: its WASI context, memory limit and deadline.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    spec: &PodSpec,
    logs: &LogBuffer,
    memory_limit: usize,
    deadline: Option<Instant>,
) -> Result<(Store<PodState>, Arc<Outcome>)> {
    let outcome = Arc::new(Outcome::default());
    let state = PodState {
        wasi: wasi_ctx(spec, logs)?,
        http: WasiHttpCtx::new(),
        hooks: DenyOutgoing,
        table: ResourceTable::new(),
        limiter: Limiter { memory_limit, outcome: outcome.clone() },
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    // Each epoch tick (10 ms) the instance yields to the executor, so a spinning pod cannot
    // hold a worker thread, and past its deadline it ends.
    store.set_epoch_deadline(1);
    let ticker_outcome = outcome.clone();
    store.epoch_deadline_callback(move |_| {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            ticker_outcome.deadline_exceeded.store(true, Ordering::Relaxed);
            return Err(wasmtime::Error::new(DeadlineExceeded));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    Ok((store, outcome))
}

fn wasi_ctx(spec: &PodSpec, logs: &LogBuffer) -> Result<WasiCtx> {
    let mut builder = WasiCtxBuilder::new();
    builder.stdout(logs.stdout()).stderr(logs.stderr());
    if !spec.env.iter().any(|(key, _)| key == "HOSTNAME") {
        builder.env("HOSTNAME", &spec.name);
    }
    builder.envs(&spec.env);
    builder.arg(&spec.name).args(&spec.args);
    for preopen in &spec.preopens {
        let perms = if preopen.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        builder.preopened_dir(&preopen.host, &preopen.guest, perms).map_err(|e| Error::Preopen {
            host: preopen.host.clone(),
            guest: preopen.guest.clone(),
            message: crate::error::chain(&e),
        })?;
    }
    // No sockets: `WasiCtxBuilder` denies every address and name lookup by default.
    Ok(builder.build())
}
