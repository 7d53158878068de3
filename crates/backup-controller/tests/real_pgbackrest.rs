//! The backup container's script with real pgBackRest, in the pod layout made local: a real
//! PostgreSQL archiving through the instance's rendered configuration, the instance's and the
//! repository host's `pgbackrest server` over mutual TLS, and the backup Job's rendered
//! configuration with `pg1-host` pointing at the instance's TLS server. The script's
//! termination message must read back into a Backup status that matches `pgbackrest info`;
//! a failing pgBackRest must leave its error and exit code.
//!
//! The local layout is tusk-pgbackrest's own test rig (crates/pgbackrest/tests/support),
//! included rather than copied so both crates test against the same stand-in for the pods.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../pgbackrest/tests/support/mod.rs"]
#[allow(unreachable_pub)]
mod support;

use std::path::Path;
use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tusk_api::Cluster;
use tusk_api::backup::{BackupPhase, BackupType};
use tusk_backup_controller::job::report_script_in;
use tusk_backup_controller::status::{Verdict, next_status, parse_report};
use tusk_pgbackrest::{backup_command, info_command, parse_info};
use tusk_testkit::command_as;

use support::{Rig, SecretValues, resolve_env};

const PASSPHRASE: &str = "backup-passphrase-for-tests-7c1d";

/// Runs the container's script as the Job would: `sh -c <script> -- <backup argv>`, with the
/// Job's configuration and secret environment, as the unprivileged user. Returns the exit code
/// and the termination message.
fn run_script(rig: &Rig, secrets: &SecretValues, argv: &[String], name: &str) -> (i32, String) {
    let scratch = rig.dir.path().join(format!("script-{name}"));
    std::fs::create_dir_all(&scratch).unwrap();
    if let Some(run_as) = &rig.run_as {
        run_as.chown(&scratch).unwrap();
    }
    let message = scratch.join("termination-log");
    let script = report_script_in(
        1,
        &scratch.display().to_string(),
        &message.display().to_string(),
    );
    let bin_dir = rig.pgbackrest.parent().unwrap_or(Path::new("/usr/bin"));
    let mut command = command_as(Path::new("/bin/sh"), rig.run_as.as_ref());
    command
        .args(["-c", &script, "--"])
        .args(argv)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("PGBACKREST_CONFIG", &rig.job_conf)
        .envs(resolve_env(&rig.job, secrets).unwrap());
    let output = command.output().unwrap();
    let code = output.status.code().unwrap_or(-1);
    let text = std::fs::read_to_string(&message).unwrap_or_default();
    (code, text)
}

/// The Cluster as the controller sees it: with a current primary.
fn with_primary(cluster: &Cluster) -> Cluster {
    let mut cluster = cluster.clone();
    cluster
        .status
        .get_or_insert_with(Default::default)
        .current_primary = Some("db-1".into());
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_script_reports_a_real_backup_taken_through_the_tls_server() {
    let Some(pg) = tusk_testkit::require(tusk_testkit::postgres(15)) else {
        return;
    };
    let Some(pgbackrest) = tusk_testkit::require(tusk_testkit::pgbackrest()) else {
        return;
    };
    let started = Instant::now();
    let cluster: Cluster = serde_yaml_ng::from_str(
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
    encryption:
      passphraseSecret: {name: backup-passphrase, key: passphrase}
",
    )
    .unwrap();
    let secrets = SecretValues::from([(
        ("backup-passphrase".to_owned(), "passphrase".to_owned()),
        PASSPHRASE.to_owned(),
    )]);
    let rig = Rig::start(&pg, &pgbackrest, cluster, &secrets)
        .await
        .unwrap();
    let source = rig.pg.connect().await.unwrap();
    source
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, payload text);
             INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();

    // A full backup, then an incremental on top of it, each through the script.
    let mut labels = Vec::new();
    for kind in [BackupType::Full, BackupType::Incremental] {
        let (code, message) = run_script(&rig, &secrets, &backup_command(kind, 1), kind.as_str());
        assert_eq!(code, 0, "{message}");
        assert!(
            message.len() < 4096,
            "fits a termination message: {} bytes",
            message.len()
        );
        let report = parse_report(&message, 1);
        assert_eq!(report.note, None, "{message}");
        let set = report.set.clone().unwrap();
        assert_eq!(set.kind, kind);

        // The status the controller writes from it.
        let verdict = Verdict::Completed {
            job: "b-backup".into(),
            started: None,
            finished: set.stopped_at,
            report: Box::new(report),
        };
        let status = next_status(None, &verdict, "repo1", Some(1), set.stopped_at);
        assert_eq!(status.phase, Some(BackupPhase::Completed));
        assert_eq!(status.backup_label.as_deref(), Some(set.label.as_str()));
        assert_eq!(status.type_, Some(kind));
        let size = status.size.unwrap();
        assert!(size.original > 0 && size.repository > 0, "{size:?}");
        assert!(status.wal.is_some() && status.lsn.is_some());
        assert_eq!(status.timeline, Some(1));
        assert_eq!(status.completed_at, Some(Time(set.stopped_at)));
        labels.push(set.label);
    }

    // The labels match what pgBackRest itself lists, and the incremental builds on the full.
    let info = rig.job(&info_command(Some(1))).await.unwrap();
    let sets = parse_info(&info).unwrap();
    let listed: Vec<&str> = sets.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        listed,
        labels.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(sets[1].prior.as_deref(), Some(labels[0].as_str()));

    // A failing pgBackRest (a repository that is not configured) leaves its error and code.
    let (code, message) = run_script(
        &rig,
        &secrets,
        &backup_command(BackupType::Full, 3),
        "failing",
    );
    assert_ne!(code, 0);
    assert!(message.contains("ERROR"), "{message}");
    assert!(!message.contains(PASSPHRASE), "no secret in the report");
    // deletionPolicy Expire: the expire Job's command removes the first full set and the
    // incremental that depends on it, and leaves a newer full backup.
    let (code, message) = run_script(
        &rig,
        &secrets,
        &backup_command(BackupType::Full, 1),
        "second-full",
    );
    assert_eq!(code, 0, "{message}");
    let newest = parse_report(&message, 1).label.unwrap();
    let expire = tusk_backup_controller::job::desired(
        &serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: Backup
metadata: {name: first, namespace: prod, uid: u}
spec: {cluster: {name: db}, deletionPolicy: Expire}
",
        )
        .unwrap(),
        &with_primary(&rig.cluster),
        &tusk_backup_controller::job::Operation::Expire(labels[0].clone()),
        "img",
    )
    .unwrap();
    let argv = expire.job.spec.unwrap().template.spec.unwrap().containers[0]
        .command
        .clone()
        .unwrap();
    rig.job(&argv).await.unwrap();
    let info = rig.job(&info_command(Some(1))).await.unwrap();
    let left: Vec<String> = parse_info(&info)
        .unwrap()
        .into_iter()
        .map(|s| s.label)
        .collect();
    assert_eq!(left, [newest], "{info}");
    eprintln!("real backup script scenario took {:?}", started.elapsed());
}
