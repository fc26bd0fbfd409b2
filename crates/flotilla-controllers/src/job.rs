//! The Job controller, as kube-controller-manager's for non-indexed Jobs: runs pods from
//! the template until `completions` of them succeed, at most `parallelism` at once; fails
//! the Job past `backoffLimit` failures (failed pods, or container restarts under
//! `restartPolicy: OnFailure`) or past `activeDeadlineSeconds`; writes `active`,
//! `ready`, `succeeded`, `failed`, `startTime`, `completionTime` and the `Complete` /
//! `Failed` conditions; deletes a finished Job after `ttlSecondsAfterFinished`.
//!
//! A Job's pods are the ones it controls (ownerReference uid), so no selector is needed.
//! Finished pods are kept (as Kubernetes keeps them) and counted from the cache.

use crate::error::{Error, Result};
use crate::events::{EventSeverity, Recorder};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig, controller_mapper};
use flotilla_client::{Cluster, DeleteParams, Informer, ObjectKey, Patch, resource};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

const COMPONENT: &str = "job-controller";

#[derive(Debug)]
pub(crate) struct JobController {
    cluster: Arc<dyn Cluster>,
    jobs: Informer,
    pods: Informer,
    recorder: Recorder,
}

/// What a Job's pods add up to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    active: Vec<Arc<Value>>,
    ready: i64,
    succeeded: i64,
    failed: i64,
    /// Failures counted against `backoffLimit`.
    failures: i64,
}

