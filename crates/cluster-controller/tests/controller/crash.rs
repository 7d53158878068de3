//! A crash-looping first instance reported as a failed bootstrap, with its cause.

use super::*;

/// What the kubelet reports for a container in CrashLoopBackOff, as real Patroni 3.0.2 leaves
/// it (tests/restore_patroni_real.rs): as PID 1 it exits 0 even when it gave up, and its
/// traceback fills the termination message, so PostgreSQL's FATAL line is only in the log the
/// controller reads (`previous=true`).
#[tokio::test]
async fn a_crash_looping_first_instance_is_reported_as_a_failed_bootstrap_with_its_cause() {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    };
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    let sts = h.api::<StatefulSet>().get("db-1").await.unwrap();
    let postgres = &sts
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    assert_eq!(postgres.name, "postgres");
    assert_eq!(
        postgres.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError"),
        "the log's end must reach the termination message"
    );
    h.start_pods(1, false).await;
    h.logs.set(
        NS,
        "db-1-0",
        "postgres",
        true,
        "2026-11-30 10:01:02,003 INFO: Running custom bootstrap script\n\
         2026-11-30 10:01:09 UTC [61] FATAL:  could not create directory \"pg_wal\": Permission denied\n\
         2026-11-30 10:01:10,004 INFO: removing initialize key after failed attempt to bootstrap the cluster\n\
         Traceback (most recent call last):\n\
         \x20   raise PatroniFatalException('Failed to bootstrap cluster')\n\
         patroni.exceptions.PatroniFatalException: 'Failed to bootstrap cluster'\n",
    );
    let api = h.api::<Pod>();
    let mut pod = api.get("db-1-0").await.unwrap();
    pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "postgres".into(),
        restart_count: 5,
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        last_state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                reason: Some("Completed".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    api.replace_status("db-1-0", &PostParams::default(), &pod)
        .await
        .unwrap();
    h.reconcile().await;
    let status = h.cluster().await.status.unwrap();
    let ready = find_condition(&status.conditions, types::READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "BootstrapFailed")
    );
    for part in [
        "exited with code 0 after 5 restarts",
        "FATAL:  could not create directory \"pg_wal\": Permission denied",
        "PatroniFatalException: 'Failed to bootstrap cluster'",
        "kubectl logs db-1-0 -c postgres --previous",
    ] {
        assert!(
            ready.message.contains(part),
            "{part:?} in {}",
            ready.message
        );
    }
    let events = cluster_events(&h).await;
    assert!(
        events
            .iter()
            .any(|(type_, reason, _)| type_ == "Warning" && reason == "BootstrapFailed"),
        "{events:?}"
    );
    // Steady: the same crash again writes nothing.
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.recording.writes(), vec![]);
    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![],
        "reading the previous log is granted by the chart"
    );
}
