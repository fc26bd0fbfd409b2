//! The in-process cluster the benches share: API server, scheduler, controllers (when
//! asked) and one node, wired as `flotilla server` wires them.

use anyhow::{Context as _, Result};
use flotilla_apiserver::{Config, Running};
use flotilla_client::Cluster;
use flotilla_node::{ImageStore, Node, NodeConfig};
use flotilla_runtime::{Runtime, RuntimeConfig};
use flotilla_scheduler::SchedulerConfig;
use flotilla_store::{RedbStore, RedbStoreOptions};
use std::path::PathBuf;
use std::sync::Arc;

// Each bench crate includes this module and uses a different part of it.
#[allow(dead_code)]
pub struct TestCluster {
    pub cluster: Arc<dyn Cluster>,
    pub node: Node,
    _components: Vec<tokio::task::JoinHandle<()>>,
    _running: Running,
    pub dir: tempfile::TempDir,
}

/// A cluster whose node runs up to `max_pods`; with `controllers`, kube-controller-
/// manager's controllers too. The compile cache starts empty, so the first pod compiles
/// its image.
pub async fn start_cluster(max_pods: u32, controllers: bool) -> Result<TestCluster> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().to_path_buf();
    let store = RedbStore::open(&data_dir.join("store.redb"), RedbStoreOptions::default())?;
    let kubelets = flotilla_client::Kubelets::default();
    let config = Config { kubelets: kubelets.clone(), ..Config::new(data_dir.clone()) };
    let running = flotilla_apiserver::start(config, Arc::new(store)).await?;
    let cluster: Arc<dyn Cluster> = Arc::new(running.cluster.with_field_manager("bench"));
    let mut components = vec![tokio::spawn(flotilla_scheduler::run(
        Arc::new(running.cluster.with_field_manager("default-scheduler")),
        SchedulerConfig::default(),
    ))];
    if controllers {
        components.push(tokio::spawn(flotilla_controllers::run(
            Arc::new(running.cluster.with_field_manager("kube-controller-manager")),
            flotilla_controllers::ControllersConfig::default(),
        )));
    }
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(data_dir.join("compiled")),
        max_instances: 1000,
        ..RuntimeConfig::default()
    })
    .context("starting the wasm runtime")?;
    let images = ImageStore::new(runtime.clone(), data_dir.join("images"), Vec::new());
    for (example, path) in flotilla_examples::ALL {
        images.preload(example, PathBuf::from(path))?;
    }
    let mut node_config = NodeConfig::for_this_machine("bench-node", data_dir.clone());
    node_config.max_pods = max_pods;
    let node_cluster = Arc::new(running.cluster.with_field_manager("kubelet/bench-node"));
    let node = Node::start(node_cluster, runtime, images, node_config).await?;
    kubelets.register(node.name(), Arc::new(node.clone()));
    Ok(TestCluster { cluster, node, _components: components, _running: running, dir })
}
