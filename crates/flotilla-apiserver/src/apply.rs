//! Server-side apply and field ownership, as kube-apiserver does it with
//! structured-merge-diff, reduced to what Flotilla's kinds need.
//!
//! Every object carries `metadata.managedFields`: one entry per field manager and
//! operation (`Apply` for `kubectl apply --server-side`, `Update` for every other write),
//! each with the set of fields that manager owns, encoded as `fieldsV1`
//! (`{"f:spec":{"f:containers":{"k:{\"name\":\"web\"}":{".":{},"f:image":{}}}}}`).
//!
//! * [`field_set`] computes the fields an applied configuration sets.
//! * [`apply`] merges an applied configuration into the live object: it conflicts with
//!   other managers on fields whose value it would change (unless forced, in which case
//!   it takes them), and removes the fields it applied before but no longer applies when
//!   nobody else owns them.
//! * [`record_update`] gives the fields a PUT/PATCH/POST changed to its manager.
//!
//! Without OpenAPI schemas, the shape of lists comes from the field name: lists keyed by
//! a merge key (containers by `name`, container ports by `containerPort` and `protocol`,
//! ...), `metadata.finalizers` as a set, all other lists atomic; label selectors and
//! key references are atomic maps. The server-owned parts of an object (`apiVersion`,
//! `kind`, `status`, and `metadata.name`, `uid`, `resourceVersion`, ...) are owned by no
//! one, as kube-apiserver strips them from field sets.

// Until the PATCH handler calls into this module.

use flotilla_api::{ApiError, Reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};

const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// A set of field paths, as structured-merge-diff's `fieldpath.Set`: a tree whose edges
/// are path elements (`f:name`, `k:{"name":"web"}`, `v:"value"`, `i:0`) and whose nodes
/// say whether the path itself is in the set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Whether the set holds no path.
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// The `fieldsV1` encoding: `{}` for a leaf, `{".": {}, ...}` for a path that is in
    /// the set and has members below it.
    pub(crate) fn to_json(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            map.insert(element.clone(), child.to_json());
        }
        Value::Object(map)
    }

    /// Parses a `fieldsV1` value (anything that is not an object is the empty set).
    pub(crate) fn from_json(value: &Value) -> FieldSet {
        let mut set = Self::parse_node(value);
        set.member = false;
        set
    }

    fn parse_node(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        let Value::Object(map) = value else { return set };
        set.member = map.is_empty() || map.contains_key(".");
        for (element, child) in map {
            if element != "." {
                set.children.insert(element.clone(), Self::parse_node(child));
            }
        }
        set
    }

    /// The node at `path`, created if missing.
    fn node_mut(&mut self, path: &[String]) -> &mut FieldSet {
        path.iter().fold(self, |node, element| node.children.entry(element.clone()).or_default())
    }

    fn insert(&mut self, path: &[String]) {
        if !path.is_empty() {
            self.node_mut(path).member = true;
        }
    }

    fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (element, child) in &other.children {
            let merged = match self.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(element.clone(), merged);
        }
        out
    }

    /// The paths of `self` that are not in `other`.
    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && !other.member, children: BTreeMap::new() };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// Every path in the set, parents before children, in sorted order.
    fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }
}

/// A field another manager owns with a different value than the applied configuration's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub manager: String,
    /// `Apply` or `Update`: kube-apiserver names an `Update` manager with its API version.
    pub operation: String,
    pub api_version: String,
    /// Set when the manager wrote through a subresource (`status`).
    pub subresource: String,
    /// The path as structured-merge-diff prints it: `.spec.replicas`,
    /// `.spec.template.spec.containers[name="web"].image`.
    pub field: String,
}

