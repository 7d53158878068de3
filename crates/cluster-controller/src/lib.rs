//! The Cluster controller: runs a highly available PostgreSQL cluster with Patroni.
//!
//! ```text
//!  Cluster ──► ServiceAccount + Role + RoleBinding   (what Patroni's Kubernetes DCS needs)
//!          ──► Secrets: superuser, replication, CA, server TLS, pgBackRest TLS
//!          ──► ConfigMap <cluster>-patroni            (patroni.yaml, rendered by `patroni`)
//!          ──► Services -rw (no selector: Patroni's leader Endpoints), -ro, -r, -pods (headless)
//!          ──► StatefulSet <cluster>-<n> per instance (updateStrategy OnDelete)
//!          ──► PodDisruptionBudget
//!          ──► pgBackRest (crate::plan::pgbackrest): ConfigMap <cluster>-pgbackrest-config, repository
//!              host StatefulSet + Service <cluster>-repo-host, stanza Job <cluster>-stanza
//!          ──► ConfigMap <cluster>-monitoring          (exporter queries, when monitoring is on)
//!          ──► Secret <cluster>-monitor + role tusk_monitor (crate::plan::monitor_role)
//!  running instances ──► Patroni REST API: PATCH /config, POST /restart, /switchover
//!                    ──► SQL per instance (crate::observe::instance_sql): volume usage, TLS reload
//!                    ──► PVCs: expanded in place on a raised size or auto-grow (crate::plan::storage)
//!  crashing instances ──► the kubelet's termination message, quoted in status (crate::observe::crash)
//! ```
//!
//! # Where things are
//!
//! One pass ([`reconcile`]) runs the modules top to bottom; data flows one way, and no module
//! imports one above it (`shared` imports nothing of the crate).
//!
//! ```text
//!  reconcile.rs          the pipeline: observe → plan → apply → status
//!  observe/              every read, into one Observed value
//!    mod.rs                the Cluster's objects, pods, Secrets, StorageClasses
//!    crash.rs              crashed postgres containers and the cause from their last log
//!    patroni_api.rs        Patroni's REST API client (also used by apply)
//!    instance_sql.rs       SQL per instance: volume usage, TLS state
//!    backup.rs             pgBackRest's children, the restore source, pg_stat_archiver
//!  plan/                 pure: functions of the spec and Observed
//!    mod.rs                DesiredState and plan(): the order of the planners below
//!    children.rs           Services, Patroni's ServiceAccount/Role/RoleBinding, ConfigMap, PDB
//!    instance.rs           the instance StatefulSet and its pod (postgres container, volumes)
//!    patroni/              patroni.yaml: document types, render, parameters and pg_hba,
//!                          changes after bootstrap (PATCH /config, reload or restart)
//!    config_change.rs      the PATCH /config a pass sends, and its event text
//!    rollout/              the one step a pass takes: model (types), shutdown, scaling,
//!                          switchover (requested; which replica), rolling_update (restart
//!                          order), waiting (a step still in flight)
//!    status.rs             the Cluster's status and conditions
//!    storage.rs            PVC expansion, auto-grow, the storage conditions
//!    secrets.rs, tls/      credential Secrets; TLS planning, certificates (rcgen)
//!    pgbackrest/           settings (ConfigMap), sidecar (the pgbackrest container), repo_host,
//!                          stanza (Job), archiving (ContinuousArchiving condition, events)
//!    monitoring.rs         the exporter container and its queries ConfigMap
//!    monitor_role.rs       the monitoring role's Secret and SQL
//!  apply/                every write
//!    mod.rs                children by server-side apply, PATCH /config, PVC expansion, SQL
//!    pgbackrest.rs         pgBackRest's children (ConfigMap, repository host, stanza Job)
//!    step.rs               the one disruptive step: restart, remove an instance, switch over
//!    events.rs             events for transitions (failover, Ready, BootstrapFailed, …)
//!  rbac.rs               the API calls this controller makes (the chart's RBAC for it)
//!  shared/               leaf: layout.rs (paths, env and Secret names, labels), meta.rs
//!                        (child metadata), pod.rs (container and volume helpers), State
//! ```
//!
//! Data-plane contract (the instance image, images/postgres, follows it):
//!
//! | what | where |
//! |---|---|
//! | data volume | `/pgdata`, data directory `/pgdata/pg<major>` (a new major sits beside the old one, so `pg_upgrade --link` works on one volume) |
//! | WAL volume (optional) | `/pgwal`, WAL directory `/pgwal/pg<major>_wal` |
//! | Patroni config | `/etc/patroni/patroni.yaml` from the ConfigMap, instance-specific values from env |
//! | server TLS | `/etc/tusk/tls/{tls.crt,tls.key,ca.crt}` |
//! | sockets, scratch | emptyDirs at `/var/run/postgresql` and `/tmp` (root filesystem is read-only) |
//! | PostgreSQL binaries | `/usr/lib/postgresql/<major>/bin` |
//! | pgBackRest (with a repository) | configuration `/etc/pgbackrest/pgbackrest.conf` (ConfigMap `<cluster>-pgbackrest-config`), certificates `/etc/pgbackrest/tls`, secret options as `PGBACKREST_*` variables (crate::plan::pgbackrest) |
//! | restore source (`spec.bootstrap.restore`) | `/etc/pgbackrest/restore/pgbackrest.conf`, read only by Patroni's `pgbackrest` bootstrap |
//!
//! Patroni's scope is `<cluster>-rw`, so the leader lock Patroni keeps on the Endpoints named
//! after its scope *is* the `-rw` Service's Endpoints (DESIGN.md §2); its other DCS objects are
//! `<cluster>-rw-config`, `-sync` and `-failover`.

