//! `flotilla server`: the control plane in one process.

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use flotilla_store::{RedbStore, RedbStoreOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServerCommand {
    /// Where the store, certificates, token and kubeconfig live.
    #[arg(long, env = "FLOTILLA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The API server's listen address (port 0 picks a free port).
    #[arg(long, env = "FLOTILLA_API_ADDR", default_value = "127.0.0.1:6443")]
    api_addr: SocketAddr,
    /// Serve the API over plain HTTP (local experiments only; tokens are still checked).
    #[arg(long, env = "FLOTILLA_INSECURE_HTTP")]
    insecure_http: bool,
    /// Extra DNS names or IP addresses for the API server's certificate.
    #[arg(long = "tls-san", env = "FLOTILLA_TLS_SAN", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// Manifests (files or directories) to apply once the API serves, as k3s applies
    /// its manifests directory: objects are created, or updated when they changed.
    #[arg(long = "manifests", env = "FLOTILLA_MANIFESTS", value_delimiter = ',')]
    manifests: Vec<String>,
    /// How many store revisions of watch history to keep.
    #[arg(long, env = "FLOTILLA_WATCH_HISTORY", default_value_t = 100_000)]
    watch_history: u64,
    /// Log format.
    #[arg(long, env = "FLOTILLA_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `flotilla_apiserver=debug` (FLOTILLA_LOG also works).
    #[arg(long, env = "FLOTILLA_LOG", default_value = "info")]
    log_level: String,
}

impl ServerCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        // Everything is checked before anything listens.
        for path in &self.manifests {
            anyhow::ensure!(std::path::Path::new(path).exists(), "--manifests {path}: no such file or directory");
        }
        let filter = tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .with_context(|| format!("invalid --log-level {:?}", self.log_level))?;
        let data_dir = self.data_dir.unwrap_or_else(crate::default_data_dir);
        let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => subscriber.init(),
            LogFormat::Json => subscriber.json().init(),
        }
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let store_path = data_dir.join("store.redb");
        let options = RedbStoreOptions { history: self.watch_history, ..RedbStoreOptions::default() };
        let store = RedbStore::open(&store_path, options)
            .with_context(|| format!("opening the store {}", store_path.display()))?;
        let config = flotilla_apiserver::Config {
            data_dir: data_dir.clone(),
            api_addr: self.api_addr,
            insecure_http: self.insecure_http,
            tls_names: self.tls_sans,
        };
        let running = flotilla_apiserver::start(config, Arc::new(store)).await?;
        if !self.manifests.is_empty() {
            let client = crate::client::Client::from_kubeconfig(&running.kubeconfig)?;
            let namespace = client.default_namespace.clone();
            super::apply::apply_files(&client, &self.manifests, None, &namespace)
                .await
                .context("applying --manifests")?;
        }
        // Scripts and tests wait for this line: the kubeconfig is written and the API serves.
        println!(
            "flotilla API server listening on {} (kubeconfig: {})",
            running.local_addr,
            running.kubeconfig.display()
        );
        tokio::select! {
            result = running.task => result.context("the API server stopped")?,
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                tracing::info!("shutting down");
            }
        }
        Ok(())
    }
}
