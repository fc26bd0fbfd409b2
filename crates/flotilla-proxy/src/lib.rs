//! Flotilla's Service and Ingress data plane: kube-proxy and an ingress controller in one
//! ([`Proxy`]), on hyper.
//!
//! It owns the routing of HTTP to Services. It watches Services, EndpointSlices,
//! Ingresses, IngressClasses and `kubernetes.io/tls` Secrets through
//! [`Cluster`](flotilla_client::Cluster), and rebuilds immutable routing tables that it
//! swaps atomically (a request loads the current one and takes no lock). With them it
//! routes pods' outgoing requests to Services in process ([`Proxy::forward`]), serves
//! the NodePort and LoadBalancer listeners (and writes LoadBalancer Services'
//! `status.loadBalancer`, as k3s' ServiceLB does), and serves Ingress on one HTTP and one
//! HTTPS listener (rustls, certificates by SNI). Requests are balanced over ready
//! endpoints round robin, least-request or power-of-two-choices
//! (`flotilla.dev/load-balancer`), with client-IP session affinity.
//!
//! It reaches pods only through [`Kubelets`](flotilla_client::Kubelets) (`proxy` of the
//! node an endpoint names): it must not depend on the runtime or the node agent, nor
//! maintain EndpointSlices (the EndpointSlice controller does), nor allocate cluster IPs
//! or node ports (the API server does). The only objects it writes are the `status` of
//! LoadBalancer Services, and the scale of a Deployment it wakes from zero for a
//! request (`wake`); while it holds that request it watches the Service's pods, and
//! sends it to the first ready one without waiting for its EndpointSlice.
//!
//! Requests reach a pod in origin form (`/path?query`) with a `Host` header (from the
//! HTTP/2 `:authority` when the client sent none), without hop-by-hop headers, with an
//! `x-request-id`; requests from the listeners also carry `X-Forwarded-For` (appended),
//! `X-Forwarded-Proto` and `X-Forwarded-Host`.
//!
//! It counts what it routes in the registry of [`ProxyConfig::metrics`]: per Service,
//! `flotilla_service_requests_total{namespace,service,code}`,
//! `flotilla_service_request_duration_seconds{namespace,service}` (to the response head)
//! and `flotilla_service_upstream_errors_total{namespace,service,reason}` (`no_endpoints`,
//! `pod_error`, `timeout`, `unreachable`, `retried`), for every request sent to a Service
//! (Ingress, NodePort, LoadBalancer, [`Proxy::forward`]); per Ingress route,
//! `flotilla_ingress_requests_total{namespace,ingress,service,code}` and
//! `flotilla_ingress_request_duration_seconds{namespace,ingress,service}` (all three
//! labels empty for a request no rule matches). Label values name cluster objects only,
//! never anything from a request, and an object's series go with it.

mod balancer;
mod config;
mod dispatch;
mod error;
mod ingress;
mod listener;
mod metrics;
mod proxy;
mod snapshot;
mod tls;
mod wake;
mod watcher;

#[cfg(test)]
mod tests;

pub use crate::config::ProxyConfig;
pub use crate::error::{ProxyError, Result};
pub use crate::proxy::Proxy;
