//! Cluster Services as a pod reaches them: the [`ServiceRouter`] the binary plugs into the
//! runtime (over the Service proxy), and the in-process send of a pod's outgoing request
//! through it, bodies streamed both ways and the pod's timeouts applied.
//!
//! The router's types are `http` and `bytes` ones ([`EdgeBody`]), never wasmtime's, so
//! the proxy can implement it without depending on the runtime and the runtime without
//! depending on the proxy: the binary glues them.
//!
//! Timeouts, as `wasi:http`'s request options and wasmtime-wasi-http's default sender
//! read them, so a pod sees the same behaviour in process and over the network:
//!
//! - no connection is made, so `connect-timeout` does not apply (reaching another node is
//!   the router's business, and it answers 502/503/504 itself);
//! - the response head must come within `first-byte-timeout` (default 600 s), else
//!   `connection-read-timeout`;
//! - each frame of the response body within `between-bytes-timeout` (default 600 s) of
//!   the previous one, else `connection-read-timeout`;
//! - and neither past the calling instance's own deadline (its request timeout or active
//!   deadline), else `HTTP-response-timeout`: an instance blocked in a host call does not
//!   run wasm, so the epoch deadline alone would not end it while it waits.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime_wasi_http::{RequestOptions, WasiBody};

/// An error inside an [`EdgeBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body crossing the runtime's edge to the Service proxy: the same type as
/// `flotilla_client::Body`. Errors the runtime puts in a request body are
/// [`BodyError`](crate::BodyError)s (boxed); a response body's `BodyError`s reach the pod
/// as they are, so a router passing a pod's [`ResponseBody`](crate::ResponseBody) on
/// keeps its error codes.
pub type EdgeBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A boxed, sendable future, as [`ServiceRouter::send`] returns it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where a pod's outgoing `http` requests to cluster Services go: the node's Service
/// proxy, in process. Set once on the [`Runtime`](crate::Runtime) with
/// [`set_service_router`](crate::Runtime::set_service_router).
///
/// A request the router claims is sent through it whatever the pod's
/// [`allowed_outbound_hosts`](crate::PodSpec::allowed_outbound_hosts): pods reach cluster
/// Services by default, as in Kubernetes without a NetworkPolicy. It is only asked about
/// `http` requests; `https` ones, and hosts it does not claim, go to the network if the
/// allow-list lets them.
pub trait ServiceRouter: Send + Sync + fmt::Debug {
    /// Whether a request from a pod in `namespace` to `authority` (as the pod wrote it:
    /// `SVC`, `SVC.NS`, `SVC.NS.svc.cluster.local`, `CLUSTER_IP`, each maybe with
    /// `:PORT`; no port means 80) is for a cluster Service. Called once per outgoing
    /// request, on the pod's task: keep it to a lookup in the current routing table.
    fn is_service_host(&self, namespace: &str, authority: &http::uri::Authority) -> bool;

    /// Sends a request [claimed](Self::is_service_host) for a pod in `namespace`. Its URI
    /// is absolute (`http://AUTHORITY/PATH?QUERY`) and it has a `Host` header; its body
    /// streams from the pod as the pod writes it. Always answers: the router turns its
    /// failures into 502, 503 or 504 responses.
    fn send(&self, namespace: &str, request: http::Request<EdgeBody>) -> BoxFuture<http::Response<EdgeBody>>;
}

/// The runtime's router, once the binary has set it. Shared by every pod's hooks, which
/// read it per request: pods made before it was set use it too.
#[derive(Clone, Default)]
pub(crate) struct RouterSlot(Arc<OnceLock<Arc<dyn ServiceRouter>>>);

impl fmt::Debug for RouterSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RouterSlot").field(&self.get()).finish()
    }
}

impl RouterSlot {
    /// Sets the router; `false` if one was already set (and is kept).
    pub(crate) fn set(&self, router: Arc<dyn ServiceRouter>) -> bool {
        self.0.set(router).is_ok()
    }

    pub(crate) fn get(&self) -> Option<&Arc<dyn ServiceRouter>> {
        self.0.get()
    }
}

