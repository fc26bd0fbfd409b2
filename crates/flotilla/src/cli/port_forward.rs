//! `flotilla port-forward pod/NAME LOCAL:PORT`: a local HTTP listener whose requests go
//! to the pod through the API server's `pods/proxy`, so a pod on any node answers.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct PortForwardCommand {
    /// The pod (`pod/NAME` or `NAME`).
    pod: String,
    /// `LOCAL:REMOTE`, or `PORT` for both (`:REMOTE` picks a free local port). Every
    /// HTTP pod serves all ports, so REMOTE only documents intent.
    ports: String,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    #[command(flatten)]
    client: super::ClientFlags,
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

fn text(code: u16, message: String) -> hyper::Response<Body> {
    let mut response =
        hyper::Response::new(Full::new(Bytes::from(message)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    response
}

impl PortForwardCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        let pod = self.pod.strip_prefix("pod/").or_else(|| self.pod.strip_prefix("pods/")).unwrap_or(&self.pod);
        let (local, remote) = match self.ports.split_once(':') {
            Some((local, remote)) => (local, remote),
            None => (self.ports.as_str(), self.ports.as_str()),
        };
        let local: u16 = if local.is_empty() { 0 } else { local.parse().context("the local port is not a number")? };
        let _: u16 = remote.parse().context("the pod's port is not a number")?;
        // Fail now, not on the first request, if the pod is not there.
        client.get(&format!("/api/v1/namespaces/{namespace}/pods/{pod}")).await?.ok()?;
        let listener = tokio::net::TcpListener::bind((self.address, local))
            .await
            .with_context(|| format!("listening on {}:{local}", self.address))?;
        let bound = listener.local_addr()?;
        println!("Forwarding from {bound} -> {remote}");
        let prefix: Arc<str> = format!("/api/v1/namespaces/{namespace}/pods/{pod}/proxy").into();
        let client = Arc::new(client);
        loop {
            let (stream, _) = listener.accept().await?;
            let (client, prefix) = (client.clone(), prefix.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let (client, prefix) = (client.clone(), prefix.clone());
                    async move { Ok::<_, Infallible>(forward(&client, &prefix, request).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }
}

async fn forward(
    client: &crate::client::Client,
    prefix: &str,
    request: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return text(400, format!("reading the request: {e}\n")),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match client.forward(parts.method, &format!("{prefix}{path}"), &parts.headers, body).await {
        Ok(response) => response.map(|body| body.boxed_unsync()),
        Err(e) => text(502, format!("port-forward: {e}\n")),
    }
}
