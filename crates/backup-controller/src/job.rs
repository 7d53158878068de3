//! Pure builders: a Backup and its Cluster → the ConfigMap and Job that run pgBackRest.
//!
//! ```text
//!  Job <backup>-backup (owned by the Backup, backoffLimit 0, no TTL)
//!   └─ pod (restricted: non-root, read-only root, no capabilities, seccomp RuntimeDefault)
//!       container pgbackrest: sh -c REPORT_SCRIPT -- pgbackrest --stanza=db --repo=N --type=T backup
//!         /etc/pgbackrest            projected: pgbackrest.conf (ConfigMap <job>, owned by the Backup)
//!                                              tls/{ca.crt,client.crt,client.key} (Cluster's pgBackRest Secret)
//!                                              secrets/<option>/<file> (GCS key, S3 CA)
//!         /pgbackrest                the repository host's PVC `repo-<cluster>-repo-host-0`
//!                                    (volume repositories only; required pod affinity to the
//!                                    repository host's pod: the volume is ReadWriteOnce)
//!         /tmp                       emptyDir (locks, logs)
//!         env PGBACKREST_*           secret options, from Secret keys
//!         → /dev/termination-log:    `label=<label>` + `pgbackrest info --output=json --set=<label>`
//!                                    on success, the end of pgBackRest's output on failure
//! ```
//!
//! pgBackRest reaches PostgreSQL through the primary's pgBackRest TLS server
//! (`pg1-host=<primary>-0.<cluster>-pods.<ns>.svc`, the DNS name of the primary's pod; mutual
//! TLS with the client certificate).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapProjection, Container, EmptyDirVolumeSource, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm, PodSecurityContext, PodSpec,
    PodTemplateSpec, ProjectedVolumeSource, SecretProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use tusk_api::backup::BackupType;
use tusk_api::cluster::ImagePullPolicy;
use tusk_api::names::{self, keys, pgbackrest_keys};
use tusk_api::{Backup, Cluster, labels};
use tusk_pgbackrest::{
    CONFIG_DIR, CONFIG_KEY, REPO_HOST_PATH, Settings, SettingsError, TLS_DIR, TMP_DIR,
    backup_command, backup_job_settings, expire_set_command, instance_address, require_repo_index,
};
use tusk_runtime::pod::{restricted_container_security, runtime_default_seccomp};

/// The label every object of one Backup carries: the Backup's name.
pub const BACKUP_LABEL: &str = "tusk.dev/backup";
/// `app.kubernetes.io/component` of backup Jobs and their ConfigMaps.
pub const COMPONENT: &str = "backup";
/// `app.kubernetes.io/component` of the repository host's pod (the Cluster controller's
/// `<cluster>-repo-host` StatefulSet), which a Job on a volume repository must share a node
/// with.
pub const REPO_HOST_COMPONENT: &str = "repo-host";
/// The container that runs pgBackRest.
pub const CONTAINER: &str = "pgbackrest";
/// The user and group of the instance image (images/postgres), which owns the repository
/// files the repository host writes.
pub const POSTGRES_UID: i64 = 26;
/// How long one backup may run before Kubernetes stops it (24 hours): long enough for a
/// multi-terabyte full backup, short enough that a hung Job does not hold the stanza's lock
/// for days.
pub const ACTIVE_DEADLINE_SECONDS: i64 = 24 * 3600;
/// How long an expire may run.
pub const EXPIRE_DEADLINE_SECONDS: i64 = 3600;
/// The largest termination message Kubernetes keeps (bytes); the script stays below it.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// What the backup container runs: pgBackRest with the arguments after `--`, its output
/// shown in the pod log, and a small report in the termination message for the controller:
///
/// - success: `label=<label>` and, on the next line, `pgbackrest info --output=json` of
///   that set alone (dependency lists cut so it fits in 4 KiB; dropped if it still does not);
/// - failure: the last 3,500 bytes of pgBackRest's output (secrets are redacted there by
///   pgBackRest itself).
///
/// Plain POSIX sh and sed: the instance image has no jq.
pub fn report_script(repo_index: u32) -> String {
    report_script_in(repo_index, TMP_DIR, "/dev/termination-log")
}

