//! Everything that can stop a PostgresUser from being Ready, one variant per cause.
//!
//! Each variant knows its condition reason (also the `reason` metric label) and whether it is
//! permanent: a permanent error waits for the PostgresUser to change; a transient one is
//! retried with backoff (capped by the operator's `backoff_max`), and also whenever the
//! Cluster or a watched Secret changes. No message carries a password: errors hold names,
//! PostgreSQL's own error text and what to change.

use kube::runtime::finalizer;
use tusk_api::user::reasons;
use tusk_runtime::apply::ApplyError;
use tusk_runtime::postgres::ConnectError;

use crate::plan::{Refusal, SpecProblem};
use tusk_runtime::postgres::TargetError;

/// Reason: the Cluster's primary cannot be reached or its Secrets are missing.
pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";
/// Reason: a statement failed in PostgreSQL.
pub const SQL_FAILED: &str = "SqlFailed";
/// Reason: a schema named in `spec.grants` does not exist.
pub const SCHEMA_NOT_FOUND: &str = "SchemaNotFound";
/// Reason: the Kubernetes API refused or failed a call.
pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";
/// Reason: the operating system's random generator failed.
pub const RANDOM_UNAVAILABLE: &str = "RandomUnavailable";

/// Why a reconcile of a PostgresUser failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Spec(#[from] SpecProblem),
    #[error(
        "Cluster {0:?} does not exist in this namespace: create it, or fix spec.cluster.name (which cannot change; recreate the PostgresUser)"
    )]
    ClusterNotFound(String),
    #[error("Cluster {0:?} is not Ready yet; waiting for it")]
    ClusterNotReady(String),
    #[error("cannot reach the primary of Cluster {cluster:?}: {source}")]
    Target {
        cluster: String,
        #[source]
        source: TargetError,
    },
    #[error("cannot connect to the primary of Cluster {cluster:?}: {source}")]
    Connect {
        cluster: String,
        #[source]
        source: ConnectError,
    },
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error(
        "Secret {name:?} (spec.password.secret) does not exist or has no key {key:?}: create it, or remove spec.password.secret to let tusk generate the password"
    )]
    PasswordSecretNotFound { name: String, key: String },
    #[error("PostgreSQL refused {step}: {source}")]
    Sql {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
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
            Error::Spec(problem) => problem.reason(),
            Error::ClusterNotFound(_) => reasons::CLUSTER_NOT_FOUND,
            Error::ClusterNotReady(_) => reasons::CLUSTER_NOT_READY,
            Error::Target { .. } | Error::Connect { .. } => CLUSTER_UNREACHABLE,
            Error::Refused(refusal) => match refusal {
                Refusal::RoleOwnedElsewhere(_) => reasons::ROLE_OWNED_ELSEWHERE,
                Refusal::DatabaseOwnedElsewhere { .. } => reasons::DATABASE_OWNED_ELSEWHERE,
                Refusal::DatabaseNotFound(_) => reasons::DATABASE_NOT_FOUND,
                Refusal::SchemaNotFound { .. } => SCHEMA_NOT_FOUND,
                Refusal::DropBlocked(_) => reasons::DROP_BLOCKED,
            },
            Error::PasswordSecretNotFound { .. } => reasons::PASSWORD_SECRET_NOT_FOUND,
            Error::Sql { .. } => SQL_FAILED,
            Error::Random(_) => RANDOM_UNAVAILABLE,
            Error::Apply(_) | Error::Kube(_) | Error::FinalizerPatch(_) => KUBERNETES_API_ERROR,
            Error::FinalizerInvalid(_) => reasons::INVALID_SPEC,
        }
    }

    /// Whether retrying without a change to the PostgresUser is pointless.
    ///
    /// Refusals are transient on purpose: what resolves them (a role dropped by hand, a schema
    /// created by a migration, a database handed over) happens inside PostgreSQL, where no
    /// watch sees it, so the controller keeps looking with backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Spec(_) | Error::FinalizerInvalid(_) => true,
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

/// Unwraps kube's finalizer error into the controller's own, so `error_policy` sees the real
/// cause (and its reason and permanence) rather than a wrapper.
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
    use tusk_api::user::RoleNameProblem;

    #[test]
    fn finalizer_errors_unwrap_to_the_controllers_own() {
        let own = |name: &str| Error::ClusterNotFound(name.to_owned());
        assert!(matches!(
            from_finalizer(finalizer::Error::ApplyFailed(own("x"))),
            Error::ClusterNotFound(name) if name == "x"
        ));
        assert!(matches!(
            from_finalizer(finalizer::Error::CleanupFailed(own("y"))),
            Error::ClusterNotFound(name) if name == "y"
        ));
        let unnamed = from_finalizer(finalizer::Error::UnnamedObject);
        assert!(matches!(unnamed, Error::FinalizerInvalid(_)));
        assert!(unnamed.is_permanent());
        let patch = from_finalizer(finalizer::Error::AddFinalizer(
            kube::Error::LinesCodecMaxLineLengthExceeded,
        ));
        assert!(matches!(patch, Error::FinalizerPatch(_)));
        assert_eq!(patch.reason(), KUBERNETES_API_ERROR);
        assert!(!patch.is_permanent());
    }

    #[test]
    fn reasons_come_from_the_documented_set() {
        assert_eq!(
            Error::ClusterNotFound("db".into()).reason(),
            "ClusterNotFound"
        );
        assert_eq!(
            Error::ClusterNotReady("db".into()).reason(),
            "ClusterNotReady"
        );
        assert_eq!(
            Error::Spec(SpecProblem::RoleName(RoleNameProblem::Reserved)).reason(),
            "ReservedRoleName"
        );
        assert_eq!(
            Error::Refused(Refusal::RoleOwnedElsewhere("x".into())).reason(),
            "RoleOwnedElsewhere"
        );
        assert_eq!(
            Error::Refused(Refusal::DropBlocked("x".into())).reason(),
            "DropBlocked"
        );
    }

    #[test]
    fn only_spec_problems_wait_for_a_change() {
        assert!(Error::Spec(SpecProblem::RoleName(RoleNameProblem::Empty)).is_permanent());
        assert!(!Error::ClusterNotReady("db".into()).is_permanent());
        assert!(!Error::Refused(Refusal::RoleOwnedElsewhere("x".into())).is_permanent());
    }
}
