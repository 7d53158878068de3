//! Builders: a Cluster's `spec.backup` → [`Settings`] for each place pgBackRest runs.
//!
//! ```text
//!  instance pod ───────────────────────────────┐      repo-host pod (volume repos only)
//!   postgres: archive-push/-get ──repoN-host──►│──TLS──► pgbackrest server ── /pgbackrest/repoN
//!   pgbackrest: `pgbackrest server` ◄──────┐   │                                   ▲ same PVC
//!                                          │   └──────────► object stores (s3, gcs, azure)
//!  backup Job ── pg1-host (TLS) ───────────┘                                      │
//!   repos local: mounts the volume repos ─────────────────────────────────────────┘
//! ```
//!
//! Every builder has a `*_in` twin taking a [`Layout`], the paths and hosts of the processes;
//! the plain builders use [`Layout::pod`], the pod layout. Tests run real pgBackRest processes
//! with the same settings and only the layout made local.

use k8s_openapi::api::core::v1::SecretKeySelector;
use tusk_api::Cluster;
use tusk_api::backup::BackupType;
use tusk_api::cluster::{
    AzureRepository, BackupConfiguration, CompressionType, GcsRepository, Repository,
    RetentionType, S3Repository, S3UriStyle,
};
use tusk_api::common::{SecretKeyReference, SecretReference};
use tusk_api::names::{self, PGBACKREST_CLIENT_CN, PGBACKREST_PORT, POSTGRES_PORT};
use tusk_api::user::SUPERUSER_ROLE;

use crate::error::SettingsError;
use crate::settings::{OptionValue, SecretFile, Settings};
use crate::{CONFIG_PATH, REPO_HOST_PATH, SECRETS_DIR, SOCKET_DIR, STANZA, TLS_DIR, TMP_DIR};

/// Compression level used when `spec.backup.compression` leaves it out and the type is zst.
///
/// Measured with `cargo xtask bench backup` (1.12 GB of pgbench data, the backup going
/// through the instance's TLS server as in the pods, 2 CPUs; docs/operations/backup.md
/// "Performance defaults"): zst level 1 backed up in 3.6 s into 49.6 MB. Level 3
/// (pgBackRest's own default) took 23 % longer and wrote 6 % more; lz4 took 16 % longer and
/// wrote 2.5 times as much, since every extra byte crosses the TLS hop and the disk; negative
/// ("fast") levels were faster in one run and slower in another, always larger. Checksums
/// (SHA-1 of every file, page checksums) stay on. WAL pushed by `archive_command` gets the
/// same level.
pub const DEFAULT_ZST_LEVEL: i32 = 1;

/// Parallel processes when neither `spec.backup.processMax` nor a CPU limit says otherwise.
pub const DEFAULT_PROCESS_MAX: u32 = 2;

/// Most processes derived from a CPU limit (`spec.backup.processMax` may set up to 32).
pub const MAX_DERIVED_PROCESS_MAX: u32 = 4;

/// Where the processes of one pgBackRest deployment find their files and each other. The
/// pod layout ([`Layout::pod`]) is the one the operator renders; tests swap in temp dirs,
/// loopback hosts and free ports without touching anything else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The namespace the Cluster lives in (the default repository path is
    /// `/<namespace>/<cluster>`, and host names end in `.<namespace>.svc`).
    pub namespace: String,
    /// Certificates and keys: `ca.crt`, `server.crt`, `server.key`, `client.crt`,
    /// `client.key` ([`TLS_DIR`]).
    pub tls_dir: String,
    /// Where Secret-backed files are mounted ([`SECRETS_DIR`]).
    pub secrets_dir: String,
    /// PostgreSQL's data directory; `None` means `/pgdata/pg<major>`.
    pub data_dir: Option<String>,
    /// PostgreSQL's unix socket directory ([`SOCKET_DIR`]).
    pub socket_dir: String,
    /// PostgreSQL's port.
    pub pg_port: u16,
    /// A writable directory for locks, logs and the spool ([`TMP_DIR`]; the root filesystem
    /// is read-only).
    pub tmp_dir: String,
    /// Where volume repositories are mounted, one directory per repository
    /// ([`REPO_HOST_PATH`]`/repoN`).
    pub volume_root: String,
    /// The address pgBackRest servers listen on (`*` in pods).
    pub tls_server_address: String,
    /// The port of the instances' pgBackRest servers.
    pub instance_port: u16,
    /// The repository host's address; `None` means its Service DNS name
    /// ([`repo_host_address`]).
    pub repo_host_address: Option<String>,
    /// The port of the repository host's pgBackRest server.
    pub repo_host_port: u16,
    /// The configuration file of an instance's pgBackRest (`pg1-host-config` of clients).
    pub instance_config: String,
    /// The configuration file of the repository host (`repoN-host-config` of clients).
    pub repo_host_config: String,
}

