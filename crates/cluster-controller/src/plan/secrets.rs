//! The Secrets a Cluster owns, planned without I/O: credentials for the roles Patroni uses and
//! the TLS Secrets from [`crate::plan::tls`].
//!
//! | Secret | type | keys | for |
//! |---|---|---|---|
//! | `<cluster>-superuser` | `kubernetes.io/basic-auth` | `username` (`postgres`), `password` | Patroni's superuser, the operator's connection |
//! | `<cluster>-replication` | `kubernetes.io/basic-auth` | `username` (`replicator`), `password` | streaming replication |
//! | `<cluster>-rewind` | `kubernetes.io/basic-auth` | `username` (`tusk_rewind`), `password` | `pg_rewind` after a failover |
//! | `<cluster>-patroni-api` | `kubernetes.io/basic-auth` | `username` (`patroni`), `password` | Patroni REST API basic auth (switchover) |
//! | `<cluster>-ca` | `Opaque` | `ca.crt`, `ca.key` | the Cluster's CA |
//! | `<cluster>-server-tls` | `kubernetes.io/tls` | `tls.crt`, `tls.key`, `ca.crt` | PostgreSQL's certificate (absent with `spec.tls.serverSecret`) |
//! | `<cluster>-pgbackrest` | `Opaque` | `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key` | pgBackRest TLS server and backup Jobs |
//!
//! Passwords are 40 characters `[A-Za-z0-9]` from the OS CSPRNG (≈238 bits), made once: an
//! existing password is handed back byte for byte forever after, so a second plan over the
//! first plan's output returns identical Secrets and the apply writes nothing.
//!
//! Nothing here prints a password or key: [`ObservedSecrets`] and [`DesiredSecrets`] redact
//! `Debug`, and errors carry no Secret values. (k8s-openapi's own `Secret` Debug prints data:
//! never log a `Secret` with `{:?}`.)

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use tusk_api::Cluster;
use tusk_api::names::{self, keys};

use crate::observe::patroni_api::Credentials;
use crate::plan::tls::{self, ObservedTlsSecrets, Redacted, TlsError, TlsPlan};
use crate::shared::layout::credential_secrets;
use crate::shared::layout::{BASIC_AUTH_TYPE, OPAQUE_TYPE, TLS_TYPE, component};
use crate::shared::meta;
use crate::shared::pod::SecretEnv;

/// Length of a generated password.
pub const PASSWORD_LENGTH: usize = 40;

pub use tusk_api::names::{patroni_api_secret, rewind_secret};

/// Observed Secrets by name. Derefs to the map; its `Debug` shows names and keys only.
#[derive(Clone, Default, PartialEq)]
pub struct ObservedSecrets(pub BTreeMap<String, Secret>);

impl Deref for ObservedSecrets {
    type Target = BTreeMap<String, Secret>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for ObservedSecrets {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl FromIterator<(String, Secret)> for ObservedSecrets {
    fn from_iter<I: IntoIterator<Item = (String, Secret)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl From<BTreeMap<String, Secret>> for ObservedSecrets {
    fn from(secrets: BTreeMap<String, Secret>) -> Self {
        Self(secrets)
    }
}

impl FromIterator<Secret> for ObservedSecrets {
    /// Keyed by `metadata.name`.
    fn from_iter<I: IntoIterator<Item = Secret>>(iter: I) -> Self {
        iter.into_iter()
            .map(|secret| (secret.metadata.name.clone().unwrap_or_default(), secret))
            .collect()
    }
}

impl fmt::Debug for ObservedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.values().map(Redacted))
            .finish()
    }
}

/// The Secrets a Cluster should have, and the TLS plan behind them (for events).
#[derive(Clone)]
pub struct DesiredSecrets {
    /// Every Secret the Cluster owns, in a fixed order.
    pub secrets: Vec<Secret>,
    /// Which certificates were reused or issued, and when the next renewal is due.
    pub tls: TlsPlan,
}

