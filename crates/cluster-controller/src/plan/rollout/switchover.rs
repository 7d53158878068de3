//! Switchovers: the one asked for with the `tusk.dev/switchover` annotation, and the choice
//! of the replica any switchover goes to.

use std::collections::BTreeSet;

use super::model::{Desired, ObservedInstance, RequestHandling, Step, SwitchoverRequest};
use super::waiting::{in_flight, join};
use crate::observe::Role;

/// The step for a requested switchover, and what becomes of the request: settled when it
/// cannot or need not be carried out, kept while the planner waits, carried out once a target
/// is ready.
pub(super) fn plan_requested_switchover(
    desired: &Desired,
    observed: &[ObservedInstance],
    wanted: &BTreeSet<u32>,
    primary: Option<u32>,
    request: SwitchoverRequest,
) -> (Step, Option<RequestHandling>) {
    let Some(primary) = primary else {
        return (
            Step::Wait {
                reason: "switchover requested: waiting for a primary".to_owned(),
            },
            None,
        );
    };
    if let Some(why) = needless_or_impossible(request, primary, wanted) {
        return (Step::Idle, Some(RequestHandling::Settle(why)));
    }
    if let Some(reason) = in_flight(observed, wanted) {
        return (
            Step::Wait {
                reason: format!("switchover requested: {reason}"),
            },
            None,
        );
    }
    let target = match request {
        SwitchoverRequest::Any => healthiest_replica(desired, observed, wanted, false),
        SwitchoverRequest::To(target) => {
            healthiest_replica(desired, observed, &BTreeSet::from([target]), false)
        }
    };
    match target {
        Some(to) => (
            Step::Switchover {
                from: primary,
                to,
                reason: "requested with the tusk.dev/switchover annotation".to_owned(),
            },
            Some(RequestHandling::CarryOut),
        ),
        None => (
            Step::Wait {
                reason: "switchover requested: waiting for a ready, caught-up replica".to_owned(),
            },
            None,
        ),
    }
}

/// Why a request is settled without a switchover: it names the primary or no instance, or
/// there is no replica at all.
fn needless_or_impossible(
    request: SwitchoverRequest,
    primary: u32,
    wanted: &BTreeSet<u32>,
) -> Option<String> {
    match request {
        SwitchoverRequest::To(target) if target == primary => {
            Some(format!("instance {target} is already the primary"))
        }
        SwitchoverRequest::To(target) if !wanted.contains(&target) => Some(format!(
            "the Cluster has no such instance (it has {}); switchover not done",
            join(&wanted.iter().copied().collect::<Vec<_>>())
        )),
        SwitchoverRequest::Any if wanted.iter().all(|o| *o == primary) => Some(
            "there is no replica to switch over to (spec.instances is 1); switchover not done"
                .to_owned(),
        ),
        _ => None,
    }
}

/// The ready, caught-up replica with the least lag (lowest ordinal on ties), optionally only
/// among those already running the desired template (`updated_only`). In synchronous mode only synchronous standbys
/// qualify: Patroni refuses a switchover to any other replica.
pub(super) fn healthiest_replica(
    desired: &Desired,
    observed: &[ObservedInstance],
    wanted: &BTreeSet<u32>,
    updated_only: bool,
) -> Option<u32> {
    observed
        .iter()
        .filter(|i| wanted.contains(&i.ordinal))
        .filter_map(|i| i.pod.as_ref().map(|p| (i.ordinal, p)))
        .filter(|(_, p)| p.role == Role::Replica && p.ready && !p.terminating)
        .filter(|(_, p)| p.lag_bytes.is_none_or(|lag| lag <= desired.max_lag_bytes))
        .filter(|(ordinal, p)| {
            !updated_only || (desired.pod_is_current(*ordinal, p) && !p.pending_restart)
        })
        .filter(|(_, p)| p.sync_standby || !desired.synchronous)
        .min_by_key(|(ordinal, p)| (p.lag_bytes.unwrap_or(0), *ordinal))
        .map(|(ordinal, _)| ordinal)
}
