//! The Secrets a Pooler needs, as pure functions of what was observed:
//!
//! ```text
//!   <cluster>-pooler-role   password          tusk_pooler's password (one role per Cluster,
//!                                             shared by its Poolers; owned by the Cluster)
//!   <pooler>-auth           userlist.txt      PgBouncer's auth file (tusk's two roles only)
//!                           admin-password    the admin console user's (exporter, controller)
//!   <pooler>-tls            tls.crt tls.key   PgBouncer's certificate for <pooler>.<ns>.svc,
//!                           ca.crt            issued from the Cluster's CA
//! ```
//!
//! Passwords are generated once and kept; the auth file keeps its admin verifier while it
//! still matches the password, so an unchanged Pooler renders byte-identical Secrets (and a
//! pass writes nothing). The certificate is kept until it nears expiry, its names change or
//! the CA is replaced ([`tusk_certificates::check_stored`]).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use rcgen::ExtendedKeyUsagePurpose;
use tusk_api::names::{self, keys};
use tusk_api::{Cluster, Pooler, labels};
use tusk_certificates::{
    CertifiedKey, LeafProfile, SigningCa, TlsError, reuse_or_issue, stored_pair, utf8_value,
};

use crate::auth::{ADMIN_ROLE, verifier_matches};
use crate::children::{AUTH_FILE_KEY, COMPONENT, auth_secret, child_labels, tls_secret};
use crate::config::auth_file;

/// The key of tusk_pooler's password in `<cluster>-pooler-role`.
pub const AUTH_PASSWORD_KEY: &str = keys::PASSWORD;
/// The key of the admin console user's password in `<pooler>-auth`.
pub const ADMIN_PASSWORD_KEY: &str = "admin-password";

/// The Secret with tusk_pooler's password: `<cluster>-pooler-role`.
pub fn cluster_auth_secret(cluster: &str) -> String {
    format!("{cluster}-pooler-role")
}

/// UTF-8 text under `key`, if present and not blank.
pub fn text<'a>(secret: Option<&'a Secret>, key: &str) -> Option<&'a str> {
    secret.and_then(|secret| utf8_value(secret, key))
}

/// `<cluster>-pooler-role` with `password`. Owned (not controlled) by the Cluster, so it
/// outlives any one Pooler and goes with the Cluster; every Pooler of the Cluster reads it.
pub fn desired_cluster_auth_secret(cluster: &Cluster, password: &str) -> Secret {
    let name = cluster.name_any();
    let owner = cluster
        .controller_owner_ref(&())
        .map(|owner| OwnerReference {
            controller: None,
            block_owner_deletion: None,
            ..owner
        });
    Secret {
        metadata: ObjectMeta {
            name: Some(cluster_auth_secret(&name)),
            namespace: cluster.namespace(),
            labels: Some(labels::cluster_child_labels(&name, COMPONENT)),
            owner_references: owner.map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([entry(AUTH_PASSWORD_KEY, password)])),
        ..Secret::default()
    }
}

/// The admin verifier in an auth file written by [`auth_file`], if it has one.
pub fn admin_verifier_in(userlist: &str) -> Option<&str> {
    let prefix = format!("\"{ADMIN_ROLE}\" \"");
    userlist
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.strip_suffix('"'))
        .filter(|verifier| !verifier.contains('"'))
}

/// `<pooler>-auth`: the auth file and the admin password. The auth file's admin verifier is
/// kept from `observed` while it matches `admin_password` (a new verifier has a new salt, so
/// recomputing it every pass would rewrite the Secret every pass).
pub fn desired_auth_secret(
    pooler: &Pooler,
    auth_password: &str,
    admin_password: &str,
    observed: Option<&Secret>,
) -> Secret {
    let kept = text(observed, AUTH_FILE_KEY)
        .and_then(admin_verifier_in)
        .filter(|verifier| verifier_matches(verifier, admin_password))
        .map(str::to_owned);
    let verifier = kept.unwrap_or_else(|| crate::auth::scram_verifier(admin_password));
    Secret {
        metadata: meta(pooler, auth_secret(&pooler.name_any())),
        data: Some(BTreeMap::from([
            entry(AUTH_FILE_KEY, &auth_file(auth_password, &verifier)),
            entry(ADMIN_PASSWORD_KEY, admin_password),
        ])),
        ..Secret::default()
    }
}

