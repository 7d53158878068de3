//! Everything that can stop a Pooler from being Ready, one variant per cause.
//!
//! Each variant knows its condition reason (also the `reason` metric label) and whether it is
//! permanent: a permanent error waits for the Pooler to change; a transient one is retried with
//! backoff, and also whenever the Cluster or a child changes. No message carries a password or
//! a key: errors name objects, keys and PostgreSQL's own error text.

use kube::runtime::finalizer;
use tusk_api::pooler::reasons;
use tusk_certificates::TlsError;
use tusk_runtime::apply::ApplyError;
use tusk_runtime::postgres::{ConnectError, TargetError};

/// Why a reconcile of a Pooler failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidSpec(String),
    #[error("Cluster {0:?} does not exist in this namespace: create it, or fix spec.cluster.name")]
    ClusterNotFound(String),
    #[error("Cluster {0:?} is not Ready yet; waiting for it")]
    ClusterNotReady(String),
    #[error(
        "{kind} {name} exists and does not belong to this Pooler: rename the Pooler, or delete that {kind} if it is not needed"
    )]
    NameConflict { kind: &'static str, name: String },
    #[error("cannot reach the primary of Cluster {cluster:?}: {source}")]
    Target {
        cluster: String,
        #[source]
        source: Box<TargetError>,
    },
    #[error("cannot connect to the primary of Cluster {cluster:?}: {source}")]
    Connect {
        cluster: String,
        #[source]
        source: ConnectError,
    },
    #[error("PostgreSQL refused {step}: {source}")]
    Sql {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("the Cluster's CA Secret {secret:?} cannot issue the Pooler's certificate: {problem}")]
    CaUnavailable { secret: String, problem: String },
    #[error("{0}")]
    Certificate(#[from] TlsError),
    #[error("the operating system's random generator failed: {0}")]
    Random(getrandom::Error),
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    #[error("adding or removing the finalizer failed: {0}")]
    FinalizerPatch(#[source] kube::Error),
    #[error("finalizer: {0}")]
    FinalizerInvalid(&'static str),
}

impl Error {
    /// The condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) | Error::FinalizerInvalid(_) => reasons::INVALID_SPEC,
            Error::ClusterNotFound(_) => reasons::CLUSTER_NOT_FOUND,
            Error::ClusterNotReady(_) => reasons::CLUSTER_NOT_READY,
            Error::NameConflict { .. } => reasons::NAME_CONFLICT,
            Error::Target { .. } | Error::Connect { .. } => reasons::CLUSTER_UNREACHABLE,
            Error::Sql { .. } => reasons::SQL_FAILED,
            Error::CaUnavailable { .. } | Error::Certificate(_) | Error::Random(_) => {
                reasons::CERTIFICATE_UNAVAILABLE
            }
            Error::Apply(_) | Error::Kube(_) | Error::FinalizerPatch(_) => {
                reasons::KUBERNETES_API_ERROR
            }
        }
    }

    /// Whether retrying without a change to the Pooler is pointless.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidSpec(_) | Error::FinalizerInvalid(_) => true,
            Error::Apply(error) => error.is_permanent(),
            _ => false,
        }
    }

    pub(crate) fn sql(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Error::Sql { step, source }
    }
}

impl tusk_runtime::ReconcileError for Error {
    fn reason(&self) -> &'static str {
        Error::reason(self)
    }

    fn is_permanent(&self) -> bool {
        Error::is_permanent(self)
    }
}

/// Unwraps kube's finalizer error into the controller's own.
pub fn from_finalizer(error: finalizer::Error<Error>) -> Error {
    match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
            Error::FinalizerPatch(e)
        }
        finalizer::Error::UnnamedObject => Error::FinalizerInvalid("object has no name"),
        finalizer::Error::InvalidFinalizer => Error::FinalizerInvalid("invalid finalizer name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_spec_problems_wait_for_a_change() {
        assert!(Error::InvalidSpec("x".into()).is_permanent());
        assert!(!Error::ClusterNotReady("db".into()).is_permanent());
        assert!(
            !Error::NameConflict {
                kind: "Service",
                name: "db-rw".into()
            }
            .is_permanent()
        );
        assert_eq!(
            Error::ClusterNotFound("db".into()).reason(),
            "ClusterNotFound"
        );
    }
}
