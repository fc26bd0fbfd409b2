//! The command line: one clap struct per subcommand, each with `async fn execute`.

mod agent;
mod apply;
mod delete;
mod describe;
mod exec;
mod get;
mod image;
mod logs;
mod port_forward;
mod proxy;
mod resource_metrics;
mod rollout;
mod server;
mod top;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Flotilla: a Kubernetes-style orchestrator whose pods are WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: API server and store.
    #[command(after_long_help = flotilla_api::limits::describe())]
    Server(Box<server::ServerCommand>),
    /// Run a node agent that joins a cluster with its join token.
    Agent(Box<agent::AgentCommand>),
    /// Create or update objects from manifest files.
    Apply(apply::ApplyCommand),
    /// List objects, or show one.
    Get(get::GetCommand),
    /// Delete objects named on the command line or in manifest files.
    Delete(delete::DeleteCommand),
    /// Show an object in detail, with its events.
    Describe(describe::DescribeCommand),
    /// Print a pod's container log.
    Logs(logs::LogsCommand),
    /// Run a command in a pod (`-i` passes stdin, `-t` makes it a terminal).
    Exec(exec::ExecCommand),
    /// Serve a local port whose connections go to a pod's port.
    PortForward(port_forward::PortForwardCommand),
    /// Push and list the cluster's wasm images.
    Image(image::ImageCommand),
    /// Set the number of replicas of a Deployment or ReplicaSet.
    Scale(rollout::ScaleCommand),
    /// Follow, list, undo, restart, pause or resume a Deployment's rollouts.
    Rollout(rollout::RolloutCommand),
    /// Show the CPU and memory pods or nodes use now.
    Top(top::TopCommand),
}

impl Cli {
    pub async fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Server(command) => command.execute().await,
            Command::Agent(command) => command.execute().await,
            Command::Apply(command) => command.execute().await,
            Command::Get(command) => command.execute().await,
            Command::Delete(command) => command.execute().await,
            Command::Describe(command) => command.execute().await,
            Command::Logs(command) => command.execute().await,
            Command::Exec(command) => command.execute().await,
            Command::PortForward(command) => command.execute().await,
            Command::Image(command) => command.execute().await,
            Command::Scale(command) => command.execute().await,
            Command::Rollout(command) => command.execute().await,
            Command::Top(command) => command.execute().await,
        }
    }
}

/// Flags every client command shares.
#[derive(Debug, Args, Clone)]
pub struct ClientFlags {
    /// The kubeconfig to use (default: $KUBECONFIG, then the data dir's kubeconfig).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

impl ClientFlags {
    /// A client for the configured cluster and the namespace to work in.
    pub fn connect(&self) -> anyhow::Result<(crate::client::Client, String)> {
        let path = crate::client::kubeconfig_path(self.kubeconfig.as_deref());
        let client = crate::client::Client::from_kubeconfig(&path)?;
        let namespace = self.namespace.clone().unwrap_or_else(|| client.default_namespace.clone());
        Ok((client, namespace))
    }
}
