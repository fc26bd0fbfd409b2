//! The node's image store: what a container's `image:` names, found on disk and compiled
//! once per file.
//!
//! `image:` is resolved, in order, as:
//! - `file:///abs/path.wasm`: that file, on a node that allows them
//!   ([`ImageStore::allow_file_images`], the `--allow-file-images` flag): a file path
//!   reads any file the node can, so by default such a pod is refused (`ErrImagePull`,
//!   with [`ImageError::Forbidden`]);
//! - `NAME[:TAG]` (`latest` when no tag; a registry prefix such as `ghcr.io/org/` is part
//!   of the name): `DIR/NAME/TAG.wasm` in each image directory, and for the preloaded
//!   directories also `DIR/NAME.wasm` as `NAME:latest`.
//!
//! The first directory is where `flotilla image push` stores images; the others are
//! preloaded read-only (`--images DIR`).

use flotilla_runtime::{Image, Runtime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Why an image could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// No such image: the container waits in `ErrImagePull` / `ImagePullBackOff`.
    #[error("{0}")]
    NotFound(String),
    /// The file is there but is not a component this runtime can run.
    #[error("{0}")]
    Invalid(String),
    /// The node does not run such images (a `file://` path, unless allowed).
    #[error("{0}")]
    Forbidden(String),
}

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    File(PathBuf),
    Named { name: String, tag: String },
}

impl ImageRef {
    pub fn parse(image: &str) -> Result<ImageRef, ImageError> {
        let image = image.trim();
        if let Some(path) = image.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(ImageError::NotFound(format!("image \"{image}\": a file:// path must be absolute")));
            }
            return Ok(ImageRef::File(path));
        }
        let (name, tag) = flotilla_api::parse_image_reference(image).map_err(ImageError::NotFound)?;
        Ok(ImageRef::Named { name: name.to_string(), tag: tag.to_string() })
    }
}

/// A compiled image and the size and mtime of the file it came from.
type Compiled = (u64, Option<SystemTime>, Image);

