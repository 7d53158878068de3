//! The Kubernetes API calls the ServiceBinding controller makes, and nothing more: the chart's RBAC
//! for it is generated from this list (`cargo xtask chart`), and its tests fail on any call the
//! list does not grant (`tusk_runtime::rbac::test_support::assert_granted`).

use tusk_runtime::rbac::{MANAGE, Rule, own, rule};

/// What the ServiceBinding controller may call, besides the rules every controller shares.
pub const RULES: &[Rule] = &[
    own(&[
        "servicebindings",
        "servicebindings/status",
        "servicebindings/finalizers",
    ]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    rule("tusk.dev", &["poolers"], &["get", "list", "watch"]),
    rule("tusk.dev", &["postgresusers"], MANAGE),
    rule("", &["secrets"], MANAGE),
    rule("", &["namespaces"], &["get", "list", "watch"]),
];
