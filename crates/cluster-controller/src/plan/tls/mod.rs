//! TLS for a Cluster, planned without I/O: a CA per Cluster, the PostgreSQL server certificate
//! and pgBackRest's server and client certificates (DESIGN.md §2).
//!
//! ```text
//!  observed <cluster>-ca ── reused while it exists (clients trust it) ─┐
//!  none ────────────────── generated: ECDSA P-256, 10 years ───────────┤
//!                                                                       ▼
//!                CA ─┬─► server cert         <cluster>-server-tls (not with spec.tls.serverSecret)
//!                    ├─► pgBackRest server ┐
//!                    └─► pgBackRest client ┘ <cluster>-pgbackrest
//! ```
//!
//! A leaf certificate is reused while it is readable, matches its key, is signed by the CA,
//! names exactly the DNS names it should and has more than [`RENEW_BEFORE`] left; otherwise a
//! new key and certificate ([`LEAF_VALIDITY`]) are issued. Reused material is handed back
//! byte for byte, so applying the plan in steady state changes nothing.
//!
//! Keys are ECDSA P-256 in PKCS#8 PEM: OpenSSL 1.1 and 3 (PostgreSQL, libpq, pgBackRest),
//! rustls, Go and Java all accept it, which Ed25519 cannot yet promise.
//!
//! Nothing here prints key material: [`PrivateKeyPem`] and [`ObservedTlsSecrets`] redact it
//! in `Debug`, and errors name a Secret and a problem, never its contents.

pub use tusk_certificates as certificates;

use crate::shared::meta;
use certificates::*;
pub use certificates::{
    BACKDATE, CA_VALIDITY, CertificateStatus, CertifiedKey, IssueReason, LEAF_VALIDITY,
    PrivateKeyPem, RENEW_BEFORE, TlsError,
};
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::ExtendedKeyUsagePurpose;
use std::collections::BTreeMap;
use std::fmt;
use tusk_api::Cluster;
use tusk_api::names::{self, keys};
pub use tusk_api::names::{
    CLUSTER_DOMAIN, PGBACKREST_CLIENT_CN, PGBACKREST_SERVER_CN, client_ca_secret, pgbackrest_keys,
};

/// Which certificate of a Cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateKind {
    Ca,
    Server,
    PgBackRestServer,
    PgBackRestClient,
}

impl CertificateKind {
    /// Words for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateKind::Ca => "CA certificate",
            CertificateKind::Server => "server certificate",
            CertificateKind::PgBackRestServer => "pgBackRest server certificate",
            CertificateKind::PgBackRestClient => "pgBackRest client certificate",
        }
    }
}

/// The PostgreSQL server certificate: issued by tusk, or the user's own Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerCertificate {
    /// Issued from the Cluster's CA into [`names::server_tls_secret`].
    Generated(CertifiedKey),
    /// `spec.tls.serverSecret` and `spec.tls.caSecret`, used as they are.
    UserProvided {
        server_secret: String,
        ca_secret: String,
    },
}

/// What the Cluster's TLS Secrets should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPlan {
    /// The Cluster's own CA, in [`names::ca_secret`]. Always there: pgBackRest's certificates
    /// come from it even when the user brings the server certificate.
    pub ca: CertifiedKey,
    /// The PostgreSQL server certificate.
    pub server: ServerCertificate,
    /// pgBackRest's TLS server certificate (one for every instance: DNS SANs by wildcard).
    pub pgbackrest_server: CertifiedKey,
    /// pgBackRest's TLS client certificate, for backup Jobs.
    pub pgbackrest_client: CertifiedKey,
}

