//! The Kubernetes API calls the PGUpgrade controller makes, and nothing more: the chart's RBAC
//! for it is generated from this list (`cargo xtask chart`), and its tests fail on any call the
//! list does not grant (`tusk_runtime::rbac::test_support::assert_granted`).

use tusk_runtime::rbac::{Rule, own, rule};

/// What the PGUpgrade controller may call, besides the rules every controller shares.
pub const RULES: &[Rule] = &[
    own(&["pgupgrades", "pgupgrades/status"]),
    // patch: the upgrade lock annotation and, after pg_upgrade, spec.postgresVersion/image.
    rule(
        "tusk.dev",
        &["clusters"],
        &["get", "list", "watch", "patch"],
    ),
    rule(
        "tusk.dev",
        &["backups"],
        &["get", "list", "watch", "create"],
    ),
    // Jobs are created once and never changed; garbage collection deletes them.
    rule("batch", &["jobs"], &["get", "list", "watch", "create"]),
    // Instance pods (stopped yet?) and the Jobs' pods (termination messages); delete: a pod
    // that holds a deleted replica volume (pvc-protection) is deleted so the volume can go.
    rule("", &["pods"], &["get", "list", "watch", "delete"]),
    // The replicas' volumes are deleted after pg_upgrade: they are re-created from the new
    // primary.
    rule(
        "",
        &["persistentvolumeclaims"],
        &["get", "list", "watch", "delete"],
    ),
    // Patroni's DCS: `initialize` set to the new system identifier, the old leader state
    // removed.
    rule("", &["endpoints"], &["get", "create", "patch"]),
];
