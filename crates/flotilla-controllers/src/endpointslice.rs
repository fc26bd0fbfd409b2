//! The EndpointSlice controller, as kube-controller-manager's: for every Service with a
//! selector, EndpointSlices listing the matching pods that have an address, with their
//! conditions (`ready`, `serving`, `terminating`), node and target, and the Service's
//! ports resolved against each pod's container ports. Pods whose named ports resolve
//! differently go into different slices; a slice holds at most 100 endpoints; a Service
//! without endpoints keeps one empty placeholder slice, as kube's does.
//!
//! Slices are updated in place where an endpoint stays, filled before new ones are made,
//! and written only when what they should hold differs from what they hold (compared as
//! sets). Selector-less Services' slices are their users' (only slices labelled as this
//! controller's are touched); a Service that is deleted, loses its selector or becomes an
//! `ExternalName` loses the slices this controller made.
//!
//! Writes reach the slice cache a moment later: until they have, the Service is requeued
//! instead of acted on again (kube's `EndpointSliceTracker`), so a slice is never made
//! twice.
//!
//! The pieces both endpoint controllers share (which pods a Service selects, how a
//! target port resolves) are here too; `endpoints.rs` is the v1 Endpoints controller.

use crate::error::{Error, Result};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig};
use flotilla_api::LabelSelector;
use flotilla_api::Reason;
use flotilla_api::k8s_openapi::api::core::v1::ObjectReference;
use flotilla_api::k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use flotilla_client::{Cluster, DeleteParams, Informer, ObjectKey, resource};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The label naming a slice's Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages a slice.
pub(crate) const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's name in [`MANAGED_BY_LABEL`].
pub(crate) const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Set (empty) on the slices and Endpoints of headless Services.
pub(crate) const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// kube's `--max-endpoints-per-slice` default.
pub(crate) const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// How long a write may take to reach the cache before it is no longer waited for.
const TRACKER_TTL: Duration = Duration::from_secs(10);
/// How soon a Service whose slice writes are not in the cache yet is looked at again.
const STALE_RETRY: Duration = Duration::from_millis(20);

// --- What both endpoint controllers share -------------------------------------------

/// A Service's `spec.selector`, or `None` for a Service without one (its endpoints are
/// its users'). An empty selector is no selector, as kube stores it.
pub(crate) fn service_selector(service: &Value) -> Option<LabelSelector> {
    let map = service["spec"]["selector"].as_object().filter(|m| !m.is_empty())?;
    let labels: BTreeMap<String, String> =
        map.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
    Some(LabelSelector::from_map(&labels))
}

/// Whether the pod has finished (`Succeeded` or `Failed`).
fn is_terminal(pod: &Value) -> bool {
    matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

/// The pod's IPv4 address, if it has one.
pub(crate) fn pod_ipv4(pod: &Value) -> Option<String> {
    let status = &pod["status"];
    let listed = status["podIPs"].as_array().into_iter().flatten().filter_map(|ip| ip["ip"].as_str());
    listed.chain(status["podIP"].as_str()).find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()).map(str::to_string)
}

/// Whether the pod belongs in a Service's endpoints, as kube's `ShouldPodBeInEndpoints`:
/// not finished, with an address, and (unless `include_terminating`) not being deleted.
pub(crate) fn should_be_in_endpoints(pod: &Value, include_terminating: bool) -> bool {
    !is_terminal(pod) && pod_ipv4(pod).is_some() && (include_terminating || !meta::is_terminating(pod))
}

/// The pods of the Service's namespace its selector matches.
pub(crate) fn selected_pods(pods: &Informer, service: &Value, selector: &LabelSelector) -> Vec<Arc<Value>> {
    let namespace = meta::namespace(service);
    let mut selected = pods.filter(|pod| meta::namespace(pod) == namespace && meta::selects(selector, pod));
    selected.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
    selected
}