impl Layout {
    /// The layout of the pods the operator runs, in `namespace`.
    pub fn pod(namespace: impl Into<String>) -> Self {
        Layout {
            namespace: namespace.into(),
            tls_dir: TLS_DIR.to_owned(),
            secrets_dir: SECRETS_DIR.to_owned(),
            data_dir: None,
            socket_dir: SOCKET_DIR.to_owned(),
            pg_port: POSTGRES_PORT,
            tmp_dir: TMP_DIR.to_owned(),
            volume_root: REPO_HOST_PATH.to_owned(),
            tls_server_address: "*".to_owned(),
            instance_port: PGBACKREST_PORT,
            repo_host_address: None,
            repo_host_port: PGBACKREST_PORT,
            instance_config: CONFIG_PATH.to_owned(),
            repo_host_config: CONFIG_PATH.to_owned(),
        }
    }

    fn tls_file(&self, name: &str) -> String {
        format!("{}/{name}", self.tls_dir)
    }
}

/// The Service DNS name of a Cluster's repository host, `<cluster>-repo-host.<ns>.svc`. The
/// pgBackRest server certificate must carry it as a DNS SAN (pgBackRest ignores IP SANs).
pub fn repo_host_address(cluster: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc", names::repo_host(cluster))
}

/// The DNS name of an instance's pod, `<instance>-0.<cluster>-pods.<ns>.svc`
/// ([`names::instance_host`]), which the pgBackRest server certificate's wildcard covers: what
/// a backup Job passes as `primary_host`.
pub fn instance_address(cluster: &str, instance: &str, namespace: &str) -> String {
    names::instance_host(cluster, instance, namespace)
}

/// PostgreSQL's data directory for a major in the pod layout, `/pgdata/pg<major>` (as the
/// Cluster controller's Patroni configuration).
pub fn data_dir(postgres_version: i32) -> String {
    format!("/pgdata/pg{postgres_version}")
}

/// Where a volume repository's PVC is mounted, in the repository host and in backup Jobs:
/// `/pgbackrest/repoN`.
pub fn volume_mount_path(repository_name: &str) -> String {
    format!("{REPO_HOST_PATH}/{repository_name}")
}

/// The pgBackRest index of a repository of the Cluster (`repo2` → 2), or `None` when the
/// Cluster has no repository of that name.
pub fn repo_index(cluster: &Cluster, repository_name: &str) -> Option<u32> {
    let backup = cluster.spec.backup.as_ref()?;
    backup
        .repositories
        .iter()
        .find(|repository| repository.name == repository_name)
        .and_then(|repository| index_of_name(&repository.name))
}

/// Like [`repo_index`], with an error naming the repositories the Cluster has.
pub fn require_repo_index(cluster: &Cluster, repository_name: &str) -> Result<u32, SettingsError> {
    repo_index(cluster, repository_name).ok_or_else(|| SettingsError::UnknownRepository {
        name: repository_name.to_owned(),
        available: cluster
            .spec
            .backup
            .as_ref()
            .map(|backup| {
                backup
                    .repositories
                    .iter()
                    .map(|repository| repository.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|names| !names.is_empty())
            .unwrap_or_else(|| "none".to_owned()),
    })
}

fn index_of_name(name: &str) -> Option<u32> {
    let index: u32 = name.strip_prefix("repo")?.parse().ok()?;
    ((1..=4).contains(&index) && name.len() == 5).then_some(index)
}

/// The path inside a repository: `spec.backup.repositories[].path`, by default
/// `/<namespace>/<cluster>` so Clusters sharing a bucket never overwrite each other.
pub fn repository_path(repository: &Repository, namespace: &str, cluster: &str) -> String {
    repository
        .path
        .clone()
        .unwrap_or_else(|| format!("/{namespace}/{cluster}"))
}

/// How the process being configured reaches a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoAccess {
    /// Volume repositories through the repository host's TLS server, object stores directly
    /// (instances: archive-push, archive-get, restore).
    ViaRepoHost,
    /// Every repository local: volume repositories mounted (the repository host, backup
    /// Jobs).
    Local,
}

/// What the settings are for, deciding which options apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Instance,
    RepoHost,
    BackupJob,
}

/// Settings of an instance pod, for both its `postgres` container (archive-push from
/// `archive_command`, archive-get for replicas and restores) and its `pgbackrest` container
/// (`pgbackrest server`, which backup Jobs reach over mutual TLS).
///
/// - Object-store repositories are reached directly; volume repositories through the
///   repository host (`repoN-host`, `repoN-host-type=tls`, the client certificate in
///   [`TLS_DIR`]).
/// - `tls-server-*` admit only the client certificate with CN
///   [`PGBACKREST_CLIENT_CN`], for stanza [`STANZA`].
/// - `archive-async` stays off: pushing synchronously lets PostgreSQL's own
///   `pg_stat_archiver` report every failure as it happens (the ContinuousArchiving
///   condition reads it), needs no spool directory that would have to survive restarts on a
///   read-only root filesystem, and a single push of a compressed 16 MiB segment over a LAN
///   keeps far ahead of WAL generation for the workloads this operator targets.
///
/// Containers need: the ConfigMap at [`CONFIG_PATH`], the pgBackRest Secret at [`TLS_DIR`]
/// (mode 0440 — pgBackRest refuses group-readable keys unless root owns them, which Secret
/// volumes ensure), [`Settings::env`] and [`Settings::volumes`]/[`Settings::volume_mounts`],
/// a writable `/tmp`, and in the `pgbackrest` container only, [`pg_password_env`].
pub fn instance_settings(cluster: &Cluster) -> Result<Settings, SettingsError> {
    instance_settings_in(cluster, &Layout::pod(cluster_namespace(cluster)))
}

