//! Restore and point-in-time recovery into a new Cluster (`spec.bootstrap.restore`).
//!
//! ```text
//!  restoring Cluster ─┬─ own repositories (repo1..repo4) ─► pgbackrest.conf     archive-push, backups
//!                     │                                                         (the new cluster's path)
//!                     └─ source repository ─► restore.conf, its only ─► Patroni bootstrap:
//!                          (another Cluster's, or inline)  repository     pgbackrest --config=restore.conf
//!                                                                          restore
//!                                                                        recovery: archive-get from it
//! ```
//!
//! # Why the source lives in its own configuration file
//!
//! `archive-push` pushes to *every* repository in the configuration it reads. If the source
//! repository were configured next to the restoring Cluster's own, the new cluster — which has
//! the same system identifier as the source — would push its new timeline into the source's
//! archive, where it would collide with the source's own future timelines. So the source is
//! rendered into a separate file ([`RESTORE_CONFIG_PATH`]) that only the bootstrap restore
//! names with `--config`. pgBackRest carries `--config` into the `restore_command` it writes
//! into `postgresql.auto.conf`, so recovery fetches WAL from the source too; the `archive_command` (plain `pgbackrest --stanza=db archive-push`) reads
//! [`crate::CONFIG_PATH`], which holds only the Cluster's own repositories. Their default path
//! is `/<namespace>/<cluster>`, so the restored Cluster archives beside the source, never into
//! it ([`check_own_paths`] refuses an explicit path that would).
//!
//! An object-store source is repository index [`SOURCE_REPO_INDEX`] (5), outside the 1–4 a
//! Cluster's own repositories use, so the source's secret environment variables
//! (`PGBACKREST_REPO5_*`) never meet the Cluster's own (`PGBACKREST_REPO1_*`...) in the shared
//! container environment — pgBackRest ignores options of a repository that its configuration
//! file does not define. A volume source keeps its own index: it is reached through the source
//! Cluster's repository host, whose pgBackRest server serves the repository under the index
//! the client names, and it needs no secret option (certificates are files, and the repository
//! host holds the cipher passphrase).
//!
//! # Targets
//!
//! | spec | pgBackRest |
//! |---|---|
//! | nothing | `--type=default`: replay every archived WAL segment, then promote |
//! | `backupSet` only | `--set=<label> --type=immediate --target-action=promote`: the state at the end of that backup |
//! | `target.time` | `--type=time --target="YYYY-MM-DD HH:MM:SS[.ffffff]+00" --target-action=promote` |
//! | `target.lsn` | `--type=lsn --target=<lsn> --target-action=promote` |
//! | `target.restorePoint` | `--type=name --target=<name> --target-action=promote` |
//! | `target.exclusive` | `--target-exclusive` (time and LSN only) |
//!
//! pgBackRest picks the backup set for a time target itself, but only when the time has its
//! own format (space, not `T`; `+00`, not `Z`); RFC 3339 times are converted to UTC in that
//! format, which PostgreSQL's `recovery_target_time` accepts too.

use std::collections::BTreeMap;

use tusk_api::Cluster;
use tusk_api::cluster::{EncryptionSpec, RecoveryTarget, Repository, RestoreSpec};
use tusk_api::names;

use crate::STANZA;
use crate::config::{Layout, RepoAccess, repository_options, repository_path};
use crate::error::SettingsError;
use crate::settings::{OptionValue, Settings};

/// The pgBackRest repository index an object-store restore source is configured as.
pub const SOURCE_REPO_INDEX: u32 = 5;

/// The index the source repository gets in the restore configuration (see the module docs).
pub fn source_index(source: &RestoreSource) -> u32 {
    match &source.repository.volume {
        Some(_) => source
            .repository
            .name
            .strip_prefix("repo")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        None => SOURCE_REPO_INDEX,
    }
}

/// The ConfigMap key holding the restore configuration ([`restore_settings`]).
pub const RESTORE_CONFIG_KEY: &str = "restore.conf";

/// Where the restore configuration is mounted in the `postgres` container (a directory of its
/// own, so the instance's [`crate::CONFIG_PATH`] stays the default path).
pub const RESTORE_CONFIG_DIR: &str = "/etc/pgbackrest/restore";

/// The restore configuration file the bootstrap command names with `--config`.
pub const RESTORE_CONFIG_PATH: &str = "/etc/pgbackrest/restore/pgbackrest.conf";