/// The names PgBouncer's certificate carries: the Service in every form cluster DNS serves.
pub fn pooler_dns_names(pooler: &str, namespace: &str) -> Vec<String> {
    vec![
        pooler.to_owned(),
        format!("{pooler}.{namespace}"),
        format!("{pooler}.{namespace}.svc"),
        format!("{pooler}.{namespace}.svc.{}", names::CLUSTER_DOMAIN),
    ]
}

/// The host name clients (and the controller) verify: `<pooler>.<namespace>.svc`.
pub fn pooler_host(pooler: &str, namespace: &str) -> String {
    names::pooler_host(pooler, namespace)
}

/// PgBouncer's certificate: the one in `observed` while it may stay, else a new one from `ca`.
pub fn certificate(
    pooler: &Pooler,
    namespace: &str,
    ca: &SigningCa,
    observed: Option<&Secret>,
    now: Timestamp,
) -> Result<CertifiedKey, TlsError> {
    let name = pooler.name_any();
    let profile = LeafProfile {
        what: "Pooler certificate",
        common_name: pooler_host(&name, namespace),
        dns_names: pooler_dns_names(&name, namespace),
        usage: ExtendedKeyUsagePurpose::ServerAuth,
    };
    reuse_or_issue(
        stored_pair(observed, keys::TLS_CERT, keys::TLS_KEY),
        &profile,
        ca,
        now,
    )
}

/// `<pooler>-tls`: the certificate, its key and the CA that issued it (what clients verify).
pub fn desired_tls_secret(pooler: &Pooler, certified: &CertifiedKey, ca_pem: &str) -> Secret {
    Secret {
        metadata: meta(pooler, tls_secret(&pooler.name_any())),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            entry(keys::TLS_CERT, &certified.certificate_pem),
            entry(keys::TLS_KEY, certified.private_key_pem.expose()),
            entry(keys::CA_CERT, ca_pem),
        ])),
        ..Secret::default()
    }
}

fn meta(pooler: &Pooler, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: pooler.namespace(),
        labels: Some(child_labels(pooler)),
        owner_references: pooler.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn entry(key: &str, value: &str) -> (String, ByteString) {
    (key.to_owned(), ByteString(value.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram_verifier;

    fn pooler() -> Pooler {
        serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1\nkind: Pooler\nmetadata: {name: db-pooler, namespace: shop, uid: u1}\nspec:\n  cluster: {name: db}\n",
        )
        .unwrap()
    }

    #[test]
    fn the_admin_verifier_is_kept_while_it_matches() {
        let first = desired_auth_secret(&pooler(), "auth-pw", "admin-pw", None);
        let again = desired_auth_secret(&pooler(), "auth-pw", "admin-pw", Some(&first));
        assert_eq!(first.data, again.data);
        let other = desired_auth_secret(&pooler(), "auth-pw", "new-admin-pw", Some(&first));
        assert_ne!(first.data, other.data);
        let userlist = text(Some(&other), AUTH_FILE_KEY).unwrap();
        assert!(verifier_matches(
            admin_verifier_in(userlist).unwrap(),
            "new-admin-pw"
        ));
        assert!(!userlist.contains("new-admin-pw"), "{userlist}");
    }

    #[test]
    fn the_admin_verifier_is_found_in_the_auth_file() {
        let verifier = scram_verifier("x");
        let file = auth_file("p\"w", &verifier);
        assert_eq!(admin_verifier_in(&file), Some(verifier.as_str()));
        assert_eq!(admin_verifier_in("\"tusk_pooler\" \"pw\"\n"), None);
    }

    #[test]
    fn the_certificate_names_the_service_in_every_form() {
        assert_eq!(
            pooler_dns_names("db-pooler", "shop"),
            [
                "db-pooler",
                "db-pooler.shop",
                "db-pooler.shop.svc",
                "db-pooler.shop.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn the_cluster_auth_secret_is_owned_but_not_controlled_by_the_cluster() {
        let cluster: Cluster = serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {name: db, namespace: shop, uid: c1}\nspec: {postgresVersion: 16, storage: {size: 1Gi}}\n",
        )
        .unwrap();
        let secret = desired_cluster_auth_secret(&cluster, "pw");
        assert_eq!(secret.metadata.name.as_deref(), Some("db-pooler-role"));
        let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Cluster", "c1"));
        assert_eq!(owner.controller, None);
    }
}