/// wasmtime-wasi-http's default sender's timeouts when the pod sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Sends `request` through `router` for a pod in `namespace` whose instance ends at
/// `deadline`, with the timeouts of the module docs.
pub(crate) fn send(
    router: &dyn ServiceRouter,
    namespace: &str,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    deadline: Option<Instant>,
) -> impl Future<Output = wasmtime_wasi_http::Result<http::Response<WasiBody>>> + Send + 'static {
    let first_byte = options.and_then(|o| o.first_byte_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let between_bytes = options.and_then(|o| o.between_bytes_timeout).unwrap_or(DEFAULT_TIMEOUT);
    let deadline = deadline.map(tokio::time::Instant::from_std);
    let (head_by, bound) = earliest(tokio::time::Instant::now(), first_byte, deadline);
    let request = request.map(|body| body.map_err(|error| Box::new(error) as BoxError).boxed_unsync());
    let response = router.send(namespace, request);
    async move {
        let response = tokio::time::timeout_at(head_by, response).await.map_err(|_| bound.error())?;
        Ok(response.map(|body| TimedBody::new(body, between_bytes, deadline).boxed_unsync()))
    }
}

/// Which bound ends a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// The request's own timeout (first byte, between bytes).
    Timeout,
    /// The calling instance's deadline.
    Deadline,
}

impl Bound {
    fn error(self) -> wasmtime_wasi_http::Error {
        match self {
            Bound::Timeout => wasmtime_wasi_http::Error::ConnectionReadTimeout,
            Bound::Deadline => wasmtime_wasi_http::Error::HttpResponseTimeout,
        }
    }
}

/// When to stop waiting `timeout` after `now` or at `deadline`, whichever comes first,
/// and which one it is.
fn earliest(
    now: tokio::time::Instant,
    timeout: Duration,
    deadline: Option<tokio::time::Instant>,
) -> (tokio::time::Instant, Bound) {
    // A guest may ask for centuries: past what the clock holds, 30 years will do.
    let by_timeout = now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30));
    match deadline {
        Some(deadline) if deadline <= by_timeout => (deadline, Bound::Deadline),
        _ => (by_timeout, Bound::Timeout),
    }
}

/// The router's response body on its way to the pod: frames as they come, the router's
/// errors as `wasi:http` ones, and the between-bytes timeout and the instance's deadline.
struct TimedBody {
    inner: EdgeBody,
    between_bytes: Duration,
    deadline: Option<tokio::time::Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// What the timer is set for.
    bound: Bound,
    /// An error was given: the body is over.
    failed: bool,
}

impl TimedBody {
    fn new(inner: EdgeBody, between_bytes: Duration, deadline: Option<tokio::time::Instant>) -> TimedBody {
        let (at, bound) = earliest(tokio::time::Instant::now(), between_bytes, deadline);
        TimedBody {
            inner,
            between_bytes,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(at)),
            bound,
            failed: false,
        }
    }

    fn rearm(&mut self) {
        let (at, bound) = earliest(tokio::time::Instant::now(), self.between_bytes, self.deadline);
        self.timer.as_mut().reset(at);
        self.bound = bound;
    }
}