/// Where the source Cluster's pgBackRest Secret (client certificate and CA) is mounted, to
/// reach its repository host when the source repository is a volume.
pub const SOURCE_TLS_DIR: &str = "/etc/pgbackrest/source-tls";

/// Where Secret-backed files of the source repository (an S3 CA, a GCS key) are mounted.
pub const SOURCE_SECRETS_DIR: &str = "/etc/pgbackrest/source-secrets";

/// Why a restore cannot be rendered. Every message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// `spec.bootstrap.restore.cluster` names a Cluster that does not exist.
    #[error(
        "spec.bootstrap.restore.cluster names Cluster {0:?}, which does not exist in this namespace: create it, or restore from an inline spec.bootstrap.restore.repository"
    )]
    SourceNotFound(String),
    /// The source Cluster has no repository of the requested name.
    #[error(
        "Cluster {cluster:?} has no repository {name:?} (it has: {available}): set spec.bootstrap.restore.repositoryName to one of them"
    )]
    SourceRepositoryNotFound {
        cluster: String,
        name: String,
        available: String,
    },
    /// An inline volume repository: a volume is only reachable through its Cluster's
    /// repository host.
    #[error(
        "spec.bootstrap.restore.repository is a volume: a volume repository is only reachable through the repository host of its Cluster; name that Cluster in spec.bootstrap.restore.cluster, or give an s3, gcs or azure repository"
    )]
    InlineVolume,
    /// Neither a source Cluster nor an inline repository.
    #[error(
        "spec.bootstrap.restore needs exactly one of cluster or repository to say where the backups are"
    )]
    NoSource,
    /// The source Cluster runs another PostgreSQL major.
    #[error(
        "Cluster {cluster:?} runs PostgreSQL {source_version} but this Cluster asks for {version}: a restore keeps the major version; set spec.postgresVersion to {source_version} (upgrade afterwards with a PGUpgrade)"
    )]
    VersionMismatch {
        cluster: String,
        source_version: i32,
        version: i32,
    },
    /// A recovery time that is not RFC 3339.
    #[error(
        "spec.bootstrap.restore.target.time {0:?} is not an RFC 3339 time with a zone, such as 2026-11-22T10:15:00Z"
    )]
    InvalidTime(String),
    /// A restore point name pgBackRest could not write into postgresql.auto.conf.
    #[error(
        "spec.bootstrap.restore.target.restorePoint {0:?} contains a quote, a backslash or a control character, which tusk cannot pass to PostgreSQL safely: rename the restore point"
    )]
    InvalidRestorePoint(String),
    /// `exclusive` with a restore point, which has no inside or outside.
    #[error(
        "spec.bootstrap.restore.target.exclusive applies to time and lsn targets only: remove it for a restorePoint"
    )]
    ExclusiveRestorePoint,
    /// A target object with no target in it.
    #[error("spec.bootstrap.restore.target needs one of time, lsn or restorePoint")]
    EmptyTarget,
    /// One of the restoring Cluster's own repositories is the source's location.
    #[error(
        "spec.backup.repositories[{name}] points at the same place as the restore source ({location}): the restored Cluster would archive into the source's repository; give it another path (the default /<namespace>/<cluster> is safe)"
    )]
    SharesSourcePath { name: String, location: String },
    /// The source repository's settings could not be rendered.
    #[error("the restore source: {0}")]
    Settings(#[from] SettingsError),
}

impl RestoreError {
    /// A CamelCase reason for conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RestoreError::SourceNotFound(_) => "RestoreSourceNotFound",
            RestoreError::SourceRepositoryNotFound { .. } => "RestoreRepositoryNotFound",
            RestoreError::InlineVolume | RestoreError::NoSource => "InvalidRestoreSource",
            RestoreError::VersionMismatch { .. } => "RestoreVersionMismatch",
            RestoreError::InvalidTime(_)
            | RestoreError::InvalidRestorePoint(_)
            | RestoreError::ExclusiveRestorePoint
            | RestoreError::EmptyTarget => "InvalidRecoveryTarget",
            RestoreError::SharesSourcePath { .. } => "RestoreWouldOverwriteSource",
            RestoreError::Settings(error) => error.reason(),
        }
    }

    /// Whether only a spec change helps. A missing source Cluster may still be created.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, RestoreError::SourceNotFound(_))
    }
}

/// The repository a restore reads, resolved: where it is, how it is encrypted and, for a
/// volume repository, whose repository host serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreSource {
    /// The source Cluster, when restoring by reference.
    pub cluster: Option<String>,
    /// The repository, with its path filled in (the source's default `/<namespace>/<source>`
    /// when it had none).
    pub repository: Repository,
    /// The repository's encryption passphrase, if it is encrypted.
    pub encryption: Option<EncryptionSpec>,
}

