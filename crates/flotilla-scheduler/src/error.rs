//! The scheduler's errors. The loop logs and retries every failure of a write; these
//! name what failed, with the API's answer as the source.

use flotilla_api::ApiError;
use flotilla_client::ObjectKey;

/// Why a scheduler operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not a scoring strategy this scheduler knows.
    #[error("unknown scoring strategy {0:?} (expected LeastAllocated or MostAllocated)")]
    UnknownScoring(String),
    /// The `pods/binding` of a pod was refused or did not reach the server.
    #[error("binding pod {pod} to node {node}")]
    Bind {
        pod: ObjectKey,
        node: String,
        #[source]
        source: ApiError,
    },
    /// Setting `PodScheduled=False` on a pod failed.
    #[error("setting the PodScheduled condition of pod {pod}")]
    Condition {
        pod: ObjectKey,
        #[source]
        source: ApiError,
    },
    /// Creating the `FailedScheduling` Event of a pod failed.
    #[error("creating the FailedScheduling event of pod {pod}")]
    Event {
        pod: ObjectKey,
        #[source]
        source: ApiError,
    },
}

impl Error {
    /// The API's answer, when the error is a failed request.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::UnknownScoring(_) => None,
            Error::Bind { source, .. } | Error::Condition { source, .. } | Error::Event { source, .. } => Some(source),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
