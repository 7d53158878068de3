//! One pass over a Cluster, as a pipeline: each step is a module of its own.
//!
//! ```text
//!  observe::observe ──► Observed    (API objects; crashed containers' logs; Patroni REST; SQL)
//!        │  observe::storage_classes   only the classes plan::storage_classes_to_check names
//!        ▼
//!  plan::plan ──► DesiredState      (pure: children, Secrets/TLS, Patroni config, rollout step,
//!        │                            storage, pgBackRest side, status; a SpecProblem stops all)
//!        ▼
//!  apply::apply_children            (server-side apply, unchanged objects skipped)
//!  apply::apply_config_change       (Patroni PATCH /config)
//!  apply::apply_storage             (PVC expansions)
//!  apply::apply_instance_sql        (TLS reload, monitoring role)
//!  apply::step::take_step           (at most one disruptive step: restart, remove, switchover)
//!        ▼
//!  status: apply::ensure_status, then apply::events::publish_transitions
//! ```
//!
//! A steady-state pass writes nothing: every apply compares with what was observed.
use crate::apply::events::publish_transitions;
use crate::apply::step::take_step;
use crate::apply::{apply_children, apply_config_change, apply_instance_sql, apply_storage};
use crate::error::Error;
use crate::observe::{self};
use crate::plan::rollout::Step;
use crate::plan::{self, DesiredState};
use crate::shared::State;
use crate::shared::meta::namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tusk_api::Cluster;
use tusk_runtime::apply::{self};

/// How soon to look again while a rollout step is in flight.
const IN_FLIGHT_REQUEUE: Duration = Duration::from_secs(10);

pub async fn reconcile(cluster: Arc<Cluster>, state: Arc<State>) -> Result<Action, Error> {
    let _timer = state.runtime.metrics.reconcile_timer();
    let client = &state.runtime.client;
    let mut observed = observe::observe(&cluster, client, state.patroni_api).await?;
    let classes = plan::storage_classes_to_check(&cluster, &observed);
    observed.storage_classes = observe::storage_classes(client, classes).await;
    let now = Time(jiff::Timestamp::now());
    let desired = plan::plan(&cluster, &observed, &state.images, now.clone())?;
    apply_children(&cluster, &state, &observed, &desired).await?;
    let config_changed = apply_config_change(&cluster, &state, &observed, &desired).await?;
    apply_storage(&cluster, &state, &observed, &desired).await?;
    // SQL trouble on one instance must not keep the status from being written: reported after.
    let instance_sql = apply_instance_sql(&cluster, &state, &observed, &desired).await;
    take_step(&cluster, &state, &observed, &desired).await?;
    write_status(&cluster, &state, &desired.status).await?;
    publish_transitions(&cluster, &state, &desired.status).await;
    instance_sql?;
    Ok(next_pass(&cluster, &state, &desired, config_changed))
}

/// The status through the status subresource, only when it differs.
async fn write_status(
    cluster: &Cluster,
    state: &State,
    status: &tusk_api::ClusterStatus,
) -> Result<(), Error> {
    let api: Api<Cluster> = Api::namespaced(state.runtime.client.clone(), &namespace(cluster));
    apply::ensure_status(
        &api,
        state.runtime.field_manager(),
        &cluster.name_any(),
        status,
        cluster.status.as_ref(),
    )
    .await?;
    Ok(())
}

/// When to look again: on the steady interval, or soon while a step is in flight.
fn next_pass(
    cluster: &Cluster,
    state: &State,
    desired: &DesiredState,
    config_changed: bool,
) -> Action {
    // A success either way (metrics, backoff reset); a step in flight is looked at again soon.
    let steady = state.runtime.requeue(cluster);
    // A restore source that does not exist yet raises no event here when it appears.
    let waiting_for_source = desired
        .problem
        .as_ref()
        .is_some_and(|p| p.reason == crate::plan::pgbackrest::WAITING_FOR_SOURCE);
    match desired.rollout.step {
        _ if waiting_for_source => Action::requeue(IN_FLIGHT_REQUEUE),
        // After a configuration change, look again soon for `pending_restart`.
        Step::Idle if !config_changed => steady,
        _ => Action::requeue(IN_FLIGHT_REQUEUE),
    }
}