/// Resolves `spec.bootstrap.restore` of `restoring`: by reference, `source` must be the named
/// Cluster (`None` when it was not found); inline, `source` is ignored.
pub fn resolve_source(
    restoring: &Cluster,
    spec: &RestoreSpec,
    source: Option<&Cluster>,
) -> Result<RestoreSource, RestoreError> {
    let namespace = restoring.metadata.namespace.clone().unwrap_or_default();
    match (&spec.cluster, &spec.repository) {
        (Some(name), _) => {
            let source = source.ok_or_else(|| RestoreError::SourceNotFound(name.clone()))?;
            let repositories = source
                .spec
                .backup
                .as_ref()
                .map(|b| b.repositories.as_slice())
                .unwrap_or_default();
            let mut repository = repositories
                .iter()
                .find(|r| r.name == spec.repository_name)
                .cloned()
                .ok_or_else(|| RestoreError::SourceRepositoryNotFound {
                    cluster: name.clone(),
                    name: spec.repository_name.clone(),
                    available: if repositories.is_empty() {
                        "none".to_owned()
                    } else {
                        repositories
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })?;
            let source_version = source
                .status
                .as_ref()
                .and_then(|s| s.postgres_version)
                .unwrap_or(source.spec.postgres_version);
            if source_version != restoring.spec.postgres_version {
                return Err(RestoreError::VersionMismatch {
                    cluster: name.clone(),
                    source_version,
                    version: restoring.spec.postgres_version,
                });
            }
            repository.path = Some(repository_path(&repository, &namespace, name));
            Ok(RestoreSource {
                cluster: Some(name.clone()),
                repository,
                encryption: source
                    .spec
                    .backup
                    .as_ref()
                    .and_then(|b| b.encryption.clone()),
            })
        }
        (None, Some(repository)) => {
            if repository.volume.is_some() {
                return Err(RestoreError::InlineVolume);
            }
            let mut repository = repository.clone();
            // The API requires a path for an inline repository; a stored object from before
            // that rule gets the restoring Cluster's namespace default rather than a panic.
            let restoring_name = restoring.metadata.name.clone().unwrap_or_default();
            repository.path = Some(repository_path(&repository, &namespace, &restoring_name));
            Ok(RestoreSource {
                cluster: None,
                repository,
                encryption: spec.encryption.clone(),
            })
        }
        (None, None) => Err(RestoreError::NoSource),
    }
}

/// The configuration of the bootstrap restore ([`RESTORE_CONFIG_PATH`]): the source repository
/// as its only repository ([`source_index`]), this Cluster's data directory, and the writable paths. Its
/// secret options are `PGBACKREST_REPO5_*` variables ([`Settings::env`]); mark them optional
/// in the pod (see [`optional_env`]) so that pods still start once the source is gone.
pub fn restore_settings(
    restoring: &Cluster,
    source: &RestoreSource,
) -> Result<Settings, RestoreError> {
    let namespace = restoring.metadata.namespace.clone().unwrap_or_default();
    let mut layout = Layout::pod(namespace);
    layout.tls_dir = SOURCE_TLS_DIR.to_owned();
    layout.secrets_dir = SOURCE_SECRETS_DIR.to_owned();
    restore_settings_in(restoring, source, &layout, RepoAccess::ViaRepoHost)
}

/// [`restore_settings`] in a given [`Layout`]. `access` says how a volume source is reached:
/// through its Cluster's repository host (pods; `layout.tls_dir` must then hold the
/// *source's* client certificate and CA), or mounted locally (tests).
pub fn restore_settings_in(
    restoring: &Cluster,
    source: &RestoreSource,
    layout: &Layout,
    access: RepoAccess,
) -> Result<Settings, RestoreError> {
    let mut settings = Settings::default();
    let tmp = &layout.tmp_dir;
    settings.set_global(
        "lock-path",
        OptionValue::literal(format!("{tmp}/pgbackrest/lock")),
    );
    settings.set_global(
        "log-path",
        OptionValue::literal(format!("{tmp}/pgbackrest/log")),
    );
    settings.set_global("log-level-file", OptionValue::literal("off"));
    settings.set_global("log-level-console", OptionValue::literal("info"));
    settings.set_global(
        "spool-path",
        OptionValue::literal(format!("{tmp}/pgbackrest/spool")),
    );

    // Render the repository with the crate's own builder under a temporary index-1 name, in
    // the source Cluster's name (for its repository host and default path), then move every
    // `repo1-` option to the source index.
    let mut repository = source.repository.clone();
    repository.name = "repo1".to_owned();
    let mut owner = restoring.clone();
    if let Some(name) = &source.cluster {
        owner.metadata.name = Some(name.clone());
    }
    let mut rendered = Settings::default();
    repository_options(&mut rendered, &repository, access, &owner, layout)?;
    if let Some(encryption) = &source.encryption
        && repository.volume.is_none()
    {
        // A volume repository is decrypted by its repository host; an object store here.
        let passphrase = &encryption.passphrase_secret;
        if passphrase.name.trim().is_empty() || passphrase.key.trim().is_empty() {
            return Err(SettingsError::EncryptionPassphraseMissing.into());
        }
        rendered.set_global("repo1-cipher-type", OptionValue::literal("aes-256-cbc"));
        rendered.set_global(
            "repo1-cipher-pass",
            OptionValue::Secret(k8s_openapi::api::core::v1::SecretKeySelector {
                name: passphrase.name.clone(),
                key: passphrase.key.clone(),
                optional: None,
            }),
        );
    }
    let prefix = format!("repo{}-", source_index(source));
    for (option, value) in rendered.global {
        // Retention belongs to the source; a restore never expires anything.
        if option.starts_with("repo1-retention") {
            continue;
        }
        let option = option.replacen("repo1-", &prefix, 1);
        settings.set_global(option, value);
    }
    settings.set_stanza(
        "pg1-path",
        OptionValue::literal(
            layout
                .data_dir
                .clone()
                .unwrap_or_else(|| crate::data_dir(restoring.spec.postgres_version)),
        ),
    );
    Ok(settings)
}

/// `env` with every `secretKeyRef` marked optional: the restore source's Secrets matter only
/// while the Cluster bootstraps, and pods must start after the source is deleted.
pub fn optional_env(
    env: Vec<k8s_openapi::api::core::v1::EnvVar>,
) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    env.into_iter()
        .map(|mut var| {
            if let Some(selector) = var
                .value_from
                .as_mut()
                .and_then(|from| from.secret_key_ref.as_mut())
            {
                selector.optional = Some(true);
            }
            var
        })
        .collect()
}