/// The port a Service port's `targetPort` names on `pod`, as kube's `FindPort`: a number
/// as is; a name by the pod's container ports (and restartable init containers') of
/// that name and the Service port's protocol. `None` if the name is not there.
pub(crate) fn find_port(pod: &Value, service_port: &Value) -> Option<i32> {
    let protocol = service_port["protocol"].as_str().unwrap_or("TCP");
    match &service_port["targetPort"] {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(name) => {
            let spec = &pod["spec"];
            let sidecars =
                spec["initContainers"].as_array().into_iter().flatten().filter(|c| c["restartPolicy"] == "Always");
            let containers = spec["containers"].as_array().into_iter().flatten().chain(sidecars);
            containers
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == name.as_str() && p["protocol"].as_str().unwrap_or("TCP") == protocol)
                .and_then(|p| p["containerPort"].as_i64())
                .and_then(|n| i32::try_from(n).ok())
        }
        // Defaulted to the port by the API; a stored Service always has one.
        _ => service_port["port"].as_i64().and_then(|n| i32::try_from(n).ok()),
    }
}

/// The pod's hostname in the Service's DNS, when it sets one under the Service as its
/// subdomain (kube's `ShouldSetHostname`).
pub(crate) fn hostname(pod: &Value, service: &Value) -> Option<String> {
    let hostname = pod["spec"]["hostname"].as_str().filter(|h| !h.is_empty())?;
    let subdomain = pod["spec"]["subdomain"].as_str()?;
    (subdomain == meta::name(service) && meta::namespace(pod) == meta::namespace(service)).then(|| hostname.to_string())
}

/// The labels of what the controller makes for a Service: the Service's own (but the
/// controller's), plus the headless label for a headless Service.
pub(crate) fn labels_from_service(service: &Value, reserved: &[&str]) -> Map<String, Value> {
    let mut labels: Map<String, Value> = meta::labels(service)
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if flotilla_api::service::is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), json!(""));
    }
    labels
}

/// Maps a pod to the Services that may list it: those in its namespace whose selector
/// matches it now, and those `listing` says list it already (its old labels may have
/// matched others: informers give only the new state).
pub(crate) fn pod_mapper(
    services: Informer,
    listing: impl Fn(&str, &str) -> Vec<String> + Send + Sync + 'static,
) -> Mapper<ObjectKey> {
    Arc::new(move |pod, _| {
        let namespace = meta::namespace(pod);
        let mut keys: Vec<ObjectKey> = services
            .filter(|service| {
                meta::namespace(service) == namespace
                    && service_selector(service).is_some_and(|selector| meta::selects(&selector, pod))
            })
            .iter()
            .map(|service| ObjectKey::of(service))
            .collect();
        keys.extend(listing(namespace, meta::name(pod)).into_iter().map(|name| ObjectKey::new(namespace, name)));
        keys.sort();
        keys.dedup();
        keys
    })
}

// --- The EndpointSlice controller ---------------------------------------------------

#[derive(Debug)]
pub(crate) struct EndpointSliceController {
    cluster: Arc<dyn Cluster>,
    services: Informer,
    pods: Informer,
    /// This controller's slices (the informer lists only those).
    slices: Informer,
    tracker: Tracker,
}