impl TlsPlan {
    /// `data` of the CA Secret: `ca.crt`, `ca.key`.
    pub fn ca_secret_data(&self) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            entry(keys::CA_CERT, &self.ca.certificate_pem),
            entry(keys::CA_KEY, self.ca.private_key_pem.expose()),
        ])
    }

    /// `data` of the generated server TLS Secret (`tls.crt`, `tls.key`, `ca.crt`), or `None`
    /// when the user brings their own.
    pub fn server_secret_data(&self) -> Option<BTreeMap<String, ByteString>> {
        match &self.server {
            ServerCertificate::Generated(server) => Some(BTreeMap::from([
                entry(keys::TLS_CERT, &server.certificate_pem),
                entry(keys::TLS_KEY, server.private_key_pem.expose()),
                entry(keys::CA_CERT, &self.ca.certificate_pem),
            ])),
            ServerCertificate::UserProvided { .. } => None,
        }
    }

    /// `data` of the pgBackRest Secret: server and client pairs and `ca.crt`.
    pub fn pgbackrest_secret_data(&self) -> BTreeMap<String, ByteString> {
        BTreeMap::from([
            entry(keys::CA_CERT, &self.ca.certificate_pem),
            entry(
                pgbackrest_keys::SERVER_CERT,
                &self.pgbackrest_server.certificate_pem,
            ),
            entry(
                pgbackrest_keys::SERVER_KEY,
                self.pgbackrest_server.private_key_pem.expose(),
            ),
            entry(
                pgbackrest_keys::CLIENT_CERT,
                &self.pgbackrest_client.certificate_pem,
            ),
            entry(
                pgbackrest_keys::CLIENT_KEY,
                self.pgbackrest_client.private_key_pem.expose(),
            ),
        ])
    }

    /// Every certificate this plan issued, with the reason — for events. Empty in steady state.
    pub fn issued(&self) -> Vec<(CertificateKind, IssueReason)> {
        let server = match &self.server {
            ServerCertificate::Generated(server) => Some(server),
            ServerCertificate::UserProvided { .. } => None,
        };
        [
            (CertificateKind::Ca, Some(&self.ca)),
            (CertificateKind::Server, server),
            (
                CertificateKind::PgBackRestServer,
                Some(&self.pgbackrest_server),
            ),
            (
                CertificateKind::PgBackRestClient,
                Some(&self.pgbackrest_client),
            ),
        ]
        .into_iter()
        .filter_map(|(kind, cert)| match cert?.status {
            CertificateStatus::Issued(reason) => Some((kind, reason)),
            CertificateStatus::Reused => None,
        })
        .collect()
    }

    /// The earliest time a leaf certificate of this plan is due for renewal: a reconcile at or
    /// after it issues a new one. The controller may requeue for it.
    pub fn renew_at(&self) -> Timestamp {
        let mut leaves = vec![&self.pgbackrest_server, &self.pgbackrest_client];
        if let ServerCertificate::Generated(server) = &self.server {
            leaves.push(server);
        }
        leaves
            .into_iter()
            .map(|leaf| {
                leaf.not_after
                    .saturating_sub(RENEW_BEFORE)
                    .unwrap_or(Timestamp::MIN)
            })
            .min()
            .unwrap_or(Timestamp::MAX)
    }
}

fn entry(key: &str, value: &str) -> (String, ByteString) {
    (key.to_owned(), ByteString(value.as_bytes().to_vec()))
}

/// The TLS Secrets as observed (each `None` when it does not exist).
#[derive(Clone, Default)]
pub struct ObservedTlsSecrets {
    /// [`names::ca_secret`].
    pub ca: Option<Secret>,
    /// [`names::server_tls_secret`].
    pub server: Option<Secret>,
    /// [`names::pgbackrest_secret`].
    pub pgbackrest: Option<Secret>,
    /// The Secret `spec.tls.serverSecret` names, when set.
    pub user_server: Option<Secret>,
    /// The Secret `spec.tls.caSecret` names, when set.
    pub user_ca: Option<Secret>,
}

impl fmt::Debug for ObservedTlsSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedTlsSecrets")
            .field("ca", &self.ca.as_ref().map(Redacted))
            .field("server", &self.server.as_ref().map(Redacted))
            .field("pgbackrest", &self.pgbackrest.as_ref().map(Redacted))
            .field("user_server", &self.user_server.as_ref().map(Redacted))
            .field("user_ca", &self.user_ca.as_ref().map(Redacted))
            .finish()
    }
}

