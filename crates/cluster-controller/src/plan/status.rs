//! The Cluster's status, computed from what was observed and what the rollout planner decided.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tusk_api::cluster::{ClusterEndpoints, InstanceRole, InstanceStatus, reasons};
use tusk_api::condition::{DesiredCondition, set_condition, types};
use tusk_api::names::{self, POSTGRES_PORT};
use tusk_api::{Cluster, ClusterStatus};

use crate::observe::Role;
use crate::plan::rollout::{ObservedInstance, Plan, Step};
use crate::shared::meta::{cluster_name, namespace};

/// What the controller found wrong with the spec itself, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub reason: &'static str,
    pub message: String,
}

/// The new status. `previous` supplies condition transition times and what is only known from
/// earlier passes.
pub fn desired_status(
    cluster: &Cluster,
    observed: &[ObservedInstance],
    plan: &Plan,
    all_updated: bool,
    problem: Option<&SpecProblem>,
    now: Time,
) -> ClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let name = cluster_name(cluster);
    let ns = namespace(cluster);

    let instances = instance_statuses(&name, observed, plan);
    let readiness = Readiness {
        ready: instances.iter().filter(|i| i.ready).count(),
        wanted: usize::try_from(cluster.spec.instances).unwrap_or(0),
        primary: ready_primary(&name, observed),
    };
    let upgrade_lock = upgrade_lock(cluster);
    let shutdown = cluster.spec.shutdown;

    let new_conditions = if let Some(problem) = problem {
        spec_problem_conditions(problem, &readiness)
    } else if let Some(upgrade) = &upgrade_lock {
        upgrade_conditions(upgrade, observed, plan)
    } else if shutdown {
        shutdown_conditions(plan)
    } else {
        running_conditions(cluster, &previous, observed, plan, all_updated, &readiness)
    };
    let mut conditions = previous.conditions.clone();
    for condition in new_conditions {
        set_condition(&mut conditions, condition, generation, now.clone());
    }

    let upgrade_holds_it_down = upgrade_lock.is_some() && observed.iter().all(|i| i.pod.is_none());
    ClusterStatus {
        conditions,
        observed_generation: generation,
        instances,
        ready_instances: i32::try_from(readiness.ready).unwrap_or(i32::MAX),
        current_primary: current_primary(&readiness, &previous, shutdown || upgrade_lock.is_some()),
        postgres_version: running_version(
            cluster,
            &previous,
            all_updated && readiness.ready > 0,
            upgrade_holds_it_down,
        ),
        image: previous.image.clone(),
        endpoints: Some(endpoints(&name, &ns)),
        storage: previous.storage.clone(),
        system_identifier: previous.system_identifier.clone(),
        recovery_target_reached: previous.recovery_target_reached.clone(),
        last_primary_change: last_primary_change(&previous, readiness.primary.as_ref(), now),
        restart_request: finished_restart(cluster, &previous, all_updated, &readiness),
    }
}

/// The restart request (`tusk.dev/restart`) once every instance runs the template that carries
/// it and all are ready again; until then the one finished before.
fn finished_restart(
    cluster: &Cluster,
    previous: &ClusterStatus,
    all_updated: bool,
    readiness: &Readiness,
) -> Option<String> {
    let finished = all_updated
        && !cluster.spec.shutdown
        && readiness.wanted > 0
        && readiness.ready >= readiness.wanted;
    match cluster.restart_request() {
        Some(request) if finished => Some(request),
        _ => previous.restart_request.clone(),
    }
}

/// Ready, Progressing and Degraded, in that order.
type Conditions = [DesiredCondition; 3];

/// How many instances are ready against how many the spec wants, and which one is the ready
/// primary.
struct Readiness {
    ready: usize,
    wanted: usize,
    primary: Option<String>,
}

