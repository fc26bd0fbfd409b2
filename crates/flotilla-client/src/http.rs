//! The HTTP client: a kubeconfig's server and identity, raw requests for the CLI and the
//! tests, and the [`Cluster`](crate::Cluster) interface over the REST API.

use crate::{Cluster, DeleteParams, Error, ListParams, Patch, Watch, WatchEvent};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use flotilla_api::{ApiError, ResourceType};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

type Result<T, E = Error> = std::result::Result<T, E>;

/// The parts of a kubeconfig Flotilla reads.
#[derive(Debug, Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<KubeconfigCluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Debug, Deserialize)]
struct KubeconfigCluster {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
    #[serde(rename = "certificate-authority")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Context {
    cluster: String,
    user: String,
    namespace: Option<String>,
}

/// An API response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (a `Status` for errors).
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::Decode(format!("response is not JSON ({e}): {}", String::from_utf8_lossy(&self.body))))
    }

    /// The body as JSON if the request succeeded; the server's `Status` message if not.
    pub fn ok(self) -> Result<Value> {
        if self.status.is_success() {
            return self.json();
        }
        Err(Error::Api(self.api_error()))
    }

    /// The failure this response describes.
    pub fn api_error(&self) -> flotilla_api::ApiError {
        flotilla_api::ApiError::from_status_body(self.status.as_u16(), &self.body)
    }
}

