//! A pod object's container, resolved into what the runtime runs: env (with `valueFrom`
//! and `envFrom` ConfigMaps and Secrets, `$(VAR)` references), args, volumes as
//! preopened directories, limits and allowed outbound hosts.
//!
//! Each capability is one function contributing its piece, after Spin's factors.
//!
//! Volumes never lead a pod out of them. A mount's directory is opened here, once, and
//! the runtime reopens that descriptor for each instance, never the path: a `subPath` is
//! walked one component at a time with `openat(O_NOFOLLOW)` from the volume's root (as
//! kubelet's `safe_open` does), so a symlink a pod planted in its emptyDir (to `/`, to the
//! node's data directory, `../..`, or a chain of them) fails the mount with
//! `CreateContainerConfigError` instead of being followed; `..` and absolute subPaths are
//! refused before any lookup. `hostPath` volumes (the node's own files) are refused
//! unless the node allows them ([`PodContext::allow_host_path`]).

use base64::Engine as _;
use flotilla_api::parse_quantity;
use flotilla_client::{Cluster, resource};
use flotilla_runtime::{Limits, PodSpec, Preopen};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Annotation: comma-separated hosts the pod may call (see the runtime's
/// `allowed_outbound_hosts`).
pub const ALLOWED_OUTBOUND_HOSTS: &str = "flotilla.dev/allowed-outbound-hosts";
/// Annotation: seconds one HTTP request may run (default 60).
pub const REQUEST_TIMEOUT: &str = "flotilla.dev/request-timeout-seconds";
/// Annotation: HTTP requests a pod runs at once (default 100).
pub const MAX_CONCURRENT_REQUESTS: &str = "flotilla.dev/max-concurrent-requests";

const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a container cannot be set up (kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// What resolving needs to know about where the pod runs.
#[derive(Debug)]
pub struct PodContext<'a> {
    pub pod: &'a Value,
    /// The pod's own directory on the node (its emptyDir and projected volumes).
    pub pod_dir: &'a Path,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    /// Whether `hostPath` volumes may be mounted (the node's `--allow-host-path-volumes`).
    pub allow_host_path: bool,
}

/// The runtime spec of `container` in `ctx.pod`. Volumes are written into `pod_dir`.
pub async fn resolve(cluster: &dyn Cluster, ctx: &PodContext<'_>, container: &Value) -> Result<PodSpec, ConfigError> {
    let pod = ctx.pod;
    let mut sources = Sources {
        cluster,
        namespace: pod["metadata"]["namespace"].as_str().unwrap_or("default"),
        cache: HashMap::new(),
    };
    let env = env(&mut sources, ctx, container).await?;
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args =
        strings(&container["command"]).chain(strings(&container["args"])).map(|arg| expand(&arg, &lookup)).collect();
    let preopens = volumes(&mut sources, ctx, container).await?;
    let annotations = &pod["metadata"]["annotations"];
    let allowed_outbound_hosts = annotations[ALLOWED_OUTBOUND_HOSTS]
        .as_str()
        .map(|hosts| hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(PodSpec {
        name: pod["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        namespace: sources.namespace.to_string(),
        env,
        args,
        preopens,
        allowed_outbound_hosts,
        limits: limits(pod, container)?,
        localhost: None,
    })
}

fn strings(value: &Value) -> impl Iterator<Item = String> + '_ {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string)
}

/// Memory, CPU and time limits of a container.
pub fn limits(pod: &Value, container: &Value) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    let container_limits = &container["resources"]["limits"];
    if let Some(memory) = quantity(&container_limits["memory"], "resources.limits.memory")? {
        limits.memory_bytes = Some(u64::try_from(memory.as_value().max(0)).unwrap_or(u64::MAX));
    }
    if let Some(cpu) = quantity(&container_limits["cpu"], "resources.limits.cpu")? {
        limits.cpu_millis = Some(u32::try_from(cpu.as_milli().max(1)).unwrap_or(u32::MAX));
    }
    limits.active_deadline = pod["spec"]["activeDeadlineSeconds"].as_u64().map(Duration::from_secs);
    let annotations = &pod["metadata"]["annotations"];
    let number = |key: &str| annotations[key].as_str().and_then(|v| v.trim().parse::<u64>().ok());
    limits.request_timeout = Some(number(REQUEST_TIMEOUT).map(Duration::from_secs).unwrap_or(DEFAULT_REQUEST_TIMEOUT));
    if let Some(max) = number(MAX_CONCURRENT_REQUESTS) {
        limits.max_concurrent_requests = usize::try_from(max.max(1)).unwrap_or(usize::MAX);
    }
    Ok(limits)
}

