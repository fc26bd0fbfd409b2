//! The node's wasm engine: configuration, the epoch ticker, compiling images, and making
//! pods from them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::command::CommandPod;
use crate::error::{Error, Result, chain};
use crate::http::HttpPod;
use crate::logs::LogBuffer;
use crate::service::{RouterSlot, ServiceRouter};
use crate::spec::PodSpec;
use crate::state::PodState;

/// How often the engine's epoch advances: the granularity of deadlines and of yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A node's runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached across restarts; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Component instances alive at once, across all pods (the pooling allocator's size).
    pub max_instances: u32,
    /// The most linear memory one instance may have (also each pool slot's reservation).
    pub max_memory_per_instance: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { cache_dir: None, max_instances: 1000, max_memory_per_instance: 256 << 20 }
    }
}

/// The node's wasm runtime: one engine, its linkers and the epoch ticker. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) http_linker: Linker<PodState>,
    pub(crate) command_linker: Linker<PodState>,
    pub(crate) max_memory_per_instance: usize,
    /// Where pods' requests to cluster Services go, once the binary has set it.
    pub(crate) router: RouterSlot,
    cache: Option<Cache>,
    ticker: Ticker,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("max_memory_per_instance", &self.max_memory_per_instance)
            .field("router", &self.router)
            .field("cache", &self.cache.as_ref().map(|c| c.directory()))
            .field("ticker", &self.ticker)
            .finish_non_exhaustive()
    }
}

/// The thread advancing the epoch; stops when the last runtime handle goes.
#[derive(Debug)]
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a component is, told by its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// Exports `wasi:http/incoming-handler`: a fresh instance per request.
    Http,
    /// Exports `wasi:cli/run`: one instance whose exit is the container's.
    Command,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageKind::Http => "an HTTP component (wasi:http/incoming-handler)",
            ImageKind::Command => "a command component (wasi:cli/run)",
        })
    }
}

/// A compiled component, ready to become pods. Cheap to clone.
#[derive(Clone)]
pub struct Image {
    pub(crate) kind: ImageKind,
    pub(crate) component: Component,
    digest: String,
    /// The command's instantiation, linked once on the first exec of this image.
    command_pre: Arc<OnceLock<CommandPre<PodState>>>,
}

impl fmt::Debug for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Image").field("kind", &self.kind).field("digest", &self.digest).finish_non_exhaustive()
    }
}

impl Image {
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// `sha256:<hex>` of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The command's pre-instantiation with `runtime`'s command linker, linked once.
    pub(crate) fn command_pre(&self, runtime: &Runtime) -> Result<CommandPre<PodState>> {
        if let Some(pre) = self.command_pre.get() {
            return Ok(pre.clone());
        }
        let instance_pre =
            runtime.inner.command_linker.instantiate_pre(&self.component).map_err(|e| Error::Link(chain(&e)))?;
        let pre = CommandPre::new(instance_pre).map_err(|e| Error::Link(chain(&e)))?;
        Ok(self.command_pre.get_or_init(|| pre).clone())
    }
}

impl Runtime {
    /// Builds the engine (async, epoch interruption, pooling allocator, the on-disk cache
    /// when `cache_dir` is set) and starts the epoch ticker thread. Fuel stays off: CPU
    /// quotas are kept by the clock (see [`Limits::cpu_millis`](crate::Limits::cpu_millis)).
    pub fn new(config: RuntimeConfig) -> Result<Runtime> {
        let max_memory = usize::try_from(config.max_memory_per_instance)
            .map_err(|_| Error::Config("max_memory_per_instance does not fit in usize".into()))?;
        if config.max_instances == 0 {
            return Err(Error::Config("max_instances must be at least 1".into()));
        }
        let mut wasmtime_config = Config::new();
        wasmtime_config.epoch_interruption(true);
        wasmtime_config.wasm_component_model(true);
        // Reserve only what an instance may use, not wasmtime's 4 GiB default per memory:
        // bounds checks get explicit, but a thousand slots fit comfortably.
        wasmtime_config.memory_reservation(config.max_memory_per_instance);
        wasmtime_config.memory_reservation_for_growth(0);
        let mut pool = PoolingAllocationConfig::new();
        let instances = config.max_instances;
        // A wasip2 Rust component is a few core instances (the program, the preview1
        // adapter, shims), usually with two memories and a few tables.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_memory_size(max_memory)
            .max_memories_per_component(4)
            .max_core_instances_per_component(32);
        wasmtime_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let cache = match &config.cache_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
                // wasmtime's cache takes absolute paths only; `--data-dir ./data` is relative.
                let dir = std::path::absolute(dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
                let mut cache_config = CacheConfig::new();
                cache_config.with_directory(dir);
                let cache = Cache::new(cache_config).map_err(|e| Error::Config(chain(&e)))?;
                wasmtime_config.cache(Some(cache.clone()));
                Some(cache)
            }
            None => None,
        };
        let engine = Engine::new(&wasmtime_config).map_err(|e| Error::Config(chain(&e)))?;

