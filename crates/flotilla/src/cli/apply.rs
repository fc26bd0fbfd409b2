//! `flotilla apply -f`: create objects from manifests, or update them with a JSON merge
//! patch computed against the last applied configuration, as client-side kubectl apply
//! does.

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use flotilla_api::ResourceType;
use serde_json::{Map, Value};
use std::path::Path;

use super::get::{display_name, is_not_found, meta_str, report_error, resource_path};
use crate::client::Client;

/// The annotation holding the configuration an object was last applied with.
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Debug, Args)]
pub struct ApplyCommand {
    /// A manifest file, a directory of them (*.yaml, *.yml, *.json), or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    #[command(flatten)]
    client: super::ClientFlags,
}

/// One object read from a manifest, with where it came from.
#[derive(Debug)]
pub(super) struct Manifest {
    pub source: String,
    pub object: Value,
}

/// Every object in the given files, directories (their manifests, sorted, not
/// recursively) and `-` (stdin), in order.
pub(super) fn read_manifests(paths: &[String]) -> anyhow::Result<Vec<Manifest>> {
    let mut manifests = Vec::new();
    for path in paths {
        if path == "-" {
            let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
            push_decoded(&mut manifests, "STDIN", &text)?;
            continue;
        }
        let path = Path::new(path);
        if !path.exists() {
            bail!("the path \"{}\" does not exist", path.display());
        }
        let files = if path.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).with_context(|| format!("reading directory {}", path.display()))? {
                let file = entry?.path();
                let manifest_extension =
                    file.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if manifest_extension && file.is_file() {
                    files.push(file);
                }
            }
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            push_decoded(&mut manifests, &file.display().to_string(), &text)?;
        }
    }
    Ok(manifests)
}

fn push_decoded(manifests: &mut Vec<Manifest>, source: &str, text: &str) -> anyhow::Result<()> {
    let objects = flotilla_api::decode_manifests(text).map_err(|e| anyhow!("error parsing {source}: {e}"))?;
    manifests.extend(objects.into_iter().map(|object| Manifest { source: source.into(), object }));
    Ok(())
}

/// Where a manifest's object lives: its kind, namespace (namespaced kinds only) and name.
#[derive(Debug)]
pub(super) struct Located {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: String,
}

/// Finds a manifest object's kind, namespace and name. The namespace is the manifest's,
/// else `-n`'s, else the kubeconfig's; a manifest namespace that contradicts `-n` is an
/// error, as in kubectl.
pub(super) fn locate(object: &Value, flag_namespace: Option<&str>, default_namespace: &str) -> anyhow::Result<Located> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        bail!("unable to decode an object: apiVersion and kind must be set");
    }
    let rt = flotilla_api::by_kind(api_version, kind)
        .ok_or_else(|| anyhow!("no matches for kind \"{kind}\" in version \"{api_version}\""))?;
    let name = meta_str(object, "name").filter(|n| !n.is_empty());
    let name = name.ok_or_else(|| anyhow!("resource name may not be empty"))?.to_string();
    let namespace = if rt.namespaced {
        let own = meta_str(object, "namespace").filter(|n| !n.is_empty());
        if let (Some(own), Some(flag)) = (own, flag_namespace)
            && own != flag
        {
            bail!(
                "the namespace from the provided object \"{own}\" does not match the namespace \
                 \"{flag}\". You must pass '--namespace={own}' to perform this operation."
            );
        }
        Some(own.or(flag_namespace).unwrap_or(default_namespace).to_string())
    } else {
        None
    };
    Ok(Located { rt, namespace, name })
}

/// A JSON merge patch that turns the last applied configuration into `new`: `new`
/// itself, plus `null` for every key of `old` that `new` no longer has (recursing where
/// both sides are maps; lists are replaced whole).
pub(super) fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                let merged = match old.get(key) {
                    Some(previous) => merge_patch(previous, value),
                    None => value.clone(),
                };
                patch.insert(key.clone(), merged);
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        (_, new) => new.clone(),
    }
}

/// Sets (or, with `None`, removes) an annotation, creating `metadata.annotations` if needed.
pub(super) fn set_annotation(object: &mut Value, key: &str, value: Option<&str>) {
    let Some(root) = object.as_object_mut() else { return };
    let metadata = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else { return };
    match value {
        Some(value) => {
            let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
            if !annotations.is_object() {
                *annotations = Value::Object(Map::new());
            }
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(key.into(), Value::String(value.into()));
            }
        }
        None => {
            if let Some(annotations) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
                annotations.remove(key);
            }
        }
    }
}

/// The last applied configuration recorded on a live object (an empty map if none).
fn last_applied_of(live: &Value) -> Value {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| Value::Object(Map::new()))
}

impl ApplyCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        apply_files(&client, &self.files, self.client.namespace.as_deref(), &namespace).await
    }
}

/// Applies every manifest in `files` (files, directories, `-`), printing a line per
/// object as kubectl does; fails at the end if any object failed. `namespace_flag` is
/// `-n` (it must agree with manifests that name a namespace).
pub(crate) async fn apply_files(
    client: &Client,
    files: &[String],
    namespace_flag: Option<&str>,
    default_namespace: &str,
) -> anyhow::Result<()> {
    let manifests = read_manifests(files)?;
    if manifests.is_empty() {
        bail!("no objects passed to apply");
    }
    let mut failures = 0;
    for manifest in manifests {
        match apply_one(client, namespace_flag, default_namespace, manifest.object).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                failures += 1;
                report_error(&e, Some(&manifest.source));
            }
        }
    }
    super::get::finish(failures)
}