impl EndpointSliceController {
    /// The label selector of the slices this controller manages (for its informer).
    pub(crate) fn managed_selector() -> String {
        format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
    }

    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        services: Informer,
        pods: Informer,
        slices: Informer,
        config: RunnerConfig,
    ) {
        let controller = Arc::new(EndpointSliceController {
            cluster,
            services: services.clone(),
            pods: pods.clone(),
            slices: slices.clone(),
            tracker: Tracker::default(),
        });
        let all: AllKeys<ObjectKey> = {
            let (services, slices) = (services.clone(), slices.clone());
            Arc::new(move || {
                let mut keys: Vec<ObjectKey> = services.list().iter().map(|s| ObjectKey::of(s)).collect();
                // Slices of Services that are gone, so that they are cleaned up.
                keys.extend(slices.list().iter().filter_map(|slice| service_of(slice)));
                keys.sort();
                keys.dedup();
                keys
            })
        };
        let own: Mapper<ObjectKey> = Arc::new(|service, _| vec![ObjectKey::of(service)]);
        let slice_to_service: Mapper<ObjectKey> = Arc::new(|slice, _| service_of(slice).into_iter().collect());
        let listing = {
            let slices = slices.clone();
            move |namespace: &str, pod: &str| -> Vec<String> {
                slices
                    .filter(|slice| meta::namespace(slice) == namespace && lists_pod(slice, pod))
                    .iter()
                    .filter_map(|slice| {
                        meta::labels(slice).get(SERVICE_NAME_LABEL).and_then(Value::as_str).map(str::to_string)
                    })
                    .collect()
            }
        };
        let pods_to_services = pod_mapper(services.clone(), listing);
        Controller::new("endpointslice", all, config)
            .reports_failures(&services, controller.cluster.clone())
            .watches(services, own)
            .watches(pods, pods_to_services)
            .watches(slices, slice_to_service)
            .run(controller)
            .await;
    }

    /// This controller's slices of the Service `key`, from the cache.
    fn slices_of(&self, key: &ObjectKey) -> Vec<Arc<Value>> {
        self.slices.filter(|slice| {
            meta::namespace(slice) == key.namespace
                && meta::labels(slice).get(SERVICE_NAME_LABEL).and_then(Value::as_str) == Some(key.name.as_str())
                && meta::labels(slice).get(MANAGED_BY_LABEL).and_then(Value::as_str) == Some(MANAGED_BY)
        })
    }

    async fn delete_slice(&self, key: &ObjectKey, slice: &Value) -> Result<()> {
        let params = DeleteParams { precondition_uid: Some(meta::uid(slice).to_string()), ..DeleteParams::default() };
        let rt = resource("discovery.k8s.io/v1", "EndpointSlice");
        match self.cluster.delete(rt, Some(&key.namespace), meta::name(slice), &params).await {
            Ok(_) => {}
            Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => {}
            Err(e) => return Err(Error::api(format!("deleting EndpointSlice {}", meta::name(slice)), e)),
        }
        self.tracker.expect(key, meta::name(slice), None);
        Ok(())
    }

    async fn apply(&self, key: &ObjectKey, plan: Plan) -> Result<()> {
        let rt = resource("discovery.k8s.io/v1", "EndpointSlice");
        // Creates, then updates, then deletes: the endpoints are never all missing.
        for slice in plan.create {
            let created = match self.cluster.create(rt, Some(&key.namespace), &slice).await {
                Ok(created) => created,
                // The namespace is being deleted, and the Service with it.
                Err(e) if e.reason == Reason::Forbidden => return Ok(()),
                Err(e) => return Err(Error::api("creating an EndpointSlice", e)),
            };
            self.tracker.expect(key, meta::name(&created), Some(revision(&created)));
        }
        for slice in plan.update {
            let name = meta::name(&slice).to_string();
            let updated = self
                .cluster
                .replace(rt, Some(&key.namespace), &name, &slice, None)
                .await
                .map_err(|e| Error::api(format!("updating EndpointSlice {name}"), e))?;
            self.tracker.expect(key, &name, Some(revision(&updated)));
        }
        for slice in plan.delete {
            self.delete_slice(key, &slice).await?;
        }
        Ok(())
    }
}

impl Reconciler<ObjectKey> for EndpointSliceController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        if !self.tracker.caught_up(key, &self.slices) {
            return Ok(Action::Requeue(STALE_RETRY));
        }
        let existing = self.slices_of(key);
        let service = self.services.get(&key.namespace, &key.name);
        let selector = service
            .as_deref()
            .filter(|s| flotilla_api::service::service_type(s) != "ExternalName")
            .and_then(service_selector);
        let (Some(service), Some(selector)) = (service, selector) else {
            for slice in &existing {
                self.delete_slice(key, slice).await?;
            }
            return Ok(Action::AwaitChange);
        };
        let pods = selected_pods(&self.pods, &service, &selector);
        let desired = desired_endpoints(&service, &pods);
        let plan = plan(&service, desired, &existing);
        if !plan.is_empty() {
            tracing::debug!(
                create = plan.create.len(),
                update = plan.update.len(),
                delete = plan.delete.len(),
                "syncing EndpointSlices"
            );
            self.apply(key, plan).await?;
        }
        Ok(Action::AwaitChange)
    }
}

