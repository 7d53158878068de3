use super::*;
use crate::observe::backup::ArchiverStats;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tusk_api::cluster::reasons;

fn cluster(spec: &str) -> Cluster {
    serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: db, uid: u1}}\nspec:\n  postgresVersion: 17\n  storage: {{size: 1Gi}}\n{spec}"
        ))
        .unwrap()
}

fn volume() -> Cluster {
    cluster("  backup: {repositories: [{name: repo1, volume: {size: 5Gi}}]}\n")
}

fn assert_restricted(pod: &PodSpec) {
    let security = pod.security_context.clone().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
    assert_eq!(pod.automount_service_account_token, Some(false));
    for container in &pod.containers {
        let security = container.security_context.clone().unwrap();
        assert_eq!(
            security.allow_privilege_escalation,
            Some(false),
            "{}",
            container.name
        );
        assert_eq!(
            security.read_only_root_filesystem,
            Some(true),
            "{}",
            container.name
        );
        assert_eq!(security.run_as_non_root, Some(true), "{}", container.name);
        assert_eq!(
            security.capabilities.unwrap().drop,
            Some(vec!["ALL".to_owned()]),
            "{}",
            container.name
        );
    }
}

#[test]
fn repository_host_and_stanza_job_run_restricted() {
    let c = volume();
    let (sts, _) = desired_repo_host(&c, &Images::default(), None).unwrap();
    assert_restricted(&sts.spec.unwrap().template.spec.unwrap());
    let job = desired_stanza_job(&c, &Images::default(), "db-1").unwrap();
    let pod = job.spec.unwrap().template.spec.unwrap();
    assert_restricted(&pod);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
}

#[test]
fn repository_host_keeps_its_claim_template_as_created() {
    let c = volume();
    let (created, _) = desired_repo_host(&c, &Images::default(), None).unwrap();
    let mut grown = c.clone();
    grown.spec.backup.as_mut().unwrap().repositories[0]
        .volume
        .as_mut()
        .unwrap()
        .size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("9Gi".into());
    let (again, _) = desired_repo_host(&grown, &Images::default(), Some(&created)).unwrap();
    assert_eq!(
        again.spec.unwrap().volume_claim_templates,
        created.spec.unwrap().volume_claim_templates,
        "claim templates of a StatefulSet cannot change"
    );
    assert!(desired_repo_host(&cluster(""), &Images::default(), None).is_none());
}

#[test]
fn archiving_condition_table() {
    let c = volume();
    let status =
        |condition: Option<DesiredCondition>| condition.map(|c| (c.status.as_str(), c.reason));
    assert_eq!(
        archiving_condition(&cluster(""), &StanzaState::Succeeded, None, None),
        None
    );
    for stanza in [
        StanzaState::Waiting("x".into()),
        StanzaState::Running,
        StanzaState::Failed("boom".into()),
    ] {
        assert_eq!(
            status(archiving_condition(&c, &stanza, None, None)),
            Some(("False", STANZA_MISSING))
        );
    }
    let ok = ArchiverStats {
        archived_count: 3,
        last_archived_micros: Some(10),
        ..ArchiverStats::default()
    };
    let failing = ArchiverStats {
        failed_count: 1,
        last_failed_wal: Some("000000010000000000000004".into()),
        last_failed_micros: Some(20),
        ..ok.clone()
    };
    assert_eq!(
        status(archiving_condition(
            &c,
            &StanzaState::Succeeded,
            Some(&ok),
            None
        )),
        Some(("True", reasons::ARCHIVING))
    );
    let condition = archiving_condition(&c, &StanzaState::Succeeded, Some(&failing), None).unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason),
        ("False", reasons::ARCHIVE_FAILING)
    );
    assert!(condition.message.contains("000000010000000000000004"));
    // Unobserved: the last verdict stands.
    let previous = Condition {
        type_: types::CONTINUOUS_ARCHIVING.into(),
        status: "False".into(),
        reason: reasons::ARCHIVE_FAILING.into(),
        message: "m".into(),
        last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    };
    assert_eq!(
        status(archiving_condition(
            &c,
            &StanzaState::Succeeded,
            None,
            Some(&previous)
        )),
        Some(("False", reasons::ARCHIVE_FAILING))
    );
    assert_eq!(
        status(archiving_condition(&c, &StanzaState::Succeeded, None, None)),
        Some(("True", reasons::ARCHIVING))
    );
}