/// [`instance_settings`] in a given [`Layout`].
pub fn instance_settings_in(cluster: &Cluster, layout: &Layout) -> Result<Settings, SettingsError> {
    let backup = checked_backup(cluster)?;
    let mut settings = common_settings(Role::Instance, cluster, backup, layout)?;
    for repository in &backup.repositories {
        repository_options(
            &mut settings,
            repository,
            RepoAccess::ViaRepoHost,
            cluster,
            layout,
        )?;
    }
    tls_server_options(&mut settings, layout, layout.instance_port);
    local_postgres_options(&mut settings, cluster, layout);
    Ok(settings)
}

/// Settings of the repository host (`<cluster>-repo-host-0`): its `pgbackrest server` serves
/// the Cluster's volume repositories, mounted at [`volume_mount_path`], to the instances over
/// mutual TLS. Object-store repositories are not its business. Holds the repository cipher
/// when encryption is on: a remote repository is encrypted where it is stored.
///
/// `None` when the Cluster has no volume repository (no repository host is needed).
pub fn repo_host_settings(cluster: &Cluster) -> Result<Option<Settings>, SettingsError> {
    repo_host_settings_in(cluster, &Layout::pod(cluster_namespace(cluster)))
}

/// [`repo_host_settings`] in a given [`Layout`].
pub fn repo_host_settings_in(
    cluster: &Cluster,
    layout: &Layout,
) -> Result<Option<Settings>, SettingsError> {
    let backup = checked_backup(cluster)?;
    if !backup.repositories.iter().any(|r| r.volume.is_some()) {
        return Ok(None);
    }
    let mut settings = common_settings(Role::RepoHost, cluster, backup, layout)?;
    for repository in backup.repositories.iter().filter(|r| r.volume.is_some()) {
        repository_options(
            &mut settings,
            repository,
            RepoAccess::Local,
            cluster,
            layout,
        )?;
    }
    tls_server_options(&mut settings, layout, layout.repo_host_port);
    Ok(Some(settings))
}

/// Settings of a backup Job: every repository local (the Job mounts the volume repositories'
/// PVCs at [`volume_mount_path`], shared with the repository host, so the pod needs the
/// repository host's node when the volume is ReadWriteOnce) and PostgreSQL reached through
/// the primary's pgBackRest server: `pg1-host=<primary_host>`, `pg1-host-type=tls` with the
/// client certificate. `start-fast` makes PostgreSQL checkpoint at once instead of waiting
/// for the next scheduled checkpoint. Also right for `stanza-create`, `check`, `info` and
/// `expire`, which must run where the repositories are local.
///
/// `primary_host` must be a DNS name the server certificate carries, such as
/// [`instance_address`].
pub fn backup_job_settings(
    cluster: &Cluster,
    primary_host: &str,
) -> Result<Settings, SettingsError> {
    backup_job_settings_in(
        cluster,
        primary_host,
        &Layout::pod(cluster_namespace(cluster)),
    )
}

/// [`backup_job_settings`] in a given [`Layout`].
pub fn backup_job_settings_in(
    cluster: &Cluster,
    primary_host: &str,
    layout: &Layout,
) -> Result<Settings, SettingsError> {
    let backup = checked_backup(cluster)?;
    check_value("the primary host", primary_host)?;
    let mut settings = common_settings(Role::BackupJob, cluster, backup, layout)?;
    for repository in &backup.repositories {
        repository_options(
            &mut settings,
            repository,
            RepoAccess::Local,
            cluster,
            layout,
        )?;
    }
    settings.set_global("start-fast", OptionValue::literal("y"));
    settings.set_stanza("pg1-host", OptionValue::literal(primary_host));
    settings.set_stanza("pg1-host-type", OptionValue::literal("tls"));
    settings.set_stanza(
        "pg1-host-port",
        OptionValue::literal(layout.instance_port.to_string()),
    );
    settings.set_stanza(
        "pg1-host-ca-file",
        OptionValue::literal(layout.tls_file("ca.crt")),
    );
    settings.set_stanza(
        "pg1-host-cert-file",
        OptionValue::literal(layout.tls_file("client.crt")),
    );
    settings.set_stanza(
        "pg1-host-key-file",
        OptionValue::literal(layout.tls_file("client.key")),
    );
    if layout.instance_config != CONFIG_PATH {
        settings.set_stanza(
            "pg1-host-config",
            OptionValue::literal(layout.instance_config.clone()),
        );
    }
    settings.set_stanza(
        "pg1-path",
        OptionValue::literal(pg_data_dir(cluster, layout)),
    );
    Ok(settings)
}

