//! The OpenAPI v3 documents kube-apiserver publishes under `/openapi/v3`: an index of
//! every served group-version, and per group-version one document with a path item for
//! each REST path of its kinds and the JSON schemas of their objects.
//!
//! kubectl reads them for two things. Its default `--validate=strict` asks the document
//! of the object's group-version whether a PATCH operation tagged with the kind's
//! `x-kubernetes-group-version-kind` declares a `fieldValidation` query parameter; if one
//! does it sends `?fieldValidation=Strict` and leaves validation to the server.
//! `kubectl explain` finds the kind through the GVK of an operation on the resource's
//! paths, then the schema in `components.schemas` carrying the same GVK, and follows
//! `properties`, `allOf` and `$ref` from there.
//!
//! The schemas come from k8s-openapi's `schemars` implementations (OpenAPI 3 settings, so
//! definitions live in `#/components/schemas/`); the list kinds and the PATCH body type are
//! synthesized here. Every document is built once, on first use, and served as cached
//! JSON bytes.
//!
//! k8s-openapi's schemas carry no `x-kubernetes-patch-strategy`/`-merge-key`, so PATCH
//! operations deliberately do not list `application/strategic-merge-patch+json`: kubectl's
//! client-side apply would otherwise compute its three-way patch from these schemas (lists
//! atomic, no `$patch: delete` for removed containers) instead of from its built-in
//! types, which know every merge key. The server still accepts strategic merge patches.
//!
//! `/openapi/v2` gets an empty gnostic protobuf document ([`v2_document`]): kubectl
//! still reads v2 for `kind: List` manifests and apply's patch fallback, and fails
//! validation outright if the endpoint is missing.

use flotilla_api::{ResourceType, Subresource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

/// Where `$ref`s point: the document's `components.schemas`.
const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";
/// The PATCH request body type kube-apiserver names (any JSON object).
const PATCH_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE_GVK: (&str, &str, &str) = ("autoscaling", "v1", "Scale");

/// What every response body may be encoded as.
const RESPONSE_TYPES: &[&str] = &["application/json", "application/yaml"];
/// What list and watch responses may be encoded as (`watch=true` streams events).
const STREAM_TYPES: &[&str] = &["application/json", "application/json;stream=watch", "application/yaml"];
/// The PATCH bodies the operations declare (see the module doc for the missing strategic
/// merge patch).
const PATCH_TYPES: &[&str] =
    &["application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json"];

/// One group-version's document, serialized once.
struct GroupVersionDocument {
    /// `api/v1`, `apis/apps/v1`: the key in the index.
    path: String,
    json: Vec<u8>,
    /// Hex FNV-1a of `json`: the index's `?hash=` (and a good ETag).
    hash: String,
}

static DOCUMENTS: LazyLock<Vec<GroupVersionDocument>> = LazyLock::new(|| {
    flotilla_api::groups()
        .into_iter()
        .map(|(group, version)| {
            let json = build_document(group, version).to_string().into_bytes();
            let hash = format!("{:016X}", fnv1a(&json));
            GroupVersionDocument { path: group_version_path(group, version), json, hash }
        })
        .collect()
});

/// The `/openapi/v3` index: every served group-version's document and its URL.
pub(crate) fn index() -> Value {
    let paths: Map<String, Value> = DOCUMENTS
        .iter()
        .map(|d| {
            let url = format!("/openapi/v3/{}?hash={}", d.path, d.hash);
            (d.path.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// The JSON OpenAPI v3 document of one group-version, named as in the index (`api/v1`,
/// `apis/apps/v1`; a leading `/` or `/openapi/v3/` is tolerated), or None if none is
/// served there. Serve it as `application/json` whatever the request's Accept says:
/// kubectl asks for `application/json`.
pub(crate) fn document(path: &str) -> Option<&'static [u8]> {
    find(path).map(|d| d.json.as_slice())
}

/// The hash the index puts in a document's URL (`?hash=`), for an `ETag` header.
pub(crate) fn document_hash(path: &str) -> Option<&'static str> {
    find(path).map(|d| d.hash.as_str())
}

/// The `Content-Type` of [`v2_document`]. kubectl asks for the older spelling
/// `...spec.v2@v1.0+protobuf`, but Go's `mime.ParseMediaType` rejects the `@`, so
/// kube-apiserver answers with this one (and so must we).
pub(crate) const V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// An OpenAPI v2 document with no paths or definitions, as gnostic protobuf (the only
/// encoding client-go's `OpenAPISchema()` reads). kubectl still fetches v2 in two places:
/// client-side validation of what v3 cannot vouch for (a `kind: List` manifest; without a
/// v2 document `kubectl apply -f list.yaml` fails "error validating data"), and apply's
/// patch-type fallback. An empty document answers both with "no schema for this kind":
/// the List's items are validated by the server (`fieldValidation=Strict`) and apply uses
/// kubectl's built-in strategic merge metadata.
pub(crate) fn v2_document() -> &'static [u8] {
    static V2: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let version = format!("v{}.{}.0", flotilla_api::KUBERNETES_VERSION.0, flotilla_api::KUBERNETES_VERSION.1);
        let info = [proto_field(1, b"Kubernetes"), proto_field(2, version.as_bytes())].concat();
        // Document: swagger = 1, info = 2, paths = 8 (empty).
        [proto_field(1, b"2.0"), proto_field(2, &info), proto_field(8, b"")].concat()
    });
    V2.as_slice()
}

