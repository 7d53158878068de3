//! The shape of tusk's RBAC lists and the rules every controller shares. Each controller crate
//! keeps the list of the API calls it makes in its own `rbac.rs` (`RULES`), next to the code
//! that makes them; `cargo xtask chart` generates the Helm chart's RBAC from those lists and
//! the ones here.
//!
//! A controller test runs its reconcile against the in-memory API through a recording client
//! (`test_support::RecordingClient`, feature `test-support`); every request it made is
//! turned into the (verb, group, resource) the API server's authorizer would check and must be
//! allowed by that controller's rules. So a controller that starts calling a new API fails its
//! tests until the rule is added to its list — and then the chart grants it.

/// One RBAC rule: verbs on resources of an API group ("" is the core group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

pub const fn rule(
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
pub const MANAGE: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];

/// Reading and reconciling an owned custom resource: watch it, write status, manage
/// finalizers.
pub const fn own(resources: &'static [&'static str]) -> Rule {
    rule(
        "tusk.dev",
        resources,
        &["get", "list", "watch", "patch", "update"],
    )
}

/// Whether a list stays inside what RBAC can audit: no wildcard verb or resource, and neither
/// `escalate` nor `bind`.
pub fn is_narrow(rules: &[Rule]) -> bool {
    rules.iter().all(|rule| {
        !rule.verbs.contains(&"*")
            && !rule.resources.contains(&"*")
            && !rule.verbs.contains(&"escalate")
            && !rule.verbs.contains(&"bind")
    })
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

    /// Fails if any call `recording` saw is not granted by the chart's RBAC for a controller
    /// whose own rules are `rules`.
    #[track_caller]
    pub fn assert_granted(rules: &[Rule], recording: &RecordingClient) {
        let denied = super::disallowed_calls(rules, &recording.calls());
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

/// Every call in `calls` not allowed by the shared rules plus a controller's `own`, for a test
/// to assert empty.
#[cfg(feature = "test-support")]
pub fn disallowed_calls(
    own: &[Rule],
    calls: &[test_support::ApiCall],
) -> Vec<test_support::ApiCall> {
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
        assert!(disallowed_calls(&[], std::slice::from_ref(&lease_get)).is_empty());
        assert_eq!(
            disallowed_calls(&[], &[lease_get, lease_delete.clone()]),
            vec![lease_delete]
        );
        let secret_get = ApiCall::from_request("GET", "/api/v1/namespaces/t/secrets/s").unwrap();
        assert_eq!(
            disallowed_calls(&[], std::slice::from_ref(&secret_get)),
            vec![secret_get.clone()]
        );
        assert!(disallowed_calls(&[rule("", &["secrets"], &["get"])], &[secret_get]).is_empty());
    }

    #[test]
    fn shared_rules_are_narrow() {
        for rules in [RUNTIME_RULES, LEADER_ELECTION_RULES, CLUSTER_SCOPED_RULES] {
            assert!(is_narrow(rules), "{rules:?}");
        }
        assert!(!is_narrow(&[rule("", &["*"], &["get"])]));
        assert!(!is_narrow(&[rule("", &["roles"], &["bind"])]));
        assert!(!is_narrow(&[
            own(&["clusters"]),
            rule("", &["pods"], &["*"])
        ]));
    }
}
