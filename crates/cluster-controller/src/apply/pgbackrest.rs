//! Applies pgBackRest's children: the ConfigMap, the repository host and the stanza Job.

use crate::error::Error;
use crate::observe::backup::ObservedBackup;
use crate::plan::pgbackrest::archiving::event;
use crate::plan::pgbackrest::{BackupEvent, DesiredBackup, REPO_CLAIM, StanzaAction};
use crate::shared::meta::namespace;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use tusk_api::Cluster;
use tusk_runtime::apply::{self};

/// Applies this module's children: the ConfigMap (before the instances, which mount it), the
/// repository host and its Service, and the stanza Job. Returns events to publish.
pub async fn apply_children(
    cluster: &Cluster,
    client: &kube::Client,
    manager: &'static str,
    observed: &ObservedBackup,
    desired: &DesiredBackup,
) -> Result<Vec<BackupEvent>, Error> {
    let ns = namespace(cluster);
    let mut events = Vec::new();
    ensure_or_delete(
        &Api::<ConfigMap>::namespaced(client.clone(), &ns),
        manager,
        cluster,
        desired.config_map.as_ref(),
        observed.config_map.as_ref(),
        "deleting the pgBackRest ConfigMap",
    )
    .await?;
    ensure_or_delete(
        &Api::<Service>::namespaced(client.clone(), &ns),
        manager,
        cluster,
        desired.repo_host_service.as_ref(),
        observed.repo_host_service.as_ref(),
        "deleting the repository host Service",
    )
    .await?;
    let removed_repo_host = ensure_or_delete(
        &Api::<StatefulSet>::namespaced(client.clone(), &ns),
        manager,
        cluster,
        desired.repo_host.as_ref(),
        observed.repo_host.as_ref(),
        "deleting the repository host",
    )
    .await?;
    if let Some(repo_host) = removed_repo_host {
        events.push(event(false,
            "RepositoryHostRemoved",
            format!(
                "no volume repository left: removed the repository host; its volume {REPO_CLAIM}-{repo_host}-0 is kept"
            ),
        ));
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    events.extend(apply_stanza_job(&jobs, manager, cluster, observed, &desired.stanza).await?);
    Ok(events)
}

/// Whether the Cluster owns the object: one it did not create is never deleted.
fn owned_by(cluster: &Cluster, meta: &ObjectMeta) -> bool {
    let uid = cluster.uid();
    meta.owner_references
        .iter()
        .flatten()
        .any(|owner| Some(&owner.uid) == uid.as_ref())
}

/// Applies `desired`, or deletes `seen` when nothing is desired and the Cluster owns it.
/// Returns the name of what it deleted.
async fn ensure_or_delete<K>(
    api: &Api<K>,
    manager: &str,
    cluster: &Cluster,
    desired: Option<&K>,
    seen: Option<&K>,
    delete_action: &str,
) -> Result<Option<String>, Error>
where
    K: kube::Resource<DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    match (desired, seen) {
        (Some(object), seen) => {
            apply::ensure(api, manager, object.clone(), seen).await?;
            Ok(None)
        }
        (None, Some(seen)) if owned_by(cluster, seen.meta()) => {
            let name = seen.name_any();
            delete(api, &name, delete_action).await?;
            Ok(Some(name))
        }
        (None, _) => Ok(None),
    }
}

/// Creates the stanza Job, or deletes the Cluster's Job so that the next pass creates a new one.
async fn apply_stanza_job(
    jobs: &Api<Job>,
    manager: &str,
    cluster: &Cluster,
    observed: &ObservedBackup,
    action: &StanzaAction,
) -> Result<Option<BackupEvent>, Error> {
    match action {
        StanzaAction::Keep => Ok(None),
        StanzaAction::Create(job) => {
            apply::ensure(jobs, manager, job.as_ref().clone(), None).await?;
            Ok(Some(event(
                false,
                "StanzaJobCreated",
                format!("Job {} creates the pgBackRest stanza", job.name_any()),
            )))
        }
        StanzaAction::Delete(reason) => {
            let Some(job) = observed
                .stanza_job
                .as_ref()
                .filter(|job| owned_by(cluster, &job.metadata))
            else {
                return Ok(None);
            };
            delete_with(
                jobs,
                &job.name_any(),
                "deleting the stanza Job",
                &DeleteParams {
                    // Its pods go with it.
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                },
            )
            .await?;
            Ok(Some(event(false, "StanzaJobReplaced", reason.clone())))
        }
    }
}

pub(crate) async fn delete<K>(api: &Api<K>, name: &str, action: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    delete_with(api, name, action, &DeleteParams::default()).await
}

pub(crate) async fn delete_with<K>(
    api: &Api<K>,
    name: &str,
    action: &str,
    params: &DeleteParams,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Action {
            action: format!("{action} {name}"),
            source: Box::new(source),
        }),
    }
}