impl Conflict {
    /// The manager as kube-apiserver's `printManager` words it.
    fn manager_text(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == UPDATE {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn manager_key(&self) -> (&str, &str, &str, &str) {
        (&self.manager, &self.operation, &self.api_version, &self.subresource)
    }
}

/// The 409 for apply conflicts, worded as kube-apiserver words it (kubectl prints it and
/// suggests `--force-conflicts`).
pub(crate) fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let causes = conflicts
        .iter()
        .map(|c| StatusCause {
            field: Some(c.field.clone()),
            message: Some(format!("conflict with {}", c.manager_text())),
            reason: Some("FieldManagerConflict".to_string()),
        })
        .collect();
    let message = match conflicts {
        [one] => format!("Apply failed with 1 conflict: conflict with {}: {}", one.manager_text(), one.field),
        _ => {
            let mut sorted: Vec<&Conflict> = conflicts.iter().collect();
            sorted.sort_by(|a, b| a.manager_key().cmp(&b.manager_key()));
            let mut lines = Vec::new();
            let mut previous = None;
            for conflict in sorted {
                if previous != Some(conflict.manager_key()) {
                    lines.push(format!("conflicts with {}:", conflict.manager_text()));
                    previous = Some(conflict.manager_key());
                }
                lines.push(format!("- {}", conflict.field));
            }
            format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
        }
    };
    ApiError {
        reason: Reason::Conflict,
        message,
        details: Some(Box::new(StatusDetails { causes: Some(causes), ..StatusDetails::default() })),
    }
}

/// Where a value sits, which decides how it is merged: the name of the field holding it
/// (empty for the object and for list items), the name of its parent's field, and its
/// depth (0 for the object).
#[derive(Clone, Copy, Debug)]
struct Ctx<'a> {
    depth: usize,
    field: &'a str,
    parent: &'a str,
}

const ROOT: Ctx<'static> = Ctx { depth: 0, field: "", parent: "" };

impl<'a> Ctx<'a> {
    fn child(self, field: &'a str) -> Ctx<'a> {
        Ctx { depth: self.depth + 1, field, parent: self.field }
    }

    fn item(self) -> Ctx<'a> {
        Ctx { depth: self.depth + 1, field: "", parent: self.field }
    }

    /// Whether `key` of this map is server-owned and never in a field set.
    fn ignores(self, key: &str) -> bool {
        match (self.depth, self.field) {
            (0, _) => matches!(key, "apiVersion" | "kind" | "status"),
            (1, "metadata") => matches!(
                key,
                "name"
                    | "namespace"
                    | "uid"
                    | "resourceVersion"
                    | "generation"
                    | "creationTimestamp"
                    | "deletionTimestamp"
                    | "deletionGracePeriodSeconds"
                    | "selfLink"
                    | "managedFields"
            ),
            _ => false,
        }
    }

    /// Maps owned whole (`+structType=atomic` / `+mapType=atomic` in Kubernetes' types).
    fn is_atomic_map(self) -> bool {
        matches!(
            self.field,
            "selector"
                | "nodeSelector"
                | "labelSelector"
                | "podSelector"
                | "namespaceSelector"
                | "configMapKeyRef"
                | "secretKeyRef"
                | "fieldRef"
                | "resourceFieldRef"
        )
    }

    /// The key fields of this list, if it is merged item by item.
    fn list_keys(self, items: &[Value]) -> Option<&'static [(&'static str, Option<&'static str>)]> {
        list_keys(self.field, items)
    }

    /// Lists of scalars that are sets (`+listType=set`).
    fn is_set(self) -> bool {
        self.field == "finalizers" && self.parent == "metadata"
    }

    /// The path element of each item of a keyed list or set, or `None` for an atomic list
    /// (including one whose items lack their key or repeat one).
    fn list_elements(self, items: &[Value]) -> Option<Vec<String>> {
        let elements: Vec<String> = if self.is_set() {
            items
                .iter()
                .map(|item| match item {
                    Value::Array(_) | Value::Object(_) => None,
                    scalar => Some(format!("v:{scalar}")),
                })
                .collect::<Option<_>>()?
        } else {
            let keys = self.list_keys(items)?;
            items.iter().map(|item| key_element(item, keys)).collect::<Option<_>>()?
        };
        let mut seen = HashSet::new();
        elements.iter().all(|e| seen.insert(e.as_str())).then_some(elements)
    }
}

/// `k:{"containerPort":80,"protocol":"TCP"}` for an item of a keyed list.
fn key_element(item: &Value, keys: &[(&str, Option<&str>)]) -> Option<String> {
    let item = item.as_object()?;
    let mut fields = BTreeMap::new();
    for (index, (name, default)) in keys.iter().enumerate() {
        match (item.get(*name), default) {
            (Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))), _) => {
                fields.insert(*name, value.clone());
            }
            (None, Some(default)) => {
                fields.insert(*name, Value::String((*default).to_string()));
            }
            // The first key is required; the others may be left out.
            (None, None) if index > 0 => {}
            _ => return None,
        }
    }
    let map: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Some(format!("k:{}", Value::Object(map)))
}

