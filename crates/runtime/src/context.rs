//! What a controller's reconcile function receives.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};

use crate::error::Backoff;
use crate::metrics::{ControllerMetrics, Metrics};

/// The seven controllers. The name is used for the field manager, the metrics label, the
/// event reporter and `--controllers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ControllerKind {
    Cluster,
    User,
    Binding,
    Backup,
    Schedule,
    Upgrade,
    Pooler,
}

impl ControllerKind {
    /// Every controller, in the order the operator starts them.
    pub const ALL: [ControllerKind; 7] = [
        ControllerKind::Cluster,
        ControllerKind::User,
        ControllerKind::Binding,
        ControllerKind::Backup,
        ControllerKind::Schedule,
        ControllerKind::Upgrade,
        ControllerKind::Pooler,
    ];

    /// Short name: `cluster`, `user`, `binding`, `backup`, `schedule`, `upgrade`, `pooler`.
    pub fn name(self) -> &'static str {
        match self {
            ControllerKind::Cluster => "cluster",
            ControllerKind::User => "user",
            ControllerKind::Binding => "binding",
            ControllerKind::Backup => "backup",
            ControllerKind::Schedule => "schedule",
            ControllerKind::Upgrade => "upgrade",
            ControllerKind::Pooler => "pooler",
        }
    }

    /// The field manager for server-side apply: `tusk-<name>-controller`.
    pub fn field_manager(self) -> &'static str {
        match self {
            ControllerKind::Cluster => "tusk-cluster-controller",
            ControllerKind::User => "tusk-user-controller",
            ControllerKind::Binding => "tusk-binding-controller",
            ControllerKind::Backup => "tusk-backup-controller",
            ControllerKind::Schedule => "tusk-schedule-controller",
            ControllerKind::Upgrade => "tusk-upgrade-controller",
            ControllerKind::Pooler => "tusk-pooler-controller",
        }
    }

    /// The finalizer the controller puts on objects it must clean up after.
    pub fn finalizer(self) -> String {
        format!("{}/{}", tusk_api::GROUP, self.name())
    }
}

/// Default instance image; `{major}` is replaced by the Cluster's major version.
pub const DEFAULT_POSTGRES_IMAGE: &str = "ghcr.io/tusk-operator/postgres:{major}";
/// Default metrics exporter image.
pub const DEFAULT_EXPORTER_IMAGE: &str = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1";

/// Default PgBouncer image for Poolers (images/pgbouncer builds it).
pub const DEFAULT_PGBOUNCER_IMAGE: &str = "ghcr.io/tusk-operator/pgbouncer:1.18";

/// Settings shared by every controller in the process.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Namespaces to watch; empty means all.
    pub namespaces: BTreeSet<String>,
    /// How long a successful reconcile waits before checking again. Drift inside PostgreSQL
    /// raises no watch event, so this bounds how long drift can last.
    pub requeue_interval: Duration,
    /// Shortest and longest wait after a transient error.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// This replica's identity (the pod name in a cluster), for events and the Lease.
    pub instance: String,
    /// The PostgreSQL instance image, `{major}` replaced by the Cluster's major version
    /// (images/postgres builds it).
    pub postgres_image: String,
    /// The postgres_exporter image for the metrics sidecar.
    pub exporter_image: String,
    /// The PgBouncer image of a Pooler's pods.
    pub pgbouncer_image: String,
    /// The image of a Pooler pod's metrics sidecar (`tusk-operator pgbouncer-exporter`): the
    /// operator's own, which the chart passes. `None`: Poolers get no metrics sidecar.
    pub pooler_exporter_image: Option<String>,
}

impl OperatorConfig {
    /// The scopes a controller runs one watch set for: each listed namespace, or `None` (all
    /// namespaces) when none is listed.
    pub fn watch_scopes(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            self.namespaces.iter().cloned().map(Some).collect()
        }
    }
}

/// The API of `K` in one watch scope: a namespace, or `None` for all namespaces.
pub fn scoped_api<K>(client: &kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => kube::Api::namespaced(client.clone(), namespace),
        None => kube::Api::all(client.clone()),
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            namespaces: BTreeSet::new(),
            requeue_interval: Duration::from_secs(300),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            instance: "tusk-operator".to_owned(),
            postgres_image: DEFAULT_POSTGRES_IMAGE.to_owned(),
            exporter_image: DEFAULT_EXPORTER_IMAGE.to_owned(),
            pgbouncer_image: DEFAULT_PGBOUNCER_IMAGE.to_owned(),
            pooler_exporter_image: None,
        }
    }
}

/// What each reconcile receives: a client, the controller's identity, its metrics, an event
/// recorder and the shared configuration. Cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub kind: ControllerKind,
    pub config: Arc<OperatorConfig>,
    pub metrics: ControllerMetrics,
    pub recorder: Recorder,
    pub(crate) backoff: Backoff,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("kind", &self.kind)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: kube::Client,
        kind: ControllerKind,
        config: Arc<OperatorConfig>,
        metrics: &Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: kind.field_manager().to_owned(),
            instance: Some(config.instance.clone()),
        };
        let backoff = Backoff::new(config.backoff_min, config.backoff_max);
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            metrics: metrics.controller(kind),
            client,
            kind,
            config,
            backoff,
        }
    }

    /// The field manager of this controller.
    pub fn field_manager(&self) -> &'static str {
        self.kind.field_manager()
    }

    /// What a successful reconcile returns: check again after the bounded requeue interval.
    /// Also resets the object's backoff.
    pub fn requeue<K: kube::Resource>(&self, object: &K) -> Action {
        self.backoff.reset(object);
        self.metrics.record_success();
        Action::requeue(self.config.requeue_interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_scopes_are_the_listed_namespaces_or_all() {
        assert_eq!(OperatorConfig::default().watch_scopes(), vec![None]);
        let config = OperatorConfig {
            namespaces: ["shop".to_owned(), "billing".to_owned()].into(),
            ..OperatorConfig::default()
        };
        assert_eq!(
            config.watch_scopes(),
            vec![Some("billing".to_owned()), Some("shop".to_owned())]
        );
    }
}
