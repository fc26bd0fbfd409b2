//! Server-side printing: the meta.k8s.io/v1 `Table` that kube-apiserver returns when a
//! client asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, which is what
//! `kubectl get` prints.
//!
//! The columns and cells follow kube-apiserver's printers
//! (`pkg/printers/internalversion/printers.go`) for every kind Flotilla serves; any
//! other kind gets the apiserver's default table (`Name`, `Created At`). As in
//! kube-apiserver the tables are generated "wide": every row carries the cells of the
//! priority-1 columns too, and kubectl hides those columns unless `-o wide`.
//!
//! Everything here is a pure function of the stored JSON object and the current time
//! (a parameter, so tests are deterministic). Where the Go printers read a field that
//! kube's defaulting always sets (a Service's type, a port's protocol, a Deployment's
//! replicas...), a missing field is read as its default. Ages are Go's
//! `duration.HumanDuration`, ported exactly ([`human_duration`]).

use flotilla_api::{ApiError, ResourceType};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

/// What each row's `object` carries: the `includeObject` query parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    /// `None`: `"object": null`.
    None,
    /// `Metadata` (the default): a meta.k8s.io/v1 `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: the whole object.
    Object,
}

impl IncludeObject {
    /// Parses `includeObject`; absent or empty is `Metadata`. Anything else is the
    /// BadRequest kube-apiserver answers.
    #[allow(clippy::result_large_err, reason = "ApiError is the crate's error type")]
    pub(crate) fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s.unwrap_or("") {
            "" | "Metadata" => Ok(Self::Metadata),
            "None" => Ok(Self::None),
            "Object" => Ok(Self::Object),
            other => Err(ApiError::bad_request(format!(
                "Unable to convert to Table as requested: includeObject: Invalid value: \"{other}\": \
                 must be 'Metadata', 'Object', 'None', or empty"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------
// Accept negotiation
// ---------------------------------------------------------------------------------

/// Whether the Accept header's first acceptable media type asks for a Table
/// (`application/json;as=Table;v=v1;g=meta.k8s.io`, or `v1beta1`; YAML and wildcards
/// too). Clauses are ordered by `q` then specificity, as kube's negotiation does; a
/// clause Flotilla cannot serve (protobuf, an unknown conversion) is skipped. kubectl
/// sends `application/json;as=Table;v=v1;g=meta.k8s.io`, then the same with `v=v1beta1`,
/// then `application/json`.
pub(crate) fn wants_table(accept: &str) -> bool {
    struct Clause<'a> {
        essence: String,
        params: Vec<(String, &'a str)>,
        q: f64,
    }
    let mut clauses: Vec<Clause<'_>> = Vec::new();
    for raw in accept.split(',') {
        let mut parts = raw.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if essence.is_empty() {
            continue;
        }
        let mut params = Vec::new();
        let mut q = 1.0;
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim().trim_matches('"');
            if key == "q" {
                q = value.parse().unwrap_or(1.0);
            } else {
                params.push((key, value));
            }
        }
        clauses.push(Clause { essence, params, q });
    }
    let specificity = |essence: &str| -> u8 {
        match essence.split_once('/') {
            Some(("*", _)) => 0,
            Some((_, "*")) => 1,
            _ => 2,
        }
    };
    clauses.sort_by(|a, b| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| specificity(&b.essence).cmp(&specificity(&a.essence)))
    });

    for clause in &clauses {
        let (kind, subtype) = clause.essence.split_once('/').unwrap_or((clause.essence.as_str(), ""));
        let matches = |sub: &str| (kind == "*" || kind == "application") && (subtype == "*" || subtype == sub);
        let serves_plain = matches("json") || matches("yaml");
        let param = |name: &str| clause.params.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let (as_kind, group, version) = (param("as"), param("g"), param("v"));
        if as_kind.is_none() && group.is_none() && version.is_none() {
            if serves_plain {
                return false;
            }
            continue;
        }
        let meta_group = group == Some("meta.k8s.io") && matches!(version, Some("v1" | "v1beta1"));
        match as_kind {
            Some("Table") if meta_group && serves_plain => return true,
            Some("PartialObjectMetadata" | "PartialObjectMetadataList") if meta_group && serves_plain => {
                return false;
            }
            _ => continue,
        }
    }
    false
}

// ---------------------------------------------------------------------------------
// Tables, rows, column definitions
// ---------------------------------------------------------------------------------

/// Column definitions for a kind: meta.k8s.io/v1 `TableColumnDefinition`s.
pub(crate) fn column_definitions(rt: &ResourceType) -> Value {
    Value::Array(
        columns(rt)
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.ty,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// One `TableRow` for `object`: its cells, the row conditions kube adds for finished
/// pods, and the object as `include` asks.
pub(crate) fn row(rt: &ResourceType, object: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let (cells, conditions) = cells(rt, object, now);
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells));
    if let Some(conditions) = conditions {
        row.insert("conditions".into(), conditions);
    }
    let embedded = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
        IncludeObject::Object => {
            let mut full = object.clone();
            if let Some(map) = full.as_object_mut() {
                map.entry("apiVersion").or_insert_with(|| Value::String(rt.api_version()));
                map.entry("kind").or_insert_with(|| Value::String(rt.kind.to_string()));
            }
            full
        }
    };
    row.insert("object".into(), embedded);
    Value::Object(row)
}

/// A whole `Table`: one row per item of a list (an object with `items`), or one row for
/// a single object. `metadata` carries the list's `resourceVersion`, `continue` and
/// `remainingItemCount`, or the single object's `resourceVersion`.
pub(crate) fn table(rt: &ResourceType, list_or_object: &Value, include: IncludeObject, now: Timestamp) -> Value {
    let mut metadata = Map::new();
    let rows: Vec<Value> = match list_or_object.get("items") {
        Some(items) => {
            for key in ["resourceVersion", "continue", "remainingItemCount"] {
                match at(list_or_object, &["metadata", key]) {
                    Some(Value::String(s)) if s.is_empty() => {}
                    Some(value) => {
                        metadata.insert(key.into(), value.clone());
                    }
                    None => {}
                }
            }
            items.as_array().map(Vec::as_slice).unwrap_or(&[]).iter().map(|item| row(rt, item, include, now)).collect()
        }
        None => {
            let rv = text(list_or_object, &["metadata", "resourceVersion"]);
            if !rv.is_empty() {
                metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
            }
            vec![row(rt, list_or_object, include, now)]
        }
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(rt),
        "rows": rows,
    })
}

/// The object of one watch event as a one-row `Table`. kube-apiserver sends column
/// definitions only with the first event of a watch (later events are converted with
/// `NoHeaders`, which leaves `columnDefinitions` null), so pass `with_headers` true for
/// the first event only. (kube passes `Status` objects of ERROR events through
/// unconverted.)
pub(crate) fn watch_table(
    rt: &ResourceType,
    object: &Value,
    include: IncludeObject,
    now: Timestamp,
    with_headers: bool,
) -> Value {
    let mut table = table(rt, object, include, now);
    if !with_headers && let Some(map) = table.as_object_mut() {
        map.insert("columnDefinitions".into(), Value::Null);
    }
    table
}

// ---------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------

/// One column definition.
#[derive(Debug)]
struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: i64,
    description: &'static str,
}

const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 0, description }
}

