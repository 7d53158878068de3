//! One pass over a Cluster: observe → plan → apply → status.
//!
//! Observation reads the Cluster's children, pods and PVCs; when pods are reachable also
//! Patroni's view (roles, lag, `pending_restart`, the dynamic configuration) and, over SQL,
//! each instance's volume usage and TLS state. Planning is pure: the children builders, the Secrets and TLS
//! plan, the Patroni configuration and the rollout planner. Applying uses server-side apply
//! that skips unchanged objects, so a steady-state pass writes nothing; then at most one
//! disruptive step (restart a pod, switch over, remove an instance) is taken.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role as RbacRole, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tusk_api::cluster::reasons;
use tusk_api::names::{self, PATRONI_PORT};
use tusk_api::{Cluster, labels};
use tusk_runtime::Context;
use tusk_runtime::apply::{self, content_hash};

use crate::children::{self, Images, InstancePlan, RESTART_HASH_ANNOTATION};
use crate::error::Error;
use crate::meta::{cluster_name, namespace};
use crate::patroni_api;
use crate::rollout::{
    self, Desired, ObservedInstance, ObservedPod, RequestHandling, Role, Step, SwitchoverRequest,
};
use crate::status::{self, SpecProblem};

/// What the Cluster controller needs besides the runtime's context.
#[derive(Clone, Debug)]
pub struct State {
    pub runtime: Context,
    pub images: Images,
    /// Whether to ask Patroni's REST API (pod IPs must be reachable; off in tests against the
    /// in-memory API).
    pub patroni_api: bool,
}

/// How soon to look again while a rollout step is in flight.
const IN_FLIGHT_REQUEUE: Duration = Duration::from_secs(10);

/// Everything read from the API for one Cluster.
#[derive(Default)]
pub struct Observed {
    pub statefulsets: BTreeMap<String, StatefulSet>,
    pub pods: BTreeMap<String, Pod>,
    pub secrets: BTreeMap<String, Secret>,
    pub services: BTreeMap<String, Service>,
    pub config_map: Option<ConfigMap>,
    pub service_account: Option<ServiceAccount>,
    pub role: Option<RbacRole>,
    pub role_binding: Option<RoleBinding>,
    pub pdb: Option<PodDisruptionBudget>,
    /// The exporter queries ConfigMap `<cluster>-monitoring`.
    pub monitoring_config_map: Option<ConfigMap>,
    /// The user's queries named by `spec.monitoring.customQueries`.
    pub custom_queries: crate::monitoring::CustomQueries,
    /// Patroni's view, when its REST API answered.
    pub patroni: Option<patroni_api::ClusterView>,
    /// Patroni's dynamic configuration (`GET /config`), when its REST API answered.
    pub patroni_config: Option<serde_json::Value>,
    /// The instances' PVCs (the StatefulSet controller labels them with the pod selector).
    pub claims: BTreeMap<String, PersistentVolumeClaim>,
    /// `allowVolumeExpansion` of the StorageClasses a planned expansion needs (read only
    /// then); a class that could not be read is absent.
    pub storage_classes: BTreeMap<String, bool>,
    /// What each reachable instance's PostgreSQL said, keyed by instance name.
    pub instances_sql: BTreeMap<String, crate::instance_sql::InstanceSession>,
    /// Bytes used per instance (from `instances_sql`), keyed by instance name.
    pub usage: BTreeMap<String, crate::storage::InstanceUsage>,
    /// pgBackRest's children, the restore source and the primary's archiver (crate::backup).
    pub backup: crate::backup::ObservedBackup,
    /// Pods whose `postgres` container crashed, keyed by pod name, with the cause read from
    /// the previous run's log where it could be (crate::crash).
    pub crashes: BTreeMap<String, crate::crash::Crash>,
}

/// Secret contents must never reach a log: only names are shown.
impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed")
            .field(
                "statefulsets",
                &self.statefulsets.keys().collect::<Vec<_>>(),
            )
            .field("pods", &self.pods.keys().collect::<Vec<_>>())
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

pub async fn reconcile(cluster: Arc<Cluster>, state: Arc<State>) -> Result<Action, Error> {
    let _timer = state.runtime.metrics.reconcile_timer();
    let observed = observe(&cluster, &state).await?;
    let now = Time(jiff::Timestamp::now());
    let desired = plan(&cluster, &observed, &state.images, now.clone())?;
    apply_children(&cluster, &state, &observed, &desired).await?;
    let config_changed = apply_config_change(&cluster, &state, &observed, &desired).await?;
    apply_storage(&cluster, &state, &observed, &desired).await?;
    // SQL trouble on one instance must not keep the status from being written: reported after.
    let instance_sql = apply_instance_sql(&cluster, &state, &observed, &desired).await;
    take_step(&cluster, &state, &observed, &desired).await?;
    let status = desired.status.clone();
    let api: Api<Cluster> = Api::namespaced(state.runtime.client.clone(), &namespace(&cluster));
    apply::ensure_status(
        &api,
        state.runtime.field_manager(),
        &cluster.name_any(),
        &status,
        cluster.status.as_ref(),
    )
    .await?;
    publish_transitions(&cluster, &state, &status).await;
    instance_sql?;
    // A success either way (metrics, backoff reset); a step in flight is looked at again soon.
    let steady = state.runtime.requeue(cluster.as_ref());
    // A restore source that does not exist yet raises no event here when it appears.
    let waiting_for_source = desired
        .problem
        .as_ref()
        .is_some_and(|p| p.reason == crate::backup::WAITING_FOR_SOURCE);
    Ok(match desired.rollout.step {
        _ if waiting_for_source => Action::requeue(IN_FLIGHT_REQUEUE),
        // After a configuration change, look again soon for `pending_restart`.
        Step::Idle if !config_changed => steady,
        _ => Action::requeue(IN_FLIGHT_REQUEUE),
    })
}

