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

use crate::observe::Role;
use std::collections::BTreeSet;

/// One instance as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInstance {
    /// Ordinal `n` of `<cluster>-<n>`.
    pub ordinal: u32,
    /// Whether its StatefulSet exists.
    pub statefulset: bool,
    /// Its pod, if one exists.
    pub pod: Option<ObservedPod>,
}

/// An instance pod as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPod {
    pub role: Role,
    /// Ready per its readiness probe (Patroni `/readiness`: running, and streaming for a
    /// replica).
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// The restart hash the pod was created with.
    pub restart_hash: Option<String>,
    /// Bytes of WAL a replica is behind, when Patroni reported it.
    pub lag_bytes: Option<i64>,
    /// Patroni reports a parameter change that only a restart of PostgreSQL applies.
    pub pending_restart: bool,
    /// Patroni's synchronous standby: in synchronous mode Patroni switches over only to one.
    pub sync_standby: bool,
    /// The `postgres` container's last failure, as the kubelet reports it.
    pub crash: Option<crate::observe::crash::Crash>,
}

/// What the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub instances: u32,
    /// Hash of everything that needs a pod restart to take effect.
    pub restart_hash: String,
    /// Stop every instance and keep the volumes.
    pub shutdown: bool,
    /// A replica further behind than this is not caught up.
    pub max_lag_bytes: i64,
    /// A switchover asked for with the `tusk.dev/switchover` annotation.
    pub switchover: Option<SwitchoverRequest>,
    /// Patroni runs in synchronous mode: it switches over only to a synchronous standby, so
    /// no other replica is a target (the planner waits while none is registered).
    pub synchronous: bool,
}

/// Where a requested switchover should go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchoverRequest {
    /// The healthiest replica.
    Any,
    /// This instance.
    To(u32),
}

/// The next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: every instance runs the desired configuration.
    Idle,
    /// Something is in flight; check again soon.
    Wait { reason: String },
    /// Make `to` the primary through Patroni.
    Switchover { from: u32, to: u32, reason: String },
    /// Delete the pod so its StatefulSet recreates it with the new template.
    RestartPod { ordinal: u32, reason: String },
    /// Ask the instance's Patroni to restart PostgreSQL in place (`POST /restart`), for a
    /// parameter change Patroni reports as `pending_restart`.
    RestartPostgres { ordinal: u32, reason: String },
    /// Delete the instance's StatefulSet (its volume is kept).
    RemoveInstance { ordinal: u32 },
}

/// The plan: which instances should run (their StatefulSets get `replicas: 1`), and the one
/// disruptive step to take now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Ordinals whose StatefulSet should exist.
    pub instances: BTreeSet<u32>,
    /// Ordinals that should be running (the others get `replicas: 0`).
    pub running: BTreeSet<u32>,
    pub step: Step,
    /// What this pass does with a `tusk.dev/switchover` request, if there is one to act on.
    pub switchover_request: Option<RequestHandling>,
}