/// The node's images and their compiled forms. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    runtime: Runtime,
    /// Where pushed images live (first) and preloaded directories.
    dirs: Vec<PathBuf>,
    /// Images preloaded by name (`NAME:TAG` → file), looked up before the directories.
    named: Mutex<HashMap<String, PathBuf>>,
    /// The API server's registry, for an agent in another process: named images it does
    /// not have are downloaded from there.
    remote: std::sync::OnceLock<flotilla_client::Client>,
    /// Built-in images by name, whatever the tag (`busybox`, `nginx`).
    builtin: Mutex<HashMap<String, PathBuf>>,
    /// The toolbox commands run by `kubectl exec` come from.
    toolbox: std::sync::OnceLock<PathBuf>,
    /// Whether `file://` images may be run.
    file_images: AtomicBool,
    /// Compiled images by file, valid while the file's size and mtime stay the same.
    compiled: Mutex<HashMap<PathBuf, Compiled>>,
    /// Loads served from `compiled`, and loads that compiled.
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ImageStore {
    /// A store whose pushed images live in `push_dir`, also reading `preloaded` dirs.
    pub fn new(runtime: Runtime, push_dir: PathBuf, preloaded: Vec<PathBuf>) -> ImageStore {
        let mut dirs = vec![push_dir];
        dirs.extend(preloaded);
        let inner = Inner {
            runtime,
            dirs,
            named: Mutex::new(HashMap::new()),
            remote: std::sync::OnceLock::new(),
            builtin: Mutex::new(HashMap::new()),
            toolbox: std::sync::OnceLock::new(),
            file_images: AtomicBool::new(false),
            compiled: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        ImageStore { inner: Arc::new(inner) }
    }

    /// Makes `file` available as `image` (`NAME[:TAG]`), e.g. the built-in examples.
    pub fn preload(&self, image: &str, file: PathBuf) -> Result<(), ImageError> {
        let ImageRef::Named { name, tag } = ImageRef::parse(image)? else {
            return Err(ImageError::Invalid(format!("preloading {image}: a preloaded image needs NAME[:TAG]")));
        };
        self.inner
            .named
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(format!("{name}:{tag}"), file);
        Ok(())
    }

    /// Makes `file` the built-in image `name` with any tag (`busybox:1.36` is `busybox`),
    /// found after pushed and preloaded images: an image pushed under the same name wins.
    pub fn builtin(&self, name: &str, file: PathBuf) {
        self.inner.builtin.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_string(), file);
    }

    /// Built-in image names and their files.
    pub fn builtins(&self) -> Vec<(String, PathBuf)> {
        let builtin = self.inner.builtin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = builtin.iter().map(|(n, f)| (n.clone(), f.clone())).collect();
        all.sort();
        all
    }

    /// Sets the toolbox `kubectl exec` runs commands from (once).
    pub fn set_toolbox(&self, file: PathBuf) {
        let _ = self.inner.toolbox.set(file);
    }

    /// The toolbox, compiled.
    pub fn toolbox(&self) -> Result<Image, ImageError> {
        let path = self
            .inner
            .toolbox
            .get()
            .ok_or_else(|| ImageError::NotFound("this node has no toolbox to run commands with".into()))?;
        self.load_path(path.clone(), "the toolbox")
    }

    /// Lets pods run `file:///PATH` images (refused by default: the path may name any
    /// file the node can read).
    pub fn allow_file_images(&self, allowed: bool) {
        self.inner.file_images.store(allowed, Ordering::Relaxed);
    }

    /// Downloads named images this store lacks from the API server's registry
    /// (`GET /flotilla/v1/images/NAME:TAG`), as an agent in another process must.
    pub fn pull_from(&self, client: flotilla_client::Client) {
        let _ = self.inner.remote.set(client);
    }

    /// Makes sure `image` is here, pulling it from the registry when this store has a
    /// remote and lacks it.
    pub async fn pull(&self, image: &str) -> Result<(), ImageError> {
        let missing = match self.locate(image) {
            Ok(_) => return Ok(()),
            Err(missing) => missing,
        };
        let (Some(client), ImageRef::Named { name, tag }) = (self.inner.remote.get(), ImageRef::parse(image)?) else {
            return Err(missing);
        };
        let reference = format!("{name}:{tag}");
        let response = client
            .get(&format!("/flotilla/v1/images/{reference}"))
            .await
            .map_err(|e| ImageError::NotFound(format!("pulling image \"{reference}\": {e}")))?;
        if !response.status.is_success() {
            let error = response.api_error();
            return Err(ImageError::NotFound(format!("pulling image \"{reference}\": {}", error.message)));
        }
        self.push(&reference, &response.body)?;
        Ok(())
    }

    /// The file `image` names, if the store has it.
    pub fn locate(&self, image: &str) -> Result<PathBuf, ImageError> {
        match ImageRef::parse(image)? {
            ImageRef::File(_) if !self.inner.file_images.load(Ordering::Relaxed) => {
                Err(ImageError::Forbidden(format!(
                    "image \"{image}\": file:// images are not allowed on this node (start it with \
                 --allow-file-images to allow them, or push the image: `flotilla image push NAME:TAG FILE.wasm`)"
                )))
            }
            ImageRef::File(path) if path.is_file() => Ok(path),
            ImageRef::File(path) => {
                Err(ImageError::NotFound(format!("image \"{image}\": {} does not exist", path.display())))
            }
            ImageRef::Named { name, tag } => {
                let named = self.inner.named.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(file) = named.get(&format!("{name}:{tag}")).filter(|f| f.is_file()) {
                    return Ok(file.clone());
                }
                drop(named);
                for (index, dir) in self.inner.dirs.iter().enumerate() {
                    let candidate = dir.join(&name).join(format!("{tag}.wasm"));
                    if candidate.is_file() {
                        return Ok(candidate);
                    }
                    if index > 0 && tag == "latest" {
                        let flat = dir.join(format!("{name}.wasm"));
                        if flat.is_file() {
                            return Ok(flat);
                        }
                    }
                }
                let builtin = self.inner.builtin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(file) = builtin.get(&name).filter(|f| f.is_file()) {
                    return Ok(file.clone());
                }
                drop(builtin);
                Err(ImageError::NotFound(format!(
                    "image \"{name}:{tag}\" not found in the node's image store (push it with `flotilla image push \
                     {name}:{tag} FILE.wasm`, or use file:///path.wasm)"
                )))
            }
        }
    }

    /// The compiled component `image` names: compiled once per file version, and from
    /// the runtime's on-disk cache after a restart.
    pub fn load(&self, image: &str) -> Result<Image, ImageError> {
        let path = self.locate(image)?;
        self.load_path(path, image)
    }

    fn load_path(&self, path: PathBuf, image: &str) -> Result<Image, ImageError> {
        let meta = std::fs::metadata(&path).map_err(|e| ImageError::NotFound(format!("{}: {e}", path.display())))?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        let cached = self.lock().get(&path).filter(|(l, m, _)| *l == len && *m == modified).map(|(_, _, i)| i.clone());
        if let Some(image) = cached {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(image);
        }
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let compiled = self
            .inner
            .runtime
            .load_file(&path)
            .map_err(|e| ImageError::Invalid(format!("image \"{image}\" ({}): {e}", path.display())))?;
        self.lock().insert(path, (len, modified, compiled.clone()));
        Ok(compiled)
    }

    /// Stores `wasm` as `NAME:TAG` (a push), replacing any earlier image of that name.
    pub fn push(&self, image: &str, wasm: &[u8]) -> Result<PathBuf, ImageError> {
        let ImageRef::Named { name, tag } = ImageRef::parse(image)? else {
            return Err(ImageError::Invalid("push needs NAME:TAG, not a file:// path".into()));
        };
        let path = self.inner.dirs[0].join(&name).join(format!("{tag}.wasm"));
        write_atomically(&path, wasm).map_err(|e| ImageError::Invalid(format!("storing {}: {e}", path.display())))?;
        Ok(path)
    }

    /// How many loads found the image compiled already, and how many compiled it.
    pub fn cache_stats(&self) -> (u64, u64) {
        (self.inner.hits.load(Ordering::Relaxed), self.inner.misses.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Compiled>> {
        self.inner.compiled.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half an image.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension(format!("wasm.{}.tmp", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_names_or_absolute_files() {
        let named = |n: &str, t: &str| ImageRef::Named { name: n.into(), tag: t.into() };
        assert_eq!(ImageRef::parse("hello-http:1").ok(), Some(named("hello-http", "1")));
        assert_eq!(ImageRef::parse("file:///tmp/a.wasm").ok(), Some(ImageRef::File("/tmp/a.wasm".into())));
        assert!(ImageRef::parse("file://relative.wasm").is_err());
        assert!(ImageRef::parse("../etc/passwd").is_err());
    }
}
