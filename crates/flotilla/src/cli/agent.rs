//! `flotilla agent`: a node agent in its own process (or machine) that joins a cluster
//! over HTTPS with the server's join token, runs the pods bound to its node, and serves
//! the kubelet API (logs, proxy) to the API server.

use super::server::{ConnectionArgs, LogFormat, NodeArgs, init_logging, metrics_registry};
use anyhow::{Context as _, bail};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct AgentCommand {
    /// The API server, `https://HOST:PORT`.
    #[arg(long, env = "FLOTILLA_SERVER")]
    server: String,
    /// The join token (`K10…::node:…`, in the server's `DATA_DIR/join-token`).
    #[arg(long, env = "FLOTILLA_TOKEN")]
    token: String,
    /// Where the agent keeps images, compiled components and pod volumes.
    #[arg(long, env = "FLOTILLA_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the kubelet API listens (port 0 picks one).
    #[arg(long, env = "FLOTILLA_KUBELET_ADDR", default_value = "127.0.0.1:10250")]
    kubelet_addr: SocketAddr,
    /// The address the API server reaches this node at (default: the kubelet address's IP,
    /// or 127.0.0.1 when that is unspecified).
    #[arg(long, env = "FLOTILLA_NODE_IP")]
    node_ip: Option<std::net::IpAddr>,
    /// Log format.
    #[arg(long, env = "FLOTILLA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `flotilla_node=debug`.
    #[arg(long, env = "FLOTILLA_LOG", default_value = "info")]
    log_level: String,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    proxy: super::proxy::ProxyArgs,
    #[command(flatten)]
    node: NodeArgs,
}

/// `K10<sha256 of the CA>::node:<secret>` → (hash, secret).
fn parse_join_token(token: &str) -> anyhow::Result<(&str, &str)> {
    let token = token.trim();
    let Some((hash, secret)) = token.strip_prefix("K10").and_then(|rest| rest.split_once("::node:")) else {
        bail!("the join token is not K10<ca-hash>::node:<secret> (see the server's DATA_DIR/join-token)");
    };
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
        bail!("the join token is malformed (see the server's DATA_DIR/join-token)");
    }
    Ok((hash, secret))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl AgentCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        init_logging(&self.log_level, self.log_format)?;
        let (ca_hash, secret) = parse_join_token(&self.token)?;
        let ca = flotilla_client::Client::fetch_ca_unverified(&self.server)
            .await
            .with_context(|| format!("fetching the cluster CA from {}", self.server))?;
        anyhow::ensure!(
            sha256_hex(ca.as_bytes()) == ca_hash.to_ascii_lowercase(),
            "the CA {} served does not match the join token: refusing to join",
            self.server
        );
        let client = flotilla_client::Client::new(
            &self.server,
            Some(secret.to_string()),
            Some(ca.as_bytes()),
            "default".into(),
        )?;

        let data_dir = self.data_dir.unwrap_or_else(|| crate::default_data_dir().join("agent"));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        // What the kubelet API's /metrics serves: this node's and its proxy's families.
        let metrics = metrics_registry()?;
        let supervisor = flotilla_client::Supervisor::register(&metrics).context("registering the task metrics")?;
        let limits = self.connections.limits();
        let (mut config, runtime, images) = self.node.build(&data_dir, &metrics)?;
        config.supervisor = supervisor.clone();
        images.pull_from(client.clone());
        let listener = tokio::net::TcpListener::bind(self.kubelet_addr)
            .await
            .with_context(|| format!("listening on {}", self.kubelet_addr))?;
        let kubelet_addr = listener.local_addr()?;
        let node_ip = self.node_ip.unwrap_or_else(|| {
            if kubelet_addr.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { kubelet_addr.ip() }
        });
        config.host_ip = node_ip.to_string();
        config.kubelet_port = kubelet_addr.port();
        let name = config.name.clone();
        let cluster: Arc<dyn flotilla_client::Cluster> = Arc::new(client);
        let node = flotilla_node::Node::start(cluster.clone(), runtime.clone(), images, config).await?;
        // kube-proxy's part on this node: NodePorts, LoadBalancers and in-process Service
        // calls from its pods; no Ingress (the server's node serves it).
        let kubelets = flotilla_client::Kubelets::default();
        kubelets.register(node.name(), Arc::new(node.clone()));
        supervisor.spawn("follow-nodes", {
            let (kubelets, cluster, secret) = (kubelets.clone(), cluster.clone(), secret.to_string());
            move || kubelets.clone().follow_nodes(cluster.clone(), secret.clone())
        });
        let process = super::proxy::Process { metrics: &metrics, limits, supervisor: &supervisor };
        let _proxy = super::proxy::start(&self.proxy, cluster, kubelets, &runtime, None, None, process).await?;
        tokio::spawn(flotilla_node::server::serve(node, listener, secret.to_string(), limits, supervisor));
        // Scripts and tests wait for this line.
        println!("flotilla agent: node {name} joined {} (kubelet API on {kubelet_addr})", self.server);
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        tracing::info!("shutting down");
        Ok(())
    }
}
