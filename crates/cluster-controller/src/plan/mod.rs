//! Plan: pure functions of the spec and [`crate::observe::Observed`].

pub mod children;
pub mod config_change;
pub mod instance;
pub mod monitor_role;
pub mod monitoring;
pub mod patroni;
pub mod pgbackrest;
pub mod rollout;
pub mod secrets;
pub mod status;
pub mod storage;
pub mod tls;

use crate::error::Error;
use crate::observe::Role;
use crate::observe::patroni_api;
use crate::observe::{Observed, instance_pod, pod_ready, pod_role};
use crate::shared::layout::RESTART_HASH_ANNOTATION;
use crate::shared::meta::{cluster_name, namespace};
use crate::shared::pod::{Images, SecretEnv};
use config_change::{ConfigChange, config_change};
use instance::InstancePlan;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role as RbacRole, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use rollout::{Desired, ObservedInstance, ObservedPod, SwitchoverRequest};
use status::SpecProblem;
use std::collections::{BTreeMap, BTreeSet};
use tusk_api::cluster::reasons;
use tusk_api::names::{self};
use tusk_api::{Cluster, labels};
use tusk_runtime::apply::content_hash;

/// Everything the pass wants to exist, and the step to take.
pub struct DesiredState {
    pub secrets: Vec<Secret>,
    pub config_map: ConfigMap,
    pub services: Vec<Service>,
    pub service_account: ServiceAccount,
    pub role: RbacRole,
    pub role_binding: RoleBinding,
    pub pdb: Option<PodDisruptionBudget>,
    /// The exporter queries ConfigMap (none while monitoring is off).
    pub monitoring: crate::plan::monitoring::DesiredQueries,
    pub statefulsets: Vec<StatefulSet>,
    pub rollout: rollout::Plan,
    pub status: tusk_api::ClusterStatus,
    /// Set when the spec cannot be applied as it is; nothing is changed then.
    pub problem: Option<SpecProblem>,
    /// Secrets tusk made earlier that the spec no longer wants.
    pub retired_secrets: Vec<String>,
    /// What to send to Patroni's `PATCH /config`, when its dynamic configuration differs from
    /// the spec's.
    pub config_change: Option<ConfigChange>,
    /// PVC expansions (sent only when their StorageClass allows it) and usage.
    pub storage: crate::plan::storage::StoragePlan,
    /// pgBackRest's ConfigMap, repository host and stanza Job (crate::plan::pgbackrest).
    pub backup: pgbackrest::DesiredBackup,
}

impl std::fmt::Debug for DesiredState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesiredState")
            .field(
                "secrets",
                &self
                    .secrets
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect::<Vec<_>>(),
            )
            .field("rollout", &self.rollout)
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

