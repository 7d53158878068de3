//! The Pooler controller: PgBouncer in front of a Cluster, as a Deployment, a Service, a
//! ConfigMap with `pgbouncer.ini` and a PodDisruptionBudget (docs/operations/pooling.md).
//!
//! ```text
//!  watches                                reconcile (reconcile.rs)
//!  Pooler ───────────────────────────┐    observe: Cluster, its CA, our Secrets and children
//!  Deployment, ConfigMap, Service,   │    plan:    secrets.rs, config.rs, children.rs (pure)
//!   PodDisruptionBudget (owned) ─────┼──► apply:   Secrets → auth SQL on the primary (auth.rs)
//!  Secrets (owned, by label) ────────┤             → children → each pod's console (pods.rs)
//!  Cluster (→ its Poolers) ──────────┘    status:  status.rs (pure)
//!                                         cleanup: finalizer; the last Pooler of a Cluster
//!                                                  drops tusk_pooler and its lookup function
//! ```
//!
//! Modules: [`config`] renders `pgbouncer.ini` and the auth file, [`auth`] plans and runs the
//! auth_query role's SQL, [`children`] and [`secrets`] build the objects, [`admin`] speaks to
//! PgBouncer's admin console and [`pods`] uses it on every pod, [`status`] turns a pass into
//! conditions, [`error`] classifies failures. Everything PgBouncer-facing is tested against
//! real PgBouncer in front of real PostgreSQL (tests/pgbouncer_real.rs).

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod children;
pub mod config;
pub mod error;
pub mod exporter;
pub mod pods;
pub mod rbac;
pub mod reconcile;
pub mod secrets;
pub mod status;
#[cfg(feature = "test-support")]
pub mod testing;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tusk_api::labels::{COMPONENT, MANAGED_BY, MANAGER};
use tusk_api::{Cluster, Pooler};
use tusk_runtime::Context;
use tusk_runtime::context::scoped_api as api;

pub use error::Error;
pub use reconcile::{State, error_policy, reconcile};

/// Runs the Pooler controller until its watches end.
pub async fn run(ctx: Context) {
    let namespaces = ctx.config.watch_scopes();
    let state = Arc::new(State::new(ctx));
    futures::future::join_all(
        namespaces
            .into_iter()
            .map(|namespace| run_in(state.clone(), namespace)),
    )
    .await;
}

/// One controller over `namespace` (`None`: all namespaces).
async fn run_in(state: Arc<State>, namespace: Option<String>) {
    let client = state.ctx.client.clone();
    let namespace = namespace.as_deref();
    let (reader, writer) = reflector::store();
    let poolers = watcher(
        api::<Pooler>(&client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(tusk_runtime::store::prune)
    .reflect(writer)
    .touched_objects();
    // Only what tusk made for Poolers (and their Clusters' auth role): not every object.
    let ours = || {
        watcher::Config::default().labels(&format!(
            "{COMPONENT}={},{MANAGED_BY}={MANAGER}",
            children::COMPONENT
        ))
    };
    let by_cluster = reader.clone();
    let _counted = state.ctx.metrics.follow_store(namespace, reader.clone());
    Controller::for_stream(poolers, reader)
        .owns(api::<Deployment>(&client, namespace), ours())
        .owns(api::<ConfigMap>(&client, namespace), ours())
        .owns(api::<Service>(&client, namespace), ours())
        .owns(api::<PodDisruptionBudget>(&client, namespace), ours())
        .owns(api::<Secret>(&client, namespace), ours())
        .watches(
            api::<Cluster>(&client, namespace),
            watcher::Config::default(),
            move |cluster| poolers_of_cluster(&by_cluster, &cluster),
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// The Poolers in front of `cluster`: a change of the Cluster (it became Ready, its primary
/// moved) wakes them.
fn poolers_of_cluster(store: &Store<Pooler>, cluster: &Cluster) -> Vec<ObjectRef<Pooler>> {
    store
        .state()
        .iter()
        .filter(|pooler| {
            pooler.metadata.namespace == cluster.metadata.namespace
                && Some(&pooler.spec.cluster.name) == cluster.metadata.name.as_ref()
        })
        .map(|pooler| ObjectRef::from_obj(pooler.as_ref()))
        .collect()
}
