//! The CronJob controller, as kube-controller-manager's (`cronjob_controllerv2`): at each
//! scheduled time it creates a Job from `jobTemplate`, named `<cronjob>-<minutes since
//! the epoch>` so that a time is never run twice, even across a restart; honours
//! `concurrencyPolicy` (Allow, Forbid, Replace), `suspend`, `startingDeadlineSeconds` and
//! `timeZone`; keeps `status.active`, `lastScheduleTime` and `lastSuccessfulTime`; and
//! deletes finished Jobs beyond `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`.
//!
//! Time comes from a [`Clock`], so tests run a day of schedules in a second. A reconcile
//! requeues itself for the next scheduled time; Job changes trigger it too (a Job
//! finishing frees a Forbid CronJob).

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::events::{EventSeverity, Recorder};
use crate::meta;
use crate::pipeline::{Action, AllKeys, Controller, Mapper, Reconciler, RunnerConfig, controller_mapper};
use flotilla_api::Reason;
use flotilla_api::cron::{Schedule, time_zone};
use flotilla_client::{Cluster, DeleteParams, Informer, ObjectKey, Patch, resource};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

const COMPONENT: &str = "cronjob-controller";

/// Missed start times past which kube warns (`TooManyMissedTimes`).
const MAX_MISSED: usize = 100;

/// The annotation on each Job with the time it was scheduled for.
const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

#[derive(Debug)]
pub(crate) struct CronJobController {
    cluster: Arc<dyn Cluster>,
    cron_jobs: Informer,
    jobs: Informer,
    clock: Arc<dyn Clock>,
    recorder: Recorder,
}

/// `Complete` or `Failed`, when the Job has finished.
fn finished_as(job: &Value) -> Option<&'static str> {
    ["Complete", "Failed"].into_iter().find(|kind| meta::condition(job, kind).is_some_and(|c| c["status"] == "True"))
}

/// The Job for the run scheduled at `scheduled`: kube's name, labels, annotations and
/// owner, and the template's spec.
fn job_for(cron_job: &Value, scheduled: Timestamp, zone: &jiff::tz::TimeZone) -> Value {
    let template = &cron_job["spec"]["jobTemplate"];
    let mut annotations = template["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        json!(scheduled.to_zoned(zone.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()),
    );
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(job_name(cron_job, scheduled)));
    metadata.insert("namespace".into(), json!(meta::namespace(cron_job)));
    if let Some(labels) = template["metadata"]["labels"].as_object() {
        metadata.insert("labels".into(), Value::Object(labels.clone()));
    }
    metadata.insert("annotations".into(), Value::Object(annotations));
    metadata.insert("ownerReferences".into(), json!([meta::controller_reference(cron_job, "batch/v1", "CronJob")]));
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template["spec"]})
}

/// kube's `getJobName`: the CronJob's name and the scheduled time in minutes.
fn job_name(cron_job: &Value, scheduled: Timestamp) -> String {
    format!("{}-{}", meta::name(cron_job), scheduled.as_second().div_euclid(60))
}

fn job_reference(job: &Value) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "namespace": meta::namespace(job),
        "name": meta::name(job),
        "uid": meta::uid(job),
        "resourceVersion": meta::resource_version(job),
    })
}

/// The latest scheduled time in (`earliest`, `now`], and how many were missed in that span
/// (counted up to just past [`MAX_MISSED`]).
fn most_recent(
    schedule: &Schedule,
    zone: &jiff::tz::TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, usize) {
    let mut missed = 0;
    let mut latest = None;
    let mut t = earliest;
    while let Some(next) = schedule.next_after(t, zone) {
        if next > now {
            break;
        }
        missed += 1;
        latest = Some(next);
        t = next;
        if missed > MAX_MISSED {
            // Too many to walk: jump to the last one before now.
            let mut probe = now.checked_sub(SignedDuration::from_secs(366 * 86_400)).unwrap_or(earliest).max(t);
            while let Some(next) = schedule.next_after(probe, zone) {
                if next > now {
                    break;
                }
                latest = Some(next);
                probe = next;
            }
            break;
        }
    }
    (latest, missed)
}

fn rfc3339(t: Timestamp) -> String {
    meta::format_time(t)
}

impl CronJobController {
    pub(crate) async fn run(
        cluster: Arc<dyn Cluster>,
        cron_jobs: Informer,
        jobs: Informer,
        clock: Arc<dyn Clock>,
        config: RunnerConfig,
    ) {
        let controller = Arc::new(CronJobController {
            recorder: Recorder::new(cluster.clone(), COMPONENT),
            cluster,
            cron_jobs: cron_jobs.clone(),
            jobs: jobs.clone(),
            clock,
        });
        let all: AllKeys<ObjectKey> = {
            let cron_jobs = cron_jobs.clone();
            Arc::new(move || cron_jobs.list().iter().map(|cj| ObjectKey::of(cj)).collect())
        };
        let own: Mapper<ObjectKey> = Arc::new(|cj, _| vec![ObjectKey::of(cj)]);
        Controller::new("cronjob", all, config)
            .reports_failures(&cron_jobs, controller.cluster.clone())
            .watches(cron_jobs, own)
            .watches(jobs, controller_mapper("CronJob"))
            .run(controller)
            .await;
    }

