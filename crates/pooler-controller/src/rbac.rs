//! The Kubernetes API calls the Pooler controller makes, and nothing more: the chart's RBAC for
//! it is generated from this list (`cargo xtask chart`), and its tests fail on any call the list
//! does not grant (`tusk_runtime::rbac::test_support::assert_granted`).

use tusk_runtime::rbac::{MANAGE, Rule, own, rule};

/// What the Pooler controller may call, besides the rules every controller shares.
pub const RULES: &[Rule] = &[
    own(&["poolers", "poolers/status", "poolers/finalizers"]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    // Its own Secrets, and reading the Cluster's CA and superuser Secrets.
    rule("", &["secrets"], MANAGE),
    rule("", &["configmaps", "services"], MANAGE),
    rule("apps", &["deployments"], MANAGE),
    rule("policy", &["poddisruptionbudgets"], MANAGE),
    // Finding the Deployment's pods by owner, to reach each one's admin console.
    rule("apps", &["replicasets"], &["list"]),
    rule("", &["pods"], &["list"]),
];
