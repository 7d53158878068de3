//! The one list of Kubernetes API calls tusk makes, from which the Helm chart's RBAC is
//! generated (`cargo xtask chart`) and against which controller tests check every request.
//!
//! A controller test runs its reconcile against the in-memory API through a recording client
//! (`test_support::RecordingClient`, feature `test-support`); every request it made is
//! turned into the (verb, group, resource) the API server's authorizer would check and must be
//! allowed by [`rules_for`] of that controller. So a controller that starts calling a new API
//! fails its tests until the rule is added here — and then the chart grants it.

use std::collections::BTreeSet;

use crate::context::ControllerKind;

/// One RBAC rule: verbs on resources of an API group ("" is the core group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

const fn rule(
    group: &'static str,
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
) -> Rule {
    Rule {
        group,
        resources,
        verbs,
    }
}

/// Calls the runtime makes in every watched namespace, whatever controllers run: events.
pub const RUNTIME_RULES: &[Rule] = &[rule("events.k8s.io", &["events"], &["create", "patch"])];

/// Leader election, in the operator's own namespace only.
pub const LEADER_ELECTION_RULES: &[Rule] = &[rule(
    "coordination.k8s.io",
    &["leases"],
    &["get", "create", "update"],
)];

/// Cluster-scoped reads: whether tusk's CRDs are established; whether a StorageClass allows
/// volume expansion (the Cluster controller, before it expands a PVC).
pub const CLUSTER_SCOPED_RULES: &[Rule] = &[
    rule(
        "apiextensions.k8s.io",
        &["customresourcedefinitions"],
        &["get"],
    ),
    // The Cluster controller expands volumes only when their StorageClass allows it.
    rule("storage.k8s.io", &["storageclasses"], &["get"]),
    // The ServiceBinding controller reads a Namespace's labels when a Cluster's
    // bindingPolicy.namespaceSelector has to decide; Namespaces are cluster-scoped, so with
    // watchNamespaces a Role could not grant it.
    rule("", &["namespaces"], &["get"]),
];

/// Managing children: read and watch them, create and apply them, delete them.
const MANAGE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Reading and reconciling an owned custom resource: watch it, write status, manage
/// finalizers.
const fn own(resources: &'static [&'static str]) -> Rule {
    rule(
        "tusk.dev",
        resources,
        &["get", "list", "watch", "patch", "update"],
    )
}

