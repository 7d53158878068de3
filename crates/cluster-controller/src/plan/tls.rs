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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use tusk_api::Cluster;
use tusk_api::names::{self, keys};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::shared::meta;

/// How long a generated CA is valid. It is never renewed by tusk (see docs/operations/tls.md).
pub const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 3650);
/// How long an issued leaf certificate is valid.
pub const LEAF_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 365);
/// A leaf certificate with less than this left is replaced.
pub const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 30);
/// Certificates start this long before `now`, so a clock a little behind still accepts them.
pub const BACKDATE: SignedDuration = SignedDuration::from_hours(1);

pub use tusk_api::names::{
    CLUSTER_DOMAIN, PGBACKREST_CLIENT_CN, PGBACKREST_SERVER_CN, client_ca_secret, pgbackrest_keys,
};

/// A PEM private key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// The PEM text, for writing into a Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// A certificate and its key, as the plan wants them stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PKCS#8 PEM (or whatever PEM an existing CA Secret held).
    pub private_key_pem: PrivateKeyPem,
    /// When the certificate expires.
    pub not_after: Timestamp,
    /// Whether it was reused or issued now, and why.
    pub status: CertificateStatus,
}

/// Whether a certificate was kept or issued by this plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertificateStatus {
    /// The observed certificate and key are kept as they are.
    Reused,
    /// A new key and certificate were made.
    Issued(IssueReason),
}

/// Why a certificate was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueReason {
    /// There was none.
    Missing,
    /// The stored certificate or key could not be read.
    Unreadable,
    /// The stored key does not belong to the stored certificate.
    KeyMismatch,
    /// The stored certificate was not signed by the Cluster's CA (the CA was replaced).
    NotSignedByCa,
    /// The stored certificate names other DNS names or another common name than wanted.
    NamesChanged,
    /// Less than [`RENEW_BEFORE`] was left.
    Expiring,
}

impl IssueReason {
    /// A CamelCase word for events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueReason::Missing => "Missing",
            IssueReason::Unreadable => "Unreadable",
            IssueReason::KeyMismatch => "KeyMismatch",
            IssueReason::NotSignedByCa => "NotSignedByCa",
            IssueReason::NamesChanged => "NamesChanged",
            IssueReason::Expiring => "Expiring",
        }
    }
}

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

/// Why the TLS plan could not be made. Messages name Secrets and keys, never their values.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA Secret exists but cannot be used. tusk never replaces an existing CA on its own:
    /// clients trust it.
    #[error(
        "Secret {secret} holds no CA tusk can use: {problem}. Restore it, or delete it to have \
         tusk generate a new CA (clients must then be given the new ca.crt)"
    )]
    InvalidCa {
        secret: String,
        problem: &'static str,
    },
    /// `spec.tls.serverSecret` or `caSecret` names a Secret that does not exist.
    #[error(
        "Secret {secret} named in spec.tls.{field} does not exist: create it in the Cluster's namespace"
    )]
    UserSecretMissing { field: &'static str, secret: String },
    /// `spec.tls.serverSecret` or `caSecret` lacks a key.
    #[error("Secret {secret} named in spec.tls.{field} has no key {key}")]
    UserSecretIncomplete {
        field: &'static str,
        secret: String,
        key: &'static str,
    },
    /// Only one of `spec.tls.serverSecret` and `caSecret` is set.
    #[error(
        "spec.tls.serverSecret and spec.tls.caSecret go together: give both to bring your own \
         certificates, or neither to let tusk generate them"
    )]
    IncompleteUserTls,
    /// Making a key or certificate failed.
    #[error("issuing the {what} failed: {source}")]
    Issue {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    /// `now` plus a validity does not fit a certificate's time fields.
    #[error("the validity of the {what} is out of range")]
    ValidityOutOfRange { what: &'static str },
}

impl TlsError {
    /// CamelCase condition reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::InvalidCa { .. } => "InvalidCaSecret",
            TlsError::UserSecretMissing { .. } => "TlsSecretMissing",
            TlsError::UserSecretIncomplete { .. } => "TlsSecretIncomplete",
            TlsError::IncompleteUserTls => "InvalidSpec",
            TlsError::Issue { .. } | TlsError::ValidityOutOfRange { .. } => {
                "CertificateIssueFailed"
            }
        }
    }

    /// Whether only a change of the Cluster's spec can help. Secrets outside the Cluster are
    /// fixed without touching it, so those errors are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        matches!(self, TlsError::IncompleteUserTls)
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

    let server = match (&cluster.spec.tls.server_secret, &cluster.spec.tls.ca_secret) {
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
            ServerCertificate::UserProvided {
                server_secret: server_secret.name.clone(),
                ca_secret: ca_secret.name.clone(),
            }
        }
        (None, None) => {
            let profile = LeafProfile {
                what: "server certificate",
                common_name: names::read_write_host(&cluster_name, &namespace),
                dns_names: server_dns_names(&cluster_name, &namespace),
                usage: ExtendedKeyUsagePurpose::ServerAuth,
            };
            let stored = stored_pair(observed.server.as_ref(), keys::TLS_CERT, keys::TLS_KEY);
            ServerCertificate::Generated(reuse_or_issue(stored, &profile, &ca, now)?)
        }
        _ => return Err(TlsError::IncompleteUserTls),
    };

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

fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|value| value.0.as_slice())
}

/// The CA, ready to sign.
struct SigningCa {
    certified: CertifiedKey,
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn generate_ca(cluster: &str, namespace: &str, now: Timestamp) -> Result<SigningCa, TlsError> {
    const WHAT: &str = "CA certificate";
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_error(WHAT))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("{cluster}.{namespace} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now, CA_VALIDITY, WHAT)?;
    let certificate = params.self_signed(&key).map_err(issue_error(WHAT))?;
    let certified = CertifiedKey {
        certificate_pem: certificate.pem(),
        private_key_pem: PrivateKeyPem(key.serialize_pem()),
        not_after: Timestamp::MIN,
        status: CertificateStatus::Issued(IssueReason::Missing),
    };
    // Through the same path as a stored CA, so a fresh CA is exactly what the next reconcile
    // will read back.
    signing_ca(certified).map_err(|_| TlsError::Issue {
        what: WHAT,
        source: rcgen::Error::CouldNotParseCertificate,
    })
}

fn load_ca(secret: &Secret, name: &str) -> Result<SigningCa, TlsError> {
    let invalid = |problem| TlsError::InvalidCa {
        secret: name.to_owned(),
        problem,
    };
    let certificate_pem = utf8_value(secret, keys::CA_CERT)
        .ok_or_else(|| invalid("ca.crt is missing, empty or not PEM text"))?;
    let private_key_pem = utf8_value(secret, keys::CA_KEY)
        .ok_or_else(|| invalid("ca.key is missing, empty or not PEM text"))?;
    signing_ca(CertifiedKey {
        certificate_pem: certificate_pem.to_owned(),
        private_key_pem: PrivateKeyPem(private_key_pem.to_owned()),
        not_after: Timestamp::MIN,
        status: CertificateStatus::Reused,
    })
    .map_err(invalid)
}

fn utf8_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret_value(secret, key)
        .and_then(|value| std::str::from_utf8(value).ok())
        .filter(|value| !value.trim().is_empty())
}

/// Reads a CA certificate and key; the error is a problem description without secret material.
fn signing_ca(mut certified: CertifiedKey) -> Result<SigningCa, &'static str> {
    let der = first_certificate_der(&certified.certificate_pem)
        .ok_or("ca.crt is not a PEM certificate")?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| "ca.crt is not an X.509 certificate")?;
    if !x509.is_ca() {
        return Err("ca.crt is not a CA certificate (basicConstraints CA:FALSE)");
    }
    let key = KeyPair::from_pem(certified.private_key_pem.expose())
        .map_err(|_| "ca.key is not a PEM private key tusk can sign with (PKCS#8, ECDSA P-256/P-384, Ed25519 or RSA)")?;
    if !key_matches(&key, &x509) {
        return Err("ca.key does not belong to ca.crt");
    }
    certified.not_after = not_after(&x509).ok_or("ca.crt has an unreadable expiry")?;
    drop(x509);
    let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
        .map_err(|_| "ca.crt cannot act as an issuer")?;
    Ok(SigningCa {
        certified,
        der,
        issuer,
    })
}

fn first_certificate_der(pem: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

fn key_matches(key: &KeyPair, certificate: &X509Certificate<'_>) -> bool {
    key.public_key_raw() == certificate.public_key().subject_public_key.data.as_ref()
}

fn not_after(certificate: &X509Certificate<'_>) -> Option<Timestamp> {
    Timestamp::from_second(certificate.validity().not_after.timestamp()).ok()
}

/// What a leaf certificate should be.
struct LeafProfile {
    what: &'static str,
    common_name: String,
    dns_names: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
}

/// A stored certificate and key (either may be absent).
struct StoredPair<'a> {
    certificate: Option<&'a [u8]>,
    key: Option<&'a [u8]>,
}

fn stored_pair<'a>(secret: Option<&'a Secret>, cert_key: &str, key_key: &str) -> StoredPair<'a> {
    StoredPair {
        certificate: secret.and_then(|secret| secret_value(secret, cert_key)),
        key: secret.and_then(|secret| secret_value(secret, key_key)),
    }
}

fn reuse_or_issue(
    stored: StoredPair<'_>,
    profile: &LeafProfile,
    ca: &SigningCa,
    now: Timestamp,
) -> Result<CertifiedKey, TlsError> {
    match check_stored(&stored, profile, ca, now) {
        Ok(reused) => Ok(reused),
        Err(reason) => issue_leaf(profile, ca, now, reason),
    }
}

