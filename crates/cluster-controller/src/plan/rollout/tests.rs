use super::*;
use std::collections::BTreeMap;

fn pod(role: Role, ready: bool, hash: &str) -> Option<ObservedPod> {
    Some(ObservedPod {
        role,
        ready,
        terminating: false,
        restart_hash: Some(hash.to_owned()),
        lag_bytes: Some(0),
        replay_lag_ms: None,
        restart_request: None,
        timeline: Some(1),
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
        restart_requests: BTreeMap::new(),
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
    let Some(RequestHandling::Settle(why)) = plan(&single, &healthy(1, 1, "a")).switchover_request
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

#[test]
fn an_instance_restart_request_recreates_only_that_replica() {
    let mut d = desired(3, "a");
    d.restart_requests.insert(2, "db-2=r1".to_owned());
    let mut observed = healthy(1, 3, "a");
    let step = plan(&d, &observed).step;
    assert!(
        matches!(step, Step::RestartPod { ordinal: 2, .. }),
        "{step:?}"
    );
    observed[1].pod.as_mut().unwrap().restart_request = Some("db-2=r1".to_owned());
    assert_eq!(plan(&d, &observed).step, Step::Idle);
}

#[test]
fn an_instance_restart_request_for_the_primary_switches_over_first() {
    let mut d = desired(2, "a");
    d.restart_requests.insert(1, "db-1=r1".to_owned());
    let mut observed = healthy(1, 2, "a");
    let step = plan(&d, &observed).step;
    assert!(
        matches!(step, Step::Switchover { from: 1, to: 2, .. }),
        "the other replica is current, so it takes over: {step:?}"
    );
    observed[0].pod = pod(Role::Replica, true, "a");
    observed[1].pod = pod(Role::Primary, true, "a");
    let step = plan(&d, &observed).step;
    assert!(
        matches!(step, Step::RestartPod { ordinal: 1, .. }),
        "{step:?}"
    );
    observed[0].pod.as_mut().unwrap().restart_request = Some("db-1=r1".to_owned());
    assert_eq!(plan(&d, &observed).step, Step::Idle);
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
