//! Certificates from a Cluster's CA, shared by the controllers that need them: generating and
//! loading the CA, checking a stored pair (key, CA signature, names, expiry) and issuing leaves
//! with rcgen. What to issue is each controller's decision (the Cluster controller's
//! `plan::tls`; the Pooler controller's certificate for `<pooler>.<namespace>.svc`).
//!
//! ```text
//!   <cluster>-ca Secret ──► load_ca ──► SigningCa
//!   stored tls.crt/tls.key ──► reuse_or_issue(profile, ca, now) ──► CertifiedKey
//!                               (reused, or Issued(Missing|KeyMismatch|NotSignedByCa|...))
//! ```
//!
//! Nothing here prints key material: [`PrivateKeyPem`] redacts itself in `Debug`, and errors
//! name a Secret and a problem, never its contents.

#![forbid(unsafe_code)]

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use std::collections::BTreeSet;
use std::fmt;
use tusk_api::names::keys;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// How long a generated CA is valid. It is never renewed by tusk (see docs/operations/tls.md).
pub const CA_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 3650);

/// How long an issued leaf certificate is valid.
pub const LEAF_VALIDITY: SignedDuration = SignedDuration::from_hours(24 * 365);

/// A leaf certificate with less than this left is replaced.
pub const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(24 * 30);

/// Certificates start this long before `now`, so a clock a little behind still accepts them.
pub const BACKDATE: SignedDuration = SignedDuration::from_hours(1);

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

/// The bytes under `key` in `secret`, if any.
pub fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|value| value.0.as_slice())
}

/// The CA, ready to sign. Its `Debug` shows the certificate only.
pub struct SigningCa {
    pub certified: CertifiedKey,
    pub der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for SigningCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningCa")
            .field("certified", &self.certified)
            .finish_non_exhaustive()
    }
}

/// A new self-signed CA for `cluster` in `namespace`, valid for [`CA_VALIDITY`] from `now`.
pub fn generate_ca(cluster: &str, namespace: &str, now: Timestamp) -> Result<SigningCa, TlsError> {
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

/// The CA stored in `secret` (named `name`, for messages): `ca.crt` and `ca.key`.
pub fn load_ca(secret: &Secret, name: &str) -> Result<SigningCa, TlsError> {
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

/// The non-blank UTF-8 text under `key` in `secret`, if any.
pub fn utf8_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret_value(secret, key)
        .and_then(|value| std::str::from_utf8(value).ok())
        .filter(|value| !value.trim().is_empty())
}

/// Reads a CA certificate and key; the error is a problem description without secret material.
pub fn signing_ca(mut certified: CertifiedKey) -> Result<SigningCa, &'static str> {
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

/// The DER of the first `CERTIFICATE` block in `pem`.
pub fn first_certificate_der(pem: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

/// Whether `key` is the private key of `certificate`.
pub fn key_matches(key: &KeyPair, certificate: &X509Certificate<'_>) -> bool {
    key.public_key_raw() == certificate.public_key().subject_public_key.data.as_ref()
}

/// When `certificate` expires.
pub fn not_after(certificate: &X509Certificate<'_>) -> Option<Timestamp> {
    Timestamp::from_second(certificate.validity().not_after.timestamp()).ok()
}

/// What a leaf certificate should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafProfile {
    pub what: &'static str,
    pub common_name: String,
    pub dns_names: Vec<String>,
    pub usage: ExtendedKeyUsagePurpose,
}

/// A stored certificate and key (either may be absent). Its `Debug` shows only which are there.
pub struct StoredPair<'a> {
    pub certificate: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
}

impl fmt::Debug for StoredPair<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredPair")
            .field("certificate", &self.certificate.is_some())
            .field("key", &self.key.is_some())
            .finish()
    }
}

/// The pair stored under `cert_key` and `key_key` in `secret`.
pub fn stored_pair<'a>(
    secret: Option<&'a Secret>,
    cert_key: &str,
    key_key: &str,
) -> StoredPair<'a> {
    StoredPair {
        certificate: secret.and_then(|secret| secret_value(secret, cert_key)),
        key: secret.and_then(|secret| secret_value(secret, key_key)),
    }
}

/// The stored pair when it may stay ([`check_stored`]), otherwise a new leaf from `ca`.
pub fn reuse_or_issue(
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
pub fn check_stored(
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

/// Whether `certificate` was issued and signed by the CA whose DER is `ca_der`.
pub fn signed_by(certificate: &X509Certificate<'_>, ca_der: &[u8]) -> bool {
    let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca_der) else {
        return false;
    };
    certificate.issuer() == ca.subject()
        && certificate.verify_signature(Some(ca.public_key())).is_ok()
}

/// The certificate's subject common name.
pub fn common_name<'a>(certificate: &'a X509Certificate<'_>) -> Option<&'a str> {
    certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
}

/// The certificate's DNS SANs, or `None` when they cannot be read.
pub fn dns_names<'a>(certificate: &'a X509Certificate<'_>) -> Option<BTreeSet<&'a str>> {
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

/// A new key and a leaf certificate for `profile`, signed by `ca`, valid [`LEAF_VALIDITY`].
pub fn issue_leaf(
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

/// `O=tusk, CN=<common_name>`.
pub fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "tusk");
    name.push(DnType::CommonName, common_name);
    name
}

/// Sets `not_before` (`now` less [`BACKDATE`]) and `not_after` (`now` plus `validity`);
/// returns `not_after`, whole seconds as the certificate stores it.
pub fn set_validity(
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

/// Maps an rcgen error to [`TlsError::Issue`] for `what`.
pub fn issue_error(what: &'static str) -> impl Fn(rcgen::Error) -> TlsError {
    move |source| TlsError::Issue { what, source }
}