/// How a pass disposes of a `tusk.dev/switchover` request. Either way the request is taken
/// away before anything else happens, so it is carried out at most once: a request that
/// stayed would move the primary again on every pass (`any` always finds another replica).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestHandling {
    /// Nothing to do, or nothing that can be done: clear it and say why.
    Settle(String),
    /// This plan's [`Step::Switchover`] carries it out: clear it, then switch over once,
    /// whatever Patroni answers.
    CarryOut,
}

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
    let mut running = instances.clone();

    // Scale down: extra instances go, highest first, never the primary.
    let mut extra: Vec<u32> = existing.difference(&wanted).copied().collect();
    extra.reverse();
    if let Some(&highest) = extra.first() {
        if let Some(primary) = primary_ordinal.filter(|p| extra.contains(p)) {
            return match healthiest_replica(desired, observed, &wanted, None) {
                Some(to) => Plan {
                    switchover_request: None,
                    instances,
                    running,
                    step: Step::Switchover {
                        from: primary,
                        to,
                        reason: format!("instance {primary} is being removed by scaling down"),
                    },
                },
                None => Plan {
                    switchover_request: None,
                    instances,
                    running,
                    step: Step::Wait {
                        reason: "scaling down needs a ready replica to switch over to first"
                            .to_owned(),
                    },
                },
            };
        }
        if let Some(busy) = in_flight(observed, &wanted) {
            return Plan {
                switchover_request: None,
                instances,
                running,
                step: Step::Wait { reason: busy },
            };
        }
        instances.remove(&highest);
        running.remove(&highest);
        return Plan {
            switchover_request: None,
            instances,
            running,
            step: Step::RemoveInstance { ordinal: highest },
        };
    }

    // Instances not created yet come up first; nothing disruptive happens meanwhile.
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
    if !missing_pods.is_empty() {
        return Plan {
            switchover_request: None,
            instances,
            running,
            step: Step::Wait {
                reason: format!("waiting for instance(s) {} to start", join(&missing_pods)),
            },
        };
    }

    if let Some(request) = desired.switchover {
        let (step, request) =
            plan_requested_switchover(desired, observed, &wanted, primary_ordinal, request);
        return Plan {
            switchover_request: request,
            instances,
            running,
            step,
        };
    }

    let outdated = |i: &&ObservedInstance| {
        i.pod
            .as_ref()
            .is_some_and(|p| needs_restart(desired, p) != Restart::None)
    };
    let outdated_replicas: Vec<&ObservedInstance> = observed
        .iter()
        .filter(|i| wanted.contains(&i.ordinal) && Some(i.ordinal) != primary_ordinal)
        .filter(outdated)
        .collect();
    let primary_outdated = primary.is_some_and(|p| outdated(&p));
    if outdated_replicas.is_empty() && !primary_outdated {
        let step = match in_flight(observed, &wanted) {
            Some(reason) => Step::Wait { reason },
            None if primary.is_none() => Step::Wait {
                reason: "no primary yet: Patroni is electing one".to_owned(),
            },
            None => Step::Idle,
        };
        return Plan {
            instances,
            running,
            step,
            switchover_request: None,
        };
    }
    if let Some(busy) = in_flight(observed, &wanted) {
        return Plan {
            switchover_request: None,
            instances,
            running,
            step: Step::Wait { reason: busy },
        };
    }
    // Replicas first, highest ordinal first, one at a time.
    if let Some(replica) = outdated_replicas.iter().max_by_key(|i| i.ordinal) {
        return Plan {
            switchover_request: None,
            instances,
            running,
            step: restart_step(
                desired,
                replica,
                format!("rolling update: restarting replica {}", replica.ordinal),
            ),
        };
    }
    let Some(primary) = primary_ordinal else {
        return Plan {
            switchover_request: None,
            instances,
            running,
            step: Step::Wait {
                reason: "no primary yet: Patroni is electing one".to_owned(),
            },
        };
    };
    let step = match healthiest_replica(desired, observed, &wanted, Some(&desired.restart_hash)) {
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
            None => Step::Wait {
                reason: "no primary yet: Patroni is electing one".to_owned(),
            },
        },
        None => Step::Wait {
            reason: "rolling update: waiting for an updated replica to catch up before the switchover".to_owned(),
        },
    };
    Plan {
        instances,
        running,
        step,
        switchover_request: None,
    }
}