/// A Secret for `Debug`: its name and the keys it holds, never the values.
pub(crate) struct Redacted<'a>(pub(crate) &'a Secret);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self
            .0
            .data
            .iter()
            .flat_map(|data| data.keys().map(String::as_str))
            .collect();
        write!(
            f,
            "{} {{ keys: {keys:?}, values: <redacted> }}",
            self.0.metadata.name.as_deref().unwrap_or("<unnamed>")
        )
    }
}

/// DNS names of the PostgreSQL server certificate: the `-rw`, `-ro` and `-r` Services in short,
/// `.<ns>`, `.<ns>.svc` and `.<ns>.svc.cluster.local` form; every instance through the headless
/// Service (`*.<cluster>-pods.<ns>.svc`, which covers each pod's `<instance>-0.<cluster>-pods.
/// <ns>.svc`, and with the cluster domain); `localhost`.
pub fn server_dns_names(cluster: &str, namespace: &str) -> Vec<String> {
    let mut dns_names = Vec::new();
    for service in [
        names::read_write_service(cluster),
        names::read_only_service(cluster),
        names::read_any_service(cluster),
    ] {
        dns_names.push(format!("{service}.{namespace}.svc"));
        dns_names.push(format!("{service}.{namespace}.svc.{CLUSTER_DOMAIN}"));
        dns_names.push(format!("{service}.{namespace}"));
        dns_names.push(service);
    }
    dns_names.extend(instance_dns_names(cluster, namespace));
    dns_names.push("localhost".to_owned());
    dns_names
}

/// DNS names of the pgBackRest server certificate: every instance through the headless Service,
/// the repository host's Service (`<cluster>-repo-host.<ns>.svc`, which the instances name as
/// `repoN-host`) and `localhost`. pgBackRest ignores IP SANs, and matches a wildcard against
/// one label.
pub fn pgbackrest_server_dns_names(cluster: &str, namespace: &str) -> Vec<String> {
    let mut dns_names = instance_dns_names(cluster, namespace);
    dns_names.push(format!("{}.{namespace}.svc", names::repo_host(cluster)));
    dns_names.push("localhost".to_owned());
    dns_names
}

/// `<instance>-0.<cluster>-pods.<ns>.svc[.cluster.local]` (each instance's pod, as
/// [`names::instance_host`] names it) for every instance, by wildcard, so scaling changes no
/// certificate.
fn instance_dns_names(cluster: &str, namespace: &str) -> Vec<String> {
    let headless = names::headless_service(cluster);
    vec![
        format!("*.{headless}.{namespace}.svc"),
        format!("*.{headless}.{namespace}.svc.{CLUSTER_DOMAIN}"),
    ]
}

/// Plans the Cluster's TLS Secrets from what exists: reuses the CA and every leaf that is still
/// good, issues what is missing or due. Pure but for the OS random source keys come from.
pub fn plan_tls(
    cluster: &Cluster,
    observed: &ObservedTlsSecrets,
    now: Timestamp,
) -> Result<TlsPlan, TlsError> {
    let cluster_name = meta::cluster_name(cluster);
    let namespace = meta::namespace(cluster);

    let ca = match &observed.ca {
        Some(secret) => load_ca(secret, &names::ca_secret(&cluster_name))?,
        None => generate_ca(&cluster_name, &namespace, now)?,
    };

    let server = plan_server_certificate(cluster, observed, &ca, now)?;

    let pgbackrest_server = reuse_or_issue(
        stored_pair(
            observed.pgbackrest.as_ref(),
            pgbackrest_keys::SERVER_CERT,
            pgbackrest_keys::SERVER_KEY,
        ),
        &LeafProfile {
            what: "pgBackRest server certificate",
            common_name: PGBACKREST_SERVER_CN.to_owned(),
            dns_names: pgbackrest_server_dns_names(&cluster_name, &namespace),
            usage: ExtendedKeyUsagePurpose::ServerAuth,
        },
        &ca,
        now,
    )?;
    let pgbackrest_client = reuse_or_issue(
        stored_pair(
            observed.pgbackrest.as_ref(),
            pgbackrest_keys::CLIENT_CERT,
            pgbackrest_keys::CLIENT_KEY,
        ),
        &LeafProfile {
            what: "pgBackRest client certificate",
            common_name: PGBACKREST_CLIENT_CN.to_owned(),
            dns_names: Vec::new(),
            usage: ExtendedKeyUsagePurpose::ClientAuth,
        },
        &ca,
        now,
    )?;

    Ok(TlsPlan {
        ca: ca.certified,
        server,
        pgbackrest_server,
        pgbackrest_client,
    })
}