/// How a value is merged and tracked.
enum Kind<'a> {
    /// A map merged key by key.
    Map(&'a Map<String, Value>),
    /// A keyed list or set: each item with its path element.
    List(Vec<(String, &'a Value)>),
    /// A scalar, atomic list or atomic map: owned and replaced whole.
    Leaf,
}

fn kind<'a>(value: &'a Value, ctx: Ctx<'_>) -> Kind<'a> {
    match value {
        Value::Object(map) if !ctx.is_atomic_map() => Kind::Map(map),
        Value::Array(items) => match ctx.list_elements(items) {
            Some(elements) => Kind::List(elements.into_iter().zip(items).collect()),
            None => Kind::Leaf,
        },
        _ => Kind::Leaf,
    }
}

/// The fields `object` sets, as kube-apiserver records for an applier: every leaf, every
/// keyed list item (with its fields), every set member, atomic lists and maps whole.
pub(crate) fn field_set(object: &Value) -> FieldSet {
    collect_fields(object, ROOT)
}

fn collect_fields(value: &Value, ctx: Ctx<'_>) -> FieldSet {
    let mut set = FieldSet::default();
    match kind(value, ctx) {
        Kind::Map(map) => {
            for (key, child) in map {
                if ctx.ignores(key) {
                    continue;
                }
                let mut node = collect_fields(child, ctx.child(key));
                // Leaves, and empty maps and lists, are owned themselves.
                node.member = node.is_empty() && is_leaf_or_empty(child, ctx.child(key));
                if !node.is_empty() {
                    set.children.insert(format!("f:{key}"), node);
                }
            }
        }
        Kind::List(items) => {
            for (element, item) in items {
                let mut node = collect_fields(item, ctx.item());
                node.member = true;
                set.children.insert(element, node);
            }
        }
        Kind::Leaf => {}
    }
    set
}

fn is_leaf_or_empty(value: &Value, ctx: Ctx<'_>) -> bool {
    match kind(value, ctx) {
        Kind::Map(map) => map.is_empty(),
        Kind::List(items) => items.is_empty(),
        Kind::Leaf => true,
    }
}

/// Every path in `value` below it, each a member: what an added or removed subtree
/// contributes to a comparison.
fn all_paths(value: &Value, ctx: Ctx<'_>) -> FieldSet {
    let mut set = FieldSet::default();
    match kind(value, ctx) {
        Kind::Map(map) => {
            for (key, child) in map.iter().filter(|(key, _)| !ctx.ignores(key)) {
                let mut node = all_paths(child, ctx.child(key));
                node.member = true;
                set.children.insert(format!("f:{key}"), node);
            }
        }
        Kind::List(items) => {
            for (element, item) in items {
                let mut node = all_paths(item, ctx.item());
                node.member = true;
                set.children.insert(element, node);
            }
        }
        Kind::Leaf => {}
    }
    set
}

/// What changed between two versions of an object, as structured-merge-diff's
/// `Comparison`: leaves and nodes added, leaves modified, leaves and nodes removed.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares two versions of an object. Creating compares against an object whose
/// top-level maps exist but are empty, as kube-apiserver's empty typed object does, so
/// `metadata` and `spec` are not themselves "added".
fn compare_objects(old: Option<&Value>, new: &Value) -> Comparison {
    let skeleton;
    let old = match old {
        Some(old) => old,
        None => {
            let map: Map<String, Value> = new
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, v)| v.is_object())
                .map(|(k, _)| (k.clone(), json!({})))
                .collect();
            skeleton = Value::Object(map);
            &skeleton
        }
    };
    let mut out = Comparison::default();
    compare(Some(old), Some(new), ROOT, &mut Vec::new(), &mut out);
    out
}

fn compare(old: Option<&Value>, new: Option<&Value>, ctx: Ctx<'_>, path: &mut Vec<String>, out: &mut Comparison) {
    match (old, new) {
        (None, None) => {}
        (None, Some(new)) => {
            let node = out.added.node_mut(path);
            *node = node.union(&all_paths(new, ctx));
            node.member = true;
        }
        (Some(old), None) => {
            let node = out.removed.node_mut(path);
            *node = node.union(&all_paths(old, ctx));
            node.member = true;
        }
        (Some(old), Some(new)) => match (kind(old, ctx), kind(new, ctx)) {
            (Kind::Map(old_map), Kind::Map(new_map)) => {
                let keys = old_map.keys().chain(new_map.keys().filter(|k| !old_map.contains_key(*k)));
                for key in keys.filter(|k| !ctx.ignores(k)) {
                    path.push(format!("f:{key}"));
                    compare(old_map.get(key), new_map.get(key), ctx.child(key), path, out);
                    path.pop();
                }
            }
            (Kind::List(old_items), Kind::List(new_items)) => {
                let old_by: BTreeMap<&str, &Value> = old_items.iter().map(|(e, v)| (e.as_str(), *v)).collect();
                let new_by: BTreeMap<&str, &Value> = new_items.iter().map(|(e, v)| (e.as_str(), *v)).collect();
                let elements =
                    old_items.iter().chain(new_items.iter().filter(|(e, _)| !old_by.contains_key(e.as_str())));
                for (element, _) in elements {
                    path.push(element.clone());
                    let (o, n) = (old_by.get(element.as_str()).copied(), new_by.get(element.as_str()).copied());
                    compare(o, n, ctx.item(), path, out);
                    path.pop();
                }
            }
            _ => {
                if old != new {
                    out.modified.insert(path);
                }
            }
        },
    }
}