fn quantity(value: &Value, field: &str) -> Result<Option<flotilla_api::Quantity>, ConfigError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => parse_quantity(s).map(Some).map_err(|e| ConfigError(format!("{field}: {e}"))),
        Value::Number(n) => parse_quantity(&n.to_string()).map(Some).map_err(|e| ConfigError(format!("{field}: {e}"))),
        other => Err(ConfigError(format!("{field}: not a quantity: {other}"))),
    }
}

/// ConfigMaps and Secrets of the pod's namespace, each read once per resolve.
struct Sources<'a> {
    cluster: &'a dyn Cluster,
    namespace: &'a str,
    cache: HashMap<(&'static str, String), Option<Map<String, Value>>>,
}

impl Sources<'_> {
    /// The decoded data of a ConfigMap (`kind` "ConfigMap") or Secret, `None` if absent.
    async fn data(&mut self, kind: &'static str, name: &str) -> Result<Option<&Map<String, Value>>, ConfigError> {
        let key = (kind, name.to_string());
        if !self.cache.contains_key(&key) {
            let found = match self.cluster.get(resource("v1", kind), Some(self.namespace), name).await {
                Ok(object) => Some(decoded_data(kind, &object)),
                Err(e) if e.reason == flotilla_api::Reason::NotFound => None,
                Err(e) => return Err(ConfigError(format!("reading {} \"{name}\": {e}", kind.to_lowercase()))),
            };
            self.cache.insert(key.clone(), found);
        }
        Ok(self.cache.get(&key).and_then(Option::as_ref))
    }

    async fn required(&mut self, kind: &'static str, name: &str) -> Result<&Map<String, Value>, ConfigError> {
        let namespace = self.namespace.to_string();
        self.data(kind, name).await?.ok_or_else(|| {
            ConfigError(format!("{} \"{name}\" not found in namespace {namespace}", kind.to_lowercase()))
        })
    }
}

/// `data` (and `binaryData`) of a ConfigMap, or a Secret's `data` base64-decoded plus
/// `stringData`, as text.
fn decoded_data(kind: &str, object: &Value) -> Map<String, Value> {
    let mut data = Map::new();
    let engine = base64::engine::general_purpose::STANDARD;
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let text = match (kind, value.as_str()) {
            ("Secret", Some(encoded)) => {
                engine.decode(encoded).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
            }
            (_, Some(text)) => text.to_string(),
            _ => continue,
        };
        data.insert(key.clone(), Value::String(text));
    }
    for field in ["binaryData", "stringData"] {
        for (key, value) in object[field].as_object().into_iter().flatten() {
            let text = match (field, value.as_str()) {
                ("binaryData", Some(encoded)) => {
                    engine.decode(encoded).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
                }
                (_, Some(text)) => text.to_string(),
                _ => continue,
            };
            data.insert(key.clone(), Value::String(text));
        }
    }
    data
}

