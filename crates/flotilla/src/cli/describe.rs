//! `flotilla describe`: one object in detail (metadata, spec, status) with its events.

use base64::Engine as _;
use clap::Args;
use flotilla_api::ResourceType;
use serde_json::{Map, Value};

use super::apply::LAST_APPLIED;
use super::get::{
    Table, age_of_timestamp, event_time, finish, lookup_kind, meta_str, query_string, report_error, resource_path,
};
use crate::client::Client;

/// Where the values of the top-level fields start.
const LABEL_WIDTH: usize = 16;

#[derive(Debug, Args)]
pub struct DescribeCommand {
    /// The kind, or KIND/NAME.
    kind: String,
    /// The objects to describe (every one of the kind, or those `-l` selects, if none).
    names: Vec<String>,
    /// Describe the objects matching this label selector.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    #[command(flatten)]
    client: super::ClientFlags,
}

impl DescribeCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (rt, names) = match self.kind.split_once('/') {
            Some((kind, name)) => {
                let mut names = vec![name.to_string()];
                names.extend(self.names.iter().cloned());
                (lookup_kind(kind)?, names)
            }
            None => (lookup_kind(&self.kind)?, self.names.clone()),
        };
        let (client, namespace) = self.client.connect()?;
        let ns = Some(namespace.as_str());

        let mut objects = Vec::new();
        let mut errors = Vec::new();
        if names.is_empty() {
            let pairs: Vec<(&str, &str)> = self.selector.iter().map(|s| ("labelSelector", s.as_str())).collect();
            let path = resource_path(rt, ns, None) + &query_string(&pairs);
            let list = client.get(&path).await?.ok()?;
            objects.extend(list.get("items").and_then(Value::as_array).into_iter().flatten().cloned());
            if objects.is_empty() {
                eprintln!("No resources found in {namespace} namespace.");
            }
        } else {
            for name in &names {
                match client.get(&resource_path(rt, ns, Some(name))).await?.ok() {
                    Ok(object) => objects.push(object),
                    Err(e) => errors.push(anyhow::Error::from(e)),
                }
            }
        }

        for (index, object) in objects.iter().enumerate() {
            let events = events_for(&client, rt, object).await;
            if index > 0 {
                println!();
            }
            print!("{}", render(rt, object, &events)?);
        }

        if objects.is_empty() && errors.len() == 1 {
            return Err(errors.remove(0));
        }
        for e in &errors {
            report_error(e, None);
        }
        finish(errors.len())
    }
}

/// The events about one object, oldest first; none if they cannot be read.
async fn events_for(client: &Client, rt: &ResourceType, object: &Value) -> Vec<Value> {
    let name = meta_str(object, "name").unwrap_or("");
    let namespace = meta_str(object, "namespace").filter(|_| rt.namespaced);
    let mut fields = vec![format!("involvedObject.name={name}")];
    if let Some(ns) = namespace {
        fields.push(format!("involvedObject.namespace={ns}"));
    }
    fields.push(format!("involvedObject.kind={}", rt.kind));
    let fields = fields.join(",");
    let events_path = match namespace {
        Some(ns) => format!("/api/v1/namespaces/{ns}/events"),
        None => "/api/v1/events".to_string(),
    };
    let path = events_path + &query_string(&[("fieldSelector", &fields)]);
    let list = match client.get(&path).await.and_then(|r| r.ok()) {
        Ok(list) => list,
        Err(_) => return Vec::new(),
    };
    let mut events: Vec<Value> = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    events.sort_by_key(|e| event_time(e).and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_second()));
    events
}

/// A `Label:  value` line, the value starting at [`LABEL_WIDTH`].
fn field(out: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    out.push_str(&format!("{label:<LABEL_WIDTH$}{value}\n"));
}

/// A field whose value is a map, one entry per line, or `<none>`.
fn map_field(out: &mut String, label: &str, map: Option<&Map<String, Value>>, separator: &str) {
    let entries: Vec<String> = map
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.as_str() != LAST_APPLIED)
        .map(|(key, value)| match value.as_str() {
            Some(text) => format!("{key}{separator}{text}"),
            None => format!("{key}{separator}{value}"),
        })
        .collect();
    if entries.is_empty() {
        field(out, label, "<none>");
        return;
    }
    for (index, entry) in entries.iter().enumerate() {
        if index == 0 {
            field(out, label, entry);
        } else {
            out.push_str(&format!("{:LABEL_WIDTH$}{entry}\n", ""));
        }
    }
}

/// `spec` → `Spec`.
fn heading(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A value as YAML, every line indented by `indent` spaces.
fn indented_yaml(value: &Value, indent: usize) -> anyhow::Result<String> {
    let yaml = serde_yaml_ng::to_string(value)?;
    let pad = " ".repeat(indent);
    Ok(yaml.lines().map(|line| format!("{pad}{line}\n")).collect())
}

/// A Secret's data as sizes, never values, as kubectl shows them.
fn secret_sizes(data: &Value) -> Value {
    let sizes = data
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            let encoded = value.as_str().unwrap_or("");
            let size =
                base64::engine::general_purpose::STANDARD.decode(encoded).map_or(encoded.len(), |bytes| bytes.len());
            (key.clone(), Value::String(format!("{size} bytes")))
        })
        .collect();
    Value::Object(sizes)
}

