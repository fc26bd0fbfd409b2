//! HTTP pods: a pre-instantiated `wasi:http/proxy` component, a fresh instance per request.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use tokio::sync::{Semaphore, oneshot};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::error::{Error, PodError, Result, chain};
use crate::logs::LogBuffer;
use crate::runtime::{ImageKind, Runtime};
use crate::spec::PodSpec;
use crate::state::{Failure, PodState, new_store};
use crate::{Image, LogStream};

/// The body of a pod's response, streamed from its instance as it writes it.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// A running HTTP pod. Cheap to clone; clones share the concurrency bound.
#[derive(Clone)]
pub struct HttpPod {
    inner: Arc<Inner>,
}

struct Inner {
    // Keeps the epoch ticker alive while the pod is.
    _runtime: Runtime,
    pre: ProxyPre<PodState>,
    spec: PodSpec,
    logs: LogBuffer,
    memory_limit: usize,
    permits: Arc<Semaphore>,
}

impl fmt::Debug for HttpPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPod")
            .field("spec", &self.inner.spec)
            .field("memory_limit", &self.inner.memory_limit)
            .field("available_permits", &self.inner.permits.available_permits())
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
        let memory_limit = runtime.memory_limit(&spec);
        // Fail now, not per request, if a preopened directory cannot be opened.
        new_store(pre.engine(), &spec, &logs, memory_limit, None)?;
        let permits = Arc::new(Semaphore::new(spec.limits.max_concurrent_requests.max(1)));
        Ok(HttpPod { inner: Arc::new(Inner { _runtime: runtime, pre, spec, logs, memory_limit, permits }) })
    }

    /// The pod's log.
    pub fn logs(&self) -> &LogBuffer {
        &self.inner.logs
    }

    /// Runs `req` in a fresh instance and returns its response once the component sets it;
    /// the body streams on while the instance runs. Waits while the pod is at its
    /// concurrency limit. A request without an authority gets `Host: localhost`.
    pub async fn handle<B>(&self, mut req: hyper::Request<B>) -> Result<hyper::Response<ResponseBody>, PodError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let inner = &self.inner;
        let permit = inner.permits.clone().acquire_owned().await.map_err(|e| PodError::BadRequest(e.to_string()))?;
        let deadline = inner.spec.limits.request_timeout.map(|timeout| Instant::now() + timeout);
        if req.uri().authority().is_none() && !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, HeaderValue::from_static("localhost"));
        }

        let engine = inner.pre.engine();
        let (mut store, outcome) = new_store(engine, &inner.spec, &inner.logs, inner.memory_limit, deadline)
            .map_err(|e| PodError::BadRequest(e.to_string()))?;
        let (sender, receiver) = oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .map_err(|e| PodError::BadRequest(chain(&e)))?;
        let out = store.data_mut().http().new_response_outparam(sender).map_err(|e| PodError::BadRequest(chain(&e)))?;

        let pre = inner.pre.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
        });
        let abort = task.abort_handle();
        let logs = inner.logs.clone();
        let response = async move {
            match receiver.await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(code)) => Err(PodError::ErrorCode(format!("{code:?}"))),
                // The outparam was dropped unset: the instance ended; ask it why.
                Err(_) => match task.await {
                    Ok(Ok(())) => Err(PodError::NoResponse),
                    Ok(Err(error)) => Err(match outcome.classify(&error) {
                        Failure::OutOfMemory => PodError::OutOfMemory,
                        Failure::DeadlineExceeded => PodError::Timeout,
                        Failure::Exit(code) => PodError::Trap { message: format!("the handler exited with {code}") },
                        Failure::Trap(message) => {
                            logs.push(LogStream::Stderr, format!("request trapped: {message}"));
                            PodError::Trap { message }
                        }
                    }),
                    Err(join) => Err(PodError::Trap { message: join.to_string() }),
                },
            }
        };
        match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.into(), response).await {
                Ok(result) => result,
                Err(_) => {
                    abort.abort();
                    Err(PodError::Timeout)
                }
            },
            None => response.await,
        }
    }
}
