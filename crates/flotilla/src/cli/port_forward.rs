//! `flotilla port-forward pod/NAME [LOCAL:]PORT`: a local TCP listener whose connections
//! go to the pod's port through the API server's `pods/portforward` (one WebSocket with
//! the `v4.channel.k8s.io` port-forward protocol per connection), so a pod on any node
//! answers, as `kubectl port-forward` does.

use anyhow::Context as _;
use flotilla_client::streaming;

#[derive(Debug, clap::Args)]
pub struct PortForwardCommand {
    /// The pod (`pod/NAME` or `NAME`).
    pod: String,
    /// `LOCAL:REMOTE`, or `PORT` for both (`:REMOTE` picks a free local port).
    ports: String,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: std::net::IpAddr,
    #[command(flatten)]
    client: super::ClientFlags,
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
        let remote: u16 = remote.parse().context("the pod's port is not a number")?;
        // Fail now, not on the first connection, if the pod is not there.
        client.get(&format!("/api/v1/namespaces/{namespace}/pods/{pod}")).await?.ok()?;
        let listener = tokio::net::TcpListener::bind((self.address, local))
            .await
            .with_context(|| format!("listening on {}:{local}", self.address))?;
        println!("Forwarding from {} -> {remote}", listener.local_addr()?);
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/portforward?ports={remote}");
        loop {
            let (mut stream, _) = listener.accept().await?;
            let (client, path) = (client.clone(), path.clone());
            tokio::spawn(async move {
                let mut tunnel = match client.websocket(&path, &[streaming::V4_CHANNEL]).await {
                    Ok((_, socket)) => streaming::port_forward_client(socket),
                    Err(error) => {
                        eprintln!("error forwarding port {remote}: {error}");
                        return;
                    }
                };
                if let Err(error) = tokio::io::copy_bidirectional(&mut stream, &mut tunnel).await {
                    eprintln!("error forwarding port {remote}: {error}");
                }
            });
        }
    }
}
