//! HTTP pods: a pre-instantiated `wasi:http/proxy` component, a fresh instance per request.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use tokio::sync::{Semaphore, oneshot};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::Image;
use crate::error::{Error, PodError, Result, chain};
use crate::logs::LogBuffer;
use crate::runtime::{ImageKind, Runtime};
use crate::spec::PodSpec;
use crate::state::{Failure, Instance, PodContext, PodState};

/// The body of a pod's response, streamed from its instance as it writes it.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// A running HTTP pod. Cheap to clone; clones share the concurrency bound.
#[derive(Clone)]
pub struct HttpPod {
    inner: Arc<Inner>,
}

struct Inner {
    // Keeps the epoch ticker alive while the pod is; links the images it execs.
    runtime: Runtime,
    pre: ProxyPre<PodState>,
    pod: PodContext,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for HttpPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPod")
            .field("spec", &self.inner.pod.spec)
            .field("memory_limit", &self.inner.pod.memory_limit)
            .field("available_permits", &self.inner.permits.available_permits())
            .field("cpu_time", &self.cpu_time())
            .finish_non_exhaustive()
    }
}

impl HttpPod {
    pub(crate) fn new(runtime: Runtime, image: &Image, spec: PodSpec, logs: LogBuffer) -> Result<HttpPod> {
        if image.kind != ImageKind::Http {
            return Err(Error::WrongKind {
                expected: "HTTP",
                expected_world: "wasi:http/incoming-handler",
                actual: image.kind,
            });
        }
        let instance_pre =
            runtime.inner.http_linker.instantiate_pre(&image.component).map_err(|e| Error::Link(chain(&e)))?;
        let pre = ProxyPre::new(instance_pre).map_err(|e| Error::Link(chain(&e)))?;
        let pod = PodContext::new(pre.engine(), runtime.memory_limit(&spec), spec, logs, runtime.inner.router.clone())?;
        let permits = Arc::new(Semaphore::new(pod.spec.limits.max_concurrent_requests.max(1)));
        Ok(HttpPod { inner: Arc::new(Inner { runtime, pre, pod, permits }) })
    }

    /// Runs a command (`image`, with `io`'s argv and streams) in this pod's sandbox:
    /// `kubectl exec`. See [`ExecIo`](crate::ExecIo).
    pub async fn exec(&self, image: &Image, io: crate::ExecIo) -> crate::Exit {
        crate::exec::run(&self.inner.runtime, &self.inner.pod, image, io).await
    }

    /// The pod's log.
    pub fn logs(&self) -> &LogBuffer {
        &self.inner.pod.logs
    }

    /// The CPU time all the pod's request instances have used so far (cumulative, best
    /// effort: time the instances held a thread, see [`Limits::cpu_millis`](crate::Limits::cpu_millis)).
    pub fn cpu_time(&self) -> Duration {
        self.inner.pod.cpu.used()
    }

    /// Bytes of linear memory the pod's live request instances hold now (0 when idle).
    pub fn memory_bytes(&self) -> u64 {
        self.inner.pod.memory.current()
    }

    /// The most linear memory the pod's request instances have held at once.
    pub fn memory_peak_bytes(&self) -> u64 {
        self.inner.pod.memory.peak()
    }

    /// Runs `req` in a fresh instance and returns its response once the component sets it;
    /// the body streams on while the instance runs. Waits while the pod is at its
    /// concurrency limit, and while it is out of CPU quota. A request without an
    /// authority gets `Host: localhost`. An instance that traps, goes over its memory
    /// limit or its request timeout (before or after answering) says so on the pod's
    /// stderr log.
    pub async fn handle<B>(&self, mut req: hyper::Request<B>) -> Result<hyper::Response<ResponseBody>, PodError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let inner = &self.inner;
        let permit = inner.permits.clone().acquire_owned().await.map_err(|e| PodError::BadRequest(e.to_string()))?;
        let timeout = inner.pod.spec.limits.request_timeout;
        // A timeout past what the clock holds is no timeout.
        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        if req.uri().authority().is_none() && !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, HeaderValue::from_static("localhost"));
        }

        let engine = inner.pre.engine();
        let Instance { mut store, outcome, meter } =
            inner.pod.new_store(engine, deadline).map_err(|e| PodError::BadRequest(e.to_string()))?;
        let (sender, receiver) = oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| PodError::BadRequest(chain(&e)))?;
        let out = store.data_mut().http().new_response_outparam(sender).map_err(|e| PodError::BadRequest(chain(&e)))?;

        let pre = inner.pre.clone();
        let cpu = inner.pod.cpu.clone();
        let logs = inner.pod.logs.clone();
        let memory_limit = inner.pod.memory_limit;
        let task_outcome = outcome.clone();
        let instance = async move {
            let _permit = permit;
            cpu.wait_for_quota().await;
            let result = meter
                .run(async {
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
                })
                .await;
            result.map_err(|error| {
                let failure = task_outcome.classify(&error);
                let line = match &failure {
                    Failure::Trap(message) => format!("request trapped: {message}"),
                    Failure::OutOfMemory => format!("request killed: over the memory limit of {memory_limit} bytes"),
                    Failure::DeadlineExceeded => timeout_line(timeout),
                    Failure::Exit(code) => format!("request handler exited with {code}"),
                };
                task_outcome.report(&logs, line);
                failure
            })
        };
        // The instance runs in the caller's task until it sets the response (no hand-off
        // to another worker thread on the request path); then it moves to a task of its
        // own to stream the body on, reporting its own failures to the log.
        let mut instance = Box::pin(instance);
        let mut receiver = receiver;
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            response = &mut receiver => match response {
                Ok(Ok(response)) => {
                    tokio::spawn(instance);
                    Ok(response)
                }
                Ok(Err(code)) => {
                    tokio::spawn(instance);
                    Err(PodError::ErrorCode(format!("{code:?}")))
                }
                // The outparam was dropped unset: the instance ended; ask it why.
                Err(_) => Err(no_response(instance.await)),
            },
            ended = &mut instance => match receiver.try_recv() {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(code)) => Err(PodError::ErrorCode(format!("{code:?}"))),
                Err(_) => Err(no_response(ended)),
            },
            () = expired => {
                drop(instance);
                outcome.report(&inner.pod.logs, timeout_line(timeout));
                Err(PodError::Timeout)
            }
        }
    }
}

/// Why an instance that ended with `result` sent no response.
fn no_response(result: Result<(), Failure>) -> PodError {
    match result {
        Ok(()) => PodError::NoResponse,
        Err(Failure::OutOfMemory) => PodError::OutOfMemory,
        Err(Failure::DeadlineExceeded) => PodError::Timeout,
        Err(Failure::Exit(code)) => PodError::Trap { message: format!("the handler exited with {code}") },
        Err(Failure::Trap(message)) => PodError::Trap { message },
    }
}

fn timeout_line(timeout: Option<Duration>) -> String {
    match timeout {
        Some(timeout) => format!("request killed: ran past its request timeout of {timeout:?}"),
        None => "request killed: past its deadline".to_owned(),
    }
}
