//! The Kubernetes API calls the Cluster controller makes, and nothing more: the chart's RBAC
//! for it is generated from this list (`cargo xtask chart`), and its tests fail on any call the
//! list does not grant (`tusk_runtime::rbac::test_support::assert_granted`).

use tusk_runtime::rbac::{MANAGE, Rule, own, rule};

/// What the Cluster controller may call, besides the rules every controller shares.
pub const RULES: &[Rule] = &[
    own(&["clusters", "clusters/status", "clusters/finalizers"]),
    rule("apps", &["statefulsets"], MANAGE),
    // Secrets: tusk creates the superuser, replication, TLS and pgBackRest Secrets, and reads
    // user-supplied certificate Secrets by name.
    rule(
        "",
        &["services", "configmaps", "serviceaccounts", "secrets"],
        MANAGE,
    ),
    rule("", &["pods"], &["get", "list", "watch", "delete"]),
    // The previous run's log of a crashed postgres container: the cause a failed bootstrap
    // reports in the Cluster's status (observe/crash.rs).
    rule("", &["pods/log"], &["get"]),
    // Volume expansion: the StatefulSet controller creates the PVCs; tusk raises their size.
    rule(
        "",
        &["persistentvolumeclaims"],
        &["get", "list", "watch", "patch"],
    ),
    rule("policy", &["poddisruptionbudgets"], MANAGE),
    // The stanza Job (pgBackRest stanza-create + check), owned and watched.
    rule("batch", &["jobs"], MANAGE),
    rule(
        "rbac.authorization.k8s.io",
        &["roles", "rolebindings"],
        MANAGE,
    ),
    // Patroni's Role is created by tusk, and RBAC only lets tusk grant what it holds itself:
    // pods patch/update and endpoints create/patch/update/delete are for that Role.
    rule("", &["pods"], &["patch", "update"]),
    rule(
        "",
        &["endpoints"],
        &[
            "get", "list", "watch", "create", "patch", "update", "delete",
        ],
    ),
];