/// The pgBackRest options selecting what to restore and where recovery stops (see the module
/// docs' table). Every target ends with a promotion to a new timeline.
pub fn target_options(spec: &RestoreSpec) -> Result<Vec<String>, RestoreError> {
    let mut options = Vec::new();
    if let Some(set) = &spec.backup_set {
        options.push(format!("--set={set}"));
    }
    match (&spec.target, &spec.backup_set) {
        (None, None) => options.push("--type=default".to_owned()),
        (None, Some(_)) => {
            options.push("--type=immediate".to_owned());
            options.push("--target-action=promote".to_owned());
        }
        (Some(target), _) => {
            let (kind, value) = target_value(target)?;
            options.push(format!("--type={kind}"));
            options.push(format!("--target={value}"));
            if target.exclusive {
                options.push("--target-exclusive".to_owned());
            }
            options.push("--target-action=promote".to_owned());
        }
    }
    Ok(options)
}

/// pgBackRest's `--type` and `--target` for a recovery target.
fn target_value(target: &RecoveryTarget) -> Result<(&'static str, String), RestoreError> {
    match (&target.time, &target.lsn, &target.restore_point) {
        (Some(time), None, None) => Ok(("time", pgbackrest_time(time)?)),
        (None, Some(lsn), None) => Ok(("lsn", lsn.clone())),
        (None, None, Some(name)) => {
            if target.exclusive {
                return Err(RestoreError::ExclusiveRestorePoint);
            }
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c == '\'' || c == '"' || c == '\\' || c.is_control())
            {
                return Err(RestoreError::InvalidRestorePoint(name.clone()));
            }
            Ok(("name", name.clone()))
        }
        (None, None, None) => Err(RestoreError::EmptyTarget),
        // The API's CEL rule allows one; a stored object from before it gets a clear error.
        _ => Err(RestoreError::EmptyTarget),
    }
}

