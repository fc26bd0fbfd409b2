//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), decoded
//! into the JSON object a JSON client would have sent.
//!
//! Why: client-go sends built-in kinds as protobuf and never falls back to JSON, so
//! kubectl's typed commands (`kubectl create configmap|secret|serviceaccount|namespace|
//! service|deployment|job|cronjob|ingress|pdb`, `kubectl run`, `kubectl autoscale`,
//! `kubectl drain`) send protobuf, while Flotilla stores and validates JSON. This module
//! owns that one translation; the request path decides when to call it.
//!
//! The wire format (k8s.io/apimachinery/pkg/runtime/serializer/protobuf): the magic
//! `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the kind and whose `raw`
//! is the object's own protobuf. `raw` is decoded into the k8s-pb type for that kind
//! and converted field by field with the Kubernetes JSON names, leaving out what Go's
//! `omitempty` leaves out.
//!
//! Nothing is dropped silently: each conversion moves the fields it knows out of the
//! decoded message, and whatever is left must be zero-valued (Go's encoder writes every
//! non-pointer field, so an unset string arrives as `""` and an unset struct as an empty
//! message). A set field Flotilla does not convert yet is refused with 415 and a hint to
//! send JSON, rather than stored without it. `selfLink` (no longer served) is the one
//! field discarded on purpose; `status` is not converted, so a non-empty one is refused.

use base64::Engine as _;
use flotilla_api::{ApiError, Reason};
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::autoscaling::v2 as autoscaling;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::networking::v1 as networking;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::mem::take;

/// The media type of Kubernetes protobuf.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every Kubernetes protobuf body starts with: `k8s\0`.
const MAGIC: &[u8] = b"k8s\0";

/// How deep the leftover-field check looks into nested messages before it calls a
/// field set (prost already refuses messages nested deeper than 100).
const MAX_ZERO_DEPTH: usize = 64;

type Decode = fn(&[u8]) -> Result<Map<String, Value>, ApiError>;

/// The kinds accepted as protobuf: apiVersion, kind, and how to decode `raw`.
const KINDS: &[(&str, &str, Decode)] = &[
    ("v1", "ConfigMap", decode_as::<core::ConfigMap>),
    ("v1", "Secret", decode_as::<core::Secret>),
    ("v1", "Namespace", decode_as::<core::Namespace>),
    ("v1", "Service", decode_as::<core::Service>),
    ("v1", "Pod", decode_as::<core::Pod>),
    ("v1", "ServiceAccount", decode_as::<core::ServiceAccount>),
    ("apps/v1", "Deployment", decode_as::<apps::Deployment>),
    ("batch/v1", "Job", decode_as::<batch::Job>),
    ("batch/v1", "CronJob", decode_as::<batch::CronJob>),
    ("networking.k8s.io/v1", "Ingress", decode_as::<networking::Ingress>),
    ("autoscaling/v2", "HorizontalPodAutoscaler", decode_as::<autoscaling::HorizontalPodAutoscaler>),
    // `kubectl drain`: an Eviction, or a DELETE's options where evictions are not served.
    ("policy/v1", "Eviction", decode_as::<policy::Eviction>),
    ("policy/v1", "PodDisruptionBudget", decode_as::<policy::PodDisruptionBudget>),
    (ANY_VERSION, "DeleteOptions", decode_as::<meta::DeleteOptions>),
];

/// For kinds registered in every group version (DeleteOptions is sent under the client's).
const ANY_VERSION: &str = "*";

