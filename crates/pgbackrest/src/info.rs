//! Reading `pgbackrest info --output=json`.
//!
//! pgBackRest exits 0 even when a stanza is in error (DESIGN.md §7): the answer is in each
//! stanza's `status.code` — 0 ok, 1 missing stanza path, 2 no valid backups, 3 missing stanza
//! data, 4 different across repositories, 5 database mismatch, 6 requested backup not found,
//! 99 other — and in each repository's own status.

use jiff::Timestamp;
use serde::Deserialize;
use tusk_api::backup::{BackupSize, BackupType, LsnRange, WalRange, timeline_of_wal_segment};

use crate::STANZA;
use crate::error::InfoError;

/// `status.code` of a healthy stanza.
pub const STATUS_OK: i64 = 0;
/// `status.code` of a stanza without any backup yet: not an error for a new Cluster.
pub const STATUS_NO_VALID_BACKUPS: i64 = 2;

/// One backup set in a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSetInfo {
    /// The set's label, `20261122-101500F` or `20261122-101500F_20261122-111500D`.
    pub label: String,
    /// Full, differential or incremental.
    pub kind: BackupType,
    /// The repository index (`repo-key`) the set is in.
    pub repo: u32,
    /// When the backup started and stopped.
    pub started_at: Timestamp,
    pub stopped_at: Timestamp,
    /// WAL positions at backup start and stop (`0/3000028`), when pgBackRest recorded them.
    pub lsn: Option<LsnRange>,
    /// First and last WAL segment a restore needs.
    pub wal: Option<WalRange>,
    /// Size of the database the backup restores (bytes).
    pub size: i64,
    /// Bytes the set takes in the repository.
    pub repository_size: i64,
    /// The set this one builds on (differential and incremental).
    pub prior: Option<String>,
    /// Whether pgBackRest found page checksum errors while copying.
    pub error: bool,
}

impl BackupSetInfo {
    /// Sizes for a Backup's status.
    pub fn backup_size(&self) -> BackupSize {
        BackupSize {
            original: self.size,
            repository: self.repository_size,
        }
    }

    /// The timeline the backup was taken on, from its first WAL segment.
    pub fn timeline(&self) -> Option<i64> {
        self.wal
            .as_ref()
            .and_then(|wal| timeline_of_wal_segment(&wal.start))
    }
}

/// The state of the stanza, and of each repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaInfo {
    /// The stanza name.
    pub name: String,
    /// `status.code` (see the module docs) and its message.
    pub code: i64,
    pub message: String,
    /// Whether a backup or expire holds the stanza's lock right now.
    pub backup_running: bool,
    /// Every repository's own status.
    pub repos: Vec<RepoInfo>,
    /// The backup sets of every repository, oldest first.
    pub backups: Vec<BackupSetInfo>,
    /// Archived WAL ranges, per repository and database.
    pub archives: Vec<ArchiveInfo>,
}

impl StanzaInfo {
    /// Whether the stanza works (ok, or ok with no backup yet).
    pub fn is_usable(&self) -> bool {
        self.code == STATUS_OK || self.code == STATUS_NO_VALID_BACKUPS
    }

    /// The newest set in repository `repo`.
    pub fn latest(&self, repo: u32) -> Option<&BackupSetInfo> {
        self.backups
            .iter()
            .filter(|set| set.repo == repo)
            .max_by_key(|set| (set.stopped_at, set.label.clone()))
    }

    /// The set labelled `label` in repository `repo`.
    pub fn find(&self, label: &str, repo: u32) -> Option<&BackupSetInfo> {
        self.backups
            .iter()
            .find(|set| set.label == label && set.repo == repo)
    }
}

/// One repository's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoInfo {
    /// The repository index.
    pub key: u32,
    /// The cipher (`none`, `aes-256-cbc`).
    pub cipher: String,
    /// Its status code and message.
    pub code: i64,
    pub message: String,
}

/// Archived WAL of one database in one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// The repository index.
    pub repo: u32,
    /// pgBackRest's archive id (`17-1`).
    pub id: String,
    /// Oldest and newest segment archived.
    pub min: Option<String>,
    pub max: Option<String>,
}

