//! The PostgreSQL connection to a Cluster's primary: where it is, how it is authenticated and
//! verified.
//!
//! ```text
//!   PrimaryTarget { host <cluster>-rw.<ns>.svc, port, user, password, CA }
//!     ──► connect(database, application_name) ──► tokio_postgres::Client (TLS verify-full)
//! ```
//!
//! [`target_for_cluster`] fills a [`PrimaryTarget`] from a Cluster's Secrets (the PostgresUser
//! and Pooler controllers); the Cluster controller fills one per instance.
//!
//! TLS is `verify-full`: the server certificate must chain to the Cluster's CA and name the
//! `-rw` Service host. It goes through rustls with the `ring` provider, the one kube already
//! uses. SCRAM channel binding is not offered (the TLS layer already authenticates the server),
//! so `channel_binding=require` servers are not supported.
//!
//! Tests and tools reach a server somewhere else by setting [`PrimaryTarget::address`]: the
//! TCP connection goes there while the certificate is still checked against
//! [`PrimaryTarget::host`].

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tusk_api::Cluster;
use tusk_api::names::{self, keys};

/// Why a [`PrimaryTarget`] could not be derived from a Cluster.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("Secret {name} does not exist (yet)")]
    SecretNotFound { name: String },
    #[error("Secret {name} has no key {key}")]
    KeyMissing { name: String, key: String },
    #[error("reading Secret {name}: {source}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the Cluster has no namespace or name")]
    Unnamed,
}

/// The primary of `cluster`: the `-rw` Service on port 5432, as the superuser from
/// `<cluster>-superuser`, verified against `ca.crt` of `spec.tls.caSecret` (when set) or
/// `<cluster>-ca`.
pub async fn target_for_cluster(
    client: &kube::Client,
    cluster: &Cluster,
) -> Result<PrimaryTarget, TargetError> {
    let (Some(namespace), Some(name)) = (
        cluster.metadata.namespace.as_deref(),
        cluster.metadata.name.as_deref(),
    ) else {
        return Err(TargetError::Unnamed);
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let superuser = names::superuser_secret(name);
    let ca = cluster
        .spec
        .tls
        .ca_secret
        .as_ref()
        .map_or_else(|| names::ca_secret(name), |s| s.name.clone());
    let user = secret_text(&secrets, &superuser, keys::USERNAME).await?;
    let password = secret_text(&secrets, &superuser, keys::PASSWORD).await?;
    let ca_pem = secret_bytes(&secrets, &ca, keys::CA_CERT).await?;
    Ok(PrimaryTarget {
        host: names::read_write_host(name, namespace),
        port: names::POSTGRES_PORT,
        address: None,
        ca_pem: Some(ca_pem),
        user,
        password,
    })
}

async fn secret_bytes(
    secrets: &Api<Secret>,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, TargetError> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|source| TargetError::Kube {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| TargetError::SecretNotFound {
            name: name.to_owned(),
        })?;
    secret
        .data
        .and_then(|mut data| data.remove(key))
        .map(|bytes| bytes.0)
        .ok_or_else(|| TargetError::KeyMissing {
            name: name.to_owned(),
            key: key.to_owned(),
        })
}

async fn secret_text(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String, TargetError> {
    String::from_utf8(secret_bytes(secrets, name, key).await?).map_err(|_| {
        TargetError::KeyMissing {
            name: name.to_owned(),
            key: format!("{key} (as UTF-8 text)"),
        }
    })
}

/// How long opening a connection (TCP, TLS and authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to connect to a Cluster's primary. `Hash` covers everything that
/// decides which server and session a connection gets (callers that cache connections key
/// on it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PrimaryTarget {
    /// The DNS name the server certificate must carry; also the host connected to unless
    /// [`Self::address`] is set.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Connect to this address instead of resolving [`Self::host`] (tests, port-forwards).
    pub address: Option<IpAddr>,
    /// The CA certificate(s), PEM, that the server certificate must chain to. `None` connects
    /// without TLS, which only tests against a loopback server should do.
    pub ca_pem: Option<Vec<u8>>,
    /// The role to log in as (the Cluster's superuser).
    pub user: String,
    /// Its password. Never printed: `Debug` shows `<redacted>`.
    pub password: String,
}

impl std::fmt::Debug for PrimaryTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("address", &self.address)
            .field("tls", &self.ca_pem.is_some())
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl PrimaryTarget {
    /// The client configuration for `database`.
    pub fn config(&self, database: &str, application_name: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(database)
            .application_name(application_name)
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .ssl_mode(if self.ca_pem.is_some() {
                tokio_postgres::config::SslMode::Require
            } else {
                tokio_postgres::config::SslMode::Disable
            });
        if let Some(address) = self.address {
            config.hostaddr(address);
        }
        config
    }

    /// Opens one connection to `database`; its connection task runs on the current runtime.
    pub async fn connect(
        &self,
        database: &str,
        application_name: &str,
    ) -> Result<tokio_postgres::Client, ConnectError> {
        let config = self.config(database, application_name);
        match &self.ca_pem {
            Some(pem) => {
                let tls = RustlsConnector::new(pem)?;
                let (client, connection) =
                    config.connect(tls).await.map_err(ConnectError::Postgres)?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            None => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(ConnectError::Postgres)?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }
}

async fn drive<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "PostgreSQL connection closed");
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the CA certificate is not usable: {0}")]
    InvalidCa(String),
    #[error("{0}")]
    Postgres(#[source] tokio_postgres::Error),
}

/// `tokio_postgres` TLS through rustls, verifying the server against a given CA and the host
/// name (libpq's `sslmode=verify-full`).
#[derive(Clone, Debug)]
pub struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl RustlsConnector {
    /// A connector trusting only the certificates in `ca_pem`.
    pub fn new(ca_pem: &[u8]) -> Result<Self, ConnectError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| ConnectError::InvalidCa(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| ConnectError::InvalidCa(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(ConnectError::InvalidCa(
                "no PEM certificate found in ca.crt".to_owned(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::InvalidCa(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(RustlsConnect {
            name: ServerName::try_from(domain.to_owned())?,
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
        })
    }
}

/// One TLS handshake for [`RustlsConnector`].
pub struct RustlsConnect {
    name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for RustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustlsConnect")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<RustlsStream<S>>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            self.connector
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
        })
    }
}

/// A TLS stream for `tokio_postgres`.
#[derive(Debug)]
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> PrimaryTarget {
        PrimaryTarget {
            host: "db-rw.db.svc".into(),
            port: 5432,
            address: None,
            ca_pem: None,
            user: "postgres".into(),
            password: "s3cret-value".into(),
        }
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let text = format!("{:?}", target());
        assert!(!text.contains("s3cret-value"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn a_ca_without_certificates_is_refused() {
        assert!(matches!(
            RustlsConnector::new(b"not a certificate"),
            Err(ConnectError::InvalidCa(_))
        ));
    }

    #[test]
    fn overridden_address_keeps_the_verified_host_name() {
        let mut t = target();
        t.address = Some(IpAddr::from([127, 0, 0, 1]));
        let config = t.config("postgres", "test");
        assert_eq!(
            config.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("db-rw.db.svc".into())]
        );
        assert_eq!(config.get_hostaddrs(), &[IpAddr::from([127, 0, 0, 1])]);
    }
}
