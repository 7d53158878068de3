//! The monitoring role postgres_exporter logs in as, when `spec.monitoring.enabled`
//! (the exporter queries themselves are in `crate::plan::monitoring`).
//!
//! ```text
//!  Secret <cluster>-monitor {username: tusk_monitor, password}   (generated once, kept forever)
//!     ├─► exporter container: env TUSK_MONITOR_PASSWORD (secretKeyRef) inside DATA_SOURCE_NAME
//!     └─► role tusk_monitor on the primary: LOGIN, member of pg_monitor, SCRAM verifier of
//!         the password (computed here; the password never reaches PostgreSQL)
//!  pg_hba: local all tusk_monitor scram-sha-256   (the exporter uses the pod's unix socket)
//! ```
//!
//! The role is created (or repaired) over the operator's TLS superuser connection to the
//! primary, from one catalog read: a steady pass runs no SQL write. Patroni's `post_init`
//! would only cover new clusters, not a Cluster that turns monitoring on later.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use tusk_api::Cluster;
use tusk_api::names::keys;
use tusk_api::user::MONITORING_ROLE;

use crate::shared::layout::{self, monitor_secret};
use crate::shared::meta;

/// The `<cluster>-monitor` Secret when monitoring is on: the observed password is kept, a
/// missing one is generated.
pub fn desired_monitor_secret(
    cluster: &Cluster,
    observed: &BTreeMap<String, Secret>,
) -> Result<Option<Secret>, crate::plan::secrets::SecretsError> {
    if !cluster.spec.monitoring.enabled {
        return Ok(None);
    }
    let name = monitor_secret(&meta::cluster_name(cluster));
    let existing = observed.get(&name);
    let password = match existing
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(keys::PASSWORD))
        .filter(|p| !p.0.is_empty())
    {
        Some(password) => password.clone(),
        None => ByteString(crate::plan::secrets::generate_password()?.into_bytes()),
    };
    Ok(Some(Secret {
        metadata: meta::child_meta(cluster, name, layout::component::CREDENTIALS),
        type_: Some(
            existing
                .and_then(|s| s.type_.clone())
                .unwrap_or_else(|| layout::BASIC_AUTH_TYPE.to_owned()),
        ),
        data: Some(BTreeMap::from([
            (
                keys::USERNAME.to_owned(),
                ByteString(MONITORING_ROLE.as_bytes().to_vec()),
            ),
            (keys::PASSWORD.to_owned(), password),
        ])),
        ..Secret::default()
    }))
}

/// The monitoring password from the observed Secret, once it exists.
pub fn monitor_password(cluster: &Cluster, observed: &BTreeMap<String, Secret>) -> Option<String> {
    let secret = observed.get(&monitor_secret(&meta::cluster_name(cluster)))?;
    let password = secret.data.as_ref()?.get(keys::PASSWORD)?;
    String::from_utf8(password.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

/// The role as the catalog shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedRole {
    pub exists: bool,
    pub can_login: bool,
    /// `pg_authid.rolpassword` (a verifier, never a password).
    pub stored_verifier: Option<String>,
    pub in_pg_monitor: bool,
}

/// One catalog read for [`ObservedRole`].
pub const ROLE_QUERY: &str = "SELECT a.rolcanlogin, a.rolpassword, \
     EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
             WHERE r.rolname = 'pg_monitor' AND m.member = a.oid) \
     FROM pg_authid a WHERE a.rolname = $1";

/// The statements that make the role what it should be; empty when it already is. Pure: the
/// verifier is computed by the caller (fresh salt) only when the password does not match.
pub fn plan_role(observed: &ObservedRole, password: &str) -> Vec<String> {
    let role = quote_ident(MONITORING_ROLE);
    let password_ok = observed
        .stored_verifier
        .as_deref()
        .is_some_and(|stored| verifier_matches(stored, password));
    let mut statements = Vec::new();
    if !observed.exists {
        statements.push(format!(
            "CREATE ROLE {role} LOGIN PASSWORD {} IN ROLE pg_monitor",
            quote_literal(&scram_verifier(password))
        ));
        return statements;
    }
    if !observed.can_login || !password_ok {
        statements.push(format!(
            "ALTER ROLE {role} LOGIN PASSWORD {}",
            quote_literal(&scram_verifier(password))
        ));
    }
    if !observed.in_pg_monitor {
        statements.push(format!("GRANT pg_monitor TO {role}"));
    }
    statements
}