/// Decodes a protobuf request body into the JSON object a JSON client would send
/// (apiVersion, kind, metadata, ...).
///
/// Unsupported kinds, and set fields not converted yet, are `UnsupportedMediaType`
/// with a message saying to use JSON; a body that is not Kubernetes protobuf is a bad
/// request naming what failed.
pub(crate) fn decode_object(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::bad_request(format!("{CONTENT_TYPE} body does not start with the magic prefix \"k8s\\x00\""))
    })?;
    let unknown = Unknown::decode(envelope)
        .map_err(|e| ApiError::bad_request(format!("{CONTENT_TYPE} body is not a runtime.Unknown envelope: {e}")))?;
    if let Some(encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(ApiError::new(
            Reason::UnsupportedMediaType,
            format!(
                "{CONTENT_TYPE} content encoding {encoding:?} is not supported; send the object as application/json"
            ),
        ));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!("{CONTENT_TYPE} envelope does not name its apiVersion and kind")));
    }
    let known = KINDS.iter().find(|(v, k, _)| (*v == api_version || *v == ANY_VERSION) && *k == kind);
    let (_, _, decode) = known.ok_or_else(|| {
        ApiError::new(
            Reason::UnsupportedMediaType,
            format!(
                "{api_version}, Kind={kind} cannot be sent to Flotilla as {CONTENT_TYPE} (supported: {}); \
                 send it as application/json, e.g. `kubectl create -f` with a manifest",
                KINDS.iter().map(|(_, k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let mut object = decode(unknown.raw.as_deref().unwrap_or_default())?;
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

fn decode_as<T: ToJson>(raw: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let message =
        T::decode(raw).map_err(|e| ApiError::bad_request(format!("{CONTENT_TYPE} {} is malformed: {e}", T::NAME)))?;
    to_json(message)
}

/// A k8s-pb message with a JSON conversion.
trait ToJson: Message + Default {
    /// The Kubernetes type's name, for error messages.
    const NAME: &'static str;

    /// Moves the fields Flotilla converts out of `self` into their JSON form.
    fn take_json(&mut self) -> Result<Obj, ApiError>;
}

/// Converts `message`, refusing it if any field the conversion did not take is set.
fn to_json<T: ToJson>(mut message: T) -> Result<Map<String, Value>, ApiError> {
    let json = message.take_json()?;
    match first_set_field(&message.encode_to_vec(), 0) {
        None => Ok(json.0),
        Some(tag) => Err(ApiError::new(
            Reason::UnsupportedMediaType,
            format!(
                "Flotilla cannot yet convert protobuf field {tag} of {} from {CONTENT_TYPE}; \
                 send the object as application/json",
                T::NAME
            ),
        )),
    }
}

/// The tag of the first field in the protobuf `bytes` that is not zero-valued, if any.
/// An embedded message counts as zero when all its fields are (nested up to
/// `MAX_ZERO_DEPTH`); anything unparsable counts as set. (Bytes cannot be told from a
/// message on the wire, so a string that happens to parse as an all-zero message, such
/// as `"\x08\x00"`, would pass as unset: a price worth no reflection tables.)
fn first_set_field(mut bytes: &[u8], depth: usize) -> Option<u64> {
    while !bytes.is_empty() {
        let Some(key) = varint(&mut bytes) else { return Some(0) };
        let zero = match key & 7 {
            0 => varint(&mut bytes) == Some(0),
            1 => split(&mut bytes, 8).is_some_and(|b| b.iter().all(|&x| x == 0)),
            5 => split(&mut bytes, 4).is_some_and(|b| b.iter().all(|&x| x == 0)),
            2 => varint(&mut bytes)
                .and_then(|len| split(&mut bytes, usize::try_from(len).ok()?))
                .is_some_and(|b| b.is_empty() || (depth < MAX_ZERO_DEPTH && first_set_field(b, depth + 1).is_none())),
            _ => false,
        };
        if !zero {
            return Some(key >> 3);
        }
    }
    None
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn split<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(len)?;
    *bytes = rest;
    Some(head)
}

/// A JSON object under construction; each setter leaves out what Go's JSON would.
#[derive(Debug, Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(mut self, key: &str, value: Option<Value>) -> Self {
        if let Some(value) = value {
            self.0.insert(key.to_string(), value);
        }
        self
    }

    /// A string; `""` is left out (`omitempty`).
    fn text(self, key: &str, value: Option<String>) -> Self {
        self.put(key, value.filter(|s| !s.is_empty()).map(Value::String))
    }

    /// A number that is kept even when zero (a Go pointer, or a field without `omitempty`).
    fn int(self, key: &str, value: Option<impl Into<i64>>) -> Self {
        self.put(key, value.map(|n| Value::from(n.into())))
    }

    /// A number where zero means unset.
    fn nonzero(self, key: &str, value: Option<impl Into<i64>>) -> Self {
        self.int(key, value.map(Into::into).filter(|n| *n != 0))
    }

    /// A boolean that is kept even when false (a Go pointer).
    fn boolean(self, key: &str, value: Option<bool>) -> Self {
        self.put(key, value.map(Value::Bool))
    }

    /// A boolean where false means unset.
    fn flag(self, key: &str, value: Option<bool>) -> Self {
        self.boolean(key, value.filter(|b| *b))
    }

    fn strings(self, key: &str, value: Vec<String>) -> Self {
        self.put(key, (!value.is_empty()).then(|| value.into()))
    }

    fn string_map(self, key: &str, value: BTreeMap<String, String>) -> Self {
        self.map(key, value, Value::String)
    }

    /// `[]byte` values, which JSON carries as base64.
    fn byte_map(self, key: &str, value: BTreeMap<String, Vec<u8>>) -> Self {
        self.map(key, value, |b| base64::engine::general_purpose::STANDARD.encode(b).into())
    }

    fn quantity(self, key: &str, value: Option<Quantity>) -> Self {
        self.put(key, value.map(|q| q.string.unwrap_or_default().into()))
    }

    fn quantities(self, key: &str, value: BTreeMap<String, Quantity>) -> Self {
        self.map(key, value, |q| q.string.unwrap_or_default().into())
    }

    fn map<V>(self, key: &str, value: BTreeMap<String, V>, f: impl Fn(V) -> Value) -> Self {
        self.put(key, (!value.is_empty()).then(|| Value::Object(value.into_iter().map(|(k, v)| (k, f(v))).collect())))
    }

    /// An IntOrString: a number or a string, by its `type`.
    fn int_or_string(self, key: &str, value: Option<IntOrString>) -> Self {
        self.put(
            key,
            value.map(|v| match v.r#type {
                Some(1) => v.str_val.unwrap_or_default().into(),
                _ => v.int_val.unwrap_or_default().into(),
            }),
        )
    }

    /// A meta/v1 Time as RFC 3339 in seconds; Go's zero time arrives as an empty message.
    fn time(self, key: &str, value: Option<meta::Time>) -> Result<Self, ApiError> {
        let Some((seconds, nanos)) = value.and_then(|t| Some((t.seconds?, t.nanos.unwrap_or_default()))) else {
            return Ok(self);
        };
        let time = jiff::Timestamp::new(seconds, nanos)
            .map_err(|e| ApiError::bad_request(format!("{CONTENT_TYPE} {key} is out of range: {e}")))?;
        Ok(self.put(key, Some(time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string().into())))
    }

    /// An embedded struct, kept even when empty as Go's JSON keeps non-pointer structs.
    fn message<T: ToJson>(self, key: &str, value: Option<T>) -> Result<Self, ApiError> {
        Ok(self.put(key, value.map(to_json).transpose()?.map(Value::Object)))
    }

    fn messages<T: ToJson>(self, key: &str, value: Vec<T>) -> Result<Self, ApiError> {
        let items = value.into_iter().map(|m| to_json(m).map(Value::Object)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.put(key, (!items.is_empty()).then(|| items.into())))
    }
}

// Meta types, shared by every kind.

impl ToJson for meta::ObjectMeta {
    const NAME: &'static str = "ObjectMeta";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        self.self_link = None;
        Obj::default()
            .text("name", self.name.take())
            .text("generateName", self.generate_name.take())
            .text("namespace", self.namespace.take())
            .text("uid", self.uid.take())
            .text("resourceVersion", self.resource_version.take())
            .nonzero("generation", self.generation.take())
            .int("deletionGracePeriodSeconds", self.deletion_grace_period_seconds.take())
            .string_map("labels", take(&mut self.labels))
            .string_map("annotations", take(&mut self.annotations))
            .strings("finalizers", take(&mut self.finalizers))
            .time("creationTimestamp", self.creation_timestamp.take())?
            .time("deletionTimestamp", self.deletion_timestamp.take())?
            .messages("ownerReferences", take(&mut self.owner_references))?
            .messages("managedFields", take(&mut self.managed_fields))
    }
}

impl ToJson for meta::OwnerReference {
    const NAME: &'static str = "OwnerReference";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("apiVersion", self.api_version.take())
            .text("kind", self.kind.take())
            .text("name", self.name.take())
            .text("uid", self.uid.take())
            .boolean("controller", self.controller.take())
            .boolean("blockOwnerDeletion", self.block_owner_deletion.take()))
    }
}

impl ToJson for meta::ManagedFieldsEntry {
    const NAME: &'static str = "ManagedFieldsEntry";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        // fieldsV1 is JSON already; protobuf carries its bytes.
        let fields = match self.fields_v1.take().and_then(|f| f.raw).filter(|raw| !raw.is_empty()) {
            Some(raw) => Some(serde_json::from_slice(&raw).map_err(|e| {
                ApiError::bad_request(format!("{CONTENT_TYPE} managedFields fieldsV1 is not JSON: {e}"))
            })?),
            None => None,
        };
        Obj::default()
            .text("manager", self.manager.take())
            .text("operation", self.operation.take())
            .text("apiVersion", self.api_version.take())
            .text("fieldsType", self.fields_type.take())
            .put("fieldsV1", fields)
            .text("subresource", self.subresource.take())
            .time("time", self.time.take())
    }
}

impl ToJson for meta::LabelSelector {
    const NAME: &'static str = "LabelSelector";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .string_map("matchLabels", take(&mut self.match_labels))
            .messages("matchExpressions", take(&mut self.match_expressions))
    }
}

impl ToJson for meta::LabelSelectorRequirement {
    const NAME: &'static str = "LabelSelectorRequirement";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("key", self.key.take())
            .text("operator", self.operator.take())
            .strings("values", take(&mut self.values)))
    }
}

// core/v1

impl ToJson for core::ConfigMap {
    const NAME: &'static str = "ConfigMap";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .message("metadata", self.metadata.take())?
            .boolean("immutable", self.immutable.take())
            .string_map("data", take(&mut self.data))
            .byte_map("binaryData", take(&mut self.binary_data)))
    }
}

impl ToJson for core::Secret {
    const NAME: &'static str = "Secret";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .message("metadata", self.metadata.take())?
            .boolean("immutable", self.immutable.take())
            .byte_map("data", take(&mut self.data))
            .string_map("stringData", take(&mut self.string_data))
            .text("type", self.r#type.take()))
    }
}

impl ToJson for core::ServiceAccount {
    const NAME: &'static str = "ServiceAccount";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .boolean("automountServiceAccountToken", self.automount_service_account_token.take())
            .message("metadata", self.metadata.take())?
            .messages("secrets", take(&mut self.secrets))?
            .messages("imagePullSecrets", take(&mut self.image_pull_secrets))
    }
}

impl ToJson for core::ObjectReference {
    const NAME: &'static str = "ObjectReference";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("kind", self.kind.take())
            .text("namespace", self.namespace.take())
            .text("name", self.name.take())
            .text("uid", self.uid.take())
            .text("apiVersion", self.api_version.take())
            .text("resourceVersion", self.resource_version.take())
            .text("fieldPath", self.field_path.take()))
    }
}

/// A message that is just `metadata` and `spec` (most kinds and templates).
macro_rules! metadata_and_spec {
    ($ty:ty, $name:literal) => {
        impl ToJson for $ty {
            const NAME: &'static str = $name;
            fn take_json(&mut self) -> Result<Obj, ApiError> {
                Obj::default().message("metadata", self.metadata.take())?.message("spec", self.spec.take())
            }
        }
    };
}

metadata_and_spec!(core::Namespace, "Namespace");

