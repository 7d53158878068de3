//! The Kubernetes API calls the BackupSchedule controller makes, and nothing more: the chart's RBAC
//! for it is generated from this list (`cargo xtask chart`), and its tests fail on any call the
//! list does not grant (`tusk_runtime::rbac::test_support::assert_granted`).

use tusk_runtime::rbac::{Rule, own, rule};

/// What the BackupSchedule controller may call, besides the rules every controller shares.
pub const RULES: &[Rule] = &[
    own(&["backupschedules", "backupschedules/status"]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    rule(
        "tusk.dev",
        &["backups"],
        &["get", "list", "watch", "create", "delete"],
    ),
];