/// [`report_script`] with its scratch directory and message file elsewhere (tests run it
/// with a stand-in `pgbackrest`).
pub fn report_script_in(repo_index: u32, tmp_dir: &str, message_file: &str) -> String {
    format!(
        r#"set -u
log={tmp_dir}/pgbackrest-backup.log
"$@" >"$log" 2>&1
code=$?
cat "$log"
if [ "$code" -ne 0 ]; then
  tail -c 3500 "$log" >{message_file}
  exit "$code"
fi
label=$(sed -n 's/.*new backup label = \([0-9A-Za-z_-]*\).*/\1/p' "$log" | tail -n 1)
info=$(pgbackrest --stanza={stanza} --output=json --repo={repo_index} --set="$label" info 2>/dev/null | sed 's/"reference":\[[^]]*\]/"reference":[]/g') || info=
report=$(printf 'label=%s\n%s' "$label" "$info")
if [ "${{#report}}" -gt 4000 ]; then report="label=$label"; fi
printf '%s' "$report" >{message_file}
"#,
        stanza = tusk_pgbackrest::STANZA,
    )
}

/// The name of the Job (and ConfigMap) that expires a Backup's set: `<backup>-expire`.
pub fn expire_job_name(backup: &str) -> String {
    let name = format!("{backup}-expire");
    names::truncate_with_hash(&name, &name, 63)
}

/// The repository host's volume claim template (the Cluster controller's): its one pod's PVC
/// is `repo-<cluster>-repo-host-0`, mounted at `/pgbackrest`; repository N lives under
/// `/pgbackrest/repoN`.
pub const REPO_CLAIM_TEMPLATE: &str = "repo";

/// The PVC holding a Cluster's volume repositories: `repo-<cluster>-repo-host-0`.
pub fn repository_claim(cluster: &str) -> String {
    names::statefulset_claim(REPO_CLAIM_TEMPLATE, &names::repo_host(cluster))
}

/// Why a Job cannot be built for the Backup.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("the Cluster has no current primary")]
    NoPrimary,
    #[error("the {0} has no {1}")]
    Metadata(&'static str, &'static str),
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A backup of this type.
    Backup(BackupType),
    /// Expire this backup set.
    Expire(String),
}

/// The instance image the Job runs pgBackRest from: the Cluster's `spec.image`, else the
/// operator's template for its major.
pub fn image(cluster: &Cluster, template: &str) -> String {
    cluster
        .spec
        .image
        .clone()
        .unwrap_or_else(|| template.replace("{major}", &cluster.spec.postgres_version.to_string()))
}

/// The ConfigMap and Job that run `operation` for `backup`.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub job: Job,
}

