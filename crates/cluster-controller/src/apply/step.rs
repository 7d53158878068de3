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

/// Settles a `tusk.dev/switchover` request, then takes the step the rollout planner chose.
pub(crate) async fn take_step(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    desired: &DesiredState,
) -> Result<(), Error> {
    if desired.problem.is_some() {
        return Ok(());
    }
    let Some(requested) = settle_request(cluster, state, desired).await? else {
        // Another pass took the request already (this one saw an older copy of the Cluster).
        return Ok(());
    };
    let name = cluster_name(cluster);
    match &desired.rollout.step {
        Step::Idle | Step::Wait { .. } => Ok(()),
        Step::RestartPod { ordinal, reason } => {
            restart_pod(
                cluster,
                state,
                observed,
                &names::instance(&name, *ordinal),
                reason,
            )
            .await
        }
        Step::RestartPostgres { ordinal, reason } => {
            let instance = names::instance(&name, *ordinal);
            restart_postgres(cluster, state, observed, &instance, reason).await
        }
        Step::RemoveInstance { ordinal } => {
            remove_instance(cluster, state, &names::instance(&name, *ordinal)).await
        }
        Step::Switchover { from, to, reason } => {
            let leader = names::instance(&name, *from);
            let candidate = names::instance(&name, *to);
            let why = if requested {
                // The planner's reason for a request only repeats that it was requested.
                switchover_request_text(cluster)
            } else {
                reason.clone()
            };
            switch_over(
                cluster,
                state,
                observed,
                (&leader, &candidate),
                &why,
                requested,
            )
            .await
        }
    }
}

/// Claims a pending switchover request (see [`claim_switchover_request`]) and says so when
/// the planner settled it without a switchover. `None` when another pass claimed it first;
/// otherwise whether this pass carries a request out.
async fn settle_request(
    cluster: &Cluster,
    state: &State,
    desired: &DesiredState,
) -> Result<Option<bool>, Error> {
    let Some(handling) = &desired.rollout.switchover_request else {
        return Ok(Some(false));
    };
    if !claim_switchover_request(cluster, state).await? {
        return Ok(None);
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
    Ok(Some(matches!(handling, RequestHandling::CarryOut)))
}

/// Deletes the instance's pod; its StatefulSet brings it back with the new template.
async fn restart_pod(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    instance: &str,
    reason: &str,
) -> Result<(), Error> {
    let Some(pod) = instance_pod(observed, instance) else {
        return Ok(());
    };
    let pods = Api::<Pod>::namespaced(state.runtime.client.clone(), &namespace(cluster));
    delete(&pods, &pod.name_any(), "restarting pod").await?;
    let note = format!("restarted {instance}: {reason}");
    publish(state, cluster, EventType::Normal, "RollingUpdate", note).await;
    Ok(())
}

/// Asks Patroni to restart PostgreSQL in place (a parameter that needs a restart).
async fn restart_postgres(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    instance: &str,
    reason: &str,
) -> Result<(), Error> {
    let Some((_, addr, credentials)) = patroni_endpoint(cluster, observed, instance)? else {
        return Ok(());
    };
    patroni_api::restart(addr, &credentials)
        .await
        .map_err(|message| Error::PatroniApi {
            instance: instance.to_owned(),
            message,
        })?;
    let note = format!("restarted PostgreSQL of {instance}: {reason}");
    publish(state, cluster, EventType::Normal, "RollingUpdate", note).await;
    Ok(())
}

/// Deletes the instance's StatefulSet; its claims stay (retention policy Retain).
async fn remove_instance(cluster: &Cluster, state: &State, instance: &str) -> Result<(), Error> {
    let statefulsets =
        Api::<StatefulSet>::namespaced(state.runtime.client.clone(), &namespace(cluster));
    delete(&statefulsets, instance, "removing instance").await?;
    let note = format!("removed instance {instance}; its volume is kept");
    publish(state, cluster, EventType::Normal, "ScaledDown", note).await;
    Ok(())
}

/// Asks the leader's Patroni to hand over to `candidate`. A requested switchover is tried
/// once: the annotation is already gone, so a failure is said in an event rather than retried
/// behind the user's back; a planned one (rollout) fails the pass and is retried.
async fn switch_over(
    cluster: &Cluster,
    state: &State,
    observed: &Observed,
    (leader, candidate): (&str, &str),
    why: &str,
    requested: bool,
) -> Result<(), Error> {
    let outcome = match patroni_endpoint(cluster, observed, leader) {
        Ok(Some((leader_pod, addr, credentials))) => {
            let candidate_pod = instance_pod(observed, candidate)
                .map_or_else(|| names::statefulset_pod(candidate), |p| p.name_any());
            patroni_api::switchover(addr, &credentials, &leader_pod.name_any(), &candidate_pod)
                .await
        }
        Ok(None) => Err(format!("the pod of {leader} is gone")),
        Err(error) => Err(error.to_string()),
    };
    match outcome {
        Ok(()) => {
            let note = format!("switched over from {leader} to {candidate}: {why}");
            publish(state, cluster, EventType::Normal, "Switchover", note).await;
            Ok(())
        }
        Err(message) if requested => {
            let note = format!(
                "switchover from {leader} to {candidate} ({}) failed: {message}; the request is cleared, set the annotation again to retry",
                switchover_request_text(cluster)
            );
            publish(state, cluster, EventType::Warning, "SwitchoverFailed", note).await;
            Ok(())
        }
        Err(message) => Err(Error::PatroniApi {
            instance: leader.to_owned(),
            message,
        }),
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