#[test]
fn archiver_failing_means_the_latest_attempt_failed() {
    let at = |archived: Option<i64>, failed: Option<i64>| ArchiverStats {
        last_archived_micros: archived,
        last_failed_micros: failed,
        ..ArchiverStats::default()
    };
    assert!(!at(None, None).failing());
    assert!(!at(Some(5), None).failing());
    assert!(at(None, Some(5)).failing());
    assert!(at(Some(5), Some(6)).failing());
    assert!(!at(Some(7), Some(6)).failing(), "recovered");
}

#[test]
fn a_changed_repository_hash_replaces_the_stanza_job() {
    let c = volume();
    let mut job = desired_stanza_job(&c, &Images::default(), "db-1").unwrap();
    let observed = ObservedBackup {
        stanza_job: Some(job.clone()),
        ..ObservedBackup::default()
    };
    let now = Time(jiff::Timestamp::now());
    let (state, action) = plan_stanza(&c, &Images::default(), &observed, Some("db-1"), &now);
    assert_eq!((state, action), (StanzaState::Running, StanzaAction::Keep));
    job.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(REPOSITORIES_HASH_ANNOTATION.into(), "old".into());
    let observed = ObservedBackup {
        stanza_job: Some(job),
        ..ObservedBackup::default()
    };
    let (_, action) = plan_stanza(&c, &Images::default(), &observed, Some("db-1"), &now);
    assert!(matches!(action, StanzaAction::Delete(_)));
}

/// Runs the stanza script with a stand-in `pgbackrest` that logs its arguments, fails
/// `stanza-create` when `CREATE_FAILS` is set and prints an info document recording
/// `STORED` as the stanza's database version.
fn run_stanza_script(cluster_major: i32, create_fails: bool, stored: &str) -> (bool, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let fake = dir.path().join("pgbackrest");
    std::fs::write(
            &fake,
            format!(
                r#"#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *stanza-create) [ -z "$CREATE_FAILS" ] ;;
  *info) printf '[{{"archive":[{{"id":"%s-1"}}],"db":[{{"id":1,"system-id":1,"version":"14"}},{{"id":2,"system-id":2,"version":"%s"}}],"name":"db"}}]' "$STORED" "$STORED" ;;
  *) true ;;
esac
"#,
                log = log.display()
            ),
        )
        .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut command = std::process::Command::new("/bin/sh");
    command
        .args(["-c", &stanza_script(cluster_major)])
        .env("PATH", path)
        .env("STORED", stored);
    if create_fails {
        command.env("CREATE_FAILS", "1");
    } else {
        command.env_remove("CREATE_FAILS");
    }
    let status = command.status().unwrap();
    (
        status.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn stanza_script_creates_then_checks() {
    let (ok, calls) = run_stanza_script(17, false, "17");
    assert!(ok);
    assert_eq!(calls, "--stanza=db stanza-create\n--stanza=db check\n");
}

#[test]
fn stanza_script_upgrades_only_a_stanza_of_an_older_major() {
    let (ok, calls) = run_stanza_script(17, true, "16");
    assert!(ok, "{calls}");
    assert!(calls.contains("stanza-upgrade"), "{calls}");
    assert!(calls.ends_with("--stanza=db check\n"), "{calls}");

    // Same major (another database on this repository path?): refuse, never upgrade.
    let (ok, calls) = run_stanza_script(17, true, "17");
    assert!(!ok);
    assert!(!calls.contains("stanza-upgrade"), "{calls}");
    assert!(!calls.contains("check"), "{calls}");

    // A newer stanza than the Cluster: refuse as well.
    let (ok, calls) = run_stanza_script(16, true, "17");
    assert!(!ok);
    assert!(!calls.contains("stanza-upgrade"), "{calls}");
}

#[test]
fn a_new_major_reruns_the_stanza_job() {
    let mut c = volume();
    let before = repositories_hash(&c).unwrap();
    c.spec.postgres_version += 1;
    assert_ne!(repositories_hash(&c).unwrap(), before);
}