impl fmt::Debug for TimedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedBody")
            .field("between_bytes", &self.between_bytes)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.rearm();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.failed = true;
                Poll::Ready(Some(Err(body_error(error))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                this.failed = true;
                Poll::Ready(Some(Err(this.bound.error())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A router's body error as the pod sees it: a `wasi:http` error passes as it is (a pod's
/// own response body, relayed), hyper's and I/O errors become what wasmtime-wasi-http's
/// own sender would make of them, anything else `HTTP-response-incomplete`.
fn body_error(error: BoxError) -> wasmtime_wasi_http::Error {
    let error = match error.downcast::<wasmtime_wasi_http::Error>() {
        Ok(error) => return *error,
        Err(error) => error,
    };
    let error = match error.downcast::<hyper::Error>() {
        Ok(error) if error.is_timeout() => return wasmtime_wasi_http::Error::HttpResponseTimeout,
        Ok(error) => return wasmtime_wasi_http::Error::Hyper(*error),
        Err(error) => error,
    };
    match error.downcast::<std::io::Error>() {
        Ok(error) if error.kind() == std::io::ErrorKind::TimedOut => wasmtime_wasi_http::Error::ConnectionReadTimeout,
        Ok(_) => wasmtime_wasi_http::Error::ConnectionTerminated,
        Err(error) => {
            tracing::debug!(%error, "a Service response body failed");
            wasmtime_wasi_http::Error::HttpResponseIncomplete
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http_body_util::channel::{Channel, Sender};
    use wasmtime_wasi_http::WasiHttpHooks as _;

    use super::*;
    use crate::logs::{LogBuffer, LogStream};
    use crate::outbound::{AllowedHosts, OutboundHttp};

    /// Claims `echo` (answers 200 with the request's own body, streamed back) and `slow`
    /// (never answers); records what it was asked and sent.
    #[derive(Debug, Default)]
    struct Router {
        asked: Mutex<Vec<(String, String)>>,
        sent: Mutex<Vec<(String, String)>>,
    }

    impl ServiceRouter for Router {
        fn is_service_host(&self, namespace: &str, authority: &http::uri::Authority) -> bool {
            self.asked.lock().expect("lock").push((namespace.to_owned(), authority.to_string()));
            matches!(authority.host(), "echo" | "slow")
        }

        fn send(&self, namespace: &str, request: http::Request<EdgeBody>) -> BoxFuture<http::Response<EdgeBody>> {
            self.sent.lock().expect("lock").push((namespace.to_owned(), request.uri().to_string()));
            if request.uri().host() == Some("slow") {
                return Box::pin(std::future::pending());
            }
            Box::pin(async move { http::Response::new(request.into_body()) })
        }
    }

    struct Pod {
        hooks: OutboundHttp,
        logs: LogBuffer,
    }

    fn pod(router: &RouterSlot, allowed: &[&str], deadline: Option<Instant>) -> Pod {
        let allowed =
            AllowedHosts::parse(&allowed.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()).expect("valid hosts");
        let logs = LogBuffer::new(4096);
        Pod { hooks: OutboundHttp::new(allowed, logs.clone(), router.clone(), None, "shop".into(), deadline), logs }
    }

    fn slot(router: &Arc<Router>) -> RouterSlot {
        let slot = RouterSlot::default();
        assert!(slot.set(router.clone()));
        slot
    }

    /// A request whose body the test writes through the returned sender.
    fn request(uri: &str) -> (Sender<Bytes, wasmtime_wasi_http::Error>, http::Request<WasiBody>) {
        let (sender, body) = Channel::new(1);
        let request = http::Request::post(uri).body(body.boxed_unsync()).expect("request");
        (sender, request)
    }

    async fn send(
        pod: &mut Pod,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> wasmtime_wasi_http::Result<http::Response<WasiBody>> {
        let future = pod.hooks.send_request(request, options, Box::new(async { Ok(()) }));
        Pin::from(future).await.map(|(response, _io)| response)
    }

    async fn next_data(body: &mut WasiBody) -> wasmtime_wasi_http::Result<Option<Bytes>> {
        match body.frame().await {
            Some(frame) => Ok(frame?.into_data().ok()),
            None => Ok(None),
        }
    }

    fn timeouts(first_byte: Option<u64>, between_bytes: Option<u64>) -> Option<RequestOptions> {
        Some(RequestOptions {
            connect_timeout: None,
            first_byte_timeout: first_byte.map(Duration::from_millis),
            between_bytes_timeout: between_bytes.map(Duration::from_millis),
        })
    }

    #[tokio::test]
    async fn a_claimed_request_goes_to_the_router_with_bodies_streamed_both_ways() {
        let router = Arc::new(Router::default());
        // Not in the allow-list: Services need none.
        let mut pod = pod(&slot(&router), &[], None);
        let (mut to_router, request) = request("http://echo/upload?x=1");
        let response = send(&mut pod, request, None).await.expect("routed");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        // Each chunk comes back before the next is written: nothing waits for the whole body.
        for chunk in ["one", "two"] {
            to_router.send_data(Bytes::from_static(chunk.as_bytes())).await.expect("send");
            assert_eq!(next_data(&mut body).await.expect("frame").as_deref(), Some(chunk.as_bytes()));
        }
        drop(to_router);
        assert_eq!(next_data(&mut body).await.expect("end"), None);
        assert_eq!(*router.sent.lock().expect("lock"), [("shop".to_owned(), "http://echo/upload?x=1".to_owned())]);
        assert!(pod.logs.lines().is_empty());
    }

    #[tokio::test]
    async fn other_hosts_https_and_a_missing_router_fall_back_to_the_allow_list() {
        let router = Arc::new(Router::default());
        let mut with_router = pod(&slot(&router), &[], None);
        for uri in ["http://elsewhere/", "https://echo/"] {
            let error = send(&mut with_router, request(uri).1, None).await.expect_err("denied");
            assert!(matches!(error, wasmtime_wasi_http::Error::HttpRequestDenied), "{uri}: {error}");
        }
        // Only the `http` request was put to the router, and neither was sent to it.
        assert_eq!(*router.asked.lock().expect("lock"), [("shop".to_owned(), "elsewhere".to_owned())]);
        assert!(router.sent.lock().expect("lock").is_empty());
        let denied: Vec<_> = with_router.logs.lines().into_iter().filter(|l| l.stream == LogStream::Stderr).collect();
        assert_eq!(denied.len(), 2, "{denied:?}");
        assert!(denied[1].line.starts_with("outgoing HTTP request to echo denied"), "{denied:?}");

        // Without a router, a Service name is just a host: denied unless allowed.
        let empty = RouterSlot::default();
        let mut without = pod(&empty, &[], None);
        let error = send(&mut without, request("http://echo/").1, None).await.expect_err("denied");
        assert!(matches!(error, wasmtime_wasi_http::Error::HttpRequestDenied), "{error}");
        // A router set later serves pods made before it.
        assert!(empty.set(router.clone()));
        let response = send(&mut without, request("http://echo/").1, None).await.expect("routed");
        assert_eq!(response.status(), 200);
        assert!(!empty.set(router.clone()), "set twice");
    }

    #[tokio::test]
    async fn the_first_byte_timeout_bounds_the_wait_for_the_head() {
        let router = Arc::new(Router::default());
        let mut pod = pod(&slot(&router), &[], None);
        let started = Instant::now();
        let error = send(&mut pod, request("http://slow/").1, timeouts(Some(50), None)).await.expect_err("timeout");
        assert!(matches!(error, wasmtime_wasi_http::Error::ConnectionReadTimeout), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn the_between_bytes_timeout_bounds_each_frame() {
        let router = Arc::new(Router::default());
        let mut pod = pod(&slot(&router), &[], None);
        let (mut to_router, request) = request("http://echo/");
        let response = send(&mut pod, request, timeouts(None, Some(100))).await.expect("routed");
        let mut body = response.into_body();
        to_router.send_data(Bytes::from_static(b"first")).await.expect("send");
        assert_eq!(next_data(&mut body).await.expect("frame").as_deref(), Some(&b"first"[..]));
        // Then nothing: the body fails rather than hang, and is over.
        let error = next_data(&mut body).await.expect_err("stalled");
        assert!(matches!(error, wasmtime_wasi_http::Error::ConnectionReadTimeout), "{error}");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn nothing_waits_past_the_instances_deadline() {
        let router = Arc::new(Router::default());
        let slot = slot(&router);
        let deadline = || Some(Instant::now() + Duration::from_millis(100));
        let mut pod_for_head = pod(&slot, &[], deadline());
        let error = send(&mut pod_for_head, request("http://slow/").1, None).await.expect_err("timeout");
        assert!(matches!(error, wasmtime_wasi_http::Error::HttpResponseTimeout), "{error}");

        let mut pod_for_body = pod(&slot, &[], deadline());
        let (_to_router, request) = request("http://echo/");
        let response = send(&mut pod_for_body, request, timeouts(Some(60_000), Some(60_000))).await.expect("routed");
        let error = next_data(&mut response.into_body()).await.expect_err("timeout");
        assert!(matches!(error, wasmtime_wasi_http::Error::HttpResponseTimeout), "{error}");
    }

    #[test]
    fn body_errors_become_wasi_http_errors() {
        let relayed = body_error(Box::new(wasmtime_wasi_http::Error::ConnectionTerminated));
        assert!(matches!(relayed, wasmtime_wasi_http::Error::ConnectionTerminated), "{relayed}");
        let timed_out = body_error(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        assert!(matches!(timed_out, wasmtime_wasi_http::Error::ConnectionReadTimeout), "{timed_out}");
        let reset = body_error(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(matches!(reset, wasmtime_wasi_http::Error::ConnectionTerminated), "{reset}");
        let other = body_error("the upstream went away".into());
        assert!(matches!(other, wasmtime_wasi_http::Error::HttpResponseIncomplete), "{other}");
    }
}