/// The pure part of a pass: what every child should look like, the rollout step, the
/// status, and the changes for Patroni, storage and backups. A [`SpecProblem`] stops the apply
/// steps; the status then says what to fix.
pub fn plan(
    cluster: &Cluster,
    observed: &Observed,
    images: &Images,
    now: Time,
) -> Result<DesiredState, Error> {
    let problem = spec_problem(cluster).or_else(|| {
        crate::plan::pgbackrest::spec_problem(
            cluster,
            &observed.backup,
            has_instances(cluster, observed),
        )
    });
    let secrets = desired_secrets(cluster, observed, now.0)?;
    // With a problem nothing is applied, so there is nothing to render either.
    let patroni_yaml = match &problem {
        Some(_) => String::new(),
        None => crate::plan::patroni::render_config(cluster, &namespace(cluster))
            .map_err(|e| Error::Patroni(e.to_string()))?,
    };
    let secret_env = crate::plan::secrets::secret_env(cluster);
    let restart_hash = restart_hash(cluster, images, &secret_env);
    let observed_instances = observed_instances(cluster, observed);
    let desired = rollout_goal(cluster, observed, &restart_hash);
    let rollout = rollout::plan(&desired, &observed_instances);
    let statefulsets =
        desired_statefulsets(cluster, observed, images, &secret_env, &desired, &rollout);
    let all_updated = observed_instances
        .iter()
        .filter_map(|i| Some((i.ordinal, i.pod.as_ref()?)))
        .all(|(ordinal, p)| desired.pod_is_current(ordinal, p));
    let mut status = status::desired_status(
        cluster,
        &observed_instances,
        &rollout,
        all_updated,
        problem.as_ref(),
        now.clone(),
    );
    if observed.system_identifier.is_some() {
        status
            .system_identifier
            .clone_from(&observed.system_identifier);
    }
    if all_updated && status.ready_instances > 0 && problem.is_none() {
        // Every running instance was created from the current template, so runs its image.
        status.image = Some(images.postgres_image(cluster));
    }
    let backup = crate::plan::pgbackrest::plan(cluster, &observed.backup, images, &status, &now);
    crate::plan::pgbackrest::update_status(
        &mut status,
        &backup,
        cluster.metadata.generation,
        now.clone(),
    );
    let storage = crate::plan::storage::plan_storage(cluster, &observed_volumes(cluster, observed));
    storage_status(&mut status, cluster, observed, &storage, &rollout, now);
    Ok(DesiredState {
        secrets,
        config_map: children::desired_config_map(cluster, patroni_yaml),
        services: children::desired_services(cluster),
        service_account: children::desired_service_account(cluster),
        role: children::desired_role(cluster),
        role_binding: children::desired_role_binding(cluster),
        pdb: children::desired_pod_disruption_budget(cluster),
        monitoring: crate::plan::monitoring::desired_config_map(cluster, &observed.custom_queries),
        statefulsets,
        rollout,
        status,
        config_change: match (&problem, &observed.patroni_config) {
            (None, Some(dcs)) if !desired.shutdown => config_change(cluster, dcs)?,
            _ => None,
        },
        problem,
        retired_secrets: crate::plan::secrets::retired_secrets(cluster),
        storage,
        backup,
    })
}

/// Whether any instance StatefulSet exists (a restore source then no longer matters).
fn has_instances(cluster: &Cluster, observed: &Observed) -> bool {
    let name = cluster_name(cluster);
    observed
        .statefulsets
        .keys()
        .any(|sts| names::instance_ordinal(&name, sts).is_some())
}

/// The credential, CA and TLS Secrets, and the monitoring role's Secret.
fn desired_secrets(
    cluster: &Cluster,
    observed: &Observed,
    now: jiff::Timestamp,
) -> Result<Vec<Secret>, Error> {
    let mut secrets = crate::plan::secrets::desired_secrets(cluster, &observed.secrets, now)
        .map_err(|e| Error::Secrets(e.to_string()))?;
    secrets.extend(
        crate::plan::monitor_role::desired_monitor_secret(cluster, &observed.secrets)
            .map_err(|e| Error::Secrets(e.to_string()))?,
    );
    Ok(secrets)
}

/// The hash of everything in the pod template that needs a restart to take effect: the
/// template of a probe instance rendered with an empty hash, without the per-instance label.
fn restart_hash(cluster: &Cluster, images: &Images, secret_env: &SecretEnv) -> String {
    let probe = instance::desired_statefulset(
        cluster,
        &InstancePlan {
            name: names::instance(&cluster_name(cluster), 1),
            running: true,
        },
        images,
        secret_env,
        "",
    );
    let template = probe.spec.as_ref().map(|s| &s.template);
    let mut template_value = serde_json::to_value(template).unwrap_or_default();
    if let Some(labels) = template_value
        .pointer_mut("/metadata/labels")
        .and_then(|l| l.as_object_mut())
    {
        labels.remove(labels::INSTANCE_NAME);
    }
    content_hash(&template_value)
}

/// What the rollout planner steers towards.
fn rollout_goal(cluster: &Cluster, observed: &Observed, restart_hash: &str) -> Desired {
    Desired {
        instances: u32::try_from(cluster.spec.instances).unwrap_or(1),
        restart_hash: restart_hash.to_owned(),
        restart_requests: instance_restart_requests(cluster, observed),
        shutdown: cluster.spec.shutdown
            || cluster
                .annotations()
                .contains_key(labels::UPGRADE_LOCK_ANNOTATION),
        max_lag_bytes: cluster.spec.high_availability.maximum_lag_on_failover,
        switchover: switchover_request(cluster),
        synchronous: cluster.spec.replication.mode
            != tusk_api::cluster::ReplicationMode::Asynchronous,
    }
}