async fn observe(cluster: &Cluster, state: &State) -> Result<Observed, Error> {
    let client = state.runtime.client.clone();
    let ns = namespace(cluster);
    let name = cluster_name(cluster);
    let selector = format!("{}={}", labels::CLUSTER, name);
    let list = ListParams::default().labels(&selector);
    let observe = |what: &'static str| {
        move |source| Error::Observe {
            what,
            source: Box::new(source),
        }
    };

    let statefulsets = list_by_name::<StatefulSet>(&client, &ns, &list, "StatefulSets").await?;
    let mut pods = list_by_name::<Pod>(&client, &ns, &list, "Pods").await?;
    // Job pods (stanza, backups, a PGUpgrade's) carry the Cluster's labels too, some even the
    // primary's instance label; only a pod an instance StatefulSet controls is an instance.
    pods.retain(|_, pod| names::pod_instance(&name, pod).is_some());
    let mut secrets = list_by_name::<Secret>(&client, &ns, &list, "Secrets").await?;
    // Read every Secret the Cluster uses by name too: user-provided certificates carry no
    // tusk labels, and a Secret whose labels were removed must not look missing (a forced
    // apply would replace its password or CA).
    for secret_name in crate::secrets::observed_secret_names(cluster) {
        if secrets.contains_key(&secret_name) {
            continue;
        }
        if let Some(secret) = Api::<Secret>::namespaced(client.clone(), &ns)
            .get_opt(&secret_name)
            .await
            .map_err(observe("Secrets"))?
        {
            secrets.insert(secret_name, secret);
        }
    }
    if cluster.spec.monitoring.enabled {
        let monitor = crate::monitor_role::monitor_secret(&name);
        if !secrets.contains_key(&monitor)
            && let Some(secret) = Api::<Secret>::namespaced(client.clone(), &ns)
                .get_opt(&monitor)
                .await
                .map_err(observe("Secrets"))?
        {
            secrets.insert(monitor, secret);
        }
    }
    let services = list_by_name::<Service>(&client, &ns, &list, "Services").await?;
    let claims =
        list_by_name::<PersistentVolumeClaim>(&client, &ns, &list, "PersistentVolumeClaims")
            .await?;
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(&names::patroni_config(&name))
        .await
        .map_err(observe("ConfigMap"))?;
    let account = children::patroni_account_name(cluster);
    let service_account = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get_opt(&account)
        .await
        .map_err(observe("ServiceAccount"))?;
    let role = Api::<RbacRole>::namespaced(client.clone(), &ns)
        .get_opt(&account)
        .await
        .map_err(observe("Role"))?;
    let role_binding = Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .get_opt(&account)
        .await
        .map_err(observe("RoleBinding"))?;
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(observe("PodDisruptionBudget"))?;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let monitoring_config_map = config_maps
        .get_opt(&crate::monitoring::config_map_name(&name))
        .await
        .map_err(observe("ConfigMap"))?;
    let custom_queries = match &cluster.spec.monitoring.custom_queries {
        Some(reference) if cluster.spec.monitoring.enabled => config_maps
            .get_opt(&reference.name)
            .await
            .map_err(observe("ConfigMap"))?
            .and_then(|cm| cm.data?.remove(&reference.key))
            .map_or(
                crate::monitoring::CustomQueries::Missing,
                crate::monitoring::CustomQueries::Found,
            ),
        _ => crate::monitoring::CustomQueries::NotRequested,
    };

    let mut observed = Observed {
        statefulsets,
        pods,
        secrets,
        services,
        config_map,
        service_account,
        role,
        role_binding,
        pdb,
        monitoring_config_map,
        custom_queries,
        patroni: None,
        patroni_config: None,
        claims,
        storage_classes: BTreeMap::new(),
        instances_sql: BTreeMap::new(),
        usage: BTreeMap::new(),
        backup: crate::backup::ObservedBackup::default(),
        crashes: BTreeMap::new(),
    };
    observed.crashes = crashes(&client, &ns, &observed.pods).await;
    if state.patroni_api {
        observed.patroni = patroni_view(&observed.pods).await;
        if observed.patroni.is_some() {
            observed.patroni_config = patroni_config(&observed.pods).await;
        }
        observed.instances_sql = instance_sessions(cluster, &observed).await;
        observed.usage = observed
            .instances_sql
            .iter()
            .filter_map(|(instance, session)| Some((instance.clone(), session.usage?)))
            .collect();
    }
    // StorageClasses are read only when an expansion is planned: none in steady state.
    let storage = crate::storage::plan_storage(cluster, &observed_volumes(cluster, &observed));
    for class in crate::storage::classes_to_check(&storage) {
        match Api::<StorageClass>::all(client.clone())
            .get_opt(&class)
            .await
        {
            Ok(Some(found)) => {
                observed
                    .storage_classes
                    .insert(class, found.allow_volume_expansion == Some(true));
            }
            Ok(None) => {
                observed.storage_classes.insert(class, false);
            }
            // Not readable (RBAC): no expansion is sent, the condition says why.
            Err(error) => tracing::debug!(%class, %error, "could not read the StorageClass"),
        }
    }
    let was_ready = cluster.status.as_ref().is_some_and(status::is_ready);
    // The primary's SQL session opened above, for the archiver and recovery queries.
    let primary_sql = observed
        .pods
        .values()
        .filter(|pod| pod_role(pod) == Role::Primary && pod_ready(pod))
        .find_map(|pod| {
            let instance = names::pod_instance(&name, pod)?;
            Some(observed.instances_sql.get(instance)?.client.clone())
        })
        .filter(|_| was_ready);
    // Boxed: the reconcile future stays small enough for a test thread's stack.
    observed.backup = Box::pin(crate::backup::observe(cluster, &client, primary_sql)).await?;
    Ok(observed)
}

