//! The Endpoints controller (core/v1 `Endpoints`), as kube-controller-manager's: for
//! every Service with a selector, an Endpoints of the same name whose subsets list the
//! selected pods' addresses, ready ones under `addresses` and the rest under
//! `notReadyAddresses`, grouped by the ports they resolve the Service's ports to. Pods
//! being deleted are left out unless the Service publishes not-ready addresses; past
//! 1,000 addresses the list is cut and marked `over-capacity`, as kube's is.
//!
//! Endpoints are older than EndpointSlices and kept for the clients that read them; the
//! proxy reads slices. Only Endpoints labelled as this controller's are ever deleted
//! (when their Service goes, loses its selector or becomes an `ExternalName`): the
//! Endpoints of a selector-less Service are its users'.

use crate::endpointslice::{
    find_port, hostname, labels_from_service, pod_ipv4, pod_mapper, selected_pods, service_selector,
    should_be_in_endpoints,
};
use crate::error::{Error, Result};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_api::Reason;
use flotilla_api::k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, ObjectReference};
use flotilla_client::{Cluster, DeleteParams, Informer, ObjectKey, resource};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The label naming who manages an Endpoints.
pub(crate) const MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// This controller's name in [`MANAGED_BY_LABEL`].
pub(crate) const MANAGED_BY: &str = "endpoint-controller";
/// Set when the addresses were cut to [`MAX_CAPACITY`].
const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The most addresses an Endpoints lists (kube's `maxCapacity`).
const MAX_CAPACITY: usize = 1000;

#[derive(Debug)]
pub(crate) struct EndpointsController {
    cluster: Arc<dyn Cluster>,
    services: Informer,
    pods: Informer,
    endpoints: Informer,
}

fn is_managed(endpoints: &Value) -> bool {
    meta::labels(endpoints).get(MANAGED_BY_LABEL).and_then(Value::as_str) == Some(MANAGED_BY)
}

/// Whether an Endpoints lists the pod `name` (of its namespace).
fn lists_pod(endpoints: &Value, name: &str) -> bool {
    endpoints["subsets"].as_array().into_iter().flatten().any(|subset| {
        ["addresses", "notReadyAddresses"]
            .iter()
            .flat_map(|list| subset[*list].as_array().into_iter().flatten())
            .any(|address| address["targetRef"]["name"] == name)
    })
}

impl EndpointsController {
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        services: Informer,
        pods: Informer,
        endpoints: Informer,
        config: RunnerConfig,
    ) {
        let controller = Arc::new(EndpointsController {
            cluster,
            services: services.clone(),
            pods: pods.clone(),
            endpoints: endpoints.clone(),
        });
        let all: AllKeys<ObjectKey> = {
            let (services, endpoints) = (services.clone(), endpoints.clone());
            Arc::new(move || {
                let mut keys: Vec<ObjectKey> = services.list().iter().map(|s| ObjectKey::of(s)).collect();
                // This controller's Endpoints of Services that are gone, to clean up.
                keys.extend(endpoints.filter(is_managed).iter().map(|e| ObjectKey::of(e)));
                keys.sort();
                keys.dedup();
                keys
            })
        };
        let own: Mapper<ObjectKey> = Arc::new(|object, _| vec![ObjectKey::of(object)]);
        let listing = {
            let endpoints = endpoints.clone();
            move |namespace: &str, pod: &str| -> Vec<String> {
                endpoints
                    .filter(|e| meta::namespace(e) == namespace && lists_pod(e, pod))
                    .iter()
                    .map(|e| meta::name(e).to_string())
                    .collect()
            }
        };
        let pods_to_services = pod_mapper(services.clone(), listing);
        Controller::new("endpoint", all, config)
            .reports_failures(&services, controller.cluster.clone())
            .watches(services, own.clone())
            .watches(pods, pods_to_services)
            .watches(endpoints, own)
            .run(controller)
            .await;
    }

    async fn delete_managed(&self, key: &ObjectKey, current: Option<&Value>) -> Result<()> {
        let Some(current) = current.filter(|e| is_managed(e)) else { return Ok(()) };
        let params = DeleteParams { precondition_uid: Some(meta::uid(current).to_string()), ..DeleteParams::default() };
        match self.cluster.delete(resource("v1", "Endpoints"), Some(&key.namespace), &key.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => Ok(()),
            Err(e) => Err(Error::api("deleting the Endpoints", e)),
        }
    }
}

