//! The order in which instances start, stop, restart and go away — decided purely from what
//! was observed, one step per reconcile.
//!
//! ```text
//!   shutdown:        stop replicas ──► (all replica pods gone) ──► stop the primary
//!   scale down:      primary among the removed? ──► switchover first
//!                    remove the highest-numbered replica, one at a time
//!   rolling update:  restart outdated replicas one at a time, each only when every other
//!                    instance is ready and caught up ──► switchover to the healthiest
//!                    updated replica ──► restart the old primary (now a replica)
//! ```
//!
//! An instance needs a restart when its pod was created from an older template (the restart
//! hash differs: the pod is deleted and recreated) or when Patroni reports `pending_restart`
//! (a parameter that only a restart applies changed in the DCS: Patroni restarts PostgreSQL
//! in place, `POST /restart`, and the pod stays). Both go through the same order. For a
//! pending restart the switchover usually ends it: Patroni's demotion restarts the old
//! primary with the new settings, so it is restarted again only if it still reports one.
//!
//! The planner never takes a step while another is in flight (a pod not ready, terminating,
//! or a replica lagging), so a slow or failing instance stops the rollout instead of
//! compounding it.
//!
//! Where each decision is made: `shutdown.rs` stops the instances; `scaling.rs` waits for new
//! instances and removes extra ones; `switchover.rs` carries out a requested switchover and
//! picks the replica any switchover goes to; `rolling_update.rs` restarts outdated instances
//! in order; `waiting.rs` says what is in flight. [`plan`] asks the first four in this order,
//! and the first that has something to do decides the step.

mod model;
mod rolling_update;
mod scaling;
mod shutdown;
mod switchover;
mod waiting;

use std::collections::BTreeSet;

use crate::observe::Role;

pub use model::{
    Desired, ObservedInstance, ObservedPod, Plan, RequestHandling, Step, SwitchoverRequest,
};
use rolling_update::rolling_update_step;
use scaling::{scale_down_step, waiting_for_new_instances};
use shutdown::plan_shutdown;
use switchover::plan_requested_switchover;

/// Decides the next step.
pub fn plan(desired: &Desired, observed: &[ObservedInstance]) -> Plan {
    let wanted: BTreeSet<u32> = (1..=desired.instances).collect();
    let existing: BTreeSet<u32> = observed
        .iter()
        .filter(|i| i.statefulset)
        .map(|i| i.ordinal)
        .collect();
    let primary = observed
        .iter()
        .find(|i| i.pod.as_ref().is_some_and(|p| p.role == Role::Primary));
    let primary_ordinal = primary.map(|p| p.ordinal);
    let mut instances: BTreeSet<u32> = wanted.union(&existing).copied().collect();

    if desired.shutdown {
        return plan_shutdown(observed, instances, primary_ordinal);
    }
    let (step, switchover_request) = if let Some(step) =
        scale_down_step(desired, observed, &wanted, &existing, primary_ordinal)
    {
        (step, None)
    } else if let Some(reason) = waiting_for_new_instances(observed, &wanted) {
        (Step::Wait { reason }, None)
    } else if let Some(request) = desired.switchover {
        plan_requested_switchover(desired, observed, &wanted, primary_ordinal, request)
    } else {
        (
            rolling_update_step(desired, observed, &wanted, primary),
            None,
        )
    };
    // The instance being removed is no longer one whose StatefulSet should exist.
    if let Step::RemoveInstance { ordinal } = step {
        instances.remove(&ordinal);
    }
    Plan {
        running: instances.clone(),
        instances,
        step,
        switchover_request,
    }
}

#[cfg(test)]
mod tests;