/// The `tusk.dev/restart-instance` request each instance's pod template carries: the
/// annotation's for the instance it names, and for every other instance what its StatefulSet's
/// template already has, so a request stays done when the annotation moves on or is removed.
/// A request naming no instance of the Cluster restarts nothing.
fn instance_restart_requests(cluster: &Cluster, observed: &Observed) -> BTreeMap<u32, String> {
    let name = cluster_name(cluster);
    let mut requests: BTreeMap<u32, String> = observed
        .statefulsets
        .iter()
        .filter_map(|(sts, set)| {
            let ordinal = names::instance_ordinal(&name, sts)?;
            let template = set.spec.as_ref()?.template.metadata.as_ref()?;
            let request = template
                .annotations
                .as_ref()?
                .get(labels::RESTART_INSTANCE_ANNOTATION)?;
            Some((ordinal, request.clone()))
        })
        .collect();
    if let Some((instance, request)) = cluster.instance_restart_request()
        && let Some(ordinal) = names::instance_ordinal(&name, &instance)
    {
        requests.insert(ordinal, request);
    }
    requests
}

/// One StatefulSet per instance the rollout keeps, with the claim sizes the API already has
/// (they are expanded on the PVCs) and, after the restart hash, the restore bootstrap's
/// additions (they only matter while bootstrapping).
fn desired_statefulsets(
    cluster: &Cluster,
    observed: &Observed,
    images: &Images,
    secret_env: &SecretEnv,
    desired: &Desired,
    rollout: &rollout::Plan,
) -> Vec<StatefulSet> {
    let name = cluster_name(cluster);
    let restore_pod = crate::plan::pgbackrest::restore_pod(cluster, &observed.backup);
    rollout
        .instances
        .iter()
        .map(|ordinal| {
            let mut sts = instance::desired_statefulset(
                cluster,
                &InstancePlan {
                    name: names::instance(&name, *ordinal),
                    running: rollout.running.contains(ordinal),
                },
                images,
                secret_env,
                &desired.restart_hash,
            );
            if let Some(request) = desired.restart_requests.get(ordinal) {
                instance::add_restart_request(&mut sts, request);
            }
            let existing = observed.statefulsets.get(&sts.name_any());
            crate::plan::storage::keep_claim_template_sizes(&mut sts, existing);
            if let Some(restore) = &restore_pod {
                crate::plan::pgbackrest::add_restore_pod(&mut sts, restore);
            }
            sts
        })
        .collect()
}

/// The storage conditions and usage, for the instances the rollout keeps.
fn storage_status(
    status: &mut tusk_api::ClusterStatus,
    cluster: &Cluster,
    observed: &Observed,
    storage: &crate::plan::storage::StoragePlan,
    rollout: &rollout::Plan,
    now: Time,
) {
    let name = cluster_name(cluster);
    let instance_names: BTreeSet<String> = rollout
        .instances
        .iter()
        .map(|ordinal| names::instance(&name, *ordinal))
        .collect();
    crate::plan::storage::update_status(
        status,
        cluster,
        storage,
        &observed.storage_classes,
        &instance_names,
        now,
    );
}

/// The `tusk.dev/switchover` annotation: `any` or an instance name (`<cluster>-<n>`).
fn switchover_request(cluster: &Cluster) -> Option<SwitchoverRequest> {
    let value = cluster
        .annotations()
        .get(labels::SWITCHOVER_ANNOTATION)?
        .trim();
    if value.is_empty() || value == "any" {
        return Some(SwitchoverRequest::Any);
    }
    // An unknown target settles the request with a message instead of waiting forever.
    Some(SwitchoverRequest::To(
        names::instance_ordinal(&cluster_name(cluster), value).unwrap_or(u32::MAX),
    ))
}

