//! What each verb does to stored objects, as kube-apiserver's generic registry does:
//! system fields on create, optimistic concurrency and generation on update, status
//! and scale subresources, patches, finalizers and propagation on delete.
//!
//! Objects are JSON values; in the store they carry no `resourceVersion`, which is the
//! store's `mod_revision` and is filled in on every read, as etcd3 storage does.

use base64::Engine as _;
use flotilla_api::limits;
use flotilla_api::{ApiError, FieldError, FieldSelector, LabelSelector, ObjectRef, Reason, ResourceType, Subresource};
use flotilla_store::{KeyValue, ListOptions, Store};
use serde_json::{Map, Value, json};
use std::sync::Arc;

use crate::metrics::ApiMetrics;
use crate::services::{Allocation, NodePortRange, ServiceAllocator, ServiceCidr};

/// Names of the namespaces that always exist and may not be deleted.
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// How many times an unconditional update re-reads and retries after losing a race.
const UPDATE_RETRIES: usize = 16;

/// The object verbs over one store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    /// Service cluster IPs and node ports (see `services.rs`).
    services: Arc<ServiceAllocator>,
    /// Where requests and watchers are counted, once the server has registered them.
    metrics: Option<ApiMetrics>,
    /// The objects of recent watch events, decoded once for every watcher.
    decoded: Arc<crate::watch::DecodeCache>,
}

pub use crate::patch::PatchType;

/// A list request's filters and paging.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Value),
    /// The object is being deleted and waits for its finalizers.
    Pending(Value),
}

/// How strictly fields the schema does not declare are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (kube-apiserver's default).
    #[default]
    Warn,
    /// Refuse the request.
    Strict,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid fieldValidation \"{other}\": must be one of Ignore, Warn or Strict"
            ))),
        }
    }
}

/// Per-request options of a write, and the warnings it produced.
#[derive(Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, but store nothing.
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// Who is writing, as recorded in `managedFields`.
    pub field_manager: String,
    /// A server-side apply: its own `managedFields` entry is made by the apply merge,
    /// not recorded as an update.
    pub server_side_apply: bool,
    /// Warnings for the response's `Warning` headers.
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl WriteOptions {
    fn warn(&self, warning: String) {
        if let Ok(mut warnings) = self.warnings.lock() {
            warnings.push(warning);
        }
    }

    /// The warnings collected so far.
    pub fn take_warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default()
    }
}

/// Delete options from the body or the query string.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
    /// `gracePeriodSeconds`: how long a running pod gets to stop (its
    /// `terminationGracePeriodSeconds` when not given; 0 deletes at once).
    pub grace_period_seconds: Option<i64>,
    /// `ignoreStoreReadErrorWithClusterBreakingPotential`: delete an object whose stored
    /// bytes cannot be read, without reading them (no finalizers, no grace), as
    /// kube-apiserver does for corrupt objects. The one way out for an object stored by
    /// an older server that no limit stopped.
    pub ignore_store_read_error: bool,
}

fn object_ref<'a>(rt: &'a ResourceType, name: &'a str) -> ObjectRef<'a> {
    ObjectRef { group: rt.group, resource: rt.plural, name }
}

pub(crate) fn metadata(object: &Value) -> &Value {
    object.get("metadata").unwrap_or(&Value::Null)
}

/// The object's metadata map, made if missing. Callers pass objects only (request
/// bodies and stored values are checked to be objects before they get here).
fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    metadata(object).get(field).and_then(Value::as_str)
}

pub(crate) fn name_of(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or("")
}

fn finalizers(object: &Value) -> Vec<String> {
    metadata(object)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Parses a `resourceVersion` from a client.
pub fn parse_resource_version(rv: &str) -> Result<u64, ApiError> {
    rv.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion \"{rv}\": must be a decimal number")))
}

/// Fills in `apiVersion` and `kind` when missing; refuses a body of another kind.
fn check_type_meta(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let expected = rt.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = json!(expected),
        Some(v) if v == expected => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected})"
            )));
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = json!(rt.kind),
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) of {}",
                rt.kind,
                rt.qualified_plural()
            )));
        }
    }
    Ok(())
}

/// Sets or checks `metadata.namespace` against the request's namespace.
fn check_namespace(rt: &ResourceType, object: &mut Value, namespace: Option<&str>) -> Result<(), ApiError> {
    if !rt.namespaced {
        return Ok(());
    }
    let Some(ns) = namespace else {
        return Err(ApiError::bad_request(format!("{} must be created in a namespace", rt.qualified_plural())));
    };
    match meta_str(object, "namespace") {
        None | Some("") => {
            metadata_mut(object).insert("namespace".into(), json!(ns));
            Ok(())
        }
        Some(given) if given == ns => Ok(()),
        Some(given) => Err(ApiError::bad_request(format!(
            "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
        ))),
    }
}