/// The PostgreSQL server certificate: the Secrets the user named (both `serverSecret` and
/// `caSecret`, with their keys), or one tusk issues from `ca` and reuses while it is valid.
fn plan_server_certificate(
    cluster: &Cluster,
    observed: &ObservedTlsSecrets,
    ca: &SigningCa,
    now: Timestamp,
) -> Result<ServerCertificate, TlsError> {
    let cluster_name = meta::cluster_name(cluster);
    let namespace = meta::namespace(cluster);
    match (&cluster.spec.tls.server_secret, &cluster.spec.tls.ca_secret) {
        (Some(server_secret), Some(ca_secret)) => {
            require_keys(
                observed.user_server.as_ref(),
                "serverSecret",
                &server_secret.name,
                &[keys::TLS_CERT, keys::TLS_KEY],
            )?;
            require_keys(
                observed.user_ca.as_ref(),
                "caSecret",
                &ca_secret.name,
                &[keys::CA_CERT],
            )?;
            Ok(ServerCertificate::UserProvided {
                server_secret: server_secret.name.clone(),
                ca_secret: ca_secret.name.clone(),
            })
        }
        (None, None) => {
            let profile = LeafProfile {
                what: "server certificate",
                common_name: names::read_write_host(&cluster_name, &namespace),
                dns_names: server_dns_names(&cluster_name, &namespace),
                usage: ExtendedKeyUsagePurpose::ServerAuth,
            };
            let stored = stored_pair(observed.server.as_ref(), keys::TLS_CERT, keys::TLS_KEY);
            Ok(ServerCertificate::Generated(reuse_or_issue(
                stored, &profile, ca, now,
            )?))
        }
        _ => Err(TlsError::IncompleteUserTls),
    }
}

fn require_keys(
    secret: Option<&Secret>,
    field: &'static str,
    name: &str,
    required: &[&'static str],
) -> Result<(), TlsError> {
    let Some(secret) = secret else {
        return Err(TlsError::UserSecretMissing {
            field,
            secret: name.to_owned(),
        });
    };
    for key in required {
        if secret_value(secret, key).is_none_or(<[u8]>::is_empty) {
            return Err(TlsError::UserSecretIncomplete {
                field,
                secret: name.to_owned(),
                key,
            });
        }
    }
    Ok(())
}

/// Where an instance finds its server certificate, key and CA: a Secret and a key each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTlsSources {
    pub certificate: (String, &'static str),
    pub private_key: (String, &'static str),
    pub ca: (String, &'static str),
}

/// Secrets and keys the instance pods mount at `/etc/tusk/tls/{tls.crt,tls.key,ca.crt}`: the
/// generated server TLS Secret, or the user's `serverSecret` and `caSecret`.
pub fn server_tls_sources(cluster: &Cluster) -> ServerTlsSources {
    let cluster_name = meta::cluster_name(cluster);
    let tls = &cluster.spec.tls;
    let generated = names::server_tls_secret(&cluster_name);
    let server = tls
        .server_secret
        .as_ref()
        .map_or_else(|| generated.clone(), |secret| secret.name.clone());
    let ca = tls
        .ca_secret
        .as_ref()
        .map_or(generated, |secret| secret.name.clone());
    ServerTlsSources {
        certificate: (server.clone(), keys::TLS_CERT),
        private_key: (server, keys::TLS_KEY),
        ca: (ca, keys::CA_CERT),
    }
}

#[cfg(test)]
mod tests;
