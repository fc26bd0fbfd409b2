//! Flotilla's example pods, built once and handed to tests and benches.
//!
//! This crate owns the bridge between the host workspace and `wasm-examples/`, a separate
//! cargo workspace of tiny Rust components for `wasm32-wasip2` (see its `Cargo.toml`).
//! Its build script runs a nested `cargo build --release --target wasm32-wasip2` over
//! that workspace (installing the target with rustup if the toolchain lacks it) and
//! generates, per example, a constant with the absolute path of its `.wasm` component:
//!
//! | example      | kind    | what it does                                                        |
//! |--------------|---------|---------------------------------------------------------------------|
//! | `hello-http` | HTTP    | `200 text/plain`: `$GREETING from $POD_NAME\n` (`$HOSTNAME` if no `POD_NAME`) |
//! | `echo`       | HTTP    | method, path with query, `name: value` headers, blank line, body; `GET`/`PUT /fs/<path>` reads/writes the file `/<path>` (404, 403 or 500 with the error) |
//! | `cpu-burner` | HTTP    | spins for `?ms=N` ms (default 100), answers the iteration count     |
//! | `mem-hog`    | HTTP    | allocates and touches `?mb=N` MiB (default 64), answers the size    |
//! | `fetcher`    | HTTP    | `GET /?url=URL`: fetches it (outgoing `wasi:http`), answers its status, a newline, its body; 502 with the error code |
//! | `frontend`   | HTTP    | `GET /`: calls `$BACKEND_URL` (default `http://backend/`, a cluster Service), answers `frontend → STATUS BODY`; 502 with the error |
//! | `crasher`    | command | prints a line, exits `$EXIT_CODE` after `$CRASH_AFTER_MS`, or traps if `TRAP=1` |
//! | `batch`      | command | prints `batch: N primes below $LIMIT` and its args, exits 0         |
//! | `logger`     | command | `log line N` each second (every 5th to stderr too), `$LINES` lines  |
//! | `toolbox`    | command | busybox-like multicall (`sh ls cat grep tar wget curl …`): what `kubectl exec`/`kubectl cp` run in a wasm pod; applet from `argv[0]`'s basename or `argv[1]`, unknown → `sh: NAME: not found`, 127 |
//! | `nginx`      | HTTP    | stand-in for `image: nginx`: GET/HEAD static files from `/usr/share/nginx/html` (index.html, nginx-style 404/403, 405 otherwise), else the "Welcome to nginx!" page; `Server: nginx (flotilla)` |
//!
//! HTTP examples export `wasi:http/incoming-handler` (the `wasi:http/proxy` world, plus
//! `wasi:cli/environment` for their env vars); commands export `wasi:cli/run`.
//!
//! # Using the artifacts
//!
//! ```
//! let component = std::fs::read(flotilla_examples::HELLO_HTTP).expect("built by build.rs");
//! assert_eq!(&component[..4], b"\0asm");
//! assert!(flotilla_examples::ALL.iter().any(|(name, _)| *name == "hello-http"));
//! ```
//!
//! A test suite can make "every example has a test" a compile-time fact, as wasmtime's
//! test-programs do: write one test function per example, named after it, then
//!
//! ```text
//! macro_rules! assert_test_exists {
//!     ($name:ident) => {
//!         #[allow(unused_imports)]
//!         use self::$name as _;
//!     };
//! }
//! flotilla_examples::foreach_example!(assert_test_exists);
//! ```
//!
//! # Rebuilding and where artifacts go
//!
//! Any change under `wasm-examples/` (a crate's `Cargo.toml` or `src/`, `common/`, the
//! workspace `Cargo.toml` or `Cargo.lock`) reruns the build script on the next
//! `cargo build`/`test`/`clippy` of anything that depends on this crate; the nested
//! build is incremental. Artifacts land in
//! `<host target dir>/wasm-examples/wasm32-wasip2/release/<name>.wasm` (`-` becomes `_`
//! for the HTTP `cdylib`s), one directory shared by every host profile, or under
//! `$FLOTILLA_WASM_EXAMPLES_TARGET_DIR` if set. To build them by hand:
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 --manifest-path wasm-examples/Cargo.toml
//! ```
//!
//! To add an example: create `wasm-examples/<name>/` with `src/lib.rs` (HTTP, a
//! `cdylib`) or `src/main.rs` (command), add it to the examples workspace's `members`,
//! and give it a test wherever `foreach_example!` is asserted.