/// Creates or patches one object; returns the line kubectl would print.
async fn apply_one(
    client: &Client,
    namespace_flag: Option<&str>,
    default_namespace: &str,
    mut object: Value,
) -> anyhow::Result<String> {
    let Located { rt, namespace, name } = locate(&object, namespace_flag, default_namespace)?;
    if let (Some(ns), Some(metadata)) = (&namespace, object.get_mut("metadata").and_then(Value::as_object_mut)) {
        metadata.insert("namespace".into(), Value::String(ns.clone()));
    }
    // What gets recorded: the manifest without the record itself.
    set_annotation(&mut object, LAST_APPLIED, None);
    let applied = object.clone();
    let record = serde_json::to_string(&applied)?;
    let shown = format!("{}/{name}", display_name(rt));

    let ns = namespace.as_deref();
    let live = client.get(&resource_path(rt, ns, Some(&name))).await?;
    if is_not_found(&live) {
        set_annotation(&mut object, LAST_APPLIED, Some(&record));
        client.post_json(&resource_path(rt, ns, None), &object).await?.ok()?;
        return Ok(format!("{shown} created"));
    }
    let live = live.ok()?;
    let mut patch = merge_patch(&last_applied_of(&live), &applied);
    set_annotation(&mut patch, LAST_APPLIED, Some(&record));
    let path = resource_path(rt, ns, Some(&name));
    let patched = client.patch(&path, "application/merge-patch+json", &patch).await?.ok()?;
    let before = meta_str(&live, "resourceVersion");
    let after = meta_str(&patched, "resourceVersion");
    if before.is_some() && before == after {
        Ok(format!("{shown} unchanged"))
    } else {
        Ok(format!("{shown} configured"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_nulls_removed_keys() {
        let old = json!({"metadata": {"name": "x", "labels": {"a": "1", "b": "2"}},
            "data": {"k": "v", "gone": "x"}, "spec": {"ports": [1, 2]}, "extra": 1});
        let new = json!({"metadata": {"name": "x", "labels": {"a": "1"}},
            "data": {"k": "v2"}, "spec": {"ports": [1]}});
        let patch = merge_patch(&old, &new);
        assert_eq!(
            patch,
            json!({"metadata": {"name": "x", "labels": {"a": "1", "b": null}},
                "data": {"k": "v2", "gone": null}, "spec": {"ports": [1]}, "extra": null})
        );
        // No previous record: the manifest itself.
        assert_eq!(merge_patch(&json!({}), &new), new);
        // A map replaced by a scalar is just the scalar.
        assert_eq!(merge_patch(&json!({"a": {"b": 1}}), &json!({"a": 2})), json!({"a": 2}));
    }

    #[test]
    fn annotations_are_set_and_removed() {
        let mut object = json!({"metadata": {"name": "x"}});
        set_annotation(&mut object, LAST_APPLIED, Some("{}"));
        assert_eq!(object["metadata"]["annotations"][LAST_APPLIED], "{}");
        set_annotation(&mut object, LAST_APPLIED, None);
        assert_eq!(object["metadata"]["annotations"], json!({}));
        let mut bare = json!({});
        set_annotation(&mut bare, "a", Some("b"));
        assert_eq!(bare, json!({"metadata": {"annotations": {"a": "b"}}}));
        let live = json!({"metadata": {"annotations": {LAST_APPLIED: "{\"a\":1}"}}});
        assert_eq!(last_applied_of(&live), json!({"a": 1}));
        assert_eq!(last_applied_of(&json!({})), json!({}));
    }

    #[test]
    fn locating_objects() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let found = locate(&cm, None, "default").expect("located");
        assert_eq!((found.rt.kind, found.namespace.as_deref()), ("ConfigMap", Some("default")));
        let found = locate(&cm, Some("team"), "default").expect("located");
        assert_eq!(found.namespace.as_deref(), Some("team"));
        let own = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "a"}});
        assert_eq!(locate(&own, None, "default").expect("ok").namespace.as_deref(), Some("a"));
        assert!(locate(&own, Some("b"), "default").is_err());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}});
        assert_eq!(locate(&ns, Some("x"), "default").expect("ok").namespace, None);
        let unknown = json!({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}});
        let err = locate(&unknown, None, "default").expect_err("unknown kind");
        assert_eq!(err.to_string(), "no matches for kind \"Widget\" in version \"v1\"");
        let nameless = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
        assert!(locate(&nameless, None, "default").is_err());
    }

    #[test]
    fn directories_are_read_sorted_and_filtered() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let doc = |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n");
        std::fs::write(dir.path().join("b.yaml"), doc("b"))?;
        std::fs::write(dir.path().join("a.yml"), doc("a") + "---\n" + &doc("a2"))?;
        std::fs::write(dir.path().join("c.json"), r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"c"}}"#)?;
        std::fs::write(dir.path().join("notes.txt"), "not a manifest")?;
        let path = dir.path().display().to_string();
        let names: Vec<String> =
            read_manifests(&[path])?.iter().map(|m| meta_str(&m.object, "name").unwrap_or("").to_string()).collect();
        assert_eq!(names, ["a", "a2", "b", "c"]);
        assert!(read_manifests(&["/no/such/path".into()]).is_err());
        Ok(())
    }
}
