//! `flotilla scale` and `flotilla rollout status|history|undo|restart|pause|resume`, as
//! kubectl does them: they read and write the fields and annotations the Deployment
//! controller keeps (`deployment.kubernetes.io/revision`, conditions, `paused`).

use super::get::{lookup_kind, resource_path};
use anyhow::{anyhow, bail};
use serde_json::{Value, json};
use std::time::Duration;

const REVISION: &str = "deployment.kubernetes.io/revision";

/// `deployment/NAME` (or `deploy/NAME`, `rs/NAME`, …) → its kind and name.
fn target(reference: &str) -> anyhow::Result<(&'static flotilla_api::ResourceType, &str)> {
    let (kind, name) = reference.split_once('/').ok_or_else(|| anyhow!("want KIND/NAME, such as deployment/web"))?;
    Ok((lookup_kind(kind)?, name))
}

#[derive(Debug, clap::Args)]
pub struct ScaleCommand {
    /// `deployment/NAME` or `replicaset/NAME`.
    target: String,
    /// The new number of replicas.
    #[arg(long)]
    replicas: u32,
    #[command(flatten)]
    client: super::ClientFlags,
}

impl ScaleCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        let (rt, name) = target(&self.target)?;
        let path = format!("{}/scale", resource_path(rt, Some(&namespace), Some(name)));
        let patch = json!({"spec": {"replicas": self.replicas}});
        client.patch(&path, "application/merge-patch+json", &patch).await?.ok()?;
        println!("{}.{}/{name} scaled", rt.plural.trim_end_matches('s'), rt.group);
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct RolloutCommand {
    #[command(subcommand)]
    action: RolloutAction,
    #[command(flatten)]
    client: super::ClientFlags,
}

#[derive(Debug, clap::Subcommand)]
enum RolloutAction {
    /// Wait until the rollout finishes (or fails at its progress deadline).
    Status {
        target: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// List the revisions.
    History { target: String },
    /// Go back to the previous revision, or to `--to-revision`.
    Undo {
        target: String,
        #[arg(long)]
        to_revision: Option<u64>,
    },
    /// Replace every pod with a new one of the same template.
    Restart { target: String },
    /// Stop rolling out template changes.
    Pause { target: String },
    /// Roll out again.
    Resume { target: String },
}

impl RolloutCommand {
    pub async fn execute(self) -> anyhow::Result<()> {
        let (client, namespace) = self.client.connect()?;
        let reference = match &self.action {
            RolloutAction::Status { target, .. }
            | RolloutAction::History { target }
            | RolloutAction::Undo { target, .. }
            | RolloutAction::Restart { target }
            | RolloutAction::Pause { target }
            | RolloutAction::Resume { target } => target.clone(),
        };
        let (rt, name) = target(&reference)?;
        if rt.kind != "Deployment" {
            bail!("rollout works on deployments; {reference} is a {}", rt.kind);
        }
        let path = resource_path(rt, Some(&namespace), Some(name));
        let merge = |patch: Value| {
            let (client, path) = (&client, &path);
            async move { client.patch(path, "application/merge-patch+json", &patch).await?.ok() }
        };
        match self.action {
            RolloutAction::Status { timeout, .. } => {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
                let mut last = String::new();
                loop {
                    let deployment = client.get(&path).await?.ok()?;
                    match rollout_state(&deployment)? {
                        None => {
                            println!("deployment \"{name}\" successfully rolled out");
                            return Ok(());
                        }
                        Some(waiting) if waiting != last => {
                            println!("{waiting}");
                            last = waiting;
                        }
                        Some(_) => {}
                    }
                    if tokio::time::Instant::now() >= deadline {
                        bail!("timed out waiting for the rollout of deployment \"{name}\"");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            RolloutAction::History { .. } => {
                println!("deployment.apps/{name}\nREVISION  CHANGE-CAUSE");
                for (revision, set) in replica_sets(&client, &namespace, &client.get(&path).await?.ok()?).await? {
                    let cause =
                        set["metadata"]["annotations"]["kubernetes.io/change-cause"].as_str().unwrap_or("<none>");
                    println!("{revision:<9} {cause}");
                }
            }
            RolloutAction::Undo { to_revision, .. } => {
                let deployment = client.get(&path).await?.ok()?;
                let current: u64 = deployment["metadata"]["annotations"][REVISION].as_str().unwrap_or("0").parse()?;
                let sets = replica_sets(&client, &namespace, &deployment).await?;
                let chosen = match to_revision {
                    Some(revision) => sets.iter().find(|(r, _)| *r == revision),
                    None => sets.iter().rev().find(|(r, _)| *r < current),
                };
                let Some((revision, set)) = chosen else {
                    bail!("no rollout history found for deployment \"{name}\" to go back to");
                };
                let mut template = set["spec"]["template"].clone();
                if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
                    labels.remove("pod-template-hash");
                }
                let ops = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
                client.patch(&path, "application/json-patch+json", &ops).await?.ok()?;
                println!("deployment.apps/{name} rolled back (to revision {revision})");
            }
            RolloutAction::Restart { .. } => {
                let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                merge(json!({"spec": {"template": {"metadata": {"annotations":
                    {"kubectl.kubernetes.io/restartedAt": now}}}}}))
                .await?;
                println!("deployment.apps/{name} restarted");
            }
            RolloutAction::Pause { .. } => {
                merge(json!({"spec": {"paused": true}})).await?;
                println!("deployment.apps/{name} paused");
            }
            RolloutAction::Resume { .. } => {
                merge(json!({"spec": {"paused": null}})).await?;
                println!("deployment.apps/{name} resumed");
            }
        }
        Ok(())
    }
}

/// What a rollout still waits for (kubectl's `DeploymentStatusViewer`), or `None` when
/// it is done; an error when it failed.
fn rollout_state(deployment: &Value) -> anyhow::Result<Option<String>> {
    let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
    let (spec, status) = (&deployment["spec"], &deployment["status"]);
    let number = |v: &Value| v.as_u64().unwrap_or(0);
    if number(&status["observedGeneration"]) < number(&deployment["metadata"]["generation"]) {
        return Ok(Some("Waiting for deployment spec update to be observed...".into()));
    }
    let progressing = status["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Progressing");
    if progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        bail!("deployment \"{name}\" exceeded its progress deadline");
    }
    let replicas = spec["replicas"].as_u64().unwrap_or(1);
    let (updated, total, available) =
        (number(&status["updatedReplicas"]), number(&status["replicas"]), number(&status["availableReplicas"]));
    Ok(if updated < replicas {
        Some(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {replicas} new replicas have been updated..."
        ))
    } else if total > updated {
        Some(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
            total - updated
        ))
    } else if available < updated {
        Some(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."
        ))
    } else {
        None
    })
}

