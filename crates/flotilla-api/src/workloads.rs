//! The rules of each kind beyond its shape: what kube-apiserver's per-kind validation
//! refuses (negative replicas, a selector that does not match its template, containers
//! without images, bad quantities, ...). Each function takes the canonical object and
//! returns every problem, each naming its field.

use crate::error::FieldError;
use crate::quantity::validate_resource_quantity;
use crate::selector::LabelSelector;
use crate::validation::{is_dns1123_label, is_dns1123_subdomain};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Map, Value};
use std::collections::HashSet;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];

fn field(parent: &str, child: &str) -> String {
    if parent.is_empty() { child.to_string() } else { format!("{parent}.{child}") }
}

/// An optional integer field that must be at least `min`.
fn check_min(errors: &mut Vec<FieldError>, object: &Value, path: &str, name: &str, min: i64) {
    if let Some(n) = object.get(name).and_then(Value::as_i64)
        && n < min
    {
        let detail = if min == 0 {
            "must be greater than or equal to 0".to_string()
        } else {
            format!("must be greater than or equal to {min}")
        };
        errors.push(FieldError::invalid(field(path, name), &n, detail));
    }
}

/// An optional duration in seconds (an `int64` in Kubernetes' types): at least `min`
/// and at most [`crate::limits::MAX_DURATION_SECONDS`], so that adding it to now can
/// never overflow a timestamp.
fn check_duration(errors: &mut Vec<FieldError>, object: &Value, path: &str, name: &str, min: i64) {
    check_min(errors, object, path, name, min);
    let max = crate::limits::MAX_DURATION_SECONDS;
    if let Some(n) = object.get(name).and_then(Value::as_i64)
        && n > max
    {
        errors.push(FieldError::invalid(field(path, name), &n, format!("must be between {min} and {max}, inclusive")));
    }
}

fn check_one_of(errors: &mut Vec<FieldError>, object: &Value, path: &str, name: &str, allowed: &[&str]) {
    if let Some(value) = object.get(name).and_then(Value::as_str)
        && !allowed.contains(&value)
    {
        errors.push(FieldError::not_supported(field(path, name), value, allowed));
    }
}

fn check_name(errors: &mut Vec<FieldError>, value: Option<&str>, path: &str, rule: fn(&str) -> Vec<String>) {
    match value {
        None | Some("") => errors.push(FieldError::required(path, "")),
        Some(name) => {
            for problem in rule(name) {
                errors.push(FieldError::invalid(path, &name, problem));
            }
        }
    }
}

/// A Pod's spec, standalone or inside a template at `path`.
pub(crate) fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let empty = Vec::new();
    let containers = spec.get("containers").and_then(Value::as_array).unwrap_or(&empty);
    if containers.is_empty() {
        errors.push(FieldError::required(field(path, "containers"), "must have at least one container"));
    }
    let volumes = spec.get("volumes").and_then(Value::as_array).unwrap_or(&empty);
    let mut volume_names = HashSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = format!("{}[{i}].name", field(path, "volumes"));
        let name = volume.get("name").and_then(Value::as_str);
        check_name(&mut errors, name, &at, is_dns1123_label);
        if let Some(name) = name
            && !volume_names.insert(name)
        {
            errors.push(FieldError::duplicate(at, &name));
        }
    }
    let mut container_names = HashSet::new();
    for list in ["initContainers", "containers"] {
        let items = spec.get(list).and_then(Value::as_array).unwrap_or(&empty);
        for (i, container) in items.iter().enumerate() {
            let at = format!("{}[{i}]", field(path, list));
            let name = container.get("name").and_then(Value::as_str);
            check_name(&mut errors, name, &field(&at, "name"), is_dns1123_label);
            if let Some(name) = name
                && !container_names.insert(name)
            {
                errors.push(FieldError::duplicate(field(&at, "name"), &name));
            }
            errors.extend(validate_container(container, &at, &volume_names));
        }
    }
    check_one_of(&mut errors, spec, path, "restartPolicy", RESTART_POLICIES);
    check_duration(&mut errors, spec, path, "terminationGracePeriodSeconds", 0);
    check_duration(&mut errors, spec, path, "activeDeadlineSeconds", 1);
    errors
}

