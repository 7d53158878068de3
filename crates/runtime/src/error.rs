//! How a failed reconcile is retried.
//!
//! Each controller has one `thiserror` enum implementing [`ReconcileError`]: every variant
//! knows its condition reason (also the metric label) and whether it is permanent. A permanent
//! error (bad spec, a name owned elsewhere) waits for the object to change; retrying would only
//! fail again. A transient one (API server unavailable, database restarting) is retried with
//! exponential backoff and jitter, per object, reset by the next success.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use kube::runtime::controller::Action;

use crate::context::Context;

/// What the runtime needs to know about a controller's error.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// CamelCase reason for conditions and the `reason` metric label. Must come from a fixed
    /// set: never include object names or other unbounded text.
    fn reason(&self) -> &'static str;

    /// Whether retrying without a change to the object is pointless.
    fn is_permanent(&self) -> bool;
}

/// The `error_policy` every controller delegates to: records the error metric and decides
/// when to try again.
pub fn error_policy<K: kube::Resource, E: ReconcileError>(
    object: &K,
    error: &E,
    ctx: &Context,
) -> Action {
    ctx.metrics.record_error(error.reason());
    let name = object.meta().name.as_deref().unwrap_or_default();
    let namespace = object.meta().namespace.as_deref().unwrap_or_default();
    if error.is_permanent() {
        tracing::warn!(%namespace, %name, reason = error.reason(), error = %error, "reconcile failed; waiting for a change");
        ctx.backoff.reset(object);
        Action::await_change()
    } else {
        let delay = ctx.backoff.next_delay(object);
        tracing::info!(%namespace, %name, reason = error.reason(), error = %error, retry_in_ms = delay.as_millis() as u64, "reconcile failed; retrying");
        Action::requeue(delay)
    }
}

/// Per-object exponential backoff with jitter, built on `backon`.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    builder: ExponentialBuilder,
    attempts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            attempts: Arc::default(),
        }
    }

    fn key<K: kube::Resource>(object: &K) -> String {
        let meta = object.meta();
        match &meta.uid {
            Some(uid) => uid.clone(),
            None => format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
        }
    }

    /// The wait before the next attempt for `object`, growing with each consecutive failure.
    pub(crate) fn next_delay<K: kube::Resource>(&self, object: &K) -> Duration {
        let attempt = {
            let mut attempts = self
                .attempts
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = attempts.entry(Self::key(object)).or_insert(0);
            *count += 1;
            *count
        };
        self.builder
            .build()
            .nth(attempt - 1)
            .unwrap_or(Duration::from_secs(300))
    }

    /// Forgets `object`'s failures.
    pub(crate) fn reset<K: kube::Resource>(&self, object: &K) {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        attempts.remove(&Self::key(object));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn object(uid: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("x".into());
        cm.metadata.uid = Some(uid.into());
        cm
    }

    #[test]
    fn backoff_grows_per_object_and_resets() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let a = object("a");
        let b = object("b");
        let first = backoff.next_delay(&a);
        let mut last = first;
        for _ in 0..5 {
            last = backoff.next_delay(&a);
        }
        // Jitter adds up to one extra base delay, so compare against the un-jittered floors.
        assert!(first < Duration::from_millis(250), "{first:?}");
        assert!(last >= Duration::from_millis(3200), "{last:?}");
        assert!(
            backoff.next_delay(&b) < Duration::from_millis(250),
            "another object starts fresh"
        );
        backoff.reset(&a);
        assert!(
            backoff.next_delay(&a) < Duration::from_millis(250),
            "reset starts over"
        );
    }

    #[test]
    fn backoff_is_capped() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let a = object("a");
        for _ in 0..40 {
            assert!(backoff.next_delay(&a) <= Duration::from_secs(4));
        }
    }
}