    fn jobs_of(&self, cron_job: &Value) -> Vec<Arc<Value>> {
        let (namespace, uid) = (meta::namespace(cron_job), meta::uid(cron_job));
        self.jobs.filter(|job| meta::namespace(job) == namespace && meta::controller_uid(job, "CronJob") == Some(uid))
    }

    /// Real time until the clock reaches `at` (and a little more, so the reconcile then
    /// sees it as due).
    fn until(&self, at: Timestamp) -> Duration {
        let ahead = Duration::try_from(at.duration_since(self.clock.now())).unwrap_or_default();
        self.clock.real_duration(ahead) + Duration::from_millis(5)
    }

    async fn delete_job(&self, cron_job: &Value, namespace: &str, name: &str, uid: &str) -> Result<()> {
        let params = DeleteParams {
            propagation_policy: Some("Background".into()),
            precondition_uid: Some(uid.to_string()),
            ..DeleteParams::default()
        };
        match self.cluster.delete(resource("batch/v1", "Job"), Some(namespace), name, &params).await {
            Ok(_) => {
                self.recorder.event(cron_job, EventSeverity::Normal, "SuccessfulDelete", format!("Deleted job {name}"));
                Ok(())
            }
            Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => Ok(()),
            Err(e) => Err(Error::api(format!("deleting job {name}"), e)),
        }
    }

    /// Deletes the oldest finished Jobs past the history limits.
    async fn clean_up_history(&self, cron_job: &Value, jobs: &[Arc<Value>]) -> Result<()> {
        let spec = &cron_job["spec"];
        for (outcome, limit) in [
            ("Complete", spec["successfulJobsHistoryLimit"].as_i64().unwrap_or(3)),
            ("Failed", spec["failedJobsHistoryLimit"].as_i64().unwrap_or(1)),
        ] {
            let mut finished: Vec<&Arc<Value>> =
                jobs.iter().filter(|j| finished_as(j) == Some(outcome) && !meta::is_terminating(j)).collect();
            let keep = usize::try_from(limit.max(0)).unwrap_or(0);
            if finished.len() <= keep {
                continue;
            }
            // Oldest first, by start time (then creation, then name), as kube sorts them.
            finished.sort_by(|a, b| {
                let key = |j: &Value| {
                    (
                        j["status"]["startTime"].as_str().unwrap_or_default().to_string(),
                        meta::creation(j).to_string(),
                        meta::name(j).to_string(),
                    )
                };
                key(a).cmp(&key(b))
            });
            let surplus = finished.len() - keep;
            for job in &finished[..surplus] {
                self.delete_job(cron_job, meta::namespace(job), meta::name(job), meta::uid(job)).await?;
            }
        }
        Ok(())
    }

    async fn write_status(&self, cron_job: &Value, status: &Map<String, Value>) -> Result<()> {
        let current = cron_job["status"].as_object().cloned().unwrap_or_default();
        let mut patch = Map::new();
        for key in ["active", "lastScheduleTime", "lastSuccessfulTime"] {
            let want = status.get(key).filter(|v| !v.is_null() && *v != &json!([]));
            let have = current.get(key).filter(|v| !v.is_null() && *v != &json!([]));
            if want != have {
                patch.insert(key.into(), want.cloned().unwrap_or(Value::Null));
            }
        }
        if patch.is_empty() {
            return Ok(());
        }
        let patch = Patch::Merge(json!({"status": patch}));
        match self
            .cluster
            .patch(
                resource("batch/v1", "CronJob"),
                Some(meta::namespace(cron_job)),
                meta::name(cron_job),
                &patch,
                Some("status"),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.reason == Reason::NotFound => Ok(()),
            Err(e) => Err(Error::api("updating the cronjob status", e)),
        }
    }

