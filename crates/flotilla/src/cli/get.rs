//! `flotilla get`: list objects or show some by name, as a table, YAML, JSON or names,
//! optionally watching for changes.
//!
//! This file also holds what the other client commands share: REST paths, query
//! strings, kubectl-style display names, ages and aligned tables.

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, ValueEnum};
use flotilla_api::ResourceType;
use http::StatusCode;
use serde_json::{Map, Value, json};
use std::io::Write as _;

use crate::client::{Client, LineReader, Response};

/// The REST path of a kind's collection, or of one object when `name` is given. The
/// namespace is used only for namespaced kinds.
pub(super) fn resource_path(rt: &ResourceType, ns: Option<&str>, name: Option<&str>) -> String {
    flotilla_client::rest_path(rt, ns, name, None)
}

/// `?a=b&c=d` with every value percent-encoded; empty when there are no pairs.
pub(super) fn query_string(pairs: &[(impl AsRef<str>, impl AsRef<str>)]) -> String {
    let mut query = String::new();
    for (key, value) in pairs {
        query.push(if query.is_empty() { '?' } else { '&' });
        query.push_str(&percent_encode(key.as_ref()));
        query.push('=');
        query.push_str(&percent_encode(value.as_ref()));
    }
    query
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The name kubectl prints for a kind: `deployment.apps`, or `configmap` in the core group.
pub(super) fn display_name(rt: &ResourceType) -> String {
    if rt.group.is_empty() { rt.singular() } else { format!("{}.{}", rt.singular(), rt.group) }
}

/// A kind named on the command line, or kubectl's error for an unknown one.
pub(super) fn lookup_kind(name: &str) -> anyhow::Result<&'static ResourceType> {
    flotilla_api::by_cli_name(name).ok_or_else(|| anyhow!("the server doesn't have a resource type \"{name}\""))
}

/// Prints an error the way kubectl does: server errors as they are, others after
/// `error: ` and naming the manifest they came from, if any.
pub(super) fn report_error(error: &anyhow::Error, source: Option<&str>) {
    let message = format!("{error:#}");
    match source {
        _ if message.starts_with("Error from server") => eprintln!("{message}"),
        Some(source) => eprintln!("error: {message} (from {source})"),
        None => eprintln!("error: {message}"),
    }
}

/// The end of a command that reported each failure as it went.
pub(super) fn finish(failures: usize) -> anyhow::Result<()> {
    match failures {
        0 => Ok(()),
        1 => bail!("1 object failed (see above)"),
        n => bail!("{n} objects failed (see above)"),
    }
}

/// A string field of `metadata`.
pub(super) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Seconds since an RFC 3339 timestamp, if it parses.
pub(super) fn seconds_since(timestamp: &str) -> Option<i64> {
    let then = timestamp.parse::<jiff::Timestamp>().ok()?;
    Some(jiff::Timestamp::now().as_second() - then.as_second())
}

