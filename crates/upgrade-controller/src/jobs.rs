//! The Jobs a PGUpgrade runs, as pure builders: the check and upgrade Jobs on the primary's
//! data volume, and the post-upgrade Job against the new primary.
//!
//! The shell scripts are files of this crate (`upgrade.sh`, `post_upgrade.sh`) embedded
//! verbatim into the Job's command; every path and setting is an environment variable, so a
//! test (and `cargo xtask bench upgrade`) runs the very command a Job runs with local paths.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, SecretKeySelector, SecretVolumeSource, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use tusk_api::cluster::ImagePullPolicy;
use tusk_api::names::{self, POSTGRES_PORT, keys};
use tusk_api::user::SUPERUSER_ROLE;
use tusk_api::{Cluster, PGUpgrade, labels};
use tusk_runtime::pod::{restricted_container_security, runtime_default_seccomp};

/// The script of the check and upgrade Jobs.
pub const UPGRADE_SCRIPT: &str = include_str!("upgrade.sh");
/// The script of the post-upgrade Job.
pub const POST_UPGRADE_SCRIPT: &str = include_str!("post_upgrade.sh");

/// Where the data volume is mounted (the Cluster's instances mount it there too).
pub const DATA_MOUNT: &str = "/pgdata";
/// Where the WAL volume is mounted, when the Cluster has one.
pub const WAL_MOUNT: &str = "/pgwal";
/// The scratch directory (an emptyDir): pg_upgrade's sockets, logs and scripts.
pub const WORK_DIR: &str = "/tmp";
/// Kubernetes' default termination message file.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Where the post-upgrade Job finds the CA that signed the server certificate.
pub const CA_MOUNT: &str = "/etc/tusk/ca";
/// The user and group of the instance image (images/postgres/Dockerfile).
pub const POSTGRES_UID: i64 = 26;
/// The `app.kubernetes.io/component` of everything a PGUpgrade creates.
pub const COMPONENT: &str = "upgrade";
/// The label Kubernetes (1.27+) puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The line the upgrade Job reports on success: `system-identifier=<id>`.
pub const SYSTEM_IDENTIFIER_PREFIX: &str = "system-identifier=";

/// The Jobs of a PGUpgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// initdb and `pg_upgrade --check`.
    Check,
    /// pg_upgrade with the transfer method.
    Upgrade,
    /// Statistics and extension updates on the new primary.
    PostUpgrade,
    /// After an upgrade Job that failed in link mode: the old data directory put back
    /// (`global/pg_control.old` renamed, the new directory removed) before the old major
    /// starts again. A no-op when the upgrade Job's own clean-up already did it.
    Restore,
}

impl JobKind {
    fn suffix(self) -> &'static str {
        match self {
            JobKind::Check => "check",
            JobKind::Upgrade => "upgrade",
            JobKind::PostUpgrade => "post",
            JobKind::Restore => "restore",
        }
    }

    /// What the Job does, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            JobKind::Check => "initdb and pg_upgrade --check",
            JobKind::Upgrade => "pg_upgrade",
            JobKind::PostUpgrade => "vacuumdb --analyze-in-stages and ALTER EXTENSION UPDATE",
            JobKind::Restore => "restoring the old data directory",
        }
    }
}

/// The name of a PGUpgrade's Job: `<upgrade>-<check|upgrade|post>`, shortened with a hash
/// when that passes 63 characters (a Job's name is a label value on its pods).
pub fn job_name(upgrade: &str, kind: JobKind) -> String {
    bounded_name(upgrade, kind.suffix(), 63)
}

/// The Backup taken before the upgrade when none was found: `<upgrade>-before`.
pub fn backup_before_name(upgrade: &str) -> String {
    bounded_name(upgrade, "before", 253)
}

/// The Backup taken after the upgrade: `<upgrade>-after`.
pub fn backup_after_name(upgrade: &str) -> String {
    bounded_name(upgrade, "after", 253)
}