const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", priority: 1, description }
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some \
resources may allow a client to request the generation of an appropriate name automatically. Name is primarily \
intended for creation idempotence and configuration definition. Cannot be updated. More info: \
https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const CREATED_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was \
created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set \
this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. \
More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const NAME: Column = Column { name: "Name", ty: "string", format: "name", priority: 0, description: NAME_DESC };
const AGE: Column = col("Age", "string", CREATED_DESC);
const CONTAINERS: Column = wide("Containers", "string", "Names of each container in the template.");
const IMAGES: Column = wide("Images", "string", "Images referenced by each container in the template.");

static NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

static POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod \
         has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled \
         right away as preemption victims receive their graceful termination periods.",
    ),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

static SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed."),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this \
         service.",
    ),
    col("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

static ENDPOINTS_COLUMNS: &[Column] =
    &[NAME, col("Endpoints", "string", "The set of all endpoints is the union of all subsets."), AGE];

static CONFIG_MAP_COLUMNS: &[Column] = &[NAME, col("Data", "string", "Data contains the configuration data."), AGE];

static SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Used to facilitate programmatic handling of secret data."),
    col("Data", "string", "Data contains the secret data."),
    AGE,
];

static SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

static PDB_COLUMNS: &[Column] = &[
    NAME,
    col("Min Available", "string", "The minimum number of pods that must be available"),
    col("Max Unavailable", "string", "The maximum number of pods that may be unavailable"),
    col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time"),
    AGE,
];

static NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release."),
    wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r'."),
    wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API."),
];

static EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the \
         object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go \
         field access statement.",
    ),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { name: "Name", ty: "string", format: "name", priority: 1, description: NAME_DESC },
];

static REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "Replicas is the number of desired pods."),
    col("Current", "integer", "Replicas is the most recently observed number of non-terminating pods."),
    col("Ready", "integer", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "Selector is a label query over pods that should match the replica count."),
];

static DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this \
         deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "Label selector for pods."),
];

static DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the \
         daemon pod).",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon \
         pod running with a Ready Condition.",
    ),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and \
         available (ready for at least spec.minReadySeconds)",
    ),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
];

static JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col("Completions", "string", "The number of pods which reached phase Succeeded."),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "A label query over pods that should match the pod count."),
];

static CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    col("Timezone", "string", "The time zone name for the given schedule."),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started \
         executions.",
    ),
    col("Active", "integer", "A list of pointers to currently running jobs."),
    col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "A label query over pods that should match the pod count."),
];

static ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", "addressType specifies the type of address carried by this EndpointSlice."),
    col("Ports", "string", "ports specifies the list of network ports exposed by each endpoint in this slice."),
    col("Endpoints", "string", "endpoints is a list of unique endpoints in this slice."),
    AGE,
];

static INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
    col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

static INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller that is responsible for handling this class"),
    col("Parameters", "string", "A reference to a resource with additional parameters"),
    AGE,
];

static HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", "scaleTargetRef points to the target resource to scale."),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count.",
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    col(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
    ),
    col(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the \
         autoscaler.",
    ),
    AGE,
];

/// kube-apiserver's `DefaultTableConvertor`, for kinds without a printer.
static DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", CREATED_DESC)];

/// The printed kinds, by (group, kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Printer {
    Namespace,
    Pod,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    Node,
    Event,
    ReplicaSet,
    Deployment,
    DaemonSet,
    Job,
    CronJob,
    EndpointSlice,
    Ingress,
    IngressClass,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    Default,
}

fn printer(rt: &ResourceType) -> Printer {
    match (rt.group, rt.kind) {
        ("", "Namespace") => Printer::Namespace,
        ("", "Pod") => Printer::Pod,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "Node") => Printer::Node,
        ("", "Event") => Printer::Event,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("batch", "Job") => Printer::Job,
        ("batch", "CronJob") => Printer::CronJob,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("networking.k8s.io", "Ingress") => Printer::Ingress,
        ("networking.k8s.io", "IngressClass") => Printer::IngressClass,
        ("autoscaling", "HorizontalPodAutoscaler") => Printer::HorizontalPodAutoscaler,
        ("policy", "PodDisruptionBudget") => Printer::PodDisruptionBudget,
        _ => Printer::Default,
    }
}

fn columns(rt: &ResourceType) -> &'static [Column] {
    columns_of(printer(rt))
}

fn columns_of(printer: Printer) -> &'static [Column] {
    match printer {
        Printer::Namespace => NAMESPACE_COLUMNS,
        Printer::Pod => POD_COLUMNS,
        Printer::Service => SERVICE_COLUMNS,
        Printer::Endpoints => ENDPOINTS_COLUMNS,
        Printer::ConfigMap => CONFIG_MAP_COLUMNS,
        Printer::Secret => SECRET_COLUMNS,
        Printer::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
        Printer::Node => NODE_COLUMNS,
        Printer::Event => EVENT_COLUMNS,
        Printer::ReplicaSet => REPLICA_SET_COLUMNS,
        Printer::Deployment => DEPLOYMENT_COLUMNS,
        Printer::DaemonSet => DAEMON_SET_COLUMNS,
        Printer::Job => JOB_COLUMNS,
        Printer::CronJob => CRON_JOB_COLUMNS,
        Printer::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
        Printer::Ingress => INGRESS_COLUMNS,
        Printer::IngressClass => INGRESS_CLASS_COLUMNS,
        Printer::HorizontalPodAutoscaler => HPA_COLUMNS,
        Printer::PodDisruptionBudget => PDB_COLUMNS,
        Printer::Default => DEFAULT_COLUMNS,
    }
}

// ---------------------------------------------------------------------------------
// Cells
// ---------------------------------------------------------------------------------

/// The row's cells (one per column, wide ones included) and its conditions.
fn cells(rt: &ResourceType, obj: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    cells_of(printer(rt), obj, now)
}

