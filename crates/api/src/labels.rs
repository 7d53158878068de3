//! Label and annotation keys shared by the controllers.
//!
//! Every child object carries the `app.kubernetes.io/*` recommended labels plus
//! `tusk.dev/cluster` (and `tusk.dev/role` on instance pods), so children can be listed by
//! selector and orphans found. Annotations listed here are contracts between a user (or one
//! controller) and another controller.

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// The Cluster a child belongs to.
pub const CLUSTER: &str = "tusk.dev/cluster";
/// The PostgreSQL instance (`<cluster>-<n>`) a pod or volume belongs to.
pub const INSTANCE_NAME: &str = "tusk.dev/instance";
/// The role Patroni reports for an instance pod (`primary` or `replica`).
pub const ROLE: &str = "tusk.dev/role";
/// On a PostgresUser created for a ServiceBinding: the binding's namespace, name and UID.
pub const BINDING_NAMESPACE: &str = "tusk.dev/binding-namespace";
pub const BINDING_NAME: &str = "tusk.dev/binding-name";
pub const BINDING_UID: &str = "tusk.dev/binding-uid";
/// On a Backup created by a BackupSchedule or a PGUpgrade: who asked for it.
pub const SCHEDULE: &str = "tusk.dev/schedule";
pub const UPGRADE: &str = "tusk.dev/upgrade";

/// Value of `app.kubernetes.io/name` and `app.kubernetes.io/part-of`.
pub const APP_NAME: &str = "tusk";
/// Value of `app.kubernetes.io/managed-by`.
pub const MANAGER: &str = "tusk-operator";

/// Annotation on a Cluster asking for a switchover: the value is the instance to promote
/// (`<cluster>-<n>`) or `any` for the healthiest replica. Removed by the controller when done.
pub const SWITCHOVER_ANNOTATION: &str = "tusk.dev/switchover";
/// Annotation on a Cluster asking for a rolling restart of every instance (replicas first,
/// then a switchover and the old primary), as `kubectl rollout restart` does for a Deployment:
/// any new value triggers one; the value whose restart finished is recorded in
/// `status.restartRequest`. The annotation may stay.
pub const RESTART_ANNOTATION: &str = "tusk.dev/restart";
/// Annotation on a Cluster asking for a restart of one instance, `<instance>=<request>` (for
/// example `db-2=2026-12-03T14:00:00Z`): the instance's pod is recreated through the rolling
/// update (a primary hands over to a replica first); any new value triggers one, the value
/// its pod runs with is recorded in `status.instances[].restartRequest`. The annotation may
/// stay, and removing it restarts nothing.
pub const RESTART_INSTANCE_ANNOTATION: &str = "tusk.dev/restart-instance";
/// Annotation on a PostgresUser asking for a password rotation: any new value triggers one
/// rotation; the value handled last is recorded in `status.passwordRotationRequest`.
pub const ROTATE_PASSWORD_ANNOTATION: &str = "tusk.dev/rotate-password";
/// Annotation a PGUpgrade sets on its Cluster while it holds the Cluster shut down for the
/// upgrade; the value is the PGUpgrade's name. The Cluster controller keeps all instances
/// stopped while it is present, whatever `spec.shutdown` says.
pub const UPGRADE_LOCK_ANNOTATION: &str = "tusk.dev/upgrade-lock";

/// The labels every child of `cluster` carries; `component` says what the child is for
/// (`database`, `backup`, `upgrade`, ...).
pub fn cluster_child_labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), APP_NAME.to_owned()),
        (INSTANCE.to_owned(), cluster.to_owned()),
        (COMPONENT.to_owned(), component.to_owned()),
        (PART_OF.to_owned(), APP_NAME.to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (CLUSTER.to_owned(), cluster.to_owned()),
    ])
}

/// A label selector that matches every child of `cluster` (and nothing of another cluster).
pub fn cluster_selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CLUSTER.to_owned(), cluster.to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ])
}