/// The stored pair, if it may stay; otherwise why not.
fn check_stored(
    stored: &StoredPair<'_>,
    profile: &LeafProfile,
    ca: &SigningCa,
    now: Timestamp,
) -> Result<CertifiedKey, IssueReason> {
    let (Some(certificate), Some(key)) = (stored.certificate, stored.key) else {
        return Err(IssueReason::Missing);
    };
    let certificate_pem = std::str::from_utf8(certificate).map_err(|_| IssueReason::Unreadable)?;
    let key_pem = std::str::from_utf8(key).map_err(|_| IssueReason::Unreadable)?;
    let der = first_certificate_der(certificate_pem).ok_or(IssueReason::Unreadable)?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(&der).map_err(|_| IssueReason::Unreadable)?;
    let key = KeyPair::from_pem(key_pem).map_err(|_| IssueReason::Unreadable)?;
    if !key_matches(&key, &x509) {
        return Err(IssueReason::KeyMismatch);
    }
    if !signed_by(&x509, &ca.der) {
        return Err(IssueReason::NotSignedByCa);
    }
    if common_name(&x509) != Some(profile.common_name.as_str())
        || dns_names(&x509) != Some(profile.dns_names.iter().map(String::as_str).collect())
    {
        return Err(IssueReason::NamesChanged);
    }
    let not_after = not_after(&x509).ok_or(IssueReason::Unreadable)?;
    if not_after.duration_since(now) < RENEW_BEFORE {
        return Err(IssueReason::Expiring);
    }
    Ok(CertifiedKey {
        certificate_pem: certificate_pem.to_owned(),
        private_key_pem: PrivateKeyPem(key_pem.to_owned()),
        not_after,
        status: CertificateStatus::Reused,
    })
}

fn signed_by(certificate: &X509Certificate<'_>, ca_der: &[u8]) -> bool {
    let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca_der) else {
        return false;
    };
    certificate.issuer() == ca.subject()
        && certificate.verify_signature(Some(ca.public_key())).is_ok()
}

fn common_name<'a>(certificate: &'a X509Certificate<'_>) -> Option<&'a str> {
    certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
}

/// The certificate's DNS SANs, or `None` when they cannot be read.
fn dns_names<'a>(certificate: &'a X509Certificate<'_>) -> Option<BTreeSet<&'a str>> {
    let Ok(extension) = certificate.subject_alternative_name() else {
        return None;
    };
    Some(
        extension
            .iter()
            .flat_map(|extension| extension.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::DNSName(name) => Some(*name),
                _ => None,
            })
            .collect(),
    )
}

fn issue_leaf(
    profile: &LeafProfile,
    ca: &SigningCa,
    now: Timestamp,
    reason: IssueReason,
) -> Result<CertifiedKey, TlsError> {
    let what = profile.what;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_error(what))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&profile.common_name);
    params.subject_alt_names = profile
        .dns_names
        .iter()
        .map(|name| Ok(SanType::DnsName(name.as_str().try_into()?)))
        .collect::<Result<_, rcgen::Error>>()
        .map_err(issue_error(what))?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![profile.usage.clone()];
    params.use_authority_key_identifier_extension = true;
    let not_after = set_validity(&mut params, now, LEAF_VALIDITY, what)?;
    let certificate = params
        .signed_by(&key, &ca.issuer)
        .map_err(issue_error(what))?;
    Ok(CertifiedKey {
        certificate_pem: certificate.pem(),
        private_key_pem: PrivateKeyPem(key.serialize_pem()),
        not_after,
        status: CertificateStatus::Issued(reason),
    })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "tusk");
    name.push(DnType::CommonName, common_name);
    name
}

/// Sets `not_before` (`now` less [`BACKDATE`]) and `not_after` (`now` plus `validity`);
/// returns `not_after`, whole seconds as the certificate stores it.
fn set_validity(
    params: &mut CertificateParams,
    now: Timestamp,
    validity: SignedDuration,
    what: &'static str,
) -> Result<Timestamp, TlsError> {
    let out_of_range = || TlsError::ValidityOutOfRange { what };
    let not_before = now.checked_sub(BACKDATE).map_err(|_| out_of_range())?;
    let not_after = now.checked_add(validity).map_err(|_| out_of_range())?;
    let to_time = |timestamp: Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(timestamp.as_second()).map_err(|_| out_of_range())
    };
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    Timestamp::from_second(not_after.as_second()).map_err(|_| out_of_range())
}