/// The container's environment, in Kubernetes' order: `envFrom` sources, then `env`
/// (later entries win; `$(VAR)` refers to variables defined before).
async fn env(
    sources: &mut Sources<'_>,
    ctx: &PodContext<'_>,
    container: &Value,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set =
        |env: &mut Vec<(String, String)>, name: String, value: String| match env.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => env.push((name, value)),
        };
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or_default();
        for (kind, field) in [("ConfigMap", "configMapRef"), ("Secret", "secretRef")] {
            let Some(name) = source[field]["name"].as_str() else { continue };
            let optional = source[field]["optional"].as_bool().unwrap_or(false);
            let data = if optional {
                sources.data(kind, name).await?.cloned()
            } else {
                Some(sources.required(kind, name).await?.clone())
            };
            for (key, value) in data.iter().flatten() {
                set(&mut env, format!("{prefix}{key}"), value.as_str().unwrap_or_default().to_string());
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else { continue };
        let value = match (&var["value"], &var["valueFrom"]) {
            (Value::String(value), _) => {
                let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                Some(expand(value, &lookup))
            }
            (_, from) if from.is_object() => value_from(sources, ctx, container, name, from).await?,
            _ => Some(String::new()),
        };
        if let Some(value) = value {
            set(&mut env, name.to_string(), value);
        }
    }
    Ok(env)
}

async fn value_from(
    sources: &mut Sources<'_>,
    ctx: &PodContext<'_>,
    container: &Value,
    var: &str,
    from: &Value,
) -> Result<Option<String>, ConfigError> {
    for (kind, field) in [("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")] {
        let selector = &from[field];
        if !selector.is_object() {
            continue;
        }
        let name = selector["name"].as_str().unwrap_or_default();
        let key = selector["key"].as_str().unwrap_or_default();
        let optional = selector["optional"].as_bool().unwrap_or(false);
        let data = if optional { sources.data(kind, name).await? } else { Some(sources.required(kind, name).await?) };
        return match data.and_then(|d| d.get(key)).and_then(Value::as_str) {
            Some(value) => Ok(Some(value.to_string())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!(
                "couldn't find key {key} in {} {}/{name} (env {var})",
                kind, sources.namespace
            ))),
        };
    }
    if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
        return field_ref(ctx, path)
            .map(Some)
            .ok_or_else(|| ConfigError(format!("env {var}: unsupported fieldPath {path}")));
    }
    if let Some(resource_name) = from["resourceFieldRef"]["resource"].as_str() {
        let (section, name) = resource_name.split_once('.').unwrap_or(("limits", resource_name));
        let value = &container["resources"][section][name];
        let quantity = quantity(value, resource_name)?;
        let divisor = quantity_or_one(&from["resourceFieldRef"]["divisor"])?;
        let text = match (name, quantity) {
            // Rounded up, as kubelet does; checked, as the quantities are the pod's.
            ("cpu", Some(q)) => {
                let divisor = divisor.as_milli().max(1);
                q.as_milli().saturating_add(divisor - 1).checked_div(divisor).unwrap_or(0).to_string()
            }
            (_, Some(q)) => q.as_value().checked_div(divisor.as_value().max(1)).unwrap_or(0).to_string(),
            (_, None) => "0".to_string(),
        };
        return Ok(Some(text));
    }
    Err(ConfigError(format!("env {var}: valueFrom names no source Flotilla supports")))
}

fn quantity_or_one(value: &Value) -> Result<flotilla_api::Quantity, ConfigError> {
    Ok(quantity(value, "divisor")?.unwrap_or_else(|| flotilla_api::Quantity::from_value(1)))
}