impl fmt::Debug for DesiredSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secrets: Vec<Redacted<'_>> = self.secrets.iter().map(Redacted).collect();
        f.debug_struct("DesiredSecrets")
            .field("secrets", &secrets)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Why the Secrets could not be planned. Messages never carry a password or key.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The OS random source failed (no password can be made).
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
}

impl SecretsError {
    /// CamelCase condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            SecretsError::Tls(error) => error.reason(),
            SecretsError::Random(_) => "RandomSourceFailed",
        }
    }

    /// Whether only a change of the Cluster's spec can help.
    pub fn is_permanent(&self) -> bool {
        match self {
            SecretsError::Tls(error) => error.is_permanent(),
            SecretsError::Random(_) => false,
        }
    }
}

/// Every Secret the Cluster owns, given the Secrets observed by name: existing passwords,
/// the CA and valid certificates are kept; what is missing or due is made.
pub fn desired_secrets(
    cluster: &Cluster,
    observed: &BTreeMap<String, Secret>,
    now: Timestamp,
) -> Result<Vec<Secret>, SecretsError> {
    plan_secrets(cluster, observed, now).map(|desired| desired.secrets)
}

/// [`desired_secrets`] plus the TLS plan, for events about issued certificates.
pub fn plan_secrets(
    cluster: &Cluster,
    observed: &BTreeMap<String, Secret>,
    now: Timestamp,
) -> Result<DesiredSecrets, SecretsError> {
    let name = meta::cluster_name(cluster);
    let tls = tls::plan_tls(cluster, &observed_tls(cluster, observed), now)?;

    let mut secrets = Vec::new();
    for (secret_name, username) in credential_secrets(&name) {
        let existing = observed.get(&secret_name);
        let password = match existing_password(existing) {
            Some(password) => password,
            None => ByteString(generate_password()?.into_bytes()),
        };
        let data = BTreeMap::from([
            (keys::USERNAME.to_owned(), ByteString(username.into())),
            (keys::PASSWORD.to_owned(), password),
        ]);
        secrets.push(secret(
            cluster,
            secret_name,
            component::CREDENTIALS,
            BASIC_AUTH_TYPE,
            existing,
            data,
        ));
    }

    let ca = names::ca_secret(&name);
    secrets.push(secret(
        cluster,
        ca.clone(),
        component::TLS,
        OPAQUE_TYPE,
        observed.get(&ca),
        tls.ca_secret_data(),
    ));
    if let Some(data) = tls.server_secret_data() {
        let server = names::server_tls_secret(&name);
        secrets.push(secret(
            cluster,
            server.clone(),
            component::TLS,
            TLS_TYPE,
            observed.get(&server),
            data,
        ));
    }
    let pgbackrest = names::pgbackrest_secret(&name);
    secrets.push(secret(
        cluster,
        pgbackrest.clone(),
        component::TLS,
        OPAQUE_TYPE,
        observed.get(&pgbackrest),
        tls.pgbackrest_secret_data(),
    ));

    Ok(DesiredSecrets { secrets, tls })
}

fn existing_password(secret: Option<&Secret>) -> Option<ByteString> {
    secret?
        .data
        .as_ref()?
        .get(keys::PASSWORD)
        .filter(|password| !password.0.is_empty())
        .cloned()
}

/// A child Secret. An existing Secret keeps its `type` (immutable in the API), so a Secret
/// someone created ahead of tusk with another type is still applied to, not rejected.
fn secret(
    cluster: &Cluster,
    name: String,
    component: &str,
    type_: &str,
    existing: Option<&Secret>,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: meta::child_meta(cluster, name, component),
        type_: Some(
            existing
                .and_then(|secret| secret.type_.clone())
                .unwrap_or_else(|| type_.to_owned()),
        ),
        data: Some(data),
        ..Secret::default()
    }
}

/// The TLS Secrets among the observed ones.
pub fn observed_tls(cluster: &Cluster, observed: &BTreeMap<String, Secret>) -> ObservedTlsSecrets {
    let name = meta::cluster_name(cluster);
    let by_name = |secret: &str| observed.get(secret).cloned();
    let tls = &cluster.spec.tls;
    ObservedTlsSecrets {
        ca: by_name(&names::ca_secret(&name)),
        server: by_name(&names::server_tls_secret(&name)),
        pgbackrest: by_name(&names::pgbackrest_secret(&name)),
        user_server: tls.server_secret.as_ref().and_then(|s| by_name(&s.name)),
        user_ca: tls.ca_secret.as_ref().and_then(|s| by_name(&s.name)),
    }
}

