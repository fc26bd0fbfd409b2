//! Commands run inside a running pod (`kubectl exec`): a fresh `wasi:cli/run` instance
//! of a command image, in the pod's own sandbox.
//!
//! The instance gets what the pod's instances get — its env, its preopened directories,
//! its outbound allow-list and Service routing, a share of its memory account and CPU
//! quota — plus its own argv and the caller's streams as stdin, stdout and stderr. So a
//! command run in a pod sees exactly the pod's world and nothing else of the node; an
//! exec that allocates past the pod's memory limit is OOM-killed like any of the pod's
//! instances. The caller owns the instance's lifetime: dropping the future kills it.
//!
//! A terminal (`tty`) is only a flag here: `wasi:cli/terminal-*` tell the command that its
//! stdio is a terminal, and `TERM` is set. The line discipline a kernel's pty would add
//! (echo, `CR` → `NL`, `^C`) is the caller's.

use std::fmt;

use tokio::io::{AsyncRead, AsyncWrite};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream};

use crate::command::{Exit, run_command};
use crate::runtime::{Image, ImageKind, Runtime};
use crate::state::{PodContext, Stdio};

/// A reader the exec's stdin comes from.
pub type ExecReader = Box<dyn AsyncRead + Send + Sync + Unpin>;
/// A writer the exec's stdout or stderr goes to.
pub type ExecWriter = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// Bytes an exec's output stream accepts before the command waits for the caller to
/// take them.
const OUTPUT_BUDGET: usize = 64 * 1024;

/// An exec's argv and streams. A stream left `None` is empty (stdin) or discarded
/// (stdout, stderr), as with `kubectl exec` without `-i`.
#[derive(Default)]
pub struct ExecIo {
    /// `argv`, `argv[0]` included (`["ls", "-l", "/"]`).
    pub args: Vec<String>,
    pub stdin: Option<ExecReader>,
    pub stdout: Option<ExecWriter>,
    pub stderr: Option<ExecWriter>,
    /// Whether the streams are a terminal (`kubectl exec -t`).
    pub tty: bool,
    /// Variables set for this command over the pod's (`COLUMNS`, `LINES` of a terminal).
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecIo")
            .field("args", &self.args)
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("tty", &self.tty)
            .field("env", &self.env)
            .finish()
    }
}

impl ExecIo {
    /// Puts the argv and the streams into an instance's WASI context.
    pub(crate) fn install(self, builder: &mut WasiCtxBuilder) {
        let tty = self.tty;
        builder.args(&self.args);
        if let Some(stdin) = self.stdin {
            builder.stdin(Terminal { stream: AsyncStdinStream::new(stdin), tty });
        }
        let output = |writer: Option<ExecWriter>| {
            let writer: ExecWriter = writer.unwrap_or_else(|| Box::new(tokio::io::sink()));
            Terminal { stream: AsyncStdoutStream::new(OUTPUT_BUDGET, writer), tty }
        };
        builder.stdout(output(self.stdout));
        builder.stderr(output(self.stderr));
        if tty {
            builder.env("TERM", "xterm");
        }
        builder.envs(&self.env);
    }
}

/// A stdio stream that says whether it is a terminal.
struct Terminal<S> {
    stream: S,
    tty: bool,
}

impl<S> IsTerminal for Terminal<S> {
    fn is_terminal(&self) -> bool {
        self.tty
    }
}

impl<S: StdinStream> StdinStream for Terminal<S> {
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        self.stream.async_stream()
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        self.stream.p2_stream()
    }
}

impl<S: StdoutStream> StdoutStream for Terminal<S> {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        self.stream.async_stream()
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        self.stream.p2_stream()
    }
}

/// Runs `image` (a command) with `io` in `pod`'s sandbox, to its exit.
pub(crate) async fn run(runtime: &Runtime, pod: &PodContext, image: &Image, io: ExecIo) -> Exit {
    if image.kind != ImageKind::Command {
        return Exit::StartError(format!("the image is {}, not a command that can be run", image.kind));
    }
    let pre = match image.command_pre(runtime) {
        Ok(pre) => pre,
        Err(error) => return Exit::StartError(error.to_string()),
    };
    // The store, dropped inside, closes the streams: the caller sees EOF on its readers.
    run_command(&pre, pod, Stdio::Exec(io), None).await
}
