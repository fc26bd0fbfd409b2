//! The caps on requests in flight, as kube-apiserver's `--max-requests-inflight` and
//! `--max-mutating-requests-inflight` (its `WithMaxInFlightLimit` filter): a request
//! that would go past its cap is answered at once with 429 `TooManyRequests`,
//! `Retry-After: 1` and a `Status` body, rather than queued. Read-only requests (get,
//! list) and mutating ones (everything else) have separate caps; long-running requests
//! (watches, logs, proxy, exec, attach, port-forward) are exempt, as they are in
//! kube-apiserver. A request holds its place until its response has been sent.
//!
//! Unlike kube-apiserver, which lets `system:masters` past a full cap, the admin token is
//! held to it too: it is what every kubectl of a Flotilla cluster uses, so exempting it
//! would exempt nearly everyone. The components of `flotilla server` itself do not go
//! through HTTP and are not counted.
//!
//! It counts in `apiserver_current_inflight_requests{request_kind}` and
//! `apiserver_dropped_requests_total{request_kind}` (`readOnly`, `mutating`), as
//! kube-apiserver does.

use crate::http::{ApiState, Body};
use flotilla_api::{ApiError, Reason};
use flotilla_client::{full_body, hold_until_done};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The subresources and verbs kube-apiserver treats as long-running.
const LONG_RUNNING_SUBRESOURCES: [&str; 5] = ["attach", "exec", "proxy", "log", "portforward"];

/// The two caps and their metrics.
#[derive(Debug, Clone)]
pub(crate) struct InFlightLimits {
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    current: IntGaugeVec,
    dropped: IntCounterVec,
}

/// What a request counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LongRunning,
    ReadOnly,
    Mutating,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::LongRunning => "longRunning",
            Kind::ReadOnly => "readOnly",
            Kind::Mutating => "mutating",
        }
    }
}

/// A cap is reached: the request is refused.
#[derive(Debug)]
struct Full;

/// A request's place under its cap, until dropped.
#[derive(Debug)]
struct Place {
    _permit: OwnedSemaphorePermit,
    current: prometheus::IntGauge,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.current.dec();
    }
}