/// One length-delimited protobuf field.
fn proto_field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push((len & 0x7f) as u8 | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(bytes);
    out
}

fn find(path: &str) -> Option<&'static GroupVersionDocument> {
    let path = path.trim_start_matches('/');
    let path = path.strip_prefix("openapi/v3/").unwrap_or(path).trim_end_matches('/');
    DOCUMENTS.iter().find(|d| d.path == path)
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// 64-bit FNV-1a: stable across builds and platforms, unlike std's `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The k8s-openapi type of a served kind: its schema is added to the generator's
/// definitions and a `$ref` to it returned. None for a kind without a mapping here.
fn kind_schema(generator: &mut SchemaGenerator, rt: &ResourceType) -> Option<schemars::Schema> {
    use k8s_openapi::api::{apps, autoscaling, batch, core, discovery, networking, policy};
    Some(match (rt.group, rt.version, rt.kind) {
        ("", "v1", "Namespace") => generator.subschema_for::<core::v1::Namespace>(),
        ("", "v1", "Pod") => generator.subschema_for::<core::v1::Pod>(),
        ("", "v1", "Service") => generator.subschema_for::<core::v1::Service>(),
        ("", "v1", "Endpoints") => generator.subschema_for::<core::v1::Endpoints>(),
        ("", "v1", "ConfigMap") => generator.subschema_for::<core::v1::ConfigMap>(),
        ("", "v1", "Secret") => generator.subschema_for::<core::v1::Secret>(),
        ("", "v1", "ServiceAccount") => generator.subschema_for::<core::v1::ServiceAccount>(),
        ("", "v1", "Node") => generator.subschema_for::<core::v1::Node>(),
        ("", "v1", "Event") => generator.subschema_for::<core::v1::Event>(),
        ("apps", "v1", "ReplicaSet") => generator.subschema_for::<apps::v1::ReplicaSet>(),
        ("apps", "v1", "Deployment") => generator.subschema_for::<apps::v1::Deployment>(),
        ("apps", "v1", "DaemonSet") => generator.subschema_for::<apps::v1::DaemonSet>(),
        ("batch", "v1", "Job") => generator.subschema_for::<batch::v1::Job>(),
        ("batch", "v1", "CronJob") => generator.subschema_for::<batch::v1::CronJob>(),
        ("discovery.k8s.io", "v1", "EndpointSlice") => generator.subschema_for::<discovery::v1::EndpointSlice>(),
        ("networking.k8s.io", "v1", "Ingress") => generator.subschema_for::<networking::v1::Ingress>(),
        ("networking.k8s.io", "v1", "IngressClass") => generator.subschema_for::<networking::v1::IngressClass>(),
        ("policy", "v1", "PodDisruptionBudget") => generator.subschema_for::<policy::v1::PodDisruptionBudget>(),
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => {
            generator.subschema_for::<autoscaling::v2::HorizontalPodAutoscaler>()
        }
        _ => return None,
    })
}