fn invalid(rt: &ResourceType, name: &str, errors: &[FieldError]) -> ApiError {
    ApiError::invalid(rt.kind, rt.group, name, errors)
}

/// Validates an object and applies `fieldValidation` to the fields its schema drops.
fn validate(rt: &ResourceType, object: Value, options: &WriteOptions) -> Result<Value, ApiError> {
    let name = name_of(&object).to_string();
    let input = (options.field_validation != FieldValidation::Ignore).then(|| object.clone());
    let canonical = rt.validate(object).map_err(|errors| invalid(rt, &name, &errors))?;
    if let Some(input) = input {
        let unknown: Vec<String> =
            flotilla_api::unknown_fields(&input, &canonical).iter().map(|f| format!("unknown field \"{f}\"")).collect();
        if !unknown.is_empty() {
            if options.field_validation == FieldValidation::Strict {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    unknown.join(", "),
                    kind = rt.kind,
                    version = rt.version,
                )));
            }
            unknown.into_iter().for_each(|w| options.warn(w));
        }
    }
    let mut canonical = canonical;
    if rt.kind == "Secret" && rt.group.is_empty() {
        flotilla_api::fold_secret_string_data(&mut canonical);
    }
    Ok(canonical)
}

/// A random suffix for `generateName`, from the same alphabet Kubernetes uses (no
/// vowels, no look-alike characters).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5].iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()
}

/// The object with `metadata`, `status` and the type fields removed: what a change to
/// bumps `generation`.
fn spec_part(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Value::Object(map) = &mut spec {
        for key in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(key);
        }
    }
    spec
}

fn status_success(rt: &ResourceType, object: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": name_of(object),
            "group": rt.group,
            "kind": rt.plural,
            "uid": meta_str(object, "uid").unwrap_or(""),
        }
    })
}