impl InFlightLimits {
    /// Caps of `read_only` and `mutating` requests (0: no cap), counting in `registry`.
    pub(crate) fn new(read_only: usize, mutating: usize, registry: &Registry) -> prometheus::Result<Self> {
        let current = IntGaugeVec::new(
            Opts::new(
                "apiserver_current_inflight_requests",
                "Requests in flight now, by kind (readOnly, mutating), under the caps of \
                 --max-requests-inflight and --max-mutating-requests-inflight.",
            ),
            &["request_kind"],
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "apiserver_dropped_requests_total",
                "Requests refused with 429 because their kind's in-flight cap was reached.",
            ),
            &["request_kind"],
        )?;
        registry.register(Box::new(current.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        let cap = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Ok(InFlightLimits { read_only: cap(read_only), mutating: cap(mutating), current, dropped })
    }

    /// A place for a request of `kind` under its cap (`None` when it has none), or
    /// `Full` when the cap is reached (counted as dropped).
    fn admit(&self, kind: Kind) -> Result<Option<Place>, Full> {
        let cap = match kind {
            Kind::LongRunning => None,
            Kind::ReadOnly => self.read_only.as_ref(),
            Kind::Mutating => self.mutating.as_ref(),
        };
        match cap.map(|cap| cap.clone().try_acquire_owned()) {
            None => Ok(None),
            Some(Ok(permit)) => {
                let current = self.current.with_label_values(&[kind.label()]);
                current.inc();
                Ok(Some(Place { _permit: permit, current }))
            }
            Some(Err(_)) => {
                self.dropped.with_label_values(&[kind.label()]).inc();
                Err(Full)
            }
        }
    }

    /// Serves `request` within its cap, or answers 429.
    pub(crate) async fn serve(self, request: Request<Incoming>, state: Arc<ApiState>) -> Response<Body> {
        let kind = kind(request.method(), request.uri().path(), request.uri().query());
        let place = match self.admit(kind) {
            Ok(place) => place,
            Err(Full) => return too_many_requests(),
        };
        let response = match crate::http::handle(state, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        match place {
            Some(place) => response.map(|body| hold_until_done(body, place)),
            None => response,
        }
    }
}

/// kube-apiserver's answer past the cap: 429, `Retry-After: 1`, a `TooManyRequests`
/// Status.
fn too_many_requests() -> Response<Body> {
    let error = ApiError::new(Reason::TooManyRequests, "Too many requests, please try again later.");
    let mut status = serde_json::to_value(error.to_status()).unwrap_or_default();
    status["details"] = serde_json::json!({ "retryAfterSeconds": 1 });
    let mut response = Response::new(full_body(serde_json::to_vec(&status).unwrap_or_default()));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// What a request counts as: long-running (a watch, or a subresource of
/// [`LONG_RUNNING_SUBRESOURCES`]), read-only (GET, HEAD, OPTIONS) or mutating.
fn kind(method: &Method, path: &str, query: Option<&str>) -> Kind {
    let watch_param = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(key, value)| key == "watch" && (value == "true" || value == "1"));
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // After `/api/v1` or `/apis/GROUP/VERSION`: `[namespaces/NS/]RESOURCE[/NAME[/SUB…]]`.
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[][..],
    };
    let watch_path = rest.first() == Some(&"watch");
    let rest = match rest {
        ["namespaces", _, rest @ ..] if rest.len() >= 2 => rest,
        rest => rest,
    };
    let subresource = rest.get(2).copied();
    if watch_param || watch_path || subresource.is_some_and(|sub| LONG_RUNNING_SUBRESOURCES.contains(&sub)) {
        Kind::LongRunning
    } else if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        Kind::ReadOnly
    } else {
        Kind::Mutating
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_long_running_read_only_or_mutating_as_kube_apiserver_says() {
        let get = &Method::GET;
        for (method, path, query, want) in [
            (get, "/api/v1/namespaces/default/pods", None, Kind::ReadOnly),
            (get, "/api/v1/namespaces/default/pods", Some("watch=true"), Kind::LongRunning),
            (get, "/api/v1/namespaces/default/pods", Some("watch=1&labelSelector=a"), Kind::LongRunning),
            (get, "/api/v1/watch/namespaces/default/pods", None, Kind::LongRunning),
            (get, "/apis/apps/v1/watch/deployments", None, Kind::LongRunning),
            (get, "/api/v1/namespaces/default/pods/web/log", Some("follow=true"), Kind::LongRunning),
            (get, "/api/v1/namespaces/default/pods/web/proxy/some/path", None, Kind::LongRunning),
            (&Method::POST, "/api/v1/namespaces/default/pods/web/portforward", None, Kind::LongRunning),
            (get, "/api/v1/namespaces/default/services/web/proxy", None, Kind::LongRunning),
            (get, "/api/v1/nodes/n1/proxy/metrics", None, Kind::LongRunning),
            // An object that happens to be called `proxy` or `log` is not a subresource.
            (get, "/api/v1/namespaces/default/configmaps/proxy", None, Kind::ReadOnly),
            (get, "/api/v1/namespaces/log", None, Kind::ReadOnly),
            (&Method::DELETE, "/api/v1/namespaces/proxy", None, Kind::Mutating),
            (&Method::POST, "/api/v1/namespaces/default/configmaps", None, Kind::Mutating),
            (&Method::PATCH, "/apis/apps/v1/namespaces/default/deployments/web/scale", None, Kind::Mutating),
            (&Method::PUT, "/api/v1/namespaces/default/pods/web/status", None, Kind::Mutating),
            (get, "/version", None, Kind::ReadOnly),
            (get, "/readyz", None, Kind::ReadOnly),
        ] {
            assert_eq!(kind(method, path, query), want, "{method} {path}?{query:?}");
        }
    }

    #[test]
    fn each_kind_has_its_own_cap_and_long_running_requests_none() {
        let registry = Registry::new();
        let limits = InFlightLimits::new(1, 2, &registry).expect("limits");
        let read = limits.admit(Kind::ReadOnly).expect("a first read");
        limits.admit(Kind::ReadOnly).expect_err("a second read");
        let refused = too_many_requests();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        let writes = [limits.admit(Kind::Mutating).expect("a write"), limits.admit(Kind::Mutating).expect("a write")];
        assert!(limits.admit(Kind::Mutating).is_err(), "a third write");
        for _ in 0..10 {
            assert!(limits.admit(Kind::LongRunning).expect("a watch").is_none());
        }
        assert_eq!(limits.current.with_label_values(&["mutating"]).get(), 2);
        drop(read);
        drop(writes);
        assert!(limits.admit(Kind::ReadOnly).is_ok(), "a read once the first is done");
        assert!(limits.admit(Kind::Mutating).is_ok(), "a write once the others are done");
        assert_eq!(limits.dropped.with_label_values(&["readOnly"]).get(), 1);
        assert_eq!(limits.dropped.with_label_values(&["mutating"]).get(), 1);

        let unlimited = InFlightLimits::new(0, 0, &Registry::new()).expect("limits");
        assert!(unlimited.admit(Kind::Mutating).expect("no cap").is_none());
    }
}