/// One entry per planned instance, with its role as its pod reports it.
fn instance_statuses(
    name: &str,
    observed: &[ObservedInstance],
    plan: &Plan,
) -> Vec<InstanceStatus> {
    observed
        .iter()
        .filter(|i| plan.instances.contains(&i.ordinal))
        .map(|i| InstanceStatus {
            name: names::instance(name, i.ordinal),
            role: match i.pod.as_ref().map(|p| p.role) {
                None => InstanceRole::Stopped,
                Some(Role::Primary) => InstanceRole::Primary,
                Some(Role::Replica) => InstanceRole::Replica,
                Some(Role::Unknown) => InstanceRole::Unknown,
            },
            ready: i.pod.as_ref().is_some_and(|p| p.ready && !p.terminating),
            lag_bytes: i.pod.as_ref().and_then(|p| p.lag_bytes),
            replay_lag_milliseconds: i.pod.as_ref().and_then(|p| p.replay_lag_ms),
            timeline: i.pod.as_ref().and_then(|p| p.timeline),
            pending_restart: i.pod.as_ref().is_some_and(|p| p.pending_restart),
            // Recorded once the pod created for the request is ready.
            restart_request: i
                .pod
                .as_ref()
                .filter(|p| p.ready && !p.terminating)
                .and_then(|p| p.restart_request.clone()),
        })
        .collect()
}

/// The instance that is primary and ready, if there is one.
fn ready_primary(name: &str, observed: &[ObservedInstance]) -> Option<String> {
    observed
        .iter()
        .find(|i| {
            i.pod
                .as_ref()
                .is_some_and(|p| p.role == Role::Primary && p.ready)
        })
        .map(|i| names::instance(name, i.ordinal))
}

/// The PGUpgrade holding the Cluster down (its name is the annotation's value).
fn upgrade_lock(cluster: &Cluster) -> Option<String> {
    cluster
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(tusk_api::labels::UPGRADE_LOCK_ANNOTATION))
        .cloned()
}

/// A spec the controller refuses stops everything else from being reported.
fn spec_problem_conditions(problem: &SpecProblem, readiness: &Readiness) -> Conditions {
    [
        DesiredCondition::ready(false, problem.reason, problem.message.clone()),
        DesiredCondition::new(
            types::PROGRESSING,
            false,
            problem.reason,
            "fix the spec to continue",
        ),
        DesiredCondition::new(
            types::DEGRADED,
            readiness.ready < readiness.wanted,
            problem.reason,
            problem.message.clone(),
        ),
    ]
}

/// A PGUpgrade stops the instances on purpose: not ready, but not degraded either.
fn upgrade_conditions(upgrade: &str, observed: &[ObservedInstance], plan: &Plan) -> Conditions {
    let stopped = observed.iter().all(|i| i.pod.is_none());
    let message = if stopped {
        format!(
            "PGUpgrade {upgrade:?} holds the Cluster: every instance is stopped for the major upgrade (volumes kept); it starts again when the PGUpgrade releases it"
        )
    } else {
        format!(
            "PGUpgrade {upgrade:?} holds the Cluster: stopping the instances for the major upgrade, replicas first: {}",
            step_message(&plan.step)
        )
    };
    [
        DesiredCondition::ready(false, reasons::UPGRADE_IN_PROGRESS, message.clone()),
        DesiredCondition::new(
            types::PROGRESSING,
            true,
            reasons::UPGRADE_IN_PROGRESS,
            message,
        ),
        DesiredCondition::new(
            types::DEGRADED,
            false,
            reasons::UPGRADE_IN_PROGRESS,
            "stopped on purpose by a PGUpgrade",
        ),
    ]
}

/// `spec.shutdown` stops the instances on request: progressing until the last one is down.
fn shutdown_conditions(plan: &Plan) -> Conditions {
    let done = plan.step == Step::Idle;
    let reason = if done {
        reasons::SHUT_DOWN
    } else {
        reasons::SHUTTING_DOWN
    };
    [
        DesiredCondition::ready(
            false,
            reason,
            if done {
                "every instance is stopped (spec.shutdown is true); volumes are kept".to_owned()
            } else {
                step_message(&plan.step)
            },
        ),
        DesiredCondition::new(types::PROGRESSING, !done, reason, step_message(&plan.step)),
        DesiredCondition::new(
            types::DEGRADED,
            false,
            reasons::SHUT_DOWN,
            "shut down on request",
        ),
    ]
}

