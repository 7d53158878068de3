//! When the planner holds still: it never takes a disruptive step while another one is in
//! flight, so a slow or failing instance stops the rollout instead of compounding it.

use std::collections::BTreeSet;

use super::model::ObservedInstance;

/// A reason to wait if any wanted instance has no pod yet, or one that is terminating or not
/// ready.
pub(super) fn in_flight(observed: &[ObservedInstance], wanted: &BTreeSet<u32>) -> Option<String> {
    for instance in observed.iter().filter(|i| wanted.contains(&i.ordinal)) {
        match &instance.pod {
            None => {
                return Some(format!(
                    "waiting for instance {} to start",
                    instance.ordinal
                ));
            }
            Some(pod) if pod.terminating => {
                return Some(format!("waiting for instance {} to stop", instance.ordinal));
            }
            Some(pod) if !pod.ready => {
                return Some(format!(
                    "waiting for instance {} to become ready",
                    instance.ordinal
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// Ordinals as the reasons list them: `1, 2, 3`.
pub(super) fn join(ordinals: &[u32]) -> String {
    ordinals
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
