//! The agent's side of `pods/log`, `pods/proxy` and `/stats/summary`, and the one place a
//! request enters a pod ([`Node::dispatch`]), which the Service proxy uses too.

use crate::Node;
use crate::container::{Crash, Handle};
use crate::metrics::PodRequests;
use crate::pod::PodHandles;
use async_trait::async_trait;
use bytes::Bytes;
use flotilla_api::{ApiError, Reason};
use flotilla_client::{Body, BoxError, Kubelet, LogOptions, Summary, full_body};
use flotilla_runtime::{BodyError, LogLine, PodError};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Frame;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

fn format_line(line: &LogLine, timestamps: bool) -> String {
    if !timestamps {
        return format!("{}\n", line.line);
    }
    let time = jiff::Timestamp::try_from(line.time).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("{} {}\n", time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), line.line)
}

/// Error text for a request a pod could not answer, with the HTTP status it gets.
fn pod_error_response(pod: &str, error: &PodError) -> http::Response<Body> {
    let code = match error {
        PodError::Timeout => 504,
        _ => 502,
    };
    let mut response = http::Response::new(full_body(format!("pod {pod}: {error}\n")));
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

impl Node {
    /// Sends one HTTP request into the pod's (first HTTP) container. A request that kills
    /// its instance (out of memory, a trap) crashes the container, as a process dying
    /// on a request would.
    pub async fn dispatch(
        &self,
        namespace: &str,
        pod: &str,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, ApiError> {
        self.dispatch_to(namespace, pod, None, request).await
    }

    /// [`dispatch`](Self::dispatch) to the HTTP container called `container` (the first
    /// HTTP container when `None`).
    pub(crate) async fn dispatch_to(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Body>, ApiError> {
        // A pod woken from zero may be bound here and not started yet: the proxy then
        // lets the request wait for it (a while, then the usual answer).
        let start_wait = request
            .headers_mut()
            .remove(flotilla_client::START_WAIT_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(|ms| Duration::from_millis(ms).min(MAX_START_WAIT));
        let deadline = tokio::time::Instant::now() + start_wait.unwrap_or_default();
        let mut hinted = false;
        let (handles, handle, http) = loop {
            // Registered before looking, so that a start between the look and the wait
            // is not missed.
            let started = self.inner.shared.http_started.notified();
            let running = self.handles(namespace, pod).map(|handles| {
                let http = handles.containers.iter().find_map(|h| {
                    let slot = h.lock();
                    let chosen = container.is_none_or(|name| slot.name == name);
                    slot.http.clone().filter(|_| chosen).map(|http| (h.clone(), http))
                });
                (handles, http)
            });
            match running {
                Some((handles, Some((handle, http)))) => break (handles, handle, http),
                _ if tokio::time::Instant::now() < deadline => {
                    if running.is_none() && !hinted {
                        hinted = true;
                        self.inner.hint(namespace, pod);
                    }
                    // Woken by any container starting; the time-out re-checks, too.
                    let _ = tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + START_RECHECK), started)
                        .await;
                }
                Some((_, None)) => {
                    return Err(ApiError::new(
                        Reason::ServiceUnavailable,
                        format!("pod {namespace}/{pod} has no running HTTP container"),
                    ));
                }
                None => {
                    return Err(ApiError::new(
                        Reason::ServiceUnavailable,
                        format!("pod {namespace}/{pod} is not running on node {}", self.name()),
                    ));
                }
            }
        };
        let request = request.map(|body| body.map_err(|e| BodyError::InternalError(Some(e.to_string()))));
        let mut in_flight = InFlight::start(&handle, &handles);
        let result = http.handle(request).await;
        match result {
            Ok(response) => {
                in_flight.answered(response.status());
                Ok(response.map(|body| body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
            }
            Err(error) => {
                match &error {
                    PodError::OutOfMemory => {
                        let _ = handle.crashes.send(Crash::OutOfMemory);
                    }
                    PodError::Trap { message } => {
                        let _ = handle.crashes.send(Crash::Trap(message.clone()));
                    }
                    _ => {}
                }
                let response = pod_error_response(&format!("{namespace}/{pod}"), &error);
                in_flight.answered(response.status());
                Ok(response)
            }
        }
    }
}

/// The longest a request may wait for its pod to start (`START_WAIT_HEADER`).
const MAX_START_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting request looks again without being woken (a pod that is not
/// coming, say): starts wake it at once.
const START_RECHECK: Duration = Duration::from_millis(50);

/// A request in a pod, from dispatch to its response head: counted in flight until
/// dropped, and then counted as answered, also when the caller gave up waiting (a proxy
/// timeout, a client gone), as 499 ("client closed request", nginx's code).
struct InFlight<'a> {
    handle: &'a Handle,
    requests: &'a PodRequests,
    started: Instant,
    status: http::StatusCode,
}

impl<'a> InFlight<'a> {
    fn start(handle: &'a Handle, pod: &'a PodHandles) -> Self {
        handle.in_flight.fetch_add(1, Ordering::AcqRel);
        let cancelled = http::StatusCode::from_u16(499).unwrap_or(http::StatusCode::REQUEST_TIMEOUT);
        InFlight { handle, requests: &pod.requests, started: Instant::now(), status: cancelled }
    }

    fn answered(&mut self, status: http::StatusCode) {
        self.status = status;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.handle.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.requests.observe(self.status, self.started.elapsed());
    }
}

#[async_trait]
impl Kubelet for Node {
    async fn logs(&self, namespace: &str, pod: &str, options: &LogOptions) -> Result<Body, ApiError> {
        let handles = self.handles(namespace, pod).ok_or_else(|| {
            ApiError::bad_request(format!("pod {pod} in namespace {namespace} is not running on node {}", self.name()))
        })?;
        let handle = handles.container(options.container.as_deref()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "container {} is not valid for pod {pod}",
                options.container.as_deref().unwrap_or("")
            ))
        })?;
        let buffer = {
            let slot = handle.lock();
            if options.previous {
                slot.previous.clone().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "previous terminated container \"{}\" in pod \"{pod}\" not found",
                        slot.name
                    ))
                })?
            } else {
                slot.logs.clone()
            }
        };
        let mut lines = match options.since_seconds {
            // Further back than the clock goes: everything.
            Some(seconds) => buffer
                .since(SystemTime::now().checked_sub(Duration::from_secs(seconds)).unwrap_or(SystemTime::UNIX_EPOCH)),
            None => buffer.lines(),
        };
        if let Some(tail) = options.tail_lines {
            lines.drain(..lines.len().saturating_sub(tail));
        }
        let mut budget = options.limit_bytes.unwrap_or(usize::MAX);
        let mut text = String::new();
        for line in &lines {
            let formatted = format_line(line, options.timestamps);
            if formatted.len() > budget {
                text.push_str(formatted.get(..budget).unwrap_or_default());
                budget = 0;
                break;
            }
            budget -= formatted.len();
            text.push_str(&formatted);
        }
        if !options.follow || budget == 0 {
            return Ok(full_body(text));
        }
        let last_seq = lines.last().map(|l| l.seq).unwrap_or_else(|| buffer.lines().last().map(|l| l.seq).unwrap_or(0));
        let timestamps = options.timestamps;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
                return;
            }
            let mut seq = last_seq;
            loop {
                let next = tokio::select! {
                    next = buffer.next_after(seq) => next,
                    () = tx.closed() => return,
                };
                // Empty: the container ended; so does the stream.
                let Some(last) = next.last() else { return };
                seq = last.seq;
                let mut chunk = String::new();
                for line in &next {
                    let formatted = format_line(line, timestamps);
                    if formatted.len() > budget {
                        chunk.push_str(formatted.get(..budget).unwrap_or_default());
                        let _ = tx.send(Bytes::from(chunk)).await;
                        return;
                    }
                    budget -= formatted.len();
                    chunk.push_str(&formatted);
                }
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
        });
        let stream = ReceiverStream::new(rx).map(|chunk| Ok::<_, BoxError>(Frame::data(chunk)));
        Ok(StreamBody::new(stream).boxed_unsync())
    }

    async fn proxy(
        &self,
        namespace: &str,
        pod: &str,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, ApiError> {
        self.dispatch(namespace, pod, request).await
    }

    async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        options: &flotilla_client::streaming::ExecOptions,
    ) -> Result<flotilla_client::streaming::ExecSession, ApiError> {
        self.exec_session(namespace, pod, options).await
    }

    async fn port_forward(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> Result<Box<dyn flotilla_client::streaming::Duplex>, ApiError> {
        self.port_forward_stream(namespace, pod, port)
    }

    async fn stats(&self) -> Result<Summary, ApiError> {
        Ok(self.stats_summary())
    }
}