impl Reconciler<ObjectKey> for EndpointsController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let current = self.endpoints.get(&key.namespace, &key.name);
        let service = self.services.get(&key.namespace, &key.name);
        let selector = service
            .as_deref()
            .filter(|s| flotilla_api::service::service_type(s) != "ExternalName")
            .and_then(service_selector);
        let (Some(service), Some(selector)) = (service, selector) else {
            self.delete_managed(key, current.as_deref()).await?;
            return Ok(Action::AwaitChange);
        };
        let pods = selected_pods(&self.pods, &service, &selector);
        let (subsets, truncated) = desired_subsets(&service, &pods);
        let mut labels = labels_from_service(&service, &[MANAGED_BY_LABEL]);
        labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
        let rt = resource("v1", "Endpoints");
        match current {
            None => {
                let mut endpoints = json!({
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": key.name, "namespace": key.namespace, "labels": labels},
                    "subsets": subsets,
                });
                if truncated {
                    endpoints["metadata"]["annotations"] = json!({OVER_CAPACITY: "truncated"});
                }
                match self.cluster.create(rt, Some(&key.namespace), &endpoints).await {
                    Ok(_) => {}
                    // The cache has not seen it yet: the next event brings it. Or the
                    // namespace is being deleted, and the Service with it.
                    Err(e) if matches!(e.reason, Reason::AlreadyExists | Reason::Forbidden) => {
                        return Ok(Action::AwaitChange);
                    }
                    Err(e) => return Err(Error::api("creating the Endpoints", e)),
                }
            }
            Some(current) => {
                let same_subsets = normalized(&current["subsets"]) == subsets;
                let same_labels = current["metadata"]["labels"].as_object() == Some(&labels);
                let same_annotation = meta::annotation(&current, OVER_CAPACITY).is_some() == truncated;
                if same_subsets && same_labels && same_annotation {
                    return Ok(Action::AwaitChange);
                }
                let mut endpoints = (*current).clone();
                endpoints["metadata"]["labels"] = json!(labels);
                endpoints["subsets"] = json!(subsets);
                if truncated {
                    endpoints["metadata"]["annotations"][OVER_CAPACITY] = json!("truncated");
                } else if let Some(annotations) = endpoints["metadata"]["annotations"].as_object_mut() {
                    annotations.remove(OVER_CAPACITY);
                }
                self.cluster
                    .replace(rt, Some(&key.namespace), &key.name, &endpoints, None)
                    .await
                    .map_err(|e| Error::api("updating the Endpoints", e))?;
            }
        }
        Ok(Action::AwaitChange)
    }
}

fn port_key(port: &EndpointPort) -> (String, i32, String) {
    (port.name.clone().unwrap_or_default(), port.port, port.protocol.clone().unwrap_or_else(|| "TCP".into()))
}

fn address_key(address: &EndpointAddress) -> (String, String) {
    (address.ip.clone(), address.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default())
}

/// Subsets in one order (kube's `RepackSubsets` + `SortSubsets`): grouped by port list,
/// ports and addresses sorted, empty lists absent.
fn sort_subsets(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    let mut by_ports: BTreeMap<Vec<(String, i32, String)>, EndpointSubset> = BTreeMap::new();
    for subset in subsets {
        let mut ports = subset.ports.unwrap_or_default();
        ports.sort_by_key(port_key);
        ports.dedup();
        let key: Vec<_> = ports.iter().map(port_key).collect();
        let entry =
            by_ports.entry(key).or_insert_with(|| EndpointSubset { ports: Some(ports), ..EndpointSubset::default() });
        entry.addresses.get_or_insert_with(Vec::new).extend(subset.addresses.unwrap_or_default());
        entry.not_ready_addresses.get_or_insert_with(Vec::new).extend(subset.not_ready_addresses.unwrap_or_default());
    }
    by_ports
        .into_values()
        .map(|mut subset| {
            for list in [&mut subset.addresses, &mut subset.not_ready_addresses] {
                if let Some(addresses) = list.as_mut() {
                    addresses.sort_by_key(address_key);
                    addresses.dedup();
                }
                if list.as_ref().is_some_and(Vec::is_empty) {
                    *list = None;
                }
            }
            if subset.ports.as_ref().is_some_and(Vec::is_empty) {
                subset.ports = None;
            }
            subset
        })
        .filter(|s| s.addresses.is_some() || s.not_ready_addresses.is_some())
        .collect()
}