/// The Service a slice of this controller belongs to.
fn service_of(slice: &Value) -> Option<ObjectKey> {
    let labels = meta::labels(slice);
    if labels.get(MANAGED_BY_LABEL).and_then(Value::as_str) != Some(MANAGED_BY) {
        return None;
    }
    let service = labels.get(SERVICE_NAME_LABEL).and_then(Value::as_str)?;
    Some(ObjectKey::new(meta::namespace(slice), service))
}

/// Whether a slice lists the pod `name` (of its namespace).
fn lists_pod(slice: &Value, name: &str) -> bool {
    slice["endpoints"].as_array().into_iter().flatten().any(|e| e["targetRef"]["name"] == name)
}

fn revision(object: &Value) -> u64 {
    meta::resource_version(object).parse().unwrap_or(0)
}

// --- Desired state and the plan to reach it ------------------------------------------

/// Endpoints that share one port list, by endpoint key.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Group {
    ports: Vec<EndpointPort>,
    endpoints: BTreeMap<String, Endpoint>,
}

/// An endpoint's identity: its pod's uid (or its first address).
fn endpoint_key(endpoint: &Endpoint) -> String {
    match endpoint.target_ref.as_ref().and_then(|r| r.uid.clone()) {
        Some(uid) => uid,
        None => endpoint.addresses.first().cloned().unwrap_or_default(),
    }
}

/// A port list as a group key: sorted, so that order does not matter.
fn ports_key(ports: &[EndpointPort]) -> String {
    let mut sorted: Vec<(&str, i32, &str, &str)> = ports
        .iter()
        .map(|p| {
            (
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref().unwrap_or(""),
            )
        })
        .collect();
    sorted.sort_unstable();
    format!("{sorted:?}")
}

/// The endpoints the Service's selected pods give, grouped by port list.
pub(crate) fn desired_endpoints(service: &Value, pods: &[Arc<Value>]) -> BTreeMap<String, Group> {
    let publish_not_ready = service["spec"]["publishNotReadyAddresses"] == true;
    let service_ports = service["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for pod in pods.iter().filter(|pod| should_be_in_endpoints(pod, true)) {
        let Some(ip) = pod_ipv4(pod) else { continue };
        let serving = meta::is_pod_ready(pod);
        let terminating = meta::is_terminating(pod);
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                // Never ready while terminating, unless the Service publishes not-ready
                // addresses (kube's compatibility rule).
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname(pod, service),
            node_name: pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).map(str::to_string),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: Some(meta::namespace(pod).to_string()),
                name: Some(meta::name(pod).to_string()),
                uid: Some(meta::uid(pod).to_string()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        };
        let ports: Vec<EndpointPort> = service_ports
            .iter()
            .filter_map(|sp| {
                let port = find_port(pod, sp)?;
                Some(EndpointPort {
                    name: Some(sp["name"].as_str().unwrap_or("").to_string()),
                    port: Some(port),
                    protocol: Some(sp["protocol"].as_str().unwrap_or("TCP").to_string()),
                    app_protocol: sp["appProtocol"].as_str().map(str::to_string),
                })
            })
            .collect();
        let group = groups.entry(ports_key(&ports)).or_insert_with(|| Group { ports, ..Group::default() });
        group.endpoints.insert(endpoint_key(&endpoint), endpoint);
    }
    groups
}

/// The writes that make the Service's slices hold the desired endpoints.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) create: Vec<Value>,
    pub(crate) update: Vec<Value>,
    pub(crate) delete: Vec<Value>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The metadata every slice of the Service carries.
struct SliceMeta {
    labels: Map<String, Value>,
    owner: Value,
    generate_name: String,
    namespace: String,
}

impl SliceMeta {
    fn of(service: &Value) -> SliceMeta {
        let mut labels = labels_from_service(service, &[SERVICE_NAME_LABEL, MANAGED_BY_LABEL]);
        labels.insert(SERVICE_NAME_LABEL.into(), json!(meta::name(service)));
        labels.insert(MANAGED_BY_LABEL.into(), json!(MANAGED_BY));
        // kube cuts the prefix so that the generated name fits a DNS subdomain.
        let generate_name: String = format!("{}-", meta::name(service)).chars().take(248).collect();
        SliceMeta {
            labels,
            owner: meta::controller_reference(service, "v1", "Service"),
            generate_name,
            namespace: meta::namespace(service).to_string(),
        }
    }

