//! Apply: every write of a pass.

pub mod events;
pub mod pgbackrest;
pub mod step;

use crate::apply::events::{publish, publish_backup_event};
use crate::error::Error;
use crate::observe::patroni_api;
use crate::observe::{Observed, patroni_addr, pod_ready};
use crate::plan::DesiredState;
use crate::shared::State;
use crate::shared::meta::{cluster_name, namespace};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DeleteParams;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tusk_api::Cluster;
use tusk_runtime::apply::{self};

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

/// Applies every child in dependency order (what a pod mounts before the StatefulSets), then
/// removes what the spec no longer wants. Nothing is applied while the spec has a problem.
pub(crate) async fn apply_children(
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
    // Before the StatefulSets: instance pods mount the pgBackRest ConfigMap and the queries.
    let backup_events = Box::pin(pgbackrest::apply_children(
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
    apply_monitoring_queries(cluster, state, &children, observed, desired).await?;
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
    apply_optional_children(cluster, &children, observed, desired).await
}

/// The exporter queries ConfigMap; a warning about the user's queries is said once per
/// change of the file, not on every pass.
async fn apply_monitoring_queries(
    cluster: &Cluster,
    state: &State,
    children: &Children,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<(), Error> {
    let Some(queries) = &desired.monitoring.config_map else {
        return Ok(());
    };
    let api = Api::namespaced(children.client.clone(), &children.namespace);
    let outcome = apply::ensure(
        &api,
        children.manager,
        queries.clone(),
        observed.monitoring_config_map.as_ref(),
    )
    .await?;
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
    Ok(())
}

/// The children the spec may or may not want: retired Secrets are deleted, the
/// PodDisruptionBudget is applied or deleted, the queries ConfigMap is deleted once monitoring
/// is off. Only objects this Cluster owns are deleted.
async fn apply_optional_children(
    cluster: &Cluster,
    children: &Children,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<(), Error> {
    let uid = cluster.uid();
    let owned =
        |owners: &[OwnerReference]| owners.iter().any(|owner| Some(&owner.uid) == uid.as_ref());
    let secrets: Api<Secret> = Api::namespaced(children.client.clone(), &children.namespace);
    for retired in &desired.retired_secrets {
        if observed
            .secrets
            .get(retired)
            .is_some_and(|secret| owned(secret.owner_references()))
        {
            delete(&secrets, retired, "deleting the retired Secret").await?;
        }
    }
    match (&desired.pdb, &observed.pdb) {
        (Some(pdb), observed_pdb) => children.ensure(pdb, observed_pdb.as_ref()).await?,
        (None, Some(existing)) => {
            let pdbs: Api<PodDisruptionBudget> =
                Api::namespaced(children.client.clone(), &children.namespace);
            delete(
                &pdbs,
                &existing.name_any(),
                "deleting the PodDisruptionBudget",
            )
            .await?;
        }
        (None, None) => {}
    }
    if let (None, Some(existing)) = (
        &desired.monitoring.config_map,
        &observed.monitoring_config_map,
    ) && owned(existing.owner_references())
    {
        let config_maps: Api<ConfigMap> =
            Api::namespaced(children.client.clone(), &children.namespace);
        delete(
            &config_maps,
            &existing.name_any(),
            "deleting the exporter queries ConfigMap",
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn delete<K>(api: &Api<K>, name: &str, action: &str) -> Result<(), Error>
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
pub(crate) async fn apply_storage(
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
        if !crate::plan::storage::expansion_allowed(expansion, &observed.storage_classes) {
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
pub(crate) async fn apply_instance_sql(
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
        crate::observe::instance_sql::reload(&session.client)
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
        crate::plan::monitor_role::monitor_password(cluster, &observed.secrets),
    ) && crate::plan::monitor_role::ensure_role(&session.client, &password)
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
pub(crate) async fn apply_config_change(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<bool, Error> {
    let Some(change) = &desired.config_change else {
        return Ok(false);
    };
    let credentials = crate::plan::secrets::patroni_api_credentials(cluster, &observed.secrets)
        .ok_or(Error::PatroniApi {
            instance: cluster_name(cluster),
            message: "the REST API credentials Secret is not there yet".to_owned(),
        })?;
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