/// Adds one repository's options (`repoN-*`) to `settings`. Public for the restore builder,
/// which configures another Cluster's repository next to this Cluster's own.
pub fn repository_options(
    settings: &mut Settings,
    repository: &Repository,
    access: RepoAccess,
    cluster: &Cluster,
    layout: &Layout,
) -> Result<(), SettingsError> {
    let index =
        index_of_name(&repository.name).ok_or_else(|| SettingsError::InvalidRepositoryName {
            name: repository.name.clone(),
        })?;
    let repo = |option: &str| format!("repo{index}-{option}");
    let field = |rest: &str| format!("spec.backup.repositories[{}].{rest}", repository.name);
    let cluster_name = cluster.metadata.name.clone().unwrap_or_default();
    let path = repository_path(repository, &layout.namespace, &cluster_name);
    check_value(&field("path"), &path)?;
    if !path.starts_with('/') {
        return Err(SettingsError::InvalidValue {
            field: field("path"),
            value: path,
            problem: "it must start with /",
        });
    }

    match (
        &repository.volume,
        &repository.s3,
        &repository.gcs,
        &repository.azure,
    ) {
        (Some(_), None, None, None) => {
            let mount = format!("{}/{}", layout.volume_root, repository.name);
            settings.set_global(repo("path"), OptionValue::literal(format!("{mount}{path}")));
            if access == RepoAccess::ViaRepoHost {
                let host = layout
                    .repo_host_address
                    .clone()
                    .unwrap_or_else(|| repo_host_address(&cluster_name, &layout.namespace));
                settings.set_global(repo("host"), OptionValue::literal(host));
                settings.set_global(repo("host-type"), OptionValue::literal("tls"));
                settings.set_global(
                    repo("host-port"),
                    OptionValue::literal(layout.repo_host_port.to_string()),
                );
                settings.set_global(
                    repo("host-ca-file"),
                    OptionValue::literal(layout.tls_file("ca.crt")),
                );
                settings.set_global(
                    repo("host-cert-file"),
                    OptionValue::literal(layout.tls_file("client.crt")),
                );
                settings.set_global(
                    repo("host-key-file"),
                    OptionValue::literal(layout.tls_file("client.key")),
                );
                if layout.repo_host_config != CONFIG_PATH {
                    settings.set_global(
                        repo("host-config"),
                        OptionValue::literal(layout.repo_host_config.clone()),
                    );
                }
            } else {
                settings.set_global(repo("type"), OptionValue::literal("posix"));
            }
        }
        (None, Some(s3), None, None) => {
            settings.set_global(repo("path"), OptionValue::literal(path));
            s3_options(settings, index, &repository.name, s3, layout)?;
        }
        (None, None, Some(gcs), None) => {
            settings.set_global(repo("path"), OptionValue::literal(path));
            gcs_options(settings, index, &repository.name, gcs, layout)?;
        }
        (None, None, None, Some(azure)) => {
            settings.set_global(repo("path"), OptionValue::literal(path));
            azure_options(settings, index, &repository.name, azure)?;
        }
        _ => {
            return Err(SettingsError::RepositoryKind {
                name: repository.name.clone(),
            });
        }
    }

    // Retention is applied by `expire`, which runs after each backup where the repository is
    // local; set it everywhere so a manual `pgbackrest expire` anywhere agrees.
    let retention = &repository.retention;
    settings.set_global(
        repo("retention-full"),
        OptionValue::literal(retention.full.to_string()),
    );
    settings.set_global(
        repo("retention-full-type"),
        OptionValue::literal(match retention.full_type {
            RetentionType::Count => "count",
            RetentionType::Days => "time",
        }),
    );
    if let Some(differential) = retention.differential {
        settings.set_global(
            repo("retention-diff"),
            OptionValue::literal(differential.to_string()),
        );
    }
    // Bundling many small files into few objects makes backups to object stores much faster
    // and costs nothing on a volume (pgBackRest 2.39+).
    settings.set_global(repo("bundle"), OptionValue::literal("y"));
    Ok(())
}