/// Merges an applied configuration into the live object: maps key by key, keyed lists
/// item by item (live order, new items appended), everything else replaced.
fn merge(live: &Value, config: &Value, ctx: Ctx<'_>) -> Value {
    match (kind(live, ctx), kind(config, ctx)) {
        (Kind::Map(live_map), Kind::Map(config_map)) => {
            let mut out = live_map.clone();
            for (key, value) in config_map {
                if ctx.ignores(key) && (is_server_set(key) || out.contains_key(key)) {
                    continue;
                }
                let merged = match live_map.get(key) {
                    Some(existing) => merge(existing, value, ctx.child(key)),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Kind::List(live_items), Kind::List(config_items)) => {
            let config_by: BTreeMap<&str, &Value> = config_items.iter().map(|(e, v)| (e.as_str(), *v)).collect();
            let live_elements: HashSet<&str> = live_items.iter().map(|(e, _)| e.as_str()).collect();
            let mut out: Vec<Value> = live_items
                .iter()
                .map(|(element, item)| match config_by.get(element.as_str()) {
                    Some(applied) => merge(item, applied, ctx.item()),
                    None => (*item).clone(),
                })
                .collect();
            out.extend(
                config_items.iter().filter(|(e, _)| !live_elements.contains(e.as_str())).map(|(_, v)| (*v).clone()),
            );
            Value::Array(out)
        }
        _ => config.clone(),
    }
}

/// Fields an applied configuration never sets on an existing object (`apiVersion`,
/// `kind`, `name` and `namespace` are taken from it only when the object lacks them).
fn is_server_set(key: &str) -> bool {
    !matches!(key, "apiVersion" | "kind" | "name" | "namespace")
}

/// Removes the paths of `remove` from `value`, keeping every item or map that holds a
/// path of `owned`; a map or list left empty by the removal goes too.
fn prune(value: &mut Value, remove: &FieldSet, owned: Option<&FieldSet>, ctx: Ctx<'_>) {
    let elements = match &*value {
        Value::Object(_) if ctx.is_atomic_map() => return,
        Value::Object(map) => map.keys().map(|k| format!("f:{k}")).collect(),
        Value::Array(items) => match ctx.list_elements(items) {
            Some(elements) => elements,
            None => return,
        },
        _ => return,
    };
    let mut keep = Vec::with_capacity(elements.len());
    match value {
        Value::Object(map) => {
            for (element, (key, child)) in elements.iter().zip(map.iter_mut()) {
                keep.push(prune_child(child, element, remove, owned, ctx.child(key)));
            }
            let mut flags = keep.into_iter();
            map.retain(|_, _| flags.next().unwrap_or(true));
        }
        Value::Array(items) => {
            for (element, item) in elements.iter().zip(items.iter_mut()) {
                keep.push(prune_child(item, element, remove, owned, ctx.item()));
            }
            let mut flags = keep.into_iter();
            items.retain(|_| flags.next().unwrap_or(true));
        }
        _ => {}
    }
}

/// Prunes one child; returns whether it stays.
fn prune_child(child: &mut Value, element: &str, remove: &FieldSet, owned: Option<&FieldSet>, ctx: Ctx<'_>) -> bool {
    let Some(to_remove) = remove.children.get(element) else { return true };
    let owned = owned.and_then(|o| o.children.get(element));
    if to_remove.member && owned.is_none_or(FieldSet::is_empty) {
        return false;
    }
    let was_empty = is_empty_container(child);
    prune(child, to_remove, owned, ctx);
    was_empty || !is_empty_container(child)
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// A configuration without its `null`s: applying `null` sets nothing.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    /// Whether this entry is the one `manager` writes with `operation`: appliers have one
    /// entry whatever the API version, updaters one per API version.
    fn is(&self, manager: &str, operation: &str, api_version: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.is_empty()
            && (operation == APPLY || self.api_version == api_version)
    }

    fn parse(value: &Value) -> Entry {
        let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        Entry {
            manager: text("manager"),
            operation: text("operation"),
            api_version: text("apiVersion"),
            time: value.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: text("subresource"),
            fields: value.get("fieldsV1").map(FieldSet::from_json).unwrap_or_default(),
        }
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("manager".to_string(), json!(self.manager));
        out.insert("operation".to_string(), json!(self.operation));
        out.insert("apiVersion".to_string(), json!(self.api_version));
        if let Some(time) = &self.time {
            out.insert("time".to_string(), json!(time));
        }
        out.insert("fieldsType".to_string(), json!("FieldsV1"));
        out.insert("fieldsV1".to_string(), self.fields.to_json());
        if !self.subresource.is_empty() {
            out.insert("subresource".to_string(), json!(self.subresource));
        }
        Value::Object(out)
    }

    fn conflicts(&self, fields: &FieldSet) -> impl Iterator<Item = Conflict> + '_ {
        self.fields.intersection(fields).paths().into_iter().map(|path| Conflict {
            manager: self.manager.clone(),
            operation: self.operation.clone(),
            api_version: self.api_version.clone(),
            subresource: self.subresource.clone(),
            field: display_path(&path),
        })
    }
}

fn read_entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|entries| entries.iter().map(Entry::parse).collect())
        .unwrap_or_default()
}