    /// Brings `status.active` in line with the Jobs that exist, and notes the latest success.
    async fn sync_active(&self, cron_job: &Value, jobs: &[Arc<Value>], status: &mut Map<String, Value>) -> Result<()> {
        let listed: Vec<Value> = status.get("active").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut active = Vec::new();
        for reference in &listed {
            let uid = reference["uid"].as_str().unwrap_or_default();
            let name = reference["name"].as_str().unwrap_or_default();
            match jobs.iter().find(|j| meta::uid(j) == uid) {
                Some(job) if finished_as(job).is_some() => {
                    let outcome = finished_as(job).unwrap_or_default();
                    self.recorder.event(
                        cron_job,
                        EventSeverity::Normal,
                        "SawCompletedJob",
                        format!("Saw completed job: {name}, condition: {outcome}"),
                    );
                }
                Some(_) => active.push(reference.clone()),
                None => {
                    // The cache may lag a fresh creation: ask the API before dropping it.
                    let namespace = reference["namespace"].as_str().unwrap_or(meta::namespace(cron_job));
                    match self.cluster.get(resource("batch/v1", "Job"), Some(namespace), name).await {
                        Ok(job) if meta::uid(&job) == uid && finished_as(&job).is_none() => {
                            active.push(reference.clone())
                        }
                        Ok(_) => {}
                        Err(e) if e.reason == Reason::NotFound => self.recorder.event(
                            cron_job,
                            EventSeverity::Normal,
                            "MissingJob",
                            format!("Active job went missing: {name}"),
                        ),
                        Err(e) => return Err(Error::api(format!("reading job {name}"), e)),
                    }
                }
            }
        }
        // A running Job of ours that the list forgot (we stopped between creating it and
        // writing the status): it is active, whatever the status said.
        for job in jobs {
            if finished_as(job).is_none()
                && !meta::is_terminating(job)
                && !active.iter().any(|r| r["uid"] == meta::uid(job))
            {
                active.push(job_reference(job));
            }
        }
        active.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        status.insert("active".into(), Value::Array(active));

        let last_success = jobs
            .iter()
            .filter(|j| finished_as(j) == Some("Complete"))
            .filter_map(|j| j["status"]["completionTime"].as_str().and_then(meta::parse_time))
            .max();
        let known = status.get("lastSuccessfulTime").and_then(Value::as_str).and_then(meta::parse_time);
        if let Some(latest) = last_success
            && known.is_none_or(|k| latest > k)
        {
            status.insert("lastSuccessfulTime".into(), json!(rfc3339(latest)));
        }
        Ok(())
    }
}