/// The crashed `postgres` containers, each with the telling lines of its previous run's log
/// as cause. Only pods that crashed are read, so a healthy Cluster costs nothing; a log that
/// cannot be read leaves the termination message as the only source.
async fn crashes(
    client: &kube::Client,
    ns: &str,
    pods: &BTreeMap<String, Pod>,
) -> BTreeMap<String, crate::crash::Crash> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let mut crashes = BTreeMap::new();
    for (name, pod) in pods {
        let Some(mut crash) = crate::crash::of_pod(pod) else {
            continue;
        };
        let params = kube::api::LogParams {
            container: Some("postgres".to_owned()),
            previous: true,
            tail_lines: Some(crate::crash::LOG_TAIL_LINES),
            ..kube::api::LogParams::default()
        };
        match api.logs(name, &params).await {
            Ok(log) => {
                if let Some(cause) = crate::crash::cause(&log) {
                    crash.cause = Some(cause);
                }
            }
            Err(error) => tracing::debug!(pod = %name, %error, "cannot read the previous log"),
        }
        crashes.insert(name.clone(), crash);
    }
    crashes
}

/// Connects to every ready instance and reads its volume usage and TLS state. An instance
/// that does not answer is left out (and logged): the rest of the pass goes on.
async fn instance_sessions(
    cluster: &Cluster,
    observed: &Observed,
) -> BTreeMap<String, crate::instance_sql::InstanceSession> {
    let targets: Vec<(String, tusk_runtime::postgres::PrimaryTarget)> = observed
        .pods
        .values()
        .filter(|pod| pod_ready(pod) && pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let instance = names::pod_instance(&cluster_name(cluster), pod)?.to_owned();
            let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            let target = crate::instance_sql::instance_target(cluster, &observed.secrets, ip)?;
            Some((instance, target))
        })
        .collect();
    let sessions =
        futures::future::join_all(targets.into_iter().map(|(instance, target)| async move {
            let result = crate::instance_sql::observe_instance(instance.clone(), &target).await;
            (instance, result)
        }))
        .await;
    sessions
        .into_iter()
        .filter_map(|(instance, result)| match result {
            Ok(session) => Some((instance, session)),
            Err(error) => {
                tracing::debug!(%instance, %error, "instance did not answer over SQL");
                None
            }
        })
        .collect()
}

/// The data (and WAL) PVCs of every instance, with the usage measured on it.
fn observed_volumes(cluster: &Cluster, observed: &Observed) -> Vec<crate::storage::ObservedVolume> {
    use crate::storage::{DATA_VOLUME, ObservedVolume, WAL_VOLUME, claim_name};
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

/// The objects matching `list` in `ns`, keyed by name.
async fn list_by_name<K>(
    client: &kube::Client,
    ns: &str,
    list: &ListParams,
    what: &'static str,
) -> Result<BTreeMap<String, K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let objects = Api::<K>::namespaced(client.clone(), ns)
        .list(list)
        .await
        .map_err(|source| Error::Observe {
            what,
            source: Box::new(source),
        })?;
    Ok(objects.into_iter().map(|o| (o.name_any(), o)).collect())
}

/// Asks the ready pods' Patroni for the cluster view; the first answer wins.
async fn patroni_view(pods: &BTreeMap<String, Pod>) -> Option<patroni_api::ClusterView> {
    for pod in pods.values().filter(|p| pod_ready(p)) {
        let Some(addr) = patroni_addr(pod) else {
            continue;
        };
        match patroni_api::cluster(addr).await {
            Ok(view) => return Some(view),
            Err(error) => tracing::debug!(pod = %pod.name_any(), %error, "Patroni did not answer"),
        }
    }
    None
}

/// Asks the ready pods' Patroni for the dynamic configuration; the first answer wins (every
/// member serves the same DCS content).
async fn patroni_config(pods: &BTreeMap<String, Pod>) -> Option<serde_json::Value> {
    for pod in pods.values().filter(|p| pod_ready(p)) {
        let Some(addr) = patroni_addr(pod) else {
            continue;
        };
        match patroni_api::config(addr).await {
            Ok(config) => return Some(config),
            Err(error) => tracing::debug!(pod = %pod.name_any(), %error, "GET /config failed"),
        }
    }
    None
}