/// Secrets tusk made earlier that the spec no longer wants: the generated server TLS Secret
/// once the user brings their own. Delete them only if the Cluster owns them.
pub fn retired_secrets(cluster: &Cluster) -> Vec<String> {
    let name = meta::cluster_name(cluster);
    let tls = &cluster.spec.tls;
    let generated = names::server_tls_secret(&name);
    let user_named_it = [&tls.server_secret, &tls.ca_secret]
        .into_iter()
        .flatten()
        .any(|provided| provided.name == generated);
    if tls.server_secret.is_some() && !user_named_it {
        vec![generated]
    } else {
        Vec::new()
    }
}

/// Environment variables of the `postgres` container that carry Patroni's credentials, each
/// from a Secret key (Patroni reads `PATRONI_<SECTION>_USERNAME` / `_PASSWORD`).
pub fn secret_env(cluster: &Cluster) -> SecretEnv {
    let name = meta::cluster_name(cluster);
    let sections = ["SUPERUSER", "REPLICATION", "REWIND", "RESTAPI"];
    let vars = credential_secrets(&name)
        .into_iter()
        .zip(sections)
        .flat_map(|((secret, _), section)| {
            [(keys::USERNAME, "USERNAME"), (keys::PASSWORD, "PASSWORD")].map(|(key, suffix)| {
                (
                    format!("PATRONI_{section}_{suffix}"),
                    secret.clone(),
                    key.to_owned(),
                )
            })
        })
        .collect();
    SecretEnv { vars }
}

/// The REST API credentials from the observed Patroni API Secret, once it exists.
pub fn patroni_api_credentials(
    cluster: &Cluster,
    observed: &BTreeMap<String, Secret>,
) -> Option<Credentials> {
    let secret = observed.get(&patroni_api_secret(&meta::cluster_name(cluster)))?;
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|value| String::from_utf8(value.0.clone()).ok())
            .filter(|value| !value.is_empty())
    };
    Some(Credentials {
        username: text(keys::USERNAME)?,
        password: text(keys::PASSWORD)?,
    })
}

