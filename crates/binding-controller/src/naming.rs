//! Names and labels of what a ServiceBinding creates.
//!
//! The PostgresUser (and the role inside PostgreSQL) of a binding is named from the binding's
//! namespace, name and UID: `<namespace>-<name>` shortened to fit, then `-` and eight hex
//! digits of FNV-1a over `<namespace>/<name>/<uid>`. So
//!
//! - the name is a DNS-1123 label of at most 63 characters (a valid object name and a valid
//!   PostgreSQL identifier of at most 63 bytes, never a reserved role name);
//! - a person reading `kubectl get pguser` or `\du` sees which application it serves;
//! - a binding deleted and created again (new UID) gets a fresh role, never its predecessor's;
//! - two bindings never share one: the hash separates equal readable parts, and the
//!   controller refuses (reason `UserOwnedElsewhere`) a PostgresUser whose
//!   `tusk.dev/binding-uid` label is another binding's, should two hashes ever meet.

use std::collections::BTreeMap;

use tusk_api::labels::{
    self, BINDING_NAME, BINDING_NAMESPACE, BINDING_UID, COMPONENT, INSTANCE, MANAGED_BY, MANAGER,
    NAME, PART_OF,
};
use tusk_api::names::fnv1a32;

/// `app.kubernetes.io/component` of the PostgresUsers and Secrets this controller writes.
pub const COMPONENT_VALUE: &str = "service-binding";

/// Longest PostgresUser (and role) name: a DNS label, and PostgreSQL's identifier limit.
pub const MAX_USER_NAME_LENGTH: usize = 63;

/// Who a binding is: what its children are named after and labelled with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl BindingIdentity {
    /// The PostgresUser created for this binding, in the Cluster's namespace.
    pub fn user_name(&self) -> String {
        let hash = format!(
            "{:08x}",
            fnv1a32(format!("{}/{}/{}", self.namespace, self.name, self.uid).as_bytes())
        );
        let readable: String = format!("{}-{}", self.namespace, self.name)
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' => c,
                'A'..='Z' => c.to_ascii_lowercase(),
                _ => '-',
            })
            .collect();
        let keep = MAX_USER_NAME_LENGTH - hash.len() - 1;
        let mut prefix: String = readable.chars().take(keep).collect();
        while prefix.ends_with('-') {
            prefix.pop();
        }
        if prefix.is_empty() {
            format!("b-{hash}")
        } else {
            format!("{prefix}-{hash}")
        }
    }

    /// The PostgreSQL role: the PostgresUser's name, so `\du` and `kubectl get pguser` agree.
    pub fn role_name(&self) -> String {
        self.user_name()
    }

    /// The labels that tie a PostgresUser to this binding (also how it is found again and
    /// cleaned up when the binding lives in another namespace).
    pub fn user_labels(&self, cluster: &str) -> BTreeMap<String, String> {
        let mut labels = labels::cluster_child_labels(cluster, COMPONENT_VALUE);
        labels.extend(self.identity_labels());
        labels
    }

    /// The labels of the binding Secret. No `tusk.dev/cluster`: the Secret lives in the
    /// application's namespace, where a Cluster of the same name could list it as its own.
    pub fn secret_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (NAME.to_owned(), labels::APP_NAME.to_owned()),
            (INSTANCE.to_owned(), self.name.clone()),
            (COMPONENT.to_owned(), COMPONENT_VALUE.to_owned()),
            (PART_OF.to_owned(), labels::APP_NAME.to_owned()),
            (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        ]);
        labels.extend(self.identity_labels());
        labels
    }

    fn identity_labels(&self) -> [(String, String); 3] {
        [
            (BINDING_NAMESPACE.to_owned(), self.namespace.clone()),
            (BINDING_NAME.to_owned(), self.name.clone()),
            (BINDING_UID.to_owned(), self.uid.clone()),
        ]
    }

    /// A label selector matching exactly the PostgresUsers of this binding (this UID).
    pub fn user_selector(&self) -> String {
        format!("{BINDING_UID}={},{MANAGED_BY}={MANAGER}", self.uid)
    }
}