/// Builds the ConfigMap and Job for `operation` on `backup` of `cluster`, with `image`.
pub fn desired(
    backup: &Backup,
    cluster: &Cluster,
    operation: &Operation,
    image: &str,
) -> Result<Desired, BuildError> {
    let namespace = backup
        .namespace()
        .ok_or(BuildError::Metadata("Backup", "namespace"))?;
    let backup_name = backup.name_any();
    let cluster_name = cluster.name_any();
    let owner: OwnerReference = backup
        .controller_owner_ref(&())
        .ok_or(BuildError::Metadata("Backup", "uid"))?;
    let repo_index = require_repo_index(cluster, &backup.spec.repository)?;
    let primary = cluster
        .status
        .as_ref()
        .and_then(|s| s.current_primary.clone())
        .or_else(|| {
            matches!(operation, Operation::Expire(_)).then(|| names::instance(&cluster_name, 1))
        })
        .ok_or(BuildError::NoPrimary)?;
    let mut settings = backup_job_settings(
        cluster,
        &instance_address(&cluster_name, &primary, &namespace),
    )?;
    only_repository(&mut settings, repo_index);

    let (name, command, deadline) = match operation {
        Operation::Backup(kind) => {
            let mut command = vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                report_script(repo_index),
                "--".to_owned(),
            ];
            command.extend(backup_command(*kind, repo_index));
            (
                names::backup_job(&backup_name),
                command,
                ACTIVE_DEADLINE_SECONDS,
            )
        }
        Operation::Expire(label) => (
            expire_job_name(&backup_name),
            expire_set_command(label, repo_index),
            EXPIRE_DEADLINE_SECONDS,
        ),
    };

    let mut object_labels = labels::cluster_child_labels(&cluster_name, COMPONENT);
    object_labels.insert(BACKUP_LABEL.to_owned(), backup_name.clone());
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.clone()),
        labels: Some(object_labels.clone()),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    };
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), settings.to_ini())])),
        ..ConfigMap::default()
    };

    // One projected volume at /etc/pgbackrest: the configuration, the client certificate and
    // the Secret-backed files. (Volumes nested inside a read-only volume cannot be mounted.)
    let tls_secret = names::pgbackrest_secret(&cluster_name);
    let tls_item = |key: &str| KeyToPath {
        key: key.to_owned(),
        path: format!("{}/{key}", relative_to_config_dir(TLS_DIR)),
        mode: None,
    };
    let mut sources = vec![
        VolumeProjection {
            config_map: Some(ConfigMapProjection {
                name: name.clone(),
                items: Some(vec![KeyToPath {
                    key: CONFIG_KEY.to_owned(),
                    path: CONFIG_KEY.to_owned(),
                    mode: None,
                }]),
                optional: Some(false),
            }),
            ..VolumeProjection::default()
        },
        VolumeProjection {
            secret: Some(SecretProjection {
                name: tls_secret,
                items: Some(vec![
                    tls_item(keys::CA_CERT),
                    tls_item(pgbackrest_keys::CLIENT_CERT),
                    tls_item(pgbackrest_keys::CLIENT_KEY),
                ]),
                optional: Some(false),
            }),
            ..VolumeProjection::default()
        },
    ];
    for (_, file) in settings.secret_files() {
        sources.push(VolumeProjection {
            secret: Some(SecretProjection {
                name: file.secret.name.clone(),
                items: Some(vec![KeyToPath {
                    key: file.secret.key.clone(),
                    path: relative_to_config_dir(&file.path).to_owned(),
                    mode: None,
                }]),
                optional: Some(false),
            }),
            ..VolumeProjection::default()
        });
    }
    let mut volumes = vec![
        Volume {
            name: "pgbackrest".to_owned(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(sources),
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("pgbackrest", CONFIG_DIR, true),
        mount("tmp", TMP_DIR, false),
    ];
    let volume_repositories: Vec<&str> = cluster
        .spec
        .backup
        .iter()
        .flat_map(|b| b.repositories.iter())
        .filter(|r| r.volume.is_some() && r.name == backup.spec.repository)
        .map(|r| r.name.as_str())
        .collect();
    if !volume_repositories.is_empty() {
        volumes.push(Volume {
            name: REPO_CLAIM_TEMPLATE.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: repository_claim(&cluster_name),
                read_only: None,
            }),
            ..Volume::default()
        });
        mounts.push(mount(REPO_CLAIM_TEMPLATE, REPO_HOST_PATH, false));
    }
    // A ReadWriteOnce repository volume is attached to the repository host's node: run there.
    let affinity = (!volume_repositories.is_empty()).then(|| Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([
                        (labels::CLUSTER.to_owned(), cluster_name.clone()),
                        (labels::COMPONENT.to_owned(), REPO_HOST_COMPONENT.to_owned()),
                    ])),
                    ..LabelSelector::default()
                }),
                topology_key: "kubernetes.io/hostname".to_owned(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAffinity::default()
        }),
        ..Affinity::default()
    });

    let spec = &cluster.spec;
    let container = Container {
        name: CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(command),
        env: Some(settings.env()).filter(|env| !env.is_empty()),
        resources: spec.backup.as_ref().and_then(|b| b.job_resources.clone()),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        restart_policy: Some("Never".to_owned()),
        affinity,
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
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        ..PodSpec::default()
    };
    let job = Job {
        metadata: meta,
        spec: Some(JobSpec {
            // A failed backup is reported once; a new Backup is the retry.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(object_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..JobSpec::default()
        }),
        status: None,
    };
    Ok(Desired { config_map, job })
}

