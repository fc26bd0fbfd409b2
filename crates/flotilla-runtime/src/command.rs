//! Command pods: one `wasi:cli/run` instance whose exit is the container's exit.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use wasmtime_wasi::p2::bindings::CommandPre;

use crate::error::{Error, Result, chain};
use crate::logs::{LogBuffer, LogStream};
use crate::runtime::{Image, ImageKind, Runtime};
use crate::spec::PodSpec;
use crate::state::{Failure, PodState, new_store};

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
    // Keeps the epoch ticker alive while the pod is.
    _runtime: Runtime,
    pre: CommandPre<PodState>,
    spec: PodSpec,
    logs: LogBuffer,
    memory_limit: usize,
}

impl fmt::Debug for CommandPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandPod")
            .field("spec", &self.inner.spec)
            .field("memory_limit", &self.inner.memory_limit)
            .finish_non_exhaustive()
    }
}

impl CommandPod {
    pub(crate) fn new(runtime: Runtime, image: &Image, spec: PodSpec, logs: LogBuffer) -> Result<CommandPod> {
        if image.kind != ImageKind::Command {
            return Err(Error::WrongKind { expected: "command", expected_world: "wasi:cli/run", actual: image.kind });
        }
        let instance_pre =
            runtime.inner.command_linker.instantiate_pre(&image.component).map_err(|e| Error::Link(chain(&e)))?;
        let pre = CommandPre::new(instance_pre).map_err(|e| Error::Link(chain(&e)))?;
        let memory_limit = runtime.memory_limit(&spec);
        // Fail now, not at run time, if a preopened directory cannot be opened.
        new_store(pre.engine(), &spec, &logs, memory_limit, None)?;
        Ok(CommandPod { inner: Arc::new(Inner { _runtime: runtime, pre, spec, logs, memory_limit }) })
    }

    /// The pod's log.
    pub fn logs(&self) -> &LogBuffer {
        &self.inner.logs
    }

    /// Instantiates the component and calls `wasi:cli/run`. The future is `Send + 'static`
    /// (spawn it); dropping it kills the instance. The log is flushed (a last partial line
    /// becomes a line) but not closed.
    pub async fn run(self) -> Exit {
        let inner = &self.inner;
        let deadline = inner.spec.limits.active_deadline.map(|timeout| Instant::now() + timeout);
        let exit = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), self.run_instance(Some(deadline)))
                .await
                .unwrap_or(Exit::DeadlineExceeded),
            None => self.run_instance(None).await,
        };
        inner.logs.flush_partial();
        if let Exit::Trap(message) = &exit {
            inner.logs.push(LogStream::Stderr, format!("trapped: {message}"));
        }
        exit
    }

    async fn run_instance(&self, deadline: Option<Instant>) -> Exit {
        let inner = &self.inner;
        let (mut store, outcome) =
            match new_store(inner.pre.engine(), &inner.spec, &inner.logs, inner.memory_limit, deadline) {
                Ok(store) => store,
                Err(error) => return Exit::StartError(error.to_string()),
            };
        let command = match inner.pre.instantiate_async(&mut store).await {
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
    }
}

fn failure_exit(failure: Failure) -> Exit {
    match failure {
        Failure::Exit(code) => Exit::Code(code),
        Failure::Trap(message) => Exit::Trap(message),
        Failure::OutOfMemory => Exit::OutOfMemory,
        Failure::DeadlineExceeded => Exit::DeadlineExceeded,
    }
}