/// The backup sets of stanza [`STANZA`], oldest first — or an error when the stanza is not
/// usable (anything but ok and "no valid backups"), so that an unreachable repository is
/// never mistaken for an empty one.
pub fn parse_info(json: &str) -> Result<Vec<BackupSetInfo>, InfoError> {
    let stanza = parse_stanza_info(json)?;
    if !stanza.is_usable() {
        return Err(InfoError::StanzaError {
            stanza: stanza.name,
            code: stanza.code,
            message: stanza.message,
        });
    }
    Ok(stanza.backups)
}

/// Everything `pgbackrest info --output=json` says about stanza [`STANZA`], whatever its
/// status.
pub fn parse_stanza_info(json: &str) -> Result<StanzaInfo, InfoError> {
    let stanzas: Vec<RawStanza> = serde_json::from_str(json)?;
    let raw = stanzas
        .into_iter()
        .find(|stanza| stanza.name == STANZA)
        .ok_or_else(|| InfoError::StanzaMissing {
            stanza: STANZA.to_owned(),
        })?;
    let mut backups = raw
        .backup
        .into_iter()
        .map(backup_set)
        .collect::<Result<Vec<_>, _>>()?;
    backups.sort_by(|a, b| (a.started_at, &a.label).cmp(&(b.started_at, &b.label)));
    Ok(StanzaInfo {
        name: raw.name,
        code: raw.status.code,
        message: raw.status.message,
        backup_running: raw
            .status
            .lock
            .and_then(|lock| lock.backup)
            .is_some_and(|backup| backup.held),
        repos: raw
            .repo
            .into_iter()
            .map(|repo| RepoInfo {
                key: repo.key,
                cipher: repo.cipher,
                code: repo.status.code,
                message: repo.status.message,
            })
            .collect(),
        backups,
        archives: raw
            .archive
            .into_iter()
            .map(|archive| ArchiveInfo {
                repo: archive.database.repo_key,
                id: archive.id,
                min: archive.min,
                max: archive.max,
            })
            .collect(),
    })
}

fn backup_set(raw: RawBackup) -> Result<BackupSetInfo, InfoError> {
    let kind = BackupType::from_pgbackrest_type(&raw.kind).ok_or_else(|| {
        InfoError::UnknownBackupType {
            label: raw.label.clone(),
            kind: raw.kind.clone(),
        }
    })?;
    let timestamp = |seconds: i64| Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH);
    Ok(BackupSetInfo {
        label: raw.label,
        kind,
        repo: raw.database.repo_key,
        started_at: timestamp(raw.timestamp.start),
        stopped_at: timestamp(raw.timestamp.stop),
        lsn: raw.lsn.and_then(|lsn| {
            Some(LsnRange {
                start: lsn.start?,
                stop: lsn.stop?,
            })
        }),
        wal: raw.archive.and_then(|wal| {
            Some(WalRange {
                start: wal.start?,
                stop: wal.stop?,
            })
        }),
        size: raw.info.size,
        repository_size: raw.info.repository.size,
        prior: raw.prior,
        error: raw.error.unwrap_or(false),
    })
}

#[derive(Deserialize)]
struct RawStanza {
    name: String,
    status: RawStatus,
    #[serde(default)]
    backup: Vec<RawBackup>,
    #[serde(default)]
    repo: Vec<RawRepo>,
    #[serde(default)]
    archive: Vec<RawArchive>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    lock: Option<RawLock>,
}

#[derive(Deserialize)]
struct RawLock {
    #[serde(default)]
    backup: Option<RawHeld>,
}

#[derive(Deserialize)]
struct RawHeld {
    #[serde(default)]
    held: bool,
}

#[derive(Deserialize)]
struct RawRepo {
    key: u32,
    #[serde(default)]
    cipher: String,
    status: RawStatus,
}

#[derive(Deserialize)]
struct RawArchive {
    id: String,
    database: RawDatabase,
    #[serde(default)]
    min: Option<String>,
    #[serde(default)]
    max: Option<String>,
}

