//! The one disruptive step of a pass: restart a pod or PostgreSQL, remove an instance, or switch over.

use crate::apply::delete;
use crate::apply::events::publish;
use crate::error::Error;
use crate::observe::patroni_api;
use crate::observe::{Observed, instance_pod, patroni_addr};
use crate::plan::DesiredState;
use crate::plan::rollout::{RequestHandling, Step};
use crate::shared::State;
use crate::shared::meta::{cluster_name, namespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use std::net::SocketAddr;
use tusk_api::names::{self};
use tusk_api::{Cluster, labels};

pub(crate) async fn take_step(
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
        crate::plan::secrets::patroni_api_credentials(cluster, &observed.secrets),
    ) {
        (Some(addr), Some(credentials)) => Ok(Some((pod, addr, credentials))),
        _ => Err(Error::PatroniApi {
            instance: instance.to_owned(),
            message: "no pod IP or REST API credentials yet".to_owned(),
        }),
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