fn validate_container(container: &Value, path: &str, volumes: &HashSet<&str>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if container.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
        errors.push(FieldError::required(field(path, "image"), ""));
    }
    for section in ["limits", "requests"] {
        if let Some(Value::Object(quantities)) = container.pointer(&format!("/resources/{section}")) {
            for (resource, quantity) in quantities {
                let at = format!("{path}.resources.{section}[{resource}]");
                errors.extend(validate_resource_quantity(quantity, &at));
            }
        }
    }
    if let Some(ports) = container.get("ports").and_then(Value::as_array) {
        for (i, port) in ports.iter().enumerate() {
            let at = format!("{path}.ports[{i}].containerPort");
            match port.get("containerPort").and_then(Value::as_i64) {
                Some(p) if (1..=65535).contains(&p) => {}
                Some(p) => errors.push(FieldError::invalid(at, &p, "must be between 1 and 65535, inclusive")),
                None => errors.push(FieldError::required(at, "")),
            }
        }
    }
    if let Some(mounts) = container.get("volumeMounts").and_then(Value::as_array) {
        for (i, mount) in mounts.iter().enumerate() {
            let at = format!("{path}.volumeMounts[{i}]");
            match mount.get("name").and_then(Value::as_str) {
                Some(name) if volumes.contains(name) => {}
                Some(name) => errors.push(FieldError::new(
                    crate::error::FieldErrorType::NotFound,
                    field(&at, "name"),
                    Some(format!("\"{name}\"")),
                    "",
                )),
                None => errors.push(FieldError::required(field(&at, "name"), "")),
            }
            if mount.get("mountPath").and_then(Value::as_str).is_none_or(str::is_empty) {
                errors.push(FieldError::required(field(&at, "mountPath"), ""));
            }
        }
    }
    if let Some(env) = container.get("env").and_then(Value::as_array) {
        for (i, var) in env.iter().enumerate() {
            let at = format!("{path}.env[{i}].name");
            match var.get("name").and_then(Value::as_str) {
                None | Some("") => errors.push(FieldError::required(at, "")),
                Some(name) if name.contains('=') => errors.push(FieldError::invalid(
                    at,
                    &name,
                    "a valid environment variable name must not contain '='",
                )),
                Some(_) => {}
            }
        }
    }
    errors
}

/// `selector` is required, and `template.metadata.labels` must match it.
fn validate_selector_and_template(spec: &Value, path: &str, pod_restart: &[&str]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let selector_path = field(path, "selector");
    let selector = match spec.get("selector") {
        None | Some(Value::Null) => {
            errors.push(FieldError::required(&selector_path, ""));
            None
        }
        Some(raw) => match serde_json::from_value::<meta::LabelSelector>(raw.clone())
            .map_err(|e| e.to_string())
            .and_then(|s| LabelSelector::from_label_selector(&s))
        {
            Ok(selector) if selector.is_empty() => {
                errors.push(FieldError::invalid(&selector_path, raw, "empty selector is invalid for deployment"));
                None
            }
            Ok(selector) => Some(selector),
            Err(e) => {
                errors.push(FieldError::invalid(&selector_path, raw, e));
                None
            }
        },
    };
    let template_path = field(path, "template");
    let labels = spec.pointer("/template/metadata/labels").and_then(Value::as_object);
    if let Some(selector) = selector
        && !selector.matches(labels.unwrap_or(&Map::new()))
    {
        errors.push(FieldError::invalid(
            format!("{template_path}.metadata.labels"),
            &labels,
            "`selector` does not match template `labels`",
        ));
    }
    errors.extend(validate_template(spec, &template_path, pod_restart));
    errors
}

/// A pod template whose restart policy must be one of `allowed`.
fn validate_template(spec: &Value, template_path: &str, allowed: &[&str]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let pod_spec = spec.pointer("/template/spec").unwrap_or(&Value::Null);
    let spec_path = field(template_path, "spec");
    errors.extend(validate_pod_spec(pod_spec, &spec_path));
    match pod_spec.get("restartPolicy").and_then(Value::as_str) {
        Some(policy) if !allowed.contains(&policy) && RESTART_POLICIES.contains(&policy) => {
            errors.push(FieldError::not_supported(field(&spec_path, "restartPolicy"), policy, allowed));
        }
        None if !allowed.contains(&"Always") => {
            let quoted: Vec<String> = allowed.iter().map(|p| format!("\"{p}\"")).collect();
            let detail = format!("valid values: {}", quoted.join(", "));
            errors.push(FieldError::required(field(&spec_path, "restartPolicy"), detail));
        }
        _ => {}
    }
    errors
}