/// The label selector of every PostgresUser and Secret this controller writes.
pub fn children_selector() -> String {
    format!("{COMPONENT}={COMPONENT_VALUE},{MANAGED_BY}={MANAGER}")
}

/// The binding a PostgresUser or Secret was created for, from its labels.
pub fn binding_of(object_labels: Option<&BTreeMap<String, String>>) -> Option<(String, String)> {
    let object_labels = object_labels?;
    Some((
        object_labels.get(BINDING_NAMESPACE)?.clone(),
        object_labels.get(BINDING_NAME)?.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use tusk_api::user::check_role_name;

    fn identity(namespace: &str, name: &str, uid: &str) -> BindingIdentity {
        BindingIdentity {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn is_dns_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn user_name_is_readable_and_ends_in_a_hash_of_the_identity() {
        let name = identity("shop", "storefront", "u-1").user_name();
        assert!(name.starts_with("shop-storefront-"), "{name}");
        assert_eq!(name.len(), "shop-storefront-".len() + 8);
        assert_eq!(name, identity("shop", "storefront", "u-1").user_name());
        assert_eq!(identity("shop", "storefront", "u-1").role_name(), name);
    }

    #[test]
    fn longest_names_stay_dns_labels_and_valid_roles() {
        let long = identity(&"n".repeat(63), &"b".repeat(63), "uid");
        let dotted = identity("shop", "web.front.v2", "uid");
        let dashes = identity("a", &"-".repeat(20), "uid");
        for id in [long, dotted, dashes] {
            let name = id.user_name();
            assert!(is_dns_label(&name), "{name:?}");
            assert!(name.len() <= MAX_USER_NAME_LENGTH);
            assert_eq!(check_role_name(&name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_never_collide_across_namespaces_names_or_recreations() {
        let mut seen = BTreeSet::new();
        let mut count = 0;
        // `a-b`/`c` and `a`/`b-c` read the same; the hash tells them apart. So do namespaces
        // whose shortened prefixes are equal.
        for namespace in [
            "a",
            "a-b",
            "shop",
            &"x".repeat(60),
            &format!("{}y", "x".repeat(60)),
        ] {
            for name in ["b-c", "c", "orders", &"o".repeat(63)] {
                for uid in ["uid-1", "uid-2"] {
                    seen.insert(identity(namespace, name, uid).user_name());
                    count += 1;
                }
            }
        }
        assert_eq!(seen.len(), count);
        assert_ne!(
            identity("a-b", "c", "u").user_name(),
            identity("a", "b-c", "u").user_name()
        );
    }

    #[test]
    fn names_never_hit_reserved_roles() {
        for namespace in ["pg", "postgres", "public", "none"] {
            let name = identity(namespace, "x", "u").user_name();
            assert_eq!(check_role_name(&name), Ok(()), "{name}");
        }
    }

    #[test]
    fn labels_carry_the_binding_identity_and_find_it_again() {
        let id = identity("shop", "storefront", "u-1");
        let user = id.user_labels("db");
        assert_eq!(user["tusk.dev/cluster"], "db");
        assert_eq!(user["tusk.dev/binding-uid"], "u-1");
        assert_eq!(
            binding_of(Some(&user)),
            Some(("shop".to_owned(), "storefront".to_owned()))
        );
        let secret = id.secret_labels();
        assert!(!secret.contains_key("tusk.dev/cluster"));
        assert_eq!(secret["app.kubernetes.io/component"], "service-binding");
        assert_eq!(binding_of(None), None);
        assert_eq!(
            id.user_selector(),
            "tusk.dev/binding-uid=u-1,app.kubernetes.io/managed-by=tusk-operator"
        );
    }
}
