//! Everything that can stop a Backup from progressing, one variant per cause.
//!
//! Waiting for the Cluster is transient (retried with backoff, and on every change of the
//! Cluster); a spec pgBackRest cannot work with is permanent (it waits for the Cluster or
//! Backup to change — the Cluster watch wakes the Backup). No message carries a secret:
//! only Secret names and keys, and pgBackRest's own (redacted) output.

use tusk_api::backup::reasons;
use tusk_runtime::apply::ApplyError;

use crate::job::BuildError;

/// Reason: the Kubernetes API refused or failed a call.
pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";
/// Reason: the object lacks metadata the API server always sets (a bug, not a user error).
pub const INVALID_OBJECT: &str = "InvalidObject";
/// Reason: a Job of the Backup's name exists but belongs to something else.
pub const JOB_CONFLICT: &str = "JobConflict";
/// The Cluster has no pgBackRest stanza yet (its ContinuousArchiving condition says
/// `StanzaMissing`); the Backup waits.
pub const STANZA_NOT_READY: &str = "StanzaNotReady";

/// Why a reconcile of a Backup failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "Cluster {0:?} does not exist in this namespace: create it, or fix spec.cluster.name (which cannot change; create a new Backup)"
    )]
    ClusterNotFound(String),
    #[error("Cluster {0:?} is not Ready yet (or has no primary); the backup waits for it")]
    ClusterNotReady(String),
    #[error(
        "Cluster {0:?} has no pgBackRest stanza yet (its ContinuousArchiving condition is StanzaMissing: the stanza Job has not succeeded — after a major upgrade it upgrades the stanza first); the backup waits for it"
    )]
    StanzaNotReady(String),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error(
        "Job {0:?} exists but is not owned by this Backup: delete it, or create the Backup under another name"
    )]
    JobConflict(String),
    #[error("the Backup has no {0}")]
    Metadata(&'static str),
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("Kubernetes API call failed while {step}: {source}")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::ClusterNotFound(_) => reasons::CLUSTER_NOT_FOUND,
            Error::ClusterNotReady(_) => reasons::CLUSTER_NOT_READY,
            Error::StanzaNotReady(_) => STANZA_NOT_READY,
            Error::Build(BuildError::Settings(settings)) => settings.reason(),
            Error::Build(BuildError::NoPrimary) => reasons::CLUSTER_NOT_READY,
            Error::Build(BuildError::Metadata(..)) | Error::Metadata(_) => INVALID_OBJECT,
            Error::JobConflict(_) => JOB_CONFLICT,
            Error::Apply(_) | Error::Kube { .. } => KUBERNETES_API_ERROR,
        }
    }

    /// Whether retrying without a change is pointless.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Build(BuildError::Settings(settings)) => settings.is_permanent(),
            Error::Build(BuildError::Metadata(..)) | Error::Metadata(_) | Error::JobConflict(_) => {
                true
            }
            Error::Apply(error) => error.is_permanent(),
            Error::ClusterNotFound(_)
            | Error::ClusterNotReady(_)
            | Error::StanzaNotReady(_)
            | Error::Build(BuildError::NoPrimary)
            | Error::Kube { .. } => false,
        }
    }

    pub(crate) fn kube(step: &'static str) -> impl FnOnce(kube::Error) -> Self {
        move |source| Error::Kube { step, source }
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
    use tusk_pgbackrest::SettingsError;

    #[test]
    fn waiting_is_transient_and_bad_configuration_waits_for_a_change() {
        assert_eq!(
            Error::ClusterNotReady("db".into()).reason(),
            "ClusterNotReady"
        );
        assert!(!Error::ClusterNotReady("db".into()).is_permanent());
        assert!(!Error::ClusterNotFound("db".into()).is_permanent());
        let unknown = Error::Build(BuildError::Settings(SettingsError::UnknownRepository {
            name: "repo2".into(),
            available: "repo1".into(),
        }));
        assert_eq!(unknown.reason(), "RepositoryNotFound");
        assert!(unknown.is_permanent());
        assert!(unknown.to_string().contains("repo1"));
    }
}