fn bounded_name(base: &str, suffix: &str, max: usize) -> String {
    let name = format!("{base}-{suffix}");
    if name.len() <= max {
        return name;
    }
    let hash = tusk_runtime::apply::content_hash(&serde_json::Value::String(base.to_owned()));
    let keep = max - suffix.len() - 10;
    let head: String = base.chars().take(keep).collect();
    format!("{}-{}-{suffix}", head.trim_end_matches('-'), &hash[..8])
}

/// The data volume claim of an instance: the StatefulSet's claim template `data` for pod
/// `<instance>-0`.
pub fn data_claim(instance: &str) -> String {
    names::statefulset_claim("data", instance)
}

/// The WAL volume claim of an instance.
pub fn wal_claim(instance: &str) -> String {
    names::statefulset_claim("wal", instance)
}

/// The data directory of a major, as the Cluster's Patroni configuration sets `PGDATA`.
pub fn data_dir(major: i32) -> String {
    format!("{DATA_MOUNT}/pg{major}")
}

/// The WAL directory of a major on the WAL volume.
pub fn wal_dir(major: i32) -> String {
    format!("{WAL_MOUNT}/pg{major}_wal")
}

/// The binaries of a major in the instance image (Debian layout).
pub fn bin_dir(major: i32) -> String {
    format!("/usr/lib/postgresql/{major}/bin")
}

/// The image the upgrade runs in and the Cluster runs afterwards: `spec.image`, else the
/// operator's template for the new major.
pub fn upgrade_image(upgrade: &PGUpgrade, postgres_image_template: &str) -> String {
    upgrade.spec.image.clone().unwrap_or_else(|| {
        postgres_image_template.replace("{major}", &upgrade.spec.to_postgres_version.to_string())
    })
}

/// Everything the check and upgrade script reads, in order. A test substitutes the paths.
pub fn upgrade_env(
    upgrade: &PGUpgrade,
    cluster: &Cluster,
    step: &str,
) -> Vec<(&'static str, String)> {
    let spec = &upgrade.spec;
    let initdb = cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.initdb.clone())
        .unwrap_or_default();
    let new_wal = if cluster.spec.wal_storage.is_some() {
        wal_dir(spec.to_postgres_version)
    } else {
        String::new()
    };
    vec![
        ("TUSK_STEP", step.to_owned()),
        ("TUSK_OLD_MAJOR", spec.from_postgres_version.to_string()),
        ("TUSK_NEW_MAJOR", spec.to_postgres_version.to_string()),
        ("TUSK_OLD_BINDIR", bin_dir(spec.from_postgres_version)),
        ("TUSK_NEW_BINDIR", bin_dir(spec.to_postgres_version)),
        ("TUSK_OLD_DATADIR", data_dir(spec.from_postgres_version)),
        ("TUSK_NEW_DATADIR", data_dir(spec.to_postgres_version)),
        ("TUSK_NEW_WALDIR", new_wal),
        (
            "TUSK_TRANSFER",
            spec.transfer_method.pg_upgrade_flag().to_owned(),
        ),
        ("TUSK_INITDB_ENCODING", initdb.encoding),
        ("TUSK_INITDB_LOCALE", initdb.locale),
        ("TUSK_WORK_DIR", WORK_DIR.to_owned()),
        ("TUSK_TERMINATION_LOG", TERMINATION_LOG.to_owned()),
        ("PGUSER", SUPERUSER_ROLE.to_owned()),
    ]
}

/// The environment of the post-upgrade script, besides the password.
pub fn post_upgrade_env(upgrade: &PGUpgrade, cluster: &Cluster) -> Vec<(&'static str, String)> {
    let cluster_name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    vec![
        (
            "TUSK_NEW_MAJOR",
            upgrade.spec.to_postgres_version.to_string(),
        ),
        ("PGHOST", names::read_write_host(&cluster_name, &namespace)),
        ("PGPORT", POSTGRES_PORT.to_string()),
        ("PGSSLMODE", "verify-full".to_owned()),
        ("PGSSLROOTCERT", format!("{CA_MOUNT}/{}", keys::CA_CERT)),
        ("PGUSER", SUPERUSER_ROLE.to_owned()),
        ("PGCONNECT_TIMEOUT", "10".to_owned()),
    ]
}