/// The whole description of one object.
fn render(rt: &ResourceType, object: &Value, events: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    let metadata = object.get("metadata");
    let meta_map = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_object);
    field(&mut out, "Name", meta_str(object, "name").unwrap_or(""));
    if rt.namespaced {
        field(&mut out, "Namespace", meta_str(object, "namespace").unwrap_or(""));
    }
    map_field(&mut out, "Labels", meta_map("labels"), "=");
    map_field(&mut out, "Annotations", meta_map("annotations"), ": ");
    field(&mut out, "Created", meta_str(object, "creationTimestamp").unwrap_or("<unknown>"));
    let owners = metadata.and_then(|m| m.get("ownerReferences")).and_then(Value::as_array);
    if let Some(owner) = owners.into_iter().flatten().find(|o| o.get("controller") == Some(&Value::Bool(true))) {
        let kind = owner.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = owner.get("name").and_then(Value::as_str).unwrap_or("");
        field(&mut out, "Controlled By", &format!("{kind}/{name}"));
    }
    if let Some(deleted) = meta_str(object, "deletionTimestamp") {
        field(&mut out, "Terminating", deleted);
    }

    // The rest of the object: spec first, status last, anything else between.
    let rest: Vec<(&String, &Value)> = object
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !matches!(key.as_str(), "apiVersion" | "kind" | "metadata"))
        .collect();
    let rank = |key: &str| match key {
        "spec" => 0,
        "status" => 2,
        _ => 1,
    };
    let mut rest = rest;
    rest.sort_by_key(|(key, _)| rank(key));
    for (key, value) in rest {
        let shown = if rt.kind == "Secret" && key == "data" { secret_sizes(value) } else { value.clone() };
        match &shown {
            Value::Object(map) if map.is_empty() => field(&mut out, &heading(key), "<none>"),
            Value::Array(items) if items.is_empty() => field(&mut out, &heading(key), "<none>"),
            Value::Object(_) | Value::Array(_) => {
                out.push_str(&format!("{}:\n", heading(key)));
                out.push_str(&indented_yaml(&shown, 2)?);
            }
            Value::String(text) => field(&mut out, &heading(key), text),
            other => field(&mut out, &heading(key), &other.to_string()),
        }
    }

    if events.is_empty() {
        field(&mut out, "Events", "<none>");
    } else {
        out.push_str("Events:\n");
        let mut rows = vec![
            ["Type", "Reason", "Age", "From", "Message"].map(String::from).to_vec(),
            ["----", "------", "----", "----", "-------"].map(String::from).to_vec(),
        ];
        rows.extend(events.iter().map(event_row));
        for line in Table::default().render(&rows).lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    Ok(out)
}

/// One event's row: `Normal  Scheduled  5s  scheduler  Successfully assigned…`.
fn event_row(event: &Value) -> Vec<String> {
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut age = age_of_timestamp(event_time(event));
    let count = event.get("count").and_then(Value::as_i64).unwrap_or(1);
    if count > 1 {
        let first = text("/firstTimestamp").or_else(|| text("/eventTime"));
        age = format!("{age} (x{count} over {})", age_of_timestamp(first));
    }
    let from = text("/source/component")
        .or_else(|| text("/reportingComponent"))
        .or_else(|| text("/reportingController"))
        .unwrap_or("");
    vec![
        text("/type").unwrap_or("").to_string(),
        text("/reason").unwrap_or("").to_string(),
        age,
        from.to_string(),
        text("/message").unwrap_or("").trim().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descriptions_show_metadata_spec_status_and_events() -> anyhow::Result<()> {
        let rt = flotilla_api::by_cli_name("deploy").expect("deployments");
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {LAST_APPLIED: "{}"},
                "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 2},
            "status": {"readyReplicas": 1}
        });
        let events = [json!({"type": "Normal", "reason": "ScalingReplicaSet",
            "source": {"component": "deployment-controller"}, "message": "Scaled up to 2",
            "lastTimestamp": "2024-01-01T00:00:00Z"})];
        let text = render(rt, &object, &events)?;
        let expected_start = "\
Name:           web
Namespace:      default
Labels:         app=web
                tier=front
Annotations:    <none>
Created:        2024-01-01T00:00:00Z
Spec:
  replicas: 2
Status:
  readyReplicas: 1
Events:
  Type     Reason              Age";
        assert!(text.starts_with(expected_start), "{text}");
        assert!(text.contains("  ----     ------"), "{text}");
        assert!(text.contains("Normal   ScalingReplicaSet"), "{text}");
        assert!(text.trim_end().ends_with("deployment-controller   Scaled up to 2"), "{text}");
        Ok(())
    }

    #[test]
    fn secrets_show_sizes_and_no_events_is_none() -> anyhow::Result<()> {
        let rt = flotilla_api::by_cli_name("secret").expect("secrets");
        let object = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "type": "Opaque", "data": {"password": "aHVudGVyMg=="}});
        let text = render(rt, &object, &[])?;
        assert!(text.contains("Data:\n  password: 7 bytes\n"), "{text}");
        assert!(text.contains("Type:           Opaque\n"), "{text}");
        assert!(!text.contains("aHVudGVyMg"), "{text}");
        assert!(text.ends_with("Events:         <none>\n"), "{text}");
        Ok(())
    }

    #[test]
    fn repeated_events_show_their_count() {
        let row = event_row(&json!({"type": "Warning", "reason": "BackOff", "count": 3,
            "message": "restarting\n", "source": {"component": "kubelet"}}));
        assert_eq!(row[0], "Warning");
        assert!(row[2].contains("(x3 over"), "{row:?}");
        assert_eq!(row[4], "restarting");
    }
}
