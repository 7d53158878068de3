//! The one list of Kubernetes API calls tusk makes, from which the Helm chart's RBAC is
//! generated (`cargo xtask chart`) and against which controller tests check every request.
//!
//! A controller test runs its reconcile against the in-memory API through a recording client
//! ([`test_support::RecordingClient`], feature `test-support`); every request it made is
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

/// One request as the API server's authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiCall {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for ApiCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)
    }
}

impl ApiCall {
    /// Derives the authorizer's view from an HTTP method and a request path with query.
    pub fn from_request(method: &str, path_and_query: &str) -> Option<Self> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", _version, rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (resource, name, subresource) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return None,
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match (method, name.is_some()) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        let resource = match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        Some(ApiCall {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource,
            namespace,
            name: name.map(str::to_owned),
        })
    }

    /// Whether `rules` allow this call.
    pub fn is_allowed_by(&self, rules: &[Rule]) -> bool {
        rules.iter().any(|rule| {
            rule.group == self.group
                && rule.resources.contains(&self.resource.as_str())
                && rule.verbs.contains(&self.verb.as_str())
        })
    }
}

/// Every call in `calls` not allowed by the runtime's rules plus `kind`'s, for a test to
/// assert empty.
pub fn disallowed_calls(kind: Option<ControllerKind>, calls: &[ApiCall]) -> Vec<ApiCall> {
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
            .any(|rules| call.is_allowed_by(rules))
        })
        .cloned()
        .collect()
}

#[cfg(feature = "test-support")]
pub mod test_support {
    //! A client over the in-memory API that records every request it makes.

    use std::sync::{Arc, Mutex};

    use kube::client::Body;

    use super::ApiCall;

    /// Records the API calls made through [`RecordingClient::client`].
    #[derive(Clone)]
    pub struct RecordingClient {
        client: kube::Client,
        calls: Arc<Mutex<Vec<ApiCall>>>,
    }

    impl std::fmt::Debug for RecordingClient {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RecordingClient")
                .field("calls", &self.calls())
                .finish_non_exhaustive()
        }
    }

    impl RecordingClient {
        /// Wraps `inner` (for example a `kube_fake_client` client).
        pub fn new(inner: kube::Client) -> Self {
            let calls: Arc<Mutex<Vec<ApiCall>>> = Arc::default();
            let recorded = calls.clone();
            let service = tower::service_fn(move |request: http::Request<Body>| {
                let inner = inner.clone();
                let recorded = recorded.clone();
                async move {
                    let path = request
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    if let Some(call) = ApiCall::from_request(request.method().as_str(), &path) {
                        recorded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(call);
                    }
                    inner.send(request).await
                }
            });
            let client = kube::Client::new(service, "default");
            Self { client, calls }
        }

        /// The client to hand to the code under test.
        pub fn client(&self) -> kube::Client {
            self.client.clone()
        }

        /// Every call recorded so far.
        pub fn calls(&self) -> Vec<ApiCall> {
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        /// Calls that write (everything but get, list and watch).
        pub fn writes(&self) -> Vec<ApiCall> {
            self.calls()
                .into_iter()
                .filter(|c| !matches!(c.verb.as_str(), "get" | "list" | "watch"))
                .collect()
        }

        /// Forgets the calls recorded so far.
        pub fn clear(&self) {
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_authorizer_verbs() {
        let call = |m, p| ApiCall::from_request(m, p).unwrap();
        assert_eq!(
            call(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/tusk/leases/tusk-operator"
            ),
            ApiCall {
                verb: "get".into(),
                group: "coordination.k8s.io".into(),
                resource: "leases".into(),
                namespace: Some("tusk".into()),
                name: Some("tusk-operator".into()),
            }
        );
        assert_eq!(
            call("GET", "/api/v1/namespaces/db/secrets?labelSelector=x").verb,
            "list"
        );
        assert_eq!(
            call(
                "GET",
                "/apis/tusk.dev/v1alpha1/clusters?watch=true&timeoutSeconds=290"
            )
            .verb,
            "watch"
        );
        assert_eq!(
            call(
                "PATCH",
                "/apis/tusk.dev/v1alpha1/namespaces/db/clusters/db/status?fieldManager=x"
            )
            .resource,
            "clusters/status"
        );
        assert_eq!(
            call("DELETE", "/api/v1/namespaces/db/pods").verb,
            "deletecollection"
        );
        assert_eq!(
            call(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/tusk/leases/l"
            )
            .verb,
            "update"
        );
        assert_eq!(call("GET", "/api/v1/namespaces/db").resource, "namespaces");
        assert!(ApiCall::from_request("GET", "/version").is_none());
    }

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