/// The command every Job's container runs: `sh -c <script>`.
pub fn shell_command(script: &str) -> Vec<String> {
    vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()]
}

/// The Job of `kind` for `upgrade` of `cluster`; `instance` is the primary whose volume the
/// check and upgrade Jobs mount.
pub fn desired_job(
    upgrade: &PGUpgrade,
    cluster: &Cluster,
    instance: &str,
    kind: JobKind,
    postgres_image_template: &str,
) -> Job {
    let upgrade_name = upgrade.name_any();
    let cluster_name = cluster.name_any();
    let name = job_name(&upgrade_name, kind);
    let mut labels = labels::cluster_child_labels(&cluster_name, COMPONENT);
    labels.insert(labels::UPGRADE.to_owned(), upgrade_name.clone());
    labels.insert(labels::INSTANCE_NAME.to_owned(), instance.to_owned());

    let password = EnvVar {
        name: "PGPASSWORD".to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: names::superuser_secret(&cluster_name),
                key: keys::PASSWORD.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let (script, mut env, mut mounts, mut volumes) = match kind {
        JobKind::Check | JobKind::Upgrade | JobKind::Restore => {
            let step = match kind {
                JobKind::Check => "check",
                JobKind::Restore => "restore",
                _ => "upgrade",
            };
            let mut mounts = vec![mount("data", DATA_MOUNT, false)];
            let mut volumes = vec![claim_volume("data", data_claim(instance))];
            if cluster.spec.wal_storage.is_some() {
                mounts.push(mount("wal", WAL_MOUNT, false));
                volumes.push(claim_volume("wal", wal_claim(instance)));
            }
            (
                UPGRADE_SCRIPT,
                upgrade_env(upgrade, cluster, step),
                mounts,
                volumes,
            )
        }
        JobKind::PostUpgrade => (
            POST_UPGRADE_SCRIPT,
            post_upgrade_env(upgrade, cluster),
            vec![mount("ca", CA_MOUNT, true)],
            vec![Volume {
                name: "ca".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names::client_ca_secret(cluster)),
                    items: None,
                    default_mode: Some(0o444),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            }],
        ),
    };
    let mut env: Vec<EnvVar> = env
        .drain(..)
        .map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            ..EnvVar::default()
        })
        .collect();
    env.push(password);
    mounts.push(mount("work", WORK_DIR, false));
    volumes.push(Volume {
        name: "work".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    });

    let spec = &cluster.spec;
    let container = Container {
        name: COMPONENT.to_owned(),
        image: Some(upgrade_image(upgrade, postgres_image_template)),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(shell_command(script)),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: spec.resources.clone(),
        security_context: Some(restricted_container_security()),
        termination_message_path: Some(TERMINATION_LOG.to_owned()),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: upgrade.namespace(),
            labels: Some(labels.clone()),
            owner_references: upgrade.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // A failed step is reported, never retried behind the controller's back: the
            // upgrade either rolls back or stops with the output.
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(POSTGRES_UID),
                        run_as_group: Some(POSTGRES_UID),
                        fs_group: Some(POSTGRES_UID),
                        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..PodSecurityContext::default()
                    }),
                    node_selector: (!spec.scheduling.node_selector.is_empty())
                        .then(|| spec.scheduling.node_selector.clone()),
                    tolerations: (!spec.scheduling.tolerations.is_empty())
                        .then(|| spec.scheduling.tolerations.clone()),
                    priority_class_name: spec.priority_class_name.clone(),
                    image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                        .then(|| spec.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

fn pull_policy(policy: ImagePullPolicy) -> String {
    match policy {
        ImagePullPolicy::Always => "Always",
        ImagePullPolicy::IfNotPresent => "IfNotPresent",
        ImagePullPolicy::Never => "Never",
    }
    .to_owned()
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn claim_volume(name: &str, claim: String) -> Volume {
    Volume {
        name: name.to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim,
            read_only: None,
        }),
        ..Volume::default()
    }
}

