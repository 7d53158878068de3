//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once.
//!
//! The algorithm is client-go's: a replica holds the Lease while it renews it within
//! `lease_duration`; others take it over once it has gone unrenewed for that long. Every write
//! is a compare-and-swap on `resourceVersion`, so two replicas racing for an expired Lease
//! cannot both win. A leader that cannot renew within `renew_deadline` — or finds another
//! holder — has lost: it must stop reconciling at once, and the operator exits non-zero so the
//! pod restarts as a follower.
//!
//! ```text
//!   follower ──(lease absent or expired: create / take over)──► leader
//!   leader ──(renewed every retry_period)──► leader
//!   leader ──(another holder, or no renewal for renew_deadline)──► lost (exit)
//! ```

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use tusk_runtime::Metrics;

/// A source of the current time; tests substitute their own.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// Lease timing, with client-go's defaults.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name; replicas that must exclude each other use the same one.
    pub name: String,
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This replica's identity, unique among the contenders (the pod name).
    pub identity: String,
    /// How long a Lease is honoured without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as observed, for one contender at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds a live Lease.
    Follow { holder: String },
}

/// Decides, purely, what `identity` should do with `lease` at `now`.
pub fn decide(
    lease: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .map(|s| SignedDuration::from_secs(i64::from(s)))
        .unwrap_or_else(|| {
            SignedDuration::try_from(default_duration).unwrap_or(SignedDuration::from_secs(15))
        });
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(renewed) if renewed + duration > now => Decision::Follow {
            holder: holder.to_owned(),
        },
        _ => Decision::TakeOver,
    }
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderLost {
    #[error("another replica ({holder}) holds the leader Lease {lease}")]
    TakenOver { lease: String, holder: String },
    #[error("could not renew the leader Lease {lease} for {seconds}s: {source}")]
    RenewFailed {
        lease: String,
        seconds: u64,
        #[source]
        source: kube::Error,
    },
}

/// One contender for a Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Clock,
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock: system_clock(),
            metrics: None,
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Reports leadership in the `tusk_leader` gauge.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One attempt to acquire or renew. Returns whether we hold the Lease afterwards; a lost
    /// compare-and-swap race is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = (self.clock)();
        let existing = self.api.get_opt(&self.config.name).await?;
        let decision = decide(
            existing.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            now,
            self.config.lease_duration,
        );
        let result = match decision {
            Decision::Follow { .. } => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.held_spec(now, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew | Decision::TakeOver => {
                let Some(mut lease) = existing else {
                    return Ok(false);
                };
                let previous = lease.spec.take();
                let spec = match (decision, previous) {
                    (Decision::Renew, Some(mut spec)) => {
                        spec.renew_time = Some(MicroTime(now));
                        spec.lease_duration_seconds = Some(self.duration_seconds());
                        spec
                    }
                    (_, previous) => self.held_spec(now, previous.as_ref()),
                };
                lease.spec = Some(spec);
                // `lease` carries the resourceVersion we read: a concurrent writer makes this a 409.
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn held_spec(&self, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous
                    .and_then(|p| p.lease_transitions)
                    .map_or(0, |t| t + 1),
            ),
            ..LeaseSpec::default()
        }
    }

    /// Waits until this replica holds the Lease. Errors talking to the API server are logged
    /// and retried: a follower keeps waiting.
    pub async fn acquire(&self) {
        let mut announced_holder = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    self.set_gauge(true);
                    return;
                }
                Ok(false) => {
                    let holder = self.current_holder().await;
                    if holder != announced_holder {
                        tracing::info!(lease = %self.config.name, holder = ?holder, "waiting for the leader Lease");
                        announced_holder = holder;
                    }
                }
                Err(error) => {
                    tracing::warn!(lease = %self.config.name, %error, "cannot read the leader Lease; retrying")
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    async fn current_holder(&self) -> Option<String> {
        self.api
            .get_opt(&self.config.name)
            .await
            .ok()
            .flatten()
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity)
    }

    /// Renews the Lease every `retry_period` and returns only when leadership is lost. The
    /// caller must stop reconciling as soon as this returns.
    pub async fn keep_renewing(&self) -> LeaderLost {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    self.set_gauge(false);
                    let holder = self
                        .current_holder()
                        .await
                        .unwrap_or_else(|| "unknown".to_owned());
                    return LeaderLost::TakenOver {
                        lease: self.config.name.clone(),
                        holder,
                    };
                }
                Err(error) if last_renewed.elapsed() >= self.config.renew_deadline => {
                    self.set_gauge(false);
                    return LeaderLost::RenewFailed {
                        lease: self.config.name.clone(),
                        seconds: self.config.renew_deadline.as_secs(),
                        source: error,
                    };
                }
                Err(error) => {
                    tracing::warn!(lease = %self.config.name, %error, "renewing the leader Lease failed; retrying")
                }
            }
        }
    }

    /// Gives the Lease up (on a clean shutdown) so a follower need not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        self.set_gauge(false);
        Ok(())
    }

    fn set_gauge(&self, leader: bool) {
        if let Some(metrics) = &self.metrics {
            metrics.set_leader(leader);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions_follow_the_lease() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "a", at(100), d), Decision::Create);
        assert_eq!(
            decide(Some(&held_by("a", 90, 15)), "a", at(100), d),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("b", 90, 15)), "a", at(100), d),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&held_by("b", 80, 15)), "a", at(100), d),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&held_by("b", 85, 15)), "a", at(100), d),
            Decision::TakeOver,
            "expiry is exclusive"
        );
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", at(100), d),
            Decision::TakeOver,
            "released lease"
        );
    }
}