const CLUSTER_RULES: &[Rule] = &[
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
    // reports in the Cluster's status (crate cluster-controller, crash.rs).
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

const USER_RULES: &[Rule] = &[
    own(&[
        "postgresusers",
        "postgresusers/status",
        "postgresusers/finalizers",
    ]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    rule("", &["secrets"], MANAGE),
];

const BINDING_RULES: &[Rule] = &[
    own(&[
        "servicebindings",
        "servicebindings/status",
        "servicebindings/finalizers",
    ]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    rule("tusk.dev", &["postgresusers"], MANAGE),
    rule("", &["secrets"], MANAGE),
    rule("", &["namespaces"], &["get", "list", "watch"]),
];

// Backups: one Job and its ConfigMap per Backup, created once and never changed (garbage
// collection removes them with the Backup); the result is read from the Job's pod's
// termination message, so neither pods/log nor pods/exec is needed.
const BACKUP_RULES: &[Rule] = &[
    own(&["backups", "backups/status", "backups/finalizers"]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    rule("batch", &["jobs"], &["get", "list", "watch", "create"]),
    rule("", &["configmaps"], &["create"]),
    rule("", &["pods"], &["get", "list"]),
];

const SCHEDULE_RULES: &[Rule] = &[
    own(&["backupschedules", "backupschedules/status"]),
    rule("tusk.dev", &["clusters"], &["get", "list", "watch"]),
    rule(
        "tusk.dev",
        &["backups"],
        &["get", "list", "watch", "create", "delete"],
    ),
];

const UPGRADE_RULES: &[Rule] = &[
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

/// The rules one controller needs (not including [`RUNTIME_RULES`]).
pub fn rules_for(kind: ControllerKind) -> &'static [Rule] {
    match kind {
        ControllerKind::Cluster => CLUSTER_RULES,
        ControllerKind::User => USER_RULES,
        ControllerKind::Binding => BINDING_RULES,
        ControllerKind::Backup => BACKUP_RULES,
        ControllerKind::Schedule => SCHEDULE_RULES,
        ControllerKind::Upgrade => UPGRADE_RULES,
    }
}

/// The union of the runtime's rules and those of `kinds`, merged so that each
/// (group, resource) appears once with the sorted union of its verbs — the shape the chart's
/// ClusterRole is rendered in.
pub fn merged_rules(kinds: &[ControllerKind]) -> Vec<(String, String, Vec<String>)> {
    let mut merged: std::collections::BTreeMap<(String, String), BTreeSet<String>> =
        Default::default();
    let all = RUNTIME_RULES
        .iter()
        .chain(kinds.iter().flat_map(|k| rules_for(*k).iter()));
    for rule in all {
        for resource in rule.resources {
            merged
                .entry((rule.group.to_owned(), (*resource).to_owned()))
                .or_default()
                .extend(rule.verbs.iter().map(|v| (*v).to_owned()));
        }
    }
    merged
        .into_iter()
        .map(|((group, resource), verbs)| (group, resource, verbs.into_iter().collect()))
        .collect()
}

/// What controller tests run on: a controller's [`Context`](crate::Context) over
/// tusk-testkit's recording client, whose every request is an
/// [`ApiCall`](test_support::ApiCall) as the authorizer sees it, checked against the rules
/// above.
#[cfg(feature = "test-support")]
pub mod test_support {
    use std::sync::Arc;

    pub use tusk_testkit::recording::{ApiCall, RecordingClient};

    use super::Rule;
    use crate::{Context, ControllerKind, Metrics, OperatorConfig};

    /// `kind`'s context over `recording`, with the default configuration.
    pub fn context(kind: ControllerKind, recording: &RecordingClient) -> Context {
        Context::new(
            recording.client(),
            kind,
            Arc::new(OperatorConfig::default()),
            &Metrics::new(),
        )
    }

    /// Fails if any call `recording` saw is not granted by the chart's RBAC for `kind`.
    #[track_caller]
    pub fn assert_granted(kind: ControllerKind, recording: &RecordingClient) {
        let denied = super::disallowed_calls(Some(kind), &recording.calls());
        assert!(
            denied.is_empty(),
            "calls the chart does not grant: {denied:?}"
        );
    }

    /// Whether `rules` allow `call`.
    pub(super) fn is_allowed_by(call: &ApiCall, rules: &[Rule]) -> bool {
        rules.iter().any(|rule| {
            rule.group == call.group
                && rule.resources.contains(&call.resource.as_str())
                && rule.verbs.contains(&call.verb.as_str())
        })
    }
}

/// Every call in `calls` not allowed by the runtime's rules plus `kind`'s, for a test to
/// assert empty.
#[cfg(feature = "test-support")]
pub fn disallowed_calls(
    kind: Option<ControllerKind>,
    calls: &[test_support::ApiCall],
) -> Vec<test_support::ApiCall> {
    let own = kind.map(rules_for).unwrap_or_default();
    calls
        .iter()
        .filter(|call| {
            ![
                RUNTIME_RULES,
                LEADER_ELECTION_RULES,
                CLUSTER_SCOPED_RULES,
                own,
            ]
            .iter()
            .any(|rules| test_support::is_allowed_by(call, rules))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::test_support::ApiCall;
    use super::*;

    #[test]
    fn rules_allow_only_what_they_list() {
        let lease_get =
            ApiCall::from_request("GET", "/apis/coordination.k8s.io/v1/namespaces/t/leases/l")
                .unwrap();
        let lease_delete = ApiCall::from_request(
            "DELETE",
            "/apis/coordination.k8s.io/v1/namespaces/t/leases/l",
        )
        .unwrap();
        assert!(disallowed_calls(None, std::slice::from_ref(&lease_get)).is_empty());
        assert_eq!(
            disallowed_calls(None, &[lease_get, lease_delete.clone()]),
            vec![lease_delete]
        );
    }

    #[test]
    fn no_rule_uses_wildcards() {
        for kind in ControllerKind::ALL {
            for rule in RUNTIME_RULES
                .iter()
                .chain(LEADER_ELECTION_RULES)
                .chain(CLUSTER_SCOPED_RULES)
                .chain(rules_for(kind))
            {
                assert!(
                    !rule.verbs.contains(&"*") && !rule.resources.contains(&"*"),
                    "{rule:?}"
                );
                assert!(
                    !rule.verbs.contains(&"escalate") && !rule.verbs.contains(&"bind"),
                    "{rule:?}"
                );
            }
        }
    }

    #[test]
    fn merged_rules_list_each_resource_once() {
        let merged = merged_rules(&ControllerKind::ALL);
        let mut keys: Vec<_> = merged
            .iter()
            .map(|(g, r, _)| (g.clone(), r.clone()))
            .collect();
        let before = keys.len();
        keys.dedup();
        assert_eq!(before, keys.len());
        let secrets = merged
            .iter()
            .find(|(g, r, _)| g.is_empty() && r == "secrets")
            .unwrap();
        assert!(!secrets.2.contains(&"deletecollection".to_owned()));
    }
}