#[derive(Deserialize)]
struct RawDatabase {
    #[serde(rename = "repo-key", default = "first_repo")]
    repo_key: u32,
}

fn first_repo() -> u32 {
    1
}

#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    database: RawDatabase,
    timestamp: RawRange<i64>,
    #[serde(default)]
    lsn: Option<RawRange<Option<String>>>,
    #[serde(default)]
    archive: Option<RawRange<Option<String>>>,
    info: RawSizes,
    #[serde(default)]
    prior: Option<String>,
    #[serde(default)]
    error: Option<bool>,
}

#[derive(Deserialize)]
struct RawRange<T> {
    start: T,
    stop: T,
}

#[derive(Deserialize)]
struct RawSizes {
    size: i64,
    repository: RawRepositorySize,
}

#[derive(Deserialize)]
struct RawRepositorySize {
    size: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_SETS: &str = include_str!("../tests/fixtures/info-two-sets.json");
    const NO_BACKUPS: &str = include_str!("../tests/fixtures/info-no-backups.json");
    const IN_ERROR: &str = include_str!("../tests/fixtures/info-error.json");

    #[test]
    fn backup_sets_are_read_with_sizes_wal_and_lsn() {
        let sets = parse_info(TWO_SETS).unwrap();
        assert_eq!(sets.len(), 2);
        let full = &sets[0];
        assert_eq!(full.label, "20261122-101500F");
        assert_eq!(full.kind, BackupType::Full);
        assert_eq!(full.repo, 1);
        assert_eq!(
            full.started_at,
            Timestamp::from_second(1_795_342_500).unwrap()
        );
        assert_eq!(
            full.stopped_at,
            Timestamp::from_second(1_795_342_510).unwrap()
        );
        assert_eq!(
            full.lsn,
            Some(LsnRange {
                start: "0/2000028".to_owned(),
                stop: "0/2000100".to_owned()
            })
        );
        assert_eq!(full.wal.as_ref().unwrap().start, "000000010000000000000002");
        assert_eq!(full.timeline(), Some(1));
        assert_eq!(
            full.backup_size(),
            BackupSize {
                original: 23_000_000,
                repository: 2_900_000
            }
        );
        assert!(!full.error);
        let diff = &sets[1];
        assert_eq!(diff.kind, BackupType::Differential);
        assert_eq!(diff.prior.as_deref(), Some("20261122-101500F"));
    }

    #[test]
    fn stanza_status_and_repositories_are_reported() {
        let stanza = parse_stanza_info(TWO_SETS).unwrap();
        assert!(stanza.is_usable());
        assert_eq!(stanza.repos[0].cipher, "aes-256-cbc");
        assert_eq!(
            stanza.archives[0].max.as_deref(),
            Some("000000010000000000000005")
        );
        assert_eq!(
            stanza.latest(1).map(|set| set.label.as_str()),
            Some("20261122-101500F_20261122-111500D")
        );
        assert!(stanza.find("20261122-101500F", 1).is_some());
        assert!(stanza.find("20261122-101500F", 2).is_none());
    }

    #[test]
    fn a_new_stanza_without_backups_is_usable_and_empty() {
        assert_eq!(parse_info(NO_BACKUPS).unwrap(), vec![]);
    }

    #[test]
    fn a_stanza_in_error_is_an_error_though_pgbackrest_exits_zero() {
        let error = parse_info(IN_ERROR).unwrap_err();
        assert_eq!(error.reason(), "StanzaError");
        assert!(error.to_string().contains("missing stanza path"), "{error}");
        let stanza = parse_stanza_info(IN_ERROR).unwrap();
        assert!(!stanza.is_usable() && stanza.backups.is_empty());
    }

    #[test]
    fn output_that_is_not_info_json_is_refused() {
        assert_eq!(
            parse_info("ERROR: [055]: oops").unwrap_err().reason(),
            "InfoUnreadable"
        );
        assert_eq!(parse_info("[]").unwrap_err().reason(), "StanzaMissing");
    }
}