impl ToJson for core::NamespaceSpec {
    const NAME: &'static str = "NamespaceSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default().strings("finalizers", take(&mut self.finalizers)))
    }
}

metadata_and_spec!(core::Service, "Service");

impl ToJson for core::ServiceSpec {
    const NAME: &'static str = "ServiceSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .string_map("selector", take(&mut self.selector))
            .text("clusterIP", self.cluster_ip.take())
            .strings("clusterIPs", take(&mut self.cluster_ips))
            .text("type", self.r#type.take())
            .strings("externalIPs", take(&mut self.external_ips))
            .text("sessionAffinity", self.session_affinity.take())
            .text("loadBalancerIP", self.load_balancer_ip.take())
            .strings("loadBalancerSourceRanges", take(&mut self.load_balancer_source_ranges))
            .text("externalName", self.external_name.take())
            .text("externalTrafficPolicy", self.external_traffic_policy.take())
            .nonzero("healthCheckNodePort", self.health_check_node_port.take())
            .flag("publishNotReadyAddresses", self.publish_not_ready_addresses.take())
            .strings("ipFamilies", take(&mut self.ip_families))
            .text("ipFamilyPolicy", self.ip_family_policy.take())
            .boolean("allocateLoadBalancerNodePorts", self.allocate_load_balancer_node_ports.take())
            .text("loadBalancerClass", self.load_balancer_class.take())
            .text("internalTrafficPolicy", self.internal_traffic_policy.take())
            .text("trafficDistribution", self.traffic_distribution.take())
            .messages("ports", take(&mut self.ports))
    }
}

impl ToJson for core::ServicePort {
    const NAME: &'static str = "ServicePort";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        // An int 0 targetPort is Go's unset value (the server defaults it to `port`).
        let target_port = self.target_port.take().filter(|t| t.r#type == Some(1) || t.int_val.unwrap_or_default() != 0);
        Ok(Obj::default()
            .text("name", self.name.take())
            .text("protocol", self.protocol.take())
            .text("appProtocol", self.app_protocol.take())
            .int("port", self.port.take())
            .int_or_string("targetPort", target_port)
            .nonzero("nodePort", self.node_port.take()))
    }
}

metadata_and_spec!(core::Pod, "Pod");

metadata_and_spec!(core::PodTemplateSpec, "PodTemplateSpec");

impl ToJson for core::PodSpec {
    const NAME: &'static str = "PodSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .text("restartPolicy", self.restart_policy.take())
            .int("terminationGracePeriodSeconds", self.termination_grace_period_seconds.take())
            .int("activeDeadlineSeconds", self.active_deadline_seconds.take())
            .text("dnsPolicy", self.dns_policy.take())
            .string_map("nodeSelector", take(&mut self.node_selector))
            .text("serviceAccountName", self.service_account_name.take())
            .text("serviceAccount", self.service_account.take())
            .boolean("automountServiceAccountToken", self.automount_service_account_token.take())
            .text("nodeName", self.node_name.take())
            .flag("hostNetwork", self.host_network.take())
            .text("hostname", self.hostname.take())
            .text("subdomain", self.subdomain.take())
            .text("schedulerName", self.scheduler_name.take())
            .text("priorityClassName", self.priority_class_name.take())
            .boolean("enableServiceLinks", self.enable_service_links.take())
            .messages("imagePullSecrets", take(&mut self.image_pull_secrets))?
            .messages("initContainers", take(&mut self.init_containers))?
            .messages("containers", take(&mut self.containers))
    }
}

impl ToJson for core::LocalObjectReference {
    const NAME: &'static str = "LocalObjectReference";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default().text("name", self.name.take()))
    }
}

impl ToJson for core::TypedLocalObjectReference {
    const NAME: &'static str = "TypedLocalObjectReference";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("apiGroup", self.api_group.take())
            .text("kind", self.kind.take())
            .text("name", self.name.take()))
    }
}

impl ToJson for core::Container {
    const NAME: &'static str = "Container";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .text("name", self.name.take())
            .text("image", self.image.take())
            .strings("command", take(&mut self.command))
            .strings("args", take(&mut self.args))
            .text("workingDir", self.working_dir.take())
            .text("terminationMessagePath", self.termination_message_path.take())
            .text("terminationMessagePolicy", self.termination_message_policy.take())
            .text("imagePullPolicy", self.image_pull_policy.take())
            .flag("stdin", self.stdin.take())
            .flag("stdinOnce", self.stdin_once.take())
            .flag("tty", self.tty.take())
            .messages("ports", take(&mut self.ports))?
            .messages("env", take(&mut self.env))?
            .message("resources", self.resources.take())
    }
}

impl ToJson for core::ContainerPort {
    const NAME: &'static str = "ContainerPort";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("name", self.name.take())
            .nonzero("hostPort", self.host_port.take())
            .int("containerPort", self.container_port.take())
            .text("protocol", self.protocol.take())
            .text("hostIP", self.host_ip.take()))
    }
}

impl ToJson for core::EnvVar {
    const NAME: &'static str = "EnvVar";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default().text("name", self.name.take()).text("value", self.value.take()))
    }
}

impl ToJson for core::ResourceRequirements {
    const NAME: &'static str = "ResourceRequirements";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default().quantities("limits", take(&mut self.limits)).quantities("requests", take(&mut self.requests)))
    }
}

// apps/v1

metadata_and_spec!(apps::Deployment, "Deployment");

impl ToJson for apps::DeploymentSpec {
    const NAME: &'static str = "DeploymentSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .int("replicas", self.replicas.take())
            .nonzero("minReadySeconds", self.min_ready_seconds.take())
            .int("revisionHistoryLimit", self.revision_history_limit.take())
            .flag("paused", self.paused.take())
            .int("progressDeadlineSeconds", self.progress_deadline_seconds.take())
            .message("selector", self.selector.take())?
            .message("template", self.template.take())?
            .message("strategy", self.strategy.take())
    }
}

impl ToJson for apps::DeploymentStrategy {
    const NAME: &'static str = "DeploymentStrategy";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().text("type", self.r#type.take()).message("rollingUpdate", self.rolling_update.take())
    }
}

impl ToJson for apps::RollingUpdateDeployment {
    const NAME: &'static str = "RollingUpdateDeployment";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .int_or_string("maxUnavailable", self.max_unavailable.take())
            .int_or_string("maxSurge", self.max_surge.take()))
    }
}

// batch/v1

metadata_and_spec!(batch::Job, "Job");

impl ToJson for batch::JobSpec {
    const NAME: &'static str = "JobSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .int("parallelism", self.parallelism.take())
            .int("completions", self.completions.take())
            .int("activeDeadlineSeconds", self.active_deadline_seconds.take())
            .int("backoffLimit", self.backoff_limit.take())
            .int("backoffLimitPerIndex", self.backoff_limit_per_index.take())
            .int("maxFailedIndexes", self.max_failed_indexes.take())
            .boolean("manualSelector", self.manual_selector.take())
            .int("ttlSecondsAfterFinished", self.ttl_seconds_after_finished.take())
            .text("completionMode", self.completion_mode.take())
            .boolean("suspend", self.suspend.take())
            .text("podReplacementPolicy", self.pod_replacement_policy.take())
            .text("managedBy", self.managed_by.take())
            .message("selector", self.selector.take())?
            .message("template", self.template.take())
    }
}

metadata_and_spec!(batch::CronJob, "CronJob");

impl ToJson for batch::CronJobSpec {
    const NAME: &'static str = "CronJobSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .text("schedule", self.schedule.take())
            .text("timeZone", self.time_zone.take())
            .int("startingDeadlineSeconds", self.starting_deadline_seconds.take())
            .text("concurrencyPolicy", self.concurrency_policy.take())
            .boolean("suspend", self.suspend.take())
            .int("successfulJobsHistoryLimit", self.successful_jobs_history_limit.take())
            .int("failedJobsHistoryLimit", self.failed_jobs_history_limit.take())
            .message("jobTemplate", self.job_template.take())
    }
}