/// The downward API's `fieldRef`.
fn field_ref(ctx: &PodContext<'_>, path: &str) -> Option<String> {
    let pod = ctx.pod;
    let meta = &pod["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let indexed = |field: &str| -> Option<String> {
        let rest = path.strip_prefix(field)?.strip_prefix("['")?.strip_suffix("']")?;
        Some(text(&meta[field.trim_start_matches("metadata.")][rest]))
    };
    match path {
        "metadata.name" => Some(text(&meta["name"])),
        "metadata.namespace" => Some(text(&meta["namespace"])),
        "metadata.uid" => Some(text(&meta["uid"])),
        "spec.nodeName" => Some(text(&pod["spec"]["nodeName"])),
        "spec.serviceAccountName" => Some(text(&pod["spec"]["serviceAccountName"])),
        "status.podIP" | "status.podIPs" => Some(ctx.pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(ctx.host_ip.to_string()),
        _ => indexed("metadata.labels").or_else(|| indexed("metadata.annotations")),
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined one is
/// left as written, `$$` is a literal `$`.
pub fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's volume mounts as preopened directories, each opened here (see the
/// module docs). emptyDir, configMap and secret volumes live under the pod's directory;
/// hostPath is the node's own path, when the node allows it.
async fn volumes(
    sources: &mut Sources<'_>,
    ctx: &PodContext<'_>,
    container: &Value,
) -> Result<Vec<Preopen>, ConfigError> {
    let volumes: HashMap<&str, &Value> = ctx.pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    // The container's own root filesystem, as a container image's writable layer: an
    // empty directory with `/tmp`, seen at `/` under the volumes (a preopen at a longer
    // path wins), so that `kubectl cp` and scripts have somewhere to write. It goes with
    // the pod.
    let container_name = container["name"].as_str().unwrap_or("container");
    let root = ctx.pod_dir.join("rootfs").join(container_name);
    std::fs::create_dir_all(root.join("tmp"))
        .map_err(|e| ConfigError(format!("making the container's root directory {}: {e}", root.display())))?;
    let (host, dir) = open_mount(&root, None).map_err(|reason| ConfigError(format!("the root directory: {reason}")))?;
    let mut preopens =
        vec![Preopen { host, guest: "/".to_string(), read_only: false, dir: Some(std::sync::Arc::new(dir)) }];
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap_or_default();
        let guest = mount["mountPath"].as_str().unwrap_or_default().to_string();
        let volume = volumes
            .get(name)
            .ok_or_else(|| ConfigError(format!("volume mount {name}: no volume {name} in the pod")))?;
        let (root, always_read_only) = volume_dir(sources, ctx, name, volume).await?;
        let sub = mount["subPath"].as_str().filter(|s| !s.is_empty());
        let (host, dir) =
            open_mount(&root, sub).map_err(|reason| ConfigError(format!("volume mount {name}: {reason}")))?;
        preopens.push(Preopen {
            host,
            guest,
            read_only: always_read_only || mount["readOnly"].as_bool().unwrap_or(false),
            dir: Some(std::sync::Arc::new(dir)),
        });
    }
    Ok(preopens)
}

/// Opens a mount's directory: the volume's `root`, or `sub` beneath it without leaving
/// it. Missing directories of `sub` are made, as kubelet makes a missing subPath. Answers
/// the path (for messages) and the opened directory, or why not.
pub fn open_mount(root: &Path, sub: Option<&str>) -> Result<(PathBuf, std::os::fd::OwnedFd), String> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| format!("opening {}: {}", root.display(), std::io::Error::from(e)))?;
    let Some(sub) = sub else { return Ok((root.to_path_buf(), dir)) };
    if !Path::new(sub).components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err(format!("subPath {sub} must be a relative path inside the volume (no `..`, not absolute)"));
    }
    let mut path = root.to_path_buf();
    for component in Path::new(sub).components() {
        let component = component.as_os_str();
        path.push(component);
        let opened = match rustix::fs::openat(&dir, component, flags | OFlags::NOFOLLOW, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(format!("making subPath {sub}: {}", std::io::Error::from(e))),
                }
                rustix::fs::openat(&dir, component, flags | OFlags::NOFOLLOW, Mode::empty())
            }
            other => other,
        };
        dir = match opened {
            Ok(opened) => opened,
            Err(error) => {
                let kind = rustix::fs::statat(&dir, component, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|stat| FileType::from_raw_mode(stat.st_mode));
                return Err(match kind {
                    Ok(FileType::Symlink) => format!(
                        "subPath {sub}: {} is a symbolic link; a subPath may not follow links, which could lead out \
                         of the volume",
                        path.display()
                    ),
                    Ok(FileType::Directory) | Err(_) => {
                        format!("subPath {sub}: opening {}: {}", path.display(), std::io::Error::from(error))
                    }
                    Ok(_) => format!("subPath {sub}: {} is not a directory", path.display()),
                });
            }
        };
    }
    Ok((path, dir))
}

