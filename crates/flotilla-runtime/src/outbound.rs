//! Outgoing HTTP (`wasi:http/outgoing-handler`): a pod's allow-list of hosts
//! ([`PodSpec::allowed_outbound_hosts`](crate::PodSpec::allowed_outbound_hosts)) and the
//! `wasi:http` hooks that decide where each request goes, in this order:
//!
//! 0. an `http` request to `localhost[:PORT]` (`127.0.0.1`, `[::1]`) goes to the pod's own
//!    container listening on PORT, through the spec's
//!    [`localhost`](crate::PodSpec::localhost) router;
//! 1. an `http` request to a cluster Service (one the runtime's
//!    [`ServiceRouter`](crate::ServiceRouter) claims for the pod's namespace: `SVC`,
//!    `SVC.NS`, `SVC.NS.svc.cluster.local`, `CLUSTER_IP:PORT`) goes to the router, in
//!    process, with no socket (see [`crate::service`] for bodies and timeouts). The
//!    allow-list is not asked: pods reach cluster Services by default, as in Kubernetes
//!    without a NetworkPolicy. `https` requests are never routed (the proxy holds no
//!    certificate for Service names; in-cluster traffic is `http`, as with kube-proxy);
//! 2. a request to a host of the allow-list goes out with wasmtime-wasi-http's default
//!    sender (plain TCP or TLS with the webpki roots);
//! 3. any other is refused with `HTTP-request-denied`, and a line on the pod's stderr log
//!    says which host.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::Scheme;
use http_body_util::BodyExt as _;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use crate::error::{Error, Result};
use crate::logs::{LogBuffer, LogStream};
use crate::service::{self, RouterSlot, ServiceRouter};

/// A pod's parsed allow-list. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowedHosts {
    patterns: Arc<[HostPattern]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern {
    host: HostMatch,
    port: PortMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    /// `*`.
    Any,
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
    /// `*.example.com`, kept as `.example.com`.
    Subdomain(String),
    /// An IPv4 or IPv6 literal, compared as an address (`[::1]` is `[0:0::1]`).
    Ip(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortMatch {
    /// No port given: the scheme's default, 80 for `http` and 443 for `https`.
    Default,
    /// `:*`.
    Any,
    Exact(u16),
}

impl AllowedHosts {
    /// Parses the entries of `allowed_outbound_hosts`; the first bad one is the error.
    pub(crate) fn parse(entries: &[String]) -> Result<AllowedHosts> {
        let patterns = entries
            .iter()
            .map(|entry| {
                parse_entry(entry).map_err(|reason| Error::InvalidOutboundHost { entry: entry.clone(), reason })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AllowedHosts { patterns: patterns.into() })
    }

    /// Whether a request to `uri` may leave the pod.
    pub(crate) fn allows(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else { return false };
        let default_port = if uri.scheme() == Some(&Scheme::HTTPS) { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = normalize_name(authority.host());
        let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        self.patterns.iter().any(|pattern| {
            let port_ok = match pattern.port {
                PortMatch::Default => port == default_port,
                PortMatch::Any => true,
                PortMatch::Exact(allowed) => port == allowed,
            };
            let host_ok = match &pattern.host {
                HostMatch::Any => true,
                HostMatch::Name(name) => ip.is_none() && host == *name,
                HostMatch::Subdomain(suffix) => ip.is_none() && host.len() > suffix.len() && host.ends_with(suffix),
                HostMatch::Ip(allowed) => ip == Some(*allowed),
            };
            port_ok && host_ok
        })
    }
}

fn normalize_name(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn parse_entry(entry: &str) -> Result<HostPattern, &'static str> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err("it is empty");
    }
    if entry.contains("://") {
        return Err("give `HOST` or `HOST:PORT`, without a scheme");
    }
    if entry.contains(['/', '?', '#', '@']) {
        return Err("give `HOST` or `HOST:PORT`, without a path, query or user");
    }
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => {
            let (address, after) = rest.split_once(']').ok_or("an IPv6 address needs its closing `]`")?;
            let address: IpAddr = address.parse().map_err(|_| "not an IPv6 address between `[` and `]`")?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':').ok_or("only `:PORT` may follow `]`")?),
            };
            (HostMatch::Ip(address), port)
        }
        None => {
            let (host, port) = match entry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            };
            (parse_host(host)?, port)
        }
    };
    let port = match port {
        None => PortMatch::Default,
        Some("*") => PortMatch::Any,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => PortMatch::Exact(port),
            _ => return Err("the port must be a number from 1 to 65535, or `*`"),
        },
    };
    Ok(HostPattern { host, port })
}