fn spec(object: &Value) -> &Value {
    object.get("spec").unwrap_or(&Value::Null)
}

pub(crate) fn validate_pod(object: &Value) -> Vec<FieldError> {
    validate_pod_spec(spec(object), "spec")
}

pub(crate) fn validate_replica_set(object: &Value) -> Vec<FieldError> {
    let spec = spec(object);
    let mut errors = Vec::new();
    check_min(&mut errors, spec, "spec", "replicas", 0);
    check_min(&mut errors, spec, "spec", "minReadySeconds", 0);
    errors.extend(validate_selector_and_template(spec, "spec", &["Always"]));
    errors
}

pub(crate) fn validate_deployment(object: &Value) -> Vec<FieldError> {
    let spec = spec(object);
    let mut errors = validate_replica_set(object);
    check_min(&mut errors, spec, "spec", "revisionHistoryLimit", 0);
    check_min(&mut errors, spec, "spec", "progressDeadlineSeconds", 1);
    if let Some(strategy) = spec.get("strategy") {
        check_one_of(&mut errors, strategy, "spec.strategy", "type", &["RollingUpdate", "Recreate"]);
        if strategy.get("type").and_then(Value::as_str) == Some("Recreate")
            && strategy.get("rollingUpdate").is_some_and(|r| !r.is_null())
        {
            errors.push(FieldError::forbidden(
                "spec.strategy.rollingUpdate",
                "may not be specified when strategy `type` is 'Recreate'",
            ));
        }
    }
    errors
}

pub(crate) fn validate_daemon_set(object: &Value) -> Vec<FieldError> {
    let spec = spec(object);
    let mut errors = Vec::new();
    check_min(&mut errors, spec, "spec", "minReadySeconds", 0);
    errors.extend(validate_selector_and_template(spec, "spec", &["Always"]));
    errors
}

fn validate_job_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for name in ["parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"] {
        check_min(&mut errors, spec, path, name, 0);
    }
    check_duration(&mut errors, spec, path, "activeDeadlineSeconds", 1);
    errors.extend(validate_template(spec, &field(path, "template"), &["OnFailure", "Never"]));
    errors
}

pub(crate) fn validate_job(object: &Value) -> Vec<FieldError> {
    validate_job_spec(spec(object), "spec")
}

pub(crate) fn validate_cron_job(object: &Value) -> Vec<FieldError> {
    let spec = spec(object);
    let mut errors = Vec::new();
    match spec.get("schedule").and_then(Value::as_str) {
        None => errors.push(FieldError::required("spec.schedule", "")),
        Some(schedule) if schedule.trim().is_empty() => errors.push(FieldError::required("spec.schedule", "")),
        Some(schedule) => {
            if let Err(why) = crate::cron::Schedule::parse(schedule) {
                errors.push(FieldError::invalid("spec.schedule", &schedule, why));
            }
            if schedule.contains("TZ") {
                errors.push(FieldError::invalid(
                    "spec.schedule",
                    &schedule,
                    "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
                ));
            }
        }
    }
    if let Some(zone) = spec.get("timeZone").filter(|z| !z.is_null()) {
        match zone.as_str() {
            Some(name) => {
                if let Err(why) = crate::cron::time_zone(Some(name)) {
                    errors.push(FieldError::invalid("spec.timeZone", &name, why));
                }
            }
            None => errors.push(FieldError::invalid("spec.timeZone", zone, "must be a string")),
        }
    }
    check_one_of(&mut errors, spec, "spec", "concurrencyPolicy", &["Allow", "Forbid", "Replace"]);
    check_duration(&mut errors, spec, "spec", "startingDeadlineSeconds", 0);
    check_min(&mut errors, spec, "spec", "successfulJobsHistoryLimit", 0);
    check_min(&mut errors, spec, "spec", "failedJobsHistoryLimit", 0);
    let job_spec = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
    errors.extend(validate_job_spec(job_spec, "spec.jobTemplate.spec"));
    errors
}