#![forbid(unsafe_code)]

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tusk_api::{Cluster, labels};
use tusk_runtime::Context;
use tusk_runtime::context::scoped_api as api;

use crate::error::Error;
use crate::shared::State;
use crate::shared::pod::Images;

pub mod apply;
pub mod error;
pub mod observe;
pub mod plan;
pub mod rbac;
pub mod reconcile;
pub mod shared;

/// Runs the Cluster controller until the process stops: one controller per watched
/// namespace (or one for all namespaces).
pub async fn run(ctx: Context) {
    let images = Images {
        postgres_template: ctx.config.postgres_image.clone(),
        exporter: ctx.config.exporter_image.clone(),
    };
    let state = Arc::new(State {
        runtime: ctx.clone(),
        images,
        patroni_api: true,
    });
    let scopes = ctx.config.watch_scopes();
    futures::future::join_all(
        scopes
            .into_iter()
            .map(|ns| controller(ctx.client.clone(), ns, state.clone())),
    )
    .await;
}

/// What the controller watches and why it wakes up: its Clusters; every child it owns (a
/// deleted or edited child is restored); and instance pods, whose readiness and Patroni role
/// labels drive status and the rollout.
async fn controller(client: Client, namespace: Option<String>, state: Arc<State>) {
    let ns = namespace.as_deref();
    let owned =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let pods = watcher::Config::default().labels(&format!(
        "{},{}",
        labels::CLUSTER,
        "app.kubernetes.io/component=database"
    ));
    let controller = Controller::new(
        api::<Cluster>(&client, ns),
        watcher::Config::default().any_semantic(),
    );
    let _counted = state.runtime.metrics.follow_store(ns, controller.store());
    controller
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<Secret>(&client, ns), owned.clone())
        .owns(api::<ServiceAccount>(&client, ns), owned.clone())
        .owns(api::<Role>(&client, ns), owned.clone())
        .owns(api::<RoleBinding>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
        // The stanza Job (crate::plan::pgbackrest): its completion moves ContinuousArchiving.
        .owns(api::<Job>(&client, ns), owned)
        .watches(api::<Pod>(&client, ns), pods, |pod| {
            let cluster = pod.labels().get(labels::CLUSTER)?.clone();
            Some(ObjectRef::<Cluster>::new(&cluster).within(&pod.namespace()?))
        })
        .run(reconcile::reconcile, error_policy, state)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "cluster controller");
            }
        })
        .await;
}

fn error_policy(cluster: Arc<Cluster>, error: &Error, state: Arc<State>) -> Action {
    tusk_runtime::error_policy(cluster.as_ref(), error, &state.runtime)
}
