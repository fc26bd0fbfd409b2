//! The API server's metrics, named as kube-apiserver names them, and `/metrics` itself.
//!
//! - `apiserver_request_total{verb,resource,code}` and
//!   `apiserver_request_duration_seconds{verb,resource}`: every request, over HTTP and
//!   from the in-process components (scheduler, controllers, the built-in node), which
//!   are API clients like any other here. `verb` is kube's (`GET`, `LIST`, `WATCH`,
//!   `CREATE`, `UPDATE`, `PATCH`, `APPLY`, `DELETE`, `DELETECOLLECTION`, `CONNECT`, or the
//!   HTTP method of a path that is no resource); `resource` the plural of a known kind or
//!   `other`. A request's duration runs until its response head: a watch's is how long it
//!   took to start streaming, not how long it streamed.
//! - `apiserver_registered_watchers{resource}`: watches open now, HTTP and in process.
//!
//! Every label value is one of a fixed set (verbs, the kinds' plurals, status codes), so
//! the series stay bounded whatever clients send.

use flotilla_api::ResourceType;
use http::{HeaderMap, Method, StatusCode, header};
use prometheus::{Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::time::Duration;

/// kube-apiserver's request latency buckets (trimmed below 5 ms, where this server lives).
const DURATION_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// The `resource` of a request that names no known kind.
pub(crate) const OTHER: &str = "other";

/// The API server's metric families.
#[derive(Debug, Clone)]
pub(crate) struct ApiMetrics {
    requests: IntCounterVec,
    durations: HistogramVec,
    watchers: IntGaugeVec,
}

impl ApiMetrics {
    /// The families, registered in `registry`.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<ApiMetrics> {
        let requests = IntCounterVec::new(
            Opts::new(
                "apiserver_request_total",
                "Counter of apiserver requests broken out for each verb, resource and HTTP response code.",
            ),
            &["verb", "resource", "code"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "apiserver_request_duration_seconds",
                "Response latency distribution in seconds for each verb and resource (until the response head).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["verb", "resource"],
        )?;
        let watchers = IntGaugeVec::new(
            Opts::new("apiserver_registered_watchers", "Number of currently registered watchers for a given resource."),
            &["resource"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(watchers.clone()))?;
        Ok(ApiMetrics { requests, durations, watchers })
    }

    /// Counts one request.
    pub(crate) fn observe(&self, verb: &str, resource: &str, code: StatusCode, duration: Duration) {
        self.requests.with_label_values(&[verb, resource, code.as_str()]).inc();
        self.durations.with_label_values(&[verb, resource]).observe(duration.as_secs_f64());
    }

    /// Counts a watch of `resource` as registered until the guard is dropped.
    pub(crate) fn watcher(&self, resource: &str) -> WatcherGuard {
        let gauge = self.watchers.with_label_values(&[resource]);
        gauge.inc();
        WatcherGuard(gauge)
    }
}

/// One registered watcher; dropping it unregisters it.
#[derive(Debug)]
pub(crate) struct WatcherGuard(IntGauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// kube's verb and the resource of an HTTP request, from its method, path, query and
/// Content-Type alone (as kube-apiserver's `RequestInfoFactory` reads them, before the
/// request is routed).
pub(crate) fn request_info(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> (&'static str, &'static str) {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let rest: Vec<&str> = match segments.next() {
        Some("api") => match segments.next() {
            Some(version) => std::iter::once("").chain(std::iter::once(version)).chain(segments).collect(),
            None => return (non_resource_verb(method), OTHER),
        },
        Some("apis") => match (segments.next(), segments.next()) {
            (Some(group), Some(version)) => [group, version].into_iter().chain(segments).collect(),
            _ => return (non_resource_verb(method), OTHER),
        },
        _ => return (non_resource_verb(method), OTHER),
    };
    let [group, version, rest @ ..] = rest.as_slice() else { return (non_resource_verb(method), OTHER) };
    let (watch_path, rest) = match rest.split_first() {
        Some((&"watch", rest)) => (true, rest),
        _ => (false, rest),
    };
    let (plural, name, subresource) = match rest {
        ["namespaces", _, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (*plural, tail.first(), tail.get(1))
        }
        [plural, tail @ ..] => (*plural, tail.first(), tail.get(1)),
        [] => return (non_resource_verb(method), OTHER),
    };
    let resource = flotilla_api::by_plural(group, version, plural).map_or(OTHER, |rt: &ResourceType| rt.plural);
    let verb = match *method {
        Method::GET if subresource == Some(&"proxy") => "CONNECT",
        Method::GET if watch_path || wants_watch(query) => "WATCH",
        Method::GET if name.is_none() => "LIST",
        Method::GET | Method::HEAD => "GET",
        Method::POST if subresource == Some(&"proxy") => "CONNECT",
        Method::POST => "CREATE",
        Method::PUT => "UPDATE",
        Method::PATCH if is_apply(headers) => "APPLY",
        Method::PATCH => "PATCH",
        Method::DELETE if name.is_none() => "DELETECOLLECTION",
        Method::DELETE => "DELETE",
        _ if subresource == Some(&"proxy") => "CONNECT",
        _ => non_resource_verb(method),
    };
    (verb, resource)
}

/// `?watch=true` (or `1`).
fn wants_watch(query: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "watch")
        .last()
        .is_some_and(|(_, value)| matches!(value.to_ascii_lowercase().as_str(), "true" | "1" | "t" | "yes"))
}

fn is_apply(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/apply-patch"))
}

/// The verb of a request that is not for a resource: its method, from a fixed set.
fn non_resource_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The Content-Type of the text exposition format, version 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every family of `registry`, in the text exposition format.
pub(crate) fn encode(registry: &Registry) -> Result<Vec<u8>, prometheus::Error> {
    let mut buffer = Vec::with_capacity(64 * 1024);
    prometheus::TextEncoder::new().encode(&registry.gather(), &mut buffer)?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str) -> (&'static str, &'static str) {
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        request_info(&method, path, query, &HeaderMap::new())
    }

    #[test]
    fn verbs_and_resources_are_kubes() {
        assert_eq!(info(Method::GET, "/api/v1/namespaces/default/pods"), ("LIST", "pods"));
        assert_eq!(info(Method::GET, "/api/v1/pods"), ("LIST", "pods"));
        assert_eq!(info(Method::GET, "/api/v1/namespaces/default/pods/web-1"), ("GET", "pods"));
        assert_eq!(info(Method::GET, "/api/v1/namespaces/default/pods?watch=1"), ("WATCH", "pods"));
        assert_eq!(info(Method::GET, "/api/v1/watch/namespaces/default/pods"), ("WATCH", "pods"));
        assert_eq!(info(Method::POST, "/apis/apps/v1/namespaces/default/deployments"), ("CREATE", "deployments"));
        assert_eq!(info(Method::PUT, "/apis/apps/v1/namespaces/x/deployments/d/status"), ("UPDATE", "deployments"));
        assert_eq!(info(Method::PATCH, "/apis/apps/v1/namespaces/x/deployments/d/scale"), ("PATCH", "deployments"));
        assert_eq!(info(Method::DELETE, "/api/v1/namespaces/default/pods"), ("DELETECOLLECTION", "pods"));
        assert_eq!(info(Method::DELETE, "/api/v1/namespaces/default/pods/p"), ("DELETE", "pods"));
        assert_eq!(info(Method::GET, "/api/v1/namespaces/default/pods/p/proxy/x/y"), ("CONNECT", "pods"));
        assert_eq!(info(Method::GET, "/api/v1/namespaces/default/pods/p/log"), ("GET", "pods"));
        assert_eq!(info(Method::GET, "/api/v1/namespaces/default"), ("GET", "namespaces"));
        assert_eq!(info(Method::PUT, "/api/v1/namespaces/default/finalize"), ("UPDATE", "namespaces"));
        assert_eq!(info(Method::GET, "/api/v1/nodes/n1"), ("GET", "nodes"));
        let mut apply = HeaderMap::new();
        apply.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/apply-patch+yaml"));
        assert_eq!(request_info(&Method::PATCH, "/api/v1/namespaces/a/pods/p", None, &apply), ("APPLY", "pods"));
    }

    #[test]
    fn anything_else_is_bounded() {
        // Unknown kinds, made-up paths and non-resource paths never become label values.
        assert_eq!(info(Method::GET, "/api/v1/namespaces/default/widgets/w"), ("GET", OTHER));
        assert_eq!(info(Method::GET, "/apis/example.com/v1/whatever"), ("LIST", OTHER));
        assert_eq!(info(Method::GET, "/healthz"), ("GET", OTHER));
        assert_eq!(info(Method::GET, "/metrics"), ("GET", OTHER));
        assert_eq!(info(Method::GET, "/some/random/path/abc123"), ("GET", OTHER));
        assert_eq!(info(Method::GET, "/api"), ("GET", OTHER));
        assert_eq!(info(Method::GET, "/apis/apps"), ("GET", OTHER));
        assert_eq!(info(Method::from_bytes(b"BREW").unwrap_or(Method::GET), "/x"), ("OTHER", OTHER));
    }

    #[test]
    fn requests_and_watchers_are_counted() -> Result<(), Box<dyn std::error::Error>> {
        let registry = Registry::new();
        let metrics = ApiMetrics::register(&registry)?;
        metrics.observe("LIST", "pods", StatusCode::OK, Duration::from_millis(3));
        metrics.observe("LIST", "pods", StatusCode::OK, Duration::from_millis(3));
        metrics.observe("CREATE", "pods", StatusCode::CONFLICT, Duration::from_millis(1));
        let guard = metrics.watcher("pods");
        let text = String::from_utf8(encode(&registry)?)?;
        assert!(text.contains("apiserver_request_total{code=\"200\",resource=\"pods\",verb=\"LIST\"} 2"), "{text}");
        assert!(text.contains("apiserver_request_total{code=\"409\",resource=\"pods\",verb=\"CREATE\"} 1"), "{text}");
        assert!(text.contains("apiserver_request_duration_seconds_count{resource=\"pods\",verb=\"LIST\"} 2"), "{text}");
        assert!(text.contains("apiserver_registered_watchers{resource=\"pods\"} 1"), "{text}");
        drop(guard);
        let text = String::from_utf8(encode(&registry)?)?;
        assert!(text.contains("apiserver_registered_watchers{resource=\"pods\"} 0"), "{text}");
        Ok(())
    }
}