fn parse_host(host: &str) -> Result<HostMatch, &'static str> {
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostMatch::Ip(ip));
    }
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, host),
    };
    let name = normalize_name(name);
    if name.contains('*') {
        return Err("`*` may only be the whole host or the first label (`*.example.com`)");
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || !name.split('.').all(valid_label) {
        return Err("not a host name (letters, digits, `-` and `_` in dot-separated labels) nor an IP address");
    }
    Ok(if wildcard { HostMatch::Subdomain(format!(".{name}")) } else { HostMatch::Name(name) })
}

/// One instance's `wasi:http` hooks: cluster Services through the router, then the
/// allow-list in front of the default sender.
pub(crate) struct OutboundHttp {
    allowed: AllowedHosts,
    logs: LogBuffer,
    router: RouterSlot,
    /// The pod's own listeners, for `localhost`.
    localhost: Option<Arc<dyn ServiceRouter>>,
    /// The pod's namespace, where short Service names resolve.
    namespace: Arc<str>,
    /// When the instance is killed: routed requests do not wait past it.
    deadline: Option<Instant>,
}

impl OutboundHttp {
    pub(crate) fn new(
        allowed: AllowedHosts,
        logs: LogBuffer,
        router: RouterSlot,
        localhost: Option<Arc<dyn ServiceRouter>>,
        namespace: Arc<str>,
        deadline: Option<Instant>,
    ) -> OutboundHttp {
        OutboundHttp { allowed, logs, router, localhost, namespace, deadline }
    }
}

type IoFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;
type SendRequestFuture =
    Box<dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>> + Send>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoFuture,
    ) -> SendRequestFuture {
        let uri = request.uri();
        if let Some(local) = &self.localhost
            && uri.scheme() == Some(&Scheme::HTTP)
            && let Some(authority) = uri.authority()
            && local.is_service_host(&self.namespace, authority)
        {
            let response = service::send(local.as_ref(), &self.namespace, request, options, self.deadline);
            return Box::new(async move {
                let response = response.await?;
                Ok((response, Box::new(async { Ok(()) }) as IoFuture))
            });
        }
        if let Some(router) = self.router.get()
            && uri.scheme() == Some(&Scheme::HTTP)
            && let Some(authority) = uri.authority()
            && router.is_service_host(&self.namespace, authority)
        {
            tracing::debug!(namespace = %self.namespace, %authority, "routing an outgoing request to a cluster Service");
            let response = service::send(router.as_ref(), &self.namespace, request, options, self.deadline);
            return Box::new(async move {
                let response = response.await?;
                Ok((response, Box::new(async { Ok(()) }) as IoFuture))
            });
        }
        if !self.allowed.allows(uri) {
            let target = uri.authority().map_or("(no host)", |authority| authority.as_str());
            // The guest sees only `HTTP-request-denied`; the log says which host and why.
            self.logs.push(
                LogStream::Stderr,
                format!("outgoing HTTP request to {target} denied: not in the pod's allowed outbound hosts"),
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(|body| body.boxed_unsync()), Box::new(io) as IoFuture))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> AllowedHosts {
        AllowedHosts::parse(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>()).expect("valid entries")
    }

    fn uri(uri: &str) -> http::Uri {
        uri.parse().expect("uri")
    }

    #[test]
    fn names_ports_and_wildcards() {
        let hosts = allowed(&["Example.com", "api.example.org:8080", "*.svc.local", "127.0.0.1:*", "[::1]:9000"]);
        for yes in [
            "http://example.com/",
            "https://EXAMPLE.com./x",
            "http://example.com:80/",
            "http://api.example.org:8080/v1",
            "http://a.svc.local/",
            "https://a.b.svc.local/",
            "http://127.0.0.1:12345/",
            "http://[0:0::1]:9000/",
        ] {
            assert!(hosts.allows(&uri(yes)), "{yes} should be allowed");
        }
        for no in [
            "http://example.com:8080/",
            "http://sub.example.com/",
            "http://api.example.org/",
            "http://svc.local/",
            "http://evilsvc.local/",
            "http://127.0.0.2/",
            "http://[::1]:9001/",
            "/relative",
        ] {
            assert!(!hosts.allows(&uri(no)), "{no} should be denied");
        }
        assert!(!AllowedHosts::default().allows(&uri("http://example.com/")));
        assert!(allowed(&["*:*"]).allows(&uri("http://anything.at.all:1234/")));
        assert!(allowed(&["*"]).allows(&uri("https://anything/")));
        assert!(!allowed(&["*"]).allows(&uri("https://anything:444/")));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["", "http://example.com", "example.com/path", "exa*mple.com", "host:0", "host:http", "[::1", "a..b"]
        {
            let error = AllowedHosts::parse(&[bad.to_owned()]).expect_err(bad);
            assert!(matches!(&error, Error::InvalidOutboundHost { entry, .. } if entry == bad), "{error}");
        }
    }
}