/// The conditions of a Cluster that should be running. A first start that keeps crashing
/// overrides Ready and Degraded with what failed and what to do about it.
fn running_conditions(
    cluster: &Cluster,
    previous: &ClusterStatus,
    observed: &[ObservedInstance],
    plan: &Plan,
    all_updated: bool,
    readiness: &Readiness,
) -> Conditions {
    let crashed = crashed_instance(&cluster_name(cluster), observed, plan);
    let crash_note = crashed
        .as_ref()
        .map(|c| format!("; {}", c.description))
        .unwrap_or_default();
    // Nothing runs, and nothing ever did (no PostgreSQL version was ever reported running):
    // the first start itself fails.
    let bootstrap_failed = crashed
        .as_ref()
        .filter(|_| {
            readiness.primary.is_none()
                && readiness.ready == 0
                && previous.postgres_version.is_none()
        })
        .map(|crashed| bootstrap_failure(cluster, crashed));
    match bootstrap_failed {
        Some(message) => [
            DesiredCondition::ready(false, reasons::BOOTSTRAP_FAILED, message.clone()),
            progressing_condition(plan, all_updated),
            DesiredCondition::new(types::DEGRADED, true, reasons::BOOTSTRAP_FAILED, message),
        ],
        None => [
            ready_condition(readiness, plan, &crash_note),
            progressing_condition(plan, all_updated),
            degraded_condition(readiness, previous),
        ],
    }
}

/// Ready: every wanted instance is ready and one of them is the primary.
fn ready_condition(readiness: &Readiness, plan: &Plan, crash_note: &str) -> DesiredCondition {
    let Readiness {
        ready,
        wanted,
        primary,
    } = readiness;
    let all_ready = ready >= wanted && primary.is_some();
    match (primary, all_ready) {
        (Some(primary), true) => DesiredCondition::ready(
            true,
            reasons::READY,
            format!("{ready} of {wanted} instances ready; {primary} is primary and accepts writes"),
        ),
        (None, _) if *ready == 0 => DesiredCondition::ready(
            false,
            reasons::PROVISIONING,
            format!(
                "0 of {wanted} instances ready: {}",
                step_message(&plan.step)
            ),
        ),
        (None, _) => DesiredCondition::ready(
            false,
            reasons::NO_PRIMARY,
            format!("no instance is primary: Patroni is electing one{crash_note}"),
        ),
        (Some(_), false) => DesiredCondition::ready(
            false,
            reasons::INSTANCES_NOT_READY,
            format!(
                "{ready} of {wanted} instances ready: {}{crash_note}",
                step_message(&plan.step)
            ),
        ),
    }
}

/// Progressing: the rollout planner has a step to take, or not every instance is updated yet.
fn progressing_condition(plan: &Plan, all_updated: bool) -> DesiredCondition {
    match &plan.step {
        Step::Idle if all_updated => DesiredCondition::new(
            types::PROGRESSING,
            false,
            reasons::READY,
            "nothing to roll out",
        ),
        step => DesiredCondition::new(
            types::PROGRESSING,
            true,
            step_reason(step),
            step_message(step),
        ),
    }
}

/// Degraded: fewer instances are ready than wanted. Not before the first status was written,
/// so a Cluster that is still coming up is not reported as degraded.
fn degraded_condition(readiness: &Readiness, previous: &ClusterStatus) -> DesiredCondition {
    let Readiness { ready, wanted, .. } = readiness;
    DesiredCondition::new(
        types::DEGRADED,
        ready < wanted && previous.observed_generation.is_some(),
        if ready < wanted {
            reasons::INSTANCES_NOT_READY
        } else {
            reasons::READY
        },
        format!("{ready} of {wanted} instances healthy"),
    )
}

/// The ready primary. A Cluster stopped on purpose has none, so it keeps the last one known.
fn current_primary(
    readiness: &Readiness,
    previous: &ClusterStatus,
    stopped_on_purpose: bool,
) -> Option<String> {
    readiness.primary.clone().or(previous
        .current_primary
        .clone()
        .filter(|_| stopped_on_purpose))
}

/// The PostgreSQL major on the volumes: the spec's once every instance is updated and one
/// runs. While a PGUpgrade holds every instance down, the data on the volumes is of the major
/// the upgrade has set in the spec (after pg_upgrade): report it, so that removing the lock
/// starts the instances instead of refusing the change as one made outside a PGUpgrade.
fn running_version(
    cluster: &Cluster,
    previous: &ClusterStatus,
    updated_and_running: bool,
    upgrade_holds_it_down: bool,
) -> Option<i32> {
    if updated_and_running || upgrade_holds_it_down {
        Some(cluster.spec.postgres_version)
    } else {
        previous.postgres_version
    }
}

fn endpoints(name: &str, ns: &str) -> ClusterEndpoints {
    ClusterEndpoints {
        read_write: format!("{}:{POSTGRES_PORT}", names::read_write_host(name, ns)),
        read_only: format!(
            "{}.{ns}.svc:{POSTGRES_PORT}",
            names::read_only_service(name)
        ),
        read_any: format!("{}.{ns}.svc:{POSTGRES_PORT}", names::read_any_service(name)),
    }
}

