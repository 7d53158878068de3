//! Everything that keeps a ServiceBinding from being Bound, one variant per cause.
//!
//! Each variant knows its condition reason (also the `reason` metric label) and whether it is
//! permanent. Almost nothing is: what resolves a waiting binding (the Cluster created or Ready,
//! consent given, the Pooler created or pointed at the right Cluster, the PostgresUser Ready, a
//! clashing Secret removed) happens elsewhere, so the controller retries with backoff, and the
//! watches on Clusters, Poolers, PostgresUsers, Secrets and Namespaces wake it sooner. No
//! message carries a password.

use tusk_api::binding::reasons;
use tusk_runtime::apply::ApplyError;

/// Reason: another binding's PostgresUser already has the name this binding's would get.
pub const USER_OWNED_ELSEWHERE: &str = "UserOwnedElsewhere";
/// Reason: the Kubernetes API refused or failed a call.
pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";

/// Why a reconcile of a ServiceBinding did not end Bound.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the ServiceBinding has no {0} (it was not read from the API server)")]
    Metadata(&'static str),
    #[error(
        "Cluster {name:?} does not exist in namespace {namespace:?}: create it, or point spec.cluster at an existing Cluster (spec.cluster cannot change; recreate the ServiceBinding)"
    )]
    ClusterNotFound { namespace: String, name: String },
    #[error("{0}")]
    ClusterNotReady(String),
    #[error("{message}")]
    NamespaceNotAllowed { message: String },
    #[error(
        "cannot read the labels of namespace {namespace:?}, which spec.bindingPolicy.namespaceSelector of the Cluster needs: {source}. Grant the operator get on namespaces, or list the namespace by name in the Cluster's spec.bindingPolicy.namespaces"
    )]
    NamespaceUnreadable {
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "PostgresUser {name:?} in namespace {namespace:?} belongs to another ServiceBinding (label tusk.dev/binding-uid); this binding will not take it over: delete that PostgresUser if it is stale, or recreate this ServiceBinding to get a new name"
    )]
    UserOwnedElsewhere { namespace: String, name: String },
    #[error(transparent)]
    Pooler(#[from] PoolerProblem),
    #[error("{0}")]
    UserNotReady(String),
    #[error(
        "Secret {name:?} exists in this namespace and is not owned by this ServiceBinding; tusk does not overwrite it: delete or rename that Secret, or recreate the ServiceBinding with another spec.secretName"
    )]
    SecretConflict { name: String },
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] kube::Error),
    #[error("adding or removing the finalizer failed: {0}")]
    FinalizerPatch(#[source] kube::Error),
}

impl Error {
    /// The condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Metadata(_) => reasons::INVALID_SPEC,
            Error::ClusterNotFound { .. } => reasons::CLUSTER_NOT_FOUND,
            Error::ClusterNotReady(_) => reasons::CLUSTER_NOT_READY,
            Error::NamespaceNotAllowed { .. } => reasons::NAMESPACE_NOT_ALLOWED,
            Error::UserOwnedElsewhere { .. } => USER_OWNED_ELSEWHERE,
            Error::Pooler(problem) => problem.reason(),
            Error::UserNotReady(_) => reasons::USER_NOT_READY,
            Error::SecretConflict { .. } => reasons::SECRET_CONFLICT,
            Error::NamespaceUnreadable { .. }
            | Error::Apply(_)
            | Error::Kube(_)
            | Error::FinalizerPatch(_) => KUBERNETES_API_ERROR,
        }
    }

    /// Whether retrying without a change to the ServiceBinding is pointless.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Metadata(_) => true,
            Error::Apply(error) => error.is_permanent(),
            _ => false,
        }
    }
}

/// Why the Pooler a binding names (`spec.pooler`) cannot carry its connections.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PoolerProblem {
    #[error(
        "Pooler {name:?} does not exist in namespace {namespace:?} (the Cluster's, where spec.pooler is looked up): create it, correct spec.pooler.name, or remove spec.pooler to connect to the Cluster directly"
    )]
    NotFound { namespace: String, name: String },
    #[error(
        "Pooler {pooler:?} in namespace {namespace:?} pools Cluster {pooled:?}, not Cluster {cluster:?} that this binding connects to: point spec.pooler at a Pooler whose spec.cluster.name is {cluster:?}, or remove spec.pooler to connect to the Cluster directly"
    )]
    ClusterMismatch {
        namespace: String,
        pooler: String,
        /// The Cluster the Pooler pools.
        pooled: String,
        /// The binding's Cluster.
        cluster: String,
    },
}

impl PoolerProblem {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PoolerProblem::NotFound { .. } => reasons::POOLER_NOT_FOUND,
            PoolerProblem::ClusterMismatch { .. } => reasons::POOLER_CLUSTER_MISMATCH,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_the_documented_set() {
        let cases = [
            (
                Error::ClusterNotFound {
                    namespace: "db".into(),
                    name: "db".into(),
                },
                "ClusterNotFound",
            ),
            (
                Error::NamespaceNotAllowed {
                    message: "no".into(),
                },
                "NamespaceNotAllowed",
            ),
            (Error::UserNotReady("x".into()), "UserNotReady"),
            (Error::ClusterNotReady("x".into()), "ClusterNotReady"),
            (Error::SecretConflict { name: "s".into() }, "SecretConflict"),
            (Error::Metadata("uid"), "InvalidSpec"),
            (
                Error::Pooler(PoolerProblem::NotFound {
                    namespace: "db".into(),
                    name: "db-pooler".into(),
                }),
                "PoolerNotFound",
            ),
            (
                Error::Pooler(PoolerProblem::ClusterMismatch {
                    namespace: "db".into(),
                    pooler: "db-pooler".into(),
                    pooled: "other".into(),
                    cluster: "db".into(),
                }),
                "PoolerClusterMismatch",
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error}");
        }
    }

    #[test]
    fn only_a_broken_object_waits_for_a_change() {
        assert!(Error::Metadata("uid").is_permanent());
        assert!(!Error::SecretConflict { name: "s".into() }.is_permanent());
        assert!(
            !Error::NamespaceNotAllowed {
                message: "m".into()
            }
            .is_permanent()
        );
    }

    #[test]
    fn pooler_problems_are_retried_and_say_what_to_fix() {
        let missing = Error::from(PoolerProblem::NotFound {
            namespace: "db".into(),
            name: "db-pooler".into(),
        });
        assert!(!missing.is_permanent(), "the Pooler may be created next");
        assert!(missing.to_string().contains("spec.pooler"), "{missing}");
        let mismatch = Error::from(PoolerProblem::ClusterMismatch {
            namespace: "db".into(),
            pooler: "db-pooler".into(),
            pooled: "other".into(),
            cluster: "db".into(),
        });
        assert!(!mismatch.is_permanent(), "the Pooler may be corrected");
        let message = mismatch.to_string();
        assert!(
            message.contains("pools Cluster \"other\", not Cluster \"db\"")
                && message.contains("spec.cluster.name is \"db\""),
            "{message}"
        );
    }

    #[test]
    fn conflict_message_says_what_to_do() {
        let message = Error::SecretConflict {
            name: "orders".into(),
        }
        .to_string();
        assert!(message.contains("\"orders\"") && message.contains("spec.secretName"));
    }
}
