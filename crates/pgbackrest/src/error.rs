//! Why a Cluster's backup configuration cannot be rendered. Every message says what to fix;
//! none carries a secret value (only Secret names and keys).

/// A backup configuration pgBackRest could not work with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The Cluster has no `spec.backup.repositories`.
    #[error(
        "the Cluster has no backup repository: add one under spec.backup.repositories to enable backups and WAL archiving"
    )]
    NoRepository,

    /// A repository name outside `repo1`..`repo4`.
    #[error("repository name {name:?} is not one of repo1, repo2, repo3 or repo4")]
    InvalidRepositoryName { name: String },

    /// Two repositories with the same name.
    #[error(
        "repository {name} is defined twice in spec.backup.repositories: give each a different name"
    )]
    DuplicateRepository { name: String },

    /// A repository that is not exactly one of volume, s3, gcs or azure.
    #[error("repository {name} needs exactly one of volume, s3, gcs or azure")]
    RepositoryKind { name: String },

    /// A name that is not among the Cluster's repositories.
    #[error(
        "the Cluster has no repository named {name:?} (it has: {available}): name one of them, or add it to spec.backup.repositories"
    )]
    UnknownRepository { name: String, available: String },

    /// An S3-compatible store without credentials: pod identity only works on AWS.
    #[error(
        "repository {repository}: the S3 endpoint {endpoint:?} is not AWS, so pod identity (IRSA) cannot sign requests: set s3.credentialsSecret to a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    S3CredentialsMissing {
        repository: String,
        endpoint: String,
    },

    /// A Secret reference with an empty name or key.
    #[error("{field} names no Secret (or no key): set the Secret's name and key that hold it")]
    SecretReferenceEmpty { field: String },

    /// Encryption asked for without a passphrase Secret key.
    #[error(
        "spec.backup.encryption.passphraseSecret needs a Secret name and key: the repository cannot be encrypted without a passphrase"
    )]
    EncryptionPassphraseMissing,

    /// A value that would break the configuration file (a line break, or an empty value).
    #[error("{field} {value:?} is not usable in pgBackRest's configuration: {problem}")]
    InvalidValue {
        field: String,
        value: String,
        problem: &'static str,
    },

    /// A compression level pgBackRest refuses for the compression type.
    #[error(
        "spec.backup.compression.level {level} is out of range for {kind} (allowed {min} to {max})"
    )]
    CompressionLevel {
        kind: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },
}

impl SettingsError {
    /// A CamelCase reason for conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            SettingsError::NoRepository => "NoRepository",
            SettingsError::InvalidRepositoryName { .. }
            | SettingsError::DuplicateRepository { .. }
            | SettingsError::RepositoryKind { .. } => "InvalidRepository",
            SettingsError::UnknownRepository { .. } => "RepositoryNotFound",
            SettingsError::S3CredentialsMissing { .. } => "RepositoryCredentialsMissing",
            SettingsError::SecretReferenceEmpty { .. } => "InvalidSecretReference",
            SettingsError::EncryptionPassphraseMissing => "EncryptionPassphraseMissing",
            SettingsError::InvalidValue { .. } => "InvalidBackupConfiguration",
            SettingsError::CompressionLevel { .. } => "InvalidCompressionLevel",
        }
    }

    /// Every settings error comes from the spec: only a spec change fixes it.
    pub fn is_permanent(&self) -> bool {
        true
    }
}

/// `pgbackrest info --output=json` that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// Not the JSON pgBackRest prints.
    #[error("pgbackrest info printed output that is not its JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The stanza is not in the output.
    #[error("pgbackrest info printed no stanza {stanza:?}")]
    StanzaMissing { stanza: String },

    /// The stanza reports an error (`status.code` other than 0 "ok" and 2 "no valid backups";
    /// pgBackRest exits 0 even then).
    #[error("pgBackRest stanza {stanza:?} is in error (code {code}): {message}")]
    StanzaError {
        stanza: String,
        code: i64,
        message: String,
    },

    /// A backup entry with an unknown type.
    #[error("pgbackrest info lists backup {label} with unknown type {kind:?}")]
    UnknownBackupType { label: String, kind: String },
}

impl InfoError {
    /// A CamelCase reason for conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            InfoError::Json(_) | InfoError::UnknownBackupType { .. } => "InfoUnreadable",
            InfoError::StanzaMissing { .. } => "StanzaMissing",
            InfoError::StanzaError { .. } => "StanzaError",
        }
    }
}
