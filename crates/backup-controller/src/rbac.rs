//! The Kubernetes API calls the Backup controller makes, and nothing more: the chart's RBAC
//! for it is generated from this list (`cargo xtask chart`), and its tests fail on any call the
//! list does not grant (`tusk_runtime::rbac::test_support::assert_granted`).

use tusk_runtime::rbac::{Rule, own, rule};

/// Backups: one Job and its ConfigMap per Backup, created once and never changed (garbage
/// collection removes them with the Backup); the result is read from the Job's pod's
/// termination message, so neither pods/log nor pods/exec is needed.
pub const RULES: &[Rule] = &[
    own(&["backups", "backups/status", "backups/finalizers"]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    rule("batch", &["jobs"], &["get", "list", "watch", "create"]),
    rule("", &["configmaps"], &["create"]),
    rule("", &["pods"], &["get", "list"]),
];