metadata_and_spec!(batch::JobTemplateSpec, "JobTemplateSpec");

// networking.k8s.io/v1

metadata_and_spec!(networking::Ingress, "Ingress");

impl ToJson for networking::IngressSpec {
    const NAME: &'static str = "IngressSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .text("ingressClassName", self.ingress_class_name.take())
            .message("defaultBackend", self.default_backend.take())?
            .messages("tls", take(&mut self.tls))?
            .messages("rules", take(&mut self.rules))
    }
}

impl ToJson for networking::IngressTls {
    const NAME: &'static str = "IngressTLS";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default().strings("hosts", take(&mut self.hosts)).text("secretName", self.secret_name.take()))
    }
}

impl ToJson for networking::IngressRule {
    const NAME: &'static str = "IngressRule";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        // Go inlines IngressRuleValue, so `http` sits beside `host`.
        let http = self.ingress_rule_value.as_mut().and_then(|v| v.http.take());
        Obj::default().text("host", self.host.take()).message("http", http)
    }
}

impl ToJson for networking::HttpIngressRuleValue {
    const NAME: &'static str = "HTTPIngressRuleValue";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().messages("paths", take(&mut self.paths))
    }
}

impl ToJson for networking::HttpIngressPath {
    const NAME: &'static str = "HTTPIngressPath";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .text("path", self.path.take())
            .text("pathType", self.path_type.take())
            .message("backend", self.backend.take())
    }
}

impl ToJson for networking::IngressBackend {
    const NAME: &'static str = "IngressBackend";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().message("service", self.service.take())?.message("resource", self.resource.take())
    }
}

impl ToJson for networking::IngressServiceBackend {
    const NAME: &'static str = "IngressServiceBackend";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().text("name", self.name.take()).message("port", self.port.take())
    }
}

impl ToJson for networking::ServiceBackendPort {
    const NAME: &'static str = "ServiceBackendPort";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default().text("name", self.name.take()).nonzero("number", self.number.take()))
    }
}

// DeleteOptions and policy/v1 Eviction (`kubectl drain`)

impl ToJson for meta::DeleteOptions {
    const NAME: &'static str = "DeleteOptions";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .int("gracePeriodSeconds", self.grace_period_seconds.take())
            .message("preconditions", self.preconditions.take())?
            .boolean("orphanDependents", self.orphan_dependents.take())
            .text("propagationPolicy", self.propagation_policy.take())
            .strings("dryRun", take(&mut self.dry_run)))
    }
}

impl ToJson for meta::Preconditions {
    const NAME: &'static str = "Preconditions";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default().text("uid", self.uid.take()).text("resourceVersion", self.resource_version.take()))
    }
}

impl ToJson for policy::Eviction {
    const NAME: &'static str = "Eviction";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().message("metadata", self.metadata.take())?.message("deleteOptions", self.delete_options.take())
    }
}

metadata_and_spec!(policy::PodDisruptionBudget, "PodDisruptionBudget");

impl ToJson for policy::PodDisruptionBudgetSpec {
    const NAME: &'static str = "PodDisruptionBudgetSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .int_or_string("minAvailable", self.min_available.take())
            .int_or_string("maxUnavailable", self.max_unavailable.take())
            .text("unhealthyPodEvictionPolicy", self.unhealthy_pod_eviction_policy.take())
            .message("selector", self.selector.take())
    }
}

// autoscaling/v2 (`kubectl autoscale`)

impl ToJson for autoscaling::HorizontalPodAutoscaler {
    const NAME: &'static str = "HorizontalPodAutoscaler";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().message("metadata", self.metadata.take())?.message("spec", self.spec.take())
    }
}

impl ToJson for autoscaling::HorizontalPodAutoscalerSpec {
    const NAME: &'static str = "HorizontalPodAutoscalerSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .message("scaleTargetRef", self.scale_target_ref.take())?
            .int("minReplicas", self.min_replicas.take())
            .int("maxReplicas", self.max_replicas.take())
            .messages("metrics", take(&mut self.metrics))?
            .message("behavior", self.behavior.take())
    }
}

impl ToJson for autoscaling::CrossVersionObjectReference {
    const NAME: &'static str = "CrossVersionObjectReference";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("kind", self.kind.take())
            .text("name", self.name.take())
            .text("apiVersion", self.api_version.take()))
    }
}

impl ToJson for autoscaling::MetricSpec {
    const NAME: &'static str = "MetricSpec";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .text("type", self.r#type.take())
            .message("object", self.object.take())?
            .message("pods", self.pods.take())?
            .message("resource", self.resource.take())?
            .message("containerResource", self.container_resource.take())?
            .message("external", self.external.take())
    }
}

impl ToJson for autoscaling::ObjectMetricSource {
    const NAME: &'static str = "ObjectMetricSource";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .message("describedObject", self.described_object.take())?
            .message("target", self.target.take())?
            .message("metric", self.metric.take())
    }
}

impl ToJson for autoscaling::PodsMetricSource {
    const NAME: &'static str = "PodsMetricSource";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().message("metric", self.metric.take())?.message("target", self.target.take())
    }
}

impl ToJson for autoscaling::ExternalMetricSource {
    const NAME: &'static str = "ExternalMetricSource";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().message("metric", self.metric.take())?.message("target", self.target.take())
    }
}

impl ToJson for autoscaling::ResourceMetricSource {
    const NAME: &'static str = "ResourceMetricSource";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().text("name", self.name.take()).message("target", self.target.take())
    }
}

impl ToJson for autoscaling::ContainerResourceMetricSource {
    const NAME: &'static str = "ContainerResourceMetricSource";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default()
            .text("name", self.name.take())
            .text("container", self.container.take())
            .message("target", self.target.take())
    }
}

impl ToJson for autoscaling::MetricIdentifier {
    const NAME: &'static str = "MetricIdentifier";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().text("name", self.name.take()).message("selector", self.selector.take())
    }
}

impl ToJson for autoscaling::MetricTarget {
    const NAME: &'static str = "MetricTarget";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("type", self.r#type.take())
            .quantity("value", self.value.take())
            .quantity("averageValue", self.average_value.take())
            .int("averageUtilization", self.average_utilization.take()))
    }
}

impl ToJson for autoscaling::HorizontalPodAutoscalerBehavior {
    const NAME: &'static str = "HorizontalPodAutoscalerBehavior";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Obj::default().message("scaleUp", self.scale_up.take())?.message("scaleDown", self.scale_down.take())
    }
}

impl ToJson for autoscaling::HpaScalingRules {
    const NAME: &'static str = "HPAScalingRules";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .int("stabilizationWindowSeconds", self.stabilization_window_seconds.take())
            .text("selectPolicy", self.select_policy.take())
            .messages("policies", take(&mut self.policies))?
            .quantity("tolerance", self.tolerance.take()))
    }
}

