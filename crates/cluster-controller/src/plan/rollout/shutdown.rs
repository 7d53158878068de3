//! Shutdown (`spec.shutdown`): replicas stop first, the primary last, volumes are kept.

use std::collections::BTreeSet;

use super::model::{ObservedInstance, Plan, Step};
use super::waiting::join;

pub(super) fn plan_shutdown(
    observed: &[ObservedInstance],
    instances: BTreeSet<u32>,
    primary: Option<u32>,
) -> Plan {
    let replica_pods_left: Vec<u32> = observed
        .iter()
        .filter(|i| Some(i.ordinal) != primary && i.pod.is_some())
        .map(|i| i.ordinal)
        .collect();
    // Keep the primary running until every replica is gone, so no replica promotes itself.
    let running: BTreeSet<u32> = match primary {
        Some(p) if !replica_pods_left.is_empty() => BTreeSet::from([p]),
        _ => BTreeSet::new(),
    };
    let any_pod_left = observed.iter().any(|i| i.pod.is_some());
    let step = if any_pod_left {
        Step::Wait {
            reason: if replica_pods_left.is_empty() {
                "shutting down: stopping the primary".to_owned()
            } else {
                format!(
                    "shutting down: stopping replica(s) {} first",
                    join(&replica_pods_left)
                )
            },
        }
    } else {
        Step::Idle
    };
    Plan {
        instances,
        running,
        step,
        switchover_request: None,
    }
}
