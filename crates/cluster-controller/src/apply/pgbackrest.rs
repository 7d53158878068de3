//! Applies pgBackRest's children: the ConfigMap, the repository host and the stanza Job.

use crate::error::Error;
use crate::observe::backup::ObservedBackup;
use crate::plan::pgbackrest::archiving::event;
use crate::plan::pgbackrest::*;
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
    let uid = cluster.uid();
    let owned = |meta: &ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|owner| Some(&owner.uid) == uid.as_ref())
    };
    let mut events = Vec::new();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    match (&desired.config_map, &observed.config_map) {
        (Some(cm), seen) => {
            apply::ensure(&config_maps, manager, cm.clone(), seen.as_ref()).await?;
        }
        (None, Some(seen)) if owned(&seen.metadata) => {
            delete(
                &config_maps,
                &seen.name_any(),
                "deleting the pgBackRest ConfigMap",
            )
            .await?;
        }
        (None, _) => {}
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    match (&desired.repo_host_service, &observed.repo_host_service) {
        (Some(svc), seen) => {
            apply::ensure(&services, manager, svc.clone(), seen.as_ref()).await?;
        }
        (None, Some(seen)) if owned(&seen.metadata) => {
            delete(
                &services,
                &seen.name_any(),
                "deleting the repository host Service",
            )
            .await?;
        }
        (None, _) => {}
    }
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    match (&desired.repo_host, &observed.repo_host) {
        (Some(sts), seen) => {
            apply::ensure(&statefulsets, manager, sts.clone(), seen.as_ref()).await?;
        }
        (None, Some(seen)) if owned(&seen.metadata) => {
            delete(
                &statefulsets,
                &seen.name_any(),
                "deleting the repository host",
            )
            .await?;
            events.push(event(false,
                "RepositoryHostRemoved",
                format!(
                    "no volume repository left: removed the repository host; its volume {REPO_CLAIM}-{}-0 is kept",
                    seen.name_any()
                ),
            ));
        }
        (None, _) => {}
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    match &desired.stanza {
        StanzaAction::Keep => {}
        StanzaAction::Create(job) => {
            apply::ensure(&jobs, manager, job.as_ref().clone(), None).await?;
            events.push(event(
                false,
                "StanzaJobCreated",
                format!("Job {} creates the pgBackRest stanza", job.name_any()),
            ));
        }
        StanzaAction::Delete(reason) => {
            if let Some(job) = &observed.stanza_job
                && owned(&job.metadata)
            {
                delete_with(
                    &jobs,
                    &job.name_any(),
                    "deleting the stanza Job",
                    &DeleteParams {
                        // Its pods go with it.
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    },
                )
                .await?;
                events.push(event(false, "StanzaJobReplaced", reason.clone()));
            }
        }
    }
    Ok(events)
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
