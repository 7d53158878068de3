//! The BackupSchedule controller: Backups of a Cluster on a cron schedule read in a time
//! zone, the way a CronJob creates Jobs — without stacking, with history limits, and with at
//! most one catch-up run after the operator was down.
//!
//! ```text
//!  watches                                  reconcile (reconcile.rs)
//!  BackupSchedule ───────────────────┐      parse:   cron.rs (five fields, IANA zone, DST)
//!  Backup (owned, label              ├────► plan:    plan.rs (pure: create/skip/prune, next)
//!         tusk.dev/schedule)         │      apply:   create Backup, delete pruned, status
//!  Cluster (→ its schedules) ────────┘      requeue: at the next scheduled time
//! ```
//!
//! Time comes from [`reconcile::State::clock`], so tests move it instead of sleeping.

#![forbid(unsafe_code)]

pub mod cron;
pub mod error;
pub mod plan;
pub mod rbac;
pub mod reconcile;

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use tusk_api::labels;
use tusk_api::{Backup, BackupSchedule, Cluster};
use tusk_runtime::Context;
use tusk_runtime::context::scoped_api as api;

pub use error::Error;
pub use reconcile::{Clock, State, error_policy, reconcile};

/// Runs the BackupSchedule controller until its watches end.
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
        api::<BackupSchedule>(&client, namespace),
        watcher::Config::default(),
    );
    let store = controller.store();
    let _counted = state.ctx.metrics.follow_store(namespace, store.clone());
    controller
        // Only Backups some schedule created: the label is on every one of them.
        .owns(
            api::<Backup>(&client, namespace),
            watcher::Config::default().labels(labels::SCHEDULE),
        )
        .watches(
            api::<Cluster>(&client, namespace),
            watcher::Config::default(),
            move |cluster| schedules_of_cluster(&store, &cluster),
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| std::future::ready(()))
        .await;
}

/// The schedules of `cluster`: one appearing or disappearing changes their `Ready`.
fn schedules_of_cluster(
    store: &Store<BackupSchedule>,
    cluster: &Cluster,
) -> Vec<ObjectRef<BackupSchedule>> {
    store
        .state()
        .iter()
        .filter(|schedule| {
            schedule.metadata.namespace == cluster.metadata.namespace
                && Some(&schedule.spec.cluster.name) == cluster.metadata.name.as_ref()
        })
        .map(|schedule| ObjectRef::from_obj(schedule.as_ref()))
        .collect()
}
