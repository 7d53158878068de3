//! Observe: everything one pass reads, into one [`Observed`] value.

pub mod backup;
pub mod crash;
pub mod instance_sql;
pub mod patroni_api;

use crate::error::Error;
use crate::shared::meta::{cluster_name, namespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role as RbacRole, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use tusk_api::names::{self, PATRONI_PORT};
use tusk_api::{Cluster, labels};

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
    pub custom_queries: crate::observe::CustomQueries,
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
    pub instances_sql: BTreeMap<String, crate::observe::instance_sql::InstanceSession>,
    /// Bytes used per instance (from `instances_sql`), keyed by instance name.
    pub usage: BTreeMap<String, crate::observe::instance_sql::InstanceUsage>,
    /// Replay lag in milliseconds of each standby with a recent measurement, keyed by its
    /// Patroni member name (from the `instances_sql` of the instance it streams from).
    pub replay_lag: BTreeMap<String, i64>,
    /// PostgreSQL's system identifier, as the first instance that answered reported it.
    pub system_identifier: Option<String>,
    /// pgBackRest's children, the restore source and the primary's archiver (crate::plan::pgbackrest).
    pub backup: backup::ObservedBackup,
    /// Pods whose `postgres` container crashed, keyed by pod name, with the cause read from
    /// the previous run's log where it could be (crate::observe::crash).
    pub crashes: BTreeMap<String, crate::observe::crash::Crash>,
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

/// Reads everything a pass needs, in order: the Kubernetes objects, then what the running
/// instances say (crashed containers' logs, Patroni's REST API, SQL), then what backups need
/// from the primary. StorageClasses are read later, by [`storage_classes`], only when the
/// storage plan wants an expansion.
pub async fn observe(
    cluster: &Cluster,
    client: &kube::Client,
    patroni_api: bool,
) -> Result<Observed, Error> {
    let mut observed = read_objects(cluster, client).await?;
    observed.crashes = crashes(client, &namespace(cluster), &observed.pods).await;
    if patroni_api {
        read_instances(cluster, &mut observed).await;
    }
    let primary_sql = primary_session(cluster, &observed);
    // Boxed: the reconcile future stays small enough for a test thread's stack.
    observed.backup = Box::pin(backup::observe(cluster, client, primary_sql)).await?;
    Ok(observed)
}

/// Maps an API error to [`Error::Observe`] naming what was being read.
fn observe_error(what: &'static str) -> impl Fn(kube::Error) -> Error {
    move |source| Error::Observe {
        what,
        source: Box::new(source),
    }
}

/// The Cluster's children and pods as the API has them.
async fn read_objects(cluster: &Cluster, client: &kube::Client) -> Result<Observed, Error> {
    let ns = namespace(cluster);
    let name = cluster_name(cluster);
    let selector = format!("{}={}", labels::CLUSTER, name);
    let list = ListParams::default().labels(&selector);
    let mut pods = list_by_name::<Pod>(client, &ns, &list, "Pods").await?;
    // Job pods (stanza, backups, a PGUpgrade's) carry the Cluster's labels too, some even the
    // primary's instance label; only a pod an instance StatefulSet controls is an instance.
    pods.retain(|_, pod| names::pod_instance(&name, pod).is_some());
    let account = crate::shared::meta::patroni_account_name(cluster);
    let (monitoring_config_map, custom_queries) = read_monitoring(cluster, client).await?;
    Ok(Observed {
        statefulsets: list_by_name::<StatefulSet>(client, &ns, &list, "StatefulSets").await?,
        pods,
        secrets: read_secrets(cluster, client, &list).await?,
        services: list_by_name::<Service>(client, &ns, &list, "Services").await?,
        config_map: get_opt::<ConfigMap>(client, &ns, &names::patroni_config(&name), "ConfigMap")
            .await?,
        service_account: get_opt::<ServiceAccount>(client, &ns, &account, "ServiceAccount").await?,
        role: get_opt::<RbacRole>(client, &ns, &account, "Role").await?,
        role_binding: get_opt::<RoleBinding>(client, &ns, &account, "RoleBinding").await?,
        pdb: get_opt::<PodDisruptionBudget>(client, &ns, &name, "PodDisruptionBudget").await?,
        monitoring_config_map,
        custom_queries,
        claims: list_by_name::<PersistentVolumeClaim>(client, &ns, &list, "PersistentVolumeClaims")
            .await?,
        ..Observed::default()
    })
}

/// The Cluster's Secrets: those with its labels, and every Secret it uses by name too.
/// User-provided certificates carry no tusk labels, and a Secret whose labels were removed
/// must not look missing (a forced apply would replace its password or CA).
async fn read_secrets(
    cluster: &Cluster,
    client: &kube::Client,
    list: &ListParams,
) -> Result<BTreeMap<String, Secret>, Error> {
    let ns = namespace(cluster);
    let mut secrets = list_by_name::<Secret>(client, &ns, list, "Secrets").await?;
    let mut wanted = crate::shared::layout::observed_secret_names(cluster);
    if cluster.spec.monitoring.enabled {
        wanted.push(crate::shared::layout::monitor_secret(&cluster_name(
            cluster,
        )));
    }
    for secret_name in wanted {
        if secrets.contains_key(&secret_name) {
            continue;
        }
        if let Some(secret) = get_opt::<Secret>(client, &ns, &secret_name, "Secrets").await? {
            secrets.insert(secret_name, secret);
        }
    }
    Ok(secrets)
}

/// The exporter queries ConfigMap and the user's queries named by
/// `spec.monitoring.customQueries`.
async fn read_monitoring(
    cluster: &Cluster,
    client: &kube::Client,
) -> Result<(Option<ConfigMap>, CustomQueries), Error> {
    let ns = namespace(cluster);
    let queries = crate::shared::layout::monitoring_config_map(&cluster_name(cluster));
    let config_map = get_opt::<ConfigMap>(client, &ns, &queries, "ConfigMap").await?;
    let custom = match &cluster.spec.monitoring.custom_queries {
        Some(reference) if cluster.spec.monitoring.enabled => {
            get_opt::<ConfigMap>(client, &ns, &reference.name, "ConfigMap")
                .await?
                .and_then(|cm| cm.data?.remove(&reference.key))
                .map_or(CustomQueries::Missing, CustomQueries::Found)
        }
        _ => CustomQueries::NotRequested,
    };
    Ok((config_map, custom))
}

/// What the running instances say: Patroni's view and dynamic configuration, and each ready
/// instance's SQL session (volume usage, TLS state).
async fn read_instances(cluster: &Cluster, observed: &mut Observed) {
    observed.patroni = patroni_view(&observed.pods).await;
    if observed.patroni.is_some() {
        observed.patroni_config = patroni_config(&observed.pods).await;
    }
    observed.instances_sql = instance_sessions(cluster, observed).await;
    observed.usage = observed
        .instances_sql
        .iter()
        .filter_map(|(instance, session)| Some((instance.clone(), session.usage?)))
        .collect();
    let sessions = observed.instances_sql.values();
    observed.replay_lag = sessions
        .clone()
        .flat_map(|session| &session.standbys)
        .filter_map(|(standby, lag)| Some((standby.clone(), (*lag)?)))
        .collect();
    observed.system_identifier = sessions
        .filter_map(|session| session.system_identifier.clone())
        .next();
}

/// The ready primary's SQL session opened by [`read_instances`], for the archiver and
/// recovery queries; only once the Cluster has been Ready.
fn primary_session(cluster: &Cluster, observed: &Observed) -> Option<Arc<tokio_postgres::Client>> {
    let was_ready = cluster
        .status
        .as_ref()
        .is_some_and(|s| tusk_api::condition::is_ready(&s.conditions, None));
    let name = cluster_name(cluster);
    observed
        .pods
        .values()
        .filter(|pod| pod_role(pod) == Role::Primary && pod_ready(pod))
        .find_map(|pod| {
            let instance = names::pod_instance(&name, pod)?;
            Some(observed.instances_sql.get(instance)?.client.clone())
        })
        .filter(|_| was_ready)
}

/// `allowVolumeExpansion` of each StorageClass in `classes`; a class that does not exist
/// counts as not expandable, one that cannot be read (RBAC) is left out, and then no
/// expansion is sent and the condition says why.
pub async fn storage_classes(
    client: &kube::Client,
    classes: BTreeSet<String>,
) -> BTreeMap<String, bool> {
    let mut found = BTreeMap::new();
    for class in classes {
        match Api::<StorageClass>::all(client.clone())
            .get_opt(&class)
            .await
        {
            Ok(Some(storage_class)) => {
                found.insert(class, storage_class.allow_volume_expansion == Some(true));
            }
            Ok(None) => {
                found.insert(class, false);
            }
            Err(error) => tracing::debug!(%class, %error, "could not read the StorageClass"),
        }
    }
    found
}

/// One namespaced object by name, `None` when it does not exist.
async fn get_opt<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    what: &'static str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(observe_error(what))
}