async fn volume_dir(
    sources: &mut Sources<'_>,
    ctx: &PodContext<'_>,
    name: &str,
    volume: &Value,
) -> Result<(PathBuf, bool), ConfigError> {
    let io = |path: &Path, e: std::io::Error| ConfigError(format!("volume {name}: {}: {e}", path.display()));
    let mut components = Path::new(name).components();
    if !matches!((components.next(), components.next()), (Some(std::path::Component::Normal(_)), None)) {
        return Err(ConfigError(format!("volume {name}: not a valid volume name")));
    }
    let dir = ctx.pod_dir.join("volumes").join(name);
    if volume["emptyDir"].is_object() {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        return Ok((dir, false));
    }
    if let Some(path) = volume["hostPath"]["path"].as_str() {
        if !ctx.allow_host_path {
            return Err(ConfigError(format!(
                "volume {name}: hostPath volumes are not allowed on this node (start it with \
                 --allow-host-path-volumes to allow them, or use an emptyDir, configMap or secret volume)"
            )));
        }
        let path = PathBuf::from(path);
        match volume["hostPath"]["type"].as_str().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(|e| io(&path, e))?,
            _ if !path.exists() => {
                return Err(ConfigError(format!("volume {name}: hostPath {} does not exist", path.display())));
            }
            _ => {}
        }
        return Ok((path, false));
    }
    for (kind, field, name_field) in [("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")] {
        let source = &volume[field];
        if !source.is_object() {
            continue;
        }
        let object_name = source[name_field].as_str().unwrap_or_default();
        let optional = source["optional"].as_bool().unwrap_or(false);
        let data = if optional {
            sources.data(kind, object_name).await?.cloned().unwrap_or_default()
        } else {
            sources.required(kind, object_name).await?.clone()
        };
        // Rewritten whole on each start, so a restarted container sees current data.
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let items: Vec<(String, String)> = match source["items"].as_array() {
            Some(items) => items
                .iter()
                .filter_map(|i| Some((i["key"].as_str()?.to_string(), i["path"].as_str()?.to_string())))
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in items {
            let Some(value) = data.get(&key).and_then(Value::as_str) else {
                if optional {
                    continue;
                }
                return Err(ConfigError(format!("volume {name}: key {key} not found in {kind} {object_name}")));
            };
            if !Path::new(&path).components().all(|c| matches!(c, std::path::Component::Normal(_))) {
                return Err(ConfigError(format!("volume {name}: item path {path} must be relative")));
            }
            let file = dir.join(&path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
            }
            std::fs::write(&file, value).map_err(|e| io(&file, e))?;
        }
        return Ok((dir, true));
    }
    Err(ConfigError(format!("volume {name}: only emptyDir, hostPath, configMap and secret volumes are supported")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let vars: HashMap<&str, &str> = [("A", "x"), ("B", "y")].into_iter().collect();
        assert_eq!(expand("$(A)-$(B)", &vars), "x-y");
        assert_eq!(expand("$(C)", &vars), "$(C)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn limits_read_quantities_and_annotations() {
        let pod = serde_json::json!({"metadata": {"annotations": {REQUEST_TIMEOUT: "5"}}, "spec": {"activeDeadlineSeconds": 9}});
        let container = serde_json::json!({"resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}});
        let limits = limits(&pod, &container).expect("valid");
        assert_eq!(limits.cpu_millis, Some(250));
        assert_eq!(limits.memory_bytes, Some(64 << 20));
        assert_eq!(limits.request_timeout, Some(Duration::from_secs(5)));
        assert_eq!(limits.active_deadline, Some(Duration::from_secs(9)));
        let bad = serde_json::json!({"resources": {"limits": {"memory": "lots"}}});
        assert!(super::limits(&pod, &bad).is_err());
    }
}