fn s3_options(
    settings: &mut Settings,
    index: u32,
    name: &str,
    s3: &S3Repository,
    layout: &Layout,
) -> Result<(), SettingsError> {
    let repo = |option: &str| format!("repo{index}-{option}");
    let field = |rest: &str| format!("spec.backup.repositories[{name}].s3.{rest}");
    check_value(&field("bucket"), &s3.bucket)?;
    check_value(&field("endpoint"), &s3.endpoint)?;
    check_value(&field("region"), &s3.region)?;
    settings.set_global(repo("type"), OptionValue::literal("s3"));
    settings.set_global(repo("s3-bucket"), OptionValue::literal(s3.bucket.clone()));
    let (host, port) = split_endpoint(&s3.endpoint);
    settings.set_global(repo("s3-endpoint"), OptionValue::literal(host));
    if let Some(port) = port {
        settings.set_global(repo("storage-port"), OptionValue::literal(port));
    }
    settings.set_global(repo("s3-region"), OptionValue::literal(s3.region.clone()));
    settings.set_global(
        repo("s3-uri-style"),
        OptionValue::literal(match s3.uri_style {
            S3UriStyle::Host => "host",
            S3UriStyle::Path => "path",
        }),
    );
    match &s3.credentials_secret {
        Some(secret) => {
            let secret_name = checked_secret_name(&field("credentialsSecret"), secret)?;
            settings.set_global(repo("s3-key-type"), OptionValue::literal("shared"));
            settings.set_global(
                repo("s3-key"),
                OptionValue::Secret(selector(&secret_name, "AWS_ACCESS_KEY_ID")),
            );
            settings.set_global(
                repo("s3-key-secret"),
                OptionValue::Secret(selector(&secret_name, "AWS_SECRET_ACCESS_KEY")),
            );
        }
        None if is_aws_endpoint(&host_of(&s3.endpoint)) => {
            // IRSA: the pod's service account token, exchanged with AWS STS.
            settings.set_global(repo("s3-key-type"), OptionValue::literal("web-id"));
        }
        None => {
            return Err(SettingsError::S3CredentialsMissing {
                repository: name.to_owned(),
                endpoint: s3.endpoint.clone(),
            });
        }
    }
    if let Some(ca) = &s3.ca {
        let option = repo("storage-ca-file");
        let file = secret_file(&field("ca"), ca, &option, "ca.crt", layout)?;
        settings.set_global(option, OptionValue::SecretFile(file));
    }
    if !s3.verify_tls {
        settings.set_global(repo("storage-verify-tls"), OptionValue::literal("n"));
    }
    Ok(())
}

fn gcs_options(
    settings: &mut Settings,
    index: u32,
    name: &str,
    gcs: &GcsRepository,
    layout: &Layout,
) -> Result<(), SettingsError> {
    let repo = |option: &str| format!("repo{index}-{option}");
    let field = |rest: &str| format!("spec.backup.repositories[{name}].gcs.{rest}");
    check_value(&field("bucket"), &gcs.bucket)?;
    settings.set_global(repo("type"), OptionValue::literal("gcs"));
    settings.set_global(repo("gcs-bucket"), OptionValue::literal(gcs.bucket.clone()));
    match &gcs.credentials_secret {
        Some(secret) => {
            let secret_name = checked_secret_name(&field("credentialsSecret"), secret)?;
            let option = repo("gcs-key");
            let reference = SecretKeyReference {
                name: secret_name,
                key: "key.json".to_owned(),
            };
            let file = secret_file(
                &field("credentialsSecret"),
                &reference,
                &option,
                "key.json",
                layout,
            )?;
            settings.set_global(repo("gcs-key-type"), OptionValue::literal("service"));
            settings.set_global(option, OptionValue::SecretFile(file));
        }
        None => {
            // Workload Identity: the metadata server hands out the service account's token.
            settings.set_global(repo("gcs-key-type"), OptionValue::literal("auto"));
        }
    }
    Ok(())
}

fn azure_options(
    settings: &mut Settings,
    index: u32,
    name: &str,
    azure: &AzureRepository,
) -> Result<(), SettingsError> {
    let repo = |option: &str| format!("repo{index}-{option}");
    let field = |rest: &str| format!("spec.backup.repositories[{name}].azure.{rest}");
    check_value(&field("container"), &azure.container)?;
    let secret_name = checked_secret_name(&field("credentialsSecret"), &azure.credentials_secret)?;
    settings.set_global(repo("type"), OptionValue::literal("azure"));
    settings.set_global(
        repo("azure-container"),
        OptionValue::literal(azure.container.clone()),
    );
    if let Some(endpoint) = &azure.endpoint {
        check_value(&field("endpoint"), endpoint)?;
        let (host, port) = split_endpoint(endpoint);
        settings.set_global(repo("azure-endpoint"), OptionValue::literal(host));
        if let Some(port) = port {
            settings.set_global(repo("storage-port"), OptionValue::literal(port));
        }
    }
    settings.set_global(
        repo("azure-account"),
        OptionValue::Secret(selector(&secret_name, "AZURE_STORAGE_ACCOUNT")),
    );
    settings.set_global(repo("azure-key-type"), OptionValue::literal("shared"));
    settings.set_global(
        repo("azure-key"),
        OptionValue::Secret(selector(&secret_name, "AZURE_STORAGE_KEY")),
    );
    Ok(())
}

