//! Why a reconcile of a PGUpgrade failed.
//!
//! Problems with the request itself (unsupported versions, a missing Cluster, a failed check)
//! are not errors: the state machine turns them into conditions. What is left are API calls
//! that failed; most are transient and retried with backoff. Messages hold object names and
//! the API server's text, never a Secret's content.

use tusk_runtime::apply::ApplyError;
use tusk_runtime::error::ReconcileError;

/// Reason: a Kubernetes API call failed.
pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";
/// Reason: an object to create or apply could not be built or was refused.
pub const APPLY_FAILED: &str = "ApplyFailed";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Observe {
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{what}: {source}")]
    Act {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("{0}")]
    Apply(#[from] ApplyError),
}

impl Error {
    pub(crate) fn observe(what: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Observe {
            what,
            source: Box::new(source),
        }
    }

    pub(crate) fn act(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Act {
            what,
            source: Box::new(source),
        }
    }
}

/// The HTTP status of an API server refusal, if `error` is one.
pub(crate) fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn is_refusal(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422))
}

impl ReconcileError for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Observe { .. } | Error::Act { .. } => KUBERNETES_API_ERROR,
            Error::Apply(_) => APPLY_FAILED,
        }
    }

    /// A refusal (400, 403, 422) will not fix itself: wait for a change. Everything else
    /// (conflicts, timeouts, server errors) is retried.
    fn is_permanent(&self) -> bool {
        match self {
            Error::Observe { source, .. } | Error::Act { source, .. } => is_refusal(source),
            Error::Apply(error) => error.is_permanent(),
        }
    }
}