fn cells_of(printer: Printer, obj: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let name = || Value::String(text(obj, &["metadata", "name"]).to_string());
    let age = || Value::String(since(timestamp(at(obj, &["metadata", "creationTimestamp"])), now));
    let cells = match printer {
        Printer::Pod => return pod_cells(obj, now),
        Printer::Namespace => vec![name(), s(text(obj, &["status", "phase"])), age()],
        Printer::Service => service_cells(obj, name(), age()),
        Printer::Endpoints => vec![name(), s(format_endpoints(obj)), age()],
        Printer::ConfigMap => {
            let count = object_len(obj, &["data"]) + object_len(obj, &["binaryData"]);
            vec![name(), json!(count), age()]
        }
        Printer::Secret => vec![name(), s(text(obj, &["type"])), json!(object_len(obj, &["data"])), age()],
        Printer::PodDisruptionBudget => {
            let bound = |field: &str| match at(obj, &["spec", field]) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".to_string(),
            };
            let allowed = at(obj, &["status", "disruptionsAllowed"]).and_then(Value::as_i64).unwrap_or(0);
            vec![name(), s(bound("minAvailable")), s(bound("maxUnavailable")), json!(allowed), age()]
        }
        Printer::ServiceAccount => {
            let secrets = at(obj, &["secrets"]).and_then(Value::as_array).map_or(0, Vec::len);
            vec![name(), json!(secrets), age()]
        }
        Printer::Node => node_cells(obj, name(), age()),
        Printer::Event => event_cells(obj, now),
        Printer::ReplicaSet => {
            let (names, images) = containers(obj, &["spec", "template", "spec", "containers"]);
            vec![
                name(),
                json!(replicas(obj)),
                json!(int(obj, &["status", "replicas"])),
                json!(int(obj, &["status", "readyReplicas"])),
                age(),
                s(names),
                s(images),
                s(format_label_selector(at(obj, &["spec", "selector"]))),
            ]
        }
        Printer::Deployment => {
            let (names, images) = containers(obj, &["spec", "template", "spec", "containers"]);
            let selector = selector_string(at(obj, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".into());
            vec![
                name(),
                s(format!("{}/{}", int(obj, &["status", "readyReplicas"]), replicas(obj))),
                json!(int(obj, &["status", "updatedReplicas"])),
                json!(int(obj, &["status", "availableReplicas"])),
                age(),
                s(names),
                s(images),
                s(selector),
            ]
        }
        Printer::DaemonSet => {
            let (names, images) = containers(obj, &["spec", "template", "spec", "containers"]);
            vec![
                name(),
                json!(int(obj, &["status", "desiredNumberScheduled"])),
                json!(int(obj, &["status", "currentNumberScheduled"])),
                json!(int(obj, &["status", "numberReady"])),
                json!(int(obj, &["status", "updatedNumberScheduled"])),
                json!(int(obj, &["status", "numberAvailable"])),
                s(format_labels(at(obj, &["spec", "template", "spec", "nodeSelector"]))),
                age(),
                s(names),
                s(images),
                s(format_label_selector(at(obj, &["spec", "selector"]))),
            ]
        }
        Printer::Job => job_cells(obj, now, name(), age()),
        Printer::CronJob => {
            let last = match timestamp(at(obj, &["status", "lastScheduleTime"])) {
                Some(t) => since(Some(t), now),
                None => "<none>".into(),
            };
            let time_zone = at(obj, &["spec", "timeZone"]).and_then(Value::as_str).unwrap_or("<none>");
            // Defaulting sets spec.suspend to false.
            let suspend = at(obj, &["spec", "suspend"]).and_then(Value::as_bool).unwrap_or(false);
            let (names, images) = containers(obj, &["spec", "jobTemplate", "spec", "template", "spec", "containers"]);
            vec![
                name(),
                s(text(obj, &["spec", "schedule"])),
                s(time_zone),
                s(if suspend { "True" } else { "False" }),
                json!(list(obj, &["status", "active"]).len()),
                s(last),
                age(),
                s(names),
                s(images),
                s(format_label_selector(at(obj, &["spec", "jobTemplate", "spec", "selector"]))),
            ]
        }
        Printer::EndpointSlice => vec![
            name(),
            s(text(obj, &["addressType"])),
            s(format_slice_ports(list(obj, &["ports"]))),
            s(format_slice_endpoints(list(obj, &["endpoints"]))),
            age(),
        ],
        Printer::Ingress => {
            let class = at(obj, &["spec", "ingressClassName"]).and_then(Value::as_str).unwrap_or("<none>");
            let ports = if list(obj, &["spec", "tls"]).is_empty() { "80" } else { "80, 443" };
            vec![
                name(),
                s(class),
                s(format_hosts(list(obj, &["spec", "rules"]))),
                s(load_balancer_addresses(list(obj, &["status", "loadBalancer", "ingress"]))),
                s(ports),
                age(),
            ]
        }
        Printer::IngressClass => {
            let parameters = match at(obj, &["spec", "parameters"]) {
                None => "<none>".to_string(),
                Some(p) => {
                    let mut out = text(p, &["kind"]).to_string();
                    if let Some(group) = at(p, &["apiGroup"]).and_then(Value::as_str) {
                        out = format!("{out}.{group}");
                    }
                    format!("{out}/{}", text(p, &["name"]))
                }
            };
            vec![name(), s(text(obj, &["spec", "controller"])), s(parameters), age()]
        }
        Printer::HorizontalPodAutoscaler => {
            let reference = format!(
                "{}/{}",
                text(obj, &["spec", "scaleTargetRef", "kind"]),
                text(obj, &["spec", "scaleTargetRef", "name"])
            );
            // Defaulting sets spec.minReplicas to 1.
            let min = at(obj, &["spec", "minReplicas"]).and_then(Value::as_i64).unwrap_or(1);
            vec![
                name(),
                s(reference),
                s(hpa_targets(list(obj, &["spec", "metrics"]), list(obj, &["status", "currentMetrics"]))),
                s(min.to_string()),
                json!(int(obj, &["spec", "maxReplicas"])),
                json!(int(obj, &["status", "currentReplicas"])),
                age(),
            ]
        }
        Printer::Default => {
            let created = timestamp(at(obj, &["metadata", "creationTimestamp"]))
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
            vec![name(), s(created)]
        }
    };
    (cells, None)
}

fn s(value: impl Into<String>) -> Value {
    Value::String(value.into())
}

/// `printPod`: READY, STATUS (the reason), RESTARTS, AGE, IP, NODE, NOMINATED NODE,
/// READINESS GATES; conditions `Completed` for succeeded and failed pods.
fn pod_cells(pod: &Value, now: Timestamp) -> (Vec<Value>, Option<Value>) {
    let init_specs = list(pod, &["spec", "initContainers"]);
    let restartable =
        |name: &str| init_specs.iter().any(|c| text(c, &["name"]) == name && text(c, &["restartPolicy"]) == "Always");
    let total = list(pod, &["spec", "containers"]).len()
        + init_specs.iter().filter(|c| text(c, &["restartPolicy"]) == "Always").count();
    let mut ready = 0usize;
    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_restart: Option<Timestamp> = None;

    let phase = text(pod, &["status", "phase"]);
    let status_reason = text(pod, &["status", "reason"]);
    let mut reason = if status_reason.is_empty() { phase.to_string() } else { status_reason.to_string() };
    let conditions = list(pod, &["status", "conditions"]);
    if conditions.iter().any(|c| text(c, &["type"]) == "PodScheduled" && text(c, &["reason"]) == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }
    let row_conditions = match phase {
        "Succeeded" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }])),
        "Failed" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed.",
        }])),
        _ => None,
    };

    let later = |current: Option<Timestamp>, status: &Value| -> Option<Timestamp> {
        match (current, last_termination(status)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    };

    let init_statuses = list(pod, &["status", "initContainerStatuses"]);
    let mut initializing = false;
    for (i, container) in init_statuses.iter().enumerate() {
        let count = int(container, &["restartCount"]);
        restarts += count;
        last_restart = later(last_restart, container);
        let is_restartable = restartable(text(container, &["name"]));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, container);
        }
        let terminated = at(container, &["state", "terminated"]);
        let waiting_reason = text(container, &["state", "waiting", "reason"]);
        if let Some(t) = terminated
            && int(t, &["exitCode"]) == 0
        {
            continue;
        }
        if is_restartable && at(container, &["started"]).and_then(Value::as_bool) == Some(true) {
            if bool_at(container, &["ready"]) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = text(t, &["reason"]);
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int(t, &["signal"]) != 0 {
                format!("Init:Signal:{}", int(t, &["signal"]))
            } else {
                format!("Init:ExitCode:{}", int(t, &["exitCode"]))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }

    let initialized =
        conditions.iter().find(|c| text(c, &["type"]) == "Initialized").map(|c| text(c, &["status"])) == Some("True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for container in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(container, &["restartCount"]);
            last_restart = later(last_restart, container);
            let waiting_reason = text(container, &["state", "waiting", "reason"]);
            let terminated = at(container, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = text(t, &["reason"]);
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int(t, &["signal"]) != 0 {
                    format!("Signal:{}", int(t, &["signal"]))
                } else {
                    format!("ExitCode:{}", int(t, &["exitCode"]))
                };
            } else if bool_at(container, &["ready"]) && at(container, &["state", "running"]).is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions.iter().any(|c| text(c, &["type"]) == "Ready" && text(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }

    if at(pod, &["metadata", "deletionTimestamp"]).is_some() {
        if status_reason == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let mut ip = text(pod, &["status", "podIP"]);
    if ip.is_empty() {
        ip = list(pod, &["status", "podIPs"]).first().map(|p| text(p, &["ip"])).unwrap_or("");
    }
    let gates = list(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let satisfied = gates
            .iter()
            .filter(|gate| {
                let wanted = text(gate, &["conditionType"]);
                conditions.iter().find(|c| text(c, &["type"]) == wanted).is_some_and(|c| text(c, &["status"]) == "True")
            })
            .count();
        format!("{satisfied}/{}", gates.len())
    };
    let cells = vec![
        s(text(pod, &["metadata", "name"])),
        s(format!("{ready}/{total}")),
        s(reason),
        s(restarts_cell),
        s(since(timestamp(at(pod, &["metadata", "creationTimestamp"])), now)),
        s(or_none(ip)),
        s(or_none(text(pod, &["spec", "nodeName"]))),
        s(or_none(text(pod, &["status", "nominatedNodeName"]))),
        s(readiness_gates),
    ];
    (cells, row_conditions)
}

/// When a container last terminated (`lastState.terminated.finishedAt`).
fn last_termination(status: &Value) -> Option<Timestamp> {
    timestamp(at(status, &["lastState", "terminated", "finishedAt"]))
}

fn or_none(value: &str) -> &str {
    if value.is_empty() { "<none>" } else { value }
}

/// `printService`.
fn service_cells(svc: &Value, name: Value, age: Value) -> Vec<Value> {
    // Defaulting sets spec.type to ClusterIP.
    let svc_type = at(svc, &["spec", "type"]).and_then(Value::as_str).unwrap_or("ClusterIP");
    let mut cluster_ip = text(svc, &["spec", "clusterIP"]);
    if cluster_ip.is_empty() {
        cluster_ip = list(svc, &["spec", "clusterIPs"]).first().and_then(Value::as_str).unwrap_or("");
    }
    let external_ips: Vec<&str> = list(svc, &["spec", "externalIPs"]).iter().filter_map(Value::as_str).collect();
    let external = match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_addresses(list(svc, &["status", "loadBalancer", "ingress"]));
            if !external_ips.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() { Vec::new() } else { lb.split(',').collect() };
                all.extend(external_ips.iter().copied());
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => text(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            // Defaulting sets the protocol to TCP.
            let protocol = at(p, &["protocol"]).and_then(Value::as_str).unwrap_or("TCP");
            match int(p, &["nodePort"]) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() { "<none>".to_string() } else { ports.join(",") };
    vec![
        name,
        s(svc_type),
        s(or_none(cluster_ip)),
        s(external),
        s(ports),
        age,
        s(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

/// The sorted, de-duplicated IPs (or hostnames) of a load balancer's ingress points,
/// comma-separated (never clipped: the server prints wide).
fn load_balancer_addresses(ingress: &[Value]) -> String {
    let mut addresses: Vec<&str> = ingress
        .iter()
        .filter_map(|i| {
            let ip = text(i, &["ip"]);
            let host = text(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses.join(",")
}

/// `formatEndpoints` with every port: up to three `ip:port`, then `+ N more...`.
fn format_endpoints(endpoints: &Value) -> String {
    let subsets = list(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut out: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = list(subset, &["addresses"]);
        let ports = list(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for address in addresses {
                if out.len() == MAX {
                    more = true;
                    break;
                }
                out.push(text(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if out.len() == MAX {
                    more = true;
                    break;
                }
                out.push(join_host_port(text(address, &["ip"]), int(port, &["port"])));
            }
        }
    }
    let joined = out.join(",");
    if more { format!("{joined} + {} more...", count - MAX) } else { joined }
}

/// Go's `net.JoinHostPort`: IPv6 hosts go in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// `formatDiscoveryPorts`.
fn format_slice_ports(ports: &[Value]) -> String {
    let items = ports.iter().map(|p| match at(p, &["port"]).and_then(Value::as_i64) {
        Some(port) => port.to_string(),
        None => at(p, &["name"]).and_then(Value::as_str).unwrap_or("*").to_string(),
    });
    list_with_more(items.collect())
}

/// `formatDiscoveryEndpoints`.
fn format_slice_endpoints(endpoints: &[Value]) -> String {
    let items =
        endpoints.iter().flat_map(|e| list(e, &["addresses"]).iter().map(|a| a.as_str().unwrap_or("").to_string()));
    list_with_more(items.collect())
}

/// `listWithMoreString` over every item: the first three, `+ N more...`, or `<unset>`.
fn list_with_more(items: Vec<String>) -> String {
    const MAX: usize = 3;
    if items.len() > MAX {
        return format!("{} + {} more...", items[..MAX].join(","), items.len() - MAX);
    }
    let joined = items.join(",");
    if joined.is_empty() { "<unset>".into() } else { joined }
}

/// `formatHosts`: up to three rule hosts, `*` when none.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let host = text(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".into();
    }
    let joined = hosts.join(",");
    if more { format!("{joined} + {} more...", rules.len() - MAX) } else { joined }
}

/// `printNode`.
fn node_cells(node: &Value, name: Value, age: Value) -> Vec<Value> {
    let ready = list(node, &["status", "conditions"]).iter().rev().find(|c| text(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if text(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    let mut roles: Vec<String> = Vec::new();
    if let Some(labels) = at(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role.to_string());
                }
            } else if key == "kubernetes.io/role"
                && let Some(role) = value.as_str().filter(|v| !v.is_empty())
            {
                roles.push(role.to_string());
            }
        }
    }
    roles.sort();
    roles.dedup();
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
    let address = |kind: &str| {
        list(node, &["status", "addresses"])
            .iter()
            .find(|a| text(a, &["type"]) == kind)
            .map(|a| text(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let info = |field: &str| {
        let value = text(node, &["status", "nodeInfo", field]);
        if value.is_empty() { "<unknown>".to_string() } else { value.to_string() }
    };
    vec![
        name,
        s(status.join(",")),
        s(roles),
        age,
        s(text(node, &["status", "nodeInfo", "kubeletVersion"])),
        s(address("InternalIP")),
        s(address("ExternalIP")),
        s(info("osImage")),
        s(info("kernelVersion")),
        s(info("containerRuntimeVersion")),
    ]
}

/// `printEvent`, wide.
fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    let first = match timestamp(at(event, &["firstTimestamp"])) {
        Some(t) => since(Some(t), now),
        None => since(timestamp(at(event, &["eventTime"])), now),
    };
    let mut last = match timestamp(at(event, &["lastTimestamp"])) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int(event, &["count"]);
    if let Some(series) = at(event, &["series"]) {
        last = since(timestamp(at(series, &["lastObservedTime"])), now);
        count = int(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let kind = text(event, &["involvedObject", "kind"]).to_lowercase();
    let involved = text(event, &["involvedObject", "name"]);
    let target = if involved.is_empty() { kind } else { format!("{kind}/{involved}") };
    let first_non_empty = |a: &'static [&'static str], b: &'static [&'static str]| {
        let x = text(event, a);
        if x.is_empty() { text(event, b) } else { x }
    };
    let component = first_non_empty(&["source", "component"], &["reportingComponent"]);
    let instance = first_non_empty(&["source", "host"], &["reportingInstance"]);
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };
    vec![
        s(last),
        s(text(event, &["type"])),
        s(text(event, &["reason"])),
        s(target),
        s(text(event, &["involvedObject", "fieldPath"])),
        s(source),
        s(text(event, &["message"]).trim()),
        s(first),
        json!(count),
        s(text(event, &["metadata", "name"])),
    ]
}

/// `printJob`.
fn job_cells(job: &Value, now: Timestamp, name: Value, age: Value) -> Vec<Value> {
    let succeeded = int(job, &["status", "succeeded"]);
    let completions = match at(job, &["spec", "completions"]).and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(job, &["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match timestamp(at(job, &["status", "startTime"])) {
        None => String::new(),
        Some(start) => {
            let end = timestamp(at(job, &["status", "completionTime"])).unwrap_or(now);
            human_duration(end.as_nanosecond() - start.as_nanosecond())
        }
    };
    let conditions = list(job, &["status", "conditions"]);
    let has = |kind: &str| {
        conditions.iter().find(|c| text(c, &["type"]) == kind).is_some_and(|c| text(c, &["status"]) == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if at(job, &["metadata", "deletionTimestamp"]).is_some() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(job, &["spec", "template", "spec", "containers"]);
    vec![
        name,
        s(status),
        s(completions),
        s(duration),
        age,
        s(names),
        s(images),
        s(format_label_selector(at(job, &["spec", "selector"]))),
    ]
}

/// `formatHPAMetrics`: up to two `current/target` entries, then `+ N more...`.
fn hpa_targets(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    // A quantity as stored; Go prints a nil quantity as `<nil>`.
    fn quantity(value: Option<&Value>) -> String {
        match value {
            Some(Value::String(q)) => q.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "<nil>".into(),
        }
    }
    fn percent(value: Option<&Value>) -> Option<String> {
        value.and_then(Value::as_i64).map(|n| format!("{n}%"))
    }
    let mut entries: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let entry = match text(spec, &["type"]) {
            kind @ ("External" | "Object") => {
                let field = if kind == "External" { "external" } else { "object" };
                let current = status.and_then(|st| at(st, &[field]));
                let target = at(spec, &[field, "target"]);
                if let Some(average) = target.and_then(|t| at(t, &["averageValue"])) {
                    let current = current
                        .and_then(|c| at(c, &["current", "averageValue"]))
                        .map(|v| quantity(Some(v)))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{current}/{} (avg)", quantity(Some(average)))
                } else {
                    let current =
                        current.map(|c| quantity(at(c, &["current", "value"]))).unwrap_or_else(|| "<unknown>".into());
                    format!("{current}/{}", quantity(target.and_then(|t| at(t, &["value"]))))
                }
            }
            "Pods" => {
                let current = status
                    .and_then(|st| at(st, &["pods"]))
                    .map(|p| quantity(at(p, &["current", "averageValue"])))
                    .unwrap_or_else(|| "<unknown>".into());
                format!("{current}/{}", quantity(at(spec, &["pods", "target", "averageValue"])))
            }
            kind @ ("Resource" | "ContainerResource") => {
                let field = if kind == "Resource" { "resource" } else { "containerResource" };
                let name = text(spec, &[field, "name"]);
                let current = status.and_then(|st| at(st, &[field]));
                if let Some(average) = at(spec, &[field, "target", "averageValue"]) {
                    let current = current
                        .map(|c| quantity(at(c, &["current", "averageValue"])))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{name}: {current}/{}", quantity(Some(average)))
                } else {
                    let current = current
                        .and_then(|c| percent(at(c, &["current", "averageUtilization"])))
                        .unwrap_or_else(|| "<unknown>".into());
                    let target =
                        percent(at(spec, &[field, "target", "averageUtilization"])).unwrap_or_else(|| "<auto>".into());
                    format!("{name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".into(),
        };
        entries.push(entry);
    }
    const MAX: usize = 2;
    if entries.len() > MAX {
        return format!("{} + {} more...", entries[..MAX].join(", "), entries.len() - MAX);
    }
    entries.join(", ")
}

/// `layoutContainerCells`: the containers' names and images, comma-separated.
fn containers(obj: &Value, path: &[&str]) -> (String, String) {
    let containers = list(obj, path);
    let names: Vec<&str> = containers.iter().map(|c| text(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// `spec.replicas`, which defaulting sets to 1.
fn replicas(obj: &Value) -> i64 {
    at(obj, &["spec", "replicas"]).and_then(Value::as_i64).unwrap_or(1)
}

/// `labels.FormatLabels`: `k=v` sorted by key, or `<none>`.
fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    pairs.sort();
    if pairs.is_empty() { "<none>".into() } else { pairs.join(",") }
}

/// `metav1.FormatLabelSelector`: the selector's string, `<none>` when empty, `<error>`
/// when it is not a valid selector.
fn format_label_selector(selector: Option<&Value>) -> String {
    match selector_string(selector) {
        Err(()) => "<error>".into(),
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) => s,
    }
}

/// `metav1.LabelSelectorAsSelector(selector).String()`: requirements sorted by key
/// (`app=web`, `tier in (a,b)`, `tier notin (a)`, `tier`, `!tier`); empty for a missing or
/// empty selector.
fn selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector else { return Ok(String::new()) };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = at(selector, &["matchLabels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            requirements.push((key.clone(), format!("{key}={}", value.as_str().unwrap_or(""))));
        }
    }
    for expression in list(selector, &["matchExpressions"]) {
        let key = text(expression, &["key"]);
        let mut values: Vec<&str> = list(expression, &["values"]).iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let rendered = match text(expression, &["operator"]) {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), rendered));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(","))
}

// ---------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------

/// `translateTimestampSince`: the human age of a timestamp, `<unknown>` when it is
/// missing.
fn since(timestamp: Option<Timestamp>, now: Timestamp) -> String {
    match timestamp {
        Some(t) => human_duration(now.as_nanosecond() - t.as_nanosecond()),
        None => "<unknown>".into(),
    }
}

/// A `metav1.Time` / `MicroTime` field (RFC 3339).
fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    value?.as_str()?.parse().ok()
}

/// Go's `duration.HumanDuration` (k8s.io/apimachinery/pkg/util/duration) for a
/// duration in nanoseconds: ~2-3 significant figures (`59s`, `119s`, `3m20s`, `5m`,
/// `2h5m`, `47h`, `2d3h`, `30d`, `2y10d`, `9y`); up to a second in the future is `0s`,
/// further is `<invalid>`.
pub(crate) fn human_duration(nanos: i128) -> String {
    const SECOND: i128 = 1_000_000_000;
    const MINUTE: i128 = 60 * SECOND;
    const HOUR: i128 = 60 * MINUTE;
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{dy}d", hours / 24 / 365) }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

// ---------------------------------------------------------------------------------
// JSON access
// ---------------------------------------------------------------------------------

/// The value at `path`, or None when absent or null.
fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut current = value;
    for key in path {
        current = current.get(key)?;
    }
    if current.is_null() { None } else { Some(current) }
}

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path).and_then(Value::as_str).unwrap_or("")
}

fn int(value: &Value, path: &[&str]) -> i64 {
    at(value, path).and_then(Value::as_i64).unwrap_or(0)
}

fn bool_at(value: &Value, path: &[&str]) -> bool {
    at(value, path).and_then(Value::as_bool).unwrap_or(false)
}

fn list<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn object_len(value: &Value, path: &[&str]) -> usize {
    at(value, path).and_then(Value::as_object).map(Map::len).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(api_version: &str, kind: &str) -> &'static ResourceType {
        flotilla_api::by_kind(api_version, kind).expect("a served kind")
    }

    fn now() -> Timestamp {
        "2025-01-01T12:00:00Z".parse().expect("a timestamp")
    }

    /// `now` minus `seconds`, as RFC 3339.
    fn ago(seconds: i64) -> String {
        let t = Timestamp::from_second(now().as_second() - seconds).expect("in range");
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    fn names(rt: &ResourceType) -> Vec<(String, i64)> {
        column_definitions(rt)
            .as_array()
            .expect("an array")
            .iter()
            .map(|c| (c["name"].as_str().expect("a name").to_string(), c["priority"].as_i64().expect("a priority")))
            .collect()
    }

    /// The column names, wide ones marked with a trailing `*`.
    fn headers(rt: &ResourceType) -> Vec<String> {
        names(rt).into_iter().map(|(n, p)| if p > 0 { format!("{n}*") } else { n }).collect()
    }

    fn row_cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
        let row = row(rt, obj, IncludeObject::None, now());
        row["cells"].as_array().expect("cells").clone()
    }

    #[test]
    fn columns_match_kube_apiserver() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("v1", "Namespace", &["Name", "Status", "Age"]),
            (
                "v1",
                "Pod",
                &["Name", "Ready", "Status", "Restarts", "Age", "IP*", "Node*", "Nominated Node*", "Readiness Gates*"],
            ),
            ("v1", "Service", &["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector*"]),
            ("v1", "Endpoints", &["Name", "Endpoints", "Age"]),
            ("v1", "ConfigMap", &["Name", "Data", "Age"]),
            ("v1", "Secret", &["Name", "Type", "Data", "Age"]),
            ("v1", "ServiceAccount", &["Name", "Secrets", "Age"]),
            (
                "policy/v1",
                "PodDisruptionBudget",
                &["Name", "Min Available", "Max Unavailable", "Allowed Disruptions", "Age"],
            ),
            (
                "v1",
                "Node",
                &[
                    "Name",
                    "Status",
                    "Roles",
                    "Age",
                    "Version",
                    "Internal-IP*",
                    "External-IP*",
                    "OS-Image*",
                    "Kernel-Version*",
                    "Container-Runtime*",
                ],
            ),
            (
                "v1",
                "Event",
                &[
                    "Last Seen",
                    "Type",
                    "Reason",
                    "Object",
                    "Subobject*",
                    "Source*",
                    "Message",
                    "First Seen*",
                    "Count*",
                    "Name*",
                ],
            ),
            (
                "apps/v1",
                "ReplicaSet",
                &["Name", "Desired", "Current", "Ready", "Age", "Containers*", "Images*", "Selector*"],
            ),
            (
                "apps/v1",
                "Deployment",
                &["Name", "Ready", "Up-to-date", "Available", "Age", "Containers*", "Images*", "Selector*"],
            ),
            (
                "apps/v1",
                "DaemonSet",
                &[
                    "Name",
                    "Desired",
                    "Current",
                    "Ready",
                    "Up-to-date",
                    "Available",
                    "Node Selector",
                    "Age",
                    "Containers*",
                    "Images*",
                    "Selector*",
                ],
            ),
            (
                "batch/v1",
                "Job",
                &["Name", "Status", "Completions", "Duration", "Age", "Containers*", "Images*", "Selector*"],
            ),
            (
                "batch/v1",
                "CronJob",
                &[
                    "Name",
                    "Schedule",
                    "Timezone",
                    "Suspend",
                    "Active",
                    "Last Schedule",
                    "Age",
                    "Containers*",
                    "Images*",
                    "Selector*",
                ],
            ),
            ("discovery.k8s.io/v1", "EndpointSlice", &["Name", "AddressType", "Ports", "Endpoints", "Age"]),
            ("networking.k8s.io/v1", "Ingress", &["Name", "Class", "Hosts", "Address", "Ports", "Age"]),
            ("networking.k8s.io/v1", "IngressClass", &["Name", "Controller", "Parameters", "Age"]),
            (
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                &["Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"],
            ),
        ];
        for (api_version, kind, want) in cases {
            assert_eq!(headers(rt(api_version, kind)), *want, "{kind}");
        }
        // Every served kind has a printer, and every row has one cell per column.
        for resource in flotilla_api::all_resources() {
            assert_ne!(printer(resource), Printer::Default, "{}", resource.kind);
            let obj = json!({"metadata": {"name": "x", "creationTimestamp": ago(5)}});
            assert_eq!(row_cells(resource, &obj).len(), columns(resource).len(), "{}", resource.kind);
        }
        let name = &column_definitions(rt("v1", "Pod"))[0];
        assert_eq!(name["format"], "name");
        assert_eq!(name["type"], "string");
        assert!(name["description"].as_str().is_some_and(|d| d.starts_with("Name must be unique")));
    }

    #[test]
    fn default_table_is_name_and_created_at() {
        let names: Vec<(&str, &str)> = columns_of(Printer::Default).iter().map(|c| (c.name, c.ty)).collect();
        assert_eq!(names, [("Name", "string"), ("Created At", "date")]);
        let obj = json!({"metadata": {"name": "w", "creationTimestamp": "2024-05-06T07:08:09Z"}});
        assert_eq!(cells_of(Printer::Default, &obj, now()).0, [json!("w"), json!("2024-05-06T07:08:09Z")]);
    }

    #[test]
    fn human_duration_matches_go() {
        let s = |n: i128| human_duration(n * 1_000_000_000);
        assert_eq!(human_duration(-1_500_000_000), "0s");
        assert_eq!(s(-2), "<invalid>");
        assert_eq!(s(0), "0s");
        assert_eq!(s(1), "1s");
        assert_eq!(s(59), "59s");
        assert_eq!(s(70), "70s");
        assert_eq!(s(119), "119s");
        assert_eq!(s(120), "2m");
        assert_eq!(s(190), "3m10s");
        assert_eq!(s(200), "3m20s");
        assert_eq!(s(599), "9m59s");
        assert_eq!(s(600), "10m");
        assert_eq!(s(70 * 60), "70m");
        assert_eq!(s(179 * 60 + 59), "179m");
        assert_eq!(s(3 * 3600), "3h");
        assert_eq!(s(3 * 3600 + 5 * 60 + 7), "3h5m");
        assert_eq!(s(8 * 3600), "8h");
        assert_eq!(s(47 * 3600), "47h");
        assert_eq!(s(49 * 3600), "2d1h");
        assert_eq!(s(51 * 3600), "2d3h");
        assert_eq!(s(72 * 3600), "3d");
        assert_eq!(s((8 * 24 + 2) * 3600), "8d");
        assert_eq!(s(367 * 24 * 3600), "367d");
        assert_eq!(s((365 * 2 * 24 + 25) * 3600), "2y1d");
        assert_eq!(s(365 * 3 * 24 * 3600), "3y");
        assert_eq!(s((365 * 8 * 24 + 2) * 3600), "8y");
    }

    fn pod(statuses: Value) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "default", "creationTimestamp": ago(200), "resourceVersion": "7",
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]},
            "status": statuses,
        })
    }

    #[test]
    fn pod_ready_status_and_restarts() {
        let pod = pod(json!({
            "phase": "Running",
            "podIP": "10.0.0.5",
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(100)}}},
                {"name": "b", "ready": false, "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(30)}}},
            ],
        }));
        let cells = row_cells(rt("v1", "Pod"), &pod);
        assert_eq!(
            cells,
            [
                json!("web-1"),
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("4 (30s ago)"),
                json!("3m20s"),
                json!("10.0.0.5"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_states() {
        let pod_rt = rt("v1", "Pod");
        // Pending with nothing reported.
        let pending = pod(json!({"phase": "Pending"}));
        let cells = row_cells(pod_rt, &pending);
        assert_eq!((&cells[1], &cells[2], &cells[3]), (&json!("0/2"), &json!("Pending"), &json!("0")));
        // Terminating: deletionTimestamp on a running pod.
        let mut terminating = pod(json!({"phase": "Running"}));
        terminating["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(row_cells(pod_rt, &terminating)[2], "Terminating");
        // ... but a finished pod keeps its phase.
        let mut done = pod(json!({"phase": "Succeeded"}));
        done["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(row_cells(pod_rt, &done)[2], "Succeeded");
        let row = row(pod_rt, &done, IncludeObject::None, now());
        assert_eq!(row["conditions"][0]["type"], "Completed");
        assert_eq!(row["conditions"][0]["reason"], "Succeeded");
        // Terminated without a reason: ExitCode.
        let exited = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}},
        ]}));
        assert_eq!(row_cells(pod_rt, &exited)[2], "ExitCode:3");
        // Init containers.
        let mut init = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "setup", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
        ]}));
        init["spec"]["initContainers"] = json!([{"name": "setup", "image": "z"}]);
        assert_eq!(row_cells(pod_rt, &init)[2], "Init:0/1");
        // Readiness gates and the IP from podIPs.
        let mut gated = pod(json!({"phase": "Running", "podIPs": [{"ip": "fd00::1"}], "conditions": [
            {"type": "example.com/ready", "status": "True"},
        ]}));
        gated["spec"]["readinessGates"] = json!([{"conditionType": "example.com/ready"}, {"conditionType": "other"}]);
        let cells = row_cells(pod_rt, &gated);
        assert_eq!((&cells[5], &cells[8]), (&json!("fd00::1"), &json!("1/2")));
    }

    #[test]
    fn deployment_cells() {
        let deployment = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(3600 * 5)},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"},
                             "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": {"spec": {"containers": [
                    {"name": "nginx", "image": "nginx:1.27"}, {"name": "side", "image": "busybox"},
                ]}},
            },
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        assert_eq!(
            row_cells(rt("apps/v1", "Deployment"), &deployment),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("5h"),
                json!("nginx,side"),
                json!("nginx:1.27,busybox"),
                json!("app=web,tier in (a,b)"),
            ]
        );
        // No status yet, replicas defaulted.
        let fresh = json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": []}}}});
        let cells = row_cells(rt("apps/v1", "Deployment"), &fresh);
        assert_eq!((&cells[1], &cells[4], &cells[7]), (&json!("0/1"), &json!("<unknown>"), &json!("")));
        let rs =
            json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 2, "selector": {}}, "status": {"replicas": 2}});
        let cells = row_cells(rt("apps/v1", "ReplicaSet"), &rs);
        assert_eq!((&cells[1], &cells[2], &cells[3], &cells[7]), (&json!(2), &json!(2), &json!(0), &json!("<none>")));
    }

    #[test]
    fn service_cells() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(59)},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "selector": {"tier": "front", "app": "web"},
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}],
            },
        });
        assert_eq!(
            row_cells(rt("v1", "Service"), &svc),
            [
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP"),
                json!("59s"),
                json!("app=web,tier=front"),
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIP": "None"}});
        let cells = row_cells(rt("v1", "Service"), &lb);
        assert_eq!(
            (&cells[2], &cells[3], &cells[4], &cells[6]),
            (&json!("None"), &json!("<pending>"), &json!("<none>"), &json!("<none>"))
        );
        let served = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}});
        assert_eq!(row_cells(rt("v1", "Service"), &served)[3], "5.6.7.8,lb.example.com,1.2.3.4");
        let external =
            json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(row_cells(rt("v1", "Service"), &external)[3], "db.example.com");
    }

    #[test]
    fn other_kinds_cells() {
        let ns = json!({
            "metadata": {"name": "default", "creationTimestamp": ago(86400 * 3)}, "status": {"phase": "Active"},
        });
        assert_eq!(row_cells(rt("v1", "Namespace"), &ns), [json!("default"), json!("Active"), json!("3d")]);

        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(row_cells(rt("v1", "ConfigMap"), &cm)[1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(row_cells(rt("v1", "Secret"), &secret)[1..3], [json!("Opaque"), json!(1)]);

        let ep = json!({"metadata": {"name": "web"}, "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}],
            "ports": [{"port": 8080}],
        }]});
        assert_eq!(row_cells(rt("v1", "Endpoints"), &ep)[1], "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more...");
        assert_eq!(row_cells(rt("v1", "Endpoints"), &json!({"metadata": {"name": "e"}}))[1], "<none>");

        let slice = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "named"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            row_cells(rt("discovery.k8s.io/v1", "EndpointSlice"), &slice)[1..4],
            [json!("IPv4"), json!("80,named,*"), json!("10.0.0.1,10.0.0.2")]
        );

        let node = json!({
            "metadata": {"name": "n1", "labels": {
                "node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker",
            }},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.37.0"},
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}]}});
        assert_eq!(
            row_cells(rt("v1", "Node"), &node)[1..],
            [
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("<unknown>"),
                json!("v1.37.0"),
                json!("192.168.1.2"),
                json!("<none>"),
                json!("<unknown>"),
                json!("<unknown>"),
                json!("<unknown>"),
            ]
        );

        let event = json!({
            "metadata": {"name": "web.1"}, "type": "Warning", "reason": "BackOff", "message": " Back-off \n",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(10), "count": 7,
        });
        assert_eq!(
            row_cells(rt("v1", "Event"), &event),
            [
                json!("10s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web"),
                json!("spec.containers{a}"),
                json!("kubelet, n1"),
                json!("Back-off"),
                json!("10m"),
                json!(7),
                json!("web.1"),
            ]
        );
        let new_style = json!({"metadata": {"name": "e"}, "eventTime": "2025-01-01T11:59:00.000000Z",
            "involvedObject": {"kind": "Node"}, "reportingComponent": "scheduler"});
        let cells = row_cells(rt("v1", "Event"), &new_style);
        assert_eq!(
            (&cells[0], &cells[3], &cells[5], &cells[7], &cells[8]),
            (&json!("60s"), &json!("node"), &json!("scheduler"), &json!("60s"), &json!(1))
        );

        let job = json!({
            "metadata": {"name": "pi"},
            "spec": {"completions": 1, "selector": {"matchLabels": {"job": "pi"}},
                "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
            "status": {"succeeded": 1, "startTime": ago(200), "completionTime": ago(80),
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(row_cells(rt("batch/v1", "Job"), &job)[1..4], [json!("Complete"), json!("1/1"), json!("2m")]);
        let parallel = json!({"metadata": {"name": "p"}, "spec": {"parallelism": 3}, "status": {"startTime": ago(30)}});
        assert_eq!(
            row_cells(rt("batch/v1", "Job"), &parallel)[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("30s")]
        );

        let cron = json!({
            "metadata": {"name": "c"},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
            "status": {"active": [{"name": "c-1"}], "lastScheduleTime": ago(90)}});
        assert_eq!(
            row_cells(rt("batch/v1", "CronJob"), &cron)[1..6],
            [json!("*/5 * * * *"), json!("<none>"), json!("False"), json!(1), json!("90s")]
        );

        let ds = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}},
                "template": {"spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"}, "containers": [{"name": "d", "image": "i"}],
                }}},
            "status": {
                "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                "updatedNumberScheduled": 2, "numberAvailable": 1,
            },
        });
        assert_eq!(
            row_cells(rt("apps/v1", "DaemonSet"), &ds)[1..7],
            [json!(2), json!(2), json!(1), json!(2), json!(1), json!("kubernetes.io/os=linux")]
        );

        let ing = json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "nginx", "tls": [{}],
                "rules": [{"host": "a.example.com"}, {}, {"host": "b.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "10.1.1.1"}]}}});
        assert_eq!(
            row_cells(rt("networking.k8s.io/v1", "Ingress"), &ing)[1..5],
            [json!("nginx"), json!("a.example.com,b.example.com"), json!("10.1.1.1"), json!("80, 443")]
        );
        let class = json!({"metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
        assert_eq!(
            row_cells(rt("networking.k8s.io/v1", "IngressClass"), &class)[1..3],
            [json!("k8s.io/ingress-nginx"), json!("IngressParameters.k8s.example.com/external-lb")]
        );

        let hpa = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "maxReplicas": 10, "metrics": [
                    {"type": "Resource",
                     "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Resource",
                     "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods",
                     "pods": {"metric": {"name": "x"}, "target": {"type": "AverageValue", "averageValue": "1"}}},
                ]},
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35}}},
            ]},
        });
        assert_eq!(
            row_cells(rt("autoscaling/v2", "HorizontalPodAutoscaler"), &hpa)[1..6],
            [
                json!("Deployment/web"),
                json!("cpu: 35%/80%, memory: <unknown>/100Mi + 1 more..."),
                json!("1"),
                json!(10),
                json!(2)
            ]
        );
        let idle = json!({
            "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2},
        });
        assert_eq!(
            row_cells(rt("autoscaling/v2", "HorizontalPodAutoscaler"), &idle)[2..4],
            [json!("<none>"), json!("2")]
        );
    }

    #[test]
    fn label_selectors() {
        let sel = json!({"matchExpressions": [
            {"key": "z", "operator": "DoesNotExist"},
            {"key": "b", "operator": "NotIn", "values": ["y", "x"]},
            {"key": "a", "operator": "Exists"},
        ]});
        assert_eq!(format_label_selector(Some(&sel)), "a,b notin (x,y),!z");
        assert_eq!(format_label_selector(None), "<none>");
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]});
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
    }

    #[test]
    fn include_object_variants() {
        assert_eq!(IncludeObject::parse(None).expect("ok"), IncludeObject::Metadata);
        assert_eq!(IncludeObject::parse(Some("")).expect("ok"), IncludeObject::Metadata);
        assert_eq!(IncludeObject::parse(Some("Metadata")).expect("ok"), IncludeObject::Metadata);
        assert_eq!(IncludeObject::parse(Some("None")).expect("ok"), IncludeObject::None);
        assert_eq!(IncludeObject::parse(Some("Object")).expect("ok"), IncludeObject::Object);
        let err = IncludeObject::parse(Some("object")).expect_err("case matters");
        assert!(err.message.contains("includeObject: Invalid value: \"object\""), "{}", err.message);

        let pod_rt = rt("v1", "Pod");
        let pod = pod(json!({"phase": "Running"}));
        assert_eq!(row(pod_rt, &pod, IncludeObject::None, now())["object"], Value::Null);
        let meta = row(pod_rt, &pod, IncludeObject::Metadata, now());
        assert_eq!(
            meta["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": pod["metadata"]})
        );
        let full = row(pod_rt, &pod, IncludeObject::Object, now());
        assert_eq!(full["object"], pod);
        let bare = json!({"metadata": {"name": "c"}});
        let full = row(rt("v1", "ConfigMap"), &bare, IncludeObject::Object, now());
        assert_eq!((&full["object"]["apiVersion"], &full["object"]["kind"]), (&json!("v1"), &json!("ConfigMap")));
    }

    #[test]
    fn tables_for_lists_objects_and_watches() {
        let pod_rt = rt("v1", "Pod");
        let list = json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "42", "continue": "abc", "remainingItemCount": 3},
            "items": [pod(json!({"phase": "Running"})), pod(json!({"phase": "Pending"}))],
        });
        let t = table(pod_rt, &list, IncludeObject::Metadata, now());
        assert_eq!((&t["kind"], &t["apiVersion"]), (&json!("Table"), &json!("meta.k8s.io/v1")));
        assert_eq!(t["metadata"], json!({"resourceVersion": "42", "continue": "abc", "remainingItemCount": 3}));
        assert_eq!(t["columnDefinitions"].as_array().map(Vec::len), Some(9));
        assert_eq!(t["rows"].as_array().map(Vec::len), Some(2));
        assert_eq!(t["rows"][1]["cells"][2], "Pending");

        let empty = json!({"metadata": {"resourceVersion": "9", "continue": ""}, "items": []});
        let t = table(pod_rt, &empty, IncludeObject::None, now());
        assert_eq!((&t["metadata"], &t["rows"]), (&json!({"resourceVersion": "9"}), &json!([])));

        let single = table(pod_rt, &pod(json!({})), IncludeObject::None, now());
        assert_eq!(single["metadata"], json!({"resourceVersion": "7"}));
        assert_eq!(single["rows"].as_array().map(Vec::len), Some(1));

        let first = watch_table(pod_rt, &pod(json!({})), IncludeObject::Metadata, now(), true);
        assert_eq!(first["columnDefinitions"].as_array().map(Vec::len), Some(9));
        let later = watch_table(pod_rt, &pod(json!({})), IncludeObject::Metadata, now(), false);
        assert_eq!(later["columnDefinitions"], Value::Null);
        assert_eq!(later["rows"][0]["cells"][0], "web-1");
    }

    #[test]
    fn accept_negotiation() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,\
                       application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wants_table(kubectl));
        assert!(wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io"));
        assert!(wants_table("application/json; as=Table; g=meta.k8s.io; v=v1"));
        assert!(wants_table("application/yaml;as=Table;v=v1;g=meta.k8s.io"));
        assert!(!wants_table("application/json"));
        assert!(!wants_table(""));
        assert!(!wants_table("*/*"));
        assert!(!wants_table("application/yaml,application/json;as=Table;v=v1;g=meta.k8s.io"));
        // Unservable clauses are skipped.
        assert!(wants_table(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,\
             application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
        assert!(wants_table(
            "application/json;as=Table;v=v2;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
        assert!(!wants_table("application/json;as=Table;v=v2;g=meta.k8s.io,application/json"));
        assert!(!wants_table("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"));
        // q-values order the clauses.
        assert!(wants_table("application/json;q=0.5,application/json;as=Table;v=v1;g=meta.k8s.io"));
    }
}