/// Switches an Azure repository of `settings` to a shared access signature: the key comes
/// from `AZURE_STORAGE_SAS_TOKEN` of the same Secret (`repoN-azure-key-type=sas`). For a
/// controller that looked into the credentials Secret and found a SAS token rather than a
/// shared key. Does nothing to a repository that is not Azure.
pub fn use_azure_sas(settings: &mut Settings, index: u32) {
    let key = format!("repo{index}-azure-key");
    let Some(OptionValue::Secret(secret)) = settings.global.get(&key).cloned() else {
        return;
    };
    settings.set_global(
        format!("repo{index}-azure-key-type"),
        OptionValue::literal("sas"),
    );
    settings.set_global(
        key,
        OptionValue::Secret(selector(&secret.name, "AZURE_STORAGE_SAS_TOKEN")),
    );
}

/// Options every role shares: logging and locks under the writable temp dir, compression,
/// parallelism and the repository cipher.
fn common_settings(
    role: Role,
    cluster: &Cluster,
    backup: &BackupConfiguration,
    layout: &Layout,
) -> Result<Settings, SettingsError> {
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
    // Containers log to stdout; a log file on /tmp would only fill the emptyDir.
    settings.set_global("log-level-file", OptionValue::literal("off"));
    settings.set_global("log-level-console", OptionValue::literal("info"));
    settings.set_global(
        "spool-path",
        OptionValue::literal(format!("{tmp}/pgbackrest/spool")),
    );

    if role != Role::RepoHost {
        let (kind, level) = compression(backup)?;
        settings.set_global("compress-type", OptionValue::literal(kind));
        if let Some(level) = level {
            settings.set_global("compress-level", OptionValue::literal(level.to_string()));
        }
        let process_max = match role {
            Role::BackupJob => process_max(backup.process_max, backup.job_resources.as_ref()),
            _ => process_max(backup.process_max, cluster.spec.resources.as_ref()),
        };
        settings.set_global("process-max", OptionValue::literal(process_max.to_string()));
    }

    if let Some(encryption) = &backup.encryption {
        let passphrase = &encryption.passphrase_secret;
        if passphrase.name.trim().is_empty() || passphrase.key.trim().is_empty() {
            return Err(SettingsError::EncryptionPassphraseMissing);
        }
        for repository in &backup.repositories {
            let Some(index) = index_of_name(&repository.name) else {
                continue;
            };
            // A remote (volume) repository is encrypted by the repository host; the instance
            // must not hold the passphrase for it, or it would encrypt a second time.
            let remote = role == Role::Instance && repository.volume.is_some();
            // The repository host serves the volume repositories and nothing else.
            let not_served = role == Role::RepoHost && repository.volume.is_none();
            if remote || not_served {
                continue;
            }
            settings.set_global(
                format!("repo{index}-cipher-type"),
                OptionValue::literal("aes-256-cbc"),
            );
            settings.set_global(
                format!("repo{index}-cipher-pass"),
                OptionValue::Secret(selector(&passphrase.name, &passphrase.key)),
            );
        }
    }
    Ok(settings)
}

/// pgBackRest's `compress-type` and `compress-level` for a backup configuration: the type as
/// given (zst by default), the level as given or [`DEFAULT_ZST_LEVEL`] for zst (pgBackRest's
/// own default for the other types).
pub fn compression(
    backup: &BackupConfiguration,
) -> Result<(&'static str, Option<i32>), SettingsError> {
    let spec = &backup.compression;
    let (kind, min, max) = match spec.type_ {
        CompressionType::Zst => ("zst", -7, 22),
        CompressionType::Lz4 => ("lz4", -5, 12),
        CompressionType::Gz => ("gz", 0, 9),
        CompressionType::Bz2 => ("bz2", 1, 9),
        CompressionType::None => ("none", 0, 0),
    };
    let level = match (spec.type_, spec.level) {
        (CompressionType::None, _) => None,
        (_, Some(level)) if !(min..=max).contains(&level) => {
            return Err(SettingsError::CompressionLevel {
                kind,
                level,
                min,
                max,
            });
        }
        (_, Some(level)) => Some(level),
        (CompressionType::Zst, None) => Some(DEFAULT_ZST_LEVEL),
        (_, None) => None,
    };
    Ok((kind, level))
}