/// Stores `entries` in `object`, in kube-apiserver's order (appliers first, then by time,
/// manager and API version); no entries leaves no `managedFields`.
fn write_entries(object: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (&a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            &b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    let Value::Object(map) = object else { return };
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    let Value::Object(metadata) = metadata else { return };
    if entries.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".to_string(), Value::Array(entries.iter().map(Entry::to_json).collect()));
    }
}

/// A path as structured-merge-diff prints it: `.spec.containers[name="web"].image`,
/// `.metadata.finalizers[="x"]`.
fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(name) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = element.strip_prefix("k:") {
            let fields: Vec<String> = match serde_json::from_str::<Map<String, Value>>(key) {
                Ok(map) => map.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                Err(_) => vec![key.to_string()],
            };
            out.push_str(&format!("[{}]", fields.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        } else if let Some(index) = element.strip_prefix("i:") {
            out.push_str(&format!("[{index}]"));
        } else {
            out.push_str(element);
        }
    }
    out
}

/// Server-side apply of `config` by `manager` onto `live` (`None`: the object does not
/// exist and is created from `config`). Returns the new object with its
/// `metadata.managedFields` updated, or the conflicts with other managers: fields they
/// own that the configuration would change. With `force`, the configuration wins and
/// the other managers lose those fields. Fields this manager applied before but no
/// longer applies are removed from the object unless another manager owns them. Keeps
/// the live `status`; the caller checks names, preconditions and validity.
pub(crate) fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let config = without_nulls(config);
    let mut entries = live.map(read_entries).unwrap_or_default();
    let mut object = match live {
        Some(live) => merge(live, &config, ROOT),
        None => config.clone(),
    };
    let applied = field_set(&config);
    let previous = entries.iter().position(|e| e.is(manager, APPLY, api_version)).map(|i| entries.remove(i));
    if let Some(previous) = &previous {
        let owned = entries.iter().fold(applied.clone(), |owned, e| owned.union(&e.fields));
        let dropped = previous.fields.difference(&owned);
        if !dropped.is_empty() {
            prune(&mut object, &dropped, Some(&owned), ROOT);
        }
    }
    let comparison = compare_objects(live, &object);
    let changed = comparison.added.union(&comparison.modified);
    let mut conflicts: Vec<Conflict> = entries.iter().flat_map(|e| e.conflicts(&changed)).collect();
    if !force && !conflicts.is_empty() {
        conflicts.sort_by(|a, b| a.manager_key().cmp(&b.manager_key()));
        return Err(conflicts);
    }
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&changed).difference(&comparison.removed);
    }
    let time = match &previous {
        Some(previous) if comparison.is_same() => previous.time.clone(),
        _ => Some(now.to_string()),
    };
    entries.push(Entry {
        manager: manager.to_string(),
        operation: APPLY.to_string(),
        api_version: api_version.to_string(),
        time,
        subresource: String::new(),
        fields: applied,
    });
    write_entries(&mut object, entries);
    Ok(object)
}

