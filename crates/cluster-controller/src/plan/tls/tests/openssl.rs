//! The CA and leaves against OpenSSL: a CA made with `openssl` is used as it is, and `openssl
//! verify` accepts what tusk issues.

use super::*;

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
