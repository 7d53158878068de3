//! The PostgresUser controller: a role in a Cluster's PostgreSQL — with the databases it owns,
//! its grants and a SCRAM password — kept equal to its spec by idempotent SQL, and its
//! credentials in the Secret `<cluster>-<user>-credentials`.
//!
//! ```text
//!  watches                          reconcile (reconcile.rs)
//!  PostgresUser ──────────────┐     observe: Cluster, Secrets, catalog (catalog.rs)
//!  Secret  (owned, by label) ─┼──►  plan:    plan.rs (pure; spec × catalog → SQL)
//!  Cluster (→ its users) ─────┤     apply:   Secret, then engine.rs (SQL), then status
//!  Secret  (spec.password ────┘     cleanup: finalizer; drop or retain the role
//!           .secret, metadata)
//! ```
//!
//! Modules: [`plan`] decides, [`catalog`] observes, [`engine`] runs plans (batched and
//! parallel for many roles — `cargo xtask bench users` uses it directly), [`credentials`]
//! builds the Secret and decides rotations, [`password`] generates and checks passwords,
//! [`primary`] finds and caches connections to the Cluster's primary, [`sql`] quotes,
//! [`error`] classifies failures.
//!
//! Namespaces: with `--namespace` given several times, one controller runs per namespace
//! (each with its own watches, sharing connections and password checks); with none, one
//! controller watches all namespaces.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod credentials;
pub mod engine;
pub mod error;
pub mod password;
pub mod plan;
pub mod primary;
pub mod rbac;
pub mod reconcile;
pub mod sql;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use tusk_api::labels::{COMPONENT, MANAGED_BY, MANAGER};
use tusk_api::{Cluster, PostgresUser};
use tusk_runtime::Context;
use tusk_runtime::context::scoped_api as api;

pub use error::Error;
pub use reconcile::{State, error_policy, reconcile};

/// Runs the PostgresUser controller until its watches end.
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
    let users = watcher(
        api::<PostgresUser>(&client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(tusk_runtime::store::prune)
    .reflect(writer)
    .touched_objects();
    let credentials = watcher::Config::default().labels(&format!(
        "{COMPONENT}={},{MANAGED_BY}={MANAGER}",
        credentials::COMPONENT
    ));
    // Metadata only: the controller never holds other Secrets' contents in memory.
    let password_secrets = watcher(
        api::<PartialObjectMeta<Secret>>(&client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects();
    let (by_cluster, by_secret) = (reader.clone(), reader.clone());
    let _counted = state.ctx.metrics.follow_store(namespace, reader.clone());
    Controller::for_stream(users, reader)
        .owns(api::<Secret>(&client, namespace), credentials)
        .watches(
            api::<Cluster>(&client, namespace),
            watcher::Config::default(),
            move |cluster| users_of_cluster(&by_cluster, &cluster),
        )
        .watches_stream(password_secrets, move |secret| {
            users_of_password_secret(&by_secret, &secret)
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// The PostgresUsers of `cluster`: a change of the Cluster (it became Ready, say) wakes them.
fn users_of_cluster(
    store: &Store<PostgresUser>,
    cluster: &Cluster,
) -> Vec<ObjectRef<PostgresUser>> {
    store
        .state()
        .iter()
        .filter(|user| {
            user.metadata.namespace == cluster.metadata.namespace
                && Some(&user.spec.cluster.name) == cluster.metadata.name.as_ref()
        })
        .map(|user| ObjectRef::from_obj(user.as_ref()))
        .collect()
}

/// The PostgresUsers whose `spec.password.secret` is `secret`: a changed password is applied.
fn users_of_password_secret(
    store: &Store<PostgresUser>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<PostgresUser>> {
    store
        .state()
        .iter()
        .filter(|user| {
            user.metadata.namespace == secret.metadata.namespace
                && user
                    .spec
                    .password
                    .secret
                    .as_ref()
                    .is_some_and(|s| Some(&s.name) == secret.metadata.name.as_ref())
        })
        .map(|user| ObjectRef::from_obj(user.as_ref()))
        .collect()
}
