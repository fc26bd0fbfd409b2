//! emptyDir `sizeLimit`, kept as kubelet's eviction manager keeps it: every
//! [`eviction_monitoring_period`](crate::NodeConfig::eviction_monitoring_period) the pod
//! worker measures each of its pod's limited emptyDir volumes (the disk its files and
//! directories take, walked without following links), and a volume over its limit gets
//! the pod evicted: its containers stop, its phase is `Failed` with reason `Evicted` and
//! kubelet's message (`Usage of EmptyDir volume "NAME" exceeds the limit "SIZE".`), a
//! `DisruptionTarget` condition, and a Warning `Evicted` Event.
//!
//! Measuring after the fact is kubelet's way too: wasmtime-wasi's filesystem has no hook
//! that would let the node refuse the write that crosses the limit, so a pod may go over
//! it for up to one period before it is stopped.

use flotilla_api::parse_quantity;
use serde_json::{Value, json};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One emptyDir volume with a `sizeLimit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SizeLimit {
    /// The volume's name.
    pub name: String,
    /// Where its files are on the node.
    pub dir: PathBuf,
    /// The limit in bytes.
    pub bytes: u64,
    /// The limit as the pod spells it (`1Gi`), for the message.
    pub text: String,
}

/// The emptyDir volumes of `pod` that have a `sizeLimit`, under `pod_dir`. A limit that
/// is not a non-negative quantity is left out (the API validates it).
pub(crate) fn size_limits(pod: &Value, pod_dir: &Path) -> Vec<SizeLimit> {
    let volumes = pod["spec"]["volumes"].as_array().into_iter().flatten();
    volumes
        .filter_map(|volume| {
            let name = volume["name"].as_str()?;
            let limit = &volume["emptyDir"]["sizeLimit"];
            let text = match limit {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                _ => return None,
            };
            let bytes = u64::try_from(parse_quantity(&text).ok()?.as_value()).ok()?;
            Some(SizeLimit { name: name.to_string(), dir: pod_dir.join("volumes").join(name), bytes, text })
        })
        .collect()
}

/// The disk a directory tree takes, as `du` counts it (allocated blocks of every file
/// and directory), without following links; what cannot be read counts as nothing.
pub(crate) fn usage(dir: &Path) -> u64 {
    let mut total: u64 = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            // `DirEntry::metadata` does not follow a symlink: a link counts as itself.
            let Ok(meta) = entry.metadata() else { continue };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

/// The first of `limits` its volume's usage exceeds, if any. Walks the volumes on a
/// blocking thread.
async fn exceeded(limits: &[SizeLimit]) -> Option<String> {
    let limits = limits.to_vec();
    let measured = tokio::task::spawn_blocking(move || {
        limits.into_iter().find(|limit| usage(&limit.dir) > limit.bytes).map(|limit| message(&limit))
    })
    .await;
    measured.ok().flatten()
}

/// Kubelet's eviction message for an emptyDir over its limit.
fn message(limit: &SizeLimit) -> String {
    format!("Usage of EmptyDir volume {:?} exceeds the limit {:?}.", limit.name, limit.text)
}

/// Measures `limits` every `period` until one is exceeded, and answers the eviction
/// message; never answers when there are no limits.
pub(crate) async fn monitor(limits: Vec<SizeLimit>, period: Duration) -> String {
    if limits.is_empty() {
        return std::future::pending().await;
    }
    let mut ticks = tokio::time::interval(period.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(message) = exceeded(&limits).await {
            return message;
        }
    }
}

/// An evicted pod's `.status`: `status` as its containers made it, then Failed,
/// `Evicted` and `message`, and the `DisruptionTarget` condition kubelet adds.
pub(crate) fn evicted_status(mut status: Value, message: &str) -> Value {
    status["phase"] = json!("Failed");
    status["reason"] = json!("Evicted");
    status["message"] = json!(message);
    let disruption = json!({"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
        "message": message, "lastProbeTime": null, "lastTransitionTime": flotilla_api::timestamp_now()});
    match status["conditions"].as_array_mut() {
        Some(conditions) => conditions.push(disruption),
        None => status["conditions"] = json!([disruption]),
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limits_are_read_from_empty_dirs() {
        let pod = json!({"spec": {"volumes": [
            {"name": "a", "emptyDir": {"sizeLimit": "1Mi"}},
            {"name": "b", "emptyDir": {}},
            {"name": "c", "emptyDir": {"sizeLimit": "-1"}},
            {"name": "d", "configMap": {"name": "x"}},
        ]}});
        let limits = size_limits(&pod, Path::new("/pods/u"));
        assert_eq!(
            limits,
            [SizeLimit { name: "a".into(), dir: "/pods/u/volumes/a".into(), bytes: 1 << 20, text: "1Mi".into() }]
        );
        assert_eq!(message(&limits[0]), "Usage of EmptyDir volume \"a\" exceeds the limit \"1Mi\".");
    }

    #[test]
    fn usage_counts_files_in_subdirectories_and_not_through_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = usage(dir.path());
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/file"), vec![1u8; 256 * 1024]).expect("write");
        // A link to a big tree outside counts as the link only.
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).expect("symlink");
        let used = usage(dir.path());
        assert!(used >= empty + 256 * 1024, "{used}");
        assert!(used < empty + 1024 * 1024, "{used}: the link was followed");
    }
}