/// Reads the role and applies [`plan_role`]; returns whether anything was written.
pub async fn ensure_role(
    client: &tokio_postgres::Client,
    password: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = client.query_opt(ROLE_QUERY, &[&MONITORING_ROLE]).await?;
    let observed = match row {
        Some(row) => ObservedRole {
            exists: true,
            can_login: row.get(0),
            stored_verifier: row.get(1),
            in_pg_monitor: row.get(2),
        },
        None => ObservedRole::default(),
    };
    let statements = plan_role(&observed, password);
    if !statements.is_empty() {
        // A role change must not hang on a missing synchronous standby
        // (synchronous_mode_strict): it only needs to be durable locally.
        client
            .batch_execute("SET synchronous_commit TO local")
            .await?;
    }
    for statement in &statements {
        client.batch_execute(statement).await?;
    }
    Ok(!statements.is_empty())
}

pub use tusk_runtime::scram::{scram_verifier, verifier_matches};

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::layout::data_source_name;

    fn cluster(monitoring: bool) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: db, uid: u1}}\nspec:\n  postgresVersion: 17\n  storage: {{size: 1Gi}}\n  monitoring: {{enabled: {monitoring}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_secret_is_made_once_and_kept() {
        assert!(
            desired_monitor_secret(&cluster(false), &BTreeMap::new())
                .unwrap()
                .is_none()
        );
        let first = desired_monitor_secret(&cluster(true), &BTreeMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("db-monitor"));
        let observed = BTreeMap::from([("db-monitor".to_owned(), first.clone())]);
        let second = desired_monitor_secret(&cluster(true), &observed)
            .unwrap()
            .unwrap();
        assert_eq!(first, second);
        let password = monitor_password(&cluster(true), &observed).unwrap();
        assert_eq!(password.len(), crate::plan::secrets::PASSWORD_LENGTH);
    }

    #[test]
    fn the_connection_string_names_the_socket_and_the_password_variable_only() {
        let dsn = data_source_name();
        assert!(dsn.contains("host=/var/run/postgresql"), "{dsn}");
        assert!(dsn.contains("user=tusk_monitor"), "{dsn}");
        assert!(dsn.contains("password=$(TUSK_MONITOR_PASSWORD)"), "{dsn}");
    }

    #[test]
    fn a_missing_role_is_created_in_pg_monitor_with_a_verifier_not_the_password() {
        let statements = plan_role(&ObservedRole::default(), "Secret123");
        assert_eq!(statements.len(), 1);
        assert!(
            statements[0]
                .starts_with("CREATE ROLE \"tusk_monitor\" LOGIN PASSWORD 'SCRAM-SHA-256$4096:")
        );
        assert!(statements[0].ends_with("IN ROLE pg_monitor"));
        assert!(!statements[0].contains("Secret123"));
    }

    #[test]
    fn a_correct_role_needs_nothing_and_drift_is_repaired() {
        let verifier = scram_verifier("pw1");
        let good = ObservedRole {
            exists: true,
            can_login: true,
            stored_verifier: Some(verifier.clone()),
            in_pg_monitor: true,
        };
        assert!(plan_role(&good, "pw1").is_empty());
        let wrong_password = plan_role(&good, "pw2");
        assert_eq!(wrong_password.len(), 1);
        assert!(wrong_password[0].starts_with("ALTER ROLE \"tusk_monitor\" LOGIN PASSWORD"));
        let no_membership = ObservedRole {
            in_pg_monitor: false,
            ..good.clone()
        };
        assert_eq!(
            plan_role(&no_membership, "pw1"),
            vec!["GRANT pg_monitor TO \"tusk_monitor\"".to_owned()]
        );
        let md5 = ObservedRole {
            stored_verifier: Some("md5abc".into()),
            ..good
        };
        assert_eq!(plan_role(&md5, "pw1").len(), 1);
    }
}
