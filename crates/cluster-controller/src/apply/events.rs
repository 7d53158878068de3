//! Events a person wants in `kubectl describe`.

use crate::plan::status::{self};
use crate::shared::State;
use kube::runtime::events::EventType;
use tusk_api::Cluster;
use tusk_api::cluster::reasons;

pub(crate) async fn publish(
    state: &State,
    cluster: &Cluster,
    type_: EventType,
    reason: &str,
    note: String,
) {
    tusk_runtime::events::publish(&state.runtime.recorder, cluster, type_, reason, &note).await;
}

/// Events for what a person wants in `kubectl describe`: a primary change that tusk did not
/// ask for (a failover) and the Cluster becoming Ready.
pub(crate) async fn publish_backup_event(
    state: &State,
    cluster: &Cluster,
    event: crate::plan::pgbackrest::BackupEvent,
) {
    let type_ = if event.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    publish(state, cluster, type_, event.reason, event.note).await;
}

pub(crate) async fn publish_transitions(
    cluster: &Cluster,
    state: &State,
    status: &tusk_api::ClusterStatus,
) {
    let previous = cluster.status.as_ref();
    for event in crate::plan::pgbackrest::transitions(previous, status) {
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
