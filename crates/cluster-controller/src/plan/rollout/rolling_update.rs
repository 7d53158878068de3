//! The rolling update: outdated replicas restart one at a time, highest ordinal first; then
//! the primary hands over to an updated replica and restarts as a replica itself.

use std::collections::BTreeSet;

use super::model::{Desired, ObservedInstance, ObservedPod, Step};
use super::switchover::healthiest_replica;
use super::waiting::in_flight;

/// The next rolling-update step, [`Step::Idle`] once every instance runs the desired
/// configuration.
pub(super) fn rolling_update_step(
    desired: &Desired,
    observed: &[ObservedInstance],
    wanted: &BTreeSet<u32>,
    primary: Option<&ObservedInstance>,
) -> Step {
    let primary_ordinal = primary.map(|p| p.ordinal);
    let outdated_replicas: Vec<&ObservedInstance> = observed
        .iter()
        .filter(|i| wanted.contains(&i.ordinal) && Some(i.ordinal) != primary_ordinal)
        .filter(|i| is_outdated(desired, i))
        .collect();
    let primary_outdated = primary.is_some_and(|p| is_outdated(desired, p));
    if outdated_replicas.is_empty() && !primary_outdated {
        return match in_flight(observed, wanted) {
            Some(reason) => Step::Wait { reason },
            None if primary.is_none() => no_primary_yet(),
            None => Step::Idle,
        };
    }
    if let Some(busy) = in_flight(observed, wanted) {
        return Step::Wait { reason: busy };
    }
    // Replicas first, highest ordinal first, one at a time.
    if let Some(replica) = outdated_replicas.iter().max_by_key(|i| i.ordinal) {
        return restart_step(
            desired,
            replica,
            format!("rolling update: restarting replica {}", replica.ordinal),
        );
    }
    match primary_ordinal {
        Some(primary) => update_primary_step(desired, observed, wanted, primary),
        None => no_primary_yet(),
    }
}

/// Every replica is updated: switch over to the healthiest updated one, so that the old
/// primary restarts as a replica.
fn update_primary_step(
    desired: &Desired,
    observed: &[ObservedInstance],
    wanted: &BTreeSet<u32>,
    primary: u32,
) -> Step {
    match healthiest_replica(desired, observed, wanted, true) {
        Some(to) => Step::Switchover {
            from: primary,
            to,
            reason: "rolling update: every replica is updated; switching over before restarting the primary".to_owned(),
        },
        // A single instance has no one to switch over to: restart it in place.
        None if wanted.len() == 1 => match observed.iter().find(|i| i.ordinal == primary) {
            Some(only) => restart_step(
                desired,
                only,
                "rolling update: restarting the only instance".to_owned(),
            ),
            None => no_primary_yet(),
        },
        None => Step::Wait {
            reason: "rolling update: waiting for an updated replica to catch up before the switchover".to_owned(),
        },
    }
}

fn no_primary_yet() -> Step {
    Step::Wait {
        reason: "no primary yet: Patroni is electing one".to_owned(),
    }
}

fn is_outdated(desired: &Desired, instance: &ObservedInstance) -> bool {
    instance
        .pod
        .as_ref()
        .is_some_and(|p| needs_restart(desired, instance.ordinal, p) != Restart::None)
}

/// What an instance needs to run the desired configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    None,
    /// Its pod template changed: recreate the pod.
    Pod,
    /// Only PostgreSQL's parameters changed: Patroni restarts it in place.
    Postgres,
}

fn needs_restart(desired: &Desired, ordinal: u32, pod: &ObservedPod) -> Restart {
    if !desired.pod_is_current(ordinal, pod) {
        Restart::Pod
    } else if pod.pending_restart {
        Restart::Postgres
    } else {
        Restart::None
    }
}

/// Recreating the pod also restarts PostgreSQL, so a pod restart covers a pending one.
fn restart_step(desired: &Desired, instance: &ObservedInstance, reason: String) -> Step {
    let ordinal = instance.ordinal;
    match instance
        .pod
        .as_ref()
        .map(|p| needs_restart(desired, ordinal, p))
    {
        Some(Restart::Postgres) => Step::RestartPostgres {
            ordinal,
            reason: reason.replacen("restarting", "restarting PostgreSQL of", 1)
                + " (a changed parameter needs a restart)",
        },
        _ => Step::RestartPod { ordinal, reason },
    }
}
