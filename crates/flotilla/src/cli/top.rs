//! `flotilla top pods|nodes`: CPU and memory in use, from the resource metrics API
//! (`metrics.k8s.io/v1beta1`), printed as `kubectl top` prints it.

use super::get::{Table, query_string};
use crate::client::Client;
use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use flotilla_api::parse_quantity;
use serde_json::Value;

const METRICS_API: &str = "/apis/metrics.k8s.io/v1beta1";

#[derive(Debug, Args)]
pub struct TopCommand {
    #[command(subcommand)]
    what: Top,
    #[command(flatten)]
    client: super::ClientFlags,
}

#[derive(Debug, Subcommand)]
enum Top {
    /// CPU and memory of pods.
    #[command(visible_alias = "pod", visible_alias = "po")]
    Pods(PodsArgs),
    /// CPU and memory of nodes, and how much of their allocatable that is.
    #[command(visible_alias = "node", visible_alias = "no")]
    Nodes(NodesArgs),
}

#[derive(Debug, Args)]
struct PodsArgs {
    /// One pod (all of the namespace's when none is given).
    name: Option<String>,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// A label selector (`app=web,tier!=db`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Sort by usage, largest first.
    #[arg(long, value_enum)]
    sort_by: Option<SortBy>,
}

#[derive(Debug, Args)]
struct NodesArgs {
    /// One node (all of them when none is given).
    name: Option<String>,
    /// A label selector.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Sort by usage, largest first.
    #[arg(long, value_enum)]
    sort_by: Option<SortBy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SortBy {
    Cpu,
    Memory,
}

/// One row's usage: CPU in millicores and memory in bytes, rounded up as kubectl's
/// `MilliValue()` and `Value()` round.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    cpu_milli: i128,
    memory_bytes: i128,
}

impl Usage {
    /// The `usage` map of a metrics object (`{"cpu": "250m", "memory": "12Mi"}`).
    fn of(usage: &Value) -> anyhow::Result<Usage> {
        let quantity = |name: &str| -> anyhow::Result<i128> {
            let text = usage[name].as_str().unwrap_or("0");
            parse_quantity(text).map(|q| q.as_nanos()).map_err(|e| anyhow::anyhow!("{name} usage {text:?}: {e}"))
        };
        Ok(Usage {
            cpu_milli: ceil_div(quantity("cpu")?, 1_000_000),
            memory_bytes: ceil_div(quantity("memory")?, 1_000_000_000),
        })
    }

    fn add(self, other: Usage) -> Usage {
        Usage { cpu_milli: self.cpu_milli + other.cpu_milli, memory_bytes: self.memory_bytes + other.memory_bytes }
    }

    /// `250m`, as kubectl prints cores.
    fn cpu(&self) -> String {
        format!("{}m", self.cpu_milli)
    }

    /// `12Mi`, as kubectl prints bytes (whole MiB, rounded down).
    fn memory(&self) -> String {
        format!("{}Mi", self.memory_bytes / (1024 * 1024))
    }

    fn sort_key(&self, by: SortBy) -> i128 {
        match by {
            SortBy::Cpu => self.cpu_milli,
            SortBy::Memory => self.memory_bytes,
        }
    }
}

fn ceil_div(value: i128, by: i128) -> i128 {
    let quotient = value / by;
    if value % by > 0 { quotient + 1 } else { quotient }
}

/// `used` of `available` as kubectl prints it: whole percent, rounded down.
fn percent(used: i128, available: i128) -> String {
    if available <= 0 {
        return "<unknown>".to_string();
    }
    format!("{}%", (used as f64 / available as f64 * 100.0) as i64)
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// A GET of the API; `None` when it answers NotFound.
async fn get(client: &Client, path: &str) -> anyhow::Result<Option<Value>> {
    let response = client.get(path).await?;
    if super::get::is_not_found(&response) {
        return Ok(None);
    }
    Ok(Some(response.ok()?))
}

/// kubectl's wording when the metrics API is not served.
fn metrics_api_missing() -> anyhow::Error {
    anyhow::anyhow!("Metrics API not available")
}

impl TopCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        let out = match &self.what {
            Top::Pods(args) => top_pods(&client, &namespace, args).await?,
            Top::Nodes(args) => top_nodes(&client, args).await?,
        };
        print!("{out}");
        Ok(())
    }
}