impl Registry {
    /// The registry over `store`, with kube-apiserver's default Service ranges.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_service_ranges(store, ServiceCidr::default(), NodePortRange::default())
    }

    /// The registry over `store`, allocating Service cluster IPs from `cidr` and node
    /// ports from `node_ports`.
    pub fn with_service_ranges(store: Arc<dyn Store>, cidr: ServiceCidr, node_ports: NodePortRange) -> Self {
        Self {
            store,
            services: Arc::new(ServiceAllocator::new(cidr, node_ports)),
            metrics: None,
            decoded: Arc::default(),
        }
    }

    /// The same registry, counting requests and watchers in `metrics`.
    pub(crate) fn with_metrics(self, metrics: ApiMetrics) -> Self {
        Self { metrics: Some(metrics), ..self }
    }

    pub(crate) fn metrics(&self) -> Option<&ApiMetrics> {
        self.metrics.as_ref()
    }

    /// The range Service cluster IPs come from.
    pub fn service_cidr(&self) -> ServiceCidr {
        self.services.cidr()
    }

    /// For a write of a Service, the allocation lock (held until the write is done).
    async fn service_allocation(&self, rt: &ResourceType) -> Result<Option<Allocation<'_>>, ApiError> {
        if rt.group.is_empty() && rt.kind == "Service" {
            Ok(Some(self.services.lock(self.store.as_ref()).await?))
        } else {
            Ok(None)
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Decodes a stored value and stamps its `resourceVersion`.
    pub fn decode(&self, kv: &KeyValue) -> Result<Value, ApiError> {
        let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::internal(format!(
                "stored object {} is corrupt: {e} (delete it with DeleteOptions \
                 ignoreStoreReadErrorWithClusterBreakingPotential: true)",
                kv.key
            ))
        })?;
        if !object.is_object() {
            return Err(ApiError::internal(format!("stored object {} is corrupt: not a JSON object", kv.key)));
        }
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(object)
    }

    /// [`Registry::decode`] for a watch event's object: every watcher of a kind sees the
    /// same events, so the bytes are parsed once and each watcher gets a copy.
    pub(crate) fn decode_event(&self, kv: &KeyValue) -> Result<Value, ApiError> {
        self.decoded.get_or_decode(kv, || self.decode(kv))
    }

    /// The object as written: `resourceVersion` set to the write's revision, without
    /// parsing back the bytes just stored.
    fn stamped(mut object: Value, kv: &KeyValue) -> Value {
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        object
    }

    /// The bytes stored for `object`, once it is known they can be read back: no deeper
    /// than [`limits::MAX_DEPTH`] (serde_json reads at most 128 levels; anything deeper
    /// would make every list of its kind fail for good) and no larger than
    /// [`limits::MAX_BODY_BYTES`].
    fn encode(rt: &ResourceType, object: &Value) -> Result<Vec<u8>, ApiError> {
        if let Some(path) = limits::too_deep(object, limits::MAX_DEPTH) {
            let detail = format!("must not nest deeper than {} levels of objects and arrays", limits::MAX_DEPTH);
            let error = FieldError::new(flotilla_api::FieldErrorType::Invalid, path, None, detail);
            return Err(invalid(rt, name_of(object), &[error]));
        }
        let mut stored = object.clone();
        metadata_mut(&mut stored).remove("resourceVersion");
        let bytes = serde_json::to_vec(&stored).map_err(|e| ApiError::internal(format!("encoding the object: {e}")))?;
        if bytes.len() > limits::MAX_BODY_BYTES {
            return Err(ApiError::new(
                Reason::RequestEntityTooLarge,
                format!(
                    "{} \"{}\" is too large to store: {} bytes, the limit is {}",
                    rt.qualified_plural(),
                    flotilla_api::limits::truncate(name_of(object), 253),
                    bytes.len(),
                    limits::MAX_BODY_BYTES
                ),
            ));
        }
        Ok(bytes)
    }

    fn store_error(rt: &ResourceType, name: &str, error: flotilla_store::Error) -> ApiError {
        use flotilla_store::Error as E;
        match error {
            E::AlreadyExists { .. } => ApiError::already_exists(object_ref(rt, name)),
            E::NotFound { .. } => ApiError::not_found(object_ref(rt, name)),
            E::Conflict { .. } => ApiError::conflict(
                object_ref(rt, name),
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            E::Compacted { requested, compacted } => {
                ApiError::gone(format!("too old resource version: {requested} ({compacted})"))
            }
            // The store is recovering from a failed commit (a full disk): try again.
            E::Unavailable { reason } => {
                ApiError::new(Reason::ServiceUnavailable, format!("the store is unavailable, try again: {reason}"))
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(Reason::InternalError, format!("storage failure: {other}"))
            }
        }
    }

    /// Refuses new objects in a namespace that does not exist or is being deleted.
    async fn check_namespace_open(&self, rt: &ResourceType, namespace: &str, name: &str) -> Result<(), ApiError> {
        let namespaces =
            flotilla_api::by_kind("v1", "Namespace").ok_or_else(|| ApiError::internal("no Namespace kind"))?;
        let key = namespaces.key(None, namespace);
        let kv = self.store.get(&key).await.map_err(|e| Self::store_error(namespaces, namespace, e))?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(ObjectRef { group: "", resource: "namespaces", name: namespace }));
        };
        let ns = self.decode(&kv)?;
        if meta_str(&ns, "deletionTimestamp").is_some() {
            return Err(ApiError::new(
                Reason::Forbidden,
                format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                    rt.qualified_plural()
                ),
            ));
        }
        Ok(())
    }

    pub async fn create(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type_meta(rt, &mut object)?;
        check_namespace(rt, &mut object, namespace)?;
        let generated_prefix = match meta_str(&object, "name") {
            Some(name) if !name.is_empty() => None,
            _ => meta_str(&object, "generateName").filter(|g| !g.is_empty()).map(str::to_string),
        };
        {
            let meta = metadata_mut(&mut object);
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(flotilla_api::timestamp_now()));
            meta.insert("generation".into(), json!(1));
            for system in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
                meta.remove(system);
            }
        }
        if rt.kind == "Namespace" {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        if rt.kind == "Pod" {
            // As kube-apiserver's pod strategy: a new pod's status is the server's to set.
            object["status"] = json!({"phase": "Pending"});
        }
        if rt.kind == "Service" {
            // As kube-apiserver's service strategy: a new Service's status is the server's.
            object["status"] = json!({"loadBalancer": {}});
        }
        let mut services = self.service_allocation(rt).await?;
        for _attempt in 0..8 {
            if let Some(prefix) = &generated_prefix {
                metadata_mut(&mut object).insert("name".into(), json!(format!("{prefix}{}", random_suffix())));
            }
            let mut canonical = record_update(rt, None, validate(rt, object.clone(), options)?, options);
            let name = name_of(&canonical).to_string();
            if let Some(ns) = namespace.filter(|_| rt.namespaced) {
                self.check_namespace_open(rt, ns, &name).await?;
            }
            let key = rt.key(namespace, &name);
            if let Some(allocation) = &services {
                allocation.allocate(&key, None, &mut canonical)?;
            }
            let bytes = Self::encode(rt, &canonical)?;
            if options.dry_run {
                return Ok(canonical);
            }
            match self.store.create(&key, bytes).await {
                Ok(kv) => {
                    if let Some(allocation) = &mut services {
                        allocation.commit(&key, Some(&canonical));
                    }
                    return Ok(Self::stamped(canonical, &kv));
                }
                // A generated name that collided: draw another.
                Err(flotilla_store::Error::AlreadyExists { .. }) if generated_prefix.is_some() => continue,
                Err(e) => return Err(Self::store_error(rt, &name, e)),
            }
        }
        Err(ApiError::new(Reason::AlreadyExists, "could not generate a unique name; try again"))
    }

    pub async fn get(&self, rt: &'static ResourceType, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        let kv = self.store.get(&rt.key(namespace, name)).await.map_err(|e| Self::store_error(rt, name, e))?;
        match kv {
            Some(kv) => self.decode(&kv),
            None => Err(ApiError::not_found(object_ref(rt, name))),
        }
    }

    /// Lists objects, filtered by selectors, one page at a time.
    pub async fn list(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        query: &ListQuery,
    ) -> Result<Value, ApiError> {
        let prefix = rt.key_prefix(namespace);
        let (mut start_after, mut revision) = match &query.continue_token {
            Some(token) => {
                let (rv, key) = decode_continue(token)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::bad_request("the continue token is not for this list"));
                }
                (Some(key), Some(rv))
            }
            None => (None, None),
        };
        let limit = query.limit.filter(|l| *l > 0);
        let mut items = Vec::new();
        let mut continue_key = None;
        loop {
            let page_size = limit.map(|l| (l - items.len()).max(64));
            let options = ListOptions { start_after: start_after.clone(), limit: page_size };
            let page = self.store.list(&prefix, options).await.map_err(|e| Self::store_error(rt, "", e))?;
            revision.get_or_insert(page.revision);
            let page_len = page.items.len();
            for (index, kv) in page.items.iter().enumerate() {
                let object = self.decode(kv)?;
                if query.labels.matches(labels_of(&object)) && query.fields.matches(&object) {
                    items.push(object);
                }
                if limit.is_some_and(|l| items.len() >= l) {
                    if index + 1 < page_len || page.more {
                        continue_key = Some(kv.key.clone());
                    }
                    break;
                }
            }
            if continue_key.is_some() || limit.is_some_and(|l| items.len() >= l) || !page.more {
                break;
            }
            start_after = page.items.last().map(|kv| kv.key.clone());
        }
        let revision = revision.unwrap_or_else(|| self.store.current_revision());
        let mut list_meta = json!({"resourceVersion": revision.to_string()});
        if let Some(key) = continue_key {
            list_meta["continue"] = json!(encode_continue(revision, &key));
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": list_meta,
            "items": items,
        }))
    }

    /// Reads, changes and writes back one object with compare-and-swap, retrying when a
    /// concurrent writer wins unless the caller named the version it expects.
    async fn update_with<F>(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &WriteOptions,
        mut change: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&Value) -> Result<(Value, Option<u64>), ApiError>,
    {
        let key = rt.key(namespace, name);
        let mut services = self.service_allocation(rt).await?;
        for _ in 0..UPDATE_RETRIES {
            let Some(kv) = self.store.get(&key).await.map_err(|e| Self::store_error(rt, name, e))? else {
                return Err(ApiError::not_found(object_ref(rt, name)));
            };
            let current = self.decode(&kv)?;
            let (mut updated, precondition) = change(&current)?;
            if precondition.is_some_and(|rv| rv != kv.mod_revision) {
                return Err(Self::store_error(
                    rt,
                    name,
                    flotilla_store::Error::Conflict { key, expected: 0, current: kv.mod_revision },
                ));
            }
            if let Some(allocation) = &services {
                allocation.allocate(&key, Some(&current), &mut updated)?;
            }
            if updated == current {
                // No change: kube-apiserver does not write, so the resourceVersion stays.
                return Ok(updated);
            }
            let bytes = Self::encode(rt, &updated)?;
            if options.dry_run {
                return Ok(updated);
            }
            // Removing the last finalizer of an object being deleted deletes it. A
            // namespace is removed only by its own finalizer, once it is empty.
            let finished = rt.kind != "Namespace"
                && meta_str(&updated, "deletionTimestamp").is_some()
                && metadata(&updated).get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) == 0
                && finalizers(&updated).is_empty();
            let result = if finished {
                self.store.delete(&key, Some(kv.mod_revision)).await
            } else {
                self.store.update(&key, bytes, kv.mod_revision).await
            };
            match result {
                Ok(written) => {
                    if let Some(allocation) = &mut services {
                        allocation.commit(&key, (!finished).then_some(&updated));
                    }
                    return Ok(Self::stamped(updated, &written));
                }
                Err(flotilla_store::Error::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(Self::store_error(rt, name, e)),
            }
        }
        Err(Self::store_error(rt, name, flotilla_store::Error::Conflict { key, expected: 0, current: 0 }))
    }

    /// Replaces an object (PUT), or only its status with `Subresource::Status`.
    pub async fn update(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        subresource: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let precondition = match meta_str(&body, "resourceVersion") {
            Some(rv) if !rv.is_empty() => Some(parse_resource_version(rv)?),
            _ => None,
        };
        self.update_with(rt, namespace, name, options, |current| {
            Ok((prepare_update(rt, current, body.clone(), namespace, name, subresource, options)?, precondition))
        })
        .await
    }

    /// Applies a JSON, merge or strategic merge patch to an object or its status, retrying
    /// on a concurrent write (as kube-apiserver does) unless the patch names a
    /// `resourceVersion`.
    pub async fn patch(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: PatchType<'_>,
        subresource: Option<Subresource>,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let patch = crate::patch::parse(patch)?;
        self.update_with(rt, namespace, name, options, |current| {
            let mut patched = current.clone();
            crate::patch::apply(&mut patched, &patch)?;
            // A patch that sets resourceVersion makes it a precondition.
            let precondition = match meta_str(&patched, "resourceVersion") {
                Some(rv) if Some(rv) != meta_str(current, "resourceVersion") => Some(parse_resource_version(rv)?),
                _ => None,
            };
            Ok((prepare_update(rt, current, patched, namespace, name, subresource, options)?, precondition))
        })
        .await
    }

    /// Server-side apply (`application/apply-patch+yaml`): merges the applied
    /// configuration into the object as `options.field_manager`, creating it when it
    /// does not exist; fields another manager owns with a different value are a 409
    /// Conflict unless `force`.
    pub async fn apply(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        mut config: Value,
        force: bool,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_type_meta(rt, &mut config)?;
        match meta_str(&config, "name") {
            Some(given) if given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                metadata_mut(&mut config).insert("name".into(), json!(name));
            }
        }
        let api_version = rt.api_version();
        let now = flotilla_api::timestamp_now();
        let manager = options.field_manager.as_str();
        let merge = |live: Option<&Value>| {
            crate::apply::apply(live, &config, manager, force, &api_version, &now)
                .map_err(|conflicts| crate::apply::conflict_error(&conflicts))
        };
        if self.store.get(&rt.key(namespace, name)).await.map_err(|e| Self::store_error(rt, name, e))?.is_none() {
            return self.create(rt, namespace, merge(None)?, options).await;
        }
        self.update_with(rt, namespace, name, options, |current| {
            Ok((prepare_update(rt, current, merge(Some(current))?, namespace, name, None, options)?, None))
        })
        .await
    }

    /// The `scale` subresource of an object with `spec.replicas`.
    pub fn scale_of(&self, object: &Value) -> Value {
        let meta = metadata(object);
        let selector = object
            .pointer("/spec/selector")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .and_then(|s| LabelSelector::from_label_selector(&s).ok())
            .map(|s| s.to_string())
            .unwrap_or_default();
        json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
            "status": {
                "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                "selector": selector,
            },
        })
    }

    /// Writes a Scale (from PUT, or a patch of the current Scale) back to `spec.replicas`.
    pub async fn update_scale<F>(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &WriteOptions,
        mut new_scale: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(Value) -> Result<Value, ApiError>,
    {
        let updated = self
            .update_with(rt, namespace, name, options, |current| {
                let scale = new_scale(self.scale_of(current))?;
                let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
                if replicas < 0 {
                    let error = FieldError::invalid("spec.replicas", &replicas, "must be greater than or equal to 0");
                    return Err(ApiError::invalid("Scale", "autoscaling", name, &[error]));
                }
                let precondition = match scale.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
                    Some(rv) if Some(rv) != meta_str(current, "resourceVersion") => Some(parse_resource_version(rv)?),
                    _ => None,
                };
                let mut next = current.clone();
                next["spec"]["replicas"] = json!(replicas);
                Ok((prepare_update(rt, current, next, namespace, name, None, options)?, precondition))
            })
            .await?;
        Ok(self.scale_of(&updated))
    }

    /// Deletes an object, or marks it for deletion while finalizers remain.
    pub async fn delete(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        if rt.kind == "Namespace" && SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::new(
                Reason::Forbidden,
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            ));
        }
        let key = rt.key(namespace, name);
        let mut services = if options.dry_run { None } else { self.service_allocation(rt).await? };
        for _ in 0..UPDATE_RETRIES {
            let Some(kv) = self.store.get(&key).await.map_err(|e| Self::store_error(rt, name, e))? else {
                return Err(ApiError::not_found(object_ref(rt, name)));
            };
            let current = match self.decode(&kv) {
                Ok(current) => current,
                Err(_) if options.ignore_store_read_error && !options.dry_run => {
                    tracing::warn!(key = %key, "deleting an object that cannot be read");
                    return match self.store.delete(&key, Some(kv.mod_revision)).await {
                        Ok(_) => Ok(Deleted::Gone(json!({"metadata": {"name": name}}))),
                        Err(flotilla_store::Error::Conflict { .. }) => continue,
                        Err(e) => Err(Self::store_error(rt, name, e)),
                    };
                }
                Err(e) => return Err(e),
            };
            check_preconditions(rt, &current, options)?;
            let mut pending = finalizers(&current);
            match options.propagation_policy.as_deref() {
                None | Some("Background") => {}
                Some("Foreground") => add_finalizer(&mut pending, "foregroundDeletion"),
                Some("Orphan") => add_finalizer(&mut pending, "orphan"),
                Some(other) => {
                    let error =
                        FieldError::not_supported("propagationPolicy", other, &["Foreground", "Background", "Orphan"]);
                    return Err(ApiError::invalid("DeleteOptions", "", name, &[error]));
                }
            }
            if rt.kind == "Namespace" {
                // The namespace finalizer empties it first (see namespaces.rs).
                add_finalizer(&mut pending, "kubernetes");
            }
            let grace = pod_grace_period(rt, &current, options);
            if pending.is_empty() && grace == 0 {
                if options.dry_run {
                    return Ok(Deleted::Gone(current));
                }
                match self.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        if let Some(allocation) = &mut services {
                            allocation.commit(&key, None);
                        }
                        return Ok(Deleted::Gone(current));
                    }
                    Err(flotilla_store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(Self::store_error(rt, name, e)),
                }
            }
            let mut marked = current.clone();
            {
                let meta = metadata_mut(&mut marked);
                let marked_grace = meta.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                // A second delete may shorten a pod's grace period, never lengthen it.
                if marked_grace.is_none_or(|marked| grace < marked) {
                    // `grace` is at most 68 years (see `pod_grace_period`); saturate anyway.
                    let at = jiff::Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_secs(grace))
                        .unwrap_or(jiff::Timestamp::MAX);
                    meta.insert("deletionTimestamp".into(), json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if rt.kind != "Namespace" && (!pending.is_empty() || meta.contains_key("finalizers")) {
                    meta.insert("finalizers".into(), json!(pending));
                }
            }
            if rt.kind == "Namespace" {
                marked["status"]["phase"] = json!("Terminating");
            }
            if marked == current || options.dry_run {
                return Ok(Deleted::Pending(marked));
            }
            match self.store.update(&key, Self::encode(rt, &marked)?, kv.mod_revision).await {
                Ok(written) => return Ok(Deleted::Pending(self.decode(&written)?)),
                Err(flotilla_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(Self::store_error(rt, name, e)),
            }
        }
        Err(Self::store_error(rt, name, flotilla_store::Error::Conflict { key, expected: 0, current: 0 }))
    }

    /// `pods/binding`: assigns a pending pod to a node, as the scheduler does, and marks
    /// it `PodScheduled`. A pod already assigned, or being deleted, is a `Conflict`.
    pub async fn bind(&self, namespace: &str, name: &str, binding: &Value) -> Result<Value, ApiError> {
        let rt = flotilla_api::by_kind("v1", "Pod").ok_or_else(|| ApiError::internal("pods are not served"))?;
        let node = binding["target"]["name"].as_str().filter(|n| !n.is_empty());
        let Some(node) = node else {
            let error = FieldError::required("target.name", "the node to bind to");
            return Err(ApiError::invalid("Binding", "", name, &[error]));
        };
        if let Some(kind) = binding["target"]["kind"].as_str().filter(|k| !k.is_empty() && *k != "Node") {
            let error = FieldError::not_supported("target.kind", kind, &["Node"]);
            return Err(ApiError::invalid("Binding", "", name, &[error]));
        }
        let options = WriteOptions { field_manager: "flotilla-scheduler".into(), ..WriteOptions::default() };
        let bound = self
            .update_with(rt, Some(namespace), name, &options, |current| {
                let conflict = |why: String| ApiError::conflict(object_ref(rt, name), &why);
                if meta_str(current, "deletionTimestamp").is_some() {
                    return Err(conflict(format!("pod {name} is being deleted, cannot be assigned to a host")));
                }
                if let Some(assigned) = current["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                    return Err(conflict(format!("pod {name} is already assigned to node \"{assigned}\"")));
                }
                let mut next = current.clone();
                next["spec"]["nodeName"] = json!(node);
                set_condition(&mut next, "PodScheduled", "True", None, None);
                Ok((next, None))
            })
            .await?;
        Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201,
            "details": {"name": name, "kind": "pods", "uid": meta_str(&bound, "uid").unwrap_or("")}}))
    }

    /// The response body of a delete: the object while it waits for finalizers, a
    /// success `Status` once it is gone.
    pub fn deleted_body(rt: &ResourceType, deleted: &Deleted) -> Value {
        match deleted {
            Deleted::Gone(object) => status_success(rt, object),
            Deleted::Pending(object) => object.clone(),
        }
    }

    /// Deletes every object a list with `query` would return.
    pub async fn delete_collection(
        &self,
        rt: &'static ResourceType,
        namespace: Option<&str>,
        query: &ListQuery,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut all = query.clone();
        all.limit = None;
        all.continue_token = None;
        let list = self.list(rt, namespace, &all).await?;
        let mut deleted = Vec::new();
        for object in list["items"].as_array().into_iter().flatten() {
            let ns = meta_str(object, "namespace");
            match self.delete(rt, ns.or(namespace), name_of(object), options).await {
                Ok(Deleted::Gone(o) | Deleted::Pending(o)) => deleted.push(o),
                Err(e) if e.reason == Reason::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": {"resourceVersion": self.store.current_revision().to_string()},
            "items": deleted,
        }))
    }
}