/// An Endpoints' stored subsets, in the order [`desired_subsets`] gives.
fn normalized(subsets: &Value) -> Vec<EndpointSubset> {
    let typed: Vec<EndpointSubset> = flotilla_client::decode(subsets).unwrap_or_default();
    sort_subsets(typed)
}

/// The subsets the selected pods give, and whether they were cut to [`MAX_CAPACITY`].
pub(crate) fn desired_subsets(service: &Value, pods: &[Arc<Value>]) -> (Vec<EndpointSubset>, bool) {
    let publish_not_ready = service["spec"]["publishNotReadyAddresses"] == true;
    let service_ports = service["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let headless = flotilla_api::service::is_headless(service);
    let mut subsets = Vec::new();
    for pod in pods.iter().filter(|pod| should_be_in_endpoints(pod, publish_not_ready)) {
        let Some(ip) = pod_ipv4(pod) else { continue };
        let address = EndpointAddress {
            ip,
            hostname: hostname(pod, service),
            node_name: pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).map(str::to_string),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(meta::namespace(pod).to_string()),
                name: Some(meta::name(pod).to_string()),
                uid: Some(meta::uid(pod).to_string()),
                ..ObjectReference::default()
            }),
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    port: find_port(pod, sp)?,
                    name: sp["name"].as_str().filter(|n| !n.is_empty()).map(str::to_string),
                    protocol: Some(sp["protocol"].as_str().unwrap_or("TCP").to_string()),
                    app_protocol: sp["appProtocol"].as_str().map(str::to_string),
                })
            })
            .collect();
        // A pod none of whose ports resolve is not an endpoint; a headless Service
        // without ports lists its pods anyway.
        if ports.is_empty() && !(service_ports.is_empty() && headless) {
            continue;
        }
        let ready = publish_not_ready || meta::is_pod_ready(pod);
        let (addresses, not_ready_addresses) =
            if ready { (Some(vec![address]), None) } else { (None, Some(vec![address])) };
        subsets.push(EndpointSubset { addresses, not_ready_addresses, ports: Some(ports) });
    }
    let mut subsets = sort_subsets(subsets);
    let total: usize = subsets
        .iter()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len) + s.not_ready_addresses.as_ref().map_or(0, Vec::len))
        .sum();
    if total <= MAX_CAPACITY {
        return (subsets, false);
    }
    // Ready addresses are kept first.
    let mut room = MAX_CAPACITY;
    for list in [true, false] {
        for subset in &mut subsets {
            let addresses = if list { &mut subset.addresses } else { &mut subset.not_ready_addresses };
            if let Some(addresses) = addresses.as_mut() {
                addresses.truncate(room);
                room -= addresses.len();
            }
        }
    }
    (sort_subsets(subsets), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
    }

    #[test]
    fn ready_and_not_ready_addresses_share_a_subset_per_port_list() {
        let service = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}]}});
        let mut leaving = (*pod("c", "10.0.0.3", true)).clone();
        leaving["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        let pods = vec![pod("b", "10.0.0.2", false), pod("a", "10.0.0.1", true), Arc::new(leaving)];
        let (subsets, truncated) = desired_subsets(&service, &pods);
        assert!(!truncated);
        assert_eq!(
            json!(subsets),
            json!([{
                "addresses": [{"ip": "10.0.0.1", "nodeName": "n1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "a", "uid": "a-uid"}}],
                "notReadyAddresses": [{"ip": "10.0.0.2", "nodeName": "n1",
                    "targetRef": {"kind": "Pod", "namespace": "default", "name": "b", "uid": "b-uid"}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }])
        );
        assert_eq!(normalized(&json!(subsets)), subsets, "stored subsets compare equal");
    }

    #[test]
    fn over_a_thousand_addresses_are_cut() {
        let service = json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}});
        let pods: Vec<Arc<Value>> =
            (0..1200).map(|i| pod(&format!("p{i}"), &format!("10.1.{}.{}", i / 200, i % 200), i % 2 == 0)).collect();
        let (subsets, truncated) = desired_subsets(&service, &pods);
        assert!(truncated);
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(600), "every ready one");
        assert_eq!(subsets[0].not_ready_addresses.as_ref().map(Vec::len), Some(400));
    }
}