/// An RFC 3339 time as pgBackRest's target time: UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]+00`.
pub fn pgbackrest_time(rfc3339: &str) -> Result<String, RestoreError> {
    let timestamp: jiff::Timestamp = rfc3339
        .parse()
        .map_err(|_| RestoreError::InvalidTime(rfc3339.to_owned()))?;
    let utc = timestamp.to_zoned(jiff::tz::TimeZone::UTC);
    let micros = utc.subsec_nanosecond() / 1_000;
    let mut text = utc.strftime("%Y-%m-%d %H:%M:%S").to_string();
    if micros != 0 {
        text.push_str(&format!(".{micros:06}"));
    }
    text.push_str("+00");
    Ok(text)
}

/// The restore command of the bootstrap, as an argument vector:
/// `pgbackrest --config=<config> --stanza=db <target options> restore` (the configuration
/// holds one repository, the source).
pub fn restore_argv(spec: &RestoreSpec, config_path: &str) -> Result<Vec<String>, RestoreError> {
    let mut argv = vec![
        "pgbackrest".to_owned(),
        format!("--config={config_path}"),
        format!("--stanza={STANZA}"),
    ];
    argv.extend(target_options(spec)?);
    argv.push("restore".to_owned());
    Ok(argv)
}

/// The command Patroni's `bootstrap.pgbackrest.command` runs (Patroni splits it like a shell,
/// without one). With a separate WAL directory, a shell moves `pg_wal` there after the
/// restore and links it back, as `initdb --waldir` would have laid it out.
pub fn bootstrap_command(
    spec: &RestoreSpec,
    config_path: &str,
    data_dir: &str,
    wal_dir: Option<&str>,
) -> Result<String, RestoreError> {
    let restore = restore_argv(spec, config_path)?
        .iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ");
    let Some(wal_dir) = wal_dir else {
        return Ok(restore);
    };
    let data = shell_quote(data_dir);
    let wal = shell_quote(wal_dir);
    let script = format!(
        "set -e; {restore}; if [ ! -L {data}/pg_wal ]; then rm -rf {wal}; mkdir -p {wal}; chmod 0700 {wal}; cp -a {data}/pg_wal/. {wal}/; rm -rf {data}/pg_wal; ln -s {wal} {data}/pg_wal; fi"
    );
    Ok(format!("/bin/sh -c {}", shell_quote(&script)))
}

/// `restore_command` while the bootstrap recovers: WAL from the source repository only.
pub fn source_restore_command(config_path: &str) -> String {
    format!("pgbackrest --config={config_path} --stanza={STANZA} archive-get %f \"%p\"")
}

/// The recovery settings Patroni writes when the bootstrap restore is done (its
/// `recovery_conf`, per Patroni's custom-bootstrap documentation). They repeat what
/// pgBackRest writes into `postgresql.auto.conf` (which wins where both set a value), so the
/// two can never disagree about where recovery stops.
pub fn recovery_settings(
    spec: &RestoreSpec,
    config_path: &str,
) -> Result<BTreeMap<String, String>, RestoreError> {
    let mut settings = BTreeMap::from([
        (
            "restore_command".to_owned(),
            source_restore_command(config_path),
        ),
        ("recovery_target_timeline".to_owned(), "latest".to_owned()),
    ]);
    match (&spec.target, &spec.backup_set) {
        (None, None) => {}
        (None, Some(_)) => {
            settings.insert("recovery_target".to_owned(), "immediate".to_owned());
            settings.insert("recovery_target_action".to_owned(), "promote".to_owned());
        }
        (Some(target), _) => {
            let (kind, value) = target_value(target)?;
            let parameter = match kind {
                "time" => "recovery_target_time",
                "lsn" => "recovery_target_lsn",
                _ => "recovery_target_name",
            };
            settings.insert(parameter.to_owned(), value);
            if target.exclusive {
                settings.insert("recovery_target_inclusive".to_owned(), "false".to_owned());
            }
            settings.insert("recovery_target_action".to_owned(), "promote".to_owned());
        }
    }
    Ok(settings)
}

/// Refuses a restoring Cluster whose own repository is the source's location: same store
/// (bucket and endpoint, container, or the source Cluster's own volume) and the same path.
/// Volume repositories of the restoring Cluster live on its own repository host's volume, so
/// they never collide with a source.
pub fn check_own_paths(restoring: &Cluster, source: &RestoreSource) -> Result<(), RestoreError> {
    let namespace = restoring.metadata.namespace.clone().unwrap_or_default();
    let name = restoring.metadata.name.clone().unwrap_or_default();
    let Some(source_location) = location(&source.repository, &namespace, "") else {
        return Ok(());
    };
    for own in restoring
        .spec
        .backup
        .iter()
        .flat_map(|backup| backup.repositories.iter())
    {
        if location(own, &namespace, &name).as_ref() == Some(&source_location) {
            return Err(RestoreError::SharesSourcePath {
                name: own.name.clone(),
                location: source_location,
            });
        }
    }
    Ok(())
}