    fn matches(&self, slice: &Value) -> bool {
        slice["metadata"]["labels"].as_object() == Some(&self.labels)
            && meta::owner_references(slice) == std::slice::from_ref(&self.owner)
    }

    fn new_slice(&self, ports: &[EndpointPort], endpoints: &[Endpoint]) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "generateName": self.generate_name,
                "namespace": self.namespace,
                "labels": self.labels,
                "ownerReferences": [self.owner],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        })
    }

    /// Whether the slice's owner is this Service (not an older one of the same name).
    fn owns(&self, slice: &Value) -> bool {
        meta::owner_references(slice).iter().any(|owner| owner["uid"] == self.owner["uid"])
    }

    /// `new` (a slice to create) written over `existing` instead: its name, uid and
    /// revision, the new slice's labels, owner, ports and endpoints.
    fn reused_slice(existing: &Value, new: &Value) -> Value {
        let mut slice = existing.clone();
        slice["metadata"]["labels"] = new["metadata"]["labels"].clone();
        slice["metadata"]["ownerReferences"] = new["metadata"]["ownerReferences"].clone();
        slice["endpoints"] = new["endpoints"].clone();
        slice["ports"] = new["ports"].clone();
        slice
    }

    fn updated_slice(&self, existing: &Value, ports: &[EndpointPort], endpoints: &[Endpoint]) -> Value {
        let mut slice = existing.clone();
        slice["metadata"]["labels"] = Value::Object(self.labels.clone());
        slice["metadata"]["ownerReferences"] = json!([self.owner]);
        slice["endpoints"] = json!(endpoints);
        slice["ports"] = json!(ports);
        slice
    }
}

/// One existing slice of a group and what it will hold.
struct Working {
    slice: Arc<Value>,
    old: Vec<Endpoint>,
    new: Vec<Endpoint>,
}

impl Working {
    /// Whether the endpoints change (compared as sets).
    fn changed(&self) -> bool {
        fn sorted(endpoints: &[Endpoint]) -> Vec<(String, &Endpoint)> {
            let mut keyed: Vec<(String, &Endpoint)> = endpoints.iter().map(|e| (endpoint_key(e), e)).collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            keyed
        }
        sorted(&self.old) != sorted(&self.new)
    }
}