/// Parallel processes: `spec.backup.processMax` when set; else one per CPU of the container's
/// CPU limit (or request), rounded up, between 1 and [`MAX_DERIVED_PROCESS_MAX`]; else
/// [`DEFAULT_PROCESS_MAX`].
///
/// Measured (docs/operations/backup.md, "Performance defaults"): a backup is a pipeline
/// across the TLS hop — the primary's pgBackRest server reads, checksums and compresses, the
/// Job receives and writes — and more processes than CPUs won in some runs and lost in
/// others, never by more than the noise. Each local process has a worker on the primary, so
/// one per CPU also bounds what a backup takes from the database.
pub fn process_max(
    explicit: Option<i32>,
    resources: Option<&k8s_openapi::api::core::v1::ResourceRequirements>,
) -> u32 {
    if let Some(explicit) = explicit
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= 1)
    {
        return explicit;
    }
    let cpu = resources.and_then(|resources| {
        let of = |map: &Option<
            std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >| {
            map.as_ref()
                .and_then(|map| map.get("cpu"))
                .and_then(|quantity| cpu_millis(&quantity.0))
        };
        of(&resources.limits).or_else(|| of(&resources.requests))
    });
    match cpu {
        Some(millis) => {
            let cpus = millis.div_ceil(1000).max(1);
            u32::try_from(cpus)
                .unwrap_or(MAX_DERIVED_PROCESS_MAX)
                .min(MAX_DERIVED_PROCESS_MAX)
        }
        None => DEFAULT_PROCESS_MAX,
    }
}

/// Millicores of a CPU quantity (`500m`, `2`, `1.5`), `None` if it is not one.
fn cpu_millis(quantity: &str) -> Option<u64> {
    let quantity = quantity.trim();
    if let Some(millis) = quantity.strip_suffix('m') {
        return millis.parse().ok();
    }
    let (whole, fraction) = quantity.split_once('.').unwrap_or((quantity, ""));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut fraction_millis = 0;
    for (position, digit) in fraction.chars().take(3).enumerate() {
        let digit = u64::from(digit.to_digit(10)?);
        fraction_millis += digit * 10u64.pow(2 - position as u32);
    }
    if fraction.chars().skip(3).any(|c| c != '0') {
        fraction_millis += 1;
    }
    whole.checked_mul(1000)?.checked_add(fraction_millis)
}

/// `tls-server-*`: listen on `port`, present the server certificate, admit only the client
/// certificate's CN for the stanza.
fn tls_server_options(settings: &mut Settings, layout: &Layout, port: u16) {
    settings.set_global(
        "tls-server-address",
        OptionValue::literal(layout.tls_server_address.clone()),
    );
    settings.set_global("tls-server-port", OptionValue::literal(port.to_string()));
    settings.set_global(
        "tls-server-ca-file",
        OptionValue::literal(layout.tls_file("ca.crt")),
    );
    settings.set_global(
        "tls-server-cert-file",
        OptionValue::literal(layout.tls_file("server.crt")),
    );
    settings.set_global(
        "tls-server-key-file",
        OptionValue::literal(layout.tls_file("server.key")),
    );
    settings.set_global(
        "tls-server-auth",
        OptionValue::literal(format!("{PGBACKREST_CLIENT_CN}={STANZA}")),
    );
}

/// `pg1-*` of the PostgreSQL running next to the process: data directory, socket, port and
/// the superuser (whose password [`pg_password_env`] supplies).
fn local_postgres_options(settings: &mut Settings, cluster: &Cluster, layout: &Layout) {
    settings.set_stanza(
        "pg1-path",
        OptionValue::literal(pg_data_dir(cluster, layout)),
    );
    settings.set_stanza(
        "pg1-socket-path",
        OptionValue::literal(layout.socket_dir.clone()),
    );
    settings.set_stanza("pg1-port", OptionValue::literal(layout.pg_port.to_string()));
    settings.set_stanza("pg1-user", OptionValue::literal(SUPERUSER_ROLE));
}

