//! The CronJob controller under an accelerated clock: hours of schedules in a second,
//! against the real API server. Only the CronJob controller runs; the tests finish Jobs
//! themselves by writing their status, as the Job controller would.

use super::*;
use crate::{AcceleratedClock, meta};
use std::collections::HashSet;

/// Only the CronJob controller, on a clock `rate` times faster than real time.
fn spawn_cron_controller(cluster: &TestCluster, rate: f64) -> AbortOnDrop {
    let mut config = test_config();
    config.select(&["cronjob".to_string()]).expect("a known controller");
    config.clock = Arc::new(AcceleratedClock::new(jiff::Timestamp::now(), rate));
    AbortOnDrop(tokio::spawn(run(cluster.cluster.clone(), config)))
}

fn cron_job(name: &str, schedule: &str, extra: Value) -> Value {
    let mut spec = json!({
        "schedule": schedule,
        "jobTemplate": {"metadata": {"labels": {"cron": name}}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "batch", "image": "batch"}]}}}},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": spec})
}

async fn jobs(cluster: &TestCluster) -> Vec<Value> {
    list(cluster.cluster.as_ref(), "batch/v1", "Job").await
}

fn is_finished(job: &Value) -> bool {
    meta::condition(job, "Complete").is_some() || meta::condition(job, "Failed").is_some()
}

async fn finish(cluster: &TestCluster, job: &Value, outcome: &str) {
    let now = flotilla_api::timestamp_now();
    let mut status = json!({"startTime": now, "conditions": [
        {"type": outcome, "status": "True", "lastTransitionTime": now}]});
    if outcome == "Complete" {
        status["completionTime"] = json!(now);
        status["succeeded"] = json!(1);
    } else {
        status["failed"] = json!(1);
    }
    let patch = Patch::Merge(json!({"status": status}));
    cluster
        .cluster
        .patch(resource("batch/v1", "Job"), Some("default"), meta::name(job), &patch, Some("status"))
        .await
        .expect("job status written");
}

#[tokio::test]
async fn allow_runs_every_hour_of_a_day_in_a_second() {
    let cluster = start_cluster().await;
    let _controller = spawn_cron_controller(&cluster, 86_400.0);
    create(&cluster, cron_job("hourly", "@hourly", json!({}))).await;
    let created = wait_for("a day of hourly jobs", || async {
        let jobs = jobs(&cluster).await;
        (jobs.len() >= 24).then_some(jobs)
    })
    .await;
    let names: HashSet<&str> = created.iter().map(meta::name).collect();
    assert_eq!(names.len(), created.len(), "one job per scheduled time");
    for job in &created {
        let scheduled = meta::annotation(job, "batch.kubernetes.io/cronjob-scheduled-timestamp").expect("annotated");
        assert!(scheduled.ends_with(":00:00+00:00"), "on the hour: {scheduled}");
        assert_eq!(job["metadata"]["labels"]["cron"], "hourly");
        assert_eq!(meta::controller_of(job).expect("owned")["kind"], "CronJob");
    }
    // Nothing finishes them, so every one stays in status.active (Allow).
    let cron = get(&cluster, "batch/v1", "CronJob", "hourly").await.expect("the cronjob");
    assert!(cron["status"]["active"].as_array().is_some_and(|a| a.len() >= 20), "{}", cron["status"]);
    assert!(cron["status"]["lastScheduleTime"].is_string());
}

#[tokio::test]
async fn forbid_starts_no_run_while_one_is_active() {
    let cluster = start_cluster().await;
    // A minute every 17 ms.
    let _controller = spawn_cron_controller(&cluster, 3_600.0);
    create(&cluster, cron_job("forbid", "* * * * *", json!({"concurrencyPolicy": "Forbid"}))).await;
    let mut seen = HashSet::new();
    for round in 0..3 {
        let running = wait_for("a running job", || async {
            let unfinished: Vec<Value> = jobs(&cluster).await.into_iter().filter(|j| !is_finished(j)).collect();
            assert!(unfinished.len() <= 1, "Forbid ran {} jobs at once", unfinished.len());
            unfinished.into_iter().next()
        })
        .await;
        assert!(seen.insert(meta::name(&running).to_string()), "a new job each round");
        // Thirty scheduled minutes pass while it runs: none of them starts a job.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let all = jobs(&cluster).await;
        assert_eq!(
            all.len(),
            round + 1,
            "no job started while one was active: {:?}",
            all.iter().map(meta::name).collect::<Vec<_>>()
        );
        finish(&cluster, &running, "Complete").await;
    }
    let events = events_of(&cluster, "forbid").await;
    assert!(events.iter().any(|e| e["reason"] == "JobAlreadyActive"), "the skipped runs are told");
    let cron = get(&cluster, "batch/v1", "CronJob", "forbid").await.expect("the cronjob");
    assert!(cron["status"]["lastSuccessfulTime"].is_string(), "{}", cron["status"]);
}

#[tokio::test]
async fn replace_stops_the_running_job_for_the_new_one() {
    let cluster = start_cluster().await;
    // A minute every 60 ms.
    let _controller = spawn_cron_controller(&cluster, 1_000.0);
    create(&cluster, cron_job("replace", "* * * * *", json!({"concurrencyPolicy": "Replace"}))).await;
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 5 {
        let live: Vec<Value> = jobs(&cluster).await.into_iter().filter(|j| !meta::is_terminating(j)).collect();
        assert!(live.len() <= 2, "Replace let {} jobs pile up", live.len());
        seen.extend(live.iter().map(|j| meta::name(j).to_string()));
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for five runs: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events = events_of(&cluster, "replace").await;
    assert!(events.iter().any(|e| e["reason"] == "SuccessfulDelete"), "replaced jobs are deleted");
    let cron = get(&cluster, "batch/v1", "CronJob", "replace").await.expect("the cronjob");
    assert_eq!(cron["status"]["active"].as_array().map(Vec::len), Some(1), "{}", cron["status"]);
}

#[tokio::test]
async fn finished_jobs_are_kept_up_to_the_history_limits() {
    let cluster = start_cluster().await;
    let _controller = spawn_cron_controller(&cluster, 3_600.0);
    let limits = json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1});
    create(&cluster, cron_job("history", "* * * * *", limits)).await;
    let mut finished = 0;
    while finished < 12 {
        for job in jobs(&cluster).await.into_iter().filter(|j| !is_finished(j)) {
            finish(&cluster, &job, if finished % 3 == 0 { "Failed" } else { "Complete" }).await;
            finished += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _: () = wait_for("history trimmed to 2 complete and 1 failed", || async {
        let jobs = jobs(&cluster).await;
        let count = |kind| jobs.iter().filter(|j| meta::condition(j, kind).is_some()).count();
        (count("Complete") <= 2 && count("Failed") <= 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_suspended_cron_job_starts_nothing_until_resumed() {
    let cluster = start_cluster().await;
    let _controller = spawn_cron_controller(&cluster, 3_600.0);
    create(&cluster, cron_job("paused", "* * * * *", json!({"suspend": true}))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(jobs(&cluster).await.is_empty(), "a suspended CronJob ran");
    patch(&cluster, "batch/v1", "CronJob", "paused", json!({"spec": {"suspend": false}})).await;
    wait_for("a run after resuming", || async { (!jobs(&cluster).await.is_empty()).then_some(()) }).await;
}