/// The definition name a `$ref` schema points at.
fn ref_name(schema: &schemars::Schema) -> Option<String> {
    schema.get("$ref")?.as_str()?.strip_prefix(SCHEMA_REF_PREFIX).map(str::to_string)
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

/// A served kind and the names of its schemas.
struct Kind {
    rt: &'static ResourceType,
    /// `io.k8s.api.apps.v1.Deployment`
    schema: String,
    /// `io.k8s.api.apps.v1.DeploymentList`
    list_schema: String,
}

/// The meta schemas operations refer to.
struct MetaSchemas {
    status: String,
    delete_options: String,
    watch_event: String,
    scale: Option<String>,
}

fn build_document(group: &'static str, version: &'static str) -> Value {
    let mut generator = SchemaSettings::openapi3().with(|s| s.meta_schema = None).into_generator();
    let mut kinds = Vec::new();
    for rt in flotilla_api::all_resources().iter().filter(|rt| rt.group == group && rt.version == version) {
        match kind_schema(&mut generator, rt).as_ref().and_then(ref_name) {
            Some(schema) => kinds.push(Kind { rt, list_schema: format!("{schema}List"), schema }),
            None => tracing::warn!(kind = rt.kind, "no OpenAPI schema for a served kind; left out of /openapi/v3"),
        }
    }
    let list_meta = ref_name(&generator.subschema_for::<meta::ListMeta>()).unwrap_or_default();
    let metas = MetaSchemas {
        status: ref_name(&generator.subschema_for::<meta::Status>()).unwrap_or_default(),
        delete_options: ref_name(&generator.subschema_for::<meta::DeleteOptions>()).unwrap_or_default(),
        watch_event: ref_name(&generator.subschema_for::<meta::WatchEvent<Value>>()).unwrap_or_default(),
        scale: kinds
            .iter()
            .any(|k| k.rt.has_subresource(Subresource::Scale))
            .then(|| ref_name(&generator.subschema_for::<k8s_openapi::api::autoscaling::v1::Scale>()))
            .flatten(),
    };
    let mut schemas = generator.take_definitions(true);

    schemas.insert(
        PATCH_SCHEMA.to_string(),
        json!({
            "description": "The body of a PATCH request: a JSON patch, merge patch or apply configuration, \
                            as the request's Content-Type says.",
            "type": "object",
        }),
    );
    for kind in &kinds {
        let (g, v, k) = (kind.rt.group, kind.rt.version, kind.rt.kind);
        if let Some(Value::Object(schema)) = schemas.get_mut(&kind.schema) {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk(g, v, k)]));
        }
        schemas.insert(kind.list_schema.clone(), list_schema(kind, &list_meta));
    }
    let mut tag_meta = |name: &str, gvks: Value| {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            schema.insert("x-kubernetes-group-version-kind".into(), gvks);
        }
    };
    tag_meta(&metas.status, json!([gvk("", "v1", "Status")]));
    let meta_gvks = |kind: &str| {
        let mut gvks = vec![gvk("", "v1", kind)];
        if !group.is_empty() {
            gvks.push(gvk(group, version, kind));
        }
        Value::Array(gvks)
    };
    tag_meta(&metas.delete_options, meta_gvks("DeleteOptions"));
    tag_meta(&metas.watch_event, meta_gvks("WatchEvent"));
    if let Some(scale) = &metas.scale {
        let (g, v, k) = SCALE_GVK;
        tag_meta(scale, json!([gvk(g, v, k)]));
    }

    let mut paths = Map::new();
    for kind in &kinds {
        add_paths(&mut paths, kind, &metas);
    }
    json!({
        "openapi": "3.0.0",
        "info": {
            "title": "Kubernetes",
            "version": format!("v{}.{}.0", flotilla_api::KUBERNETES_VERSION.0, flotilla_api::KUBERNETES_VERSION.1),
        },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

const API_VERSION_DESCRIPTION: &str = "APIVersion defines the versioned schema of this representation of an object. \
     Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.";
const KIND_DESCRIPTION: &str = "Kind is a string value representing the REST resource this object represents. \
     Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase.";

/// `DeploymentList`: what a list request returns.
fn list_schema(kind: &Kind, list_meta: &str) -> Value {
    let rt = kind.rt;
    json!({
        "description": format!("{}List is a list of {} objects.", rt.kind, rt.kind),
        "type": "object",
        "properties": {
            "apiVersion": { "description": API_VERSION_DESCRIPTION, "type": "string" },
            "kind": { "description": KIND_DESCRIPTION, "type": "string" },
            "metadata": {
                "allOf": [schema_ref(list_meta)],
                "description": "Standard list metadata.",
            },
            "items": {
                "description": format!("Items is the list of {} objects.", rt.kind),
                "type": "array",
                "items": schema_ref(&kind.schema),
            },
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [gvk(rt.group, rt.version, &format!("{}List", rt.kind))],
    })
}

fn param(name: &str, location: &str, ty: &str, description: &str) -> Value {
    let mut p = json!({
        "name": name,
        "in": location,
        "description": description,
        "schema": { "type": ty, "uniqueItems": true },
    });
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    param(name, "query", ty, description)
}

fn pretty() -> Value {
    query("pretty", "string", "If 'true', the output is pretty printed.")
}

fn dry_run() -> Value {
    query("dryRun", "string", "When present, modifications are not persisted. The only valid value is All.")
}

fn field_manager() -> Value {
    query(
        "fieldManager",
        "string",
        "The name of the actor making these changes (at most 128 printable characters). \
         Required for apply patches.",
    )
}

fn field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "How the server treats fields of the request body that the schema does not know: Ignore drops them, \
         Warn drops them and returns a warning for each, Strict fails the request. Valid values: Ignore, Warn, \
         Strict.",
    )
}

fn force() -> Value {
    query("force", "boolean", "Re-acquire fields other managers own. Only valid for apply patches.")
}

/// The parameters of list and watch requests.
fn list_params() -> Vec<Value> {
    vec![
        query("allowWatchBookmarks", "boolean", "Ask for BOOKMARK events in a watch."),
        query("continue", "string", "The continue token of the previous page of a paginated list."),
        query("fieldSelector", "string", "Restrict the objects returned by their fields."),
        query("labelSelector", "string", "Restrict the objects returned by their labels."),
        query("limit", "integer", "The maximum number of objects to return; `continue` fetches the rest."),
        query("resourceVersion", "string", "The resource version the list or watch starts from."),
        query("resourceVersionMatch", "string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
        query("sendInitialEvents", "boolean", "Start a watch with the current state, ended by a BOOKMARK."),
        query("timeoutSeconds", "integer", "End the list or watch call after this many seconds."),
        query("watch", "boolean", "Watch for changes instead of listing."),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
        query("orphanDependents", "boolean", "Deprecated: use propagationPolicy. Orphan the dependents if true."),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection runs: Orphan, Background or Foreground.",
        ),
    ]
}

fn content(types: &[&str], schema: &str) -> Value {
    let map: Map<String, Value> =
        types.iter().map(|t| (t.to_string(), json!({ "schema": schema_ref(schema) }))).collect();
    Value::Object(map)
}

fn response(types: &[&str], schema: &str, description: &str) -> Value {
    json!({ "description": description, "content": content(types, schema) })
}

/// One operation: the action, its GVK, its own parameters, an optional request body and
/// the responses by status code.
struct Operation<'a> {
    id: String,
    description: String,
    action: &'static str,
    gvk: Value,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(&'static str, Value)>,
    tag: &'a str,
}

impl Operation<'_> {
    fn into_value(self) -> Value {
        let mut responses: Map<String, Value> = self.responses.into_iter().map(|(c, r)| (c.to_string(), r)).collect();
        responses.insert("401".into(), json!({ "description": "Unauthorized" }));
        let mut op = json!({
            "operationId": self.id,
            "description": self.description,
            "tags": [self.tag],
            "responses": responses,
            "x-kubernetes-action": self.action,
            "x-kubernetes-group-version-kind": self.gvk,
        });
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some(body) = self.body {
            op["requestBody"] = body;
        }
        op
    }
}

