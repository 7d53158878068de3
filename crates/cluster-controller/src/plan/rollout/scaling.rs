//! Scaling: new instances come up before anything disruptive happens, and extra instances go
//! one at a time, highest ordinal first, never while they are the primary.

use std::collections::BTreeSet;

use super::model::{Desired, ObservedInstance, Step};
use super::switchover::healthiest_replica;
use super::waiting::{in_flight, join};

/// The scale-down step, if instances beyond `spec.instances` still exist. A primary among
/// them hands over to the healthiest remaining replica first.
pub(super) fn scale_down_step(
    desired: &Desired,
    observed: &[ObservedInstance],
    wanted: &BTreeSet<u32>,
    existing: &BTreeSet<u32>,
    primary: Option<u32>,
) -> Option<Step> {
    let extra: BTreeSet<u32> = existing.difference(wanted).copied().collect();
    let highest = *extra.last()?;
    if let Some(primary) = primary.filter(|p| extra.contains(p)) {
        return Some(match healthiest_replica(desired, observed, wanted, false) {
            Some(to) => Step::Switchover {
                from: primary,
                to,
                reason: format!("instance {primary} is being removed by scaling down"),
            },
            None => Step::Wait {
                reason: "scaling down needs a ready replica to switch over to first".to_owned(),
            },
        });
    }
    if let Some(busy) = in_flight(observed, wanted) {
        return Some(Step::Wait { reason: busy });
    }
    Some(Step::RemoveInstance { ordinal: highest })
}

/// A reason to wait while a wanted instance has no pod yet (or was never observed at all).
pub(super) fn waiting_for_new_instances(
    observed: &[ObservedInstance],
    wanted: &BTreeSet<u32>,
) -> Option<String> {
    let missing_pods: Vec<u32> = observed
        .iter()
        .filter(|i| wanted.contains(&i.ordinal) && i.pod.is_none())
        .map(|i| i.ordinal)
        .chain(
            wanted
                .iter()
                .copied()
                .filter(|o| !observed.iter().any(|i| i.ordinal == *o)),
        )
        .collect();
    (!missing_pods.is_empty())
        .then(|| format!("waiting for instance(s) {} to start", join(&missing_pods)))
}