include!(concat!(env!("OUT_DIR"), "/examples.rs"));

/// The artifact path of the example crate called `name` (e.g. `"hello-http"`).
pub fn path(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(example, _)| *example == name).map(|(_, path)| *path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Component-model binaries: `\0asm`, then version `0x0d` and layer `1`
    /// (core modules have version 1, layer 0: `01 00 00 00`).
    const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    fn check_component(name: &str, path: &str) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: cannot read {path}: {e}"));
        assert!(bytes.len() > COMPONENT_HEADER.len(), "{name}: {path} is empty or truncated");
        assert_eq!(bytes[..8], COMPONENT_HEADER, "{name}: {path} is not a wasm component");
    }

    #[test]
    fn every_artifact_is_a_component() {
        assert!(!ALL.is_empty());
        for (name, path) in ALL {
            check_component(name, path);
        }
    }

    #[test]
    fn kinds_partition_all() {
        let mut kinds: Vec<&str> = HTTP.iter().chain(COMMANDS).copied().collect();
        kinds.sort_unstable();
        let names: Vec<&str> = ALL.iter().map(|(name, _)| *name).collect();
        assert_eq!(kinds, names);
        assert_eq!(path("hello-http"), Some(HELLO_HTTP));
        assert_eq!(path("no-such-example"), None);
    }

    #[test]
    fn expected_examples_are_built() {
        for name in [
            "hello-http",
            "echo",
            "cpu-burner",
            "mem-hog",
            "fetcher",
            "frontend",
            "crasher",
            "batch",
            "logger",
            "toolbox",
            "nginx",
        ] {
            assert!(path(name).is_some(), "{name} missing from ALL");
        }
        for name in ["hello-http", "echo", "cpu-burner", "mem-hog", "fetcher", "frontend", "nginx"] {
            assert!(HTTP.contains(&name), "{name} should be an HTTP component");
        }
        for name in ["crasher", "batch", "logger", "toolbox"] {
            assert!(COMMANDS.contains(&name), "{name} should be a command component");
        }
    }

    /// One test per example, generated by the macro: each checks its own artifact.
    macro_rules! artifact_test {
        ($name:ident) => {
            #[test]
            fn $name() {
                let name = stringify!($name).replace('_', "-");
                let path = path(&name).unwrap_or_else(|| panic!("{name} is in foreach_example! but not in ALL"));
                check_component(&name, path);
            }
        };
    }
    foreach_example!(artifact_test);

    #[test]
    fn foreach_example_covers_all() {
        let mut seen = Vec::new();
        macro_rules! collect {
            ($name:ident) => {
                seen.push(stringify!($name).replace('_', "-"));
            };
        }
        foreach_example!(collect);
        let mut http = Vec::new();
        macro_rules! collect_http {
            ($name:ident) => {
                http.push(stringify!($name).replace('_', "-"));
            };
        }
        foreach_http_example!(collect_http);
        let mut commands = Vec::new();
        macro_rules! collect_command {
            ($name:ident) => {
                commands.push(stringify!($name).replace('_', "-"));
            };
        }
        foreach_command_example!(collect_command);
        assert_eq!(seen, ALL.iter().map(|(name, _)| name.to_string()).collect::<Vec<_>>());
        assert_eq!(http, HTTP);
        assert_eq!(commands, COMMANDS);
    }
}