/// `AppsV1`, `CoreV1`, `NetworkingV1`: the group-version part of operation IDs.
fn operation_group(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() { "core" } else { rt.group.trim_end_matches(".k8s.io") };
    group.split('.').chain(std::iter::once(rt.version)).map(capitalize).collect()
}

/// `apps_v1`, `core_v1`, `networking_v1`: the tag kube-apiserver groups operations by.
fn tag(rt: &ResourceType) -> String {
    let group = if rt.group.is_empty() { "core" } else { rt.group.trim_end_matches(".k8s.io") };
    format!("{}_{}", group.replace('.', "_"), rt.version)
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// Adds every REST path of one kind: the collection (and, for a namespaced kind, the
/// collection across all namespaces), the object, its subresources, and the watch paths.
fn add_paths(paths: &mut Map<String, Value>, kind: &Kind, metas: &MetaSchemas) {
    let rt = kind.rt;
    let prefix =
        if rt.group.is_empty() { format!("/api/{}", rt.version) } else { format!("/apis/{}/{}", rt.group, rt.version) };
    let scope = if rt.namespaced { "namespaces/{namespace}/" } else { "" };
    let collection = format!("{prefix}/{scope}{}", rt.plural);
    let object = format!("{collection}/{{name}}");
    let namespaced = if rt.namespaced { "Namespaced" } else { "" };
    let gv = operation_group(rt);
    let tag = tag(rt);
    let this_gvk = gvk(rt.group, rt.version, rt.kind);
    let kind_name = rt.kind;

    let name_param = param("name", "path", "string", &format!("name of the {kind_name}"));
    let namespace_param =
        param("namespace", "path", "string", "object name and auth scope, such as for teams and projects");
    let scope_params = |with_name: bool| {
        let mut params = Vec::new();
        if with_name {
            params.push(name_param.clone());
        }
        if rt.namespaced {
            params.push(namespace_param.clone());
        }
        params.push(pretty());
        Value::Array(params)
    };
    let op = |id: String, description: String, action: &'static str| Operation {
        id,
        description,
        action,
        gvk: this_gvk.clone(),
        params: Vec::new(),
        body: None,
        responses: Vec::new(),
        tag: &tag,
    };
    let body = |types: &[&str], schema: &str| json!({ "required": true, "content": content(types, schema) });
    let ok = |schema: &str| response(RESPONSE_TYPES, schema, "OK");
    let created = |schema: &str| response(RESPONSE_TYPES, schema, "Created");
    let accepted = |schema: &str| response(RESPONSE_TYPES, schema, "Accepted");

    // The collection: list, create, deletecollection.
    let list = Operation {
        params: list_params(),
        responses: vec![("200", response(STREAM_TYPES, &kind.list_schema, "OK"))],
        ..op(format!("list{gv}{namespaced}{kind_name}"), format!("list or watch objects of kind {kind_name}"), "list")
    };
    let create = Operation {
        params: vec![dry_run(), field_manager(), field_validation()],
        body: Some(body(&["*/*"], &kind.schema)),
        responses: vec![("200", ok(&kind.schema)), ("201", created(&kind.schema)), ("202", accepted(&kind.schema))],
        ..op(format!("create{gv}{namespaced}{kind_name}"), format!("create a {kind_name}"), "post")
    };
    let mut delete_collection_params = delete_params();
    delete_collection_params
        .extend(list_params().into_iter().filter(|p| p["name"] != "watch" && p["name"] != "allowWatchBookmarks"));
    let delete_collection = Operation {
        params: delete_collection_params,
        body: Some(body(&["*/*"], &metas.delete_options)),
        responses: vec![("200", ok(&metas.status))],
        ..op(
            format!("delete{gv}Collection{namespaced}{kind_name}"),
            format!("delete collection of {kind_name}"),
            "deletecollection",
        )
    };
    paths.insert(
        collection.clone(),
        json!({
            "parameters": scope_params(false),
            "get": list.into_value(),
            "post": create.into_value(),
            "delete": delete_collection.into_value(),
        }),
    );

    // The object: read, replace, patch, delete.
    let patch_op = |id: String, description: String, gvk: Value, schema: &str| Operation {
        gvk,
        params: vec![dry_run(), field_manager(), field_validation(), force()],
        body: Some(body(PATCH_TYPES, PATCH_SCHEMA)),
        responses: vec![("200", ok(schema)), ("201", created(schema))],
        ..op(id, description, "patch")
    };
    let replace_op = |id: String, description: String, gvk: Value, schema: &str| Operation {
        gvk,
        params: vec![dry_run(), field_manager(), field_validation()],
        body: Some(body(&["*/*"], schema)),
        responses: vec![("200", ok(schema)), ("201", created(schema))],
        ..op(id, description, "put")
    };
    let read_op = |id: String, description: String, gvk: Value, schema: &str| Operation {
        gvk,
        responses: vec![("200", ok(schema))],
        ..op(id, description, "get")
    };
    let base = format!("{gv}{namespaced}{kind_name}");
    let delete = Operation {
        params: delete_params(),
        body: Some(body(&["*/*"], &metas.delete_options)),
        responses: vec![("200", ok(&metas.status)), ("202", accepted(&metas.status))],
        ..op(format!("delete{base}"), format!("delete a {kind_name}"), "delete")
    };
    paths.insert(
        object.clone(),
        json!({
            "parameters": scope_params(true),
            "get": read_op(format!("read{base}"), format!("read the specified {kind_name}"), this_gvk.clone(), &kind.schema).into_value(),
            "put": replace_op(format!("replace{base}"), format!("replace the specified {kind_name}"), this_gvk.clone(), &kind.schema).into_value(),
            "patch": patch_op(format!("patch{base}"), format!("partially update the specified {kind_name}"), this_gvk.clone(), &kind.schema).into_value(),
            "delete": delete.into_value(),
        }),
    );

    // Subresources: status has the kind's own schema; scale is autoscaling/v1 Scale.
    for sub in rt.subresources {
        let (suffix, gvk_value, schema) = match sub {
            Subresource::Status => ("Status", this_gvk.clone(), kind.schema.as_str()),
            Subresource::Scale => {
                let Some(scale) = metas.scale.as_deref() else { continue };
                let (g, v, k) = SCALE_GVK;
                ("Scale", gvk(g, v, k), scale)
            }
        };
        let what = format!("{} of the specified {kind_name}", sub.name());
        paths.insert(
            format!("{object}/{}", sub.name()),
            json!({
                "parameters": scope_params(true),
                "get": read_op(format!("read{base}{suffix}"), format!("read {what}"), gvk_value.clone(), schema).into_value(),
                "put": replace_op(format!("replace{base}{suffix}"), format!("replace {what}"), gvk_value.clone(), schema).into_value(),
                "patch": patch_op(format!("patch{base}{suffix}"), format!("partially update {what}"), gvk_value, schema).into_value(),
            }),
        );
    }

    // Watch paths (deprecated in favour of `?watch=true`, still served).
    let watch_prefix = format!("{prefix}/watch/{scope}{}", rt.plural);
    let watch = |id: String, description: String, action: &'static str| {
        Operation {
            params: list_params(),
            responses: vec![("200", response(STREAM_TYPES, &metas.watch_event, "OK"))],
            ..op(id, description, action)
        }
        .into_value()
    };
    paths.insert(
        watch_prefix.clone(),
        json!({
            "parameters": scope_params(false),
            "get": watch(format!("watch{base}List"), format!("watch changes to a list of {kind_name}"), "watchlist"),
        }),
    );
    paths.insert(
        format!("{watch_prefix}/{{name}}"),
        json!({
            "parameters": scope_params(true),
            "get": watch(format!("watch{base}"), format!("watch changes to a {kind_name}"), "watch"),
        }),
    );

    // A namespaced kind's list and watch across all namespaces.
    if rt.namespaced {
        let all = Operation {
            params: list_params(),
            responses: vec![("200", response(STREAM_TYPES, &kind.list_schema, "OK"))],
            ..op(
                format!("list{gv}{kind_name}ForAllNamespaces"),
                format!("list or watch objects of kind {kind_name}"),
                "list",
            )
        };
        paths.insert(format!("{prefix}/{}", rt.plural), json!({ "parameters": [pretty()], "get": all.into_value() }));
        paths.insert(
            format!("{prefix}/watch/{}", rt.plural),
            json!({
                "parameters": [pretty()],
                "get": watch(
                    format!("watch{gv}{kind_name}ListForAllNamespaces"),
                    format!("watch changes to a list of {kind_name}"),
                    "watchlist",
                ),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(path: &str) -> Value {
        let bytes = document(path).unwrap_or_else(|| panic!("no document at {path}"));
        serde_json::from_slice(bytes).expect("valid JSON")
    }

    #[test]
    fn index_lists_every_group_version_and_each_url_resolves() {
        let index = index();
        let paths = index["paths"].as_object().expect("an object");
        let groups = flotilla_api::groups();
        assert_eq!(paths.len(), groups.len());
        for (group, version) in groups {
            let key = group_version_path(group, version);
            let url = paths[&key]["serverRelativeURL"].as_str().expect("a string");
            let (path, hash) = url.split_once("?hash=").expect("a hash");
            assert_eq!(path, format!("/openapi/v3/{key}"));
            assert_eq!(document(path).expect("a document"), document(&key).expect("a document"));
            assert_eq!(Some(hash), document_hash(&key));
            assert_eq!(hash, format!("{:016X}", fnv1a(document(&key).expect("a document"))));
        }
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        assert!(document("apis/apps/v2").is_none());
        assert!(document("").is_none());
    }

    #[test]
    fn documents_are_openapi_3_with_every_kind() {
        for rt in flotilla_api::all_resources() {
            let doc = parsed(&group_version_path(rt.group, rt.version));
            assert_eq!(doc["openapi"], "3.0.0");
            assert_eq!(doc["info"]["title"], "Kubernetes");
            assert_eq!(doc["info"]["version"], "v1.37.0");
            let schemas = doc["components"]["schemas"].as_object().expect("an object");
            let tagged = |kind: &str| {
                schemas.values().any(|s| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|gvks| gvks.contains(&gvk(rt.group, rt.version, kind)))
                })
            };
            assert!(tagged(rt.kind), "{} has no schema with its GVK", rt.kind);
            assert!(tagged(&format!("{}List", rt.kind)), "{}List has no schema with its GVK", rt.kind);
        }
    }

    #[test]
    fn deployment_schema_and_patch_operation() {
        let doc = parsed("apis/apps/v1");
        let schemas = &doc["components"]["schemas"];
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(deployment["x-kubernetes-group-version-kind"], json!([gvk("apps", "v1", "Deployment")]));
        let spec = &deployment["properties"]["spec"];
        let spec_ref = spec["$ref"].as_str().or_else(|| spec["allOf"][0]["$ref"].as_str()).expect("a $ref");
        assert_eq!(spec_ref, "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec");
        assert!(schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"].is_object());
        assert_eq!(
            schemas["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"],
            json!([gvk("apps", "v1", "DeploymentList")])
        );

        let object = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        let patch = &object["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"], gvk("apps", "v1", "Deployment"));
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
        let names: Vec<&str> =
            patch["parameters"].as_array().expect("an array").iter().filter_map(|p| p["name"].as_str()).collect();
        for expected in ["fieldValidation", "fieldManager", "dryRun", "force"] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        let bodies = patch["requestBody"]["content"].as_object().expect("an object");
        assert!(bodies.contains_key("application/merge-patch+json"));
        assert!(bodies.contains_key("application/json-patch+json"));
        assert!(bodies.contains_key("application/apply-patch+yaml"));
        let path_params: Vec<&str> =
            object["parameters"].as_array().expect("an array").iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(path_params, ["name", "namespace", "pretty"]);

        let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(scale["patch"]["x-kubernetes-group-version-kind"], gvk("autoscaling", "v1", "Scale"));
        assert!(schemas["io.k8s.api.autoscaling.v1.Scale"].is_object());
        let status = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"];
        assert_eq!(status["patch"]["x-kubernetes-group-version-kind"], gvk("apps", "v1", "Deployment"));

        let all = &doc["paths"]["/apis/apps/v1/deployments"]["get"];
        assert_eq!(all["x-kubernetes-action"], "list");
        assert_eq!(all["x-kubernetes-group-version-kind"], gvk("apps", "v1", "Deployment"));
        assert_eq!(
            all["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
        );
    }

    #[test]
    fn every_patch_operation_declares_field_validation() {
        // kubectl looks at the first PATCH it meets with the kind's GVK, in map order.
        for (group, version) in flotilla_api::groups() {
            let doc = parsed(&group_version_path(group, version));
            for (path, item) in doc["paths"].as_object().expect("an object") {
                let Some(patch) = item.get("patch") else { continue };
                let params = patch["parameters"].as_array().expect("an array");
                assert!(params.iter().any(|p| p["name"] == "fieldValidation"), "{path}");
                assert!(patch["x-kubernetes-group-version-kind"].is_object(), "{path}");
            }
        }
    }

    #[test]
    fn cluster_scoped_and_core_paths() {
        let doc = parsed("api/v1");
        let paths = doc["paths"].as_object().expect("an object");
        assert!(paths.contains_key("/api/v1/nodes/{name}/status"));
        assert!(paths.contains_key("/api/v1/namespaces/{name}"));
        assert!(paths.contains_key("/api/v1/pods"));
        assert!(paths.contains_key("/api/v1/namespaces/{namespace}/pods/{name}"));
        assert!(paths.contains_key("/api/v1/watch/namespaces/{namespace}/pods"));
        assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/nodes"));
        assert_eq!(paths["/api/v1/nodes"]["get"]["operationId"], "listCoreV1Node");
        assert_eq!(paths["/api/v1/pods"]["get"]["operationId"], "listCoreV1PodForAllNamespaces");
        assert_eq!(
            paths["/api/v1/namespaces/{namespace}/configmaps"]["delete"]["x-kubernetes-action"],
            "deletecollection"
        );
        assert_eq!(
            doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]["group"],
            ""
        );
        let ingress = parsed("apis/networking.k8s.io/v1");
        assert_eq!(
            ingress["paths"]["/apis/networking.k8s.io/v1/ingressclasses/{name}"]["patch"]["operationId"],
            "patchNetworkingV1IngressClass"
        );
    }

    fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_within_its_document() {
        for (group, version) in flotilla_api::groups() {
            let path = group_version_path(group, version);
            let doc = parsed(&path);
            let schemas = doc["components"]["schemas"].as_object().expect("an object");
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            assert!(refs.len() > 10, "{path}");
            for r in refs {
                let name = r.strip_prefix(SCHEMA_REF_PREFIX).unwrap_or_else(|| panic!("{path}: foreign ref {r}"));
                assert!(schemas.contains_key(name), "{path}: dangling ref {r}");
            }
            let text = String::from_utf8(document(&path).expect("a document").to_vec()).expect("UTF-8");
            assert!(!text.contains("#/$defs") && !text.contains("#/definitions"), "{path}");
        }
    }

    #[test]
    fn v2_document_is_an_empty_gnostic_document() {
        let mut expected = vec![0x0a, 3];
        expected.extend_from_slice(b"2.0");
        expected.extend_from_slice(&[0x12, 21, 0x0a, 10]);
        expected.extend_from_slice(b"Kubernetes");
        expected.extend_from_slice(&[0x12, 7]);
        expected.extend_from_slice(b"v1.37.0");
        expected.extend_from_slice(&[0x42, 0]);
        assert_eq!(v2_document(), expected.as_slice());
        assert_eq!(proto_field(1, &[0; 300])[..3], [0x0a, 0xac, 0x02]);
    }

    #[test]
    fn documents_are_stable() {
        let (group, version) = ("apps", "v1");
        let again = build_document(group, version).to_string();
        assert_eq!(again.as_bytes(), document("apis/apps/v1").expect("a document"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
