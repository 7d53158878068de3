//! pgBackRest configuration rendered from a Cluster's backup spec. Pure: no I/O, shared by the
//! Cluster, Backup and PGUpgrade controllers.
//!
//! ```text
//!  Cluster.spec.backup ──► instance_settings ──► ConfigMap pgbackrest.conf + env (Secrets)
//!                      ├─► repo_host_settings ─► the `<cluster>-repo-host` pod (volume repos)
//!                      └─► backup_job_settings ► a backup Job (pg1-host = the primary, TLS)
//!  backup_command / info_command / expire_set_command ──► container commands
//!  `pgbackrest info --output=json` ──► parse_info ──► Backup status
//! ```
//!
//! A [`Settings`] holds the `[global]` and stanza options. Literal options go into the
//! configuration file ([`Settings::to_ini`], a ConfigMap); secret options (passphrases, access
//! keys) never do: they become `PGBACKREST_*` environment variables from Secret keys
//! ([`Settings::env`]), and Secret-backed files (a GCS key, a private CA) are mounted from
//! their Secrets ([`Settings::volumes`]).
//!
//! Every process keeps its configuration at the default path [`CONFIG_PATH`]: the worker a
//! pgBackRest server starts reads the file its *client* names (DESIGN.md §7).

#![forbid(unsafe_code)]

mod command;
mod config;
mod error;
mod info;
pub mod restore;
mod settings;

pub use command::{
    archive_command, backup_command, check_command, expire_set_command, info_command,
    restore_command, server_command, stanza_create_command,
};
pub use config::{
    DEFAULT_PROCESS_MAX, DEFAULT_ZST_LEVEL, Layout, MAX_DERIVED_PROCESS_MAX, RepoAccess,
    backup_job_settings, backup_job_settings_in, compression, data_dir, instance_address,
    instance_settings, instance_settings_in, pg_password_env, process_max, repo_host_address,
    repo_host_settings, repo_host_settings_in, repo_index, repository_options, repository_path,
    require_repo_index, use_azure_sas, volume_mount_path,
};
pub use error::{InfoError, SettingsError};
pub use info::{
    ArchiveInfo, BackupSetInfo, RepoInfo, STATUS_NO_VALID_BACKUPS, STATUS_OK, StanzaInfo,
    parse_info, parse_stanza_info,
};
pub use settings::{OptionValue, SecretFile, Settings, env_var_name};

/// The pgBackRest stanza every Cluster uses (one stanza per repository path).
pub const STANZA: &str = "db";

/// Where every pgBackRest process reads its configuration (pgBackRest's default, so a
/// server's workers find it too).
pub const CONFIG_PATH: &str = "/etc/pgbackrest/pgbackrest.conf";

/// The directory the ConfigMap with [`CONFIG_PATH`] is mounted at.
pub const CONFIG_DIR: &str = "/etc/pgbackrest";

/// The key of [`CONFIG_PATH`] in the ConfigMap.
pub const CONFIG_KEY: &str = "pgbackrest.conf";

/// Where the pgBackRest Secret (`tusk_api::names::pgbackrest_secret`) is mounted: `ca.crt`,
/// `server.crt`, `server.key`, `client.crt`, `client.key`
/// ([`tusk_api::names::pgbackrest_keys`]).
pub const TLS_DIR: &str = "/etc/pgbackrest/tls";

/// Where Secret-backed files (a GCS service account key, an S3 CA) are mounted, one
/// directory per option: `/etc/pgbackrest/secrets/<option>/<file>`.
pub const SECRETS_DIR: &str = "/etc/pgbackrest/secrets";

/// Where volume repositories are mounted, one directory per repository
/// (`/pgbackrest/repo1`), in the repository host and in backup Jobs.
pub const REPO_HOST_PATH: &str = "/pgbackrest";

/// PostgreSQL's unix socket directory in instance pods.
pub const SOCKET_DIR: &str = "/var/run/postgresql";

/// The writable directory (an emptyDir; the root filesystem is read-only) under which
/// pgBackRest keeps its locks (`pgbackrest/lock`), logs and spool.
pub const TMP_DIR: &str = "/tmp";
