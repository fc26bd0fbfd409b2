//! The runtime's errors: [`Error`] for loading images and setting pods up, [`PodError`] for
//! one HTTP request.

use std::path::PathBuf;

/// Why the runtime could not load an image or set a pod up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("not a wasm component: {0}")]
    NotAComponent(String),
    #[error(
        "unsupported world: the component exports neither `wasi:http/incoming-handler@0.2` nor \
         `wasi:cli/run@0.2`; it exports [{}]",
        exports.join(", ")
    )]
    UnsupportedWorld { exports: Vec<String> },
    #[error("the image is {actual}, a {expected} pod needs {expected_world}")]
    WrongKind { expected: &'static str, expected_world: &'static str, actual: crate::ImageKind },
    #[error("compiling the component: {0}")]
    Compile(String),
    #[error("linking the component (does it import an interface the runtime does not provide?): {0}")]
    Link(String),
    #[error("preopening `{host}` as `{guest}`: {message}")]
    Preopen { host: PathBuf, guest: String, message: String },
    #[error("reading `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// An entry of `PodSpec::allowed_outbound_hosts` is not `HOST`, `HOST:PORT` or `HOST:*`.
    #[error("invalid allowed outbound host `{entry}`: {reason}")]
    InvalidOutboundHost { entry: String, reason: &'static str },
    /// A pod's limit is out of range (a CPU quota of 0).
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an HTTP pod did not answer a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PodError {
    /// The instance trapped (a panic, `unreachable`, a host error it could not handle).
    #[error("the pod trapped: {message}")]
    Trap { message: String },
    /// The instance tried to grow its memory past the pod's limit.
    #[error("the pod went over its memory limit")]
    OutOfMemory,
    /// The request ran past the pod's request timeout.
    #[error("the pod did not answer within its request timeout")]
    Timeout,
    /// The component answered with a `wasi:http` error code instead of a response.
    #[error("the pod answered with an error: {0}")]
    ErrorCode(String),
    /// The component returned without setting a response.
    #[error("the pod returned without sending a response")]
    NoResponse,
    /// The request could not be handed to the component.
    #[error("the request could not be passed to the pod: {0}")]
    BadRequest(String),
}

/// A wasmtime error with its causes, `outer: inner: root`.
pub(crate) fn chain(error: &wasmtime::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if message.contains(&cause) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&cause);
    }
    message
}
