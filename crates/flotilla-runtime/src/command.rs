//! Command pods: one `wasi:cli/run` instance whose exit is the container's exit.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime_wasi::p2::bindings::CommandPre;

use crate::error::{Error, Result};
use crate::exec::ExecIo;
use crate::logs::{LogBuffer, LogStream};
use crate::runtime::{Image, ImageKind, Runtime};
use crate::spec::PodSpec;
use crate::state::{Failure, Instance, PodContext, PodState, Stdio};

/// How a command pod's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `wasi:cli/run` returned (`Ok` is 0, `Err` is 1) or the program exited with a code.
    Code(i32),
    /// The instance trapped; the message says where and why.
    Trap(String),
    /// The instance tried to grow its memory past the pod's limit (`OOMKilled`).
    OutOfMemory,
    /// The run outlived `limits.active_deadline`.
    DeadlineExceeded,
    /// The instance could not be started (a preopened directory vanished, a pool is full).
    StartError(String),
}

impl Exit {
    /// Whether the run succeeded (exit code 0).
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }
}

/// A command pod, pre-instantiated. Cheap to clone; each [`run`](Self::run) is a fresh
/// instance, so a restart is `pod.clone().run()`.
#[derive(Clone)]
pub struct CommandPod {
    inner: Arc<Inner>,
}

struct Inner {
    // Keeps the epoch ticker alive while the pod is; links the images it execs.
    runtime: Runtime,
    pre: CommandPre<PodState>,
    pod: PodContext,
}

impl fmt::Debug for CommandPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandPod")
            .field("spec", &self.inner.pod.spec)
            .field("memory_limit", &self.inner.pod.memory_limit)
            .field("cpu_time", &self.cpu_time())
            .finish_non_exhaustive()
    }
}

impl CommandPod {
    pub(crate) fn new(runtime: Runtime, image: &Image, spec: PodSpec, logs: LogBuffer) -> Result<CommandPod> {
        if image.kind != ImageKind::Command {
            return Err(Error::WrongKind { expected: "command", expected_world: "wasi:cli/run", actual: image.kind });
        }
        let pre = image.command_pre(&runtime)?;
        let pod = PodContext::new(pre.engine(), runtime.memory_limit(&spec), spec, logs, runtime.inner.router.clone())?;
        Ok(CommandPod { inner: Arc::new(Inner { runtime, pre, pod }) })
    }

    /// Runs a command (`image`, with `io`'s argv and streams) in this pod's sandbox:
    /// `kubectl exec`. See [`ExecIo`].
    pub async fn exec(&self, image: &Image, io: ExecIo) -> Exit {
        crate::exec::run(&self.inner.runtime, &self.inner.pod, image, io).await
    }

    /// The pod's log.
    pub fn logs(&self) -> &LogBuffer {
        &self.inner.pod.logs
    }

    /// The CPU time the pod's runs have used so far (cumulative over restarts, best
    /// effort: time the instance held a thread, see [`Limits::cpu_millis`](crate::Limits::cpu_millis)).
    pub fn cpu_time(&self) -> Duration {
        self.inner.pod.cpu.used()
    }

    /// Bytes of linear memory the pod's running instance holds now.
    pub fn memory_bytes(&self) -> u64 {
        self.inner.pod.memory.current()
    }

    /// The most linear memory the pod's runs have held.
    pub fn memory_peak_bytes(&self) -> u64 {
        self.inner.pod.memory.peak()
    }

    /// Instantiates the component and calls `wasi:cli/run`. The future is `Send + 'static`
    /// (spawn it); dropping it kills the instance. The log is flushed (a last partial line
    /// becomes a line) but not closed; a trap, an OOM kill or the deadline add a last
    /// stderr line saying so.
    pub async fn run(self) -> Exit {
        self.run_with_stdin(None).await
    }

    /// [`run`](Self::run) with `stdin` as the instance's standard input (a container with
    /// `stdin: true`, which `kubectl attach -i` writes to); EOF when it ends.
    pub async fn run_with_stdin(self, stdin: Option<crate::ExecReader>) -> Exit {
        let inner = &self.inner;
        let active_deadline = inner.pod.spec.limits.active_deadline;
        // A deadline past what the clock holds is no deadline.
        let deadline = active_deadline.and_then(|timeout| Instant::now().checked_add(timeout));
        let exit = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), self.run_instance(Some(deadline), stdin))
                .await
                .unwrap_or(Exit::DeadlineExceeded),
            None => self.run_instance(None, stdin).await,
        };
        let logs = &inner.pod.logs;
        logs.flush_partial();
        match &exit {
            Exit::Trap(message) => logs.push(LogStream::Stderr, format!("trapped: {message}")),
            Exit::OutOfMemory => logs.push(
                LogStream::Stderr,
                format!("OOMKilled: went over the memory limit of {} bytes", inner.pod.memory_limit),
            ),
            Exit::DeadlineExceeded => {
                let after = active_deadline.map(|deadline| format!(" of {deadline:?}")).unwrap_or_default();
                logs.push(LogStream::Stderr, format!("DeadlineExceeded: killed at its active deadline{after}"));
            }
            Exit::Code(_) | Exit::StartError(_) => {}
        }
        exit
    }

    async fn run_instance(&self, deadline: Option<Instant>, stdin: Option<crate::ExecReader>) -> Exit {
        let inner = &self.inner;
        run_command(&inner.pre, &inner.pod, Stdio::Logs(stdin), deadline).await
    }
}

/// Instantiates `pre` in a fresh store of `pod` (its limits, CPU quota and memory account)
/// with `stdio`, and calls `wasi:cli/run`.
pub(crate) async fn run_command(
    pre: &CommandPre<PodState>,
    pod: &PodContext,
    stdio: Stdio,
    deadline: Option<Instant>,
) -> Exit {
    let Instance { mut store, outcome, meter } = match pod.new_store_with(pre.engine(), deadline, stdio) {
        Ok(instance) => instance,
        Err(error) => return Exit::StartError(error.to_string()),
    };
    pod.cpu.wait_for_quota().await;
    meter
        .run(async {
            let command = match pre.instantiate_async(&mut store).await {
                Ok(command) => command,
                Err(error) => {
                    return match outcome.classify(&error) {
                        Failure::Trap(message) => Exit::StartError(message),
                        failure => failure_exit(failure),
                    };
                }
            };
            match command.wasi_cli_run().call_run(&mut store).await {
                Ok(Ok(())) => Exit::Code(0),
                Ok(Err(())) => Exit::Code(1),
                Err(error) => failure_exit(outcome.classify(&error)),
            }
        })
        .await
}

pub(crate) fn failure_exit(failure: Failure) -> Exit {
    match failure {
        Failure::Exit(code) => Exit::Code(code),
        Failure::Trap(message) => Exit::Trap(message),
        Failure::OutOfMemory => Exit::OutOfMemory,
        Failure::DeadlineExceeded => Exit::DeadlineExceeded,
    }
}