        // Both kinds get WASI and outgoing `wasi:http` (a worker may call APIs too); each
        // pod's allow-list decides where its requests may go.
        let mut command_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut command_linker).map_err(|e| Error::Config(chain(&e)))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut command_linker)
            .map_err(|e| Error::Config(chain(&e)))?;
        let mut http_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut http_linker).map_err(|e| Error::Config(chain(&e)))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker)
            .map_err(|e| Error::Config(chain(&e)))?;

        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("flotilla-epoch".into())
            .spawn({
                let engine = engine.clone();
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| Error::Config(format!("starting the epoch thread: {e}")))?;

        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                http_linker,
                command_linker,
                max_memory_per_instance: max_memory,
                router: RouterSlot::default(),
                cache,
                ticker: Ticker { stop, thread: Some(thread) },
            }),
        })
    }

    /// Compiles a component (through the on-disk cache when configured) and tells its kind
    /// from its exports. CPU-heavy: call it from a blocking task.
    pub fn load(&self, wasm: &[u8]) -> Result<Image> {
        check_component_header(wasm)?;
        let engine = &self.inner.engine;
        let component = Component::from_binary(engine, wasm).map_err(|e| Error::Compile(chain(&e)))?;
        let kind = detect_kind(engine, &component)?;
        let digest = Sha256::digest(wasm).iter().fold(String::from("sha256:"), |mut hex, byte| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
            hex
        });
        Ok(Image { kind, component, digest, command_pre: Arc::default() })
    }

    /// [`load`](Self::load) from a file.
    pub fn load_file(&self, path: &Path) -> Result<Image> {
        let wasm = std::fs::read(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        self.load(&wasm)
    }

    /// How many loads the on-disk cache served, and how many it missed (`None` without one).
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.inner.cache.as_ref().map(|cache| (cache.cache_hits(), cache.cache_misses()))
    }

    /// Routes pods' outgoing `http` requests to cluster Services through `router`, in
    /// process, from now on: pods already running included. Set once, when the node's
    /// Service proxy is up (it is built after the runtime); a second call is a
    /// [`Config`](Error::Config) error and keeps the first router. Until then, and for
    /// hosts the router does not claim, pods reach only their allowed outbound hosts.
    ///
    /// The runtime holds `router` for as long as it lives. A router that holds the runtime
    /// or its pods (a proxy dispatching to this node's pods does) makes a cycle: harmless
    /// in a server that runs until the process ends; where the runtime must be dropped
    /// earlier (an in-process test cluster), let the router hold them by `Weak`.
    pub fn set_service_router(&self, router: Arc<dyn ServiceRouter>) -> Result<()> {
        if self.inner.router.set(router) {
            Ok(())
        } else {
            Err(Error::Config("the runtime's Service router is already set".into()))
        }
    }

    /// Pre-instantiates an HTTP image as a pod whose stdout and stderr go to `logs`.
    pub fn http_pod(&self, image: &Image, spec: PodSpec, logs: LogBuffer) -> Result<HttpPod> {
        HttpPod::new(self.clone(), image, spec, logs)
    }

    /// Pre-instantiates a command image as a pod whose stdout and stderr go to `logs`.
    pub fn command_pod(&self, image: &Image, spec: PodSpec, logs: LogBuffer) -> Result<CommandPod> {
        CommandPod::new(self.clone(), image, spec, logs)
    }

    pub(crate) fn memory_limit(&self, spec: &PodSpec) -> usize {
        let max = self.inner.max_memory_per_instance;
        spec.limits.memory_bytes.map_or(max, |limit| usize::try_from(limit).unwrap_or(max).min(max))
    }
}

/// A clear error for bytes that are not a component, before wasmtime's parser sees them.
fn check_component_header(wasm: &[u8]) -> Result<()> {
    let Some((magic, rest)) = wasm.split_first_chunk::<4>() else {
        return Err(Error::NotAComponent(format!("{} bytes is too short to be WebAssembly", wasm.len())));
    };
    if magic != b"\0asm" {
        return Err(Error::NotAComponent("the bytes do not start with the WebAssembly magic `\\0asm`".into()));
    }
    match rest.first_chunk::<4>() {
        // Version 0x0d, layer 1: a component.
        Some([_, _, 1, 0]) => Ok(()),
        Some([1, 0, 0, 0]) => Err(Error::NotAComponent(
            "this is a core WebAssembly module; Flotilla runs components (build for wasm32-wasip2, or \
             wrap the module with `wasm-tools component new`)"
                .into(),
        )),
        _ => Err(Error::NotAComponent("unknown WebAssembly version or layer".into())),
    }
}

fn detect_kind(engine: &Engine, component: &Component) -> Result<ImageKind> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let exports_02 = |interface: &str| {
        exports.iter().any(|name| name.strip_prefix(interface).is_some_and(|version| version.starts_with("@0.2.")))
    };
    if exports_02("wasi:http/incoming-handler") {
        Ok(ImageKind::Http)
    } else if exports_02("wasi:cli/run") {
        Ok(ImageKind::Command)
    } else {
        Err(Error::UnsupportedWorld { exports })
    }
}
