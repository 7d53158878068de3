//! pgBackRest command lines, as argument vectors for container `command`s. Each names the
//! stanza and reads every other option from the configuration file and the environment.

use tusk_api::backup::BackupType;

use crate::STANZA;
use crate::config::type_option;

fn pgbackrest(options: impl IntoIterator<Item = String>, command: &str) -> Vec<String> {
    let mut argv = vec!["pgbackrest".to_owned(), format!("--stanza={STANZA}")];
    argv.extend(options);
    argv.push(command.to_owned());
    argv
}

/// `pgbackrest --stanza=db --repo=N --type=full|diff|incr backup`. pgBackRest takes a full
/// backup instead when the repository holds none to build on (and logs it).
pub fn backup_command(kind: BackupType, repo_index: u32) -> Vec<String> {
    pgbackrest(
        [format!("--repo={repo_index}"), type_option(kind)],
        "backup",
    )
}

/// `pgbackrest --stanza=db --output=json [--repo=N] info`. Exits 0 even when the stanza is in
/// error: read the result with [`crate::parse_info`].
pub fn info_command(repo_index: Option<u32>) -> Vec<String> {
    let mut options = vec!["--output=json".to_owned()];
    options.extend(repo_index.map(|index| format!("--repo={index}")));
    pgbackrest(options, "info")
}

/// `pgbackrest --stanza=db --repo=N --set=<label> expire`: removes one backup set and the
/// differential and incremental backups that depend on it (a Backup's deletionPolicy
/// Expire). pgBackRest refuses to expire the latest full backup of a repository.
pub fn expire_set_command(label: &str, repo_index: u32) -> Vec<String> {
    pgbackrest(
        [format!("--repo={repo_index}"), format!("--set={label}")],
        "expire",
    )
}

/// `pgbackrest --stanza=db stanza-create`: creates the stanza in every repository, or checks
/// that an existing one matches this database (idempotent). Runs where the repositories are
/// local, with [`crate::backup_job_settings`].
pub fn stanza_create_command() -> Vec<String> {
    pgbackrest([], "stanza-create")
}

/// `pgbackrest --stanza=db check`: checks that WAL archiving reaches every repository (forces
/// a WAL switch and waits for the segment to be archived).
pub fn check_command() -> Vec<String> {
    pgbackrest([], "check")
}

/// `pgbackrest server`: the TLS server of an instance's `pgbackrest` container and of the
/// repository host.
pub fn server_command() -> Vec<String> {
    vec!["pgbackrest".to_owned(), "server".to_owned()]
}

/// PostgreSQL's `archive_command` when a repository is configured.
pub fn archive_command() -> String {
    format!("pgbackrest --stanza={STANZA} archive-push \"%p\"")
}

/// PostgreSQL's `restore_command`, for replicas catching up from the archive and for
/// recovery.
pub fn restore_command() -> String {
    format!("pgbackrest --stanza={STANZA} archive-get %f \"%p\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_command_names_stanza_repository_and_type() {
        assert_eq!(
            backup_command(BackupType::Differential, 2),
            [
                "pgbackrest",
                "--stanza=db",
                "--repo=2",
                "--type=diff",
                "backup"
            ]
        );
        assert_eq!(backup_command(BackupType::Full, 1)[3], "--type=full");
        assert_eq!(backup_command(BackupType::Incremental, 1)[3], "--type=incr");
    }

    #[test]
    fn info_and_expire_commands() {
        assert_eq!(
            info_command(None),
            ["pgbackrest", "--stanza=db", "--output=json", "info"]
        );
        assert_eq!(
            info_command(Some(3)),
            [
                "pgbackrest",
                "--stanza=db",
                "--output=json",
                "--repo=3",
                "info"
            ]
        );
        assert_eq!(
            expire_set_command("20261122-101500F", 1),
            [
                "pgbackrest",
                "--stanza=db",
                "--repo=1",
                "--set=20261122-101500F",
                "expire"
            ]
        );
    }

    #[test]
    fn archive_commands_quote_the_path() {
        assert_eq!(
            archive_command(),
            "pgbackrest --stanza=db archive-push \"%p\""
        );
        assert_eq!(
            restore_command(),
            "pgbackrest --stanza=db archive-get %f \"%p\""
        );
    }
}