/// Keys of ConfigMap and Secret data: `[-._a-zA-Z0-9]+`, at most 253 bytes.
fn validate_data_keys(object: &Value, sections: &[&str]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for section in sections {
        let Some(data) = object.get(*section).and_then(Value::as_object) else { continue };
        for key in data.keys() {
            let at = format!("{section}[{key}]");
            let valid_chars = key.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if key.is_empty() || !valid_chars {
                errors.push(FieldError::invalid(&at, key, "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
            } else if key.len() > 253 {
                errors.push(FieldError::too_long(&at, 253));
            }
            // A Secret's `stringData` overrides `data` key by key: not a duplicate.
            if !seen.insert(key.as_str()) && *section != "stringData" {
                errors.push(FieldError::duplicate(at, key));
            }
        }
    }
    errors
}

pub(crate) fn validate_config_map(object: &Value) -> Vec<FieldError> {
    validate_data_keys(object, &["data", "binaryData"])
}

pub(crate) fn validate_secret(object: &Value) -> Vec<FieldError> {
    validate_data_keys(object, &["data", "stringData"])
}

pub(crate) fn validate_hpa(object: &Value) -> Vec<FieldError> {
    let spec = spec(object);
    let mut errors = Vec::new();
    // minReplicas 0 is allowed: Flotilla scales idle Deployments to zero.
    check_min(&mut errors, spec, "spec", "minReplicas", 0);
    check_min(&mut errors, spec, "spec", "maxReplicas", 1);
    let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
    if let Some(max) = spec.get("maxReplicas").and_then(Value::as_i64)
        && min > max
    {
        errors.push(FieldError::invalid("spec.maxReplicas", &max, "must be greater than or equal to `minReplicas`"));
    }
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    check_name(&mut errors, target.get("kind").and_then(Value::as_str), "spec.scaleTargetRef.kind", |_| Vec::new());
    check_name(
        &mut errors,
        target.get("name").and_then(Value::as_str),
        "spec.scaleTargetRef.name",
        is_dns1123_subdomain,
    );
    errors
}

/// An int-or-string that must be a count of at least 0 or a percentage (`"25%"`).
fn check_int_or_percent(errors: &mut Vec<FieldError>, value: Option<&Value>, path: &str) {
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n >= 0) => {}
        Some(Value::Number(n)) => errors.push(FieldError::invalid(path, n, "must be greater than or equal to 0")),
        Some(Value::String(s)) => {
            let percent = s.strip_suffix('%').and_then(|p| p.parse::<u32>().ok());
            match percent {
                Some(0..=100) => {}
                Some(_) => errors.push(FieldError::invalid(path, s, "must not be greater than 100%")),
                None => errors.push(FieldError::invalid(path, s, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
            }
        }
        Some(other) => errors.push(FieldError::invalid(path, other, "must be an integer or a percentage")),
    }
}

pub(crate) fn validate_pdb(object: &Value) -> Vec<FieldError> {
    let spec = spec(object);
    let mut errors = Vec::new();
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if let (Some(_), Some(max)) = (min, max) {
        errors.push(FieldError::invalid("spec", max, "minAvailable and maxUnavailable cannot be both set"));
    }
    check_int_or_percent(&mut errors, min, "spec.minAvailable");
    check_int_or_percent(&mut errors, max, "spec.maxUnavailable");
    if let Some(raw) = spec.get("selector").filter(|v| !v.is_null())
        && let Err(e) = serde_json::from_value::<meta::LabelSelector>(raw.clone())
            .map_err(|e| e.to_string())
            .and_then(|s| LabelSelector::from_label_selector(&s))
    {
        errors.push(FieldError::invalid("spec.selector", raw, e));
    }
    if let Some(policy) = spec.get("unhealthyPodEvictionPolicy").and_then(Value::as_str)
        && !matches!(policy, "IfHealthyBudget" | "AlwaysAllow")
    {
        errors.push(FieldError::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
    errors
}

/// Sets `field` of `object` (a map) to `value` when it is missing or null.
fn default_field(object: &mut Value, field: &str, value: Value) {
    if let Value::Object(map) = object
        && map.get(field).is_none_or(Value::is_null)
    {
        map.insert(field.to_string(), value);
    }
}

/// The map at `field` of `object`, made if missing; None if `object` is not a map.
fn child<'a>(object: &'a mut Value, field: &str) -> Option<&'a mut Value> {
    default_field(object, field, Value::Object(Map::new()));
    object.get_mut(field).filter(|v| v.is_object())
}

/// kube-apiserver's defaults for a pod spec (standalone or in a template).
fn default_pod_spec(spec: &mut Value) {
    default_field(spec, "restartPolicy", Value::from("Always"));
    default_field(spec, "terminationGracePeriodSeconds", Value::from(30));
    default_field(spec, "dnsPolicy", Value::from("ClusterFirst"));
    default_field(spec, "schedulerName", Value::from("default-scheduler"));
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers {
                let latest = container
                    .get("image")
                    .and_then(Value::as_str)
                    .is_some_and(|i| i.ends_with(":latest") || !i.rsplit('/').next().unwrap_or(i).contains(':'));
                default_field(
                    container,
                    "imagePullPolicy",
                    Value::from(if latest { "Always" } else { "IfNotPresent" }),
                );
                default_field(container, "terminationMessagePath", Value::from("/dev/termination-log"));
                default_field(container, "terminationMessagePolicy", Value::from("File"));
                // Go serialises this struct field even when empty: kube-apiserver always
                // answers `resources: {}`, and clients (kubectl rollout undo) send it back.
                default_field(container, "resources", serde_json::json!({}));
                if let Some(Value::Array(ports)) = container.get_mut("ports") {
                    ports.iter_mut().for_each(|p| default_field(p, "protocol", Value::from("TCP")));
                }
            }
        }
    }
}