impl ToJson for autoscaling::HpaScalingPolicy {
    const NAME: &'static str = "HPAScalingPolicy";
    fn take_json(&mut self) -> Result<Obj, ApiError> {
        Ok(Obj::default()
            .text("type", self.r#type.take())
            .int("value", self.value.take())
            .int("periodSeconds", self.period_seconds.take()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
    use serde_json::json;

    /// A request body exactly as client-go builds it: magic, then `runtime.Unknown`.
    fn body(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(object.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC, &unknown.encode_to_vec()].concat()
    }

    fn s(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    fn strings<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// ObjectMeta as Go encodes a fresh one: every non-pointer field written, zero or not.
    fn meta(name: &str) -> meta::ObjectMeta {
        meta::ObjectMeta {
            name: s(name),
            generate_name: s(""),
            namespace: s(""),
            self_link: s(""),
            uid: s(""),
            resource_version: s(""),
            generation: Some(0),
            creation_timestamp: Some(meta::Time::default()),
            ..Default::default()
        }
    }

    fn decode_valid(body: &[u8]) -> Value {
        let value = decode_object(body).expect("decodes");
        let api_version = value["apiVersion"].as_str().expect("apiVersion").to_string();
        let kind = value["kind"].as_str().expect("kind").to_string();
        let resource = flotilla_api::by_kind(&api_version, &kind).expect("a served kind");
        // The registry fills the namespace in from the request path before validating.
        let mut object = value.clone();
        if resource.namespaced && object["metadata"].get("namespace").is_none() {
            object["metadata"]["namespace"] = json!("default");
        }
        if let Err(errors) = resource.validate(object) {
            panic!("{kind} fails validation: {errors:?}\n{value:#}");
        }
        value
    }

    #[test]
    fn configmap_with_data_and_binary_data() {
        let configmap = core::ConfigMap {
            metadata: Some(meta::ObjectMeta { namespace: s("default"), ..meta("settings") }),
            immutable: Some(false),
            data: strings([("a", "b"), ("mode", "fast")]),
            binary_data: [("blob".to_string(), vec![0u8, 1, 2, 255])].into(),
        };
        assert_eq!(
            decode_valid(&body("v1", "ConfigMap", &configmap)),
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "settings", "namespace": "default"},
                "immutable": false,
                "data": {"a": "b", "mode": "fast"},
                "binaryData": {"blob": "AAEC/w=="},
            })
        );
    }

    #[test]
    fn secret_bytes_become_base64_and_type_is_kept() {
        let secret = core::Secret {
            metadata: Some(meta("creds")),
            immutable: None,
            data: [("password".to_string(), b"hunter2".to_vec())].into(),
            string_data: strings([("user", "admin")]),
            r#type: s("Opaque"),
        };
        assert_eq!(
            decode_valid(&body("v1", "Secret", &secret)),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds"},
                "data": {"password": "aHVudGVyMg=="},
                "stringData": {"user": "admin"},
                "type": "Opaque",
            })
        );
    }