/// A connection pool to one API server with one identity.
#[derive(Clone, Debug)]
pub struct Client {
    server: String,
    token: Option<String>,
    /// The kubeconfig context's namespace, `default` if it names none.
    pub default_namespace: String,
    http: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// Reads a kubeconfig and prepares a client for its current context.
    pub fn from_kubeconfig(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Kubeconfig { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let config: Kubeconfig = serde_yaml_ng::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == config.current_context)
            .or(config.contexts.first())
            .ok_or_else(|| bad("no context".into()))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.value.cluster)
            .ok_or_else(|| bad(format!("names cluster {} but does not define it", context.value.cluster)))?;
        let user = config.users.iter().find(|u| u.name == context.value.user).map(|u| &u.value);
        let token = match user {
            Some(User { token: Some(token), .. }) => Some(token.clone()),
            Some(User { token_file: Some(file), .. }) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| bad(format!("reading {}: {e}", file.display())))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        let ca_pem = match (&cluster.value.ca_data, &cluster.value.ca_file) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|_| bad("certificate-authority-data is not base64".into()))?,
            ),
            (None, Some(file)) => {
                Some(std::fs::read(file).map_err(|e| bad(format!("reading {}: {e}", file.display())))?)
            }
            (None, None) => None,
        };
        let namespace = context.value.namespace.clone().unwrap_or_else(|| "default".into());
        Self::new(&cluster.value.server, token, ca_pem.as_deref(), namespace)
    }

    /// A client for `server` trusting only the CA in `ca_pem` (for https).
    pub fn new(server: &str, token: Option<String>, ca_pem: Option<&[u8]>, default_namespace: String) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::Tls(format!("reading the cluster CA: {e}")))?;
                roots.add(cert).map_err(|e| Error::Tls(format!("adding the cluster CA: {e}")))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::with_tls(server, token, tls, default_namespace))
    }

    fn with_tls(server: &str, token: Option<String>, tls: rustls::ClientConfig, default_namespace: String) -> Self {
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Self { server: server.trim_end_matches('/').to_string(), token, default_namespace, http }
    }

    /// The cluster CA a server hands out at `/cacerts`, fetched WITHOUT verifying the
    /// server: the caller must check it (against the hash in a join token) before
    /// trusting it.
    pub async fn fetch_ca_unverified(server: &str) -> Result<String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(unverified::AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        let client = Self::with_tls(server, None, tls, "default".into());
        let response = client.get("/cacerts").await?;
        if !response.status.is_success() {
            return Err(Error::Api(response.api_error()));
        }
        String::from_utf8(response.body.to_vec()).map_err(|_| Error::Decode("/cacerts is not text".into()))
    }

    fn request(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Result<Request<Full<Bytes>>> {
        self.request_accepting(method, path, content_type, body, "application/json")
    }

    fn request_accepting(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        accept: &str,
    ) -> Result<Request<Full<Bytes>>> {
        let mut builder =
            Request::builder().method(method).uri(format!("{}{path}", self.server)).header(header::ACCEPT, accept);
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder.body(Full::new(Bytes::from(body))).map_err(|e| Error::Transport(format!("{path}: {e}")))
    }

    /// Sends one request and reads the whole response.
    pub async fn send(&self, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Result<Response> {
        self.send_accepting(method, path, content_type, body, "application/json").await
    }

    /// Sends one request asking for the response in `accept` (e.g. `application/yaml`).
    pub async fn send_accepting(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        accept: &str,
    ) -> Result<Response> {
        let request = self.request_accepting(method.clone(), path, content_type, body, accept)?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| Error::Transport(format!("{method} {}{path}: {}", self.server, error_chain(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(format!("reading the response to {method} {path}: {e}")))?
            .to_bytes();
        Ok(Response { status, headers, body })
    }

    pub async fn get(&self, path: &str) -> Result<Response> {
        self.send(Method::GET, path, "", Vec::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Response> {
        self.send(Method::POST, path, "application/json", body.to_string().into_bytes()).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Response> {
        self.send(Method::PUT, path, "application/json", body.to_string().into_bytes()).await
    }

    pub async fn patch(&self, path: &str, patch_type: &str, body: &Value) -> Result<Response> {
        self.send(Method::PATCH, path, patch_type, body.to_string().into_bytes()).await
    }

    pub async fn delete(&self, path: &str) -> Result<Response> {
        self.send(Method::DELETE, path, "", Vec::new()).await
    }

    /// Sends a request with its own headers and streams the answer back (a proxy's use:
    /// `flotilla port-forward`). The client's credentials replace any `Authorization`.
    pub async fn forward(
        &self,
        method: Method,
        path: &str,
        headers: &http::HeaderMap,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let mut request = self.request_accepting(method.clone(), path, "", Vec::new(), "*/*")?;
        for (name, value) in headers {
            if name != header::HOST && name != header::AUTHORIZATION && name != header::ACCEPT {
                request.headers_mut().append(name.clone(), value.clone());
            }
        }
        if let Some(accept) = headers.get(header::ACCEPT) {
            request.headers_mut().insert(header::ACCEPT, accept.clone());
        }
        *request.body_mut() = Full::new(body);
        self.http
            .request(request)
            .await
            .map_err(|e| Error::Transport(format!("{method} {}{path}: {}", self.server, error_chain(&e))))
    }

    /// Opens a WebSocket at `path` (a GET upgraded on its own HTTP/1.1 connection)
    /// offering `protocols`; answers the protocol the server chose and the socket. A
    /// server that refuses the upgrade answers its `Status` as [`Error::Api`].
    pub async fn websocket(&self, path: &str, protocols: &[&str]) -> Result<(String, crate::streaming::WebSocket)> {
        let mut request = self.request(Method::GET, path, "", Vec::new())?;
        for (name, value) in crate::streaming::request_headers(protocols) {
            let value = header::HeaderValue::from_str(&value).map_err(|e| Error::Transport(format!("{path}: {e}")))?;
            request.headers_mut().insert(name, value);
        }
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| Error::Transport(format!("GET {}{path}: {}", self.server, error_chain(&e))))?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(Error::Api(ApiError::from_status_body(status.as_u16(), &body)));
        }
        let protocol = response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| Error::Transport(format!("upgrading GET {}{path}: {}", self.server, error_chain(&e))))?;
        Ok((protocol, crate::streaming::client_socket(upgraded).await))
    }

    /// Starts a streaming request (a watch); lines arrive through the returned body.
    pub async fn stream(&self, path: &str) -> Result<(StatusCode, hyper::body::Incoming)> {
        let request = self.request(Method::GET, path, "", Vec::new())?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| Error::Transport(format!("GET {}{path}: {}", self.server, error_chain(&e))))?;
        Ok((response.status(), response.into_body()))
    }
}

/// Splits a streaming body into newline-delimited JSON values.
#[derive(Debug)]
pub struct LineReader {
    body: hyper::body::Incoming,
    buffer: Vec<u8>,
}

impl LineReader {
    pub fn new(body: hyper::body::Incoming) -> Self {
        Self { body, buffer: Vec::new() }
    }

    /// The next JSON line, or `None` when the stream ends.
    pub async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| Error::Decode(format!("a watch event is not JSON: {e}")));
            }
            match self.body.frame().await {
                Some(frame) => {
                    let frame = frame.map_err(|e| Error::Transport(format!("reading a stream: {e}")))?;
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                None => return Ok(None),
            }
        }
    }
}

