//! Everything that can stop a BackupSchedule from doing its job, one variant per cause.
//!
//! A bad schedule or time zone is permanent (it waits for the spec to change); API failures
//! are transient and retried with backoff.

use tusk_api::schedule::reasons;
use tusk_runtime::apply::ApplyError;

use crate::cron::CronError;

/// Reason: the Kubernetes API refused or failed a call.
pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";
/// Reason: the object lacks metadata the API server always sets (a bug, not a user error).
pub const INVALID_OBJECT: &str = "InvalidObject";

/// Why a reconcile of a BackupSchedule failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Schedule(#[from] CronError),
    #[error("the BackupSchedule has no {0}")]
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
            Error::Schedule(CronError::Expression { .. }) => reasons::INVALID_SCHEDULE,
            Error::Schedule(CronError::TimeZone(_)) => reasons::INVALID_TIME_ZONE,
            Error::Metadata(_) => INVALID_OBJECT,
            Error::Apply(_) | Error::Kube { .. } => KUBERNETES_API_ERROR,
        }
    }

    /// Whether retrying without a change to the BackupSchedule is pointless.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Schedule(_) | Error::Metadata(_) => true,
            Error::Apply(error) => error.is_permanent(),
            Error::Kube { .. } => false,
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

    #[test]
    fn bad_schedules_wait_for_a_change_with_their_reason() {
        let bad = Error::Schedule(CronError::Expression {
            expression: "x".into(),
            problem: "y".into(),
        });
        assert_eq!(bad.reason(), "InvalidSchedule");
        assert!(bad.is_permanent());
        let zone = Error::Schedule(CronError::TimeZone("Mars/Base".into()));
        assert_eq!(zone.reason(), "InvalidTimeZone");
        let api = Error::Kube {
            step: "listing Backups",
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        };
        assert_eq!(api.reason(), "KubernetesApiError");
        assert!(!api.is_permanent());
    }
}