async fn top_pods(client: &Client, namespace: &str, args: &PodsArgs) -> anyhow::Result<String> {
    let selector: Vec<(&str, &str)> = args.selector.iter().map(|s| ("labelSelector", s.as_str())).collect();
    let query = query_string(&selector);
    let metrics = match &args.name {
        Some(name) => {
            let path = format!("{METRICS_API}/namespaces/{namespace}/pods/{name}");
            match get(client, &path).await? {
                Some(object) => vec![object],
                None => {
                    // The pod exists, or the server says why not.
                    let pod = client.get(&format!("/api/v1/namespaces/{namespace}/pods/{name}")).await?.ok()?;
                    let age = super::get::age_of_timestamp(pod["metadata"]["creationTimestamp"].as_str());
                    bail!("Metrics not available for pod {namespace}/{name}, age: {age}");
                }
            }
        }
        None => {
            let path = if args.all_namespaces {
                format!("{METRICS_API}/pods{query}")
            } else {
                format!("{METRICS_API}/namespaces/{namespace}/pods{query}")
            };
            let list = get(client, &path).await?.ok_or_else(metrics_api_missing)?;
            items(&list)
        }
    };
    if metrics.is_empty() {
        // No metrics: no pods, or none measured yet.
        let path = if args.all_namespaces {
            format!("/api/v1/pods{query}")
        } else {
            format!("/api/v1/namespaces/{namespace}/pods{query}")
        };
        let pods = client.get(&path).await?.ok()?;
        if items(&pods).is_empty() {
            if args.all_namespaces {
                eprintln!("No resources found");
            } else {
                eprintln!("No resources found in {namespace} namespace.");
            }
            return Ok(String::new());
        }
        bail!("metrics not available yet");
    }
    let mut rows: Vec<(Usage, Vec<String>)> = Vec::new();
    for pod in &metrics {
        let mut usage = Usage::default();
        for container in pod["containers"].as_array().into_iter().flatten() {
            usage = usage.add(Usage::of(&container["usage"]).with_context(|| format!("pod {}", name(pod)))?);
        }
        let mut row = Vec::new();
        if args.all_namespaces {
            row.push(pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string());
        }
        row.extend([name(pod).to_string(), usage.cpu(), usage.memory()]);
        rows.push((usage, row));
    }
    if let Some(by) = args.sort_by {
        rows.sort_by_key(|(usage, _)| std::cmp::Reverse(usage.sort_key(by)));
    }
    let mut header: Vec<String> = Vec::new();
    if args.all_namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(["NAME", "CPU(cores)", "MEMORY(bytes)"].map(String::from));
    let mut table = vec![header];
    table.extend(rows.into_iter().map(|(_, row)| row));
    Ok(Table::default().render(&table))
}

async fn top_nodes(client: &Client, args: &NodesArgs) -> anyhow::Result<String> {
    let selector: Vec<(&str, &str)> = args.selector.iter().map(|s| ("labelSelector", s.as_str())).collect();
    let query = query_string(&selector);
    let (nodes, metrics) = match &args.name {
        Some(name) => {
            let node = client.get(&format!("/api/v1/nodes/{name}")).await?.ok()?;
            let metrics = get(client, &format!("{METRICS_API}/nodes/{name}")).await?;
            (vec![node], metrics.into_iter().collect::<Vec<_>>())
        }
        None => {
            let nodes = client.get(&format!("/api/v1/nodes{query}")).await?.ok()?;
            let metrics = get(client, &format!("{METRICS_API}/nodes{query}")).await?.ok_or_else(metrics_api_missing)?;
            (items(&nodes), items(&metrics))
        }
    };
    if metrics.is_empty() {
        if nodes.is_empty() {
            eprintln!("No resources found");
            return Ok(String::new());
        }
        bail!("metrics not available yet");
    }
    let mut rows: Vec<(Usage, Vec<String>)> = Vec::new();
    for metric in &metrics {
        let usage = Usage::of(&metric["usage"]).with_context(|| format!("node {}", name(metric)))?;
        let allocatable = nodes
            .iter()
            .find(|n| name(n) == name(metric))
            .map(|n| Usage::of(&n["status"]["allocatable"]))
            .transpose()?
            .unwrap_or_default();
        rows.push((
            usage,
            vec![
                name(metric).to_string(),
                usage.cpu(),
                percent(usage.cpu_milli, allocatable.cpu_milli),
                usage.memory(),
                percent(usage.memory_bytes, allocatable.memory_bytes),
            ],
        ));
    }
    if let Some(by) = args.sort_by {
        rows.sort_by_key(|(usage, _)| std::cmp::Reverse(usage.sort_key(by)));
    }
    let mut table = vec![["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"].map(String::from).to_vec()];
    table.extend(rows.into_iter().map(|(_, row)| row));
    // Nodes not measured yet, as kubectl shows them.
    for node in nodes.iter().filter(|n| !metrics.iter().any(|m| name(m) == name(n))) {
        let unknown = "<unknown>".to_string();
        table.push(vec![name(node).to_string(), unknown.clone(), unknown.clone(), unknown.clone(), unknown]);
    }
    Ok(Table::default().render(&table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_printed_as_kubectl_prints_it() -> anyhow::Result<()> {
        let usage = Usage::of(&json!({"cpu": "1234567n", "memory": "3Mi"}))?;
        assert_eq!((usage.cpu(), usage.memory()), ("2m".to_string(), "3Mi".to_string()), "CPU rounds up");
        let usage = Usage::of(&json!({"cpu": "250m", "memory": "1234567"}))?;
        assert_eq!((usage.cpu(), usage.memory()), ("250m".to_string(), "1Mi".to_string()), "memory rounds down");
        let total = usage.add(Usage::of(&json!({"cpu": "0", "memory": "0"}))?);
        assert_eq!(total, usage);
        let allocatable = Usage::of(&json!({"cpu": "2", "memory": "4Gi"}))?;
        assert_eq!(percent(usage.cpu_milli, allocatable.cpu_milli), "12%");
        assert_eq!(percent(1, 0), "<unknown>");
        assert!(Usage::of(&json!({"cpu": "lots"})).is_err());
        Ok(())
    }
}
