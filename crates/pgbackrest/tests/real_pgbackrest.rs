//! pgBackRest for real, with the configuration this crate renders (issue 7, proof item 5):
//! stanza create, full + differential + incremental backups to a volume (posix) repository
//! served by the repository host's TLS server and to s3rver over TLS (configured next to a
//! volume repository, so WAL goes to both), each restored into a
//! fresh data directory and compared row by row (a checksum of every row), and point-in-time
//! recovery to a moment between two commits. Backups run as the backup Job does: repositories
//! local, PostgreSQL reached through the instance's `pgbackrest server` over mutual TLS.
//!
//! Needs PostgreSQL 15, pgBackRest and s3rver (`cargo xtask install`); skips without them,
//! fails under `TUSK_REQUIRE_REAL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Rig, SecretValues};
use tusk_api::Cluster;
use tusk_api::backup::BackupType;
use tusk_pgbackrest::{BackupSetInfo, backup_command, info_command, parse_info};

/// pgBackRest 2.45 (Debian bookworm, what `cargo xtask install` puts here) knows PostgreSQL up
/// to 15; the instance image takes a newer pgBackRest from apt.postgresql.org.
const PG_MAJOR: u32 = 15;

const PASSPHRASE: &str = "correct-horse-battery-staple-0123456789";

fn cluster(yaml: &str) -> Cluster {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// Writes `rows` more rows, each a different size, so every backup holds different data.
async fn write_rows(client: &tokio_postgres::Client, from: i32, rows: i32) {
    client
        .execute(
            "INSERT INTO items (id, payload) SELECT g, repeat(md5(g::text), 1 + g % 7) FROM generate_series($1::int, $2::int) g",
            &[&from, &(from + rows - 1)],
        )
        .await
        .unwrap();
}

/// Full, differential and incremental backups to `repo`, each restored to the state it
/// captured and compared with the source's checksum at that moment.
async fn backups_restore_row_for_row(rig: &mut Rig, repo: u32) -> Vec<BackupSetInfo> {
    let source = rig.pg.connect().await.unwrap();
    source
        .batch_execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, payload text)")
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut next = 1;
    for kind in [
        BackupType::Full,
        BackupType::Differential,
        BackupType::Incremental,
    ] {
        write_rows(&source, next, 2_000).await;
        source
            .execute(
                "UPDATE items SET payload = upper(payload) WHERE id % 97 = $1",
                &[&(next % 97)],
            )
            .await
            .unwrap();
        next += 2_000;
        let checksum = Rig::checksum(&source).await.unwrap();
        rig.job(&backup_command(kind, repo)).await.unwrap();
        expected.push((kind, checksum));
    }

    let info = rig.job(&info_command(Some(repo))).await.unwrap();
    let sets = parse_info(&info).unwrap();
    assert_eq!(
        sets.iter().map(|set| set.kind).collect::<Vec<_>>(),
        [
            BackupType::Full,
            BackupType::Differential,
            BackupType::Incremental
        ],
        "{info}"
    );
    for set in &sets {
        assert_eq!(set.repo, repo);
        assert!(set.size > 0 && set.repository_size > 0, "{set:?}");
        assert!(
            set.lsn.is_some() && set.wal.is_some() && set.timeline() == Some(1),
            "{set:?}"
        );
        assert!(!set.error, "{set:?}");
    }
    assert_eq!(sets[1].prior.as_deref(), Some(sets[0].label.as_str()));
    assert_eq!(sets[2].prior.as_deref(), Some(sets[1].label.as_str()));

    for (set, (kind, checksum)) in sets.iter().zip(&expected) {
        let restored = rig
            .restore(
                repo,
                &[
                    format!("--set={}", set.label),
                    "--type=immediate".to_owned(),
                ],
            )
            .await
            .unwrap();
        let restored_checksum = Rig::checksum(&restored.client).await.unwrap();
        assert_eq!(
            &restored_checksum, checksum,
            "{kind:?} backup {} restored other rows",
            set.label
        );
    }
    sets
}

