//! Leader election against the in-memory API: two contenders, one leader at a time, hand-over
//! when the leader goes, and loss detected by the old leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tusk_operator::leader::{Clock, Elector, LeaseConfig};
use tusk_runtime::rbac::{disallowed_calls, test_support::RecordingClient};

async fn fake_client() -> kube::Client {
    kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .expect("in-memory API")
}

/// A clock tests move by hand.
fn manual_clock(start: i64) -> (Clock, Arc<AtomicI64>) {
    let now = Arc::new(AtomicI64::new(start));
    let reader = now.clone();
    let clock: Clock = Arc::new(move || {
        Timestamp::from_second(reader.load(Ordering::SeqCst)).expect("valid time")
    });
    (clock, now)
}

fn config(identity: &str) -> LeaseConfig {
    let mut config = LeaseConfig::new("tusk-operator", "tusk-system", identity);
    config.lease_duration = Duration::from_secs(15);
    config
}

#[tokio::test]
async fn only_one_contender_holds_the_lease_and_the_other_takes_over_after_expiry() {
    let client = fake_client().await;
    let (clock, now) = manual_clock(1_000);
    let a = Elector::new(client.clone(), config("pod-a")).with_clock(clock.clone());
    let b = Elector::new(client.clone(), config("pod-b")).with_clock(clock.clone());

    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "first contender creates the lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "second contender follows"
    );

    now.fetch_add(10, Ordering::SeqCst);
    assert!(a.try_acquire_or_renew().await.unwrap(), "leader renews");
    now.fetch_add(10, Ordering::SeqCst);
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "renewed lease is still live"
    );

    // The leader stops renewing (crashed); once the lease is older than its duration, B wins.
    now.fetch_add(16, Ordering::SeqCst);
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "follower takes over an expired lease"
    );
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "old leader finds another holder"
    );

    let lease = Api::<Lease>::namespaced(client, "tusk-system")
        .get("tusk-operator")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(15));
}

#[tokio::test]
async fn released_lease_is_taken_over_at_once() {
    let client = fake_client().await;
    let (clock, _) = manual_clock(5_000);
    let a = Elector::new(client.clone(), config("pod-a")).with_clock(clock.clone());
    let b = Elector::new(client.clone(), config("pod-b")).with_clock(clock);
    assert!(a.try_acquire_or_renew().await.unwrap());
    a.release().await.unwrap();
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "no waiting for expiry after a release"
    );
}

/// Two replicas run the full acquire → work → renew loop; only one ever does work at a time,
/// and when the leader dies the follower starts working.
#[tokio::test]
async fn two_replicas_never_reconcile_at_once() {
    let client = fake_client().await;
    let working = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let mut config_a = config("pod-a");
    let mut config_b = config("pod-b");
    for c in [&mut config_a, &mut config_b] {
        c.lease_duration = Duration::from_secs(1);
        c.renew_deadline = Duration::from_millis(700);
        c.retry_period = Duration::from_millis(100);
    }

    let replica = |elector: Elector| {
        let working = working.clone();
        let most_at_once = most_at_once.clone();
        async move {
            elector.acquire().await;
            let now_working = working.fetch_add(1, Ordering::SeqCst) + 1;
            most_at_once.fetch_max(now_working, Ordering::SeqCst);
            // "Reconciling" until leadership is lost, as the operator does.
            let lost = elector.keep_renewing().await;
            working.fetch_sub(1, Ordering::SeqCst);
            lost
        }
    };
    let a = tokio::spawn(replica(Elector::new(client.clone(), config_a)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(replica(Elector::new(client.clone(), config_b)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        working.load(Ordering::SeqCst),
        1,
        "exactly one replica works"
    );

    // The leader's pod dies: its task stops without releasing the lease.
    a.abort();
    let _ = a.await;
    working.fetch_sub(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    assert_eq!(working.load(Ordering::SeqCst), 1, "the follower took over");
    assert_eq!(most_at_once.load(Ordering::SeqCst), 1, "never two at once");
    let holder = Api::<Lease>::namespaced(client, "tusk-system")
        .get("tusk-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("pod-b"));
    b.abort();
}

#[tokio::test]
async fn leader_that_is_taken_over_stops() {
    let client = fake_client().await;
    let mut fast = config("pod-a");
    fast.retry_period = Duration::from_millis(50);
    let a = Elector::new(client.clone(), fast);
    a.acquire().await;
    // Another replica forcibly takes the lease (as after a partition healed).
    let api = Api::<Lease>::namespaced(client.clone(), "tusk-system");
    let mut lease = api.get("tusk-operator").await.unwrap();
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("pod-b".into());
    }
    api.replace("tusk-operator", &Default::default(), &lease)
        .await
        .unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), a.keep_renewing())
        .await
        .expect("loss is noticed");
    assert!(lost.to_string().contains("pod-b"), "{lost}");
}

#[tokio::test]
async fn leader_election_makes_only_calls_the_chart_grants() {
    let recording = RecordingClient::new(fake_client().await);
    let (clock, now) = manual_clock(1_000);
    let a = Elector::new(recording.client(), config("pod-a")).with_clock(clock.clone());
    let b = Elector::new(recording.client(), config("pod-b")).with_clock(clock);
    a.try_acquire_or_renew().await.unwrap();
    b.try_acquire_or_renew().await.unwrap();
    a.try_acquire_or_renew().await.unwrap();
    now.fetch_add(100, Ordering::SeqCst);
    b.try_acquire_or_renew().await.unwrap();
    b.release().await.unwrap();
    let calls = recording.calls();
    assert!(calls.iter().any(|c| c.verb == "create"), "{calls:?}");
    assert!(calls.iter().any(|c| c.verb == "update"), "{calls:?}");
    assert_eq!(
        disallowed_calls(&[], &calls),
        vec![],
        "calls not granted by rbac::RUNTIME_RULES"
    );
}