/// For `tusk-operator render`: the three Jobs of `upgrade`, against a Cluster with default
/// settings (the real Cluster's resources, WAL volume, scheduling and initdb settings change
/// them) whose primary is instance 1, in the operator's default image.
pub fn rendered(upgrade: &PGUpgrade) -> Vec<Job> {
    let defaults = serde_json::json!({
        "postgresVersion": upgrade.spec.from_postgres_version,
        "storage": {"size": "1Gi"},
    });
    let Ok(spec) = serde_json::from_value::<tusk_api::ClusterSpec>(defaults) else {
        return Vec::new();
    };
    let mut cluster = Cluster::new(&upgrade.spec.cluster.name, spec);
    cluster.metadata.namespace = upgrade.namespace();
    let instance = names::instance(&upgrade.spec.cluster.name, 1);
    [JobKind::Check, JobKind::Upgrade, JobKind::PostUpgrade]
        .into_iter()
        .map(|kind| {
            desired_job(
                upgrade,
                &cluster,
                &instance,
                kind,
                tusk_runtime::context::DEFAULT_POSTGRES_IMAGE,
            )
        })
        .collect()
}

/// The system identifier the upgrade Job reported (`system-identifier=<digits>`).
pub fn reported_system_identifier(message: &str) -> Option<String> {
    message.lines().find_map(|line| {
        let id = line.trim().strip_prefix(SYSTEM_IDENTIFIER_PREFIX)?;
        (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_owned())
    })
}

/// Longest Job output kept in a condition message.
pub const MAX_OUTPUT: usize = 1500;

/// A Job's output for a condition message: trimmed, at most [`MAX_OUTPUT`] characters, keeping
/// the end (where pg_upgrade says what failed).
pub fn trimmed_output(message: &str) -> String {
    let text = message.trim();
    let count = text.chars().count();
    if count <= MAX_OUTPUT {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(count - (MAX_OUTPUT - 1)).collect();
    format!("…{tail}")
}

/// The environment of `job`'s first container as name → value (for tests and the bench,
/// which run the Job's command locally).
pub fn container_env(job: &Job) -> BTreeMap<String, String> {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The command of `job`'s first container.
pub fn container_command(job: &Job) -> Vec<String> {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.command.clone())
        .unwrap_or_default()
}

/// The owner of a Job (or Backup): whether `meta` is owned by `upgrade`.
pub fn is_owned_by(meta: &ObjectMeta, upgrade: &PGUpgrade) -> bool {
    let uid = upgrade.meta().uid.as_deref();
    meta.owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| Some(r.uid.as_str()) == uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(yaml_extra: &str) -> PGUpgrade {
        let mut upgrade: PGUpgrade = serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: PGUpgrade
metadata: {{name: to-18, namespace: db, uid: up-uid}}
spec:
  cluster: {{name: db}}
  fromPostgresVersion: 17
  toPostgresVersion: 18
{yaml_extra}"
        ))
        .unwrap();
        upgrade.metadata.uid = Some("up-uid".into());
        upgrade
    }

    fn cluster(extra: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: db}}