fn tally(job: &Value, pods: Vec<Arc<Value>>) -> Tally {
    let on_failure = job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure";
    let mut tally = Tally::default();
    for pod in pods {
        match pod["status"]["phase"].as_str() {
            Some("Succeeded") => tally.succeeded += 1,
            Some("Failed") => tally.failed += 1,
            _ if meta::is_terminating(&pod) => {}
            _ => {
                if meta::is_pod_ready(&pod) {
                    tally.ready += 1;
                }
                if on_failure {
                    tally.failures += pod["status"]["containerStatuses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| meta::int(&c["restartCount"]))
                        .sum::<i64>();
                }
                tally.active.push(pod);
            }
        }
    }
    tally.failures += tally.failed;
    tally
}

fn finished_condition(job: &Value) -> Option<&str> {
    ["Complete", "Failed"].into_iter().find(|kind| meta::condition(job, kind).is_some_and(|c| c["status"] == "True"))
}

fn condition(kind: &str, reason: Option<&str>, message: Option<&str>, now: &str) -> Value {
    let mut condition = json!({"type": kind, "status": "True", "lastProbeTime": now, "lastTransitionTime": now});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    condition
}

/// The pod a Job creates: its template, a generated name, the Job's labels and
/// controller reference.
fn pod_for(job: &Value) -> Value {
    let template = &job["spec"]["template"];
    let mut labels = template["metadata"]["labels"].as_object().cloned().unwrap_or_default();
    for key in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
        labels.insert(key.into(), json!(meta::uid(job)));
    }
    for key in ["batch.kubernetes.io/job-name", "job-name"] {
        labels.insert(key.into(), json!(meta::name(job)));
    }
    let mut metadata = Map::new();
    metadata.insert("generateName".into(), json!(format!("{}-", meta::name(job))));
    metadata.insert("namespace".into(), json!(meta::namespace(job)));
    metadata.insert("labels".into(), Value::Object(labels));
    if let Some(annotations) = template["metadata"]["annotations"].as_object() {
        metadata.insert("annotations".into(), Value::Object(annotations.clone()));
    }
    metadata.insert("ownerReferences".into(), json!([meta::controller_reference(job, "batch/v1", "Job")]));
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

impl JobController {
    pub(crate) async fn run(cluster: Arc<dyn Cluster>, jobs: Informer, pods: Informer, config: RunnerConfig) {
        let controller = Arc::new(JobController {
            recorder: Recorder::new(cluster.clone(), COMPONENT),
            cluster,
            jobs: jobs.clone(),
            pods: pods.clone(),
        });
        let all: AllKeys<ObjectKey> = {
            let jobs = jobs.clone();
            Arc::new(move || jobs.list().iter().map(|job| ObjectKey::of(job)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|job, _| vec![ObjectKey::of(job)]);
        let pods_to_job = controller_mapper("Job");
        Controller::new("job", all, config)
            .reports_failures(&jobs, controller.cluster.clone())
            .watches(jobs, own)
            .watches(pods, pods_to_job)
            .run(controller)
            .await;
    }

    fn pods_of(&self, job: &Value) -> Vec<Arc<Value>> {
        let (namespace, uid) = (meta::namespace(job), meta::uid(job));
        self.pods.filter(|pod| meta::namespace(pod) == namespace && meta::controller_uid(pod, "Job") == Some(uid))
    }

    /// Waits (briefly) until the cache shows `count` more pods of the Job than `before`,
    /// so the next reconcile does not create them again (what expectations do in kube).
    async fn await_created(&self, job: &Value, at_least: usize) {
        for _ in 0..200 {
            if self.pods_of(job).len() >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn delete_pods(&self, pods: &[Arc<Value>]) -> Result<()> {
        for pod in pods {
            let params = DeleteParams { precondition_uid: Some(meta::uid(pod).to_string()), ..DeleteParams::default() };
            match self.cluster.delete(resource("v1", "Pod"), Some(meta::namespace(pod)), meta::name(pod), &params).await
            {
                Ok(_) => {}
                Err(e) if matches!(e.reason, flotilla_api::Reason::NotFound | flotilla_api::Reason::Conflict) => {}
                Err(e) => return Err(Error::api(format!("deleting pod {}", meta::name(pod)), e)),
            }
        }
        Ok(())
    }

    async fn write_status(&self, job: &Value, status: Value) -> Result<()> {
        let mut merged = job["status"].clone();
        if !merged.is_object() {
            merged = json!({});
        }
        json_merge(&mut merged, &status);
        if merged == job["status"] {
            return Ok(());
        }
        let patch = Patch::Merge(json!({"status": merged}));
        self.cluster
            .patch(resource("batch/v1", "Job"), Some(meta::namespace(job)), meta::name(job), &patch, Some("status"))
            .await
            .map(|_| ())
            .map_err(|e| Error::api("updating the job status", e))
    }

    /// A finished Job: deleted once `ttlSecondsAfterFinished` has passed.
    async fn finished(&self, job: &Value, now: jiff::Timestamp) -> Result<Action> {
        let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_u64() else { return Ok(Action::AwaitChange) };
        let finished_at = ["completionTime"]
            .iter()
            .filter_map(|f| job["status"][f].as_str())
            .chain(
                ["Complete", "Failed"].iter().filter_map(|k| meta::condition(job, k)?["lastTransitionTime"].as_str()),
            )
            .find_map(meta::parse_time)
            .unwrap_or(now);
        let due = meta::plus_seconds(finished_at, i64::try_from(ttl).unwrap_or(i64::MAX));
        if now < due {
            let wait = Duration::try_from(due.duration_since(now)).unwrap_or_default();
            return Ok(Action::Requeue(wait + Duration::from_millis(10)));
        }
        let params = DeleteParams {
            propagation_policy: Some("Background".into()),
            precondition_uid: Some(meta::uid(job).to_string()),
            ..DeleteParams::default()
        };
        match self
            .cluster
            .delete(resource("batch/v1", "Job"), Some(meta::namespace(job)), meta::name(job), &params)
            .await
        {
            Ok(_) => Ok(Action::AwaitChange),
            Err(e) if matches!(e.reason, flotilla_api::Reason::NotFound | flotilla_api::Reason::Conflict) => {
                Ok(Action::AwaitChange)
            }
            Err(e) => Err(Error::api("deleting the finished job", e)),
        }
    }
}

/// RFC 7386 merge of `patch` into `target`.
fn json_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    json_merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

impl Reconciler<ObjectKey> for JobController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(job) = self.jobs.get(&key.namespace, &key.name) else { return Ok(Action::AwaitChange) };
        if meta::is_terminating(&job) {
            return Ok(Action::AwaitChange);
        }
        let now = jiff::Timestamp::now();
        let stamp = meta::format_time(now);
        if finished_condition(&job).is_some() {
            return self.finished(&job, now).await;
        }
        let tally = tally(&job, self.pods_of(&job));
        let spec = &job["spec"];
        let completions = spec["completions"].as_i64().unwrap_or(1).max(0);
        let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
        let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
        let start_time = job["status"]["startTime"].as_str().map(str::to_string).unwrap_or_else(|| stamp.clone());
        let counts = |active: usize| {
            json!({"active": active, "ready": tally.ready, "succeeded": tally.succeeded, "failed": tally.failed,
                "startTime": start_time})
        };

        // Failed: too many failures, or past the deadline.
        let deadline = spec["activeDeadlineSeconds"].as_i64().and_then(|seconds| {
            let started = meta::parse_time(&start_time)?;
            Some(meta::plus_seconds(started, seconds))
        });
        let failure = if tally.failures > backoff_limit {
            Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit"))
        } else if deadline.is_some_and(|d| now >= d) {
            Some(("DeadlineExceeded", "Job was active longer than specified deadline"))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            self.delete_pods(&tally.active).await?;
            let mut status = counts(0);
            status["ready"] = json!(0);
            status["conditions"] = json!([
                condition("FailureTarget", Some(reason), Some(message), &stamp),
                condition("Failed", Some(reason), Some(message), &stamp),
            ]);
            self.write_status(&job, status).await?;
            self.recorder.event(&job, EventSeverity::Warning, reason, message.to_string());
            return self.finished(&job, now).await;
        }

        // Complete: enough pods succeeded.
        if tally.succeeded >= completions {
            self.delete_pods(&tally.active).await?;
            let mut status = counts(0);
            status["completionTime"] = json!(stamp);
            status["conditions"] = json!([
                condition(
                    "SuccessCriteriaMet",
                    Some("CompletionsReached"),
                    Some("Reached expected number of succeeded pods"),
                    &stamp
                ),
                condition(
                    "Complete",
                    Some("CompletionsReached"),
                    Some("Reached expected number of succeeded pods"),
                    &stamp
                ),
            ]);
            self.write_status(&job, status).await?;
            self.recorder.event(&job, EventSeverity::Normal, "Completed", "Job completed".to_string());
            return self.finished(&job, now).await;
        }

        // Keep min(parallelism, completions left) pods running.
        let wanted = usize::try_from(parallelism.min(completions - tally.succeeded).max(0)).unwrap_or(0);
        let active = tally.active.len();
        if active < wanted {
            let known = self.pods_of(&job).len();
            for _ in active..wanted {
                let pod = pod_for(&job);
                match self.cluster.create(resource("v1", "Pod"), Some(meta::namespace(&job)), &pod).await {
                    Ok(created) => self.recorder.event(
                        &job,
                        EventSeverity::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {}", meta::name(&created)),
                    ),
                    Err(e) => return Err(Error::api("creating a pod", e)),
                }
            }
            self.await_created(&job, known + (wanted - active)).await;
        } else if active > wanted {
            let mut surplus = tally.active.clone();
            surplus.sort_by_key(|p| std::cmp::Reverse(meta::creation(p).to_string()));
            surplus.truncate(active - wanted);
            self.delete_pods(&surplus).await?;
        }
        self.write_status(&job, counts(wanted)).await?;
        Ok(match deadline {
            Some(deadline) if deadline > now => {
                Action::Requeue(Duration::try_from(deadline.duration_since(now)).unwrap_or_default())
            }
            _ => Action::AwaitChange,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, restarts: i64) -> Arc<Value> {
        Arc::new(json!({"metadata": {"name": "p"}, "status": {"phase": phase,
            "containerStatuses": [{"restartCount": restarts}]}}))
    }

    #[test]
    fn tallies_count_like_kube() {
        let never = json!({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}});
        let pods = vec![pod("Succeeded", 0), pod("Failed", 0), pod("Running", 2), pod("Pending", 0)];
        let counted = tally(&never, pods.clone());
        assert_eq!((counted.active.len(), counted.succeeded, counted.failed, counted.failures), (2, 1, 1, 1));
        let on_failure = json!({"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}});
        assert_eq!(tally(&on_failure, pods).failures, 3, "restarts count under OnFailure");
    }

    #[test]
    fn job_pods_carry_the_jobs_labels_and_owner() {
        let job = json!({"metadata": {"name": "pi", "namespace": "ns", "uid": "u1"},
            "spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {"restartPolicy": "Never"}}}});
        let pod = pod_for(&job);
        assert_eq!(pod["metadata"]["generateName"], "pi-");
        assert_eq!(pod["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"], "u1");
        assert_eq!(pod["metadata"]["labels"]["app"], "pi");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    }
}
