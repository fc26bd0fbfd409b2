//! A small Kubernetes API client over the kubeconfig, used by the CLI, the end-to-end
//! tests and the benches: it talks to the server only over HTTP, like kubectl.

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use bytes::Bytes;
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

/// The parts of a kubeconfig Flotilla reads.
#[derive(Debug, Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
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
struct Cluster {
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
            .with_context(|| format!("response is not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as JSON if the request succeeded; the server's `Status` message if not.
    pub fn ok(self) -> Result<Value> {
        if self.status.is_success() {
            return self.json();
        }
        let message = self
            .json()
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        bail!("Error from server ({}): {message}", reason_of(&self))
    }
}

fn reason_of(response: &Response) -> String {
    response
        .json()
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| response.status.to_string())
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

/// The kubeconfig to use: the flag, then `KUBECONFIG`, then the default data dir's.
pub fn kubeconfig_path(flag: Option<&Path>) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    if let Some(path) = std::env::var_os("KUBECONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    crate::default_data_dir().join("kubeconfig")
}

impl Client {
    /// Reads a kubeconfig and prepares a client for its current context.
    pub fn from_kubeconfig(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let config: Kubeconfig =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing kubeconfig {}", path.display()))?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == config.current_context)
            .or(config.contexts.first())
            .ok_or_else(|| anyhow!("kubeconfig {} has no context", path.display()))?;
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == context.value.cluster)
            .ok_or_else(|| anyhow!("kubeconfig names cluster {} but does not define it", context.value.cluster))?;
        let user = config.users.iter().find(|u| u.name == context.value.user).map(|u| &u.value);
        let token = match user {
            Some(User { token: Some(token), .. }) => Some(token.clone()),
            Some(User { token_file: Some(file), .. }) => Some(std::fs::read_to_string(file)?.trim().to_string()),
            _ => None,
        };
        let ca_pem = match (&cluster.value.ca_data, &cluster.value.ca_file) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .context("certificate-authority-data is not base64")?,
            ),
            (None, Some(file)) => Some(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?),
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
                roots.add(cert.context("reading the cluster CA")?).context("adding the cluster CA")?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Self { server: server.trim_end_matches('/').to_string(), token, default_namespace, http })
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
        Ok(builder.body(Full::new(Bytes::from(body)))?)
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
        let response = self.http.request(request).await.with_context(|| format!("{method} {}{path}", self.server))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.context("reading the response")?.to_bytes();
        Ok(Response { status, headers, body })
    }

    pub async fn get(&self, path: &str) -> Result<Response> {
        self.send(Method::GET, path, "", Vec::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Response> {
        self.send(Method::POST, path, "application/json", serde_json::to_vec(body)?).await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Response> {
        self.send(Method::PUT, path, "application/json", serde_json::to_vec(body)?).await
    }

    pub async fn patch(&self, path: &str, patch_type: &str, body: &Value) -> Result<Response> {
        self.send(Method::PATCH, path, patch_type, serde_json::to_vec(body)?).await
    }

    pub async fn delete(&self, path: &str) -> Result<Response> {
        self.send(Method::DELETE, path, "", Vec::new()).await
    }

    /// Starts a streaming request (a watch); lines arrive through the returned body.
    pub async fn stream(&self, path: &str) -> Result<(StatusCode, hyper::body::Incoming)> {
        let request = self.request(Method::GET, path, "", Vec::new())?;
        let response = self.http.request(request).await.with_context(|| format!("GET {}{path}", self.server))?;
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
                return Ok(Some(serde_json::from_slice(&line).context("a watch event is not JSON")?));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                None => return Ok(None),
            }
        }
    }
}
