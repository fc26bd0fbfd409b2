//! The HTTP edge: authentication, routing of Kubernetes REST paths, content
//! negotiation, body limits, and turning every failure into a `Status`.

use crate::registry::{
    DeleteOptions, Deleted, FieldValidation, ListQuery, PatchType, Registry, WriteOptions, parse_resource_version,
};
use crate::watch::{self, WatchQuery};
use crate::{discovery, metrics, openapi, protobuf, resource_metrics, tables};
use bytes::Bytes;
use flotilla_api::{
    ApiError, FieldSelector, Format, LabelSelector, Reason, ResourceType, Subresource, decode_object, encode,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument as _;

/// Request bodies over this size are refused, as kube-apiserver refuses them.
pub use flotilla_api::limits::MAX_BODY_BYTES;

pub use flotilla_client::Body;

/// What every request handler shares.
#[derive(Debug)]
pub struct ApiState {
    pub registry: Registry,
    pub admin_token: String,
    pub node_token: String,
    /// The cluster CA, served at `/cacerts` for joining agents.
    pub ca_pem: String,
    /// `host:port` clients reach the server at, for `/api` discovery.
    pub server_address: String,
    /// Wakes the namespace finalizer after a namespace delete.
    pub namespace_poke: Arc<Notify>,
    /// The nodes' agents, for `pods/log` and `pods/proxy`.
    pub kubelets: flotilla_client::Kubelets,
    /// Where pushed images are kept (`DIR/NAME/TAG.wasm`).
    pub images_dir: std::path::PathBuf,
    /// The nodes' built-in images, `(name, what it is)`.
    pub builtin_images: Vec<(String, String)>,
    pub request_ids: AtomicU64,
    /// Requests are counted here.
    pub metrics: crate::metrics::ApiMetrics,
    /// What `/metrics` serves.
    pub metrics_registry: prometheus::Registry,
    /// The scraped usage `metrics.k8s.io` serves.
    pub resource_metrics: crate::resource_metrics::ResourceMetrics,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    flotilla_client::full_body(bytes)
}

fn respond(code: u16, value: &Value, format: Format) -> Response<Body> {
    let content_type = match format {
        Format::Json => "application/json",
        Format::Yaml => "application/yaml",
    };
    let mut response = Response::new(full(encode(value, format)));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Prebuilt bytes with their Content-Type (OpenAPI documents).
fn respond_bytes(bytes: &'static [u8], content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(bytes)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// A JSON body with a specific Content-Type (aggregated discovery, tables).
fn respond_as(value: &Value, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(encode(value, Format::Json)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

fn error_response(error: &ApiError, format: Format) -> Response<Body> {
    let status = serde_json::to_value(error.to_status()).unwrap_or_default();
    let mut body = json!({"kind": "Status", "apiVersion": "v1"});
    if let (Value::Object(out), Value::Object(fields)) = (&mut body, status) {
        out.extend(fields);
    }
    let mut response = respond(error.code(), &body, format);
    if matches!(error.reason, Reason::ServiceUnavailable | Reason::TooManyRequests) {
        // As kube-apiserver: a client may try again, after this many seconds.
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// Serves one request; never fails (errors become `Status` responses).
pub async fn handle(state: Arc<ApiState>, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let id = state.request_ids.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("request", id, method = %request.method(), path = %request.uri().path());
    let started = std::time::Instant::now();
    let (verb, resource) =
        metrics::request_info(request.method(), request.uri().path(), request.uri().query(), request.headers());
    let format = response_format(request.headers()).unwrap_or(Format::Json);
    let response = async {
        match route(&state, request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(code = error.code(), message = %error.message, "request failed");
                error_response(&error, format)
            }
        }
    }
    .instrument(span)
    .await;
    state.metrics.observe(verb, resource, response.status(), started.elapsed());
    Ok(response)
}

/// The response format the Accept header asks for: JSON unless YAML comes first;
/// protobuf alone is not served.
fn response_format(headers: &HeaderMap) -> Result<Format, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Format::Json);
    };
    for media in accept.split(',') {
        let essence = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" | "*/*" | "application/*" | "" => return Ok(Format::Json),
            "application/yaml" => return Ok(Format::Yaml),
            _ => {}
        }
    }
    Err(ApiError::new(
        Reason::NotAcceptable,
        format!(
            "only the following media types are accepted: application/json, application/yaml (asked for: {accept})"
        ),
    ))
}

fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    // Node agents hold the node token; until there is RBAC it grants what the admin's does.
    let given = token.trim().as_bytes();
    constant_time_eq(given, state.admin_token.as_bytes()) || constant_time_eq(given, state.node_token.as_bytes())
}

/// Constant time in the token's length, so timing does not reveal a prefix.
pub(crate) fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// A parsed query string; keys may repeat, the last one wins.
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        Self(form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Booleans as kube-apiserver reads them: `true`, `True`, `1`, ...
    pub(crate) fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "t" | "yes" => Ok(true),
                "false" | "0" | "f" | "no" | "" => Ok(false),
                _ => Err(ApiError::bad_request(format!("invalid boolean value for {key}: \"{v}\""))),
            },
        }
    }

    pub(crate) fn number(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid value for {key}: \"{v}\": must be a non-negative integer"))
                })
            })
            .transpose()
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => {
                Err(ApiError::bad_request(format!("unsupported dryRun value \"{other}\": only \"All\" is supported")))
            }
        }
    }

    fn selectors(&self, rt: &ResourceType) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(self.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))?;
        fields.check_supported(&rt.field_selectors())?;
        Ok((labels, fields))
    }
}

/// Which object or collection a path names.
#[derive(Debug)]
struct Target {
    rt: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    watch_path: bool,
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::new(Reason::NotFound, format!("the server could not find the requested resource ({path})"))
}

fn parse_target(group: &str, version: &str, rest: &[&str], path: &str) -> Result<Target, ApiError> {
    let (watch_path, rest) = match rest.split_first() {
        Some((&"watch", rest)) => (true, rest),
        _ => (false, rest),
    };
    let (namespace, plural, name, subresource, extra) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (Some(*ns), *plural, tail.first().copied(), tail.get(1).copied(), tail.len() > 2)
        }
        [plural, tail @ ..] => (None, *plural, tail.first().copied(), tail.get(1).copied(), tail.len() > 2),
        [] => return Err(not_found_path(path)),
    };
    let rt = flotilla_api::by_plural(group, version, plural).ok_or_else(|| not_found_path(path))?;
    if extra || (namespace.is_some() && !rt.namespaced) || (rt.namespaced && namespace.is_none() && name.is_some()) {
        return Err(not_found_path(path));
    }
    for segment in namespace.iter().chain(name.iter()) {
        let problems = flotilla_api::validate_path_segment_name(segment);
        if !problems.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid resource name \"{segment}\": [{}]",
                problems.join(", ")
            )));
        }
    }
    Ok(Target {
        rt,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
        watch_path,
    })
}

async fn route(state: &Arc<ApiState>, request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let ok = |value: Value| Ok(respond(200, &value, Format::Json));

    // Health and version are public, as kube-apiserver's system:public-info-viewer makes them.
    match segments.as_slice() {
        // kube-apiserver's format for a failed check; the store logs the reason itself.
        ["readyz", ..] if state.registry.store().check_ready().is_err() => {
            let body = "[+]ping ok\n[-]store failed: reason withheld\nreadyz check failed\n";
            let mut response = Response::new(full(body));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
            return Ok(response);
        }
        ["healthz" | "livez" | "readyz", ..] => {
            let mut response = Response::new(full("ok"));
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
            return Ok(response);
        }
        ["version"] => return ok(discovery::version()),
        // A joining agent fetches the CA before it trusts the server, and checks it
        // against the hash in its join token (as k3s does).
        ["cacerts"] => {
            let mut response = Response::new(full(state.ca_pem.clone()));
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
            return Ok(response);
        }
        _ => {}
    }
    if !authorized(state, request.headers()) {
        return Err(ApiError::new(
            Reason::Unauthorized,
            "Unauthorized: a valid bearer token is required (see DATA_DIR/kubeconfig)",
        ));
    }
    // OpenAPI documents have their own media types (kubectl asks for v2 in protobuf only).
    match segments.as_slice() {
        // Prometheus scrapes with a bearer token, as kube-apiserver's /metrics wants.
        ["metrics"] if request.method() == Method::GET => return serve_metrics(state),
        ["metrics"] => return Err(method_not_allowed(request.method())),
        ["openapi", "v3"] => return ok(openapi::index()),
        ["openapi", "v3", rest @ ..] => {
            let gv = rest.join("/");
            let document = openapi::document(&gv).ok_or_else(|| not_found_path(&path))?;
            let mut response = respond_bytes(document, "application/json");
            // The document never changes while the server runs: clients cache it by hash.
            if let Some(etag) =
                openapi::document_hash(&gv).and_then(|h| header::HeaderValue::from_str(&format!("\"{h}\"")).ok())
            {
                response.headers_mut().insert(header::ETAG, etag);
            }
            return Ok(response);
        }
        ["openapi", "v2"] => return Ok(respond_bytes(openapi::v2_document(), openapi::V2_CONTENT_TYPE)),
        _ => {}
    }
    if let ["flotilla", "v1", "images", ..] = segments.as_slice() {
        return crate::images::serve(state, request).await;
    }
    if let ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] = segments.as_slice() {
        return self_subject_access_review(request).await;
    }
    let format = response_format(request.headers())?;
    let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let aggregated = discovery::wants_aggregated(accept);
    let target = match segments.as_slice() {
        ["apis", resource_metrics::GROUP, rest @ ..] => {
            let table = tables::wants_table(accept);
            let answer =
                resource_metrics::serve(state, request.method(), &path, request.uri().query(), rest, table).await?;
            return Ok(match answer {
                resource_metrics::Answer::Object(value) => respond(200, &value, format),
                resource_metrics::Answer::Table(value) => respond_as(&value, TABLE_CONTENT_TYPE),
            });
        }
        ["api"] if aggregated => {
            return Ok(respond_as(&discovery::aggregated(true), discovery::AGGREGATED_CONTENT_TYPE));
        }
        ["apis"] if aggregated => {
            return Ok(respond_as(&discovery::aggregated(false), discovery::AGGREGATED_CONTENT_TYPE));
        }
        ["api"] => return ok(discovery::api_versions(&state.server_address)),
        ["apis"] => return ok(discovery::api_group_list()),
        ["api", version] => {
            return discovery::api_resource_list("", version).map(ok).unwrap_or_else(|| Err(not_found_path(&path)));
        }
        ["apis", group] => return discovery::api_group(group).map(ok).unwrap_or_else(|| Err(not_found_path(&path))),
        ["apis", group, version] => {
            return discovery::api_resource_list(group, version).map(ok).unwrap_or_else(|| Err(not_found_path(&path)));
        }
        ["api", "v1", "namespaces", namespace, "pods", pod, subresource @ ("exec" | "attach" | "portforward")] => {
            let (namespace, pod, subresource) = (namespace.to_string(), pod.to_string(), subresource.to_string());
            return crate::kubelet::stream(state, &namespace, &pod, &subresource, request).await;
        }
        ["api", "v1", "namespaces", namespace, "pods", pod, "proxy", ..] => {
            let (namespace, pod) = (namespace.to_string(), pod.to_string());
            return crate::kubelet::proxy(state, &namespace, &pod, request).await;
        }
        ["api", version, rest @ ..] => parse_target("", version, rest, &path)?,
        ["apis", group, version, rest @ ..] => parse_target(group, version, rest, &path)?,
        _ => return Err(not_found_path(&path)),
    };
    let span = tracing::debug_span!("object", resource = target.rt.plural, object = %format!("{}/{}", target.namespace.as_deref().unwrap_or(""), target.name.as_deref().unwrap_or("")));
    let table = tables::wants_table(accept);
    serve_resource(state, request, target, format, table).instrument(span).await
}

/// Every metric family of the process, in Prometheus' text format.
fn serve_metrics(state: &ApiState) -> Result<Response<Body>, ApiError> {
    let text = metrics::encode(&state.metrics_registry)
        .map_err(|e| ApiError::internal(format!("encoding the metrics failed: {e}")))?;
    let mut response = Response::new(full(text));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(metrics::CONTENT_TYPE));
    Ok(response)
}

/// How much of an oversized body is read and thrown away before answering 413, so that
/// a client still writing it gets the Status instead of a broken pipe (Go's net/http
/// drains for the same reason).
const MAX_DRAIN_BYTES: usize = 16 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `kubectl auth can-i`: the only identity is the admin token, which may do
/// everything, so every review is allowed. The request is read, not interpreted
/// (kubectl sends it in protobuf).
async fn self_subject_access_review(request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    if request.method() != Method::POST {
        return Err(method_not_allowed(request.method()));
    }
    read_body(request).await?;
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": {},
        "status": {"allowed": true, "reason": "the cluster admin may do everything"},
    });
    Ok(respond(201, &review, Format::Json))
}

async fn read_body(request: Request<Incoming>) -> Result<(HeaderMap, Bytes), ApiError> {
    read_body_limited(request, MAX_BODY_BYTES).await
}

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_body_limited(
    request: Request<Incoming>,
    limit: usize,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let too_large = || {
        ApiError::new(
            Reason::RequestEntityTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let (parts, mut body) = request.into_parts();
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the request body failed: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if collected.len() + data.len() > limit {
            let mut drained = collected.len() + data.len();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                while drained < MAX_DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(frame)) => drained += frame.data_ref().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            })
            .await;
            return Err(too_large());
        }
        collected.extend_from_slice(&data);
    }
    Ok((parts.headers, Bytes::from(collected)))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn unsupported_media(given: &str, accepted: &str) -> ApiError {
    ApiError::new(
        Reason::UnsupportedMediaType,
        format!("the body of the request was in an unknown format ({given}); accepted media types include: {accepted}"),
    )
}

/// Decodes an object body (POST, PUT).
fn object_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let format = match content_type(headers).as_str() {
        "" | "application/json" => Format::Json,
        "application/yaml" | "application/x-yaml" | "text/yaml" => Format::Yaml,
        // kubectl's typed commands (create configmap, create secret, ...) send protobuf.
        protobuf::CONTENT_TYPE => return protobuf::decode_object(body),
        other => {
            let accepted = format!("application/json, application/yaml, {}", protobuf::CONTENT_TYPE);
            return Err(unsupported_media(other, &accepted));
        }
    };
    decode_object(body, format)
}

enum PatchKind {
    Json,
    Merge,
    Strategic,
}

enum Patch {
    /// A JSON, merge or strategic merge patch (`patch.rs`).
    Other((PatchKind, Value)),
    /// Server-side apply: the applied configuration.
    Apply(Value),
}

fn patch_body(headers: &HeaderMap, body: &[u8]) -> Result<Patch, ApiError> {
    let parse = |body: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))
    };
    match content_type(headers).as_str() {
        "application/json-patch+json" => Ok(Patch::Other((PatchKind::Json, parse(body)?))),
        "application/merge-patch+json" => Ok(Patch::Other((PatchKind::Merge, decode_object(body, Format::Json)?))),
        "application/strategic-merge-patch+json" => {
            Ok(Patch::Other((PatchKind::Strategic, decode_object(body, Format::Json)?)))
        }
        // YAML is a superset of JSON: kubectl sends either.
        "application/apply-patch+yaml" => Ok(Patch::Apply(decode_object(body, Format::Yaml)?)),
        other => Err(unsupported_media(
            other,
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, \
             application/apply-patch+yaml",
        )),
    }
}

fn delete_options(query: &Query, headers: &HeaderMap, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions {
        propagation_policy: query.get("propagationPolicy").filter(|p| !p.is_empty()).map(str::to_string),
        dry_run: query.dry_run()?,
        ..DeleteOptions::default()
    };
    options.grace_period_seconds = query.number("gracePeriodSeconds")?.map(|g| i64::try_from(g).unwrap_or(i64::MAX));
    options.ignore_store_read_error = query.flag("ignoreStoreReadErrorWithClusterBreakingPotential")?;
    if query.flag("orphanDependents")? {
        options.propagation_policy = Some("Orphan".into());
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        body_delete_options(&mut options, &object_body(headers, body)?);
    }
    Ok(options)
}

/// Takes what a DeleteOptions object (a DELETE's body, an Eviction's `deleteOptions`)
/// sets into `options`.
fn body_delete_options(options: &mut DeleteOptions, value: &Value) {
    if let Some(policy) = value.get("propagationPolicy").and_then(Value::as_str) {
        options.propagation_policy = Some(policy.to_string());
    }
    if value.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
        options.propagation_policy = Some("Orphan".into());
    }
    if let Some(pre) = value.get("preconditions") {
        options.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        options.precondition_resource_version = pre.get("resourceVersion").and_then(Value::as_str).map(str::to_string);
    }
    if let Some(grace) = value.get("gracePeriodSeconds").and_then(Value::as_i64) {
        options.grace_period_seconds = Some(grace);
    }
    if value.get("ignoreStoreReadErrorWithClusterBreakingPotential").and_then(Value::as_bool) == Some(true) {
        options.ignore_store_read_error = true;
    }
    if value.get("dryRun").and_then(Value::as_array).is_some_and(|d| d.iter().any(|v| v == "All")) {
        options.dry_run = true;
    }
}

fn list_query(query: &Query, rt: &ResourceType) -> Result<ListQuery, ApiError> {
    let (labels, fields) = query.selectors(rt)?;
    let limit = query.number("limit")?.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let continue_token = query.get("continue").filter(|c| !c.is_empty()).map(str::to_string);
    Ok(ListQuery { labels, fields, limit, continue_token })
}

fn subresource(target: &Target) -> Result<Option<Subresource>, ApiError> {
    match target.subresource.as_deref() {
        None => Ok(None),
        Some("status") if target.rt.has_subresource(Subresource::Status) => Ok(Some(Subresource::Status)),
        Some("scale") if target.rt.has_subresource(Subresource::Scale) => Ok(Some(Subresource::Scale)),
        // Actions on a pod, served apart from the object's own verbs.
        Some("binding" | "eviction" | "log") if target.rt.kind == "Pod" => Ok(None),
        Some(other) => Err(ApiError::new(
            Reason::NotFound,
            format!(
                "the server could not find the requested resource: {} has no subresource \"{other}\"",
                target.rt.qualified_plural()
            ),
        )),
    }
}

/// The write options a request asks for: `dryRun`, `fieldValidation`, `fieldManager`
/// (kube-apiserver defaults the manager to the client's User-Agent program name).
fn write_options(query: &Query, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    let field_manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(manager) if manager.len() > 128 => {
            return Err(ApiError::bad_request("fieldManager must not be longer than 128 characters"));
        }
        Some(manager) => manager.to_string(),
        None => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|agent| agent.split('/').next())
            .filter(|program| !program.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    Ok(WriteOptions {
        dry_run: query.dry_run()?,
        field_validation: FieldValidation::parse(query.get("fieldValidation"))?,
        field_manager,
        server_side_apply: content_type(headers) == "application/apply-patch+yaml",
        warnings: Default::default(),
    })
}

/// A response, with one `Warning` header per warning the write produced.
fn respond_warning(code: u16, value: &Value, format: Format, writes: &WriteOptions) -> Response<Body> {
    let mut response = respond(code, value, format);
    for warning in writes.take_warnings() {
        let text = format!("299 - \"{}\"", warning.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(value) = header::HeaderValue::from_str(&text) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// The Content-Type of a meta.k8s.io/v1 Table response.
const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

async fn serve_resource(
    state: &Arc<ApiState>,
    request: Request<Incoming>,
    target: Target,
    format: Format,
    table: bool,
) -> Result<Response<Body>, ApiError> {
    let query = Query::parse(request.uri().query());
    let method = request.method().clone();
    let registry = &state.registry;
    let rt = target.rt;
    let ns = target.namespace.as_deref();
    let sub = subresource(&target)?;
    let writes = write_options(&query, request.headers())?;
    let reply = |code: u16, value: Value| Ok(respond_warning(code, &value, format, &writes));
    // kubectl get asks for rows as kube-apiserver prints them.
    let include = tables::IncludeObject::parse(query.get("includeObject"))?;
    let as_table =
        |value: &Value| respond_as(&tables::table(rt, value, include, jiff::Timestamp::now()), TABLE_CONTENT_TYPE);

    let Some(name) = target.name.clone() else {
        // The collection.
        return match method {
            Method::GET if target.watch_path || query.flag("watch")? => {
                let table = table.then_some(include);
                serve_watch(state, rt, target.namespace.clone(), &query, table).await
            }
            Method::GET if table => Ok(as_table(&registry.list(rt, ns, &list_query(&query, rt)?).await?)),
            Method::GET => reply(200, registry.list(rt, ns, &list_query(&query, rt)?).await?),
            Method::POST => {
                let (headers, body) = read_body(request).await?;
                let object = object_body(&headers, &body)?;
                reply(201, registry.create(rt, ns, object, &writes).await?)
            }
            Method::DELETE => {
                let list = list_query(&query, rt)?;
                let (headers, body) = read_body(request).await?;
                let options = delete_options(&query, &headers, &body)?;
                let deleted = registry.delete_collection(rt, ns, &list, &options).await?;
                if rt.kind == "Namespace" {
                    state.namespace_poke.notify_one();
                }
                reply(200, deleted)
            }
            _ => Err(method_not_allowed(&method)),
        };
    };
    if target.watch_path {
        return Err(ApiError::bad_request("watching a single object: use ?watch=1&fieldSelector=metadata.name=NAME"));
    }
    // The pod subresources that are actions rather than views of the object.
    match (rt.kind, target.subresource.as_deref(), &method) {
        ("Pod", Some("binding"), &Method::POST) => {
            let (headers, body) = read_body(request).await?;
            let binding = object_body(&headers, &body)?;
            return reply(201, registry.bind(ns.unwrap_or("default"), &name, &binding).await?);
        }
        ("Pod", Some("log"), &Method::GET) => {
            return crate::kubelet::logs(state, ns.unwrap_or("default"), &name, &query).await;
        }
        ("Pod", Some("eviction"), &Method::POST) => {
            let (headers, body) = read_body(request).await?;
            let eviction = object_body(&headers, &body)?;
            if eviction["metadata"]["name"].as_str().is_some_and(|given| given != name) {
                return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
            }
            let mut options = delete_options(&query, &headers, b"")?;
            if let Some(delete) = eviction.get("deleteOptions").filter(|d| d.is_object()) {
                body_delete_options(&mut options, delete);
            }
            crate::eviction::evict(registry, ns.unwrap_or("default"), &name, &options).await?;
            return reply(
                201,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            );
        }
        ("Pod", Some("binding" | "eviction" | "log"), _) => return Err(method_not_allowed(&method)),
        _ => {}
    }
    match (method, sub) {
        (Method::GET, Some(Subresource::Scale)) => {
            let object = registry.get(rt, ns, &name).await?;
            reply(200, registry.scale_of(&object))
        }
        (Method::GET, None) if table => Ok(as_table(&registry.get(rt, ns, &name).await?)),
        (Method::GET, _) => reply(200, registry.get(rt, ns, &name).await?),
        (Method::PUT, Some(Subresource::Scale)) => {
            let (headers, body) = read_body(request).await?;
            let scale = object_body(&headers, &body)?;
            reply(200, registry.update_scale(rt, ns, &name, &writes, |_| Ok(scale.clone())).await?)
        }
        (Method::PUT, sub) => {
            let (headers, body) = read_body(request).await?;
            let object = object_body(&headers, &body)?;
            reply(200, registry.update(rt, ns, &name, object, sub, &writes).await?)
        }
        (Method::PATCH, sub) => {
            let (headers, body) = read_body(request).await?;
            let patch = match patch_body(&headers, &body)? {
                Patch::Apply(config) => {
                    if query.get("fieldManager").is_none_or(str::is_empty) {
                        let error = flotilla_api::FieldError::required("fieldManager", "is required for apply patch");
                        return Err(ApiError::invalid("PatchOptions", "meta.k8s.io", "", &[error]));
                    }
                    if sub.is_some() {
                        return Err(ApiError::bad_request("server-side apply of a subresource is not supported"));
                    }
                    return reply(200, registry.apply(rt, ns, &name, config, query.flag("force")?, &writes).await?);
                }
                Patch::Other(patch) => patch,
            };
            let patch = match &patch {
                (PatchKind::Json, value) => PatchType::Json(value),
                (PatchKind::Merge, value) => PatchType::Merge(value),
                (PatchKind::Strategic, value) => PatchType::Strategic(value),
            };
            if sub == Some(Subresource::Scale) {
                let parsed = crate::patch::parse(patch)?;
                let scaled = registry.update_scale(rt, ns, &name, &writes, |mut scale| {
                    crate::patch::apply(&mut scale, &parsed)?;
                    Ok(scale)
                });
                return reply(200, scaled.await?);
            }
            reply(200, registry.patch(rt, ns, &name, patch, sub, &writes).await?)
        }
        (Method::DELETE, None) => {
            let (headers, body) = read_body(request).await?;
            let options = delete_options(&query, &headers, &body)?;
            let deleted = registry.delete(rt, ns, &name, &options).await?;
            if rt.kind == "Namespace" {
                state.namespace_poke.notify_one();
            }
            let code = if matches!(deleted, Deleted::Pending(_)) { 202 } else { 200 };
            reply(code, Registry::deleted_body(rt, &deleted))
        }
        (method, _) => Err(method_not_allowed(&method)),
    }
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(Reason::MethodNotAllowed, format!("the server does not allow the method {method} on this resource"))
}

async fn serve_watch(
    state: &Arc<ApiState>,
    rt: &'static ResourceType,
    namespace: Option<String>,
    query: &Query,
    table: Option<tables::IncludeObject>,
) -> Result<Response<Body>, ApiError> {
    let send_initial_events = query.flag("sendInitialEvents")?;
    let resource_version_match = query.get("resourceVersionMatch").filter(|m| !m.is_empty());
    if send_initial_events && resource_version_match != Some("NotOlderThan") {
        // As kube-apiserver validates ListOptions for watch-list.
        let error = flotilla_api::FieldError::forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        );
        return Err(ApiError::invalid("ListOptions", "meta.k8s.io", "", &[error]));
    }
    if send_initial_events && !query.flag("allowWatchBookmarks")? {
        let error = flotilla_api::FieldError::forbidden(
            "allowWatchBookmarks",
            "sendInitialEvents requires setting allowWatchBookmarks to true",
        );
        return Err(ApiError::invalid("ListOptions", "meta.k8s.io", "", &[error]));
    }
    let (labels, fields) = query.selectors(rt)?;
    let resource_version = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(parse_resource_version(rv)?),
    };
    let watch_query = WatchQuery {
        labels,
        fields,
        resource_version,
        allow_bookmarks: query.flag("allowWatchBookmarks")?,
        timeout: query.number("timeoutSeconds")?.filter(|t| *t > 0).map(Duration::from_secs),
        send_initial_events,
    };
    // Table watches carry column definitions in their first object only, as
    // kube-apiserver's do.
    let mut headers_sent = false;
    let emit = move |event_type: &'static str, object: Value| {
        let object = match table {
            Some(include) if matches!(event_type, "ADDED" | "MODIFIED" | "DELETED") => {
                let first = !std::mem::replace(&mut headers_sent, true);
                tables::watch_table(rt, &object, include, jiff::Timestamp::now(), first)
            }
            _ => object,
        };
        let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    };
    let lines = watch::start(state.registry.clone(), rt, namespace, watch_query, emit).await?;
    let stream = ReceiverStream::new(lines).map(|line| Ok::<_, flotilla_client::BoxError>(Frame::data(line)));
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    Ok(response)
}