/// An error with its sources, `outer: inner`, as hyper's own Display hides the cause.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The REST path of a collection, an object, or one of its subresources (the namespace
/// is used only for namespaced kinds).
pub fn rest_path(rt: &ResourceType, namespace: Option<&str>, name: Option<&str>, subresource: Option<&str>) -> String {
    let mut path =
        if rt.group.is_empty() { format!("/api/{}", rt.version) } else { format!("/apis/{}/{}", rt.group, rt.version) };
    if let Some(ns) = namespace.filter(|_| rt.namespaced) {
        path.push_str("/namespaces/");
        path.push_str(ns);
    }
    path.push('/');
    path.push_str(rt.plural);
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
        if let Some(sub) = subresource {
            path.push('/');
            path.push_str(sub);
        }
    }
    path
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        if let Some(value) = value {
            query.append_pair(key, value);
        }
    }
    let query = query.finish();
    if query.is_empty() { query } else { format!("?{query}") }
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        Ok(self.send(method, path, content_type, body).await?.ok()?)
    }
}

#[async_trait]
impl Cluster for Client {
    async fn get(&self, rt: &'static ResourceType, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, &rest_path(rt, namespace, Some(name), None), "", None).await
    }

    async fn list(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<Value, ApiError> {
        let query = query(&[
            ("labelSelector", params.label_selector.as_deref()),
            ("fieldSelector", params.field_selector.as_deref()),
        ]);
        self.call(Method::GET, &format!("{}{query}", rest_path(rt, namespace, None, None)), "", None).await
    }

    async fn watch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        params: &ListParams,
        resource_version: &str,
    ) -> Result<Watch, ApiError> {
        let query = query(&[
            ("watch", Some("1")),
            ("allowWatchBookmarks", Some("true")),
            ("resourceVersion", Some(resource_version)),
            ("labelSelector", params.label_selector.as_deref()),
            ("fieldSelector", params.field_selector.as_deref()),
        ]);
        let path = format!("{}{query}", rest_path(rt, namespace, None, None));
        let (status, body) = self.stream(&path).await?;
        if !status.is_success() {
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(ApiError::from_status_body(status.as_u16(), &bytes));
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut lines = LineReader::new(body);
            loop {
                let item = match lines.next().await {
                    Ok(Some(mut line)) => {
                        let object = line["object"].take();
                        match WatchEvent::from_parts(line["type"].as_str().unwrap_or_default(), object) {
                            Some(event) => Ok(event),
                            None => Err(ApiError::from_status_body(
                                line["object"]["code"].as_u64().and_then(|c| u16::try_from(c).ok()).unwrap_or(500),
                                line["object"].to_string().as_bytes(),
                            )),
                        }
                    }
                    Ok(None) => return,
                    Err(error) => Err(ApiError::from(error)),
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Watch::new(rx))
    }

    async fn create(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, ApiError> {
        self.call(Method::POST, &rest_path(rt, namespace, None, None), "application/json", Some(object)).await
    }

    async fn replace(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        let path = rest_path(rt, namespace, Some(name), subresource);
        self.call(Method::PUT, &path, "application/json", Some(object)).await
    }

    async fn patch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        let path = rest_path(rt, namespace, Some(name), subresource);
        let (content_type, body) = match patch {
            Patch::Merge(body) => ("application/merge-patch+json", body),
            Patch::Json(body) => ("application/json-patch+json", body),
        };
        self.call(Method::PATCH, &path, content_type, Some(body)).await
    }

    async fn delete(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Value, ApiError> {
        let mut options = serde_json::json!({"apiVersion": "v1", "kind": "DeleteOptions"});
        if let Some(policy) = &params.propagation_policy {
            options["propagationPolicy"] = policy.clone().into();
        }
        if let Some(uid) = &params.precondition_uid {
            options["preconditions"] = serde_json::json!({"uid": uid});
        }
        if let Some(grace) = params.grace_period_seconds {
            options["gracePeriodSeconds"] = grace.into();
        }
        self.call(Method::DELETE, &rest_path(rt, namespace, Some(name), None), "application/json", Some(&options)).await
    }

    async fn create_subresource(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        subresource: &str,
        body: &Value,
    ) -> Result<Value, ApiError> {
        let path = rest_path(rt, namespace, Some(name), Some(subresource));
        self.call(Method::POST, &path, "application/json", Some(body)).await
    }
}

/// The verifier of [`Client::fetch_ca_unverified`]: any certificate is accepted (the
/// handshake's signatures are still checked), because what it fetches is verified by hash.
mod unverified {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::{DigitallySignedStruct, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    #[derive(Debug)]
    pub(super) struct AcceptAnyCertificate(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