/// Plans the writes from what the slices hold (`existing`, this controller's slices of
/// the Service) to `desired`, as kube's reconciler: endpoints stay in the slice that
/// holds them; the rest fill slices with room (those changing anyway first), then new
/// ones; emptied slices go; one placeholder stays when there are no endpoints at all.
pub(crate) fn plan(service: &Value, desired: BTreeMap<String, Group>, existing: &[Arc<Value>]) -> Plan {
    let meta = SliceMeta::of(service);
    let mut plan = Plan::default();
    let mut by_group: HashMap<String, Vec<(Arc<Value>, EndpointSlice)>> = HashMap::new();
    for slice in existing {
        match flotilla_client::decode::<EndpointSlice>(slice) {
            Ok(typed) if typed.address_type == "IPv4" => {
                let key = ports_key(typed.ports.as_deref().unwrap_or_default());
                by_group.entry(key).or_default().push((slice.clone(), typed));
            }
            // Another address type (immutable) or unreadable: replaced.
            _ => plan.delete.push((**slice).clone()),
        }
    }
    let total: usize = desired.values().map(|g| g.endpoints.len()).sum();
    for (key, group) in &desired {
        let mut slices = by_group.remove(key).unwrap_or_default();
        slices.sort_by(|a, b| meta::name(&a.0).cmp(meta::name(&b.0)));
        let mut placed: HashSet<&str> = HashSet::new();
        let mut working: Vec<Working> = slices
            .into_iter()
            .map(|(slice, typed)| {
                let old = typed.endpoints.unwrap_or_default();
                let mut new = Vec::new();
                for endpoint in &old {
                    let endpoint_key = endpoint_key(endpoint);
                    if let Some((k, wanted)) = group.endpoints.get_key_value(&endpoint_key)
                        && placed.insert(k.as_str())
                    {
                        new.push(wanted.clone());
                    }
                }
                Working { slice, old, new }
            })
            .collect();
        let mut remaining =
            group.endpoints.iter().filter(|(k, _)| !placed.contains(k.as_str())).map(|(_, e)| e.clone());
        // Slices that change anyway take new endpoints first, so fewer slices are written.
        let mut order: Vec<usize> = (0..working.len()).collect();
        order.sort_by_key(|i| !working[*i].changed());
        for i in order {
            while working[i].new.len() < MAX_ENDPOINTS_PER_SLICE {
                match remaining.next() {
                    Some(endpoint) => working[i].new.push(endpoint),
                    None => break,
                }
            }
        }
        let rest: Vec<Endpoint> = remaining.collect();
        for chunk in rest.chunks(MAX_ENDPOINTS_PER_SLICE) {
            plan.create.push(meta.new_slice(&group.ports, chunk));
        }
        for w in working {
            if w.new.is_empty() {
                plan.delete.push((*w.slice).clone());
            } else if w.changed() || !meta.matches(&w.slice) {
                plan.update.push(meta.updated_slice(&w.slice, &group.ports, &w.new));
            }
        }
    }
    // Slices of port lists no endpoint has any more.
    for (_, slices) in by_group {
        plan.delete.extend(slices.into_iter().map(|(slice, _)| (*slice).clone()));
    }
    if total == 0 {
        // One placeholder: kube keeps an empty slice for a Service without endpoints.
        let is_placeholder = |slice: &Value| {
            slice["endpoints"].as_array().is_none_or(Vec::is_empty)
                && slice["ports"].as_array().is_none_or(Vec::is_empty)
        };
        match plan.delete.iter().position(|s| is_placeholder(s) && s["addressType"] == "IPv4") {
            Some(index) => {
                let kept = plan.delete.remove(index);
                if !meta.matches(&kept) {
                    plan.update.push(meta.updated_slice(&kept, &[], &[]));
                }
            }
            None => plan.create.push(meta.new_slice(&[], &[])),
        }
    }
    // As kube's `finalize`: a slice to make takes the place of one to delete (same
    // address type, owned by this Service), so that a Service leaving its placeholder
    // gets its first endpoints in one write, and the slice count does not churn.
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let old = &plan.delete[i];
        if old["addressType"] == "IPv4" && meta.owns(old) {
            let old = plan.delete.remove(i);
            if let Some(new) = plan.create.pop() {
                plan.update.push(SliceMeta::reused_slice(&old, &new));
            }
        } else {
            i += 1;
        }
    }
    plan
}

// --- Waiting for the cache to show this controller's writes ---------------------------

#[derive(Debug)]
struct Expected {
    /// Slice name → the revision written (`None`: deleted).
    slices: HashMap<String, Option<u64>>,
    since: Instant,
}