/// The Deployment's ReplicaSets by revision, oldest first.
async fn replica_sets(
    client: &crate::client::Client,
    namespace: &str,
    deployment: &Value,
) -> anyhow::Result<Vec<(u64, Value)>> {
    let uid = deployment["metadata"]["uid"].as_str().unwrap_or_default();
    let list = client.get(&format!("/apis/apps/v1/namespaces/{namespace}/replicasets")).await?.ok()?;
    let mut sets: Vec<(u64, Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rs| rs["metadata"]["ownerReferences"].as_array().into_iter().flatten().any(|o| o["uid"] == uid))
        .filter_map(|rs| Some((rs["metadata"]["annotations"][REVISION].as_str()?.parse().ok()?, rs.clone())))
        .collect();
    sets.sort_by_key(|(revision, _)| *revision);
    sets.dedup_by_key(|(revision, _)| *revision);
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_states_read_like_kubectl() {
        let deployment = |generation: u64, observed: u64, updated: u64, total: u64, available: u64| {
            json!({"metadata": {"name": "web", "generation": generation}, "spec": {"replicas": 3},
                "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                    "availableReplicas": available}})
        };
        assert!(rollout_state(&deployment(2, 1, 3, 3, 3)).ok().flatten().is_some_and(|s| s.contains("observed")));
        assert!(rollout_state(&deployment(2, 2, 1, 4, 3)).ok().flatten().is_some_and(|s| s.contains("1 out of 3")));
        assert!(rollout_state(&deployment(2, 2, 3, 4, 3)).ok().flatten().is_some_and(|s| s.contains("1 old")));
        assert!(rollout_state(&deployment(2, 2, 3, 3, 2)).ok().flatten().is_some_and(|s| s.contains("2 of 3")));
        assert_eq!(rollout_state(&deployment(2, 2, 3, 3, 3)).ok(), Some(None));
        let mut stuck = deployment(2, 2, 1, 4, 3);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]);
        assert!(rollout_state(&stuck).is_err());
    }
}