fn default_template(spec: &mut Value) {
    if let Some(template_spec) = child(spec, "template").and_then(|t| child(t, "spec")) {
        default_pod_spec(template_spec);
    }
}

/// Fills in the fields kube-apiserver defaults on every write of `kind`, so objects
/// read back the way kubectl and controllers expect (`Secret.type: Opaque`, a
/// Deployment's strategy, a Service port's protocol, ...).
/// A Secret's `stringData` merged into `data` (base64), winning over the same key there,
/// and removed: it is write-only, as in kube-apiserver, so it is never stored or served.
pub fn fold_secret_string_data(secret: &mut Value) {
    let string_data = secret.as_object_mut().and_then(|o| o.remove("stringData"));
    let Some(Value::Object(string_data)) = string_data else { return };
    use base64::Engine as _;
    if !secret["data"].is_object() {
        secret["data"] = Value::Object(serde_json::Map::new());
    }
    if let Some(data) = secret["data"].as_object_mut() {
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or_default();
            data.insert(key, Value::from(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}

pub(crate) fn apply_defaults(kind: &str, object: &mut Value) {
    let percent = |p: &str| Value::from(p);
    match kind {
        "Secret" => default_field(object, "type", Value::from("Opaque")),
        "Pod" => {
            if let Some(spec) = child(object, "spec") {
                default_pod_spec(spec);
            }
        }
        "Service" => {
            if let Some(spec) = child(object, "spec") {
                crate::service::default_service(spec);
            }
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            let Some(spec) = child(object, "spec") else { return };
            if kind != "DaemonSet" {
                default_field(spec, "replicas", Value::from(1));
            }
            default_field(spec, "revisionHistoryLimit", Value::from(10));
            if kind == "Deployment" {
                default_field(spec, "progressDeadlineSeconds", Value::from(600));
                if let Some(strategy) = child(spec, "strategy") {
                    default_field(strategy, "type", Value::from("RollingUpdate"));
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                        && let Some(rolling) = child(strategy, "rollingUpdate")
                    {
                        default_field(rolling, "maxSurge", percent("25%"));
                        default_field(rolling, "maxUnavailable", percent("25%"));
                    }
                }
            }
            if kind == "DaemonSet"
                && let Some(strategy) = child(spec, "updateStrategy")
            {
                default_field(strategy, "type", Value::from("RollingUpdate"));
                if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                    && let Some(rolling) = child(strategy, "rollingUpdate")
                {
                    default_field(rolling, "maxUnavailable", Value::from(1));
                    default_field(rolling, "maxSurge", Value::from(0));
                }
            }
            default_template(spec);
        }
        "Job" => {
            if let Some(spec) = child(object, "spec") {
                default_field(spec, "parallelism", Value::from(1));
                default_field(spec, "completions", Value::from(1));
                default_field(spec, "backoffLimit", Value::from(6));
                default_template(spec);
            }
        }
        "CronJob" => {
            let Some(spec) = child(object, "spec") else { return };
            default_field(spec, "concurrencyPolicy", Value::from("Allow"));
            default_field(spec, "suspend", Value::from(false));
            default_field(spec, "successfulJobsHistoryLimit", Value::from(3));
            default_field(spec, "failedJobsHistoryLimit", Value::from(1));
            if let Some(job_spec) = child(spec, "jobTemplate").and_then(|t| child(t, "spec")) {
                default_field(job_spec, "backoffLimit", Value::from(6));
                default_template(job_spec);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn deployment(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": spec})
    }

    #[test]
    fn string_data_is_written_into_data() {
        let mut secret = json!({"data": {"a": "b2xk", "keep": "eA=="}, "stringData": {"a": "new", "c": "see"}});
        fold_secret_string_data(&mut secret);
        assert_eq!(secret, json!({"data": {"a": "bmV3", "keep": "eA==", "c": "c2Vl"}}));
    }

    #[test]
    fn defaults_match_kube_apiserver() {
        let mut deployment = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "hello:1", "ports": [{"containerPort": 80}]}, {"name": "log", "image": "log"}]}}}});
        apply_defaults("Deployment", &mut deployment);
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        let pod = &spec["template"]["spec"];
        assert_eq!((pod["restartPolicy"].as_str(), pod["dnsPolicy"].as_str()), (Some("Always"), Some("ClusterFirst")));
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "Always", "no tag means latest");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");

        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply_defaults("Deployment", &mut recreate);
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());

        let mut service = json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}});
        apply_defaults("Service", &mut service);
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(service["spec"]["ports"][1]["targetPort"], "https");
        let mut secret = json!({});
        apply_defaults("Secret", &mut secret);
        assert_eq!(secret["type"], "Opaque");
    }

    #[test]
    fn deployment_rules() {
        let good = json!({
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "hello:1"}]}}
        });
        assert!(validate_deployment(&deployment(good.clone())).is_empty());

        let mut bad = good.clone();
        bad["replicas"] = json!(-1);
        bad["template"]["metadata"]["labels"]["app"] = json!("other");
        bad["template"]["spec"]["containers"][0]["image"] = json!("");
        let errors = validate_deployment(&deployment(bad));
        assert_eq!(
            fields(&errors),
            ["spec.replicas", "spec.template.metadata.labels", "spec.template.spec.containers[0].image"]
        );
        assert!(errors[0].to_string().contains("must be greater than or equal to 0"));

        let mut no_selector = good;
        no_selector.as_object_mut().map(|m| m.remove("selector"));
        assert_eq!(fields(&validate_deployment(&deployment(no_selector))), ["spec.selector"]);
    }

    #[test]
    fn pod_spec_rules() {
        let spec = json!({
            "restartPolicy": "Sometimes",
            "volumes": [{"name": "data"}],
            "containers": [
                {"name": "a", "image": "i", "resources": {"limits": {"memory": "lots"}},
                 "volumeMounts": [{"name": "missing", "mountPath": "/m"}]},
                {"name": "a", "image": "i", "ports": [{"containerPort": 70000}]}
            ]
        });
        let errors = validate_pod_spec(&spec, "spec");
        assert_eq!(
            fields(&errors),
            [
                "spec.containers[0].resources.limits[memory]",
                "spec.containers[0].volumeMounts[0].name",
                "spec.containers[1].name",
                "spec.containers[1].ports[0].containerPort",
                "spec.restartPolicy",
            ],
            "{errors:?}"
        );
        let none = validate_pod_spec(&json!({}), "spec");
        assert_eq!(fields(&none), ["spec.containers"]);
    }

    #[test]
    fn job_needs_a_restart_policy_that_ends() {
        let job = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let errors = validate_job(&job);
        assert_eq!(fields(&errors), ["spec.template.spec.restartPolicy"]);
        let always = json!({"spec": {"template": {"spec": {"restartPolicy": "Always",
            "containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(validate_job(&always)[0].error_type, crate::error::FieldErrorType::NotSupported);
    }

    #[test]
    fn service_and_config_rules() {
        let svc = json!({"spec": {"ports": [{"port": 0}, {"port": 80}]}});
        let errors = crate::service::validate_service(&svc);
        assert_eq!(fields(&errors), ["spec.ports[0].port", "spec.ports[0].name", "spec.ports[1].name"]);
        let cm = json!({"data": {"good.key": "1", "bad key": "2"}});
        assert_eq!(fields(&validate_config_map(&cm)), ["data[bad key]"]);
        let hpa = json!({"spec": {"minReplicas": 5, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "web"}}});
        assert_eq!(fields(&validate_hpa(&hpa)), ["spec.maxReplicas"]);
    }
}