/// Keeps only repository `index` among the `repoN-*` options: the Job touches one
/// repository, so a backup to object storage neither mounts the repository host's volume
/// nor waits for its node, and other repositories' credentials stay out of the pod.
pub fn only_repository(settings: &mut Settings, index: u32) {
    let own = format!("repo{index}-");
    settings.global.retain(|option, _| {
        let other_repository = option
            .strip_prefix("repo")
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        !other_repository || option.starts_with(&own)
    });
}

fn relative_to_config_dir(path: &str) -> &str {
    path.strip_prefix(CONFIG_DIR)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or(path)
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub(crate) fn cluster(backup_spec: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: shop, uid: cluster-uid}}
spec:
  postgresVersion: 17
  storage: {{size: 10Gi}}
  backup:
{backup_spec}
status:
  currentPrimary: db-2
"
        ))
        .unwrap()
    }

    fn backup(extra: &str) -> Backup {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Backup
metadata: {{name: before-migration, namespace: shop, uid: backup-uid}}
spec:
  cluster: {{name: db}}
{extra}"
        ))
        .unwrap()
    }

    const POSIX: &str = "    repositories:
    - name: repo1
      volume: {size: 50Gi}
    jobResources:
      limits: {cpu: '2', memory: 1Gi}
";

    const S3: &str = "    repositories:
    - name: repo1
      volume: {size: 50Gi}
    - name: repo2
      s3:
        bucket: backups
        endpoint: minio.storage.svc:9000
        region: us-east-1
        uriStyle: Path
        credentialsSecret: {name: minio-credentials}
        ca: {name: minio-ca, key: ca.crt}
      retention: {full: 4}
    encryption:
      passphraseSecret: {name: backup-passphrase, key: passphrase}
