//! Whether a Cluster admits ServiceBindings from a namespace: its `spec.bindingPolicy`.
//!
//! ```text
//!   binding namespace == Cluster namespace ──────────────► admitted (always)
//!   listed in bindingPolicy.namespaces ───────────────────► admitted
//!   bindingPolicy.namespaceSelector matches its labels ───► admitted ({} matches every one)
//!   otherwise ────────────────────────────────────────────► refused: NamespaceNotAllowed
//! ```
//!
//! The namespace's labels are read only when the name alone does not decide.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};
use tusk_api::Cluster;
use tusk_api::cluster::BindingPolicy;

/// What the policy says about one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Admitted,
    /// The name does not decide and the policy has a selector: ask again with the labels.
    NeedsLabels,
    /// Not admitted; the message names the Cluster field to change.
    Refused(String),
}

/// Decides for `binding_namespace` under `cluster`'s policy; `namespace_labels` are the
/// binding namespace's labels once read.
pub fn decide(
    cluster: &Cluster,
    binding_namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Decision {
    let cluster_namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    if binding_namespace == cluster_namespace {
        return Decision::Admitted;
    }
    let cluster_name = cluster.metadata.name.as_deref().unwrap_or_default();
    let refused = |detail: String| {
        Decision::Refused(format!(
            "Cluster {cluster_name:?} in namespace {cluster_namespace:?} does not admit ServiceBindings from namespace {binding_namespace:?}{detail}: ask its owners to add {binding_namespace:?} to the Cluster's spec.bindingPolicy.namespaces (or to match it with spec.bindingPolicy.namespaceSelector)"
        ))
    };
    let Some(policy) = cluster.spec.binding_policy.as_ref() else {
        return refused(" (it has no spec.bindingPolicy)".to_owned());
    };
    if policy.namespaces.iter().any(|n| n == binding_namespace) {
        return Decision::Admitted;
    }
    match selector(policy) {
        None => refused(String::new()),
        Some(Err(problem)) => refused(format!(
            " (its spec.bindingPolicy.namespaceSelector is invalid: {problem})"
        )),
        Some(Ok(selector)) => match namespace_labels {
            None => Decision::NeedsLabels,
            Some(labels) if selector.matches(labels) => Decision::Admitted,
            Some(_) => refused(
                " (its labels do not match spec.bindingPolicy.namespaceSelector)".to_owned(),
            ),
        },
    }
}

fn selector(policy: &BindingPolicy) -> Option<Result<Selector, String>> {
    let selector = policy.namespace_selector.clone()?;
    Some(Selector::try_from(selector).map_err(|error| error.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(policy: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {{name: db, namespace: db}}
spec:
  postgresVersion: 17
  storage: {{size: 1Gi}}
{policy}"
        ))
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn refusal(decision: Decision) -> String {
        match decision {
            Decision::Refused(message) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn own_namespace_is_always_admitted() {
        assert_eq!(decide(&cluster(""), "db", None), Decision::Admitted);
    }

    #[test]
    fn other_namespace_without_policy_is_refused_naming_the_field() {
        let message = refusal(decide(&cluster(""), "shop", None));
        assert!(message.contains("spec.bindingPolicy"), "{message}");
        assert!(message.contains("\"shop\""), "{message}");
    }

    #[test]
    fn listed_namespace_is_admitted_without_reading_labels() {
        let cluster = cluster("  bindingPolicy: {namespaces: [shop]}\n");
        assert_eq!(decide(&cluster, "shop", None), Decision::Admitted);
        let message = refusal(decide(&cluster, "billing", None));
        assert!(
            message.contains("spec.bindingPolicy.namespaces"),
            "{message}"
        );
    }

    #[test]
    fn selector_needs_the_labels_and_matches_them() {
        let cluster = cluster(
            "  bindingPolicy:\n    namespaceSelector:\n      matchLabels: {team: shop}\n      matchExpressions: [{key: env, operator: In, values: [prod, staging]}]\n",
        );
        assert_eq!(decide(&cluster, "shop", None), Decision::NeedsLabels);
        let good = labels(&[("team", "shop"), ("env", "prod")]);
        assert_eq!(decide(&cluster, "shop", Some(&good)), Decision::Admitted);
        let wrong = labels(&[("team", "shop"), ("env", "dev")]);
        let message = refusal(decide(&cluster, "shop", Some(&wrong)));
        assert!(message.contains("namespaceSelector"), "{message}");
    }

    #[test]
    fn empty_selector_admits_every_namespace() {
        let cluster = cluster("  bindingPolicy: {namespaceSelector: {}}\n");
        assert_eq!(
            decide(&cluster, "anything", Some(&BTreeMap::new())),
            Decision::Admitted
        );
    }

    #[test]
    fn invalid_selector_refuses_and_says_so() {
        let cluster = cluster(
            "  bindingPolicy:\n    namespaceSelector:\n      matchExpressions: [{key: env, operator: Near}]\n",
        );
        let message = refusal(decide(&cluster, "shop", None));
        assert!(message.contains("invalid"), "{message}");
    }
}