/// A new password: [`PASSWORD_LENGTH`] characters `[A-Za-z0-9]`, uniform, from the OS CSPRNG.
/// Letters and digits only: safe unquoted in URIs, libpq strings, YAML and shells.
pub fn generate_password() -> Result<String, SecretsError> {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 248 = 4 × 62: bytes at or above it are dropped, so every character is equally likely.
    const LIMIT: u8 = 248;
    let mut password = String::with_capacity(PASSWORD_LENGTH);
    let mut random = [0_u8; PASSWORD_LENGTH + 8];
    while password.len() < PASSWORD_LENGTH {
        getrandom::fill(&mut random).map_err(SecretsError::Random)?;
        for byte in random {
            if byte < LIMIT && password.len() < PASSWORD_LENGTH {
                password.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tls::{CertificateKind, IssueReason, pgbackrest_keys};
    use crate::shared::layout::observed_secret_names;
    use tusk_api::common::SecretReference;
    use tusk_api::labels;

    fn cluster() -> Cluster {
        serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: prod, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427}
spec:
  postgresVersion: 17
  storage: {size: 10Gi}
",
        )
        .unwrap()
    }

    fn now() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    fn by_name(secrets: &[Secret]) -> BTreeMap<String, Secret> {
        secrets
            .iter()
            .map(|secret| (secret.metadata.name.clone().unwrap(), secret.clone()))
            .collect()
    }

    fn value<'a>(secret: &'a Secret, key: &str) -> &'a [u8] {
        &secret.data.as_ref().unwrap()[key].0
    }

    fn find<'a>(secrets: &'a [Secret], name: &str) -> &'a Secret {
        secrets
            .iter()
            .find(|secret| secret.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Secret {name}"))
    }

    #[test]
    fn a_new_cluster_gets_every_secret_with_type_labels_and_owner() {
        let secrets = desired_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let summary: Vec<(String, String, String, Vec<String>)> = secrets
            .iter()
            .map(|secret| {
                (
                    secret.metadata.name.clone().unwrap(),
                    secret.type_.clone().unwrap(),
                    secret.metadata.labels.as_ref().unwrap()[labels::COMPONENT].clone(),
                    secret.data.as_ref().unwrap().keys().cloned().collect(),
                )
            })
            .collect();
        let row = |name: &str, type_: &str, component: &str, keys: &[&str]| {
            (
                name.to_owned(),
                type_.to_owned(),
                component.to_owned(),
                keys.iter().map(|key| (*key).to_owned()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            summary,
            vec![
                row(
                    "db-superuser",
                    BASIC_AUTH_TYPE,
                    "credentials",
                    &["password", "username"]
                ),
                row(
                    "db-replication",
                    BASIC_AUTH_TYPE,
                    "credentials",
                    &["password", "username"]
                ),
                row(
                    "db-rewind",
                    BASIC_AUTH_TYPE,
                    "credentials",
                    &["password", "username"]
                ),
                row(
                    "db-patroni-api",
                    BASIC_AUTH_TYPE,
                    "credentials",
                    &["password", "username"]
                ),
                row("db-ca", OPAQUE_TYPE, "tls", &["ca.crt", "ca.key"]),
                row(
                    "db-server-tls",
                    TLS_TYPE,
                    "tls",
                    &["ca.crt", "tls.crt", "tls.key"]
                ),
                row(
                    "db-pgbackrest",
                    OPAQUE_TYPE,
                    "tls",
                    &[
                        "ca.crt",
                        "client.crt",
                        "client.key",
                        "server.crt",
                        "server.key"
                    ]
                ),
            ]
        );
        for secret in &secrets {
            assert_eq!(secret.metadata.namespace.as_deref(), Some("prod"));
            assert_eq!(
                secret.metadata.labels.as_ref().unwrap()[labels::CLUSTER],
                "db"
            );
            let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("Cluster", "db")
            );
            assert_eq!(owner.controller, Some(true));
        }
        let usernames: Vec<&[u8]> = secrets[..4]
            .iter()
            .map(|secret| value(secret, "username"))
            .collect();
        assert_eq!(
            usernames,
            vec![&b"postgres"[..], b"replicator", b"tusk_rewind", b"patroni"]
        );
    }

    #[test]
    fn passwords_are_long_url_safe_and_all_different() {
        let secrets = desired_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for secret in &secrets[..4] {
            let password = std::str::from_utf8(value(secret, "password")).unwrap();
            assert_eq!(password.len(), PASSWORD_LENGTH);
            assert!(password.len() >= 32);
            assert!(
                password.chars().all(|c| c.is_ascii_alphanumeric()),
                "{password}"
            );
            assert!(seen.insert(password.to_owned()), "passwords repeat");
        }
    }

    #[test]
    fn generated_passwords_use_the_whole_alphabet() {
        let mut counts = BTreeMap::new();
        for _ in 0..200 {
            for c in generate_password().unwrap().chars() {
                *counts.entry(c).or_insert(0_u32) += 1;
            }
        }
        // 8,000 draws over 62 characters: each appears ~129 times; all of them appear.
        assert_eq!(counts.len(), 62);
        assert!(counts.values().all(|count| *count > 60), "{counts:?}");
    }

    #[test]
    fn second_plan_over_the_first_plans_output_is_identical() {
        let first = desired_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let later = now() + jiff::SignedDuration::from_hours(24 * 200);
        let second = desired_secrets(&cluster(), &by_name(&first), later).unwrap();
        assert_eq!(second, first);
        let third = plan_secrets(&cluster(), &by_name(&second), later).unwrap();
        assert_eq!(third.secrets, first);
        assert_eq!(third.tls.issued(), vec![]);
    }

    #[test]
    fn an_existing_password_is_never_changed() {
        let mut observed = BTreeMap::new();
        observed.insert(
            "db-superuser".to_owned(),
            Secret {
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([
                    ("username".to_owned(), ByteString(b"someone".to_vec())),
                    (
                        "password".to_owned(),
                        ByteString(b"chosen by a human".to_vec()),
                    ),
                ])),
                ..Secret::default()
            },
        );
        let secrets = desired_secrets(&cluster(), &observed, now()).unwrap();
        let superuser = find(&secrets, "db-superuser");
        assert_eq!(value(superuser, "password"), b"chosen by a human");
        assert_eq!(value(superuser, "username"), b"postgres");
        // The type of an existing Secret cannot change: keep it.
        assert_eq!(superuser.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn an_empty_password_is_replaced() {
        let mut observed = BTreeMap::new();
        observed.insert(
            "db-rewind".to_owned(),
            Secret {
                data: Some(BTreeMap::from([(
                    "password".to_owned(),
                    ByteString(Vec::new()),
                )])),
                ..Secret::default()
            },
        );
        let secrets = desired_secrets(&cluster(), &observed, now()).unwrap();
        assert_eq!(
            value(find(&secrets, "db-rewind"), "password").len(),
            PASSWORD_LENGTH
        );
    }

    #[test]
    fn the_tls_secrets_carry_the_plans_certificates() {
        let desired = plan_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let secrets = &desired.secrets;
        let ca = value(find(secrets, "db-ca"), "ca.crt");
        assert_eq!(ca, desired.tls.ca.certificate_pem.as_bytes());
        assert_eq!(value(find(secrets, "db-server-tls"), "ca.crt"), ca);
        let pgbackrest = find(secrets, "db-pgbackrest");
        assert_eq!(value(pgbackrest, "ca.crt"), ca);
        assert_eq!(
            value(pgbackrest, pgbackrest_keys::CLIENT_KEY),
            desired
                .tls
                .pgbackrest_client
                .private_key_pem
                .expose()
                .as_bytes()
        );
        assert_eq!(desired.tls.issued().len(), 4);
    }

    #[test]
    fn user_provided_certificates_replace_only_the_server_secret() {
        let mut cluster = cluster();
        cluster.spec.tls.server_secret = Some(SecretReference {
            name: "corp-cert".into(),
        });
        cluster.spec.tls.ca_secret = Some(SecretReference {
            name: "corp-ca".into(),
        });
        let user = |name: &str, keys: &[&str]| Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                keys.iter()
                    .map(|key| ((*key).to_owned(), ByteString(b"pem".to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let observed = by_name(&[
            user("corp-cert", &["tls.crt", "tls.key"]),
            user("corp-ca", &["ca.crt"]),
        ]);
        let secrets = desired_secrets(&cluster, &observed, now()).unwrap();
        let names: Vec<&str> = secrets
            .iter()
            .map(|secret| secret.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "db-superuser",
                "db-replication",
                "db-rewind",
                "db-patroni-api",
                "db-ca",
                "db-pgbackrest"
            ]
        );
        assert_eq!(retired_secrets(&cluster), vec!["db-server-tls".to_owned()]);
        assert!(observed_secret_names(&cluster).contains(&"corp-ca".to_owned()));

        let error = desired_secrets(&cluster, &BTreeMap::new(), now()).unwrap_err();
        assert_eq!(error.reason(), "TlsSecretMissing");
        assert!(error.to_string().contains("corp-cert"), "{error}");
    }

    #[test]
    fn nothing_is_retired_while_tusk_issues_the_server_certificate() {
        assert_eq!(retired_secrets(&cluster()), Vec::<String>::new());
        assert_eq!(
            observed_secret_names(&cluster()),
            vec![
                "db-superuser",
                "db-replication",
                "db-rewind",
                "db-patroni-api",
                "db-ca",
                "db-server-tls",
                "db-pgbackrest"
            ]
        );
    }

    #[test]
    fn patroni_reads_every_credential_from_the_secrets() {
        let env = secret_env(&cluster());
        let var = |name: &str| {
            env.vars
                .iter()
                .find(|(var, _, _)| var == name)
                .map(|(_, secret, key)| (secret.as_str(), key.as_str()))
        };
        assert_eq!(
            var("PATRONI_SUPERUSER_USERNAME"),
            Some(("db-superuser", "username"))
        );
        assert_eq!(
            var("PATRONI_SUPERUSER_PASSWORD"),
            Some(("db-superuser", "password"))
        );
        assert_eq!(
            var("PATRONI_REPLICATION_PASSWORD"),
            Some(("db-replication", "password"))
        );
        assert_eq!(
            var("PATRONI_REWIND_USERNAME"),
            Some(("db-rewind", "username"))
        );
        assert_eq!(
            var("PATRONI_RESTAPI_PASSWORD"),
            Some(("db-patroni-api", "password"))
        );
        assert_eq!(env.vars.len(), 8);
        // Every referenced Secret and key exists in what desired_secrets makes.
        let secrets = desired_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        for (_, secret, key) in &env.vars {
            assert!(!value(find(&secrets, secret), key).is_empty());
        }
    }

    #[test]
    fn patroni_api_credentials_come_from_the_observed_secret() {
        assert!(patroni_api_credentials(&cluster(), &BTreeMap::new()).is_none());
        let secrets = desired_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let credentials = patroni_api_credentials(&cluster(), &by_name(&secrets)).unwrap();
        assert_eq!(credentials.username, "patroni");
        assert_eq!(
            credentials.password.as_bytes(),
            value(find(&secrets, "db-patroni-api"), "password")
        );
    }

    #[test]
    fn debug_output_shows_names_and_keys_never_values() {
        let desired = plan_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let observed: ObservedSecrets = desired.secrets.clone().into_iter().collect();
        let printed = format!(
            "{desired:?}\n{observed:?}\n{:?}",
            observed_tls(&cluster(), &observed)
        );
        assert!(
            printed.contains(
                "db-superuser { keys: [\"password\", \"username\"], values: <redacted> }"
            )
        );
        for secret in &desired.secrets {
            for (key, value) in secret.data.as_ref().unwrap() {
                if key == "username" || key.ends_with(".crt") {
                    continue;
                }
                let text = String::from_utf8(value.0.clone()).unwrap();
                let sample = text.lines().nth(1).unwrap_or(&text);
                assert!(!printed.contains(sample), "{key} printed");
            }
        }
        assert!(!printed.contains("PRIVATE KEY"));
    }

    #[test]
    fn errors_carry_no_secret_values() {
        let desired = desired_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let mut observed = by_name(&desired);
        let ca = observed.get_mut("db-ca").unwrap();
        let data = ca.data.as_mut().unwrap();
        let key = String::from_utf8(data["ca.key"].0.clone()).unwrap();
        data.insert(
            "ca.key".into(),
            ByteString(key.replace('A', "*").into_bytes()),
        );
        let error = desired_secrets(&cluster(), &observed, now()).unwrap_err();
        assert_eq!(error.reason(), "InvalidCaSecret");
        let text = format!("{error} {error:?}");
        for secret in &desired {
            for value in secret.data.as_ref().unwrap().values() {
                let value = String::from_utf8(value.0.clone()).unwrap();
                let sample = value.lines().nth(1).unwrap_or(&value);
                assert!(sample.len() < 12 || !text.contains(sample), "{text}");
            }
        }
        assert!(!text.contains("PRIVATE"));
    }

    #[test]
    fn a_replaced_ca_is_reported_through_the_plan() {
        let first = desired_secrets(&cluster(), &BTreeMap::new(), now()).unwrap();
        let mut observed = by_name(&first);
        observed.remove("db-ca");
        let desired = plan_secrets(&cluster(), &observed, now()).unwrap();
        assert_eq!(
            desired.tls.issued()[..2],
            [
                (CertificateKind::Ca, IssueReason::Missing),
                (CertificateKind::Server, IssueReason::NotSignedByCa)
            ]
        );
        // Passwords do not move with the CA.
        assert_eq!(desired.secrets[..4], first[..4]);
    }
}