    #[test]
    fn namespace_as_kubectl_create_namespace_sends_it() {
        let namespace = core::Namespace {
            metadata: Some(meta("team-a")),
            spec: Some(core::NamespaceSpec::default()),
            status: Some(core::NamespaceStatus { phase: s(""), conditions: Vec::new() }),
        };
        assert_eq!(
            decode_valid(&body("v1", "Namespace", &namespace)),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}, "spec": {}})
        );
    }

    #[test]
    fn object_meta_fields_use_kubernetes_names() {
        let metadata = meta::ObjectMeta {
            name: None,
            generate_name: s("web-"),
            namespace: s("prod"),
            uid: s("0b9f6c1e-1111-2222-3333-444455556666"),
            resource_version: s("42"),
            generation: Some(3),
            creation_timestamp: Some(meta::Time { seconds: Some(1_767_323_045), nanos: Some(500) }),
            deletion_timestamp: Some(meta::Time::default()),
            labels: strings([("app", "web")]),
            annotations: strings([("note", "hi")]),
            owner_references: vec![meta::OwnerReference {
                api_version: s("apps/v1"),
                kind: s("ReplicaSet"),
                name: s("web-abc"),
                uid: s("u-1"),
                controller: Some(true),
                block_owner_deletion: Some(false),
            }],
            finalizers: vec!["example.com/hold".into()],
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl-create"),
                operation: s("Update"),
                api_version: s("v1"),
                time: Some(meta::Time { seconds: Some(1_767_323_045), nanos: Some(0) }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 { raw: Some(br#"{"f:data":{}}"#.to_vec()) }),
                subresource: s(""),
            }],
            ..Default::default()
        };
        let configmap = core::ConfigMap { metadata: Some(metadata), ..Default::default() };
        assert_eq!(
            decode_valid(&body("v1", "ConfigMap", &configmap))["metadata"],
            json!({
                "generateName": "web-",
                "namespace": "prod",
                "uid": "0b9f6c1e-1111-2222-3333-444455556666",
                "resourceVersion": "42",
                "generation": 3,
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"app": "web"},
                "annotations": {"note": "hi"},
                "ownerReferences": [{
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-abc",
                    "uid": "u-1",
                    "controller": true,
                    "blockOwnerDeletion": false,
                }],
                "finalizers": ["example.com/hold"],
                "managedFields": [{
                    "manager": "kubectl-create",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": "2026-01-02T03:04:05Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {}},
                }],
            })
        );
    }

    fn int(value: i32) -> Option<IntOrString> {
        Some(IntOrString { r#type: Some(0), int_val: Some(value), str_val: s("") })
    }

    fn named(value: &str) -> Option<IntOrString> {
        Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: s(value) })
    }

    #[test]
    fn service_as_kubectl_create_service_sends_it() {
        let port = |name: &str, port: i32, target: Option<IntOrString>, node_port: i32| core::ServicePort {
            name: s(name),
            protocol: s("TCP"),
            port: Some(port),
            target_port: target,
            node_port: Some(node_port),
            ..Default::default()
        };
        let service = core::Service {
            metadata: Some(meta::ObjectMeta { labels: strings([("app", "web")]), ..meta("web") }),
            spec: Some(core::ServiceSpec {
                ports: vec![port("80-8080", 80, int(8080), 30080), port("https", 443, named("https"), 0)],
                selector: strings([("app", "web")]),
                cluster_ip: s(""),
                r#type: s("NodePort"),
                session_affinity: s(""),
                publish_not_ready_addresses: Some(false),
                ..Default::default()
            }),
            status: Some(core::ServiceStatus::default()),
        };
        assert_eq!(
            decode_valid(&body("v1", "Service", &service)),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "ports": [
                        {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080},
                        {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                    ],
                    "selector": {"app": "web"},
                    "type": "NodePort",
                },
            })
        );
    }

    #[test]
    fn deployment_as_kubectl_create_deployment_sends_it() {
        let labels = strings([("app", "web")]);
        let container = core::Container {
            name: s("nginx"),
            image: s("nginx:1.27"),
            command: vec!["nginx".into(), "-g".into()],
            working_dir: s(""),
            ports: vec![core::ContainerPort {
                name: s(""),
                host_port: Some(0),
                container_port: Some(80),
                protocol: s(""),
                host_ip: s(""),
            }],
            env: vec![core::EnvVar { name: s("MODE"), value: s("fast"), value_from: None }],
            resources: Some(core::ResourceRequirements {
                limits: [("memory".to_string(), Quantity { string: s("128Mi") })].into(),
                ..Default::default()
            }),
            termination_message_path: s(""),
            image_pull_policy: s(""),
            stdin: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let deployment = apps::Deployment {
            metadata: Some(meta::ObjectMeta { labels: labels.clone(), ..meta("web") }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(meta::LabelSelector {
                    match_labels: labels.clone(),
                    match_expressions: vec![meta::LabelSelectorRequirement {
                        key: s("tier"),
                        operator: s("In"),
                        values: vec!["front".into()],
                    }],
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta {
                        labels: strings([("app", "web"), ("tier", "front")]),
                        ..meta("")
                    }),
                    spec: Some(core::PodSpec {
                        containers: vec![container],
                        restart_policy: s(""),
                        dns_policy: s(""),
                        host_network: Some(false),
                        ..Default::default()
                    }),
                }),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: s("RollingUpdate"),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_unavailable: int(0),
                        max_surge: named("25%"),
                    }),
                }),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            status: Some(apps::DeploymentStatus::default()),
        };
        assert_eq!(
            decode_valid(&body("apps/v1", "Deployment", &deployment)),
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 2,
                    "selector": {
                        "matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}],
                    },
                    "template": {
                        "metadata": {"labels": {"app": "web", "tier": "front"}},
                        "spec": {"containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "command": ["nginx", "-g"],
                            "ports": [{"containerPort": 80}],
                            "env": [{"name": "MODE", "value": "fast"}],
                            "resources": {"limits": {"memory": "128Mi"}},
                        }]},
                    },
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
                },
            })
        );
    }

    /// A container as kubectl builds one: name, image, command, Go's zeros for the rest.
    fn container(name: &str, image: &str, command: &[&str]) -> core::Container {
        core::Container {
            name: s(name),
            image: s(image),
            command: command.iter().map(|c| c.to_string()).collect(),
            working_dir: s(""),
            termination_message_path: s(""),
            termination_message_policy: s(""),
            image_pull_policy: s(""),
            stdin: Some(false),
            stdin_once: Some(false),
            tty: Some(false),
            ..Default::default()
        }
    }

    /// A PodSpec with Go's zeros for its non-pointer fields.
    fn pod_spec(containers: Vec<core::Container>, restart_policy: &str) -> core::PodSpec {
        core::PodSpec {
            containers,
            restart_policy: s(restart_policy),
            dns_policy: s(""),
            service_account_name: s(""),
            service_account: s(""),
            node_name: s(""),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            hostname: s(""),
            subdomain: s(""),
            scheduler_name: s(""),
            priority_class_name: s(""),
            ..Default::default()
        }
    }

    fn template(spec: core::PodSpec) -> Option<core::PodTemplateSpec> {
        Some(core::PodTemplateSpec { metadata: Some(meta("")), spec: Some(spec) })
    }

    #[test]
    fn pod_as_kubectl_run_sends_it() {
        let mut container = container("shell", "busybox:1.36", &[]);
        container.args = vec!["sleep".into(), "3600".into()];
        container.stdin = Some(true);
        container.stdin_once = Some(true);
        container.tty = Some(true);
        container.image_pull_policy = s("IfNotPresent");
        container.ports = vec![core::ContainerPort {
            name: s(""),
            host_port: Some(0),
            container_port: Some(8080),
            protocol: s(""),
            host_ip: s(""),
        }];
        container.env = vec![core::EnvVar { name: s("MODE"), value: s("debug"), value_from: None }];
        let mut spec = pod_spec(vec![container], "Never");
        spec.dns_policy = s("ClusterFirst");
        let pod = core::Pod {
            metadata: Some(meta::ObjectMeta { labels: strings([("run", "shell")]), ..meta("shell") }),
            spec: Some(spec),
            status: Some(core::PodStatus { phase: s(""), message: s(""), reason: s(""), ..Default::default() }),
        };
        assert_eq!(
            decode_valid(&body("v1", "Pod", &pod)),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "shell", "labels": {"run": "shell"}},
                "spec": {
                    "restartPolicy": "Never",
                    "dnsPolicy": "ClusterFirst",
                    "containers": [{
                        "name": "shell",
                        "image": "busybox:1.36",
                        "args": ["sleep", "3600"],
                        "imagePullPolicy": "IfNotPresent",
                        "stdin": true,
                        "stdinOnce": true,
                        "tty": true,
                        "ports": [{"containerPort": 8080}],
                        "env": [{"name": "MODE", "value": "debug"}],
                    }],
                },
            })
        );
    }

    #[test]
    fn job_as_kubectl_create_job_sends_it() {
        let job = batch::Job {
            metadata: Some(meta("j")),
            spec: Some(batch::JobSpec {
                template: template(pod_spec(vec![container("j", "hello-http:1", &["echo", "hi"])], "Never")),
                ..Default::default()
            }),
            status: Some(batch::JobStatus::default()),
        };
        assert_eq!(
            decode_valid(&body("batch/v1", "Job", &job)),
            json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": "j"},
                "spec": {"template": {
                    "metadata": {},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "j", "image": "hello-http:1", "command": ["echo", "hi"]}],
                    },
                }},
            })
        );
    }

    #[test]
    fn job_from_cronjob_keeps_the_copied_spec_and_owner() {
        // `kubectl create job --from=cronjob/c` copies the stored (defaulted) jobTemplate.
        let mut container = container("c", "hello-http:1", &[]);
        container.image_pull_policy = s("IfNotPresent");
        container.termination_message_path = s("/dev/termination-log");
        container.termination_message_policy = s("File");
        let mut spec = pod_spec(vec![container], "OnFailure");
        spec.dns_policy = s("ClusterFirst");
        spec.scheduler_name = s("default-scheduler");
        spec.termination_grace_period_seconds = Some(30);
        let labels = strings([("team", "a")]);
        let job = batch::Job {
            metadata: Some(meta::ObjectMeta {
                labels: labels.clone(),
                annotations: strings([("cronjob.kubernetes.io/instantiate", "manual"), ("note", "nightly")]),
                owner_references: vec![meta::OwnerReference {
                    api_version: s("batch/v1"),
                    kind: s("CronJob"),
                    name: s("c"),
                    uid: s("u-7"),
                    controller: Some(true),
                    block_owner_deletion: None,
                }],
                ..meta("manual-1")
            }),
            spec: Some(batch::JobSpec {
                parallelism: Some(2),
                completions: Some(4),
                active_deadline_seconds: Some(600),
                backoff_limit: Some(0),
                ttl_seconds_after_finished: Some(0),
                suspend: Some(false),
                selector: Some(meta::LabelSelector { match_labels: labels.clone(), match_expressions: Vec::new() }),
                manual_selector: Some(true),
                completion_mode: s("NonIndexed"),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta { labels, ..meta("") }),
                    spec: Some(spec),
                }),
                ..Default::default()
            }),
            status: Some(batch::JobStatus::default()),
        };
        assert_eq!(
            decode_valid(&body("batch/v1", "Job", &job)),
            json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": "manual-1",
                    "labels": {"team": "a"},
                    "annotations": {"cronjob.kubernetes.io/instantiate": "manual", "note": "nightly"},
                    "ownerReferences": [
                        {"apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "u-7", "controller": true},
                    ],
                },
                "spec": {
                    "parallelism": 2,
                    "completions": 4,
                    "activeDeadlineSeconds": 600,
                    "backoffLimit": 0,
                    "ttlSecondsAfterFinished": 0,
                    "suspend": false,
                    "selector": {"matchLabels": {"team": "a"}},
                    "manualSelector": true,
                    "completionMode": "NonIndexed",
                    "template": {
                        "metadata": {"labels": {"team": "a"}},
                        "spec": {
                            "restartPolicy": "OnFailure",
                            "terminationGracePeriodSeconds": 30,
                            "dnsPolicy": "ClusterFirst",
                            "schedulerName": "default-scheduler",
                            "containers": [{
                                "name": "c",
                                "image": "hello-http:1",
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "File",
                                "imagePullPolicy": "IfNotPresent",
                            }],
                        },
                    },
                },
            })
        );
    }

    #[test]
    fn cronjob_as_kubectl_create_cronjob_sends_it() {
        let cronjob = batch::CronJob {
            metadata: Some(meta("c")),
            spec: Some(batch::CronJobSpec {
                schedule: s("*/5 * * * *"),
                concurrency_policy: s(""),
                job_template: Some(batch::JobTemplateSpec {
                    metadata: Some(meta("c")),
                    spec: Some(batch::JobSpec {
                        template: template(pod_spec(vec![container("c", "hello-http:1", &[])], "OnFailure")),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: Some(batch::CronJobStatus::default()),
        };
        assert_eq!(
            decode_valid(&body("batch/v1", "CronJob", &cronjob)),
            json!({
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "c"},
                "spec": {
                    "schedule": "*/5 * * * *",
                    "jobTemplate": {
                        "metadata": {"name": "c"},
                        "spec": {"template": {
                            "metadata": {},
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "containers": [{"name": "c", "image": "hello-http:1"}],
                            },
                        }},
                    },
                },
            })
        );
    }

    #[test]
    fn cronjob_spec_fields_keep_pointer_zeros() {
        let cronjob = batch::CronJob {
            metadata: Some(meta("c")),
            spec: Some(batch::CronJobSpec {
                schedule: s("0 3 * * *"),
                time_zone: s("Europe/Berlin"),
                starting_deadline_seconds: Some(0),
                concurrency_policy: s("Forbid"),
                suspend: Some(false),
                successful_jobs_history_limit: Some(0),
                failed_jobs_history_limit: Some(2),
                job_template: Some(batch::JobTemplateSpec {
                    metadata: Some(meta::ObjectMeta { annotations: strings([("note", "nightly")]), ..meta("") }),
                    spec: Some(batch::JobSpec {
                        backoff_limit: Some(6),
                        template: template(pod_spec(vec![container("c", "hello-http:1", &[])], "Never")),
                        ..Default::default()
                    }),
                }),
            }),
            status: None,
        };
        assert_eq!(
            decode_valid(&body("batch/v1", "CronJob", &cronjob))["spec"],
            json!({
                "schedule": "0 3 * * *",
                "timeZone": "Europe/Berlin",
                "startingDeadlineSeconds": 0,
                "concurrencyPolicy": "Forbid",
                "suspend": false,
                "successfulJobsHistoryLimit": 0,
                "failedJobsHistoryLimit": 2,
                "jobTemplate": {
                    "metadata": {"annotations": {"note": "nightly"}},
                    "spec": {
                        "backoffLimit": 6,
                        "template": {
                            "metadata": {},
                            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "hello-http:1"}]},
                        },
                    },
                },
            })
        );
    }

    /// An IngressBackend as kubectl builds one from `svc:port`.
    fn backend(service: &str, port: &str) -> networking::IngressBackend {
        let port = match port.parse::<i32>() {
            Ok(number) => networking::ServiceBackendPort { name: s(""), number: Some(number) },
            Err(_) => networking::ServiceBackendPort { name: s(port), number: Some(0) },
        };
        networking::IngressBackend {
            service: Some(networking::IngressServiceBackend { name: s(service), port: Some(port) }),
            resource: None,
        }
    }

    fn path(path: &str, path_type: &str, service: &str, port: &str) -> networking::HttpIngressPath {
        networking::HttpIngressPath { path: s(path), path_type: s(path_type), backend: Some(backend(service, port)) }
    }

    fn rule(host: &str, paths: Vec<networking::HttpIngressPath>) -> networking::IngressRule {
        networking::IngressRule {
            host: s(host),
            ingress_rule_value: Some(networking::IngressRuleValue {
                http: Some(networking::HttpIngressRuleValue { paths }),
            }),
        }
    }

    fn ingress(spec: networking::IngressSpec) -> networking::Ingress {
        networking::Ingress {
            metadata: Some(meta("web")),
            spec: Some(spec),
            status: Some(networking::IngressStatus { load_balancer: Some(Default::default()) }),
        }
    }

    #[test]
    fn ingress_as_kubectl_create_ingress_sends_it() {
        // --rule="foo.com/bar=svc:80"
        let plain = ingress(networking::IngressSpec {
            rules: vec![rule("foo.com", vec![path("/bar", "Exact", "svc", "80")])],
            ..Default::default()
        });
        assert_eq!(
            decode_valid(&body("networking.k8s.io/v1", "Ingress", &plain)),
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": "web"},
                "spec": {"rules": [{"host": "foo.com", "http": {"paths": [{
                    "path": "/bar",
                    "pathType": "Exact",
                    "backend": {"service": {"name": "svc", "port": {"number": 80}}},
                }]}}]},
            })
        );

        // --class=nginx --default-backend=def:http --rule="foo.com/*=svc:8080,tls=secret"
        // --rule="/api=api:grpc"
        let full = ingress(networking::IngressSpec {
            ingress_class_name: s("nginx"),
            default_backend: Some(backend("def", "http")),
            tls: vec![networking::IngressTls { hosts: vec!["foo.com".into()], secret_name: s("secret") }],
            rules: vec![
                rule("foo.com", vec![path("/", "Prefix", "svc", "8080")]),
                rule("", vec![path("/api", "Exact", "api", "grpc")]),
            ],
        });
        assert_eq!(
            decode_valid(&body("networking.k8s.io/v1", "Ingress", &full))["spec"],
            json!({
                "ingressClassName": "nginx",
                "defaultBackend": {"service": {"name": "def", "port": {"name": "http"}}},
                "tls": [{"hosts": ["foo.com"], "secretName": "secret"}],
                "rules": [
                    {"host": "foo.com", "http": {"paths": [{
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "svc", "port": {"number": 8080}}},
                    }]}},
                    {"http": {"paths": [{
                        "path": "/api",
                        "pathType": "Exact",
                        "backend": {"service": {"name": "api", "port": {"name": "grpc"}}},
                    }]}},
                ],
            })
        );

        // A resource backend (manifests only) converts too.
        let resource = ingress(networking::IngressSpec {
            default_backend: Some(networking::IngressBackend {
                service: None,
                resource: Some(core::TypedLocalObjectReference {
                    api_group: s("k8s.example.com"),
                    kind: s("StorageBucket"),
                    name: s("static"),
                }),
            }),
            ..Default::default()
        });
        assert_eq!(
            decode_valid(&body("networking.k8s.io/v1", "Ingress", &resource))["spec"],
            json!({"defaultBackend": {"resource": {
                "apiGroup": "k8s.example.com",
                "kind": "StorageBucket",
                "name": "static",
            }}})
        );
    }

    #[test]
    fn eviction_and_delete_options_as_kubectl_drain_sends_them() {
        let options = meta::DeleteOptions {
            grace_period_seconds: Some(10),
            preconditions: Some(meta::Preconditions { uid: s("u-1"), resource_version: None }),
            orphan_dependents: None,
            propagation_policy: s("Foreground"),
            dry_run: vec!["All".into()],
            ..Default::default()
        };
        let expected = json!({
            "gracePeriodSeconds": 10,
            "preconditions": {"uid": "u-1"},
            "propagationPolicy": "Foreground",
            "dryRun": ["All"],
        });
        // DeleteOptions comes under the client's group version: core v1 for pods.
        let mut decoded = decode_object(&body("v1", "DeleteOptions", &options)).expect("decodes");
        let type_meta = decoded.as_object_mut().map(|map| (map.remove("apiVersion"), map.remove("kind")));
        assert_eq!(type_meta, Some((Some(json!("v1")), Some(json!("DeleteOptions")))));
        assert_eq!(decoded, expected);
        assert!(decode_object(&body("apps/v1", "DeleteOptions", &options)).is_ok());

        let eviction = policy::Eviction {
            metadata: Some(meta::ObjectMeta { namespace: s("shop"), ..meta("web-1") }),
            delete_options: Some(options),
        };
        assert_eq!(
            decode_object(&body("policy/v1", "Eviction", &eviction)).expect("decodes"),
            json!({
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": "web-1", "namespace": "shop"},
                "deleteOptions": expected,
            })
        );
    }

    #[test]
    fn hpa_as_kubectl_autoscale_sends_it() {
        // kubectl autoscale deployment web --min=1 --max=4 --cpu=50%
        let cpu = autoscaling::MetricSpec {
            r#type: s("Resource"),
            resource: Some(autoscaling::ResourceMetricSource {
                name: s("cpu"),
                target: Some(autoscaling::MetricTarget {
                    r#type: s("Utilization"),
                    average_utilization: Some(50),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let spec = autoscaling::HorizontalPodAutoscalerSpec {
            scale_target_ref: Some(autoscaling::CrossVersionObjectReference {
                kind: s("Deployment"),
                name: s("web"),
                api_version: s("apps/v1"),
            }),
            min_replicas: Some(1),
            max_replicas: Some(4),
            metrics: vec![cpu],
            behavior: None,
        };
        // Go writes the non-pointer status fields even when zero.
        let status = autoscaling::HorizontalPodAutoscalerStatus {
            current_replicas: Some(0),
            desired_replicas: Some(0),
            ..Default::default()
        };
        let hpa = autoscaling::HorizontalPodAutoscaler {
            metadata: Some(meta("web")),
            spec: Some(spec.clone()),
            status: Some(status.clone()),
        };
        assert_eq!(
            decode_valid(&body("autoscaling/v2", "HorizontalPodAutoscaler", &hpa)),
            json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web"},
                "spec": {
                    "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "metrics": [{"type": "Resource", "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    }}],
                },
            })
        );

        // A pods metric with a selector, and behavior (from a manifest) convert too.
        let rps = autoscaling::MetricSpec {
            r#type: s("Pods"),
            pods: Some(autoscaling::PodsMetricSource {
                metric: Some(autoscaling::MetricIdentifier {
                    name: s("requests_per_second"),
                    selector: Some(meta::LabelSelector {
                        match_labels: strings([("app", "web")]),
                        ..Default::default()
                    }),
                }),
                target: Some(autoscaling::MetricTarget {
                    r#type: s("AverageValue"),
                    average_value: Some(Quantity { string: s("100") }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let down = autoscaling::HpaScalingRules {
            stabilization_window_seconds: Some(60),
            select_policy: s("Min"),
            policies: vec![autoscaling::HpaScalingPolicy {
                r#type: s("Percent"),
                value: Some(50),
                period_seconds: Some(15),
            }],
            tolerance: None,
        };
        let with_behavior = autoscaling::HorizontalPodAutoscaler {
            metadata: Some(meta("web")),
            spec: Some(autoscaling::HorizontalPodAutoscalerSpec {
                metrics: vec![rps],
                behavior: Some(autoscaling::HorizontalPodAutoscalerBehavior { scale_up: None, scale_down: Some(down) }),
                ..spec
            }),
            status: Some(status),
        };
        let spec = &decode_valid(&body("autoscaling/v2", "HorizontalPodAutoscaler", &with_behavior))["spec"];
        assert_eq!(
            spec["metrics"],
            json!([{"type": "Pods", "pods": {
                "metric": {"name": "requests_per_second", "selector": {"matchLabels": {"app": "web"}}},
                "target": {"type": "AverageValue", "averageValue": "100"},
            }}])
        );
        assert_eq!(
            spec["behavior"],
            json!({"scaleDown": {
                "stabilizationWindowSeconds": 60,
                "selectPolicy": "Min",
                "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}],
            }})
        );

        // A status with figures in it is the controller's to write: refused, not dropped.
        let reported = autoscaling::HorizontalPodAutoscaler {
            metadata: Some(meta("web")),
            spec: None,
            status: Some(autoscaling::HorizontalPodAutoscalerStatus {
                current_replicas: Some(2),
                ..Default::default()
            }),
        };
        assert_eq!(
            error(&body("autoscaling/v2", "HorizontalPodAutoscaler", &reported)).reason,
            Reason::UnsupportedMediaType
        );
    }

    fn error(body: &[u8]) -> ApiError {
        decode_object(body).expect_err("refused")
    }

    #[test]
    fn unsupported_kind_is_415_and_says_to_use_json() {
        let endpoints = core::Endpoints { metadata: Some(meta("e")), ..Default::default() };
        let e = error(&body("v1", "Endpoints", &endpoints));
        assert_eq!((e.reason, e.code()), (Reason::UnsupportedMediaType, 415));
        assert!(e.message.contains("Kind=Endpoints") && e.message.contains("application/json"), "{}", e.message);
    }

    #[test]
    fn set_fields_not_converted_are_415_not_dropped() {
        let mut container = core::Container { name: s("c"), image: s("i"), ..Default::default() };
        container.liveness_probe = Some(core::Probe { period_seconds: Some(5), ..Default::default() });
        let pod_spec = core::PodSpec { containers: vec![container], ..Default::default() };
        let deployment = apps::Deployment {
            metadata: Some(meta("web")),
            spec: Some(apps::DeploymentSpec {
                template: Some(core::PodTemplateSpec { metadata: None, spec: Some(pod_spec) }),
                ..Default::default()
            }),
            status: None,
        };
        let e = error(&body("apps/v1", "Deployment", &deployment));
        assert_eq!(e.reason, Reason::UnsupportedMediaType);
        assert!(e.message.contains("Container") && e.message.contains("application/json"), "{}", e.message);

        // A Job with a podFailurePolicy, an Ingress with a load balancer status: not converted.
        let policy = batch::PodFailurePolicy {
            rules: vec![batch::PodFailurePolicyRule { action: s("FailJob"), ..Default::default() }],
        };
        let job = batch::Job {
            metadata: Some(meta("j")),
            spec: Some(batch::JobSpec { pod_failure_policy: Some(policy), ..Default::default() }),
            status: None,
        };
        let e = error(&body("batch/v1", "Job", &job));
        assert_eq!(e.reason, Reason::UnsupportedMediaType);
        assert!(e.message.contains("field 11 of JobSpec"), "{}", e.message);
        let ingress = networking::Ingress {
            metadata: Some(meta("web")),
            spec: None,
            status: Some(networking::IngressStatus {
                load_balancer: Some(networking::IngressLoadBalancerStatus {
                    ingress: vec![networking::IngressLoadBalancerIngress { ip: s("10.0.0.1"), ..Default::default() }],
                }),
            }),
        };
        assert_eq!(error(&body("networking.k8s.io/v1", "Ingress", &ingress)).reason, Reason::UnsupportedMediaType);

        let status = core::NamespaceStatus { phase: s("Active"), conditions: Vec::new() };
        let namespace = core::Namespace { metadata: Some(meta("n")), spec: None, status: Some(status) };
        assert_eq!(error(&body("v1", "Namespace", &namespace)).reason, Reason::UnsupportedMediaType);
    }

    #[test]
    fn garbage_is_a_bad_request_naming_what_failed() {
        let configmap = core::ConfigMap { metadata: Some(meta("c")), ..Default::default() };
        let good = body("v1", "ConfigMap", &configmap);
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("missing magic", good[MAGIC.len()..].to_vec(), "magic"),
            ("wrong magic", [b"k8s\x01", &good[MAGIC.len()..]].concat(), "magic"),
            ("json", br#"{"kind":"ConfigMap"}"#.to_vec(), "magic"),
            ("truncated envelope", good[..good.len() - 3].to_vec(), "runtime.Unknown"),
            ("no kind", [MAGIC, &Unknown::default().encode_to_vec()].concat(), "apiVersion and kind"),
        ];
        for (case, bytes, says) in cases {
            let e = error(&bytes);
            assert_eq!(e.reason, Reason::BadRequest, "{case}");
            assert!(e.message.contains(says), "{case}: {}", e.message);
        }
        // A well-formed envelope around a truncated object.
        let raw = configmap.encode_to_vec();
        let unknown = Unknown {
            type_meta: Some(TypeMeta { api_version: s("v1"), kind: s("ConfigMap") }),
            raw: Some(raw[..raw.len() - 1].to_vec()),
            ..Default::default()
        };
        let e = error(&[MAGIC, &unknown.encode_to_vec()].concat());
        assert_eq!(e.reason, Reason::BadRequest);
        assert!(e.message.contains("ConfigMap is malformed"), "{}", e.message);
    }

    #[test]
    fn leftover_check_sees_zero_values_as_unset() {
        assert_eq!(first_set_field(&[], 0), None);
        // field 1 varint 0, field 2 empty bytes, field 3 message holding a zero varint
        assert_eq!(first_set_field(&[0x08, 0x00, 0x12, 0x00, 0x1a, 0x02, 0x08, 0x00], 0), None);
        assert_eq!(first_set_field(&[0x08, 0x00, 0x10, 0x01], 0), Some(2));
        assert_eq!(first_set_field(&[0x12, 0x05, 0x08], 0), Some(2), "truncated counts as set");
        // Past the nesting limit a message counts as set rather than being recursed into.
        assert_eq!(first_set_field(&[0x0a, 0x02, 0x08, 0x00], MAX_ZERO_DEPTH - 1), None);
        assert_eq!(first_set_field(&[0x0a, 0x02, 0x08, 0x00], MAX_ZERO_DEPTH), Some(1));
    }
}