/// The crashed `postgres` containers, each with the telling lines of its previous run's log
/// as cause. Only pods that crashed are read, so a healthy Cluster costs nothing; a log that
/// cannot be read leaves the termination message as the only source.
async fn crashes(
    client: &kube::Client,
    ns: &str,
    pods: &BTreeMap<String, Pod>,
) -> BTreeMap<String, crate::observe::crash::Crash> {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let mut crashes = BTreeMap::new();
    for (name, pod) in pods {
        let Some(mut crash) = crate::observe::crash::of_pod(pod) else {
            continue;
        };
        let params = kube::api::LogParams {
            container: Some(tusk_api::names::INSTANCE_CONTAINER.to_owned()),
            previous: true,
            tail_lines: Some(crate::observe::crash::LOG_TAIL_LINES),
            ..kube::api::LogParams::default()
        };
        match api.logs(name, &params).await {
            Ok(log) => {
                if let Some(cause) = crate::observe::crash::cause(&log) {
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
) -> BTreeMap<String, crate::observe::instance_sql::InstanceSession> {
    let targets: Vec<(String, tusk_runtime::postgres::PrimaryTarget)> = observed
        .pods
        .values()
        .filter(|pod| pod_ready(pod) && pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| {
            let instance = names::pod_instance(&cluster_name(cluster), pod)?.to_owned();
            let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            let target =
                crate::observe::instance_sql::instance_target(cluster, &observed.secrets, ip)?;
            Some((instance, target))
        })
        .collect();
    let sessions =
        futures::future::join_all(targets.into_iter().map(|(instance, target)| async move {
            let result =
                crate::observe::instance_sql::observe_instance(instance.clone(), &target).await;
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
pub(crate) fn instance_pod<'a>(observed: &'a Observed, instance: &str) -> Option<&'a Pod> {
    observed.pods.get(&names::statefulset_pod(instance))
}

pub(crate) fn patroni_addr(pod: &Pod) -> Option<SocketAddr> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    Some(SocketAddr::new(ip, PATRONI_PORT))
}

pub(crate) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

pub(crate) fn pod_role(pod: &Pod) -> Role {
    match pod.labels().get(labels::ROLE).map(String::as_str) {
        Some("master" | "primary") => Role::Primary,
        Some("replica") => Role::Replica,
        _ => Role::Unknown,
    }
}

/// What the controller found at `spec.monitoring.customQueries`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CustomQueries {
    /// The field is not set (or monitoring is off).
    #[default]
    NotRequested,
    /// The ConfigMap or its key does not exist.
    Missing,
    /// The key's text.
    Found(String),
}

/// Patroni's view of an instance, from the pod's role label and Patroni's REST API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    Unknown,
}