/// Commits "first", notes the time, commits "second"; a recovery to that time must hold
/// exactly "first".
async fn point_in_time_recovery_stops_between_two_commits(rig: &mut Rig, repo: u32) {
    let source = rig.pg.connect().await.unwrap();
    source
        .batch_execute("CREATE TABLE events (name text); INSERT INTO events VALUES ('first')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let target: String = source
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    source
        .batch_execute("INSERT INTO events VALUES ('second')")
        .await
        .unwrap();
    // Switches WAL and waits until the segment with both commits is archived.
    rig.job(&tusk_pgbackrest::check_command()).await.unwrap();

    let restored = rig
        .restore(
            repo,
            &["--type=time".to_owned(), format!("--target={target}")],
        )
        .await
        .unwrap();
    let rows: Vec<String> = restored
        .client
        .query("SELECT name FROM events ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, ["first"], "recovery to {target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_repository_through_the_repo_host_backs_up_restores_and_recovers_to_a_time() {
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(PG_MAJOR)) else {
        return;
    };
    let Some(pgbackrest) = tusk_testkit::require(tusk_testkit::pgbackrest()) else {
        return;
    };
    let started = Instant::now();
    let cluster = cluster(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: prod}
spec:
  postgresVersion: 15
  storage: {size: 1Gi}
  backup:
    repositories:
    - name: repo1
      volume: {size: 1Gi}
      retention: {full: 2}
    encryption:
      passphraseSecret: {name: backup-passphrase, key: passphrase}
",
    );
    let secrets = SecretValues::from([(
        ("backup-passphrase".to_owned(), "passphrase".to_owned()),
        PASSPHRASE.to_owned(),
    )]);
    let mut rig = Rig::start(&pg, &pgbackrest, cluster, &secrets)
        .await
        .unwrap();
    assert!(
        rig.repo_host.is_some(),
        "a volume repository needs the repository host"
    );
    assert!(
        rig.instance.value("repo1-host").is_some(),
        "instances reach the volume through the repository host"
    );

    backups_restore_row_for_row(&mut rig, 1).await;
    point_in_time_recovery_stops_between_two_commits(&mut rig, 1).await;

    let info = rig.job(&info_command(None)).await.unwrap();
    let stanza = tusk_pgbackrest::parse_stanza_info(&info).unwrap();
    assert_eq!(stanza.repos[0].cipher, "aes-256-cbc", "{info}");
    // The passphrase is in no configuration file.
    for conf in ["instance.conf", "job.conf", "repo-host.conf"] {
        let text = std::fs::read_to_string(rig.dir.path().join("conf").join(conf)).unwrap();
        assert!(!text.contains(PASSPHRASE), "{conf} holds the passphrase");
    }
    eprintln!("volume scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_repository_over_tls_next_to_a_volume_backs_up_and_restores_row_for_row() {
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(PG_MAJOR)) else {
        return;
    };
    let Some(pgbackrest) = tusk_testkit::require(tusk_testkit::pgbackrest()) else {
        return;
    };
    let Some(s3rver) = tusk_testkit::require(tusk_testkit::s3rver()) else {
        return;
    };
    let started = Instant::now();
    let s3 = tusk_testkit::S3Server::start(&s3rver).await.unwrap();
    let cluster = cluster(&format!(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: prod}}
spec:
  postgresVersion: 15
  storage: {{size: 1Gi}}
  backup:
    compression: {{type: lz4}}
    repositories:
    - name: repo1
      volume: {{size: 1Gi}}
    - name: repo2
      s3:
        bucket: {bucket}
        endpoint: {host}:{port}
        region: {region}
        uriStyle: Path
        credentialsSecret: {{name: s3-credentials}}
        ca: {{name: s3-ca, key: ca.crt}}
",
        bucket = s3.bucket(),
        host = s3.host(),
        port = s3.port(),
        region = s3.region(),
    ));
    let secrets = SecretValues::from([
        (
            ("s3-credentials".to_owned(), "AWS_ACCESS_KEY_ID".to_owned()),
            s3.access_key().to_owned(),
        ),
        (
            (
                "s3-credentials".to_owned(),
                "AWS_SECRET_ACCESS_KEY".to_owned(),
            ),
            s3.secret_key().to_owned(),
        ),
        (
            ("s3-ca".to_owned(), "ca.crt".to_owned()),
            std::fs::read_to_string(s3.ca_file()).unwrap(),
        ),
    ]);
    // Next to a volume repository: archive-push writes every segment to both, one through the
    // repository host, one directly (stanza-create and check in `Rig::start` cover both).
    let mut rig = Rig::start(&pg, &pgbackrest, cluster, &secrets)
        .await
        .unwrap();
    assert!(rig.instance.value("repo1-host").is_some());
    assert!(
        rig.instance.value("repo2-host").is_none(),
        "object stores are reached directly"
    );

    let sets = backups_restore_row_for_row(&mut rig, 2).await;
    assert!(sets.iter().all(|set| set.repo == 2));
    // Objects landed in the bucket, under the Cluster's default path.
    let stanza_dir = s3.data_dir().join(s3.bucket());
    assert!(stanza_dir.exists(), "nothing in {}", stanza_dir.display());
    eprintln!("s3 scenario took {:?}", started.elapsed());
}