/// What the API server cannot check: a forbidden parameter that slipped past (older CRD), or a
/// major version change outside a PGUpgrade.
fn spec_problem(cluster: &Cluster) -> Option<SpecProblem> {
    let forbidden = cluster.spec.forbidden_parameters();
    if !forbidden.is_empty() {
        return Some(SpecProblem {
            reason: reasons::FORBIDDEN_PARAMETER,
            message: format!(
                "spec.postgresql.parameters sets {} which tusk controls; remove {}",
                forbidden.join(", "),
                if forbidden.len() == 1 { "it" } else { "them" }
            ),
        });
    }
    let running = cluster.status.as_ref().and_then(|s| s.postgres_version);
    let upgrading = cluster
        .annotations()
        .contains_key(labels::UPGRADE_LOCK_ANNOTATION);
    if let Some(running) = running
        && running != cluster.spec.postgres_version
        && !upgrading
    {
        return Some(SpecProblem {
            reason: reasons::UNSUPPORTED_VERSION_CHANGE,
            message: format!(
                "spec.postgresVersion changed from {running} to {}: a major version change needs a PGUpgrade; set spec.postgresVersion back to {running} and create a PGUpgrade",
                cluster.spec.postgres_version
            ),
        });
    }
    None
}

fn observed_instances(cluster: &Cluster, observed: &Observed) -> Vec<ObservedInstance> {
    let name = cluster_name(cluster);
    let mut ordinals: BTreeSet<u32> = observed
        .statefulsets
        .keys()
        .filter_map(|sts| names::instance_ordinal(&name, sts))
        .collect();
    ordinals.extend(
        observed
            .pods
            .values()
            .filter_map(|pod| names::pod_instance(&name, pod))
            .filter_map(|instance| names::instance_ordinal(&name, instance)),
    );
    ordinals
        .into_iter()
        .map(|ordinal| {
            let instance = names::instance(&name, ordinal);
            let pod = instance_pod(observed, &instance).map(|p| {
                let member = observed
                    .patroni
                    .as_ref()
                    .and_then(|view| view.members.iter().find(|m| m.name == p.name_any()));
                ObservedPod {
                    role: match member {
                        Some(member) if member.is_leader() => Role::Primary,
                        Some(_) => Role::Replica,
                        None => pod_role(p),
                    },
                    ready: pod_ready(p),
                    terminating: p.metadata.deletion_timestamp.is_some(),
                    restart_hash: p.annotations().get(RESTART_HASH_ANNOTATION).cloned(),
                    lag_bytes: member.and_then(patroni_api::Member::lag_bytes),
                    replay_lag_ms: observed.replay_lag.get(&p.name_any()).copied(),
                    restart_request: p
                        .annotations()
                        .get(labels::RESTART_INSTANCE_ANNOTATION)
                        .cloned(),
                    timeline: member.and_then(|m| m.timeline),
                    pending_restart: member.and_then(|m| m.pending_restart) == Some(true),
                    sync_standby: member.is_some_and(patroni_api::Member::is_sync_standby),
                    crash: observed.crashes.get(&p.name_any()).cloned(),
                }
            });
            ObservedInstance {
                ordinal,
                statefulset: observed.statefulsets.contains_key(&instance),
                pod,
            }
        })
        .collect()
}

/// The data (and WAL) PVCs of every instance, with the usage measured on it.
pub(crate) fn observed_volumes(
    cluster: &Cluster,
    observed: &Observed,
) -> Vec<crate::plan::storage::ObservedVolume> {
    use crate::plan::storage::{DATA_VOLUME, ObservedVolume, WAL_VOLUME, claim_name};
    let name = cluster_name(cluster);
    let wal = cluster.spec.wal_storage.is_some();
    let mut volumes = Vec::new();
    for instance in observed
        .statefulsets
        .keys()
        .filter(|sts| names::instance_ordinal(&name, sts).is_some())
    {
        let usage = observed.usage.get(instance).copied();
        let kinds: &[&'static str] = if wal {
            &[DATA_VOLUME, WAL_VOLUME]
        } else {
            &[DATA_VOLUME]
        };
        for volume in kinds {
            if let Some(claim) = observed.claims.get(&claim_name(volume, instance)) {
                volumes.push(ObservedVolume::from_claim(
                    instance, volume, claim, usage, wal,
                ));
            }
        }
    }
    volumes
}

/// The StorageClasses whose `allowVolumeExpansion` the storage plan needs: only those of
/// claims it wants to expand, so a steady pass reads none.
pub fn storage_classes_to_check(cluster: &Cluster, observed: &Observed) -> BTreeSet<String> {
    storage::classes_to_check(&storage::plan_storage(
        cluster,
        &observed_volumes(cluster, observed),
    ))
}