impl Reconciler<ObjectKey> for CronJobController {
    async fn reconcile(&self, key: &ObjectKey) -> Result<Action> {
        let Some(cron_job) = self.cron_jobs.get(&key.namespace, &key.name) else { return Ok(Action::AwaitChange) };
        let jobs = self.jobs_of(&cron_job);
        let mut status = cron_job["status"].as_object().cloned().unwrap_or_default();
        self.sync_active(&cron_job, &jobs, &mut status).await?;
        if meta::is_terminating(&cron_job) {
            self.write_status(&cron_job, &status).await?;
            return Ok(Action::AwaitChange);
        }
        let spec = &cron_job["spec"];
        let zone = match time_zone(spec["timeZone"].as_str()) {
            Ok(zone) => zone,
            Err(why) => {
                self.recorder.event(&cron_job, EventSeverity::Warning, "UnknownTimeZone", why);
                self.write_status(&cron_job, &status).await?;
                return Ok(Action::AwaitChange);
            }
        };
        let schedule = match Schedule::parse(spec["schedule"].as_str().unwrap_or_default()) {
            Ok(schedule) => schedule,
            Err(why) => {
                self.recorder.event(
                    &cron_job,
                    EventSeverity::Warning,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {why}", spec["schedule"].as_str().unwrap_or_default()),
                );
                self.write_status(&cron_job, &status).await?;
                return Ok(Action::AwaitChange);
            }
        };
        if spec["suspend"] == true {
            self.write_status(&cron_job, &status).await?;
            self.clean_up_history(&cron_job, &jobs).await?;
            return Ok(Action::AwaitChange);
        }

        let now = self.clock.now();
        let next = |after: Timestamp| match schedule.next_after(after, &zone) {
            Some(at) => Action::Requeue(self.until(at)),
            None => Action::AwaitChange,
        };
        let created = meta::parse_time(meta::creation(&cron_job)).unwrap_or(now);
        let mut earliest =
            status.get("lastScheduleTime").and_then(Value::as_str).and_then(meta::parse_time).unwrap_or(created);
        let starting_deadline = spec["startingDeadlineSeconds"].as_i64().map(SignedDuration::from_secs);
        if let Some(deadline) = starting_deadline
            && let Some(window_start) = now.checked_sub(deadline).ok()
            && window_start > earliest
        {
            earliest = window_start;
        }
        let (scheduled, missed) = most_recent(&schedule, &zone, earliest, now);
        let Some(scheduled) = scheduled else {
            self.write_status(&cron_job, &status).await?;
            self.clean_up_history(&cron_job, &jobs).await?;
            return Ok(next(now));
        };
        if missed > MAX_MISSED {
            self.recorder.event(
                &cron_job,
                EventSeverity::Warning,
                "TooManyMissedTimes",
                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
            );
        }
        if let Some(deadline) = starting_deadline
            && scheduled.checked_add(deadline).is_ok_and(|end| end < now)
        {
            self.recorder.event(
                &cron_job,
                EventSeverity::Warning,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", rfc3339(scheduled)),
            );
            self.write_status(&cron_job, &status).await?;
            return Ok(next(now));
        }
        let name = job_name(&cron_job, scheduled);
        if jobs.iter().any(|j| meta::name(j) == name) {
            // This time has been run already.
            status.insert("lastScheduleTime".into(), json!(rfc3339(scheduled)));
            self.write_status(&cron_job, &status).await?;
            self.clean_up_history(&cron_job, &jobs).await?;
            return Ok(next(now));
        }
        let active: Vec<Value> = status.get("active").and_then(Value::as_array).cloned().unwrap_or_default();
        match spec["concurrencyPolicy"].as_str().unwrap_or("Allow") {
            "Forbid" if !active.is_empty() => {
                self.recorder.event(
                    &cron_job,
                    EventSeverity::Normal,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                );
                self.write_status(&cron_job, &status).await?;
                return Ok(next(now));
            }
            "Replace" => {
                for reference in &active {
                    self.delete_job(
                        &cron_job,
                        reference["namespace"].as_str().unwrap_or(meta::namespace(&cron_job)),
                        reference["name"].as_str().unwrap_or_default(),
                        reference["uid"].as_str().unwrap_or_default(),
                    )
                    .await?;
                }
                status.insert("active".into(), json!([]));
            }
            _ => {}
        }

        let job = job_for(&cron_job, scheduled, &zone);
        let created =
            match self.cluster.create(resource("batch/v1", "Job"), Some(meta::namespace(&cron_job)), &job).await {
                Ok(created) => {
                    self.recorder.event(
                        &cron_job,
                        EventSeverity::Normal,
                        "SuccessfulCreate",
                        format!("Created job {name}"),
                    );
                    Some(created)
                }
                // Created before (our cache had not seen it yet): the next reconcile counts it.
                Err(e) if e.reason == Reason::AlreadyExists => None,
                Err(e) => {
                    self.recorder.event(
                        &cron_job,
                        EventSeverity::Warning,
                        "FailedCreate",
                        format!("Error creating job: {}", e.message),
                    );
                    return Err(Error::api("creating a job", e));
                }
            };
        if let Some(created) = created {
            let mut active: Vec<Value> = status.get("active").and_then(Value::as_array).cloned().unwrap_or_default();
            active.push(job_reference(&created));
            status.insert("active".into(), Value::Array(active));
        }
        status.insert("lastScheduleTime".into(), json!(rfc3339(scheduled)));
        self.write_status(&cron_job, &status).await?;
        self.clean_up_history(&cron_job, &jobs).await?;
        Ok(next(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::tz::TimeZone;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a time")
    }

    #[test]
    fn the_most_recent_time_and_the_missed_count() {
        let every_minute = Schedule::parse("* * * * *").expect("parses");
        let (latest, missed) =
            most_recent(&every_minute, &TimeZone::UTC, at("2026-01-01T00:00:30Z"), at("2026-01-01T00:05:10Z"));
        assert_eq!((latest, missed), (Some(at("2026-01-01T00:05:00Z")), 5));
        let (latest, missed) =
            most_recent(&every_minute, &TimeZone::UTC, at("2026-01-01T00:00:30Z"), at("2026-01-01T00:00:59Z"));
        assert_eq!((latest, missed), (None, 0));
        // A long outage: the latest time is still found, and the count says "too many".
        let (latest, missed) =
            most_recent(&every_minute, &TimeZone::UTC, at("2026-01-01T00:00:00Z"), at("2026-01-03T00:00:30Z"));
        assert_eq!(latest, Some(at("2026-01-03T00:00:00Z")));
        assert!(missed > MAX_MISSED);
    }

    #[test]
    fn jobs_are_named_by_the_minute_and_carry_the_template() {
        let cron_job = json!({"metadata": {"name": "report", "namespace": "ns", "uid": "u1"},
            "spec": {"jobTemplate": {"metadata": {"labels": {"app": "report"}, "annotations": {"a": "b"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never"}}}}}});
        let tokyo = TimeZone::get("Asia/Tokyo").expect("a zone");
        let job = job_for(&cron_job, at("2026-01-01T00:05:00Z"), &tokyo);
        assert_eq!(job["metadata"]["name"], format!("report-{}", at("2026-01-01T00:05:00Z").as_second() / 60));
        assert_eq!(job["metadata"]["labels"]["app"], "report");
        assert_eq!(job["metadata"]["annotations"]["a"], "b");
        assert_eq!(job["metadata"]["annotations"][SCHEDULED_TIMESTAMP], "2026-01-01T09:05:00+09:00");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }
}