/// A duration as kubectl prints ages: `45s`, `2m30s`, `17m`, `5h3m`, `3d4h`, `1y20d`.
pub(super) fn format_age(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    let years = days / 365;
    let pair = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 { format!("{big}{big_unit}") } else { format!("{big}{big_unit}{small}{small_unit}") }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        pair(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        pair(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        pair(days, "d", hours % 24, "h")
    } else if days < 365 * 2 {
        format!("{days}d")
    } else if days < 365 * 8 {
        pair(years, "y", days % 365, "d")
    } else {
        format!("{years}y")
    }
}

/// The age of a timestamp, `<unknown>` when there is none.
pub(super) fn age_of_timestamp(timestamp: Option<&str>) -> String {
    timestamp.and_then(seconds_since).map(format_age).unwrap_or_else(|| "<unknown>".into())
}

/// An object's AGE column.
pub(super) fn age(object: &Value) -> String {
    age_of_timestamp(meta_str(object, "creationTimestamp"))
}

/// Column widths that only grow, so rows printed later (watch events) line up with the
/// rows printed first.
#[derive(Debug, Default)]
pub(super) struct Table {
    widths: Vec<usize>,
}

impl Table {
    /// Widens the columns to fit `rows`.
    pub(super) fn fit(&mut self, rows: &[Vec<String>]) {
        for row in rows {
            for (index, cell) in row.iter().enumerate() {
                let width = cell.chars().count();
                match self.widths.get_mut(index) {
                    Some(w) => *w = (*w).max(width),
                    None => self.widths.push(width),
                }
            }
        }
    }

    /// One row, its cells padded and separated by three spaces (the last unpadded).
    pub(super) fn line(&self, row: &[String]) -> String {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            if index + 1 < row.len() {
                let width = self.widths.get(index).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        line
    }

    /// Fits and renders `rows`, one line each.
    pub(super) fn render(&mut self, rows: &[Vec<String>]) -> String {
        self.fit(rows);
        rows.iter().map(|row| self.line(row) + "\n").collect()
    }
}

/// JSON with four-space indentation, as kubectl prints it.
pub(super) fn to_pretty_json(value: &Value) -> anyhow::Result<String> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(value, &mut serializer)?;
    Ok(String::from_utf8(out)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

#[derive(Debug, Args)]
pub struct GetCommand {
    /// The kind(s): `pods`, `deploy,svc`, `all`, or KIND/NAME.
    kinds: String,
    /// Names of the objects to show (all of them when none is given).
    names: Vec<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// A label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// A field selector (`status.phase=Running`).
    #[arg(long)]
    field_selector: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Output>,
    /// After listing, keep watching and print every change.
    #[arg(short = 'w', long)]
    watch: bool,
    #[command(flatten)]
    client: super::ClientFlags,
}

/// What one kind contributed: its objects and the resourceVersion to watch from.
#[derive(Debug)]
struct Fetched {
    rt: &'static ResourceType,
    items: Vec<Value>,
    resource_version: String,
}

impl GetCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (kinds, names) = self.targets()?;
        let (client, namespace) = self.client.connect()?;
        let ns = (!self.all_namespaces).then_some(namespace.as_str());
        if self.watch && kinds.len() != 1 {
            bail!("you may only specify a single resource type to watch");
        }

        let mut fetched = Vec::new();
        let mut failures = Vec::new();
        for rt in &kinds {
            match self.fetch(&client, rt, ns, &names).await {
                Ok((f, errors)) => {
                    fetched.push(f);
                    failures.extend(errors);
                }
                Err(e) => failures.push(e),
            }
        }

        let total: usize = fetched.iter().map(|f| f.items.len()).sum();
        let mut table = Table::default();
        let mut out = String::new();
        let prefix_names = kinds.len() > 1;
        match self.output {
            Some(Output::Json | Output::Yaml) => {
                let value = match fetched.as_slice() {
                    [one] if !names.is_empty() && one.items.len() == 1 && names.len() == 1 => one.items[0].clone(),
                    _ => json!({
                        "apiVersion": "v1",
                        "kind": "List",
                        "items": fetched.iter().flat_map(|f| f.items.clone()).collect::<Vec<_>>(),
                        "metadata": {"resourceVersion": ""},
                    }),
                };
                if !(self.watch && total == 0) {
                    out.push_str(&self.encode(&value)?);
                }
            }
            Some(Output::Name) => {
                for f in &fetched {
                    for item in &f.items {
                        out.push_str(&qualified_name(f.rt, item));
                        out.push('\n');
                    }
                }
            }
            Some(Output::Wide) | None => {
                // A watch shows the header even before the first object appears.
                for f in fetched.iter().filter(|f| !f.items.is_empty() || self.watch) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    let mut rows = vec![self.header(f.rt)];
                    rows.extend(f.items.iter().map(|item| self.row(f.rt, item, prefix_names)));
                    // Each kind gets its own alignment, as kubectl prints them.
                    table = Table::default();
                    out.push_str(&table.render(&rows));
                }
            }
        }
        print!("{out}");
        let _ = std::io::stdout().flush();

        if total == 0 && failures.is_empty() && names.is_empty() && !self.watch {
            eprintln!("{}", no_resources_message(&kinds, ns));
        }

        if self.watch
            && let Some(f) = fetched.first()
        {
            let rv = f.resource_version.clone();
            self.watch(&client, f.rt, ns, names.first().map(String::as_str), &rv, table).await?;
        }

        match failures.len() {
            0 => Ok(()),
            1 if fetched.iter().all(|f| f.items.is_empty()) => Err(failures.remove(0)),
            _ => {
                for e in &failures {
                    report_error(e, None);
                }
                finish(failures.len())
            }
        }
    }

    /// The kinds and names asked for: `KIND[,KIND] [NAME...]` or `KIND/NAME ...`.
    fn targets(&self) -> anyhow::Result<(Vec<&'static ResourceType>, Vec<String>)> {
        if let Some((kind, name)) = self.kinds.split_once('/') {
            let rt = lookup_kind(kind)?;
            let mut names = vec![name.to_string()];
            for extra in &self.names {
                match extra.split_once('/') {
                    Some((k, n)) if lookup_kind(k)?.kind == rt.kind => names.push(n.to_string()),
                    _ => bail!(
                        "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"
                    ),
                }
            }
            return Ok((vec![rt], names));
        }
        let mut kinds: Vec<&'static ResourceType> = Vec::new();
        for name in self.kinds.split(',').filter(|k| !k.is_empty()) {
            if name == "all" {
                kinds.extend(flotilla_api::all_resources().iter().filter(|r| r.categories.contains(&"all")));
            } else {
                kinds.push(lookup_kind(name)?);
            }
        }
        if kinds.is_empty() {
            bail!("you must specify the type of resource to get");
        }
        if !self.names.is_empty() && kinds.len() > 1 {
            bail!("names can only be given with a single resource type");
        }
        Ok((kinds, self.names.clone()))
    }

    /// The objects of one kind: the named ones, or a (selected) list.
    async fn fetch(
        &self,
        client: &Client,
        rt: &'static ResourceType,
        ns: Option<&str>,
        names: &[String],
    ) -> anyhow::Result<(Fetched, Vec<anyhow::Error>)> {
        if names.is_empty() {
            let path = resource_path(rt, ns, None) + &query_string(&self.selectors(None));
            let list = client.get(&path).await?.ok()?;
            let resource_version = list.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("");
            let items = list_items(rt, &list);
            let fetched = Fetched { rt, items, resource_version: resource_version.to_string() };
            return Ok((fetched, Vec::new()));
        }
        // Named objects need a namespace even with -A, as in kubectl.
        let ns = match ns {
            Some(ns) => ns.to_string(),
            None => self.named_namespace(client),
        };
        let mut items = Vec::new();
        let mut errors = Vec::new();
        let mut resource_version = String::new();
        for name in names {
            match client.get(&resource_path(rt, Some(&ns), Some(name))).await?.ok() {
                Ok(object) => {
                    resource_version = meta_str(&object, "resourceVersion").unwrap_or("").into();
                    items.push(object);
                }
                Err(e) => errors.push(e.into()),
            }
        }
        Ok((Fetched { rt, items, resource_version }, errors))
    }

    /// The label and field selectors as query parameters (plus `metadata.name` for a
    /// watch on one object).
    fn selectors(&self, name: Option<&str>) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(labels) = self.selector.as_deref().filter(|s| !s.is_empty()) {
            pairs.push(("labelSelector", labels.to_string()));
        }
        let mut fields: Vec<String> = Vec::new();
        if let Some(f) = self.field_selector.as_deref().filter(|s| !s.is_empty()) {
            fields.push(f.to_string());
        }
        if let Some(name) = name {
            fields.push(format!("metadata.name={name}"));
        }
        if !fields.is_empty() {
            pairs.push(("fieldSelector", fields.join(",")));
        }
        pairs
    }

    /// The namespace of objects asked for by name: `-n`, else the kubeconfig's.
    fn named_namespace(&self, client: &Client) -> String {
        self.client.namespace.clone().unwrap_or_else(|| client.default_namespace.clone())
    }

    fn encode(&self, value: &Value) -> anyhow::Result<String> {
        match self.output {
            Some(Output::Json) => Ok(to_pretty_json(value)? + "\n"),
            _ => Ok(serde_yaml_ng::to_string(value)?),
        }
    }

    fn wide(&self) -> bool {
        self.output == Some(Output::Wide)
    }

    fn header(&self, rt: &ResourceType) -> Vec<String> {
        let mut header: Vec<String> = Vec::new();
        if self.all_namespaces && rt.namespaced {
            header.push("NAMESPACE".into());
        }
        header.extend(columns(rt, self.wide()).iter().map(|c| c.to_string()));
        header
    }

    fn row(&self, rt: &ResourceType, object: &Value, qualify: bool) -> Vec<String> {
        let mut row = Vec::new();
        if self.all_namespaces && rt.namespaced {
            row.push(meta_str(object, "namespace").unwrap_or("").to_string());
        }
        let mut cells = cells(rt, object, self.wide());
        if qualify && let Some(name) = cells.first_mut() {
            *name = format!("{}/{name}", display_name(rt));
        }
        row.extend(cells);
        row
    }

    /// Follows a watch from `resource_version`, printing one entry per event.
    async fn watch(
        &self,
        client: &Client,
        rt: &'static ResourceType,
        ns: Option<&str>,
        name: Option<&str>,
        resource_version: &str,
        mut table: Table,
    ) -> anyhow::Result<()> {
        let ns = match (name, ns) {
            (Some(_), None) => Some(self.named_namespace(client)),
            (_, ns) => ns.map(str::to_string),
        };
        let mut pairs: Vec<(&str, String)> = vec![("watch", "1".into())];
        if !resource_version.is_empty() {
            pairs.push(("resourceVersion", resource_version.to_string()));
        }
        pairs.extend(self.selectors(name));
        let path = resource_path(rt, ns.as_deref(), None) + &query_string(&pairs);

        let (status, body) = client.stream(&path).await?;
        if !status.is_success() {
            let bytes = http_body_util::BodyExt::collect(body).await.context("reading the watch response")?.to_bytes();
            Response { status, headers: Default::default(), body: bytes }.ok()?;
            bail!("the watch failed with status {status}");
        }
        let mut reader = LineReader::new(body);
        let mut printed_header = !table.widths.is_empty();
        loop {
            let event = tokio::select! {
                event = reader.next() => event?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            let Some(event) = event else { return Ok(()) };
            let object = event.get("object").cloned().unwrap_or(Value::Null);
            match event.get("type").and_then(Value::as_str) {
                Some("BOOKMARK") => continue,
                Some("ERROR") => {
                    let message = object.get("message").and_then(Value::as_str).unwrap_or("");
                    let reason = object.get("reason").and_then(Value::as_str).unwrap_or("Unknown");
                    bail!("Error from server ({reason}): {message}");
                }
                _ => {}
            }
            let text = match self.output {
                Some(Output::Json) => to_pretty_json(&object)? + "\n",
                Some(Output::Yaml) => format!("---\n{}", serde_yaml_ng::to_string(&object)?),
                Some(Output::Name) => qualified_name(rt, &object) + "\n",
                Some(Output::Wide) | None => {
                    let mut rows = Vec::new();
                    if !printed_header {
                        rows.push(self.header(rt));
                        printed_header = true;
                    }
                    rows.push(self.row(rt, &object, false));
                    table.render(&rows)
                }
            };
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}

/// A list's items, each given its apiVersion and kind if the server left them out.
fn list_items(rt: &ResourceType, list: &Value) -> Vec<Value> {
    let mut items: Vec<Value> = list.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    for item in &mut items {
        if let Some(map) = item.as_object_mut() {
            map.entry("apiVersion").or_insert_with(|| json!(rt.api_version()));
            map.entry("kind").or_insert_with(|| json!(rt.kind));
        }
    }
    items
}

/// `deployment.apps/web`.
pub(super) fn qualified_name(rt: &ResourceType, object: &Value) -> String {
    format!("{}/{}", display_name(rt), meta_str(object, "name").unwrap_or(""))
}

fn no_resources_message(kinds: &[&ResourceType], ns: Option<&str>) -> String {
    match ns {
        Some(ns) if kinds.iter().any(|r| r.namespaced) => {
            format!("No resources found in {ns} namespace.")
        }
        _ => "No resources found".into(),
    }
}

/// The table columns of a kind (after NAMESPACE).
fn columns(rt: &ResourceType, wide: bool) -> Vec<&'static str> {
    let (mut columns, extra): (Vec<&str>, &[&str]) = match (rt.group, rt.kind) {
        ("", "Pod") => (vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"], &["IP", "NODE"]),
        ("apps", "Deployment") => {
            (vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], &["CONTAINERS", "IMAGES", "SELECTOR"])
        }
        ("apps", "ReplicaSet") => {
            (vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"], &["CONTAINERS", "IMAGES", "SELECTOR"])
        }
        ("apps", "DaemonSet") => (
            vec!["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        ("batch", "Job") => {
            (vec!["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"], &["CONTAINERS", "IMAGES", "SELECTOR"])
        }
        ("batch", "CronJob") => (
            vec!["NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"],
            &["CONTAINERS", "IMAGES", "SELECTOR"],
        ),
        ("", "Service") => (vec!["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], &["SELECTOR"]),
        ("", "ConfigMap") => (vec!["NAME", "DATA", "AGE"], &[]),
        ("", "Secret") => (vec!["NAME", "TYPE", "DATA", "AGE"], &[]),
        ("", "Namespace") => (vec!["NAME", "STATUS", "AGE"], &[]),
        ("", "Node") => (vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"], &["INTERNAL-IP"]),
        ("", "Event") => (vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[]),
        ("networking.k8s.io", "Ingress") => (vec!["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], &[]),
        _ => (vec!["NAME", "AGE"], &[]),
    };
    if wide {
        columns.extend_from_slice(extra);
    }
    columns
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn array<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn none_if_empty(text: String) -> String {
    if text.is_empty() { "<none>".into() } else { text }
}

/// The table cells of one object, matching [`columns`].
fn cells(rt: &ResourceType, o: &Value, wide: bool) -> Vec<String> {
    let name = meta_str(o, "name").unwrap_or("").to_string();
    let (mut cells, extra): (Vec<String>, Vec<String>) = match (rt.group, rt.kind) {
        ("", "Pod") => (
            pod_cells(o),
            vec![
                text(o, "/status/podIP").unwrap_or("<none>").into(),
                text(o, "/spec/nodeName").unwrap_or("<none>").into(),
            ],
        ),
        ("apps", "Deployment") => (
            vec![
                format!("{}/{}", int(o, "/status/readyReplicas"), replicas(o)),
                int(o, "/status/updatedReplicas").to_string(),
                int(o, "/status/availableReplicas").to_string(),
            ],
            workload_wide(o, "/spec/template/spec/containers"),
        ),
        ("apps", "ReplicaSet") => (
            vec![
                replicas(o).to_string(),
                int(o, "/status/replicas").to_string(),
                int(o, "/status/readyReplicas").to_string(),
            ],
            workload_wide(o, "/spec/template/spec/containers"),
        ),
        ("apps", "DaemonSet") => (
            [
                "desiredNumberScheduled",
                "currentNumberScheduled",
                "numberReady",
                "updatedNumberScheduled",
                "numberAvailable",
            ]
            .iter()
            .map(|field| int(o, &format!("/status/{field}")).to_string())
            .collect(),
            workload_wide(o, "/spec/template/spec/containers"),
        ),
        ("batch", "Job") => (job_cells(o), workload_wide(o, "/spec/template/spec/containers")),
        ("batch", "CronJob") => (
            vec![
                text(o, "/spec/schedule").unwrap_or("").into(),
                bool_word(o.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false)),
                array(o, "/status/active").len().to_string(),
                text(o, "/status/lastScheduleTime")
                    .map(|t| age_of_timestamp(Some(t)))
                    .unwrap_or_else(|| "<none>".into()),
            ],
            workload_wide(o, "/spec/jobTemplate/spec/template/spec/containers"),
        ),
        ("", "Service") => (service_cells(o), vec![selector_text(o.pointer("/spec/selector"))]),
        ("", "ConfigMap") => {
            let count = |field| o.get(field).and_then(Value::as_object).map_or(0, Map::len);
            (vec![(count("data") + count("binaryData")).to_string()], vec![])
        }
        ("", "Secret") => (
            vec![
                text(o, "/type").unwrap_or("Opaque").into(),
                o.get("data").and_then(Value::as_object).map_or(0, Map::len).to_string(),
            ],
            vec![],
        ),
        ("", "Namespace") => (vec![text(o, "/status/phase").unwrap_or("Active").into()], vec![]),
        ("", "Node") => (node_cells(o), vec![node_internal_ip(o)]),
        ("", "Event") => return event_cells(o),
        ("networking.k8s.io", "Ingress") => (ingress_cells(o), vec![]),
        _ => (vec![], vec![]),
    };
    cells.insert(0, name);
    if rt.kind == "Node" {
        // Nodes put AGE before VERSION.
        let version = cells.pop().unwrap_or_default();
        cells.push(age(o));
        cells.push(version);
    } else {
        cells.push(age(o));
    }
    if wide {
        cells.extend(extra);
    }
    cells
}

fn replicas(o: &Value) -> i64 {
    o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

fn bool_word(b: bool) -> String {
    if b { "True".into() } else { "False".into() }
}

fn pod_cells(o: &Value) -> Vec<String> {
    let statuses = array(o, "/status/containerStatuses");
    let total = array(o, "/spec/containers").len();
    let ready = statuses.iter().filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true));
    let restarts: i64 = statuses.iter().map(|s| int(s, "/restartCount")).sum();
    let mut status = text(o, "/status/reason").or_else(|| text(o, "/status/phase")).unwrap_or("Pending").to_string();
    for s in statuses {
        if let Some(reason) = text(s, "/state/waiting/reason").or_else(|| text(s, "/state/terminated/reason")) {
            status = reason.to_string();
        }
    }
    if meta_str(o, "deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![format!("{}/{total}", ready.count()), status, restarts.to_string()]
}

fn job_cells(o: &Value) -> Vec<String> {
    let conditions = array(o, "/status/conditions");
    let has = |kind: &str| {
        conditions.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(kind)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if o.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        "Suspended"
    } else {
        "Running"
    };
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(n) => format!("{}/{n}", int(o, "/status/succeeded")),
        None => format!("{}/1", int(o, "/status/succeeded")),
    };
    let duration = match (text(o, "/status/startTime"), text(o, "/status/completionTime")) {
        (Some(start), Some(end)) => match (start.parse::<jiff::Timestamp>(), end.parse::<jiff::Timestamp>()) {
            (Ok(s), Ok(e)) => format_age(e.as_second() - s.as_second()),
            _ => String::new(),
        },
        (Some(start), None) => age_of_timestamp(Some(start)),
        _ => String::new(),
    };
    vec![status.into(), completions, duration]
}

/// A service's ports as kubectl prints them: `80/TCP`, `80:30080/TCP`, joined by commas.
pub(super) fn render_ports(ports: &[Value]) -> String {
    let rendered: Vec<String> = ports
        .iter()
        .map(|p| {
            let port = int(p, "/port");
            let protocol = text(p, "/protocol").unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node_port) if node_port != 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    none_if_empty(rendered.join(","))
}

fn service_cells(o: &Value) -> Vec<String> {
    let kind = text(o, "/spec/type").unwrap_or("ClusterIP");
    let mut external: Vec<String> =
        array(o, "/spec/externalIPs").iter().filter_map(Value::as_str).map(str::to_string).collect();
    if kind == "LoadBalancer" {
        external.extend(load_balancer_addresses(o));
        if external.is_empty() {
            external.push("<pending>".into());
        }
    }
    if kind == "ExternalName" {
        external.extend(text(o, "/spec/externalName").map(str::to_string));
    }
    vec![
        kind.into(),
        text(o, "/spec/clusterIP").unwrap_or("<none>").into(),
        none_if_empty(external.join(",")),
        render_ports(array(o, "/spec/ports")),
    ]
}

fn load_balancer_addresses(o: &Value) -> Vec<String> {
    array(o, "/status/loadBalancer/ingress")
        .iter()
        .filter_map(|i| text(i, "/ip").or_else(|| text(i, "/hostname")))
        .map(str::to_string)
        .collect()
}

fn selector_text(selector: Option<&Value>) -> String {
    let pairs: Vec<String> = selector
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    none_if_empty(pairs.join(","))
}

fn workload_wide(o: &Value, containers: &str) -> Vec<String> {
    let containers = array(o, containers);
    let names: Vec<&str> = containers.iter().filter_map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().filter_map(|c| text(c, "/image")).collect();
    let selector = match o.pointer("/spec/selector/matchLabels") {
        Some(labels) => selector_text(Some(labels)),
        None => "<none>".into(),
    };
    vec![names.join(","), images.join(","), selector]
}

fn node_cells(o: &Value) -> Vec<String> {
    let ready = array(o, "/status/conditions")
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .and_then(|c| c.get("status").and_then(Value::as_str));
    let mut status = match ready {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| labels.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect())
        .unwrap_or_default();
    vec![status, none_if_empty(roles.join(",")), text(o, "/status/nodeInfo/kubeletVersion").unwrap_or("").into()]
}

fn node_internal_ip(o: &Value) -> String {
    array(o, "/status/addresses")
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| text(a, "/address"))
        .unwrap_or("<none>")
        .into()
}

fn ingress_cells(o: &Value) -> Vec<String> {
    let hosts: Vec<&str> = array(o, "/spec/rules").iter().filter_map(|r| text(r, "/host")).collect();
    let hosts = if hosts.is_empty() { "*".to_string() } else { hosts.join(",") };
    let ports = if array(o, "/spec/tls").is_empty() { "80" } else { "80, 443" };
    vec![
        text(o, "/spec/ingressClassName").unwrap_or("<none>").into(),
        hosts,
        load_balancer_addresses(o).join(","),
        ports.into(),
    ]
}

/// The time an event last happened.
pub(super) fn event_time(o: &Value) -> Option<&str> {
    text(o, "/lastTimestamp")
        .or_else(|| text(o, "/eventTime"))
        .or_else(|| text(o, "/firstTimestamp"))
        .or_else(|| meta_str(o, "creationTimestamp"))
}

fn event_cells(o: &Value) -> Vec<String> {
    let kind = text(o, "/involvedObject/kind").unwrap_or("").to_ascii_lowercase();
    let name = text(o, "/involvedObject/name").unwrap_or("");
    vec![
        age_of_timestamp(event_time(o)),
        text(o, "/type").unwrap_or("").into(),
        text(o, "/reason").unwrap_or("").into(),
        format!("{kind}/{name}"),
        text(o, "/message").unwrap_or("").into(),
    ]
}

/// Whether a response is a 404.
pub(super) fn is_not_found(response: &Response) -> bool {
    response.status == StatusCode::NOT_FOUND
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(name: &str) -> &'static ResourceType {
        flotilla_api::by_cli_name(name).expect("known kind")
    }

    #[test]
    fn paths_for_core_and_group_kinds() {
        assert_eq!(resource_path(kind("pods"), Some("ns1"), None), "/api/v1/namespaces/ns1/pods");
        assert_eq!(resource_path(kind("pods"), None, None), "/api/v1/pods");
        assert_eq!(
            resource_path(kind("deploy"), Some("default"), Some("web")),
            "/apis/apps/v1/namespaces/default/deployments/web"
        );
        // Cluster-scoped kinds ignore the namespace.
        assert_eq!(resource_path(kind("nodes"), Some("default"), Some("n1")), "/api/v1/nodes/n1");
        assert_eq!(resource_path(kind("ingressclasses"), None, None), "/apis/networking.k8s.io/v1/ingressclasses");
    }

    #[test]
    fn query_strings_are_encoded() {
        let empty: [(&str, &str); 0] = [];
        assert_eq!(query_string(&empty), "");
        assert_eq!(
            query_string(&[("labelSelector", "app=web,tier!=db"), ("watch", "1")]),
            "?labelSelector=app%3Dweb%2Ctier%21%3Ddb&watch=1"
        );
        assert_eq!(query_string(&[("l", "a in (x, y)+")]), "?l=a%20in%20%28x%2C%20y%29%2B");
    }

    #[test]
    fn display_names_like_kubectl() {
        assert_eq!(display_name(kind("deploy")), "deployment.apps");
        assert_eq!(display_name(kind("cm")), "configmap");
        assert_eq!(display_name(kind("ing")), "ingress.networking.k8s.io");
        let web = json!({"metadata": {"name": "web"}});
        assert_eq!(qualified_name(kind("deployments"), &web), "deployment.apps/web");
    }

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(format_age(-5), "<invalid>");
        assert_eq!(format_age(0), "0s");
        assert_eq!(format_age(5), "5s");
        assert_eq!(format_age(119), "119s");
        assert_eq!(format_age(150), "2m30s");
        assert_eq!(format_age(180), "3m");
        assert_eq!(format_age(17 * 60 + 5), "17m");
        assert_eq!(format_age(3 * 3600 + 7 * 60), "3h7m");
        assert_eq!(format_age(5 * 3600), "5h");
        assert_eq!(format_age(30 * 3600), "30h");
        assert_eq!(format_age(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(format_age(100 * 86400), "100d");
        assert_eq!(format_age(3 * 365 * 86400 + 20 * 86400), "3y20d");
        assert_eq!(format_age(10 * 365 * 86400), "10y");
        assert_eq!(age(&json!({})), "<unknown>");
    }

    #[test]
    fn ports_like_kubectl() {
        let ports = [json!({"port": 80, "protocol": "TCP"}), json!({"port": 53, "protocol": "UDP", "nodePort": 30053})];
        assert_eq!(render_ports(&ports), "80/TCP,53:30053/UDP");
        assert_eq!(render_ports(&[json!({"port": 443})]), "443/TCP");
        assert_eq!(render_ports(&[]), "<none>");
    }

    #[test]
    fn tables_align_with_three_spaces() {
        let mut table = Table::default();
        let rows = vec![
            vec!["NAME".to_string(), "READY".to_string(), "AGE".to_string()],
            vec!["a-long-name".to_string(), "1/1".to_string(), "5s".to_string()],
        ];
        assert_eq!(table.render(&rows), "NAME          READY   AGE\na-long-name   1/1     5s\n");
        // Later rows keep the widths.
        assert_eq!(table.line(&["x".into(), "0/1".into(), "1s".into()]), "x             0/1     1s");
    }

    #[test]
    fn rows_for_common_kinds() {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]}});
        let row = cells(kind("pods"), &pod, true);
        assert_eq!(&row[..4], ["p", "1/2", "Running", "3"]);
        assert_eq!(&row[5..], ["10.0.0.5", "<none>"]);

        let deploy = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(&cells(kind("deploy"), &deploy, false)[..4], ["web", "2/3", "3", "2"]);

        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort",
            "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(&cells(kind("svc"), &svc, false)[..5], ["s", "NodePort", "10.96.0.10", "<none>", "80:30080/TCP"]);

        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.37.0"}}});
        let row = cells(kind("nodes"), &node, false);
        assert_eq!(row[..3], ["n", "Ready", "control-plane"]);
        assert_eq!(row[4], "v1.37.0");
        assert_eq!(columns(kind("nodes"), false).len(), row.len());
    }
}