/// Now, when the ready primary is another instance than the one last reported.
fn last_primary_change(
    previous: &ClusterStatus,
    primary: Option<&String>,
    now: Time,
) -> Option<Time> {
    match (&previous.current_primary, primary) {
        (Some(before), Some(now_primary)) if before != now_primary => Some(now),
        _ => previous.last_primary_change.clone(),
    }
}

/// The first instance whose `postgres` container keeps failing.
struct Crashed {
    instance: String,
    /// "instance db-1's postgres container exited with code 1 after 3 restarts: FATAL: ...".
    description: String,
}

fn crashed_instance(cluster: &str, observed: &[ObservedInstance], plan: &Plan) -> Option<Crashed> {
    observed
        .iter()
        .filter(|i| plan.instances.contains(&i.ordinal))
        .find_map(|i| {
            let crash = i.pod.as_ref()?.crash.as_ref()?;
            let instance = names::instance(cluster, i.ordinal);
            let description = format!(
                "instance {instance}'s postgres container {}",
                crash.describe()
            );
            Some(Crashed {
                instance,
                description,
            })
        })
}

/// The Ready message of a Cluster whose first start fails: what failed, and what to do.
fn bootstrap_failure(cluster: &Cluster, crashed: &Crashed) -> String {
    let name = cluster_name(cluster);
    let restore = cluster
        .spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.restore.as_ref());
    let advice = match restore {
        Some(restore) if restore.target.is_some() => format!(
            "the restore cannot reach spec.bootstrap.restore.target: the target must lie after the end of a backup and before the end of the WAL archived in the repository (`pgbackrest info` lists both), and that WAL must be in the repository. spec.bootstrap cannot be changed: delete Cluster {name} and create it again with a reachable target, or without one to restore to the end of the archive"
        ),
        Some(_) => format!(
            "the restore from the repository failed: check that the repository holds a backup of the source (`pgbackrest info`) and that its WAL is archived; spec.bootstrap cannot be changed, so delete Cluster {name} and create it again once the repository is right"
        ),
        None => format!(
            "initializing the database failed; `kubectl logs {} -c postgres --previous` shows the whole output",
            names::statefulset_pod(&crashed.instance)
        ),
    };
    format!("{}. {advice}", crashed.description)
}

fn step_reason(step: &Step) -> &'static str {
    match step {
        Step::Idle => reasons::READY,
        Step::Wait { .. } => reasons::PROVISIONING,
        Step::Switchover { .. } => reasons::SWITCHOVER,
        Step::RestartPod { .. } | Step::RestartPostgres { .. } => reasons::ROLLING_UPDATE,
        Step::RemoveInstance { .. } => reasons::SCALING,
    }
}

fn step_message(step: &Step) -> String {
    match step {
        Step::Idle => "every instance runs the desired configuration".to_owned(),
        Step::Wait { reason } => reason.clone(),
        Step::Switchover { from, to, reason } => {
            format!("switching over from instance {from} to {to}: {reason}")
        }
        Step::RestartPod { reason, .. } | Step::RestartPostgres { reason, .. } => reason.clone(),
        Step::RemoveInstance { ordinal } => {
            format!("scaling down: removing instance {ordinal} (its volume is kept)")
        }
    }
}

/// Whether the Ready condition is currently true (for events).
pub fn is_ready(status: &ClusterStatus) -> bool {
    tusk_api::condition::is_ready(&status.conditions, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn locked_cluster(version: i32, running: i32) -> Cluster {
        let mut cluster: Cluster = serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata:
  name: db
  namespace: db
  generation: 2
  annotations: {{tusk.dev/upgrade-lock: up}}
spec: {{postgresVersion: {version}, instances: 2, storage: {{size: 1Gi}}}}
"
        ))
        .unwrap();
        cluster.status = Some(ClusterStatus {
            postgres_version: Some(running),
            current_primary: Some("db-1".to_owned()),
            ..ClusterStatus::default()
        });
        cluster
    }

    fn stopped(ordinals: &[u32]) -> (Vec<ObservedInstance>, Plan) {
        let observed = ordinals
            .iter()
            .map(|&ordinal| ObservedInstance {
                ordinal,
                statefulset: true,
                pod: None,
            })
            .collect();
        let plan = Plan {
            instances: ordinals.iter().copied().collect(),
            running: BTreeSet::new(),
            step: Step::Idle,
            switchover_request: None,
        };
        (observed, plan)
    }

    #[test]
    fn an_upgrade_lock_is_reported_and_keeps_the_primary_and_the_new_major() {
        let cluster = locked_cluster(17, 16);
        let (observed, plan) = stopped(&[1, 2]);
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let status = desired_status(&cluster, &observed, &plan, false, None, now);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, reasons::UPGRADE_IN_PROGRESS);
        assert!(
            ready.message.contains("PGUpgrade \"up\""),
            "{}",
            ready.message
        );
        assert_eq!(status.current_primary.as_deref(), Some("db-1"));
        // Every instance is down while the PGUpgrade set the new major: the volumes hold it,
        // so removing the lock starts the instances instead of refusing the version change.
        assert_eq!(status.postgres_version, Some(17));
    }

    fn restored_cluster(target: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: pitr, namespace: db, generation: 1}}