/// The pod of `instance`, if one was observed (`observed.pods` holds only pods an instance
/// StatefulSet controls, by name, and a StatefulSet's one pod is `<instance>-0`).
fn instance_pod<'a>(observed: &'a Observed, instance: &str) -> Option<&'a Pod> {
    observed.pods.get(&names::statefulset_pod(instance))
}

/// Where to reach the Patroni REST API of `instance` and with which credentials: `None` when
/// the instance has no pod (nothing to act on), an error when the pod has no IP or the REST
/// API Secret is not there yet.
fn patroni_endpoint<'a>(
    cluster: &Cluster,
    observed: &'a Observed,
    instance: &str,
) -> Result<Option<(&'a Pod, SocketAddr, patroni_api::Credentials)>, Error> {
    let Some(pod) = instance_pod(observed, instance) else {
        return Ok(None);
    };
    match (
        patroni_addr(pod),
        crate::secrets::patroni_api_credentials(cluster, &observed.secrets),
    ) {
        (Some(addr), Some(credentials)) => Ok(Some((pod, addr, credentials))),
        _ => Err(Error::PatroniApi {
            instance: instance.to_owned(),
            message: "no pod IP or REST API credentials yet".to_owned(),
        }),
    }
}

fn patroni_addr(pod: &Pod) -> Option<SocketAddr> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    Some(SocketAddr::new(ip, PATRONI_PORT))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn pod_role(pod: &Pod) -> Role {
    match pod.labels().get(labels::ROLE).map(String::as_str) {
        Some("master" | "primary") => Role::Primary,
        Some("replica") => Role::Replica,
        _ => Role::Unknown,
    }
}

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
    pub monitoring: crate::monitoring::DesiredQueries,
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
    pub storage: crate::storage::StoragePlan,
    /// pgBackRest's ConfigMap, repository host and stanza Job (crate::backup).
    pub backup: crate::backup::DesiredBackup,
}

/// A change of Patroni's dynamic configuration (DCS), applied with `PATCH /config`: Patroni
/// reloads every member; parameters that need a restart make members report
/// `pending_restart`, which the rollout planner then works through.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigChange {
    /// The merge patch (only keys tusk renders; removed parameters as `null`).
    pub patch: serde_json::Value,
    /// Which parameters changed and which of them need a restart.
    pub parameters: crate::patroni::ParameterChangePlan,
}

impl ConfigChange {
    /// What changed, for the event: parameter names only (values may be long).
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let reloaded: Vec<&str> = self
            .parameters
            .changed
            .iter()
            .filter(|name| !self.parameters.restart.contains(name))
            .map(String::as_str)
            .collect();
        if !reloaded.is_empty() {
            parts.push(format!("reloaded {}", reloaded.join(", ")));
        }
        if self.parameters.needs_restart() {
            parts.push(format!(
                "{} need a restart (instances restart one at a time, replicas first)",
                self.parameters.restart.join(", ")
            ));
        }
        // Everything else the patch touches: Patroni timings, replication, pg_hba, ...
        let mut other: Vec<String> = Vec::new();
        if let Some(patch) = self.patch.as_object() {
            for (key, value) in patch {
                match (key.as_str(), value.as_object()) {
                    ("postgresql", Some(section)) => other.extend(
                        section
                            .keys()
                            .filter(|k| *k != "parameters")
                            .map(|k| format!("postgresql.{k}")),
                    ),
                    _ => other.push(key.clone()),
                }
            }
        }
        if !other.is_empty() {
            parts.push(format!("updated {}", other.join(", ")));
        }
        parts.join("; ")
    }
}

