//! One reconcile of a deployment, as kube's `syncDeployment`: find (or create) the new
//! replica set, scale new and old ones by the strategy, clean up old history, and compute
//! the status and conditions.

use super::DeploymentController;
use super::util::{self, POD_TEMPLATE_HASH};
use crate::error::{Error, Result};
use crate::events::EventSeverity;
use crate::meta;
use crate::pipeline::Action;
use flotilla_api::Reason;
use flotilla_client::{DeleteParams, ObjectKey, Patch, resource};
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct Rollout<'a> {
    ctl: &'a DeploymentController,
    /// The deployment as read.
    original: Arc<Value>,
    /// The deployment being worked on: its status and revision annotation change here.
    d: Value,
    /// The replica sets it controls, updated as they are written.
    rss: Vec<Value>,
    now: jiff::Timestamp,
}

fn rs_rt() -> &'static flotilla_api::ResourceType {
    resource("apps/v1", "ReplicaSet")
}

impl<'a> Rollout<'a> {
    pub(crate) fn new(ctl: &'a DeploymentController, deployment: Arc<Value>, owned: Vec<Arc<Value>>) -> Self {
        Rollout {
            ctl,
            d: (*deployment).clone(),
            original: deployment,
            rss: owned.iter().map(|rs| (**rs).clone()).collect(),
            now: jiff::Timestamp::now(),
        }
    }

    fn now_str(&self) -> String {
        meta::format_time(self.now)
    }

    pub(crate) async fn sync(&mut self) -> Result<Action> {
        let outcome = self.sync_inner().await;
        // Whatever happened, what was learnt is written (status, revision).
        self.write_deployment().await?;
        outcome?;
        Ok(self.requeue_stuck().map_or(Action::AwaitChange, Action::Requeue))
    }

    async fn sync_inner(&mut self) -> Result<()> {
        if meta::is_terminating(&self.d) {
            let new = self.find_new();
            self.d["status"] = self.calculate_status(new);
            return Ok(());
        }
        self.check_paused_conditions();
        if self.d["spec"]["paused"] == true {
            return self.sync_scaling(true).await;
        }
        if self.is_scaling_event().await? {
            return self.sync_scaling(false).await;
        }
        if self.d["spec"]["strategy"]["type"] == "Recreate" {
            self.rollout_recreate().await
        } else {
            self.rollout_rolling().await
        }
    }

    // --- finding replica sets ------------------------------------------------------------

    /// The replica set whose template is the deployment's (the oldest, if several).
    fn find_new(&self) -> Option<usize> {
        let mut order: Vec<usize> = (0..self.rss.len()).collect();
        order.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        let template = &self.d["spec"]["template"];
        order.into_iter().find(|i| util::template_equal_ignoring_hash(&self.rss[*i]["spec"]["template"], template))
    }

    fn olds(&self, new: Option<usize>) -> Vec<usize> {
        (0..self.rss.len()).filter(|i| Some(*i) != new).collect()
    }

    fn active(&self, indices: &[usize]) -> Vec<usize> {
        indices.iter().copied().filter(|i| util::replicas(&self.rss[*i]) > 0).collect()
    }

    fn sum(&self, indices: &[usize], value: impl Fn(&Value) -> i64) -> i64 {
        indices.iter().map(|i| value(&self.rss[*i])).sum()
    }

    fn all(&self, new: Option<usize>) -> Vec<usize> {
        let mut all = self.olds(new);
        all.extend(new);
        all
    }