/// How long a pod being deleted gets to stop, as kube-apiserver decides: none for other
/// kinds, for a pod no node runs yet, or one that has finished; else the delete's
/// `gracePeriodSeconds`, else the pod's `terminationGracePeriodSeconds` (30).
fn pod_grace_period(rt: &ResourceType, pod: &Value, options: &DeleteOptions) -> i64 {
    if rt.kind != "Pod" {
        return 0;
    }
    let scheduled = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !scheduled || finished {
        return 0;
    }
    // Clamped: a DELETE's own `gracePeriodSeconds` is not validated, and pods stored
    // before the field had an upper bound may carry any int64.
    options
        .grace_period_seconds
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .clamp(0, limits::MAX_DURATION_SECONDS)
}

/// Sets `status.conditions[type]`, moving `lastTransitionTime` only when the status
/// changes, as every Kubernetes component does.
pub fn set_condition(
    object: &mut Value,
    condition_type: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !object["status"].is_object() {
        object["status"] = json!({});
    }
    if !object["status"]["conditions"].is_array() {
        object["status"]["conditions"] = json!([]);
    }
    let now = flotilla_api::timestamp_now();
    let mut condition =
        json!({"type": condition_type, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    let Some(conditions) = object["status"]["conditions"].as_array_mut() else { return };
    match conditions.iter_mut().find(|c| c["type"] == condition_type) {
        Some(existing) => {
            if existing["status"] == status {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
}

fn add_finalizer(finalizers: &mut Vec<String>, name: &str) {
    if !finalizers.iter().any(|f| f == name) {
        finalizers.push(name.to_string());
    }
}

pub(crate) fn labels_of(object: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    metadata(object).get("labels").and_then(Value::as_object).unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

fn check_preconditions(rt: &ResourceType, current: &Value, options: &DeleteOptions) -> Result<(), ApiError> {
    let name = name_of(current);
    if let Some(uid) = &options.precondition_uid {
        let actual = meta_str(current, "uid").unwrap_or("");
        if uid != actual {
            let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}");
            return Err(ApiError::conflict(object_ref(rt, name), &why));
        }
    }
    if let Some(rv) = &options.precondition_resource_version {
        let actual = meta_str(current, "resourceVersion").unwrap_or("");
        if rv != actual {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}"
            );
            return Err(ApiError::conflict(object_ref(rt, name), &why));
        }
    }
    Ok(())
}

/// The object a PUT or patch produces from `current` and the client's `body`: type,
/// name and namespace checked, system fields kept, status kept apart, generation
/// bumped on a spec change, and the result validated.
fn prepare_update(
    rt: &ResourceType,
    current: &Value,
    mut body: Value,
    namespace: Option<&str>,
    name: &str,
    subresource: Option<Subresource>,
    options: &WriteOptions,
) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    check_type_meta(rt, &mut body)?;
    check_namespace(rt, &mut body, namespace)?;
    match meta_str(&body, "name") {
        None | Some("") => {
            metadata_mut(&mut body).insert("name".into(), json!(name));
        }
        Some(given) if given == name => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
    }
    let mut next = match subresource {
        Some(Subresource::Status) => {
            let mut next = current.clone();
            match body.get("status") {
                Some(status) if !status.is_null() => next["status"] = status.clone(),
                _ => {
                    if let Value::Object(map) = &mut next {
                        map.remove("status");
                    }
                }
            }
            next
        }
        _ => {
            if rt.has_subresource(Subresource::Status)
                && let Value::Object(map) = &mut body
            {
                match current.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
            body
        }
    };
    let old_meta = metadata(current).clone();
    let being_deleted = old_meta.get("deletionTimestamp").is_some();
    if being_deleted {
        let old_finalizers = finalizers(current);
        if let Some(added) = finalizers(&next).into_iter().find(|f| !old_finalizers.contains(f)) {
            let error = FieldError::forbidden(
                "metadata.finalizers",
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers [\"{added}\"]"
                ),
            );
            return Err(invalid(rt, name, &[error]));
        }
    }
    {
        let meta = metadata_mut(&mut next);
        for system in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"]
        {
            match old_meta.get(system) {
                Some(value) => meta.insert(system.into(), value.clone()),
                None => meta.remove(system),
            };
        }
        meta.remove("selfLink");
    }
    if rt.kind == "Namespace" {
        // The namespace lifecycle owns spec.finalizers and the phase.
        next["spec"] = current.get("spec").cloned().unwrap_or(json!({}));
        if subresource != Some(Subresource::Status) {
            next["status"] = current.get("status").cloned().unwrap_or(json!({}));
        }
    }
    let service = rt.group.is_empty() && rt.kind == "Service";
    if service {
        // Allocated values the client left out are kept; ones a new type no longer uses
        // are dropped (and released after the write).
        flotilla_api::service::prepare_service_update(current, &mut next);
    }
    let mut canonical = validate(rt, next, options)?;
    if service {
        let errors = flotilla_api::service::validate_service_update(current, &canonical);
        if !errors.is_empty() {
            return Err(invalid(rt, name, &errors));
        }
    }
    // Compared after defaulting, so a default filled in again is not a spec change.
    let generation = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
    let generation = if spec_part(&canonical) != spec_part(current) { generation + 1 } else { generation };
    metadata_mut(&mut canonical).insert("generation".into(), json!(generation));
    Ok(record_update(rt, Some(current), canonical, options))
}

/// Gives the writer the fields it changed in `managedFields` (a server-side apply made
/// its own entry already). Runs on canonical objects, so defaults are not changes.
fn record_update(rt: &ResourceType, old: Option<&Value>, new: Value, options: &WriteOptions) -> Value {
    if options.server_side_apply {
        return new;
    }
    let now = flotilla_api::timestamp_now();
    crate::apply::record_update(old, new, &options.field_manager, &rt.api_version(), &now)
}

fn encode_continue(revision: u64, key: &str) -> String {
    let token = json!({"rv": revision, "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token \"{token}\": list again without it"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = value.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let key = value.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_continue(42, "/registry/pods/default/a");
        assert_eq!(decode_continue(&token).ok(), Some((42, "/registry/pods/default/a".to_string())));
        assert_eq!(decode_continue("!!!").map_err(|e| e.code()).err(), Some(400));
    }

    #[test]
    fn generation_moves_with_spec_only() {
        let rt = flotilla_api::by_kind("v1", "ConfigMap").expect("configmap");
        let current = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "uid": "u", "generation": 1, "resourceVersion": "5"},
            "data": {"a": "1"}});
        let mut labelled = current.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        labelled["metadata"]["uid"] = json!("forged");
        let next = prepare_update(rt, &current, labelled, Some("default"), "c", None, &WriteOptions::default())
            .expect("valid");
        assert_eq!(next["metadata"]["generation"], 1);
        assert_eq!(next["metadata"]["uid"], "u", "uid is immutable");
        let mut changed = current.clone();
        changed["data"]["a"] = json!("2");
        let next =
            prepare_update(rt, &current, changed, Some("default"), "c", None, &WriteOptions::default()).expect("valid");
        assert_eq!(next["metadata"]["generation"], 2);
    }
}