spec:
  postgresVersion: 15
  instances: 2
  storage: {{size: 1Gi}}
  bootstrap: {{restore: {{cluster: db{target}}}}}
"
        ))
        .unwrap()
    }

    fn crashing(crash: Option<crate::observe::crash::Crash>) -> (Vec<ObservedInstance>, Plan) {
        let pod = crate::plan::rollout::ObservedPod {
            role: Role::Unknown,
            ready: false,
            terminating: false,
            restart_hash: None,
            lag_bytes: None,
            replay_lag_ms: None,
            restart_request: None,
            timeline: None,
            pending_restart: false,
            sync_standby: false,
            crash,
        };
        let observed = vec![
            ObservedInstance {
                ordinal: 1,
                statefulset: true,
                pod: Some(pod),
            },
            ObservedInstance {
                ordinal: 2,
                statefulset: false,
                pod: None,
            },
        ];
        let plan = Plan {
            instances: [1, 2].into(),
            running: [1].into(),
            step: Step::Wait {
                reason: "waiting for instance 1 to become ready".to_owned(),
            },
            switchover_request: None,
        };
        (observed, plan)
    }

    fn condition(status: &ClusterStatus, type_: &str) -> (String, String, String) {
        let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_restore_that_cannot_reach_its_target_is_reported_with_the_cause_and_the_fix() {
        let cluster = restored_cluster(", target: {time: \"2026-11-30T12:00:00Z\"}");
        let crash = crate::observe::crash::Crash {
            restarts: 3,
            exit_code: 1,
            cause: crate::observe::crash::cause(
                "FATAL:  recovery ended before configured recovery target was reached\npatroni.exceptions.PatroniFatalException: 'Failed to bootstrap cluster'",
            ),
        };
        let (observed, plan) = crashing(Some(crash));
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let status = desired_status(&cluster, &observed, &plan, false, None, now);
        let (ready, reason, message) = condition(&status, types::READY);
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("False", "BootstrapFailed")
        );
        for part in [
            "instance pitr-1's postgres container exited with code 1 after 3 restarts",
            "recovery ended before configured recovery target was reached",
            "spec.bootstrap.restore.target",
            "pgbackrest info",
            "delete Cluster pitr and create it again",
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
        let (degraded, reason, _) = condition(&status, types::DEGRADED);
        assert_eq!(
            (degraded.as_str(), reason.as_str()),
            ("True", "BootstrapFailed")
        );
    }

    #[test]
    fn an_instance_still_starting_is_provisioning_and_a_crash_after_being_ready_is_no_bootstrap_failure()
     {
        let cluster = restored_cluster("");
        let (observed, plan) = crashing(None);
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        let status = desired_status(&cluster, &observed, &plan, false, None, now.clone());
        assert_eq!(condition(&status, types::READY).1, reasons::PROVISIONING);

        let mut was_ready = restored_cluster("");
        was_ready.status = Some(ClusterStatus {
            postgres_version: Some(15),
            ..ClusterStatus::default()
        });
        let crash = crate::observe::crash::Crash {
            restarts: 1,
            exit_code: 1,
            cause: Some("FATAL:  could not write to file".to_owned()),
        };
        let (observed, plan) = crashing(Some(crash));
        let status = desired_status(&was_ready, &observed, &plan, false, None, now);
        let (_, reason, _) = condition(&status, types::READY);
        assert_eq!(reason, reasons::PROVISIONING);
    }
}
