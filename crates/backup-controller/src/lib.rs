//! The Backup controller: one pgBackRest Job per Backup, run against the primary's
//! pgBackRest TLS server, with the backup set's label, sizes and WAL range in status.
//!
//! ```text
//!  watches                                reconcile (reconcile.rs)
//!  Backup ─────────────────────────┐      Cluster Ready? ─► job.rs (pure): ConfigMap + Job
//!  Job (owned, label               ├────► Job state + pod termination message
//!       tusk.dev/backup)           │        ─► status.rs (pure): phase, conditions, report
//!  Cluster (→ its open Backups) ───┘      deletionPolicy Expire: finalizer + expire Job
//! ```
//!
//! A Backup is one-shot: one Job (deterministic name, created only if absent, never after
//! the Backup finished), `backoffLimit: 0`, and a failure reported once — a new Backup is the
//! retry. The controller reads the result from the container's termination message, so it
//! needs neither `pods/exec` nor `pods/log`.

#![forbid(unsafe_code)]

pub mod error;
pub mod job;
pub mod rbac;
pub mod reconcile;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use tusk_api::labels::{COMPONENT, MANAGED_BY, MANAGER};
use tusk_api::{Backup, Cluster};
use tusk_runtime::Context;
use tusk_runtime::context::scoped_api as api;

pub use error::Error;
pub use reconcile::{Clock, State, error_policy, reconcile};

/// Runs the Backup controller until its watches end.
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

async fn run_in(state: Arc<State>, namespace: Option<String>) {
    let client = state.ctx.client.clone();
    let namespace = namespace.as_deref();
    let controller = Controller::new(
        api::<Backup>(&client, namespace),
        watcher::Config::default(),
    );
    let store = controller.store();
    let _counted = state.ctx.metrics.follow_store(namespace, store.clone());
    // Only Jobs of Backups (the Cluster's stanza Job shares the component label).
    let jobs = watcher::Config::default().labels(&format!(
        "{COMPONENT}={},{MANAGED_BY}={MANAGER},{}",
        job::COMPONENT,
        job::BACKUP_LABEL
    ));
    controller
        .owns(api::<Job>(&client, namespace), jobs)
        .watches(
            api::<Cluster>(&client, namespace),
            watcher::Config::default(),
            move |cluster| open_backups_of_cluster(&store, &cluster),
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// The unfinished Backups of `cluster`: the Cluster becoming Ready lets them start.
fn open_backups_of_cluster(store: &Store<Backup>, cluster: &Cluster) -> Vec<ObjectRef<Backup>> {
    store
        .state()
        .iter()
        .filter(|backup| {
            backup.metadata.namespace == cluster.metadata.namespace
                && Some(&backup.spec.cluster.name) == cluster.metadata.name.as_ref()
                && reconcile::is_open(backup)
        })
        .map(|backup| ObjectRef::from_obj(backup.as_ref()))
        .collect()
}
