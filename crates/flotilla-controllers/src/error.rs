//! The controllers' errors. A reconcile that fails is retried with a back-off per object;
//! these name what failed, with the API's answer as the source.

use flotilla_api::ApiError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request to the API server failed (`what` says which, e.g. `creating a pod`).
    #[error("{what}")]
    Api {
        what: String,
        #[source]
        source: ApiError,
    },
    /// Some of a batch of writes failed; the first failure is the source.
    #[error("{failed} of {attempted} {what} failed")]
    Batch {
        what: &'static str,
        failed: usize,
        attempted: usize,
        #[source]
        source: ApiError,
    },
    /// The metrics a decision needs could not be read.
    #[error("{0}")]
    Metrics(String),
}

impl Error {
    /// An API failure while doing `what`.
    pub(crate) fn api(what: impl Into<String>, source: ApiError) -> Self {
        Error::Api { what: what.into(), source }
    }

    /// The API's answer, when the error is a failed request.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            Error::Api { source, .. } | Error::Batch { source, .. } => Some(source),
            Error::Metrics(_) => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
