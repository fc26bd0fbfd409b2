//! Builds the `wasm-examples/` workspace for `wasm32-wasip2` with a nested cargo and
//! writes `$OUT_DIR/examples.rs`: one path constant per example, `ALL`, and the
//! `foreach_*example!` macros. See the crate docs for where the artifacts go.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const TARGET: &str = "wasm32-wasip2";
/// Examples the binary ships inside itself (built-in images): their bytes are included.
const SHIPPED: &[&str] = &["toolbox", "nginx"];
/// Overrides where the nested build puts its target directory.
const TARGET_DIR_ENV: &str = "FLOTILLA_WASM_EXAMPLES_TARGET_DIR";

/// One example crate under `wasm-examples/`.
struct Example {
    /// The crate name, e.g. `hello-http`.
    name: String,
    /// True for `cdylib` HTTP components, false for command (`bin`) components.
    http: bool,
}

impl Example {
    /// The artifact cargo writes: `cdylib`s are named after the (underscored) lib name,
    /// binaries after the crate name as it is.
    fn file_name(&self) -> String {
        if self.http { format!("{}.wasm", self.name.replace('-', "_")) } else { format!("{}.wasm", self.name) }
    }

    /// `hello-http` → `hello_http` (the ident the `foreach_*` macros pass).
    fn snake(&self) -> String {
        self.name.replace('-', "_")
    }

    /// `hello-http` → `HELLO_HTTP` (the path constant's name).
    fn upper_snake(&self) -> String {
        self.snake().to_ascii_uppercase()
    }
}

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let examples_dir = manifest_dir.join("../../wasm-examples");
    let examples_dir = examples_dir
        .canonicalize()
        .unwrap_or_else(|e| fail(&format!("cannot find the wasm examples at {}: {e}", examples_dir.display())));

    let examples = discover(&examples_dir);
    watch(&examples_dir, &examples);

    let target_dir = target_dir(&out_dir);
    ensure_target_installed();
    let started = Instant::now();
    build(&examples_dir, &target_dir);
    println!("flotilla-examples: nested build took {:.1?}", started.elapsed());

    let artifacts = target_dir.join(TARGET).join("release");
    let mut generated = String::new();
    for example in &examples {
        let path = artifacts.join(example.file_name());
        if !path.is_file() {
            fail(&format!(
                "the nested build succeeded but {} is missing: is `{}` a member of {}?",
                path.display(),
                example.name,
                examples_dir.join("Cargo.toml").display()
            ));
        }
        let kind = if example.http {
            "an HTTP component (exports `wasi:http/incoming-handler`)"
        } else {
            "a command component"
        };
        let _ = writeln!(generated, "/// Path of the `{}` example: {kind}.", example.name);
        let _ = writeln!(generated, "pub const {}: &str = {:?};", example.upper_snake(), path.display().to_string());
    }

    // The examples the binary ships as built-in images carry their bytes too.
    for example in examples.iter().filter(|e| SHIPPED.contains(&e.name.as_str())) {
        let path = artifacts.join(example.file_name());
        let _ = writeln!(generated, "/// The `{}` component's bytes, shipped inside the binary.", example.name);
        let _ = writeln!(
            generated,
            "pub static {}_WASM: &[u8] = include_bytes!({:?});",
            example.upper_snake(),
            path.display().to_string()
        );
    }
    generated.push_str("\n/// Every example as `(crate name, artifact path)`, sorted by name.\n");
    generated.push_str("pub const ALL: &[(&str, &str)] = &[\n");
    for example in &examples {
        let _ = writeln!(generated, "    ({:?}, {}),", example.name, example.upper_snake());
    }
    generated.push_str("];\n");
    write_list(&mut generated, "HTTP", "The HTTP examples' crate names.", examples.iter().filter(|e| e.http));
    write_list(&mut generated, "COMMANDS", "The command examples' crate names.", examples.iter().filter(|e| !e.http));

    write_macro(&mut generated, "foreach_example", "every example", examples.iter());
    write_macro(&mut generated, "foreach_http_example", "every HTTP example", examples.iter().filter(|e| e.http));
    write_macro(
        &mut generated,
        "foreach_command_example",
        "every command example",
        examples.iter().filter(|e| !e.http),
    );

    let generated_path = out_dir.join("examples.rs");
    fs::write(&generated_path, generated)
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", generated_path.display())));
}

/// Finds the example crates: every directory of `wasm-examples/` with a `Cargo.toml`.
fn discover(examples_dir: &Path) -> Vec<Example> {
    let entries =
        fs::read_dir(examples_dir).unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", examples_dir.display())));
    let mut examples = Vec::new();
    for entry in entries {
        let dir = entry.unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", examples_dir.display()))).path();
        let manifest = dir.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text =
            fs::read_to_string(&manifest).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", manifest.display())));
        let name = package_name(&text)
            .unwrap_or_else(|| fail(&format!("{} has no `name = \"...\"` line", manifest.display())));
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            fail(&format!("example crate name `{name}` must be lowercase ASCII letters, digits and `-`"));
        }
        let http = dir.join("src/lib.rs").is_file();
        if !http && !dir.join("src/main.rs").is_file() {
            fail(&format!("example `{name}` has neither src/lib.rs (HTTP component) nor src/main.rs (command)"));
        }
        examples.push(Example { name, http });
    }
    if examples.is_empty() {
        fail(&format!("no example crates found in {}", examples_dir.display()));
    }
    examples.sort_by(|a, b| a.name.cmp(&b.name));
    examples
}