spec:
  postgresVersion: 17
  storage: {{size: 1Gi}}
{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn check_job_mounts_the_primarys_volume_and_runs_restricted() {
        let job = desired_job(
            &upgrade(""),
            &cluster(""),
            "db-2",
            JobKind::Check,
            "img:{major}",
        );
        assert_eq!(job.metadata.name.as_deref(), Some("to-18-check"));
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.uid, "up-uid");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.as_ref().unwrap();
        let claim = pod.volumes.as_ref().unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap();
        assert_eq!(claim.claim_name, "data-db-2-0");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("img:18"));
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security
                .capabilities
                .as_ref()
                .unwrap()
                .drop
                .as_ref()
                .unwrap(),
            &["ALL".to_owned()]
        );
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let env = container_env(&job);
        assert_eq!(env["TUSK_STEP"], "check");
        assert_eq!(env["TUSK_OLD_DATADIR"], "/pgdata/pg17");
        assert_eq!(env["TUSK_NEW_DATADIR"], "/pgdata/pg18");
        assert_eq!(env["TUSK_NEW_BINDIR"], "/usr/lib/postgresql/18/bin");
        assert_eq!(env["TUSK_TRANSFER"], "--link");
        assert_eq!(env["TUSK_NEW_WALDIR"], "");
        let command = container_command(&job);
        assert_eq!(command[..2], ["/bin/sh", "-c"]);
        assert_eq!(command[2], UPGRADE_SCRIPT);
        // The password comes from the Secret, never inline.
        let password = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "PGPASSWORD");
        assert!(password.unwrap().value.is_none());
    }

    #[test]
    fn wal_volume_and_image_and_method_follow_the_specs() {
        let job = desired_job(
            &upgrade("  transferMethod: Copy\n  image: custom:1\n"),
            &cluster(
                "  walStorage: {size: 1Gi}\n  bootstrap: {initdb: {encoding: LATIN1, locale: C}}\n",
            ),
            "db-1",
            JobKind::Upgrade,
            "img:{major}",
        );
        let env = container_env(&job);
        assert_eq!(env["TUSK_STEP"], "upgrade");
        assert_eq!(env["TUSK_TRANSFER"], "--copy");
        assert_eq!(env["TUSK_NEW_WALDIR"], "/pgwal/pg18_wal");
        assert_eq!(env["TUSK_INITDB_ENCODING"], "LATIN1");
        assert_eq!(env["TUSK_INITDB_LOCALE"], "C");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let claims: Vec<_> = pod
            .volumes
            .unwrap()
            .into_iter()
            .filter_map(|v| v.persistent_volume_claim.map(|c| c.claim_name))
            .collect();
        assert_eq!(claims, ["data-db-1-0", "wal-db-1-0"]);
        assert_eq!(pod.containers[0].image.as_deref(), Some("custom:1"));
    }

    #[test]
    fn post_upgrade_job_reaches_the_primary_over_verified_tls() {
        let job = desired_job(
            &upgrade(""),
            &cluster(""),
            "db-1",
            JobKind::PostUpgrade,
            "img:{major}",
        );
        assert_eq!(job.metadata.name.as_deref(), Some("to-18-post"));
        let env = container_env(&job);
        assert_eq!(env["PGHOST"], "db-rw.db.svc");
        assert_eq!(env["PGSSLMODE"], "verify-full");
        assert_eq!(container_command(&job)[2], POST_UPGRADE_SCRIPT);
    }

    #[test]
    fn long_names_stay_valid() {
        let long = "u".repeat(63);
        let name = job_name(&long, JobKind::Upgrade);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("-upgrade"));
        assert_ne!(job_name(&long, JobKind::Check), name);
        assert_eq!(job_name("short", JobKind::Check), "short-check");
    }

    #[test]
    fn system_identifier_is_read_from_the_report() {
        assert_eq!(
            reported_system_identifier("system-identifier=7441234567890123456\n").as_deref(),
            Some("7441234567890123456")
        );
        assert_eq!(reported_system_identifier("pg_upgrade failed"), None);
        assert_eq!(reported_system_identifier("system-identifier=abc"), None);
    }

    #[test]
    fn output_keeps_its_end() {
        let long = format!("{}END", "x".repeat(5000));
        let trimmed = trimmed_output(&long);
        assert_eq!(trimmed.chars().count(), MAX_OUTPUT);
        assert!(trimmed.starts_with('…') && trimmed.ends_with("END"));
        assert_eq!(trimmed_output("  short \n"), "short");
    }
}