/// `PGPASSWORD` from the superuser Secret, for the `pgbackrest` container only: the backup it
/// serves connects to PostgreSQL over the socket, which pg_hba guards with scram-sha-256.
/// Never give it to the `postgres` container, where it would override Patroni's password
/// file for every role.
pub fn pg_password_env(cluster: &Cluster) -> k8s_openapi::api::core::v1::EnvVar {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    k8s_openapi::api::core::v1::EnvVar {
        name: "PGPASSWORD".to_owned(),
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            secret_key_ref: Some(selector(
                &names::superuser_secret(&name),
                names::keys::PASSWORD,
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pg_data_dir(cluster: &Cluster, layout: &Layout) -> String {
    layout
        .data_dir
        .clone()
        .unwrap_or_else(|| data_dir(cluster.spec.postgres_version))
}

/// The backup configuration, checked: repositories present, names valid and unique.
fn checked_backup(cluster: &Cluster) -> Result<&BackupConfiguration, SettingsError> {
    let backup = cluster
        .spec
        .backup
        .as_ref()
        .filter(|backup| !backup.repositories.is_empty())
        .ok_or(SettingsError::NoRepository)?;
    let mut seen = std::collections::BTreeSet::new();
    for repository in &backup.repositories {
        if index_of_name(&repository.name).is_none() {
            return Err(SettingsError::InvalidRepositoryName {
                name: repository.name.clone(),
            });
        }
        if !seen.insert(repository.name.as_str()) {
            return Err(SettingsError::DuplicateRepository {
                name: repository.name.clone(),
            });
        }
    }
    Ok(backup)
}

fn cluster_namespace(cluster: &Cluster) -> String {
    cluster.metadata.namespace.clone().unwrap_or_default()
}

/// Refuses values that would break or inject into the configuration file.
fn check_value(field: &str, value: &str) -> Result<(), SettingsError> {
    let problem = if value.trim().is_empty() {
        Some("it is empty")
    } else if value.chars().any(char::is_control) {
        Some("it contains a line break or another control character")
    } else if value != value.trim() {
        Some("it starts or ends with white space")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SettingsError::InvalidValue {
            field: field.to_owned(),
            value: value.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

fn checked_secret_name(field: &str, secret: &SecretReference) -> Result<String, SettingsError> {
    if secret.name.trim().is_empty() {
        return Err(SettingsError::SecretReferenceEmpty {
            field: field.to_owned(),
        });
    }
    Ok(secret.name.clone())
}

fn secret_file(
    field: &str,
    reference: &SecretKeyReference,
    option: &str,
    file_name: &str,
    layout: &Layout,
) -> Result<SecretFile, SettingsError> {
    if reference.name.trim().is_empty() || reference.key.trim().is_empty() {
        return Err(SettingsError::SecretReferenceEmpty {
            field: field.to_owned(),
        });
    }
    Ok(SecretFile {
        secret: selector(&reference.name, &reference.key),
        path: format!("{}/{option}/{file_name}", layout.secrets_dir),
    })
}

fn selector(name: &str, key: &str) -> SecretKeySelector {
    SecretKeySelector {
        name: name.to_owned(),
        key: key.to_owned(),
        optional: None,
    }
}

/// `host:port` → (`host`, `Some(port)`); a bare host → (`host`, `None`).
fn split_endpoint(endpoint: &str) -> (String, Option<String>) {
    let endpoint = endpoint
        .trim_start_matches("https://")
        .trim_end_matches('/');
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host.to_owned(), Some(port.to_owned()))
        }
        _ => (endpoint.to_owned(), None),
    }
}

fn host_of(endpoint: &str) -> String {
    split_endpoint(endpoint).0
}

fn is_aws_endpoint(host: &str) -> bool {
    host == "amazonaws.com"
        || host.ends_with(".amazonaws.com")
        || host.ends_with(".amazonaws.com.cn")
}

/// The backup type's `--type` value.
pub(crate) fn type_option(kind: BackupType) -> String {
    format!("--type={}", kind.pgbackrest_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        assert_eq!(cpu_millis("500m"), Some(500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(
            cpu_millis("0.0005"),
            Some(1),
            "a fraction below 1m rounds up"
        );
        assert_eq!(cpu_millis(".25"), Some(250));
        assert_eq!(cpu_millis("lots"), None);
    }

    #[test]
    fn process_max_is_one_per_cpu_between_one_and_four() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let limit = |cpu: &str| ResourceRequirements {
            limits: Some([("cpu".to_owned(), Quantity(cpu.to_owned()))].into()),
            ..ResourceRequirements::default()
        };
        assert_eq!(process_max(None, Some(&limit("250m"))), 1);
        assert_eq!(process_max(None, Some(&limit("1"))), 1);
        assert_eq!(process_max(None, Some(&limit("1500m"))), 2);
        assert_eq!(process_max(None, Some(&limit("3"))), 3);
        assert_eq!(
            process_max(None, Some(&limit("64"))),
            MAX_DERIVED_PROCESS_MAX
        );
        assert_eq!(process_max(None, None), DEFAULT_PROCESS_MAX);
        assert_eq!(process_max(Some(16), Some(&limit("1"))), 16);
        assert_eq!(process_max(Some(0), None), DEFAULT_PROCESS_MAX);
        let requests_only = ResourceRequirements {
            requests: Some([("cpu".to_owned(), Quantity("1".to_owned()))].into()),
            ..ResourceRequirements::default()
        };
        assert_eq!(process_max(None, Some(&requests_only)), 1);
    }

    #[test]
    fn endpoints_split_into_host_and_port() {
        assert_eq!(
            split_endpoint("minio.svc:9000"),
            ("minio.svc".to_owned(), Some("9000".to_owned()))
        );
        assert_eq!(
            split_endpoint("https://s3.amazonaws.com/"),
            ("s3.amazonaws.com".to_owned(), None)
        );
        assert!(is_aws_endpoint("s3.eu-central-1.amazonaws.com"));
        assert!(!is_aws_endpoint("amazonaws.com.evil.example"));
    }

    #[test]
    fn repository_names_outside_repo1_to_repo4_have_no_index() {
        assert_eq!(index_of_name("repo1"), Some(1));
        assert_eq!(index_of_name("repo4"), Some(4));
        for bad in ["repo0", "repo5", "repo01", "repo", "Repo1", "repo1x"] {
            assert_eq!(index_of_name(bad), None, "{bad}");
        }
    }
}
