//! What every applet gets besides its arguments and streams: the working directory and
//! the environment, plus path and error helpers shared by the applets.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

/// An applet's view of its "process": cwd and environment, owned by the caller. The
/// shell builds a fresh one per command, so an applet's changes never leak back.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// Absolute, normalized working directory (`/` on wasi unless `$PWD` says otherwise).
    pub cwd: String,
    /// The exported environment.
    pub env: BTreeMap<String, String>,
    /// Whether stdout is the terminal (`ls` prints columns then).
    pub tty: bool,
    /// How deeply nested this call is (shells, functions, substitutions): a script that
    /// runs itself ends with an error instead of overflowing the stack.
    pub depth: usize,
}

impl Ctx {
    /// The process's own cwd and environment.
    pub fn from_process() -> Ctx {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let cwd = env
            .get("PWD")
            .filter(|p| p.starts_with('/'))
            .cloned()
            .or_else(|| std::env::current_dir().ok().map(|p| p.to_string_lossy().into_owned()))
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/".to_owned());
        Ctx { cwd: normalize(&cwd), env, tty: stdout_is_terminal(), depth: 0 }
    }

    /// `path` made absolute against the cwd and normalized (`.`/`..` removed lexically).
    pub fn abs(&self, path: &str) -> String {
        if path.starts_with('/') { normalize(path) } else { normalize(&format!("{}/{}", self.cwd, path)) }
    }

    /// [`Ctx::abs`] as a `PathBuf`, what `std::fs` is called with.
    pub fn resolve(&self, path: &str) -> PathBuf {
        PathBuf::from(self.abs(path))
    }

    /// An environment variable.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }
}

/// Lexical normalization of an absolute path: `/a/./b/../c/` → `/a/c`.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The message coreutils prints for an I/O error (`No such file or directory`), without
/// Rust's ` (os error N)` suffix.
pub fn err_msg(error: &io::Error) -> String {
    use io::ErrorKind::*;
    match error.kind() {
        NotFound => "No such file or directory".to_owned(),
        PermissionDenied => "Permission denied".to_owned(),
        AlreadyExists => "File exists".to_owned(),
        NotADirectory => "Not a directory".to_owned(),
        IsADirectory => "Is a directory".to_owned(),
        DirectoryNotEmpty => "Directory not empty".to_owned(),
        ReadOnlyFilesystem => "Read-only file system".to_owned(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
    }
}

/// Basename as `basename(1)` gives it (`/a/b/` → `b`, `/` → `/`).
pub fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.is_empty() { "" } else { "/" };
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Dirname as `dirname(1)` gives it (`a` → `.`, `/a` → `/`, `a/b/` → `a`).
pub fn dirname(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if path.starts_with('/') { "/" } else { "." };
    }
    match trimmed.rfind('/') {
        None => ".",
        Some(at) => {
            let dir = trimmed[..at].trim_end_matches('/');
            if dir.is_empty() { "/" } else { dir }
        }
    }
}

/// The directories the host preopened, by guest path (wasi only; empty elsewhere). Asked
/// once: every directory listing consults them.
#[cfg(target_os = "wasi")]
pub fn preopens() -> Vec<String> {
    static PREOPENS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    PREOPENS
        .get_or_init(|| wasi::filesystem::preopens::get_directories().into_iter().map(|(_, path)| path).collect())
        .clone()
}

/// The directories the host preopened, by guest path (wasi only; empty elsewhere).
#[cfg(not(target_os = "wasi"))]
pub fn preopens() -> Vec<String> {
    Vec::new()
}

/// Whether stdin is a terminal (the host's `wasi:cli/terminal-stdin`).
#[cfg(target_os = "wasi")]
pub fn stdin_is_terminal() -> bool {
    wasi::cli::terminal_stdin::get_terminal_stdin().is_some()
}

/// Whether stdout is a terminal (the host's `wasi:cli/terminal-stdout`).
#[cfg(target_os = "wasi")]
pub fn stdout_is_terminal() -> bool {
    wasi::cli::terminal_stdout::get_terminal_stdout().is_some()
}

/// Whether stdout is a terminal.
#[cfg(not(target_os = "wasi"))]
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

/// Whether stdin is a terminal.
#[cfg(not(target_os = "wasi"))]
pub fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(normalize("/a/./b/../c/"), "/a/c");
        assert_eq!(normalize("/../.."), "/");
        let ctx = Ctx { cwd: "/data".into(), env: BTreeMap::new(), tty: false, depth: 0 };
        assert_eq!(ctx.abs("x/../y"), "/data/y");
        assert_eq!(ctx.abs("/tmp"), "/tmp");
        assert_eq!(basename("/a/b/"), "b");
        assert_eq!(basename("/"), "/");
        assert_eq!(dirname("a"), ".");
        assert_eq!(dirname("/a"), "/");
        assert_eq!(dirname("a/b/"), "a");
    }
}
