use super::certificates::*;
use super::*;
use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use std::collections::BTreeSet;
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

/// Interoperability with certificates made by OpenSSL.
mod openssl;