/// Records a write that is not an apply (create, update or patch by `manager`): the
/// fields that changed between `old` (`None` on create) and `new` go to `manager`'s
/// `Update` entry for `api_version` and are taken from every other manager; entries
/// left empty are dropped. `new`'s own `managedFields` are kept when it has some (a
/// client may edit them), else `old`'s carry over.
pub(crate) fn record_update(old: Option<&Value>, mut new: Value, manager: &str, api_version: &str, now: &str) -> Value {
    let given = read_entries(&new);
    let mut entries = if given.is_empty() { old.map(read_entries).unwrap_or_default() } else { given };
    let comparison = compare_objects(old, &new);
    let changed = comparison.added.union(&comparison.modified);
    for entry in &mut entries {
        entry.fields = entry.fields.difference(&changed).difference(&comparison.removed);
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.is(manager, UPDATE, api_version)) {
            Some(entry) => {
                entry.fields = entry.fields.union(&changed);
                entry.time = Some(now.to_string());
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: UPDATE.to_string(),
                api_version: api_version.to_string(),
                time: Some(now.to_string()),
                subresource: String::new(),
                fields: changed,
            }),
        }
    }
    write_entries(&mut new, entries);
    new
}

/// The key fields of a list of objects merged item by item (`+listType=map`), each
/// with the default it takes when an item omits it, by the list's field name: the merge
/// keys of Kubernetes' types, shared with strategic merge patch.
pub(crate) fn list_keys(field: &str, items: &[Value]) -> Option<&'static [(&'static str, Option<&'static str>)]> {
    const NAME: &[(&str, Option<&str>)] = &[("name", None)];
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => NAME,
        "hostAliases" => &[("ip", None)],
        "volumeMounts" => &[("mountPath", None)],
        "volumeDevices" => &[("devicePath", None)],
        "conditions" => &[("type", None)],
        "ownerReferences" => &[("uid", None)],
        "topologySpreadConstraints" => &[("topologyKey", None), ("whenUnsatisfiable", None)],
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => {
            &[("containerPort", None), ("protocol", Some("TCP"))]
        }
        "ports" => &[("port", None), ("protocol", Some("TCP"))],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-01T00:01:00Z";

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    fn entries(object: &Value) -> Vec<Value> {
        object["metadata"]["managedFields"].as_array().cloned().unwrap_or_default()
    }

    fn entry<'a>(object: &'a Value, manager: &str) -> &'a Value {
        object["metadata"]["managedFields"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["manager"] == manager))
            .unwrap_or(&Value::Null)
    }

    fn owns(object: &Value, manager: &str, pointer: &str) -> bool {
        entry(object, manager)["fieldsV1"].pointer(pointer).is_some()
    }

    #[test]
    fn field_set_of_a_deployment() {
        let set = field_set(&deployment(3, "nginx:1"));
        assert_eq!(
            set.to_json(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                ".": {}, "f:containerPort": {}
                            }}
                        }}}
                    }
                }
            })
        );
        assert_eq!(FieldSet::from_json(&set.to_json()), set);
    }

    #[test]
    fn field_set_sets_and_atomic_lists() {
        let object = json!({"metadata": {"name": "x", "finalizers": ["a/b"], "uid": "u"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "args": ["1", "2"],
                "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}]}}},
            "status": {"replicas": 1}});
        assert_eq!(
            field_set(&object).to_json(),
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a/b\"": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                    ".": {}, "f:args": {}, "f:name": {},
                    "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:valueFrom": {"f:fieldRef": {}}}}
                }}}}}
            })
        );
    }

    #[test]
    fn first_apply_creates_with_an_apply_entry() {
        let config = deployment(3, "nginx:1");
        let created = apply(None, &config, "kubectl", false, "apps/v1", T1).expect("no conflicts");
        assert_eq!(created["spec"], config["spec"]);
        assert_eq!(
            entries(&created),
            vec![json!({
                "manager": "kubectl",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": field_set(&config).to_json()
            })]
        );
    }

    #[test]
    fn reapplying_the_same_config_changes_nothing() {
        let config = deployment(3, "nginx:1");
        let created = apply(None, &config, "kubectl", false, "apps/v1", T1).expect("created");
        let again = apply(Some(&created), &config, "kubectl", false, "apps/v1", T2).expect("applied");
        assert_eq!(again, created);
    }

    #[test]
    fn apply_merges_into_the_live_object() {
        let mut live = apply(None, &deployment(3, "nginx:1"), "a", false, "apps/v1", T1).expect("created");
        live["status"] = json!({"replicas": 3});
        live["metadata"]["uid"] = json!("u-1");
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "s:1"}]}}}});
        let out = apply(Some(&live), &config, "b", false, "apps/v1", T2).expect("no conflicts");
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:1");
        assert_eq!(containers[1], json!({"name": "side", "image": "s:1"}));
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["status"], json!({"replicas": 3}));
        assert_eq!(out["metadata"]["uid"], "u-1");
        assert!(owns(&out, "b", "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"side\"}/f:image"));
        assert!(!owns(&out, "b", "/f:spec/f:replicas"));
    }

    #[test]
    fn a_different_value_conflicts_with_the_owner() {
        let live =
            apply(None, &deployment(3, "nginx:1"), "kubectl-client-side-apply", false, "apps/v1", T1).expect("created");
        let conflicts =
            apply(Some(&live), &deployment(5, "nginx:1"), "kubectl", false, "apps/v1", T2).expect_err("conflict");
        assert_eq!(
            conflicts,
            vec![Conflict {
                manager: "kubectl-client-side-apply".to_string(),
                operation: "Apply".to_string(),
                api_version: "apps/v1".to_string(),
                subresource: String::new(),
                field: ".spec.replicas".to_string(),
            }]
        );
        let err = conflict_error(&conflicts);
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\": .spec.replicas"
        );
        let causes = err.details.and_then(|d| d.causes).unwrap_or_default();
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].reason.as_deref(), Some("FieldManagerConflict"));
        assert_eq!(causes[0].message.as_deref(), Some("conflict with \"kubectl-client-side-apply\""));
        assert_eq!(causes[0].field.as_deref(), Some(".spec.replicas"));
    }

    #[test]
    fn update_managers_are_named_with_their_api_version() {
        let conflict = |manager: &str, field: &str| Conflict {
            manager: manager.to_string(),
            operation: "Update".to_string(),
            api_version: "apps/v1".to_string(),
            subresource: String::new(),
            field: field.to_string(),
        };
        let one = conflict_error(&[conflict("kubectl-client-side-apply", ".spec.replicas")]);
        assert_eq!(
            one.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let causes = one.details.and_then(|d| d.causes).unwrap_or_default();
        assert_eq!(causes[0].message.as_deref(), Some("conflict with \"kubectl-client-side-apply\" using apps/v1"));
        let many = conflict_error(&[
            conflict("x", ".spec.replicas"),
            conflict("a", ".spec.paused"),
            conflict("x", ".spec.template.spec.containers[name=\"web\"].image"),
        ]);
        assert_eq!(
            many.message,
            "Apply failed with 3 conflicts: conflicts with \"a\" using apps/v1:\n- .spec.paused\n\
             conflicts with \"x\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn the_same_value_is_shared_without_conflict() {
        let live = apply(None, &deployment(3, "nginx:1"), "a", false, "apps/v1", T1).expect("created");
        let out = apply(Some(&live), &deployment(3, "nginx:1"), "b", false, "apps/v1", T2).expect("shared");
        assert!(owns(&out, "a", "/f:spec/f:replicas"));
        assert!(owns(&out, "b", "/f:spec/f:replicas"));
        assert_eq!(out["spec"], live["spec"]);
        assert_eq!(entries(&out).len(), 2);
    }

    #[test]
    fn force_takes_ownership() {
        let live = apply(None, &deployment(3, "nginx:1"), "a", false, "apps/v1", T1).expect("created");
        let out = apply(Some(&live), &deployment(5, "nginx:2"), "b", true, "apps/v1", T2).expect("forced");
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2");
        assert!(!owns(&out, "a", "/f:spec/f:replicas"));
        assert!(!owns(&out, "a", "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:image"));
        assert!(owns(&out, "a", "/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"web\"}/f:name"));
        assert!(owns(&out, "b", "/f:spec/f:replicas"));
        // The conflict shows where the image is.
        let conflicts = apply(Some(&out), &deployment(5, "nginx:3"), "a", false, "apps/v1", T2).expect_err("b owns");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, ".spec.template.spec.containers[name=\"web\"].image");
        assert_eq!(conflicts[0].manager, "b");
    }

    #[test]
    fn fields_no_longer_applied_are_removed_unless_owned_by_another() {
        let mut config = deployment(3, "nginx:1");
        config["metadata"]["labels"]["tier"] = json!("front");
        config["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(json!({"name": "side", "image": "s:1"}));
        let live = apply(None, &config, "a", false, "apps/v1", T1).expect("created");
        let shared = apply(Some(&live), &json!({"spec": {"paused": true, "replicas": 3}}), "b", false, "apps/v1", T1)
            .expect("b shares replicas");
        let out = apply(
            Some(&shared),
            &json!({"metadata": {"name": "web", "labels": {"app": "web"}}}),
            "a",
            false,
            "apps/v1",
            T2,
        )
        .expect("applied");
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(out["spec"], json!({"paused": true, "replicas": 3}));
        assert_eq!(entry(&out, "a")["fieldsV1"], json!({"f:metadata": {"f:labels": {"f:app": {}}}}));
        assert_eq!(entry(&out, "a")["time"], T2);

        // Dropping one container removes that container only.
        let live = apply(None, &config, "a", false, "apps/v1", T1).expect("created");
        let out = apply(Some(&live), &deployment(3, "nginx:1"), "a", false, "apps/v1", T2).expect("applied");
        assert_eq!(out["spec"]["template"]["spec"]["containers"].as_array().map(Vec::len), Some(1));
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    }

    #[test]
    fn record_update_moves_ownership_of_changed_fields() {
        let live = apply(None, &deployment(3, "nginx:1"), "kubectl", false, "apps/v1", T1).expect("created");
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        scaled["metadata"].as_object_mut().expect("metadata").remove("managedFields");
        let out = record_update(Some(&live), scaled, "kubectl-scale", "apps/v1", T2);
        assert!(!owns(&out, "kubectl", "/f:spec/f:replicas"));
        assert!(owns(&out, "kubectl", "/f:spec/f:selector"));
        let scale = entry(&out, "kubectl-scale");
        assert_eq!(
            *scale,
            json!({"manager": "kubectl-scale", "operation": "Update", "apiVersion": "apps/v1", "time": T2,
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}})
        );
        // Appliers come first.
        assert_eq!(entries(&out)[0]["operation"], "Apply");

        // Applying another replicas value now conflicts with the updater; the same value does not.
        let conflicts = apply(Some(&out), &deployment(7, "nginx:1"), "kubectl", false, "apps/v1", T2).expect_err("409");
        assert_eq!(
            conflict_error(&conflicts).message,
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
        );
        let shared = apply(Some(&out), &deployment(5, "nginx:1"), "kubectl", false, "apps/v1", T2).expect("same");
        assert!(owns(&shared, "kubectl", "/f:spec/f:replicas"));
        assert!(owns(&shared, "kubectl-scale", "/f:spec/f:replicas"));
        // Forcing takes replicas back and drops the emptied entry.
        let forced = apply(Some(&out), &deployment(7, "nginx:1"), "kubectl", true, "apps/v1", T2).expect("forced");
        assert_eq!(forced["spec"]["replicas"], 7);
        assert_eq!(entries(&forced).len(), 1);
    }

    #[test]
    fn record_update_on_create_and_unchanged_writes() {
        let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"k": "v"}});
        let created = record_update(None, object.clone(), "kubectl-create", "v1", T1);
        assert_eq!(
            entry(&created, "kubectl-create")["fieldsV1"],
            json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        // A PUT that changes nothing keeps the entries (even when the client sent none).
        let same = record_update(Some(&created), object.clone(), "other", "v1", T2);
        assert_eq!(same["metadata"]["managedFields"], created["metadata"]["managedFields"]);
        // Removing a field takes it from its owner.
        let mut edited = object;
        edited["data"] = json!({"k2": "v"});
        let out = record_update(Some(&created), edited, "edit", "v1", T2);
        assert!(!owns(&out, "kubectl-create", "/f:data/f:k"));
        assert!(owns(&out, "edit", "/f:data/f:k2"));
    }

    #[test]
    fn keyed_items_match_with_defaulted_keys_and_sets_merge() {
        let mut live = apply(None, &deployment(3, "nginx:1"), "a", false, "apps/v1", T1).expect("created");
        // The server defaulted the protocol; the configuration leaves it out.
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        live["metadata"]["finalizers"] = json!(["x/one"]);
        let mut config = deployment(3, "nginx:1");
        config["metadata"]["finalizers"] = json!(["x/two"]);
        config["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] = json!("http");
        let out = apply(Some(&live), &config, "a", false, "apps/v1", T2).expect("applied");
        let ports = &out["spec"]["template"]["spec"]["containers"][0]["ports"];
        assert_eq!(*ports, json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["x/one", "x/two"]));
        assert!(owns(&out, "a", "/f:metadata/f:finalizers/v:\"x~1two\""));
    }

    #[test]
    fn display_paths_like_structured_merge_diff() {
        let path = |p: &[&str]| display_path(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            path(&["f:spec", "f:ports", "k:{\"port\":80,\"protocol\":\"TCP\"}", "f:name"]),
            ".spec.ports[port=80,protocol=\"TCP\"].name"
        );
        assert_eq!(path(&["f:metadata", "f:finalizers", "v:\"x\""]), ".metadata.finalizers[=\"x\"]");
    }
}