/// The slice writes not yet seen in the cache, per Service.
#[derive(Debug, Default)]
struct Tracker {
    services: Mutex<HashMap<ObjectKey, Expected>>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Expected>> {
        self.services.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn expect(&self, service: &ObjectKey, slice: &str, revision: Option<u64>) {
        let mut services = self.lock();
        let expected = services
            .entry(service.clone())
            .or_insert_with(|| Expected { slices: HashMap::new(), since: Instant::now() });
        expected.slices.insert(slice.to_string(), revision);
        expected.since = Instant::now();
    }

    /// Whether the cache shows every write made for the Service (or they expired).
    fn caught_up(&self, service: &ObjectKey, cache: &Informer) -> bool {
        let mut services = self.lock();
        let Some(expected) = services.get_mut(service) else { return true };
        expected.slices.retain(|name, revision| {
            let cached = cache.get(&service.namespace, name);
            match revision {
                Some(revision) => cached.is_none_or(|slice| self::revision(&slice) < *revision),
                None => cached.is_some(),
            }
        });
        if expected.slices.is_empty() || expected.since.elapsed() > TRACKER_TTL {
            services.remove(service);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"team": "a"}},
               "spec": {"selector": {"app": "web"}, "ports": ports}})
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, ports: Value) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
    }

    fn endpoints(slice: &Value) -> Vec<&str> {
        let mut names: Vec<&str> = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["targetRef"]["name"].as_str())
            .collect();
        names.sort_unstable();
        names
    }

    /// The slices a plan leaves, as the API would store them.
    fn stored(plan: Plan, existing: &[Arc<Value>]) -> Vec<Arc<Value>> {
        let deleted: HashSet<String> = plan.delete.iter().map(|s| meta::name(s).to_string()).collect();
        let updated: HashMap<String, Value> =
            plan.update.into_iter().map(|s| (meta::name(&s).to_string(), s)).collect();
        let mut slices: Vec<Arc<Value>> = existing
            .iter()
            .filter(|s| !deleted.contains(meta::name(s)))
            .map(|s| updated.get(meta::name(s)).map_or_else(|| s.clone(), |u| Arc::new(u.clone())))
            .collect();
        for (i, mut created) in plan.create.into_iter().enumerate() {
            created["metadata"]["name"] = json!(format!("web-{i}{}", slices.len()));
            created["metadata"]["uid"] = json!(format!("slice-{i}{}", slices.len()));
            slices.push(Arc::new(created));
        }
        slices
    }

    #[test]
    fn named_ports_resolve_per_pod_and_split_slices() {
        let svc = service(json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "web"}]));
        let pods = vec![
            pod("a", Some("10.244.0.1"), true, json!([{"name": "web", "containerPort": 8080, "protocol": "TCP"}])),
            pod("b", Some("10.244.0.2"), false, json!([{"name": "web", "containerPort": 9090}])),
            pod("c", Some("10.244.0.3"), true, json!([{"name": "other", "containerPort": 7070}])),
            pod("no-ip", None, true, json!([])),
        ];
        let desired = desired_endpoints(&svc, &pods);
        assert_eq!(desired.len(), 3, "8080, 9090 and no port: {desired:?}");
        let plan = plan(&svc, desired, &[]);
        assert_eq!(plan.create.len(), 3);
        let by_port: BTreeMap<String, &Value> = plan.create.iter().map(|s| (s["ports"].to_string(), s)).collect();
        let eighty_eighty = by_port.get(r#"[{"name":"http","port":8080,"protocol":"TCP"}]"#).expect("a slice for 8080");
        assert_eq!(endpoints(eighty_eighty), ["a"]);
        let a = &eighty_eighty["endpoints"][0];
        assert_eq!(a["addresses"], json!(["10.244.0.1"]));
        assert_eq!(a["conditions"], json!({"ready": true, "serving": true, "terminating": false}));
        assert_eq!(a["nodeName"], "n1");
        assert_eq!(a["targetRef"], json!({"kind": "Pod", "namespace": "default", "name": "a", "uid": "a-uid"}));
        let b = by_port.get(r#"[{"name":"http","port":9090,"protocol":"TCP"}]"#).expect("a slice for 9090");
        assert_eq!(b["endpoints"][0]["conditions"], json!({"ready": false, "serving": false, "terminating": false}));
        assert!(by_port.contains_key("[]"), "pod c resolves no port: {by_port:?}");
        let meta = &eighty_eighty["metadata"];
        assert_eq!(meta["generateName"], "web-");
        assert_eq!(
            meta["labels"],
            json!({"team": "a", "kubernetes.io/service-name": "web",
                   "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"})
        );
        assert_eq!(meta["ownerReferences"][0]["uid"], "svc-uid");
        assert_eq!(eighty_eighty["addressType"], "IPv4");
    }

    #[test]
    fn terminating_pods_stay_not_ready_but_serving() {
        let svc = service(json!([{"name": "", "port": 80, "protocol": "TCP", "targetPort": 8080}]));
        let mut leaving = (*pod("a", Some("10.244.0.1"), true, json!([]))).clone();
        leaving["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        let mut done = (*pod("b", Some("10.244.0.2"), false, json!([]))).clone();
        done["status"]["phase"] = json!("Succeeded");
        let desired = desired_endpoints(&svc, &[Arc::new(leaving), Arc::new(done)]);
        let group = desired.values().next().expect("one group");
        assert_eq!(group.endpoints.len(), 1, "finished pods are left out");
        let conditions = group.endpoints.values().next().and_then(|e| e.conditions.clone()).expect("conditions");
        assert_eq!(
            (conditions.ready, conditions.serving, conditions.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn slices_are_updated_in_place_filled_to_a_hundred_and_left_alone_when_equal() {
        let svc = service(json!([{"name": "", "port": 80, "protocol": "TCP", "targetPort": 8080}]));
        let pods: Vec<Arc<Value>> = (0..150)
            .map(|i| pod(&format!("p{i:03}"), Some(&format!("10.244.{}.{}", i / 250, i % 250 + 1)), true, json!([])))
            .collect();
        let first = plan(&svc, desired_endpoints(&svc, &pods), &[]);
        assert_eq!(first.create.len(), 2);
        assert_eq!(first.create.iter().map(|s| endpoints(s).len()).collect::<Vec<_>>(), [100, 50]);
        let slices = stored(first, &[]);

        let again = plan(&svc, desired_endpoints(&svc, &pods), &slices);
        assert!(again.is_empty(), "nothing changed: {again:?}");

        // One pod goes, one comes: the slice that loses one takes the new one, in place.
        let mut next: Vec<Arc<Value>> = pods[1..].to_vec();
        next.push(pod("q", Some("10.244.9.9"), true, json!([])));
        let changed = plan(&svc, desired_endpoints(&svc, &next), &slices);
        assert!(changed.create.is_empty() && changed.delete.is_empty(), "{changed:?}");
        assert_eq!(changed.update.len(), 1);
        let updated = &changed.update[0];
        assert!(endpoints(updated).contains(&"q") && !endpoints(updated).contains(&"p000"));
        assert_eq!(endpoints(updated).len(), 100);

        // A pod turning not ready changes its slice only.
        let mut not_ready = pods.clone();
        not_ready[120] = pod("p120", Some("10.244.0.121"), false, json!([]));
        let one = plan(&svc, desired_endpoints(&svc, &not_ready), &slices);
        assert_eq!((one.create.len(), one.update.len(), one.delete.len()), (0, 1, 0));

        // Scaled to nothing: one slice is emptied into the placeholder, the other goes
        // (kube's placeholder would be created, then take a deleted slice's place).
        let none = plan(&svc, desired_endpoints(&svc, &[]), &slices);
        assert_eq!((none.create.len(), none.update.len(), none.delete.len()), (0, 1, 1), "{none:?}");
        let emptied = stored(none, &slices);
        assert_eq!(emptied.len(), 1);
        assert_eq!(emptied[0]["endpoints"], json!([]));
        assert!(plan(&svc, desired_endpoints(&svc, &[]), &emptied).is_empty(), "the placeholder is left alone");
    }

    #[test]
    fn the_first_endpoints_fill_the_placeholder_in_one_write() {
        let svc = service(json!([{"name": "", "port": 80, "protocol": "TCP", "targetPort": 8080}]));
        let placeholder = stored(plan(&svc, desired_endpoints(&svc, &[]), &[]), &[]);
        assert_eq!(placeholder.len(), 1);
        let pods = vec![pod("a", Some("10.244.0.1"), true, json!([]))];
        let first = plan(&svc, desired_endpoints(&svc, &pods), &placeholder);
        assert_eq!((first.create.len(), first.update.len(), first.delete.len()), (0, 1, 0), "{first:?}");
        let updated = &first.update[0];
        assert_eq!(meta::name(updated), meta::name(&placeholder[0]), "the placeholder itself");
        assert_eq!(updated["metadata"]["uid"], placeholder[0]["metadata"]["uid"]);
        assert_eq!(endpoints(updated), ["a"]);
        assert_eq!(updated["ports"], json!([{"name": "", "port": 8080, "protocol": "TCP"}]));
        assert_eq!(updated["metadata"]["labels"], placeholder[0]["metadata"]["labels"]);

        // A slice another Service of the same name owned is not reused: it goes.
        let mut foreign = (*placeholder[0]).clone();
        foreign["metadata"]["ownerReferences"][0]["uid"] = json!("old-svc-uid");
        let replaced = plan(&svc, desired_endpoints(&svc, &pods), &[Arc::new(foreign)]);
        assert_eq!((replaced.create.len(), replaced.update.len(), replaced.delete.len()), (1, 0, 1));
    }
}