fn plan_requested_switchover(
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
    let settle = |why: String| (Step::Idle, Some(RequestHandling::Settle(why)));
    match request {
        SwitchoverRequest::To(target) if target == primary => {
            return settle(format!("instance {target} is already the primary"));
        }
        SwitchoverRequest::To(target) if !wanted.contains(&target) => {
            return settle(format!(
                "the Cluster has no such instance (it has {}); switchover not done",
                join(&wanted.iter().copied().collect::<Vec<_>>())
            ));
        }
        SwitchoverRequest::Any if wanted.iter().all(|o| *o == primary) => {
            return settle(
                "there is no replica to switch over to (spec.instances is 1); switchover not done"
                    .to_owned(),
            );
        }
        _ => {}
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
        SwitchoverRequest::Any => healthiest_replica(desired, observed, wanted, None),
        SwitchoverRequest::To(target) => {
            healthiest_replica(desired, observed, &BTreeSet::from([target]), None)
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

fn plan_shutdown(
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

/// What an instance needs to run the desired configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    None,
    /// Its pod template changed: recreate the pod.
    Pod,
    /// Only PostgreSQL's parameters changed: Patroni restarts it in place.
    Postgres,
}

fn needs_restart(desired: &Desired, pod: &ObservedPod) -> Restart {
    if pod.restart_hash.as_deref() != Some(desired.restart_hash.as_str()) {
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
    match instance.pod.as_ref().map(|p| needs_restart(desired, p)) {
        Some(Restart::Postgres) => Step::RestartPostgres {
            ordinal,
            reason: reason.replacen("restarting", "restarting PostgreSQL of", 1)
                + " (a changed parameter needs a restart)",
        },
        _ => Step::RestartPod { ordinal, reason },
    }
}

/// A reason to wait if any wanted instance is not ready, terminating, or lagging.
fn in_flight(observed: &[ObservedInstance], wanted: &BTreeSet<u32>) -> Option<String> {
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

/// The ready, caught-up replica with the least lag (lowest ordinal on ties), optionally only
/// among those already running `hash`. In synchronous mode only synchronous standbys
/// qualify: Patroni refuses a switchover to any other replica.
fn healthiest_replica(
    desired: &Desired,
    observed: &[ObservedInstance],
    wanted: &BTreeSet<u32>,
    hash: Option<&String>,
) -> Option<u32> {
    observed
        .iter()
        .filter(|i| wanted.contains(&i.ordinal))
        .filter_map(|i| i.pod.as_ref().map(|p| (i.ordinal, p)))
        .filter(|(_, p)| p.role == Role::Replica && p.ready && !p.terminating)
        .filter(|(_, p)| p.lag_bytes.is_none_or(|lag| lag <= desired.max_lag_bytes))
        .filter(|(_, p)| {
            hash.is_none_or(|h| p.restart_hash.as_ref() == Some(h) && !p.pending_restart)
        })
        .filter(|(_, p)| p.sync_standby || !desired.synchronous)
        .min_by_key(|(ordinal, p)| (p.lag_bytes.unwrap_or(0), *ordinal))
        .map(|(ordinal, _)| ordinal)
}

fn join(ordinals: &[u32]) -> String {
    ordinals
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(role: Role, ready: bool, hash: &str) -> Option<ObservedPod> {
        Some(ObservedPod {
            role,
            ready,
            terminating: false,
            restart_hash: Some(hash.to_owned()),
            lag_bytes: Some(0),
            pending_restart: false,
            sync_standby: false,
            crash: None,
        })
    }

    fn instance(ordinal: u32, pod: Option<ObservedPod>) -> ObservedInstance {
        ObservedInstance {
            ordinal,
            statefulset: true,
            pod,
        }
    }

    fn desired(instances: u32, hash: &str) -> Desired {
        Desired {
            instances,
            restart_hash: hash.to_owned(),
            shutdown: false,
            max_lag_bytes: 1_048_576,
            switchover: None,
            synchronous: false,
        }
    }

    fn healthy(primary: u32, count: u32, hash: &str) -> Vec<ObservedInstance> {
        (1..=count)
            .map(|o| {
                instance(
                    o,
                    pod(
                        if o == primary {
                            Role::Primary
                        } else {
                            Role::Replica
                        },
                        true,
                        hash,
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn steady_cluster_is_idle() {
        let plan = plan(&desired(3, "a"), &healthy(1, 3, "a"));
        assert_eq!(plan.step, Step::Idle);
        assert_eq!(plan.running, BTreeSet::from([1, 2, 3]));
    }

    #[test]
    fn rolling_update_restarts_replicas_first_highest_first() {
        let plan = plan(&desired(3, "b"), &healthy(1, 3, "a"));
        assert!(
            matches!(plan.step, Step::RestartPod { ordinal: 3, .. }),
            "{:?}",
            plan.step
        );
    }

    #[test]
    fn rolling_update_waits_while_a_restarted_replica_is_not_ready() {
        let mut observed = healthy(1, 3, "a");
        observed[2].pod = pod(Role::Replica, false, "b");
        let plan = plan(&desired(3, "b"), &observed);
        assert!(matches!(plan.step, Step::Wait { .. }), "{:?}", plan.step);
    }

    #[test]
    fn rolling_update_switches_over_once_replicas_are_updated_then_restarts_old_primary() {
        let mut observed = healthy(1, 3, "b");
        observed[0].pod = pod(Role::Primary, true, "a");
        observed[2].pod.as_mut().unwrap().lag_bytes = Some(10);
        let step = plan(&desired(3, "b"), &observed).step;
        assert!(
            matches!(step, Step::Switchover { from: 1, to: 2, .. }),
            "healthiest replica: {step:?}"
        );

        // After the switchover instance 1 is an outdated replica: it is restarted last.
        observed[0].pod = pod(Role::Replica, true, "a");
        observed[1].pod = pod(Role::Primary, true, "b");
        let step = plan(&desired(3, "b"), &observed).step;
        assert!(
            matches!(step, Step::RestartPod { ordinal: 1, .. }),
            "{step:?}"
        );
    }

    #[test]
    fn lagging_replica_is_not_a_switchover_target() {
        let mut observed = healthy(1, 2, "b");
        observed[0].pod = pod(Role::Primary, true, "a");
        observed[1].pod.as_mut().unwrap().lag_bytes = Some(100_000_000);
        assert!(matches!(
            plan(&desired(2, "b"), &observed).step,
            Step::Wait { .. }
        ));
    }

    #[test]
    fn single_instance_restarts_in_place() {
        let observed = vec![instance(1, pod(Role::Primary, true, "a"))];
        assert!(matches!(
            plan(&desired(1, "b"), &observed).step,
            Step::RestartPod { ordinal: 1, .. }
        ));
    }

    #[test]
    fn scale_down_removes_highest_replica_never_the_primary() {
        let plan_ = plan(&desired(2, "a"), &healthy(1, 3, "a"));
        assert_eq!(plan_.step, Step::RemoveInstance { ordinal: 3 });
        assert!(!plan_.instances.contains(&3));

        // The primary is the highest: switch over to a replica that stays.
        let step = plan(&desired(2, "a"), &healthy(3, 3, "a")).step;
        assert!(
            matches!(step, Step::Switchover { from: 3, to: 1, .. }),
            "{step:?}"
        );
    }

    #[test]
    fn scale_down_to_one_never_picks_the_primary_even_when_it_is_instance_two() {
        let step = plan(&desired(1, "a"), &healthy(2, 3, "a")).step;
        assert!(
            matches!(step, Step::Switchover { from: 2, to: 1, .. }),
            "{step:?}"
        );
    }

    #[test]
    fn scale_up_waits_for_new_instances() {
        let plan_ = plan(&desired(3, "a"), &healthy(1, 2, "a"));
        assert_eq!(plan_.instances, BTreeSet::from([1, 2, 3]));
        assert!(matches!(plan_.step, Step::Wait { .. }));
    }

    #[test]
    fn shutdown_stops_replicas_first_then_the_primary() {
        let mut d = desired(3, "a");
        d.shutdown = true;
        let observed = healthy(2, 3, "a");
        let plan_ = plan(&d, &observed);
        assert_eq!(
            plan_.running,
            BTreeSet::from([2]),
            "primary keeps running while replicas stop"
        );

        let only_primary = vec![
            instance(1, None),
            instance(2, pod(Role::Primary, true, "a")),
            instance(3, None),
        ];
        assert_eq!(plan(&d, &only_primary).running, BTreeSet::new());
        let none = vec![instance(1, None), instance(2, None), instance(3, None)];
        assert_eq!(plan(&d, &none).step, Step::Idle);
    }

    #[test]
    fn requested_switchover_goes_to_the_named_replica_then_settles() {
        let mut d = desired(3, "a");
        d.switchover = Some(SwitchoverRequest::To(3));
        let step = plan(&d, &healthy(1, 3, "a")).step;
        assert!(
            matches!(step, Step::Switchover { from: 1, to: 3, .. }),
            "{step:?}"
        );
        let done = plan(&d, &healthy(3, 3, "a"));
        assert_eq!(done.step, Step::Idle);
        assert!(matches!(
            done.switchover_request,
            Some(RequestHandling::Settle(_))
        ));
        d.switchover = Some(SwitchoverRequest::Any);
        let any = plan(&d, &healthy(2, 3, "a"));
        assert!(
            matches!(any.step, Step::Switchover { from: 2, to: 1, .. }),
            "{any:?}"
        );
        assert_eq!(any.switchover_request, Some(RequestHandling::CarryOut));
    }

    #[test]
    fn a_request_that_cannot_be_carried_out_is_settled_with_the_reason() {
        let mut d = desired(3, "a");
        d.switchover = Some(SwitchoverRequest::To(9));
        let unknown = plan(&d, &healthy(1, 3, "a"));
        assert_eq!(unknown.step, Step::Idle);
        let Some(RequestHandling::Settle(why)) = unknown.switchover_request else {
            panic!("{unknown:?}");
        };
        assert!(why.contains("no such instance (it has 1, 2, 3)"), "{why}");

        let mut single = desired(1, "a");
        single.switchover = Some(SwitchoverRequest::Any);
        let Some(RequestHandling::Settle(why)) =
            plan(&single, &healthy(1, 1, "a")).switchover_request
        else {
            panic!("a single instance has no one to switch over to");
        };
        assert!(why.contains("no replica"), "{why}");
    }

    #[test]
    fn a_request_waiting_for_a_caught_up_replica_is_kept() {
        let mut d = desired(3, "a");
        d.switchover = Some(SwitchoverRequest::Any);
        let mut observed = healthy(1, 3, "a");
        for replica in &mut observed[1..] {
            replica.pod.as_mut().unwrap().lag_bytes = Some(d.max_lag_bytes + 1);
        }
        let waiting = plan(&d, &observed);
        assert!(matches!(waiting.step, Step::Wait { .. }), "{waiting:?}");
        assert_eq!(waiting.switchover_request, None);
    }

    #[test]
    fn no_primary_means_wait() {
        let observed: Vec<_> = (1..=2)
            .map(|o| instance(o, pod(Role::Replica, true, "a")))
            .collect();
        assert!(matches!(
            plan(&desired(2, "a"), &observed).step,
            Step::Wait { .. }
        ));
    }

    fn pending(observed: &mut [ObservedInstance]) {
        for instance in observed {
            if let Some(pod) = instance.pod.as_mut() {
                pod.pending_restart = true;
            }
        }
    }

    #[test]
    fn pending_restart_restarts_postgres_on_replicas_first_then_switches_over() {
        let d = desired(3, "a");
        let mut observed = healthy(1, 3, "a");
        pending(&mut observed);
        let step = plan(&d, &observed).step;
        assert!(
            matches!(step, Step::RestartPostgres { ordinal: 3, .. }),
            "highest replica first, in place: {step:?}"
        );

        observed[2].pod.as_mut().unwrap().pending_restart = false;
        let step = plan(&d, &observed).step;
        assert!(
            matches!(step, Step::RestartPostgres { ordinal: 2, .. }),
            "{step:?}"
        );

        observed[1].pod.as_mut().unwrap().pending_restart = false;
        observed[2].pod.as_mut().unwrap().lag_bytes = Some(5);
        let step = plan(&d, &observed).step;
        assert!(
            matches!(step, Step::Switchover { from: 1, to: 2, .. }),
            "switch over to a restarted replica before restarting the primary: {step:?}"
        );

        // After the switchover the old primary is a pending replica: restarted last.
        observed[0].pod = pod(Role::Replica, true, "a");
        observed[0].pod.as_mut().unwrap().pending_restart = true;
        observed[1].pod = pod(Role::Primary, true, "a");
        let step = plan(&d, &observed).step;
        assert!(
            matches!(step, Step::RestartPostgres { ordinal: 1, .. }),
            "{step:?}"
        );

        observed[0].pod.as_mut().unwrap().pending_restart = false;
        assert_eq!(plan(&d, &observed).step, Step::Idle);
    }

    #[test]
    fn a_replica_still_pending_a_restart_is_no_switchover_target() {
        let d = desired(2, "a");
        let mut observed = healthy(1, 2, "a");
        pending(&mut observed);
        observed[1].pod.as_mut().unwrap().pending_restart = false;
        observed[0].pod.as_mut().unwrap().pending_restart = true;
        assert!(matches!(
            plan(&d, &observed).step,
            Step::Switchover { from: 1, to: 2, .. }
        ));
        observed[1].pod.as_mut().unwrap().pending_restart = true;
        assert!(matches!(
            plan(&d, &observed).step,
            Step::RestartPostgres { ordinal: 2, .. }
        ));
    }

    #[test]
    fn a_new_template_covers_a_pending_restart_and_the_only_instance_restarts_in_place() {
        let mut observed = healthy(1, 3, "a");
        pending(&mut observed);
        assert!(matches!(
            plan(&desired(3, "b"), &observed).step,
            Step::RestartPod { ordinal: 3, .. }
        ));
        let mut single = vec![instance(1, pod(Role::Primary, true, "a"))];
        pending(&mut single);
        assert!(matches!(
            plan(&desired(1, "a"), &single).step,
            Step::RestartPostgres { ordinal: 1, .. }
        ));
    }

    #[test]
    fn in_synchronous_mode_only_the_sync_standby_is_a_switchover_target() {
        let mut d = desired(3, "a");
        d.switchover = Some(SwitchoverRequest::Any);
        d.synchronous = true;
        let mut observed = healthy(1, 3, "a");
        assert!(
            matches!(plan(&d, &observed).step, Step::Wait { .. }),
            "no synchronous standby registered (yet): wait"
        );
        observed[2].pod.as_mut().unwrap().sync_standby = true;
        assert!(matches!(
            plan(&d, &observed).step,
            Step::Switchover { from: 1, to: 3, .. }
        ));
    }
}
