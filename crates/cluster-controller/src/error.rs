//! What can go wrong in a Cluster reconcile, each with its condition reason and whether
//! retrying without a change can help.

use tusk_runtime::ReconcileError;
use tusk_runtime::apply::ApplyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {what}: {source}")]
    Observe {
        what: &'static str,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(transparent)]
    Apply(Box<ApplyError>),
    #[error("{action}: {source}")]
    Action {
        action: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("rendering the Patroni configuration: {0}")]
    Patroni(String),
    #[error("preparing Secrets: {0}")]
    Secrets(String),
    #[error("Patroni REST API of {instance}: {message}")]
    PatroniApi { instance: String, message: String },
    #[error("PostgreSQL of {instance}: {message}")]
    Postgres { instance: String, message: String },
}

impl From<ApplyError> for Error {
    fn from(error: ApplyError) -> Self {
        Error::Apply(Box::new(error))
    }
}

impl ReconcileError for Error {
    fn reason(&self) -> &'static str {
        match self {
            Error::Observe { .. } => "ObserveFailed",
            Error::Apply(_) => "ApplyFailed",
            Error::Action { .. } => "ActionFailed",
            Error::Patroni(_) => "InvalidSpec",
            Error::Secrets(_) => "SecretsFailed",
            Error::PatroniApi { .. } => "PatroniUnavailable",
            Error::Postgres { .. } => "PostgresUnavailable",
        }
    }

    fn is_permanent(&self) -> bool {
        match self {
            Error::Apply(error) => error.is_permanent(),
            Error::Patroni(_) => true,
            Error::Observe { .. }
            | Error::Action { .. }
            | Error::Secrets(_)
            | Error::PatroniApi { .. }
            | Error::Postgres { .. } => false,
        }
    }
}