/// A repository's storage location as text (`s3://endpoint/bucket/path`), `None` for a
/// volume. `cluster` fills in the default path.
fn location(repository: &Repository, namespace: &str, cluster: &str) -> Option<String> {
    let path = repository_path(repository, namespace, cluster);
    let path = path.trim_end_matches('/');
    if let Some(s3) = &repository.s3 {
        return Some(format!("s3://{}/{}{path}", s3.endpoint, s3.bucket));
    }
    if let Some(gcs) = &repository.gcs {
        return Some(format!("gs://{}{path}", gcs.bucket));
    }
    if let Some(azure) = &repository.azure {
        return Some(format!(
            "azure://{}/{}{path}",
            azure.endpoint.as_deref().unwrap_or("blob.core.windows.net"),
            azure.container
        ));
    }
    None
}

/// The name of the source Cluster's pgBackRest Secret, when the source repository is a volume
/// (its repository host admits only that Cluster's client certificate).
pub fn source_tls_secret(source: &RestoreSource) -> Option<String> {
    match (&source.cluster, &source.repository.volume) {
        (Some(cluster), Some(_)) => Some(names::pgbackrest_secret(cluster)),
        _ => None,
    }
}

/// Quotes `text` for a POSIX shell (and Python's `shlex.split`, which Patroni uses): bare
/// when it is made of safe characters, else in single quotes.
pub fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,%@+".contains(c));
    if safe {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\"'\"'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> Cluster {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn source() -> Cluster {
        cluster(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: prod}
spec:
  postgresVersion: 17
  storage: {size: 10Gi}
  backup:
    encryption: {passphraseSecret: {name: db-cipher, key: passphrase}}
    repositories:
      - name: repo1
        volume: {size: 50Gi}
      - name: repo2
        s3:
          bucket: backups
          endpoint: s3.eu-central-1.amazonaws.com
          region: eu-central-1
          credentialsSecret: {name: s3-creds}
",
        )
    }

    fn restoring(restore: &str) -> Cluster {
        cluster(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db-restored, namespace: prod}}
spec:
  postgresVersion: 17
  storage: {{size: 10Gi}}
  bootstrap:
    restore:
{restore}
  backup:
    repositories:
      - name: repo1
        s3:
          bucket: backups
          endpoint: s3.eu-central-1.amazonaws.com
          region: eu-central-1
          credentialsSecret: {{name: s3-creds}}