    /// kube's `getAllReplicaSetsAndSyncRevision`: the new replica set (created if asked
    /// and missing), with its revision and annotations brought up to date.
    async fn new_replica_set(&mut self, create: bool) -> Result<Option<usize>> {
        let existing = self.find_new();
        let max_old = self.olds(existing).iter().map(|i| util::revision(&self.rss[*i])).max().unwrap_or(0);
        let new_revision = max_old + 1;
        if let Some(i) = existing {
            let mut rs = self.rss[i].clone();
            let annotations_changed = util::set_new_rs_annotations(&self.d, &mut rs, new_revision, true);
            let min_ready = meta::int(&self.d["spec"]["minReadySeconds"]);
            if annotations_changed || meta::int(&rs["spec"]["minReadySeconds"]) != min_ready {
                let patch = json!({"metadata": {"annotations": rs["metadata"]["annotations"],
                    "resourceVersion": meta::resource_version(&rs)}, "spec": {"minReadySeconds": min_ready}});
                self.rss[i] = self.patch_rs(&rs, patch).await?;
            }
            let revision = meta::annotation(&self.rss[i], util::REVISION).unwrap_or_default().to_string();
            self.set_revision(&revision);
            if util::progress_deadline(&self.d).is_some() && util::condition(&self.d["status"], "Progressing").is_none()
            {
                let message = format!("Found new replica set \"{}\"", meta::name(&self.rss[i]));
                let condition =
                    util::new_condition("Progressing", "True", "FoundNewReplicaSet", message, &self.now_str());
                util::set_condition(&mut self.d["status"], condition);
            }
            return Ok(Some(i));
        }
        if !create {
            return Ok(None);
        }

        let collision_count = self.d["status"]["collisionCount"].as_i64();
        let hash = util::pod_template_hash(&self.d["spec"]["template"], collision_count);
        let mut template = self.d["spec"]["template"].clone();
        template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        let mut selector = self.d["spec"]["selector"].clone();
        selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
        let name = format!("{}-{hash}", meta::name(&self.d));
        let mut rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": meta::namespace(&self.d),
                "labels": template["metadata"]["labels"],
                "ownerReferences": [meta::controller_reference(&self.d, "apps/v1", "Deployment")],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": meta::int(&self.d["spec"]["minReadySeconds"]),
                "selector": selector,
                "template": template,
            },
        });
        let mut all = self.all(None);
        self.rss.push(rs.clone());
        let candidate = self.rss.len() - 1;
        all.push(candidate);
        let new_replicas = self.new_rs_new_replicas(&all, candidate);
        self.rss.pop();
        rs["spec"]["replicas"] = json!(new_replicas);
        util::set_new_rs_annotations(&self.d, &mut rs, new_revision, false);

        let namespace = meta::namespace(&self.d).to_string();
        let (created, already_existed) = match self.ctl.cluster.create(rs_rt(), Some(&namespace), &rs).await {
            Ok(created) => (created, false),
            Err(error) if error.reason == Reason::AlreadyExists => {
                let live = self
                    .ctl
                    .cluster
                    .get(rs_rt(), Some(&namespace), &name)
                    .await
                    .map_err(|source| Error::api(format!("reading replica set {name}"), source))?;
                let ours = meta::controller_uid(&live, "Deployment") == Some(meta::uid(&self.d));
                if ours && util::template_equal_ignoring_hash(&live["spec"]["template"], &self.d["spec"]["template"]) {
                    (live, true)
                } else {
                    // A hash collision: the next hash takes the count into account.
                    let count = collision_count.unwrap_or(0) + 1;
                    self.d["status"]["collisionCount"] = json!(count);
                    return Err(Error::api(format!("creating replica set {name}: hash collision"), error));
                }
            }
            Err(error) => {
                if util::progress_deadline(&self.d).is_some() {
                    let message = format!("Failed to create new replica set \"{name}\": {}", error.message);
                    let condition =
                        util::new_condition("Progressing", "False", "ReplicaSetCreateError", message, &self.now_str());
                    util::set_condition(&mut self.d["status"], condition);
                }
                return Err(Error::api(format!("creating replica set {name}"), error));
            }
        };
        if !already_existed && new_replicas > 0 {
            let message = format!("Scaled up replica set {name} to {new_replicas}");
            self.ctl.recorder.event(&self.original, EventSeverity::Normal, "ScalingReplicaSet", message);
        }
        self.set_revision(&new_revision.to_string());
        if !already_existed && util::progress_deadline(&self.d).is_some() {
            let message = format!("Created new replica set \"{name}\"");
            let condition =
                util::new_condition("Progressing", "True", "NewReplicaSetCreated", message, &self.now_str());
            util::set_condition(&mut self.d["status"], condition);
        }
        match self.rss.iter().position(|r| meta::name(r) == name) {
            Some(i) => {
                self.rss[i] = created;
                Ok(Some(i))
            }
            None => {
                self.rss.push(created);
                Ok(Some(self.rss.len() - 1))
            }
        }
    }

    fn set_revision(&mut self, revision: &str) {
        if revision.is_empty() || meta::annotation(&self.d, util::REVISION) == Some(revision) {
            return;
        }
        if !self.d["metadata"]["annotations"].is_object() {
            self.d["metadata"]["annotations"] = json!({});
        }
        self.d["metadata"]["annotations"][util::REVISION] = json!(revision);
    }

    // --- scaling -----------------------------------------------------------------------

    /// kube's `NewRSNewReplicas`.
    fn new_rs_new_replicas(&self, all: &[usize], new: usize) -> i64 {
        let desired = util::replicas(&self.d);
        let new_replicas = util::replicas(&self.rss[new]);
        if !util::is_rolling(&self.d) {
            return desired;
        }
        let current = self.sum(all, util::replicas);
        let max_total = desired + util::max_surge(&self.d);
        if current >= max_total {
            return new_replicas;
        }
        let scale_up = (max_total - current).min(desired - new_replicas);
        new_replicas + scale_up
    }

    /// Sets a replica set's size (and its replica annotations); whether the size changed.
    async fn scale(&mut self, i: usize, to: i64, operation: &str) -> Result<bool> {
        let rs = &self.rss[i];
        let desired = util::replicas(&self.d);
        let max = desired + util::max_surge(&self.d);
        let from = util::replicas(rs);
        let size_changes = from != to;
        if !size_changes && !util::replicas_annotations_need_update(rs, desired, max) {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"annotations": {util::DESIRED_REPLICAS: desired.to_string(), util::MAX_REPLICAS: max.to_string()},
                         "resourceVersion": meta::resource_version(rs)},
            "spec": {"replicas": to},
        });
        let rs = rs.clone();
        self.rss[i] = self.patch_rs(&rs, patch).await?;
        if size_changes {
            let message = format!("Scaled {operation} replica set {} to {to} from {from}", meta::name(&rs));
            self.ctl.recorder.event(&self.original, EventSeverity::Normal, "ScalingReplicaSet", message);
        }
        Ok(size_changes)
    }

    async fn scale_and_record(&mut self, i: usize, to: i64) -> Result<bool> {
        let operation = if util::replicas(&self.rss[i]) < to { "up" } else { "down" };
        self.scale(i, to, operation).await
    }

    async fn patch_rs(&self, rs: &Value, patch: Value) -> Result<Value> {
        let name = meta::name(rs);
        self.ctl
            .cluster
            .patch(rs_rt(), Some(meta::namespace(rs)), name, &Patch::Merge(patch), None)
            .await
            .map_err(|source| Error::api(format!("updating replica set {name}"), source))
    }

    /// kube's `isScalingEvent`: an active replica set was sized for another replica count.
    async fn is_scaling_event(&mut self) -> Result<bool> {
        let new = self.new_replica_set(false).await?;
        let desired = util::replicas(&self.d);
        let all = self.all(new);
        Ok(self
            .active(&all)
            .iter()
            .filter_map(|i| util::desired_replicas_annotation(&self.rss[*i]))
            .any(|annotated| annotated != desired))
    }

    /// kube's `sync`: scaling (or a paused deployment): sizes, history, status.
    async fn sync_scaling(&mut self, paused: bool) -> Result<()> {
        let new = self.new_replica_set(false).await?;
        self.scale_all(new).await?;
        let olds = self.olds(new);
        if paused {
            self.cleanup(&olds).await?;
        }
        self.d["status"] = self.calculate_status(new);
        Ok(())
    }

    /// kube's `scale`: one active replica set takes the whole size; otherwise new and old
    /// grow or shrink in proportion to their sizes (rolling) .
    async fn scale_all(&mut self, new: Option<usize>) -> Result<()> {
        let desired = util::replicas(&self.d);
        let olds = self.olds(new);
        if let Some(i) = self.active_or_latest(new, &olds) {
            if util::replicas(&self.rss[i]) != desired {
                self.scale_and_record(i, desired).await?;
            }
            return Ok(());
        }
        if let Some(n) = new
            && self.is_saturated(n)
        {
            for i in self.active(&olds) {
                self.scale_and_record(i, 0).await?;
            }
            return Ok(());
        }
        if !util::is_rolling(&self.d) {
            return Ok(());
        }
        let mut all = self.active(&self.all(new));
        let current = self.sum(&all, util::replicas);
        let allowed = if desired > 0 { desired + util::max_surge(&self.d) } else { 0 };
        let to_add = allowed - current;
        let operation = if to_add > 0 {
            // Largest first, newer first on ties.
            all.sort_by_key(|i| {
                (Reverse(util::replicas(&self.rss[*i])), Reverse(meta::creation(&self.rss[*i]).to_string()))
            });
            "up"
        } else {
            all.sort_by_key(|i| (Reverse(util::replicas(&self.rss[*i])), meta::creation(&self.rss[*i]).to_string()));
            "down"
        };
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for i in &all {
            let rs = &self.rss[*i];
            if to_add != 0 {
                let part = util::proportion(rs, &self.d, to_add, added);
                sizes.push(util::replicas(rs) + part);
                added += part;
            } else {
                sizes.push(util::replicas(rs));
            }
        }
        if to_add != 0
            && let Some(first) = sizes.first_mut()
        {
            *first = (*first + to_add - added).max(0);
        }
        for (i, size) in all.into_iter().zip(sizes) {
            self.scale(i, size, operation).await?;
        }
        Ok(())
    }

    /// kube's `FindActiveOrLatest`: the only active replica set, or the newest if none is
    /// active.
    fn active_or_latest(&self, new: Option<usize>, olds: &[usize]) -> Option<usize> {
        if new.is_none() && olds.is_empty() {
            return None;
        }
        let mut olds = olds.to_vec();
        olds.sort_by(|a, b| by_creation(&self.rss[*b], &self.rss[*a]));
        let mut all = olds.clone();
        all.extend(new);
        let active = self.active(&all);
        match active.len() {
            0 => new.or_else(|| olds.first().copied()),
            1 => active.first().copied(),
            _ => None,
        }
    }

    fn is_saturated(&self, i: usize) -> bool {
        let rs = &self.rss[i];
        let desired = util::replicas(&self.d);
        util::replicas(rs) == desired
            && util::desired_replicas_annotation(rs) == Some(desired)
            && util::status_int(rs, "availableReplicas") == desired
    }

    // --- strategies ----------------------------------------------------------------------

    async fn rollout_rolling(&mut self) -> Result<()> {
        let new = self.new_replica_set(true).await?;
        let Some(new) = new else { return Ok(()) };
        if self.reconcile_new(new).await? {
            return self.sync_rollout_status(Some(new));
        }
        let olds = self.olds(Some(new));
        if self.reconcile_olds(&olds, new).await? {
            return self.sync_rollout_status(Some(new));
        }
        if util::is_complete(&self.d, &self.original["status"]) {
            self.cleanup(&olds).await?;
        }
        self.sync_rollout_status(Some(new))
    }

    /// kube's `reconcileNewReplicaSet`.
    async fn reconcile_new(&mut self, new: usize) -> Result<bool> {
        let desired = util::replicas(&self.d);
        let current = util::replicas(&self.rss[new]);
        if current == desired {
            return Ok(false);
        }
        if current > desired {
            return self.scale(new, desired, "down").await;
        }
        let all = self.all(Some(new));
        let to = self.new_rs_new_replicas(&all, new);
        self.scale(new, to, "up").await
    }

    /// kube's `reconcileOldReplicaSets`: scale old replica sets down as far as
    /// availability allows, unhealthy pods first.
    async fn reconcile_olds(&mut self, olds: &[usize], new: usize) -> Result<bool> {
        if self.sum(olds, util::replicas) == 0 {
            return Ok(false);
        }
        let all = self.all(Some(new));
        let all_pods = self.sum(&all, util::replicas);
        let min_available = util::replicas(&self.d) - util::max_unavailable(&self.d);
        let new_unavailable = util::replicas(&self.rss[new]) - util::available(&self.rss[new]);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self.cleanup_unhealthy(olds, max_scaled_down).await?;
        let scaled = self.scale_down_olds(olds, new).await?;
        Ok(cleaned + scaled > 0)
    }

    /// kube's `cleanupUnhealthyReplicas`: old replica sets lose their unavailable pods
    /// first, oldest replica set first.
    async fn cleanup_unhealthy(&mut self, olds: &[usize], max: i64) -> Result<i64> {
        let mut olds = olds.to_vec();
        olds.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        let mut total = 0;
        for i in olds {
            if total >= max {
                break;
            }
            let rs = &self.rss[i];
            let replicas = util::replicas(rs);
            if replicas == 0 {
                continue;
            }
            let unhealthy = replicas - util::available(rs);
            if unhealthy <= 0 {
                continue;
            }
            let down = (max - total).min(unhealthy);
            self.scale(i, replicas - down, "down").await?;
            total += down;
        }
        Ok(total)
    }

    /// kube's `scaleDownOldReplicaSetsForRollingUpdate`.
    async fn scale_down_olds(&mut self, olds: &[usize], new: usize) -> Result<i64> {
        let min_available = util::replicas(&self.d) - util::max_unavailable(&self.d);
        let all = self.all(Some(new));
        let available = self.sum(&all, util::available);
        if available <= min_available {
            return Ok(0);
        }
        let mut olds = olds.to_vec();
        olds.sort_by(|a, b| by_creation(&self.rss[*a], &self.rss[*b]));
        let target = available - min_available;
        let mut total = 0;
        for i in olds {
            if total >= target {
                break;
            }
            let replicas = util::replicas(&self.rss[i]);
            if replicas == 0 {
                continue;
            }
            let down = replicas.min(target - total);
            self.scale(i, replicas - down, "down").await?;
            total += down;
        }
        Ok(total)
    }

    async fn rollout_recreate(&mut self) -> Result<()> {
        let mut new = self.new_replica_set(false).await?;
        let olds = self.olds(new);
        let mut scaled_down = false;
        for i in self.active(&olds) {
            scaled_down |= self.scale(i, 0, "down").await?;
        }
        if scaled_down || self.old_pods_running(new) {
            return self.sync_rollout_status(new);
        }
        if new.is_none() {
            new = self.new_replica_set(true).await?;
        }
        if let Some(n) = new {
            let desired = util::replicas(&self.d);
            if util::replicas(&self.rss[n]) != desired {
                self.scale(n, desired, "up").await?;
            }
        }
        if util::is_complete(&self.d, &self.original["status"]) {
            let olds = self.olds(new);
            self.cleanup(&olds).await?;
        }
        self.sync_rollout_status(new)
    }

    /// kube's `oldPodsRunning`: old replica sets still count pods, or some pod of theirs
    /// (terminating ones too) has not finished.
    fn old_pods_running(&self, new: Option<usize>) -> bool {
        let olds = self.olds(new);
        if self.sum(&olds, |rs| util::status_int(rs, "replicas")) > 0 {
            return true;
        }
        let old_uids: Vec<&str> = olds.iter().map(|i| meta::uid(&self.rss[*i])).collect();
        let namespace = meta::namespace(&self.d);
        !self
            .ctl
            .pods
            .filter(|pod| {
                meta::namespace(pod) == namespace
                    && meta::controller_uid(pod, "ReplicaSet").is_some_and(|uid| old_uids.contains(&uid))
                    && !matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
            })
            .is_empty()
    }

    /// kube's `cleanupDeployment`: old replica sets beyond `revisionHistoryLimit`, oldest
    /// revision first, if they are fully scaled down.
    async fn cleanup(&mut self, olds: &[usize]) -> Result<()> {
        let Some(limit) = self.d["spec"]["revisionHistoryLimit"].as_i64() else { return Ok(()) };
        let mut cleanable: Vec<usize> = olds.iter().copied().filter(|i| !meta::is_terminating(&self.rss[*i])).collect();
        let excess = i64::try_from(cleanable.len()).unwrap_or(i64::MAX) - limit.max(0);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            let (a, b) = (&self.rss[*a], &self.rss[*b]);
            util::revision(a).cmp(&util::revision(b)).then_with(|| by_creation(a, b))
        });
        for i in cleanable.into_iter().take(usize::try_from(excess).unwrap_or(0)) {
            let rs = &self.rss[i];
            if util::status_int(rs, "replicas") != 0
                || util::replicas(rs) != 0
                || meta::generation(rs) > util::status_int(rs, "observedGeneration")
            {
                continue;
            }
            let name = meta::name(rs);
            tracing::debug!(replica_set = name, "deleting old replica set");
            let params = DeleteParams { precondition_uid: Some(meta::uid(rs).to_string()), ..Default::default() };
            match self.ctl.cluster.delete(rs_rt(), Some(meta::namespace(rs)), name, &params).await {
                Ok(_) => {}
                Err(error) if matches!(error.reason, Reason::NotFound | Reason::Conflict) => {}
                Err(source) => return Err(Error::api(format!("deleting old replica set {name}"), source)),
            }
        }
        Ok(())
    }

    // --- status --------------------------------------------------------------------------

    /// kube's `checkPausedConditions`.
    fn check_paused_conditions(&mut self) {
        if util::progress_deadline(&self.d).is_none() {
            return;
        }
        let current = util::condition(&self.d["status"], "Progressing");
        if current.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
            return;
        }
        let paused_recorded = current.is_some_and(|c| c["reason"] == "DeploymentPaused");
        let paused = self.d["spec"]["paused"] == true;
        let now = self.now_str();
        if paused && !paused_recorded {
            let condition =
                util::new_condition("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), &now);
            util::set_condition(&mut self.d["status"], condition);
        } else if !paused && paused_recorded {
            let condition = util::new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                &now,
            );
            util::set_condition(&mut self.d["status"], condition);
        }
    }

    /// kube's `calculateStatus`: counts from the replica sets and the `Available`
    /// condition; other conditions carried over.
    fn calculate_status(&self, new: Option<usize>) -> Value {
        let all = self.all(new);
        let available = self.sum(&all, |rs| util::status_int(rs, "availableReplicas"));
        let total = self.sum(&all, util::replicas);
        let mut status = json!({
            "observedGeneration": meta::generation(&self.d),
            "replicas": self.sum(&all, |rs| util::status_int(rs, "replicas")),
            "updatedReplicas": new.map_or(0, |n| util::status_int(&self.rss[n], "replicas")),
            "readyReplicas": self.sum(&all, |rs| util::status_int(rs, "readyReplicas")),
            "availableReplicas": available,
            "unavailableReplicas": (total - available).max(0),
            "conditions": self.d["status"]["conditions"].as_array().cloned().unwrap_or_default(),
        });
        if let Some(count) = self.d["status"]["collisionCount"].as_i64() {
            status["collisionCount"] = json!(count);
        }
        let now = self.now_str();
        let condition = if available >= util::replicas(&self.d) - util::max_unavailable(&self.d) {
            util::new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                &now,
            )
        } else {
            let message = "Deployment does not have minimum availability.".into();
            util::new_condition("Available", "False", "MinimumReplicasUnavailable", message, &now)
        };
        util::set_condition(&mut status, condition);
        status
    }

    /// kube's `syncRolloutStatus`: the status with the `Progressing` condition.
    fn sync_rollout_status(&mut self, new: Option<usize>) -> Result<()> {
        let mut status = self.calculate_status(new);
        let progressing_kind = json!("Progressing");
        if util::progress_deadline(&self.d).is_none() {
            util::remove_condition(&mut status, &progressing_kind);
        }
        let current = util::condition(&self.d["status"], "Progressing").cloned();
        let complete = meta::int(&status["replicas"]) == meta::int(&status["updatedReplicas"])
            && current.as_ref().is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
        let now = self.now_str();
        if util::progress_deadline(&self.d).is_some() && !complete {
            let rs_name = new.map(|n| meta::name(&self.rss[n]).to_string());
            if util::is_complete(&self.d, &status) {
                let message = match &rs_name {
                    Some(name) => format!("ReplicaSet \"{name}\" has successfully progressed."),
                    None => String::new(),
                };
                let condition = util::new_condition("Progressing", "True", "NewReplicaSetAvailable", message, &now);
                util::set_condition(&mut status, condition);
            } else if util::is_progressing(&self.d, &status) {
                let message = match &rs_name {
                    Some(name) => format!("ReplicaSet \"{name}\" is progressing."),
                    None => format!("Deployment \"{}\" is progressing.", meta::name(&self.d)),
                };
                let mut condition = util::new_condition("Progressing", "True", "ReplicaSetUpdated", message, &now);
                // Progress moves lastUpdateTime even when the reason stays the same.
                if let Some(current) = &current {
                    if current["status"] == "True" {
                        condition["lastTransitionTime"] = current["lastTransitionTime"].clone();
                    }
                    util::remove_condition(&mut status, &progressing_kind);
                }
                util::set_condition(&mut status, condition);
            } else if util::is_timed_out(&self.d, &status, self.now) {
                let message = match &rs_name {
                    Some(name) => format!("ReplicaSet \"{name}\" has timed out progressing."),
                    None => format!("Deployment \"{}\" has timed out progressing.", meta::name(&self.d)),
                };
                let condition = util::new_condition("Progressing", "False", "ProgressDeadlineExceeded", message, &now);
                util::set_condition(&mut status, condition);
            }
        }
        self.d["status"] = status;
        Ok(())
    }

    /// kube's `requeueStuckDeployment`: when a rollout in progress would pass its deadline.
    fn requeue_stuck(&self) -> Option<Duration> {
        let deadline = util::progress_deadline(&self.d)?;
        let status = &self.d["status"];
        let progressing = util::condition(status, "Progressing")?;
        if util::is_complete(&self.d, status) || progressing["reason"] == "ProgressDeadlineExceeded" {
            return None;
        }
        let updated = progressing["lastUpdateTime"].as_str().and_then(meta::parse_time)?;
        let due = crate::meta::plus_seconds(updated, deadline);
        let wait = Duration::try_from(due.duration_since(self.now)).unwrap_or(Duration::ZERO);
        // A second more so that the deadline has surely passed.
        Some(wait + Duration::from_secs(1))
    }

    /// Writes the revision annotation and then the status, if they changed: a status
    /// that says the rollout is done comes with its revision (kube writes both at once).
    async fn write_deployment(&self) -> Result<()> {
        let namespace = meta::namespace(&self.d);
        let name = meta::name(&self.d);
        let deployments = resource("apps/v1", "Deployment");
        let mut resource_version = meta::resource_version(&self.original).to_string();
        let revision = meta::annotation(&self.d, util::REVISION);
        if revision != meta::annotation(&self.original, util::REVISION)
            && let Some(revision) = revision
        {
            let patch =
                json!({"metadata": {"annotations": {util::REVISION: revision}, "resourceVersion": resource_version}});
            let written = self
                .ctl
                .cluster
                .patch(deployments, Some(namespace), name, &Patch::Merge(patch), None)
                .await
                .map_err(|source| Error::api("updating the deployment revision", source))?;
            resource_version = meta::resource_version(&written).to_string();
            let base = meta::resource_version(&self.original);
            self.ctl.written.wrote(&ObjectKey::of(&self.original), base, &resource_version);
        }
        if self.d["status"] != self.original["status"] {
            let patch = json!({"metadata": {"resourceVersion": resource_version}, "status": self.d["status"]});
            let written = self
                .ctl
                .cluster
                .patch(deployments, Some(namespace), name, &Patch::Merge(patch), Some("status"))
                .await
                .map_err(|source| Error::api("updating the deployment status", source))?;
            let base = meta::resource_version(&self.original);
            self.ctl.written.wrote(&ObjectKey::of(&self.original), base, meta::resource_version(&written));
        }
        Ok(())
    }
}

/// Oldest first, then by name (kube's `ReplicaSetsByCreationTimestamp`).
fn by_creation(a: &Value, b: &Value) -> std::cmp::Ordering {
    meta::creation(a).cmp(meta::creation(b)).then_with(|| meta::name(a).cmp(meta::name(b)))
}
