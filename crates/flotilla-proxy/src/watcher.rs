//! The control loop: informers on the objects routing depends on; on any change (a few
//! milliseconds' worth coalesced) a new snapshot swapped in, the NodePort and
//! LoadBalancer listeners opened or closed to match, and LoadBalancer statuses written.

use crate::listener::PortListeners;
use crate::proxy::Shared;
use crate::snapshot::{Builder, Inputs, LoadBalancerStatus};
use flotilla_api::Reason;
use flotilla_client::{Cluster, Informer, ListParams, Patch, resource};
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use tracing::Instrument as _;

/// How long changes are gathered before a rebuild: a rollout's burst of EndpointSlice
/// updates makes one snapshot, and a ready pod still gets traffic within milliseconds.
const DEBOUNCE: Duration = Duration::from_millis(3);
/// How often the node agents the endpoints hold are checked against the registered ones.
const AGENT_CHECK: Duration = Duration::from_secs(1);
/// How long to wait before writing a status again after a failure.
const STATUS_RETRY: Duration = Duration::from_secs(1);

struct Informers {
    services: Informer,
    slices: Informer,
    ingresses: Informer,
    classes: Informer,
    secrets: Informer,
    deployments: Informer,
    autoscalers: Informer,
}

impl Informers {
    fn start(cluster: &Arc<dyn Cluster>) -> Informers {
        let all = |api_version, kind| {
            Informer::start(cluster.clone(), resource(api_version, kind), None, ListParams::default())
        };
        Informers {
            services: all("v1", "Service"),
            slices: all("discovery.k8s.io/v1", "EndpointSlice"),
            ingresses: all("networking.k8s.io/v1", "Ingress"),
            classes: all("networking.k8s.io/v1", "IngressClass"),
            secrets: Informer::start(
                cluster.clone(),
                resource("v1", "Secret"),
                None,
                ListParams::fields("type=kubernetes.io/tls"),
            ),
            deployments: all("apps/v1", "Deployment"),
            autoscalers: all("autoscaling/v2", "HorizontalPodAutoscaler"),
        }
    }

    fn each(&self) -> [&Informer; 7] {
        [
            &self.services,
            &self.slices,
            &self.ingresses,
            &self.classes,
            &self.secrets,
            &self.deployments,
            &self.autoscalers,
        ]
    }

    fn inputs(&self) -> Inputs {
        Inputs {
            services: self.services.list(),
            slices: self.slices.list(),
            ingresses: self.ingresses.list(),
            classes: self.classes.list(),
            secrets: self.secrets.list(),
            deployments: self.deployments.list(),
            autoscalers: self.autoscalers.list(),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Rebuilds the routing tables on every change, until aborted.
pub(crate) async fn run(cluster: Arc<dyn Cluster>, shared: Arc<Shared>, ready: watch::Sender<bool>) {
    let informers = Informers::start(&cluster);
    let changed = Arc::new(Notify::new());
    let _forwarders: Vec<AbortOnDrop> = informers
        .each()
        .iter()
        .map(|informer| {
            let mut changes = informer.subscribe();
            let changed = changed.clone();
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    match changes.recv().await {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => changed.notify_one(),
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            }))
        })
        .collect();
    for informer in informers.each() {
        informer.synced().await;
    }

    let mut builder = Builder::new(&shared.config, shared.kubelets.clone(), shared.metrics.clone());
    let mut listeners = PortListeners::default();
    let status = StatusWriter {
        cluster,
        address: shared.config.load_balancer_address,
        written: Arc::default(),
        changed: changed.clone(),
    };
    let mut agents = tokio::time::interval(AGENT_CHECK);
    agents.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let started = std::time::Instant::now();
        let snapshot = Arc::new(builder.build(&informers.inputs()));
        shared.snapshot.store(snapshot.clone());
        shared.rebuilt.send_modify(|generation| *generation += 1);
        ready.send_replace(true);
        tracing::trace!(elapsed = ?started.elapsed(), "routes rebuilt");
        listeners.reconcile(&snapshot.listeners, &shared).await;
        status.reconcile(&snapshot.load_balancers, &listeners);
        drop(snapshot);

        // A node agent that is registered or replaced (a node that moved) does not
        // change any watched object: look for it now and then.
        loop {
            tokio::select! {
                () = changed.notified() => break,
                _ = agents.tick() => {
                    if shared.snapshot.load().kubelets_changed(&shared.kubelets) {
                        break;
                    }
                }
            }
        }
        // A request held for a Deployment woken from zero waits on this rebuild: no
        // coalescing then, the burst of a scale-up is a few objects.
        if shared.waking.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).is_empty() {
            tokio::time::sleep(DEBOUNCE).await;
        }
    }
}

/// Writes `status.loadBalancer` of LoadBalancer Services once their listeners are open,
/// and takes this proxy's address out of Services that are no longer LoadBalancers.
struct StatusWriter {
    cluster: Arc<dyn Cluster>,
    address: IpAddr,
    /// The `resourceVersion` each Service's status was last written at, so that one
    /// version is written once.
    written: Arc<Mutex<HashMap<Arc<str>, String>>>,
    changed: Arc<Notify>,
}

impl StatusWriter {
    fn reconcile(&self, statuses: &[LoadBalancerStatus], listeners: &PortListeners) {
        let mut written = self.written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        written.retain(|id, _| statuses.iter().any(|s| s.id == *id));
        for status in statuses {
            let served = status.addrs.iter().all(|addr| listeners.serves(*addr, &status.id));
            let ingress = if status.wanted && served && !status.current {
                json!([{"ip": self.address.to_string(), "ipMode": "VIP"}])
            } else if !status.wanted && status.mentions_us {
                json!(null)
            } else {
                continue;
            };
            if written.get(&status.id) == Some(&status.resource_version) {
                continue;
            }
            written.insert(status.id.clone(), status.resource_version.clone());
            let patch = Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}}));
            let cluster = self.cluster.clone();
            let written = self.written.clone();
            let changed = self.changed.clone();
            let status = status.clone();
            tokio::spawn(
                async move {
                    let rt = resource("v1", "Service");
                    match cluster.patch(rt, Some(&status.namespace), &status.name, &patch, Some("status")).await {
                        Ok(_) => tracing::info!(service = %status.id, "LoadBalancer status written"),
                        Err(error) if error.reason == Reason::NotFound => {}
                        Err(error) => {
                            tracing::warn!(service = %status.id, %error, "writing the LoadBalancer status");
                            written.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&status.id);
                            tokio::time::sleep(STATUS_RETRY).await;
                            changed.notify_one();
                        }
                    }
                }
                .in_current_span(),
            );
        }
    }
}