";

    fn render(cluster: &Cluster, backup: &Backup, operation: &Operation) -> String {
        let desired = desired(
            backup,
            cluster,
            operation,
            "ghcr.io/tusk-operator/postgres:17",
        )
        .unwrap();
        format!(
            "{}---\n{}",
            serde_yaml_ng::to_string(&desired.config_map).unwrap(),
            serde_yaml_ng::to_string(&desired.job).unwrap()
        )
    }

    #[test]
    fn posix_repository_job_golden() {
        let rendered = render(
            &cluster(POSIX),
            &backup(""),
            &Operation::Backup(BackupType::Full),
        );
        insta::assert_snapshot!(rendered);
    }

    #[test]
    fn s3_repository_job_golden() {
        let rendered = render(
            &cluster(S3),
            &backup("  type: Incremental\n  repository: repo2\n"),
            &Operation::Backup(BackupType::Incremental),
        );
        insta::assert_snapshot!(rendered);
    }

    #[test]
    fn expire_job_golden() {
        let rendered = render(
            &cluster(S3),
            &backup("  repository: repo2\n  deletionPolicy: Expire\n"),
            &Operation::Expire("20261122-101500F".into()),
        );
        insta::assert_snapshot!(rendered);
    }

    #[test]
    fn job_runs_against_the_primary_over_tls_and_is_owned_by_the_backup() {
        let desired = desired(
            &backup(""),
            &cluster(POSIX),
            &Operation::Backup(BackupType::Full),
            "img",
        )
        .unwrap();
        let ini = &desired.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        assert!(ini.contains("pg1-host=db-2-0.db-pods.shop.svc"), "{ini}");
        assert!(ini.contains("pg1-host-type=tls"), "{ini}");
        assert!(
            ini.contains("pg1-host-cert-file=/etc/pgbackrest/tls/client.crt"),
            "{ini}"
        );
        let job = &desired.job;
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("before-migration-backup")
        );
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Backup", "backup-uid", Some(true))
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.ttl_seconds_after_finished, None);
        let pod = spec.template.spec.as_ref().unwrap();
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        assert_eq!(
            container
                .resources
                .as_ref()
                .unwrap()
                .limits
                .as_ref()
                .unwrap()["cpu"]
                .0,
            "2"
        );
        // only the client pair and the CA from the pgBackRest Secret
        let projected = pod.volumes.as_ref().unwrap()[0].projected.as_ref().unwrap();
        let secret = projected.sources.as_ref().unwrap()[1]
            .secret
            .as_ref()
            .unwrap();
        assert_eq!(secret.name, "db-pgbackrest");
        let keys: Vec<&str> = secret
            .items
            .as_ref()
            .unwrap()
            .iter()
            .map(|i| i.key.as_str())
            .collect();
        assert_eq!(keys, ["ca.crt", "client.crt", "client.key"]);
        // the repository volume is ReadWriteOnce: the pod goes where the repository host is
        let affinity = pod
            .affinity
            .as_ref()
            .unwrap()
            .pod_affinity
            .as_ref()
            .unwrap();
        let term = &affinity
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()[0];
        assert_eq!(term.topology_key, "kubernetes.io/hostname");
        assert!(pod.volumes.as_ref().unwrap().iter().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == "repo-db-repo-host-0")
        }));
    }

    #[test]
    fn object_store_job_has_no_affinity_and_secrets_only_as_secret_refs() {
        let desired = desired(
            &backup("  repository: repo2\n"),
            &cluster(S3),
            &Operation::Backup(BackupType::Full),
            "img",
        )
        .unwrap();
        let ini = &desired.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        assert!(
            !ini.contains("cipher-pass") && !ini.contains("s3-key="),
            "{ini}"
        );
        let pod = desired.job.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        assert!(
            env.iter()
                .all(|e| e.value.is_none()
                    && e.value_from.as_ref().unwrap().secret_key_ref.is_some())
        );
        assert!(
            env.iter()
                .any(|e| e.name == "PGBACKREST_REPO2_S3_KEY_SECRET")
        );
        assert!(
            !env.iter().any(|e| e.name.starts_with("PGBACKREST_REPO1")),
            "{env:?}"
        );
        assert!(
            !ini.contains("repo1-"),
            "only the repository written to: {ini}"
        );
        // the repository host's volume is not needed, nor its node
        assert!(pod.affinity.is_none());
        assert!(
            pod.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.persistent_volume_claim.is_none())
        );
        assert!(
            pod.containers[0]
                .command
                .as_ref()
                .unwrap()
                .contains(&"--repo=2".to_owned())
        );
    }

    #[test]
    fn unknown_repository_is_a_clear_error() {
        let error = desired(
            &backup("  repository: repo3\n"),
            &cluster(POSIX),
            &Operation::Backup(BackupType::Full),
            "img",
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no repository named \"repo3\" (it has: repo1)"),
            "{error}"
        );
    }

    #[test]
    fn long_backup_names_keep_job_and_expire_names_apart() {
        let long = "b".repeat(80);
        assert_ne!(names::backup_job(&long), expire_job_name(&long));
        assert!(expire_job_name(&long).len() <= 63);
        assert_eq!(expire_job_name("nightly"), "nightly-expire");
    }

    #[test]
    fn report_script_stays_posix_and_under_the_message_limit() {
        let script = report_script(2);
        assert!(script.contains("--repo=2 --set=\"$label\" info"));
        assert!(script.contains("-gt 4000"));
        assert!(!script.contains("jq") && !script.contains("pipefail"));
    }
}
