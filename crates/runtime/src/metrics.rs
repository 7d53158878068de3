//! Prometheus metrics of the operator itself, in OpenMetrics text.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `tusk_reconcile_total` | counter | `controller`, `result` (`success`, `error`) |
//! | `tusk_reconcile_errors_total` | counter | `controller`, `reason` |
//! | `tusk_reconcile_duration_seconds` | histogram | `controller` |
//! | `tusk_managed_objects` | gauge | `controller` |
//! | `tusk_leader` | gauge | — (1 while this replica holds the Lease) |
//!
//! Label values come from fixed sets (controller names, `result`, error reasons): never an
//! object's name or namespace, so the number of series stays bounded.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::{Lookup, Store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::context::ControllerKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: &'static str,
    /// `success` or `error`.
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    reason: &'static str,
}

const SUCCESS: &str = "success";
const ERROR: &str = "error";

/// Duration buckets, seconds: reconciles range from a cache read (ms) to a SQL pass (s).
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Objects seen per (controller, watched namespace or `None` for all).
type ScopeCounts = BTreeMap<(&'static str, Option<String>), usize>;

/// The registry and every family; one per process.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ResultLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    managed: Family<ControllerLabels, Gauge>,
    /// What each controller's watch scopes (one per watched namespace, or all) hold; the
    /// `managed_objects` gauge is their sum.
    managed_by_scope: Arc<Mutex<ScopeCounts>>,
    leader: Gauge<i64, AtomicI64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tusk");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS.iter().copied())
        });
        let managed = Family::<ControllerLabels, Gauge>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "reconcile",
            "Reconciles finished, by controller and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by controller and reason",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile, by controller",
            durations.clone(),
        );
        registry.register(
            "managed_objects",
            "Objects of its kind a controller currently sees",
            managed.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease, else 0",
            leader.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            durations,
            managed,
            managed_by_scope: Arc::default(),
            leader,
        }
    }

    /// The handle a controller records through.
    pub fn controller(&self, kind: ControllerKind) -> ControllerMetrics {
        let controller = kind.name();
        // Touch the series so a controller that never failed still exports zeroes.
        let _ = self.reconciles.get_or_create(&ResultLabels {
            controller,
            result: SUCCESS,
        });
        let _ = self.reconciles.get_or_create(&ResultLabels {
            controller,
            result: ERROR,
        });
        let _ = self.managed.get_or_create(&ControllerLabels { controller });
        let _ = self
            .durations
            .get_or_create(&ControllerLabels { controller });
        ControllerMetrics {
            controller,
            metrics: self.clone(),
        }
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// All metrics in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One controller's view of the metrics.
#[derive(Clone)]
pub struct ControllerMetrics {
    controller: &'static str,
    metrics: Metrics,
}

impl std::fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerMetrics")
            .field("controller", &self.controller)
            .finish()
    }
}

impl ControllerMetrics {
    /// Starts timing a reconcile; the duration is recorded when the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer {
        ReconcileTimer {
            started: Instant::now(),
            histogram: self
                .metrics
                .durations
                .get_or_create(&ControllerLabels {
                    controller: self.controller,
                })
                .clone(),
        }
    }

    pub(crate) fn record_success(&self) {
        self.metrics
            .reconciles
            .get_or_create(&ResultLabels {
                controller: self.controller,
                result: SUCCESS,
            })
            .inc();
    }

    pub(crate) fn record_error(&self, reason: &'static str) {
        self.metrics
            .reconciles
            .get_or_create(&ResultLabels {
                controller: self.controller,
                result: ERROR,
            })
            .inc();
        self.metrics
            .errors
            .get_or_create(&ErrorLabels {
                controller: self.controller,
                reason,
            })
            .inc();
    }

    /// Records how many objects of its kind the controller's watch of `scope` (a namespace, or
    /// `None` for all) holds; the gauge shows the sum over the controller's scopes. Controllers
    /// call [`follow_store`](Self::follow_store), which calls this.
    pub fn set_managed_objects(&self, scope: Option<&str>, count: usize) {
        let total: usize = {
            let mut scopes = self
                .metrics
                .managed_by_scope
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            scopes.insert((self.controller, scope.map(str::to_owned)), count);
            scopes
                .iter()
                .filter(|((controller, _), _)| *controller == self.controller)
                .map(|(_, count)| count)
                .sum()
        };
        self.metrics
            .managed
            .get_or_create(&ControllerLabels {
                controller: self.controller,
            })
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }
}