/// The first `name = "..."` of a crate manifest (its `[package]` name, by convention).
fn package_name(manifest: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// Reruns this script when any example source, manifest or the lock file changes.
fn watch(examples_dir: &Path, examples: &[Example]) {
    println!("cargo:rerun-if-env-changed={TARGET_DIR_ENV}");
    for file in ["Cargo.toml", "Cargo.lock", "common"] {
        println!("cargo:rerun-if-changed={}", examples_dir.join(file).display());
    }
    for example in examples {
        let dir = examples_dir.join(&example.name);
        println!("cargo:rerun-if-changed={}", dir.join("Cargo.toml").display());
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
    }
}

/// A stable target directory shared by every profile of the host build, so the nested
/// build runs once and is incremental: `$FLOTILLA_WASM_EXAMPLES_TARGET_DIR`, else
/// `wasm-examples/` inside the host's target directory (the ancestor of `OUT_DIR` that
/// holds cargo's `CACHEDIR.TAG`), else inside `OUT_DIR`.
fn target_dir(out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os(TARGET_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| out_dir.join("wasm-examples-target"), |target| target.join("wasm-examples"))
}

/// Installs the `wasm32-wasip2` standard library with rustup if this toolchain lacks it.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success());
    let installed = match sysroot {
        Some(output) => {
            let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            Path::new(&sysroot).join("lib/rustlib").join(TARGET).is_dir()
        }
        // Can't tell: let the build say what is wrong.
        None => true,
    };
    if installed {
        return;
    }
    println!("cargo:warning=flotilla-examples: installing the {TARGET} target with rustup");
    let status = Command::new("rustup").args(["target", "add", TARGET]).status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("`rustup target add {TARGET}` failed ({status}); install the target and retry")),
        Err(e) => fail(&format!("the {TARGET} target is not installed and rustup could not be run ({e})")),
    }
}

/// Runs the nested `cargo build --release --target wasm32-wasip2` for the examples.
fn build(examples_dir: &Path, target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(examples_dir)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(examples_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // Keep the host build's settings out of the nested one: its flags, target, target dir
    // and profile overrides would apply to (or rebuild) the wasm, clippy's wrapper would
    // lint it, and the `CARGO_CFG_*`/`CARGO_FEATURE_*` of this build script would leak
    // into the examples' dependencies' build scripts. Jobserver, registry, network and
    // terminal settings (`CARGO_MAKEFLAGS`, `CARGO_HOME`, `CARGO_NET_*`, ...) are kept.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let leaks = matches!(
            key,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "CARGO_TARGET_DIR"
                | "CARGO_INCREMENTAL"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_CRATE_NAME"
        ) || ["CARGO_ENCODED_", "CARGO_BUILD_", "CARGO_PROFILE_", "CARGO_CFG_", "CARGO_FEATURE_"]
            .iter()
            .any(|prefix| key.starts_with(prefix));
        if leaks {
            cmd.env_remove(key);
        }
    }
    eprintln!("running: {cmd:?}");
    let status = cmd.status().unwrap_or_else(|e| fail(&format!("cannot run cargo for the wasm examples: {e}")));
    if !status.success() {
        fail(&format!(
            "building the wasm examples failed ({status}); see the cargo output above, or run\n    \
             cargo build --release --target {TARGET} --manifest-path {}",
            examples_dir.join("Cargo.toml").display()
        ));
    }
}

fn write_list<'a>(out: &mut String, name: &str, doc: &str, examples: impl Iterator<Item = &'a Example>) {
    let _ = writeln!(out, "\n/// {doc}\npub const {name}: &[&str] = &[");
    for example in examples {
        let _ = writeln!(out, "    {:?},", example.name);
    }
    out.push_str("];\n");
}

fn write_macro<'a>(out: &mut String, name: &str, what: &str, examples: impl Iterator<Item = &'a Example>) {
    let _ = writeln!(out, "\n/// Calls `$mac!(snake_name)` once for {what} (the crate name with `-` as `_`).");
    let _ = writeln!(out, "#[macro_export]\nmacro_rules! {name} {{\n    ($mac:ident) => {{");
    for example in examples {
        let _ = writeln!(out, "        $mac!({});", example.snake());
    }
    out.push_str("    };\n}\n");
}

/// Stops the build with `message` (cargo shows it with the script's output).
fn fail(message: &str) -> ! {
    panic!("flotilla-examples: {message}");
}