"
        ))
    }

    fn spec(cluster: &Cluster) -> RestoreSpec {
        cluster.spec.bootstrap.clone().unwrap().restore.unwrap()
    }

    #[test]
    fn latest_restore_replays_everything() {
        let c = restoring("      cluster: db");
        assert_eq!(
            restore_argv(&spec(&c), RESTORE_CONFIG_PATH).unwrap(),
            [
                "pgbackrest",
                "--config=/etc/pgbackrest/restore/pgbackrest.conf",
                "--stanza=db",
                "--type=default",
                "restore"
            ]
        );
        let recovery = recovery_settings(&spec(&c), RESTORE_CONFIG_PATH).unwrap();
        assert!(!recovery.contains_key("recovery_target_action"));
        assert_eq!(
            recovery["restore_command"],
            "pgbackrest --config=/etc/pgbackrest/restore/pgbackrest.conf --stanza=db archive-get %f \"%p\""
        );
    }

    #[test]
    fn time_target_is_converted_to_pgbackrest_format_and_promotes() {
        let c =
            restoring("      cluster: db\n      target: {time: '2026-11-22T11:15:00.25+01:00'}");
        let options = target_options(&spec(&c)).unwrap();
        assert_eq!(
            options,
            [
                "--type=time",
                "--target=2026-11-22 10:15:00.250000+00",
                "--target-action=promote"
            ]
        );
        assert_eq!(
            pgbackrest_time("2026-11-22T10:15:00Z").unwrap(),
            "2026-11-22 10:15:00+00"
        );
        let recovery = recovery_settings(&spec(&c), RESTORE_CONFIG_PATH).unwrap();
        assert_eq!(
            recovery["recovery_target_time"],
            "2026-11-22 10:15:00.250000+00"
        );
        assert_eq!(recovery["recovery_target_action"], "promote");
        assert!(matches!(
            pgbackrest_time("yesterday"),
            Err(RestoreError::InvalidTime(_))
        ));
    }

    #[test]
    fn lsn_target_with_exclusive() {
        let c = restoring("      cluster: db\n      target: {lsn: 0/3000028, exclusive: true}");
        assert_eq!(
            target_options(&spec(&c)).unwrap(),
            [
                "--type=lsn",
                "--target=0/3000028",
                "--target-exclusive",
                "--target-action=promote"
            ]
        );
        let recovery = recovery_settings(&spec(&c), RESTORE_CONFIG_PATH).unwrap();
        assert_eq!(recovery["recovery_target_lsn"], "0/3000028");
        assert_eq!(recovery["recovery_target_inclusive"], "false");
    }

    #[test]
    fn restore_point_target_and_its_refusals() {
        let c = restoring("      cluster: db\n      target: {restorePoint: before-migration}");
        assert_eq!(
            target_options(&spec(&c)).unwrap(),
            [
                "--type=name",
                "--target=before-migration",
                "--target-action=promote"
            ]
        );
        let quoted = restoring("      cluster: db\n      target: {restorePoint: \"it's\"}");
        assert!(matches!(
            target_options(&spec(&quoted)),
            Err(RestoreError::InvalidRestorePoint(_))
        ));
        let exclusive =
            restoring("      cluster: db\n      target: {restorePoint: x, exclusive: true}");
        assert_eq!(
            target_options(&spec(&exclusive)).unwrap_err(),
            RestoreError::ExclusiveRestorePoint
        );
    }

    #[test]
    fn named_backup_set_alone_restores_that_backup_and_promotes() {
        let c = restoring("      cluster: db\n      backupSet: 20261122-101500F");
        assert_eq!(
            target_options(&spec(&c)).unwrap(),
            [
                "--set=20261122-101500F",
                "--type=immediate",
                "--target-action=promote"
            ]
        );
        let with_time = restoring(
            "      cluster: db\n      backupSet: 20261122-101500F\n      target: {time: '2026-11-22T12:00:00Z'}",
        );
        let options = target_options(&spec(&with_time)).unwrap();
        assert_eq!(options[0], "--set=20261122-101500F");
        assert_eq!(options[1], "--type=time");
    }

    #[test]
    fn from_another_cluster_reads_its_repository_as_repo5() {
        let c = restoring("      cluster: db\n      repositoryName: repo2");
        let source = resolve_source(&c, &spec(&c), Some(&source())).unwrap();
        assert_eq!(source.repository.path.as_deref(), Some("/prod/db"));
        let settings = restore_settings(&c, &source).unwrap();
        let ini = settings.to_ini();
        assert!(ini.contains("repo5-type=s3\n"), "{ini}");
        assert!(ini.contains("repo5-path=/prod/db\n"), "{ini}");
        assert!(ini.contains("repo5-s3-bucket=backups\n"), "{ini}");
        assert!(ini.contains("repo5-cipher-type=aes-256-cbc\n"), "{ini}");
        assert!(ini.contains("pg1-path=/pgdata/pg17\n"), "{ini}");
        assert!(!ini.contains("repo1-"), "only the source index: {ini}");
        assert!(!ini.contains("retention"), "{ini}");
        let env: Vec<String> = optional_env(settings.env())
            .into_iter()
            .inspect(|var| {
                assert_eq!(
                    var.value_from
                        .as_ref()
                        .unwrap()
                        .secret_key_ref
                        .as_ref()
                        .unwrap()
                        .optional,
                    Some(true)
                );
            })
            .map(|var| var.name)
            .collect();
        assert_eq!(
            env,
            [
                "PGBACKREST_REPO5_CIPHER_PASS",
                "PGBACKREST_REPO5_S3_KEY",
                "PGBACKREST_REPO5_S3_KEY_SECRET"
            ]
        );
        assert_eq!(source_tls_secret(&source), None);
    }

    #[test]
    fn from_another_clusters_volume_goes_through_its_repository_host() {
        let c = restoring("      cluster: db");
        let source = resolve_source(&c, &spec(&c), Some(&source())).unwrap();
        let settings = restore_settings(&c, &source).unwrap();
        // The source's repository host serves it under its own index.
        assert_eq!(source_index(&source), 1);
        assert_eq!(settings.value("repo1-host"), Some("db-repo-host.prod.svc"));
        assert_eq!(settings.value("repo1-host-type"), Some("tls"));
        assert_eq!(
            settings.value("repo1-host-cert-file"),
            Some("/etc/pgbackrest/source-tls/client.crt")
        );
        assert_eq!(
            settings.value("repo1-path"),
            Some("/pgbackrest/repo1/prod/db")
        );
        // The repository host holds the passphrase of a volume repository.
        assert!(settings.get("repo1-cipher-pass").is_none());
        assert!(
            settings.env().is_empty(),
            "no secret option for a volume source"
        );
        assert_eq!(source_tls_secret(&source).as_deref(), Some("db-pgbackrest"));
    }

    #[test]
    fn inline_repository_uses_its_own_path_and_passphrase() {
        let c = restoring(
            "      repository:
        name: repo1
        path: /old-k8s/prod/db
        gcs: {bucket: archive, credentialsSecret: {name: gcs-key}}
      encryption: {passphraseSecret: {name: old-cipher, key: pass}}",
        );
        let source = resolve_source(&c, &spec(&c), None).unwrap();
        let settings = restore_settings(&c, &source).unwrap();
        assert_eq!(settings.value("repo5-type"), Some("gcs"));
        assert_eq!(settings.value("repo5-path"), Some("/old-k8s/prod/db"));
        assert_eq!(
            settings.value("repo5-gcs-key"),
            Some("/etc/pgbackrest/source-secrets/repo1-gcs-key/key.json")
        );
        assert!(matches!(
            settings.get("repo5-cipher-pass"),
            Some(OptionValue::Secret(s)) if s.name == "old-cipher"
        ));
    }

    #[test]
    fn refusals_name_what_to_fix() {
        let c = restoring("      cluster: gone");
        let error = resolve_source(&c, &spec(&c), None).unwrap_err();
        assert_eq!(error.reason(), "RestoreSourceNotFound");
        assert!(!error.is_permanent());

        let c = restoring("      cluster: db\n      repositoryName: repo3");
        let error = resolve_source(&c, &spec(&c), Some(&source())).unwrap_err();
        assert!(error.to_string().contains("repo1, repo2"), "{error}");

        let mut old = source();
        old.spec.postgres_version = 16;
        let c = restoring("      cluster: db");
        assert_eq!(
            resolve_source(&c, &spec(&c), Some(&old))
                .unwrap_err()
                .reason(),
            "RestoreVersionMismatch"
        );

        let c = restoring("      repository: {name: repo1, path: /x, volume: {size: 1Gi}}");
        assert_eq!(
            resolve_source(&c, &spec(&c), None).unwrap_err(),
            RestoreError::InlineVolume
        );
    }

    #[test]
    fn the_restored_cluster_never_archives_into_the_source() {
        // Default paths differ: /prod/db-restored next to /prod/db in the same bucket.
        let c = restoring("      cluster: db\n      repositoryName: repo2");
        let source = resolve_source(&c, &spec(&c), Some(&source())).unwrap();
        check_own_paths(&c, &source).unwrap();
        // An explicit path equal to the source's is refused.
        let mut same = c.clone();
        same.spec.backup.as_mut().unwrap().repositories[0].path = Some("/prod/db".into());
        let error = check_own_paths(&same, &source).unwrap_err();
        assert_eq!(error.reason(), "RestoreWouldOverwriteSource");
        assert!(error.to_string().contains("s3://"), "{error}");
    }

    #[test]
    fn bootstrap_command_quotes_for_patroni_and_relocates_wal() {
        let c = restoring("      cluster: db\n      target: {time: '2026-11-22T10:15:00Z'}");
        let command =
            bootstrap_command(&spec(&c), RESTORE_CONFIG_PATH, "/pgdata/pg17", None).unwrap();
        assert_eq!(
            command,
            "pgbackrest --config=/etc/pgbackrest/restore/pgbackrest.conf --stanza=db --type=time '--target=2026-11-22 10:15:00+00' --target-action=promote restore"
        );
        let with_wal = bootstrap_command(
            &spec(&c),
            RESTORE_CONFIG_PATH,
            "/pgdata/pg17",
            Some("/pgwal/pg17_wal"),
        )
        .unwrap();
        assert!(
            with_wal.starts_with("/bin/sh -c 'set -e; pgbackrest "),
            "{with_wal}"
        );
        assert!(with_wal.contains("ln -s /pgwal/pg17_wal /pgdata/pg17/pg_wal"));
        assert_eq!(shell_quote("it's"), "'it'\"'\"'s'");
        assert_ne!(RESTORE_CONFIG_PATH, crate::CONFIG_PATH);
    }
}