/// How often `tusk_managed_objects` is brought up to date with a controller's store.
pub const MANAGED_REFRESH: Duration = Duration::from_secs(15);

impl ControllerMetrics {
    /// Keeps `tusk_managed_objects` following `store` (the controller's reflector of `scope`),
    /// every [`MANAGED_REFRESH`] — also after the last object is deleted, when no reconcile
    /// runs — until the returned guard is dropped.
    pub fn follow_store<K>(&self, scope: Option<&str>, store: Store<K>) -> StoreFollower
    where
        K: Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
    {
        let metrics = self.clone();
        let scope = scope.map(str::to_owned);
        StoreFollower(tokio::spawn(async move {
            let mut tick = tokio::time::interval(MANAGED_REFRESH);
            loop {
                tick.tick().await;
                metrics.set_managed_objects(scope.as_deref(), store.len());
            }
        }))
    }
}

/// Stops following a store when dropped (see [`ControllerMetrics::follow_store`]).
#[derive(Debug)]
pub struct StoreFollower(tokio::task::JoinHandle<()>);

impl Drop for StoreFollower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    started: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_gauge_follows_the_store_down_to_zero() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::runtime::watcher::Event;
        let metrics = Metrics::new();
        let (store, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        let object = |name: &str| {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(name.to_owned());
            cm.metadata.namespace = Some("shop".to_owned());
            cm
        };
        writer.apply_watcher_event(&Event::Apply(object("a")));
        writer.apply_watcher_event(&Event::Apply(object("b")));
        let guard = metrics
            .controller(ControllerKind::User)
            .follow_store(Some("shop"), store);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            metrics
                .encode()
                .contains("tusk_managed_objects{controller=\"user\"} 2")
        );
        writer.apply_watcher_event(&Event::Delete(object("a")));
        writer.apply_watcher_event(&Event::Delete(object("b")));
        tokio::time::sleep(MANAGED_REFRESH).await;
        assert!(
            metrics
                .encode()
                .contains("tusk_managed_objects{controller=\"user\"} 0")
        );
        drop(guard);
    }

    #[test]
    fn exposition_has_every_family_with_bounded_labels() {
        let metrics = Metrics::new();
        let user = metrics.controller(ControllerKind::User);
        {
            let _timer = user.reconcile_timer();
        }
        user.record_success();
        user.record_error("ClusterNotReady");
        user.set_managed_objects(Some("shop"), 2);
        user.set_managed_objects(Some("billing"), 4);
        user.set_managed_objects(Some("shop"), 1);
        metrics
            .controller(ControllerKind::Backup)
            .set_managed_objects(None, 7);
        metrics.set_leader(true);
        let text = metrics.encode();
        for line in [
            "# TYPE tusk_reconcile counter",
            "tusk_reconcile_total{controller=\"user\",result=\"success\"} 1",
            "tusk_reconcile_total{controller=\"user\",result=\"error\"} 1",
            "tusk_reconcile_errors_total{controller=\"user\",reason=\"ClusterNotReady\"} 1",
            "# TYPE tusk_reconcile_duration_seconds histogram",
            "tusk_reconcile_duration_seconds_count{controller=\"user\"} 1",
            "tusk_managed_objects{controller=\"user\"} 5",
            "tusk_managed_objects{controller=\"backup\"} 7",
            "tusk_leader 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
    }
}
