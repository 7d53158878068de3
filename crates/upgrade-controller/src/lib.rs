//! PGUpgrade controller: PostgreSQL major upgrades orchestrated as a gated, resumable state
//! machine.
//!
//! ```text
//!  watches                         reconcile (reconcile.rs)
//!  PGUpgrade ─────────────────┐    observe: Cluster, other PGUpgrades, Backups, instance pods,
//!  Job     (owned) ───────────┤             Jobs (+ their pods' termination messages),
//!  Backup  (owned) ───────────┼──►          Patroni's DCS Endpoints, replica volume claims
//!  Cluster (→ its PGUpgrades) ┘    decide:  machine.rs (pure: step × world → step, action)
//!                                  persist: status.rs (phase, step, conditions), then
//!                                  act:     Backup | lock | Job (jobs.rs) | DCS (dcs.rs) |
//!                                           delete replica volumes | version | unlock
//! ```
//!
//! The Cluster controller cooperates through one annotation,
//! [`tusk_api::labels::UPGRADE_LOCK_ANNOTATION`]: while it is set, every instance is stopped
//! (replicas first) with its volume kept, and a `spec.postgresVersion` change is accepted.
//! The check and upgrade Jobs (and, after a failed link-mode upgrade, the restore Job) mount
//! the primary's data volume and run `upgrade.sh`; the post-upgrade Job reaches the new
//! primary over TLS and runs `post_upgrade.sh`.
//! docs/operations/major-upgrades.md tells the story for users.

#![forbid(unsafe_code)]

pub mod dcs;
pub mod error;
pub mod jobs;
pub mod machine;
pub mod rbac;
pub mod reconcile;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use tusk_api::labels;
use tusk_api::{Backup, Cluster, PGUpgrade};
use tusk_runtime::Context;
use tusk_runtime::context::scoped_api as api;

pub use error::Error;
pub use reconcile::{State, error_policy, reconcile};

/// Runs the PGUpgrade controller until its watches end: one controller per watched namespace
/// (or one for all namespaces).
pub async fn run(ctx: Context) {
    let state = Arc::new(State::new(ctx.clone()));
    let scopes = ctx.config.watch_scopes();
    futures::future::join_all(
        scopes
            .into_iter()
            .map(|ns| controller(ctx.client.clone(), ns, state.clone())),
    )
    .await;
}

/// What wakes a PGUpgrade: itself; its Jobs and Backups finishing; its Cluster changing
/// (instances stopping or becoming Ready show up in the Cluster's status).
async fn controller(client: Client, namespace: Option<String>, state: Arc<State>) {
    let ns = namespace.as_deref();
    let owned =
        watcher::Config::default().labels(&format!("{}={}", labels::COMPONENT, jobs::COMPONENT));
    let controller = Controller::new(api::<PGUpgrade>(&client, ns), watcher::Config::default());
    let store = controller.store();
    let _counted = state.ctx.metrics.follow_store(ns, store.clone());
    controller
        .owns(api::<Job>(&client, ns), owned.clone())
        .owns(api::<Backup>(&client, ns), owned)
        .watches(
            api::<Cluster>(&client, ns),
            watcher::Config::default(),
            move |cluster| upgrades_of_cluster(&store, &cluster),
        )
        .run(reconcile, error_policy, state)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "upgrade controller");
            }
        })
        .await;
}

/// The active PGUpgrades of `cluster`.
fn upgrades_of_cluster(store: &Store<PGUpgrade>, cluster: &Cluster) -> Vec<ObjectRef<PGUpgrade>> {
    store
        .state()
        .iter()
        .filter(|upgrade| {
            upgrade.metadata.namespace == cluster.metadata.namespace
                && Some(&upgrade.spec.cluster.name) == cluster.metadata.name.as_ref()
                && upgrade.is_active()
        })
        .map(|upgrade| ObjectRef::from_obj(upgrade.as_ref()))
        .collect()
}
