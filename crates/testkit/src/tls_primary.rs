//! A PostgreSQL server standing in for a Cluster's primary, as a client outside the pod meets
//! it: TLS with a certificate for the `-rw` Service's host from a CA of the test's own, and
//! SCRAM for every TLS login.
//!
//! ```text
//!  ServerTls::for_host("db-rw.db.svc")  CA ──► ca_pem (what the Cluster's CA Secret holds)
//!                                        └──► server.crt, server.key (owned by the run-as user)
//!  TlsPrimary::start(&pg, host, password, options)
//!     hostssl   all all      scram-sha-256   (every TLS login)
//!     hostnossl all postgres trust           (the harness's own superuser connection)
//!     hostnossl all all      reject
//! ```

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tempfile::TempDir;

use crate::discovery::PostgresBinaries;
use crate::postgres::{PostgresOptions, PostgresServer};
use crate::process::RunAs;

/// A CA and a server certificate for one or more host names, in a temp dir PostgreSQL can read.
#[derive(Debug)]
pub struct ServerTls {
    /// The CA certificate, PEM: what a client verifies the server against.
    pub ca_pem: String,
    /// The CA's private key, PEM, for tests where a controller issues certificates from it.
    pub ca_key_pem: String,
    /// Holds the files; removed on drop.
    pub dir: TempDir,
    /// The server certificate, PEM.
    pub cert_file: PathBuf,
    /// The server key, PEM, mode 0600.
    pub key_file: PathBuf,
}

impl ServerTls {
    /// A new CA and a certificate it signs for `host`; the files belong to `run_as` (the user
    /// PostgreSQL runs as), which PostgreSQL requires of its key.
    pub fn for_host(host: &str, run_as: Option<&RunAs>) -> Result<Self> {
        Self::for_hosts(&[host], run_as)
    }

    /// A CA and a server certificate naming every one of `hosts` (DNS names or IPs).
    pub fn for_hosts(hosts: &[&str], run_as: Option<&RunAs>) -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tusk test CA");
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate()?;
        let server = CertificateParams::new(
            hosts
                .iter()
                .map(|host| (*host).to_owned())
                .collect::<Vec<_>>(),
        )?
        .signed_by(&server_key, &issuer)?;

        let dir = tempfile::Builder::new()
            .prefix("tusk-tls-")
            .tempdir()
            .context("creating the TLS temp dir")?;
        let cert_file = dir.path().join("server.crt");
        let key_file = dir.path().join("server.key");
        std::fs::write(&cert_file, server.pem())
            .with_context(|| format!("writing {}", cert_file.display()))?;
        std::fs::write(&key_file, server_key.serialize_pem())
            .with_context(|| format!("writing {}", key_file.display()))?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", key_file.display()))?;
        if let Some(run_as) = run_as {
            for path in [dir.path(), cert_file.as_path(), key_file.as_path()] {
                run_as.chown(path)?;
            }
        }
        Ok(Self {
            ca_pem: ca.pem(),
            ca_key_pem,
            dir,
            cert_file,
            key_file,
        })
    }
}

/// PostgreSQL with TLS for a host name, SCRAM for every TLS login and plain connections only
/// for the harness's superuser (`postgres`, whose password is set for TLS logins).
#[derive(Debug)]
pub struct TlsPrimary {
    pub server: PostgresServer,
    pub tls: ServerTls,
}

impl TlsPrimary {
    /// Starts the server with `options` added, the certificate naming `host`, and
    /// `superuser_password` as the `postgres` role's password (stored as a SCRAM verifier).
    pub async fn start(
        binaries: &PostgresBinaries,
        host: &str,
        superuser_password: &str,
        options: PostgresOptions,
    ) -> Result<Self> {
        Self::start_for_hosts(binaries, &[host], superuser_password, options).await
    }

    /// [`Self::start`] with a certificate naming every one of `hosts`.
    pub async fn start_for_hosts(
        binaries: &PostgresBinaries,
        hosts: &[&str],
        superuser_password: &str,
        options: PostgresOptions,
    ) -> Result<Self> {
        let tls = ServerTls::for_hosts(hosts, binaries.run_as.as_ref())?;
        let mut tls_options = PostgresOptions::default()
            .with_config("ssl = on")
            .with_config(format!("ssl_cert_file = '{}'", tls.cert_file.display()))
            .with_config(format!("ssl_key_file = '{}'", tls.key_file.display()))
            .with_config("password_encryption = 'scram-sha-256'")
            .with_hba("hostssl all all 127.0.0.1/32 scram-sha-256")
            .with_hba("hostnossl all postgres 127.0.0.1/32 trust")
            .with_hba("hostnossl all all 127.0.0.1/32 reject");
        tls_options.config.extend(options.config);
        tls_options.hba.extend(options.hba);
        tls_options
            .shared_preload_libraries
            .extend(options.shared_preload_libraries);
        tls_options.initdb_args.extend(options.initdb_args);
        let server = PostgresServer::start(binaries, tls_options).await?;
        let verifier = postgres_protocol::password::scram_sha_256(superuser_password.as_bytes());
        server
            .connect()
            .await?
            .batch_execute(&format!("ALTER ROLE postgres PASSWORD '{verifier}'"))
            .await
            .context("setting the superuser's password")?;
        Ok(Self { server, tls })
    }

    /// The server's loopback address and port.
    pub fn address(&self) -> Result<SocketAddr> {
        let ip =
            self.server.host().parse().with_context(|| {
                format!("PostgreSQL host {:?} is not an IP", self.server.host())
            })?;
        Ok(SocketAddr::new(ip, self.server.port()))
    }
}