/// The change that brings Patroni's dynamic configuration (`observed`, from `GET /config`) to
/// what `cluster` renders; `None` when it already matches.
pub fn config_change(
    cluster: &Cluster,
    observed: &serde_json::Value,
) -> Result<Option<ConfigChange>, Error> {
    let desired =
        crate::patroni::dynamic_config(cluster).map_err(|e| Error::Patroni(e.to_string()))?;
    let patch = crate::patroni::dynamic_config_patch(observed, &desired)
        .map_err(|e| Error::Patroni(e.to_string()))?;
    Ok(patch.map(|patch| ConfigChange {
        patch,
        parameters: crate::patroni::plan_parameter_change(
            &crate::patroni::observed_parameters(observed),
            &desired.postgresql.parameters,
            cluster.spec.postgres_version,
        ),
    }))
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

/// The pure part of a pass.
pub fn plan(
    cluster: &Cluster,
    observed: &Observed,
    images: &Images,
    now: Time,
) -> Result<DesiredState, Error> {
    let name = cluster_name(cluster);
    let has_instances = observed
        .statefulsets
        .keys()
        .any(|sts| names::instance_ordinal(&name, sts).is_some());
    let problem = spec_problem(cluster)
        .or_else(|| crate::backup::spec_problem(cluster, &observed.backup, has_instances));
    let mut secrets = crate::secrets::desired_secrets(cluster, &observed.secrets, now.0)
        .map_err(|e| Error::Secrets(e.to_string()))?;
    secrets.extend(
        crate::monitor_role::desired_monitor_secret(cluster, &observed.secrets)
            .map_err(|e| Error::Secrets(e.to_string()))?,
    );
    // With a problem nothing is applied, so there is nothing to render either.
    let patroni_yaml = match &problem {
        Some(_) => String::new(),
        None => crate::patroni::render_config(cluster, &namespace(cluster))
            .map_err(|e| Error::Patroni(e.to_string()))?,
    };
    let secret_env = crate::secrets::secret_env(cluster);

    // The restart hash covers the whole pod template: compute the template with an empty
    // hash, then hash it.
    let probe = children::desired_statefulset(
        cluster,
        &InstancePlan {
            name: names::instance(&name, 1),
            running: true,
        },
        images,
        &secret_env,
        "",
    );
    let template = probe.spec.as_ref().map(|s| &s.template);
    let mut template_value = serde_json::to_value(template).unwrap_or_default();
    for label in [labels::INSTANCE_NAME] {
        if let Some(labels) = template_value
            .pointer_mut("/metadata/labels")
            .and_then(|l| l.as_object_mut())
        {
            labels.remove(label);
        }
    }
    let restart_hash = content_hash(&template_value);

    let observed_instances = observed_instances(cluster, observed);
    let desired = Desired {
        instances: u32::try_from(cluster.spec.instances).unwrap_or(1),
        restart_hash: restart_hash.clone(),
        shutdown: cluster.spec.shutdown
            || cluster
                .annotations()
                .contains_key(labels::UPGRADE_LOCK_ANNOTATION),
        max_lag_bytes: cluster.spec.high_availability.maximum_lag_on_failover,
        switchover: switchover_request(cluster),
        synchronous: cluster.spec.replication.mode
            != tusk_api::cluster::ReplicationMode::Asynchronous,
    };
    let rollout = rollout::plan(&desired, &observed_instances);
    let restore_pod = crate::backup::restore_pod(cluster, &observed.backup);
    let statefulsets = rollout
        .instances
        .iter()
        .map(|ordinal| {
            children::desired_statefulset(
                cluster,
                &InstancePlan {
                    name: names::instance(&name, *ordinal),
                    running: rollout.running.contains(ordinal),
                },
                images,
                &secret_env,
                &restart_hash,
            )
        })
        .map(|mut sts| {
            let existing = observed.statefulsets.get(&sts.name_any());
            crate::storage::keep_claim_template_sizes(&mut sts, existing);
            sts
        })
        // After the restart hash: the restore source only matters while bootstrapping.
        .map(|mut sts| {
            if let Some(restore) = &restore_pod {
                crate::backup::add_restore_pod(&mut sts, restore);
            }
            sts
        })
        .collect();
    let all_updated = observed_instances
        .iter()
        .filter_map(|i| i.pod.as_ref())
        .all(|p| p.restart_hash.as_deref() == Some(restart_hash.as_str()));
    let mut status = status::desired_status(
        cluster,
        &observed_instances,
        &rollout,
        all_updated,
        problem.as_ref(),
        now.clone(),
    );
    let backup = crate::backup::plan(cluster, &observed.backup, images, &status, &now);
    crate::backup::update_status(
        &mut status,
        &backup,
        cluster.metadata.generation,
        now.clone(),
    );
    let storage = crate::storage::plan_storage(cluster, &observed_volumes(cluster, observed));
    let instance_names: BTreeSet<String> = rollout
        .instances
        .iter()
        .map(|ordinal| names::instance(&name, *ordinal))
        .collect();
    crate::storage::update_status(
        &mut status,
        cluster,
        &storage,
        &observed.storage_classes,
        &instance_names,
        now,
    );

    Ok(DesiredState {
        secrets,
        config_map: children::desired_config_map(cluster, patroni_yaml),
        services: children::desired_services(cluster),
        service_account: children::desired_service_account(cluster),
        role: children::desired_role(cluster),
        role_binding: children::desired_role_binding(cluster),
        pdb: children::desired_pod_disruption_budget(cluster),
        monitoring: crate::monitoring::desired_config_map(cluster, &observed.custom_queries),
        statefulsets,
        rollout,
        status,
        config_change: match (&problem, &observed.patroni_config) {
            (None, Some(dcs)) if !desired.shutdown => config_change(cluster, dcs)?,
            _ => None,
        },
        problem,
        retired_secrets: crate::secrets::retired_secrets(cluster),
        storage,
        backup,
    })
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

/// Applies children of one Cluster with its field manager, skipping unchanged ones.
struct Children {
    client: kube::Client,
    namespace: String,
    manager: &'static str,
}

impl Children {
    async fn ensure<K>(&self, desired: &K, observed: Option<&K>) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Clone
            + std::fmt::Debug,
    {
        let api = Api::namespaced(self.client.clone(), &self.namespace);
        apply::ensure(&api, self.manager, desired.clone(), observed).await?;
        Ok(())
    }
}

async fn apply_children(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<(), Error> {
    if desired.problem.is_some() {
        // Nothing half-applied: a spec that cannot be satisfied changes no child.
        return Ok(());
    }
    let children = Children {
        client: state.runtime.client.clone(),
        namespace: namespace(cluster),
        manager: state.runtime.field_manager(),
    };
    children
        .ensure(&desired.service_account, observed.service_account.as_ref())
        .await?;
    children
        .ensure(&desired.role, observed.role.as_ref())
        .await?;
    children
        .ensure(&desired.role_binding, observed.role_binding.as_ref())
        .await?;
    for secret in &desired.secrets {
        children
            .ensure(secret, observed.secrets.get(&secret.name_any()))
            .await?;
    }
    children
        .ensure(&desired.config_map, observed.config_map.as_ref())
        .await?;
    // Before the StatefulSets: instance pods mount the pgBackRest ConfigMap.
    let backup_events = Box::pin(crate::backup::apply_children(
        cluster,
        &children.client,
        children.manager,
        &observed.backup,
        &desired.backup,
    ))
    .await?;
    for event in backup_events {
        publish_backup_event(state, cluster, event).await;
    }
    // Before the StatefulSets: instance pods mount it.
    if let Some(queries) = &desired.monitoring.config_map {
        let api = Api::namespaced(children.client.clone(), &children.namespace);
        let outcome = apply::ensure(
            &api,
            children.manager,
            queries.clone(),
            observed.monitoring_config_map.as_ref(),
        )
        .await?;
        // Said once per change of the file, not on every pass.
        if let (apply::Outcome::Applied, Some(warning)) = (outcome, &desired.monitoring.warning) {
            publish(
                state,
                cluster,
                EventType::Warning,
                "CustomQueriesIgnored",
                warning.clone(),
            )
            .await;
        }
    }
    for service in &desired.services {
        children
            .ensure(service, observed.services.get(&service.name_any()))
            .await?;
    }
    for sts in &desired.statefulsets {
        children
            .ensure(sts, observed.statefulsets.get(&sts.name_any()))
            .await?;
    }
    let secrets: Api<Secret> = Api::namespaced(children.client.clone(), &children.namespace);
    let uid = cluster.uid();
    for retired in &desired.retired_secrets {
        let owned = observed.secrets.get(retired).is_some_and(|secret| {
            secret
                .owner_references()
                .iter()
                .any(|owner| Some(&owner.uid) == uid.as_ref())
        });
        if owned {
            delete(&secrets, retired, "deleting the retired Secret").await?;
        }
    }
    let pdbs: Api<PodDisruptionBudget> =
        Api::namespaced(children.client.clone(), &children.namespace);
    match (&desired.pdb, &observed.pdb) {
        (Some(pdb), observed_pdb) => children.ensure(pdb, observed_pdb.as_ref()).await?,
        (None, Some(existing)) => {
            delete(
                &pdbs,
                &existing.name_any(),
                "deleting the PodDisruptionBudget",
            )
            .await?;
        }
        (None, None) => {}
    }
    // Monitoring turned off: remove the queries ConfigMap if it is this Cluster's.
    if let (None, Some(existing)) = (
        &desired.monitoring.config_map,
        &observed.monitoring_config_map,
    ) {
        let owned = existing
            .owner_references()
            .iter()
            .any(|owner| Some(&owner.uid) == uid.as_ref());
        if owned {
            let config_maps: Api<ConfigMap> =
                Api::namespaced(children.client.clone(), &children.namespace);
            delete(
                &config_maps,
                &existing.name_any(),
                "deleting the exporter queries ConfigMap",
            )
            .await?;
        }
    }
    Ok(())
}

async fn delete<K>(api: &Api<K>, name: &str, action: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Action {
            action: format!("{action} {name}"),
            source: Box::new(source),
        }),
    }
}

/// Patches the PVCs to expand (their StorageClass allows it), one event each.
async fn apply_storage(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<(), Error> {
    if desired.problem.is_some() {
        return Ok(());
    }
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(state.runtime.client.clone(), &namespace(cluster));
    for expansion in &desired.storage.expansions {
        if !crate::storage::expansion_allowed(expansion, &observed.storage_classes) {
            continue;
        }
        let patch = serde_json::json!({
            "spec": {"resources": {"requests": {"storage": expansion.to.0}}}
        });
        claims
            .patch(
                &expansion.claim,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::Action {
                action: format!("expanding {}", expansion.claim),
                source: Box::new(source),
            })?;
        publish(
            state,
            cluster,
            EventType::Normal,
            "StorageExpanded",
            expansion.describe(),
        )
        .await;
    }
    Ok(())
}

/// SQL on the instances: reload those whose TLS files were renewed, and keep the monitoring
/// role on the primary.
async fn apply_instance_sql(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<(), Error> {
    if desired.problem.is_some() {
        return Ok(());
    }
    let sql_error = |instance: &str| {
        let instance = instance.to_owned();
        move |error: tokio_postgres::Error| Error::Postgres {
            instance: instance.clone(),
            message: error.to_string(),
        }
    };
    let mut reloaded = Vec::new();
    for session in observed
        .instances_sql
        .values()
        .filter(|s| s.certificates_changed)
    {
        crate::instance_sql::reload(&session.client)
            .await
            .map_err(sql_error(&session.instance))?;
        reloaded.push(session.instance.clone());
    }
    if !reloaded.is_empty() {
        publish(
            state,
            cluster,
            EventType::Normal,
            "CertificateReloaded",
            format!(
                "reloaded PostgreSQL on {} to serve the renewed TLS certificate",
                reloaded.join(", ")
            ),
        )
        .await;
    }
    let primary = desired
        .status
        .current_primary
        .as_ref()
        .filter(|_| desired.status.ready_instances > 0)
        .and_then(|primary| observed.instances_sql.get(primary));
    if let (true, Some(session), Some(password)) = (
        cluster.spec.monitoring.enabled,
        primary,
        crate::monitor_role::monitor_password(cluster, &observed.secrets),
    ) && crate::monitor_role::ensure_role(&session.client, &password)
        .await
        .map_err(sql_error(&session.instance))?
    {
        publish(
            state,
            cluster,
            EventType::Normal,
            "MonitoringRoleUpdated",
            format!(
                "created or repaired the role {} for the metrics exporter",
                tusk_api::user::MONITORING_ROLE
            ),
        )
        .await;
    }
    Ok(())
}

/// Sends the dynamic configuration change to Patroni; true when one was sent.
async fn apply_config_change(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<bool, Error> {
    let Some(change) = &desired.config_change else {
        return Ok(false);
    };
    let credentials = crate::secrets::patroni_api_credentials(cluster, &observed.secrets).ok_or(
        Error::PatroniApi {
            instance: cluster_name(cluster),
            message: "the REST API credentials Secret is not there yet".to_owned(),
        },
    )?;
    let mut last_error = "no ready instance to ask".to_owned();
    for pod in observed.pods.values().filter(|p| pod_ready(p)) {
        let Some(addr) = patroni_addr(pod) else {
            continue;
        };
        match patroni_api::patch_config(addr, &credentials, &change.patch).await {
            Ok(()) => {
                publish(
                    state,
                    cluster,
                    EventType::Normal,
                    "ConfigurationChanged",
                    format!("Patroni configuration updated: {}", change.summary()),
                )
                .await;
                return Ok(true);
            }
            Err(error) => last_error = error,
        }
    }
    Err(Error::PatroniApi {
        instance: cluster_name(cluster),
        message: last_error,
    })
}

async fn take_step(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<(), Error> {
    if desired.problem.is_some() {
        return Ok(());
    }
    let client = state.runtime.client.clone();
    let ns = namespace(cluster);
    let name = cluster_name(cluster);
    let requested = match &desired.rollout.switchover_request {
        None => false,
        Some(handling) => {
            if !claim_switchover_request(cluster, state).await? {
                // Another pass took it already (this one saw an older copy of the Cluster).
                return Ok(());
            }
            if let RequestHandling::Settle(why) = handling {
                publish(
                    state,
                    cluster,
                    EventType::Normal,
                    "SwitchoverRequestCleared",
                    format!("{}: {why}", switchover_request_text(cluster)),
                )
                .await;
            }
            matches!(handling, RequestHandling::CarryOut)
        }
    };
    match &desired.rollout.step {
        Step::Idle | Step::Wait { .. } => Ok(()),
        Step::RestartPod { ordinal, reason } => {
            let instance = names::instance(&name, *ordinal);
            let Some(pod) = instance_pod(observed, &instance) else {
                return Ok(());
            };
            delete(
                &Api::<Pod>::namespaced(client, &ns),
                &pod.name_any(),
                "restarting pod",
            )
            .await?;
            publish(
                state,
                cluster,
                EventType::Normal,
                "RollingUpdate",
                format!("restarted {instance}: {reason}"),
            )
            .await;
            Ok(())
        }
        Step::RestartPostgres { ordinal, reason } => {
            let instance = names::instance(&name, *ordinal);
            let Some((_, addr, credentials)) = patroni_endpoint(cluster, observed, &instance)?
            else {
                return Ok(());
            };
            patroni_api::restart(addr, &credentials)
                .await
                .map_err(|message| Error::PatroniApi {
                    instance: instance.clone(),
                    message,
                })?;
            publish(
                state,
                cluster,
                EventType::Normal,
                "RollingUpdate",
                format!("restarted PostgreSQL of {instance}: {reason}"),
            )
            .await;
            Ok(())
        }
        Step::RemoveInstance { ordinal } => {
            let instance = names::instance(&name, *ordinal);
            delete(
                &Api::<StatefulSet>::namespaced(client, &ns),
                &instance,
                "removing instance",
            )
            .await?;
            publish(
                state,
                cluster,
                EventType::Normal,
                "ScaledDown",
                format!("removed instance {instance}; its volume is kept"),
            )
            .await;
            Ok(())
        }
        Step::Switchover { from, to, reason } => {
            let leader = names::instance(&name, *from);
            let candidate = names::instance(&name, *to);
            let outcome = match patroni_endpoint(cluster, observed, &leader) {
                Ok(Some((leader_pod, addr, credentials))) => {
                    let candidate_pod = instance_pod(observed, &candidate)
                        .map_or_else(|| names::statefulset_pod(&candidate), |p| p.name_any());
                    patroni_api::switchover(
                        addr,
                        &credentials,
                        &leader_pod.name_any(),
                        &candidate_pod,
                    )
                    .await
                }
                Ok(None) => Err(format!("the pod of {leader} is gone")),
                Err(error) => Err(error.to_string()),
            };
            match outcome {
                Ok(()) => {
                    // The planner's reason for a request only repeats that it was requested.
                    let why = if requested {
                        switchover_request_text(cluster)
                    } else {
                        reason.clone()
                    };
                    publish(
                        state,
                        cluster,
                        EventType::Normal,
                        "Switchover",
                        format!("switched over from {leader} to {candidate}: {why}"),
                    )
                    .await;
                    Ok(())
                }
                // A request is tried once: the annotation is already gone, so say so rather
                // than retrying behind the user's back.
                Err(message) if requested => {
                    publish(
                        state,
                        cluster,
                        EventType::Warning,
                        "SwitchoverFailed",
                        format!(
                            "switchover from {leader} to {candidate} ({}) failed: {message}; the request is cleared, set the annotation again to retry",
                            switchover_request_text(cluster)
                        ),
                    )
                    .await;
                    Ok(())
                }
                Err(message) => Err(Error::PatroniApi {
                    instance: leader.clone(),
                    message,
                }),
            }
        }
    }
}

/// `tusk.dev/switchover=<value>`, as the user wrote it, for events.
fn switchover_request_text(cluster: &Cluster) -> String {
    let value = cluster
        .annotations()
        .get(labels::SWITCHOVER_ANNOTATION)
        .map_or("", |v| v.trim());
    format!("requested with {}={value}", labels::SWITCHOVER_ANNOTATION)
}

/// Takes the `tusk.dev/switchover` annotation away before the request is acted on, so it is
/// acted on once. The patch carries the resourceVersion this pass read: when the Cluster
/// changed since (another pass already took the request and this one started from an older
/// copy in the watch cache), the API server answers 409 and this returns `false`.
async fn claim_switchover_request(cluster: &Cluster, state: &State) -> Result<bool, Error> {
    let api: Api<Cluster> = Api::namespaced(state.runtime.client.clone(), &namespace(cluster));
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": cluster.resource_version(),
        "annotations": {labels::SWITCHOVER_ANNOTATION: null},
    }});
    match api
        .patch(
            &cluster.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(Error::Action {
            action: "clearing the switchover request".to_owned(),
            source: Box::new(source),
        }),
    }
}

async fn publish(state: &State, cluster: &Cluster, type_: EventType, reason: &str, note: String) {
    tusk_runtime::events::publish(&state.runtime.recorder, cluster, type_, reason, &note).await;
}

/// Events for what a person wants in `kubectl describe`: a primary change that tusk did not
/// ask for (a failover) and the Cluster becoming Ready.
async fn publish_backup_event(state: &State, cluster: &Cluster, event: crate::backup::BackupEvent) {
    let type_ = if event.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    publish(state, cluster, type_, event.reason, event.note).await;
}

async fn publish_transitions(cluster: &Cluster, state: &State, status: &tusk_api::ClusterStatus) {
    let previous = cluster.status.as_ref();
    for event in crate::backup::transitions(previous, status) {
        publish_backup_event(state, cluster, event).await;
    }
    let before = previous.and_then(|s| s.current_primary.clone());
    if let (Some(before), Some(after)) = (&before, &status.current_primary)
        && before != after
    {
        publish(
            state,
            cluster,
            EventType::Warning,
            "PrimaryChanged",
            format!("the primary moved from {before} to {after}"),
        )
        .await;
    }
    let ready_reason = |s: &tusk_api::ClusterStatus| {
        tusk_api::condition::find_condition(&s.conditions, tusk_api::condition::types::READY)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some((reason, message)) = ready_reason(status)
        && reason == reasons::BOOTSTRAP_FAILED
        && previous.and_then(ready_reason).map(|(r, _)| r) != Some(reason)
    {
        publish(
            state,
            cluster,
            EventType::Warning,
            "BootstrapFailed",
            message,
        )
        .await;
    }
    let was_ready = previous.is_some_and(status::is_ready);
    if !was_ready && status::is_ready(status) {
        publish(
            state,
            cluster,
            EventType::Normal,
            "Ready",
            "every instance is ready".to_owned(),
        )
        .await;
    }
}

#[cfg(test)]
mod config_change_tests {
    use super::*;

    fn cluster(parameters: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: db}}\nspec:\n  postgresVersion: 17\n  instances: 3\n  storage: {{size: 1Gi}}\n  postgresql: {{parameters: {parameters}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_dcs_in_step_needs_no_change_and_a_change_names_what_restarts() {
        let before = cluster("{work_mem: 8MB}");
        let dcs = serde_json::to_value(crate::patroni::dynamic_config(&before).unwrap()).unwrap();
        assert_eq!(config_change(&before, &dcs).unwrap(), None);

        let mut after = cluster("{work_mem: 16MB, shared_buffers: 1GB}");
        after.spec.high_availability.ttl_seconds += 10;
        let change = config_change(&after, &dcs).unwrap().unwrap();
        assert_eq!(change.parameters.changed, ["shared_buffers", "work_mem"]);
        assert_eq!(change.parameters.restart, ["shared_buffers"]);
        assert_eq!(
            change.summary(),
            "reloaded work_mem; shared_buffers need a restart (instances restart one at a time, replicas first); updated ttl"
        );
    }
}