fn issue_error(what: &'static str) -> impl Fn(rcgen::Error) -> TlsError {
    move |source| TlsError::Issue { what, source }
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
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use tusk_api::common::SecretReference;

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

    fn byo_cluster() -> Cluster {
        let mut cluster = cluster();
        cluster.spec.tls.server_secret = Some(SecretReference {
            name: "my-server-cert".into(),
        });
        cluster.spec.tls.ca_secret = Some(SecretReference {
            name: "my-ca".into(),
        });
        cluster
    }

    fn now() -> Timestamp {
        "2026-11-22T10:00:00Z".parse().unwrap()
    }

    /// The `notBefore` of the first certificate in `pem`.
    fn issued_at(pem: &str) -> Timestamp {
        let der = parse(pem);
        let (_, certificate) = x509_parser::parse_x509_certificate(&der).unwrap();
        Timestamp::from_second(certificate.validity().not_before.timestamp()).unwrap()
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    fn secret(name: &str, data: BTreeMap<String, ByteString>) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..Secret::default()
        }
    }

    /// What the API would hold after the plan was applied.
    fn observed_after(plan: &TlsPlan) -> ObservedTlsSecrets {
        ObservedTlsSecrets {
            ca: Some(secret("db-ca", plan.ca_secret_data())),
            server: plan
                .server_secret_data()
                .map(|data| secret("db-server-tls", data)),
            pgbackrest: Some(secret("db-pgbackrest", plan.pgbackrest_secret_data())),
            ..ObservedTlsSecrets::default()
        }
    }

    fn generated(plan: &TlsPlan) -> &CertifiedKey {
        match &plan.server {
            ServerCertificate::Generated(server) => server,
            ServerCertificate::UserProvided { .. } => panic!("server certificate not generated"),
        }
    }

    fn parse(pem: &str) -> Vec<u8> {
        first_certificate_der(pem).unwrap()
    }

    fn verify_with_webpki(
        ca_pem: &str,
        leaf_pem: &str,
        usage: webpki::KeyUsage,
        at: Timestamp,
    ) -> Result<(), webpki::Error> {
        use pki_types::{CertificateDer, UnixTime};
        let ca_der = CertificateDer::from(parse(ca_pem));
        let anchor = webpki::anchor_from_trusted_cert(&ca_der)?.to_owned();
        let leaf_der = CertificateDer::from(parse(leaf_pem));
        let leaf = webpki::EndEntityCert::try_from(&leaf_der)?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(at.as_second()).unwrap(),
        ));
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            time,
            usage,
            None,
            None,
        )
        .map(|_| ())
    }

    fn valid_for_name(leaf_pem: &str, name: &str) -> bool {
        use pki_types::{CertificateDer, ServerName};
        let leaf_der = CertificateDer::from(parse(leaf_pem));
        let leaf = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
        let name = ServerName::try_from(name).unwrap();
        leaf.verify_is_valid_for_subject_name(&name).is_ok()
    }

    #[test]
    fn first_plan_issues_a_ca_and_every_certificate() {
        let plan = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        assert_eq!(
            plan.issued(),
            vec![
                (CertificateKind::Ca, IssueReason::Missing),
                (CertificateKind::Server, IssueReason::Missing),
                (CertificateKind::PgBackRestServer, IssueReason::Missing),
                (CertificateKind::PgBackRestClient, IssueReason::Missing),
            ]
        );
        assert_eq!(plan.ca.not_after, now() + CA_VALIDITY);
        assert_eq!(generated(&plan).not_after, now() + LEAF_VALIDITY);
        assert_eq!(plan.renew_at(), now() + LEAF_VALIDITY - RENEW_BEFORE);
        for key in [
            plan.ca.private_key_pem.expose(),
            generated(&plan).private_key_pem.expose(),
            plan.pgbackrest_server.private_key_pem.expose(),
            plan.pgbackrest_client.private_key_pem.expose(),
        ] {
            assert!(
                key.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "PKCS#8 PEM"
            );
        }
    }

    #[test]
    fn ca_is_a_p256_ca_named_after_the_cluster_for_ten_years() {
        let plan = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let der = parse(&plan.ca.certificate_pem);
        let (_, ca) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(ca.is_ca());
        assert_eq!(common_name(&ca), Some("db.prod CA"));
        assert_eq!(
            ca.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        assert_eq!(
            ca.validity().not_before.timestamp(),
            (now() - BACKDATE).as_second()
        );
        assert_eq!(
            ca.validity().not_after.timestamp(),
            (now() + days(3650)).as_second()
        );
        assert!(ca.verify_signature(None).is_ok(), "self-signed");
    }

    #[test]
    fn server_certificate_chains_to_the_ca_and_names_every_service() {
        let plan = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let server = &generated(&plan).certificate_pem;
        verify_with_webpki(
            &plan.ca.certificate_pem,
            server,
            webpki::KeyUsage::server_auth(),
            now(),
        )
        .unwrap();
        for name in [
            "db-rw",
            "db-rw.prod",
            "db-rw.prod.svc",
            "db-rw.prod.svc.cluster.local",
            "db-ro.prod.svc",
            "db-ro.prod.svc.cluster.local",
            "db-r",
            "db-r.prod.svc.cluster.local",
            "db-1-0.db-pods.prod.svc",
            "db-12-0.db-pods.prod.svc.cluster.local",
            "localhost",
        ] {
            assert!(valid_for_name(server, name), "{name}");
        }
        assert!(valid_for_name(
            server,
            &names::instance_host("db", "db-2", "prod")
        ));
        for name in [
            "db-rw.other.svc",
            "x.db-1-0.db-pods.prod.svc",
            "db-pods.prod.svc",
            "127.0.0.1",
        ] {
            assert!(!valid_for_name(server, name), "{name}");
        }
        let der = parse(server);
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(common_name(&x509), Some("db-rw.prod.svc"));
        assert!(!x509.is_ca());
        assert_eq!(
            x509.validity().not_after.timestamp(),
            (now() + days(365)).as_second()
        );
    }

    #[test]
    fn pgbackrest_certificates_chain_to_the_ca_with_their_usages() {
        let plan = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let ca = &plan.ca.certificate_pem;
        let server = &plan.pgbackrest_server.certificate_pem;
        let client = &plan.pgbackrest_client.certificate_pem;
        verify_with_webpki(ca, server, webpki::KeyUsage::server_auth(), now()).unwrap();
        verify_with_webpki(ca, client, webpki::KeyUsage::client_auth(), now()).unwrap();
        // A server certificate cannot pose as the client pgBackRest admits, nor the reverse.
        assert!(verify_with_webpki(ca, server, webpki::KeyUsage::client_auth(), now()).is_err());
        assert!(verify_with_webpki(ca, client, webpki::KeyUsage::server_auth(), now()).is_err());
        // What backup Jobs and the stanza Job pass as pg1-host.
        assert!(valid_for_name(
            server,
            &names::instance_host("db", "db-3", "prod")
        ));
        assert!(valid_for_name(server, "localhost"));
        assert!(!valid_for_name(server, "db-rw.prod.svc"));
        let der = parse(client);
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(common_name(&x509), Some(PGBACKREST_CLIENT_CN));
        assert_eq!(dns_names(&x509), Some(BTreeSet::new()));
    }

    #[test]
    fn second_plan_reuses_everything_byte_for_byte() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let observed = observed_after(&first);
        let second = plan_tls(&cluster(), &observed, now() + days(1)).unwrap();
        assert_eq!(second.issued(), vec![]);
        assert_eq!(second.ca_secret_data(), first.ca_secret_data());
        assert_eq!(second.server_secret_data(), first.server_secret_data());
        assert_eq!(
            second.pgbackrest_secret_data(),
            first.pgbackrest_secret_data()
        );
        assert_eq!(second.ca.status, CertificateStatus::Reused);
        assert_eq!(second.ca.not_after, first.ca.not_after);
        assert_eq!(generated(&second).not_after, generated(&first).not_after);
    }

    #[test]
    fn leaves_are_renewed_when_less_than_thirty_days_remain_and_the_ca_stays() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let observed = observed_after(&first);
        let expiry = generated(&first).not_after;

        let just_before = expiry - RENEW_BEFORE - SignedDuration::from_secs(1);
        let plan = plan_tls(&cluster(), &observed, just_before).unwrap();
        assert_eq!(plan.issued(), vec![]);

        let due = expiry - days(29);
        let plan = plan_tls(&cluster(), &observed, due).unwrap();
        assert_eq!(
            plan.issued(),
            vec![
                (CertificateKind::Server, IssueReason::Expiring),
                (CertificateKind::PgBackRestServer, IssueReason::Expiring),
                (CertificateKind::PgBackRestClient, IssueReason::Expiring),
            ]
        );
        assert_eq!(plan.ca_secret_data(), first.ca_secret_data());
        assert_eq!(generated(&plan).not_after, due + LEAF_VALIDITY);
        verify_with_webpki(
            &plan.ca.certificate_pem,
            &generated(&plan).certificate_pem,
            webpki::KeyUsage::server_auth(),
            due + days(300),
        )
        .unwrap();
        assert_ne!(
            generated(&plan).private_key_pem,
            generated(&first).private_key_pem,
            "a renewal brings a new key"
        );

        let expired = expiry + days(1);
        let plan = plan_tls(&cluster(), &observed, expired).unwrap();
        assert_eq!(plan.issued().len(), 3);
    }

    #[test]
    fn an_existing_ca_is_reused_never_regenerated_even_near_its_expiry() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let observed = ObservedTlsSecrets {
            ca: Some(secret("db-ca", first.ca_secret_data())),
            ..ObservedTlsSecrets::default()
        };
        let late = now() + days(3649);
        let plan = plan_tls(&cluster(), &observed, late).unwrap();
        assert_eq!(plan.ca_secret_data(), first.ca_secret_data());
        assert_eq!(plan.ca.status, CertificateStatus::Reused);
        verify_with_webpki(
            &first.ca.certificate_pem,
            &generated(&plan).certificate_pem,
            webpki::KeyUsage::server_auth(),
            late,
        )
        .unwrap();
    }

    #[test]
    fn a_ca_the_user_put_in_place_is_used_to_issue() {
        // A CA made elsewhere (here: by rcgen directly, as openssl would), stored as ca.crt and
        // ca.key before the Cluster exists.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("Example Corp Database CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let observed = ObservedTlsSecrets {
            ca: Some(secret(
                "db-ca",
                BTreeMap::from([
                    entry(keys::CA_CERT, &ca_pem),
                    entry(keys::CA_KEY, &key.serialize_pem()),
                ]),
            )),
            ..ObservedTlsSecrets::default()
        };
        let plan = plan_tls(&cluster(), &observed, now()).unwrap();
        assert_eq!(plan.ca.certificate_pem, ca_pem);
        verify_with_webpki(
            &ca_pem,
            &generated(&plan).certificate_pem,
            webpki::KeyUsage::server_auth(),
            now(),
        )
        .unwrap();
    }

    #[test]
    fn leaves_of_a_replaced_ca_are_reissued() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let mut observed = observed_after(&first);
        observed.ca = None;
        let plan = plan_tls(&cluster(), &observed, now()).unwrap();
        assert_eq!(
            plan.issued(),
            vec![
                (CertificateKind::Ca, IssueReason::Missing),
                (CertificateKind::Server, IssueReason::NotSignedByCa),
                (
                    CertificateKind::PgBackRestServer,
                    IssueReason::NotSignedByCa
                ),
                (
                    CertificateKind::PgBackRestClient,
                    IssueReason::NotSignedByCa
                ),
            ]
        );
        verify_with_webpki(
            &plan.ca.certificate_pem,
            &generated(&plan).certificate_pem,
            webpki::KeyUsage::server_auth(),
            now(),
        )
        .unwrap();
    }

    #[test]
    fn a_certificate_with_other_names_is_reissued() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let ca = signing_ca(first.ca.clone()).unwrap();
        let narrow = issue_leaf(
            &LeafProfile {
                what: "test",
                common_name: "db-rw.prod.svc".into(),
                dns_names: vec!["db-rw.prod.svc".into()],
                usage: ExtendedKeyUsagePurpose::ServerAuth,
            },
            &ca,
            now(),
            IssueReason::Missing,
        )
        .unwrap();
        let mut observed = observed_after(&first);
        observed.server = Some(secret(
            "db-server-tls",
            BTreeMap::from([
                entry(keys::TLS_CERT, &narrow.certificate_pem),
                entry(keys::TLS_KEY, narrow.private_key_pem.expose()),
            ]),
        ));
        let plan = plan_tls(&cluster(), &observed, now()).unwrap();
        assert_eq!(
            plan.issued(),
            vec![(CertificateKind::Server, IssueReason::NamesChanged)]
        );
        assert!(valid_for_name(
            &generated(&plan).certificate_pem,
            "db-ro.prod"
        ));
    }

    #[test]
    fn a_key_that_does_not_match_or_garbage_is_replaced() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let mut observed = observed_after(&first);
        let mut swapped = first.server_secret_data().unwrap();
        swapped.insert(
            keys::TLS_KEY.into(),
            ByteString(
                first
                    .pgbackrest_server
                    .private_key_pem
                    .expose()
                    .as_bytes()
                    .to_vec(),
            ),
        );
        observed.server = Some(secret("db-server-tls", swapped));
        let mut pgbackrest = first.pgbackrest_secret_data();
        pgbackrest.insert(
            pgbackrest_keys::CLIENT_CERT.into(),
            ByteString(b"not a certificate".to_vec()),
        );
        observed.pgbackrest = Some(secret("db-pgbackrest", pgbackrest));
        let plan = plan_tls(&cluster(), &observed, now()).unwrap();
        assert_eq!(
            plan.issued(),
            vec![
                (CertificateKind::Server, IssueReason::KeyMismatch),
                (CertificateKind::PgBackRestClient, IssueReason::Unreadable),
            ]
        );
    }

    #[test]
    fn an_unusable_ca_secret_is_an_error_not_a_new_ca() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let other = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let cases = [
            (BTreeMap::new(), "ca.crt is missing"),
            (
                BTreeMap::from([entry(keys::CA_CERT, &first.ca.certificate_pem)]),
                "ca.key is missing",
            ),
            (
                BTreeMap::from([
                    entry(keys::CA_CERT, &first.ca.certificate_pem),
                    entry(keys::CA_KEY, other.ca.private_key_pem.expose()),
                ]),
                "does not belong",
            ),
            (
                BTreeMap::from([
                    entry(keys::CA_CERT, &generated(&first).certificate_pem),
                    entry(keys::CA_KEY, generated(&first).private_key_pem.expose()),
                ]),
                "not a CA certificate",
            ),
        ];
        for (data, problem) in cases {
            let observed = ObservedTlsSecrets {
                ca: Some(secret("db-ca", data)),
                ..ObservedTlsSecrets::default()
            };
            let error = plan_tls(&cluster(), &observed, now()).unwrap_err();
            assert!(matches!(error, TlsError::InvalidCa { .. }), "{error}");
            assert!(error.to_string().contains(problem), "{error}");
            assert!(error.to_string().contains("Secret db-ca"), "{error}");
            assert_eq!(error.reason(), "InvalidCaSecret");
        }
    }

    #[test]
    fn errors_never_carry_key_material() {
        let first = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let key = first.ca.private_key_pem.expose();
        let body = key.lines().nth(1).unwrap();
        let broken_key = key.replace(body, &format!("{body}SECRETSECRET"));
        let observed = ObservedTlsSecrets {
            ca: Some(secret(
                "db-ca",
                BTreeMap::from([
                    entry(keys::CA_CERT, &first.ca.certificate_pem),
                    entry(keys::CA_KEY, &broken_key),
                ]),
            )),
            ..ObservedTlsSecrets::default()
        };
        let error = plan_tls(&cluster(), &observed, now()).unwrap_err();
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains("SECRET"), "{text}");
            assert!(!text.contains(body), "{text}");
            assert!(!text.contains("BEGIN"), "{text}");
        }
    }

    #[test]
    fn debug_output_redacts_private_keys() {
        let plan = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let observed = observed_after(&plan);
        let printed = format!("{plan:?} {observed:?} {:#?}", plan.ca);
        assert!(printed.contains("<redacted>"), "{printed}");
        for key in [
            plan.ca.private_key_pem.expose(),
            generated(&plan).private_key_pem.expose(),
            plan.pgbackrest_client.private_key_pem.expose(),
        ] {
            let body = key.lines().nth(1).unwrap();
            assert!(!printed.contains(body));
        }
        assert!(!printed.contains("PRIVATE KEY"));
        assert!(printed.contains("db-ca { keys: [\"ca.crt\", \"ca.key\"]"));
    }

    #[test]
    fn user_provided_server_secrets_are_used_as_they_are() {
        let mut observed = ObservedTlsSecrets {
            user_server: Some(secret(
                "my-server-cert",
                BTreeMap::from([entry("tls.crt", "cert"), entry("tls.key", "key")]),
            )),
            user_ca: Some(secret("my-ca", BTreeMap::from([entry("ca.crt", "ca")]))),
            ..ObservedTlsSecrets::default()
        };
        let plan = plan_tls(&byo_cluster(), &observed, now()).unwrap();
        assert_eq!(
            plan.server,
            ServerCertificate::UserProvided {
                server_secret: "my-server-cert".into(),
                ca_secret: "my-ca".into()
            }
        );
        assert_eq!(plan.server_secret_data(), None);
        // pgBackRest still gets certificates from tusk's own CA.
        verify_with_webpki(
            &plan.ca.certificate_pem,
            &plan.pgbackrest_client.certificate_pem,
            webpki::KeyUsage::client_auth(),
            now(),
        )
        .unwrap();
        assert_eq!(
            server_tls_sources(&byo_cluster()),
            ServerTlsSources {
                certificate: ("my-server-cert".into(), "tls.crt"),
                private_key: ("my-server-cert".into(), "tls.key"),
                ca: ("my-ca".into(), "ca.crt"),
            }
        );
        assert_eq!(client_ca_secret(&byo_cluster()), "my-ca");

        observed.user_ca = None;
        let error = plan_tls(&byo_cluster(), &observed, now()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Secret my-ca named in spec.tls.caSecret does not exist: create it in the Cluster's namespace"
        );
        assert!(!error.is_permanent());
        observed.user_ca = Some(secret("my-ca", BTreeMap::new()));
        let error = plan_tls(&byo_cluster(), &observed, now()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Secret my-ca named in spec.tls.caSecret has no key ca.crt"
        );

        let mut half = byo_cluster();
        half.spec.tls.ca_secret = None;
        let error = plan_tls(&half, &observed, now()).unwrap_err();
        assert!(error.is_permanent());
        assert_eq!(error.reason(), "InvalidSpec");
    }

    #[test]
    fn generated_server_tls_is_mounted_from_one_secret() {
        assert_eq!(
            server_tls_sources(&cluster()),
            ServerTlsSources {
                certificate: ("db-server-tls".into(), "tls.crt"),
                private_key: ("db-server-tls".into(), "tls.key"),
                ca: ("db-server-tls".into(), "ca.crt"),
            }
        );
        assert_eq!(client_ca_secret(&cluster()), "db-ca");
    }

    #[test]
    fn longest_cluster_and_namespace_names_fit_in_a_certificate() {
        let mut cluster = cluster();
        cluster.metadata.name = Some("c".repeat(names::MAX_CLUSTER_NAME_LENGTH));
        cluster.metadata.namespace = Some("n".repeat(63));
        let plan = plan_tls(&cluster, &ObservedTlsSecrets::default(), now()).unwrap();
        let name = format!("{}-rw.{}.svc.cluster.local", "c".repeat(40), "n".repeat(63));
        assert!(valid_for_name(&generated(&plan).certificate_pem, &name));
    }

    /// A CA made with the openssl CLI, put in place as `<cluster>-ca` before the Cluster: tusk
    /// issues from it for every key type the docs promise, and refuses a SEC1 key clearly.
    #[test]
    fn a_ca_made_with_openssl_is_used_for_every_documented_key_type() {
        let Some(openssl) = tusk_testkit::require(tusk_testkit::program("openssl")) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let output = std::process::Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let key_types: [&[&str]; 4] = [
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            &["-algorithm", "ED25519"],
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ];
        for key_type in key_types {
            let mut genpkey = vec!["genpkey", "-out", "ca.key"];
            genpkey.extend_from_slice(key_type);
            run(&genpkey);
            run(&[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "30",
                "-subj",
                "/CN=Corp DB CA",
            ]);
            let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
            let observed = ObservedTlsSecrets {
                ca: Some(secret(
                    "db-ca",
                    BTreeMap::from([
                        entry(keys::CA_CERT, &read("ca.crt")),
                        entry(keys::CA_KEY, &read("ca.key")),
                    ]),
                )),
                ..ObservedTlsSecrets::default()
            };
            // openssl dates the CA from the wall clock; the plan and the check run at a time
            // derived from that CA, so the test holds on any day.
            let at = issued_at(&read("ca.crt")) + SignedDuration::from_hours(1);
            let plan = plan_tls(&cluster(), &observed, at).unwrap();
            assert_eq!(plan.ca.status, CertificateStatus::Reused, "{key_type:?}");
            std::fs::write(
                dir.path().join("leaf.crt"),
                &generated(&plan).certificate_pem,
            )
            .unwrap();
            run(&[
                "verify",
                "-attime",
                &at.as_second().to_string(),
                "-CAfile",
                "ca.crt",
                "-purpose",
                "sslserver",
                "-verify_hostname",
                "db-rw.prod.svc",
                "leaf.crt",
            ]);
        }

        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.key",
        ]);
        run(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "sec1.key",
            "-out",
            "sec1.crt",
            "-days",
            "30",
            "-subj",
            "/CN=Corp DB CA",
        ]);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let observed = ObservedTlsSecrets {
            ca: Some(secret(
                "db-ca",
                BTreeMap::from([
                    entry(keys::CA_CERT, &read("sec1.crt")),
                    entry(keys::CA_KEY, &read("sec1.key")),
                ]),
            )),
            ..ObservedTlsSecrets::default()
        };
        let at = issued_at(&read("sec1.crt")) + SignedDuration::from_hours(1);
        let error = plan_tls(&cluster(), &observed, at).unwrap_err();
        assert!(error.to_string().contains("PKCS#8"), "{error}");
    }

    /// OpenSSL, which PostgreSQL, libpq and pgBackRest use, accepts the chain, the names and
    /// the purposes.
    #[test]
    fn openssl_verifies_the_chain_names_and_purposes() {
        let Some(openssl) = tusk_testkit::require(tusk_testkit::program("openssl")) else {
            return;
        };
        let plan = plan_tls(&cluster(), &ObservedTlsSecrets::default(), now()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        let ca = write("ca.crt", &plan.ca.certificate_pem);
        let server = write("server.crt", &generated(&plan).certificate_pem);
        let pgbackrest_server = write("pgbr-server.crt", &plan.pgbackrest_server.certificate_pem);
        let pgbackrest_client = write("pgbr-client.crt", &plan.pgbackrest_client.certificate_pem);
        let at = now().as_second().to_string();
        let verify = |leaf: &std::path::Path, extra: &[&str]| {
            let output = std::process::Command::new(&openssl)
                .args(["verify", "-x509_strict", "-attime", &at, "-CAfile"])
                .arg(&ca)
                .args(extra)
                .arg(leaf)
                .output()
                .unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr),
            )
        };
        for (leaf, extra) in [
            (
                &server,
                vec![
                    "-purpose",
                    "sslserver",
                    "-verify_hostname",
                    "db-rw.prod.svc",
                ],
            ),
            (
                &server,
                vec![
                    "-purpose",
                    "sslserver",
                    "-verify_hostname",
                    "db-2-0.db-pods.prod.svc.cluster.local",
                ],
            ),
            (
                &pgbackrest_server,
                vec![
                    "-purpose",
                    "sslserver",
                    "-verify_hostname",
                    "db-1-0.db-pods.prod.svc",
                ],
            ),
            (&pgbackrest_client, vec!["-purpose", "sslclient"]),
        ] {
            let (ok, output) = verify(leaf, &extra);
            assert!(ok, "{extra:?}: {output}");
        }
        let (ok, output) = verify(&pgbackrest_client, &["-purpose", "sslserver"]);
        assert!(!ok, "a client certificate must not serve: {output}");
        let (ok, output) = verify(&server, &["-verify_hostname", "db-rw.elsewhere.svc"]);
        assert!(!ok, "{output}");

        // The private keys are PKCS#8 that OpenSSL reads and that match their certificates.
        let key = write("server.key", generated(&plan).private_key_pem.expose());
        let output = std::process::Command::new(&openssl)
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(output.status.success());
        let from_cert = std::process::Command::new(&openssl)
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&server)
            .output()
            .unwrap();
        assert_eq!(output.stdout, from_cert.stdout);
    }
}
