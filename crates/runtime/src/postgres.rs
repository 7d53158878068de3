//! The PostgreSQL connection to a Cluster's primary: where it is, how it is authenticated and
//! verified, and a small cache so a steady-state reconcile does not reconnect.
//!
//! ```text
//!   Cluster ──► PrimaryTarget::for_cluster ──► host  <cluster>-rw.<ns>.svc:5432
//!   (+ Secrets)                               user  <cluster>-superuser {username,password}
//!                                             CA    <cluster>-ca ca.crt  (or spec.tls.caSecret)
//!   PrimaryTarget ──► Connections::client(key, target, db) ──► Arc<tokio_postgres::Client>
//!                     cached per (Cluster UID, database); reopened when closed or when the
//!                     target (address, CA, credentials) changed
//! ```
//!
//! TLS is `verify-full`: the server certificate must chain to the Cluster's CA and name the
//! `-rw` Service host. It goes through rustls with the `ring` provider, the one kube already
//! uses. SCRAM channel binding is not offered (the TLS layer already authenticates the server),
//! so `channel_binding=require` servers are not supported.
//!
//! Tests and tools reach a server somewhere else by setting [`PrimaryTarget::address`]: the
//! TCP connection goes there while the certificate is still checked against
//! [`PrimaryTarget::host`].

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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

/// How long opening a connection (TCP, TLS and authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to connect to a Cluster's primary.
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

impl PrimaryTarget {
    /// The primary of `cluster`: the `-rw` Service on port 5432, as the superuser from
    /// `<cluster>-superuser`, verified against `ca.crt` of `spec.tls.caSecret` (when set) or
    /// `<cluster>-ca`.
    pub async fn for_cluster(
        client: &kube::Client,
        cluster: &Cluster,
    ) -> Result<Self, TargetError> {
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
        Ok(Self {
            host: names::read_write_host(name, namespace),
            port: names::POSTGRES_PORT,
            address: None,
            ca_pem: Some(ca_pem),
            user,
            password,
        })
    }

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

    /// A hash of everything that decides which server and session a connection gets, so a
    /// cached connection is dropped when the credentials or CA change. Keyed per process.
    fn fingerprint(&self, hasher: &RandomState) -> u64 {
        hasher.hash_one(self)
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

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the CA certificate is not usable: {0}")]
    InvalidCa(String),
    #[error("{0}")]
    Postgres(#[source] tokio_postgres::Error),
}

/// Open connections to the primaries of Clusters, per (Cluster UID, database).
///
/// Up to `per_database` connections are kept for each key and handed out round-robin, so
/// callers that want parallelism ask for several with [`Connections::clients`]. A connection
/// that closed (server restart, failover) is replaced on the next request; a change of target
/// (new superuser password, CA or address) replaces all of the key's connections.
#[derive(Clone)]
pub struct Connections {
    application_name: String,
    hasher: RandomState,
    pools: Arc<Mutex<HashMap<(String, String), Pool>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("application_name", &self.application_name)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Pool {
    fingerprint: u64,
    clients: Vec<Arc<tokio_postgres::Client>>,
    next: usize,
}

impl Connections {
    /// A cache whose connections announce themselves as `application_name` (visible in
    /// `pg_stat_activity`).
    pub fn new(application_name: impl Into<String>) -> Self {
        Self {
            application_name: application_name.into(),
            hasher: RandomState::new(),
            pools: Arc::default(),
        }
    }

    /// One open connection to `database` on `target`, reused when one is cached under
    /// `cluster_key` (the Cluster's UID).
    pub async fn client(
        &self,
        cluster_key: &str,
        target: &PrimaryTarget,
        database: &str,
    ) -> Result<Arc<tokio_postgres::Client>, ConnectError> {
        let mut clients = self.clients(cluster_key, target, database, 1).await?;
        clients
            .pop()
            .ok_or_else(|| ConnectError::InvalidCa("no connection".to_owned()))
    }

    /// `count` open connections to `database` (fewer only if `count` is 0), opening what is
    /// missing. The same connection may be handed to several callers at once:
    /// `tokio_postgres` pipelines their requests, and a single simple-query message (one
    /// `batch_execute`) runs as one unit on the server.
    pub async fn clients(
        &self,
        cluster_key: &str,
        target: &PrimaryTarget,
        database: &str,
        count: usize,
    ) -> Result<Vec<Arc<tokio_postgres::Client>>, ConnectError> {
        let key = (cluster_key.to_owned(), database.to_owned());
        let fingerprint = target.fingerprint(&self.hasher);
        let mut alive = {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            let pool = pools.entry(key.clone()).or_default();
            if pool.fingerprint != fingerprint {
                pool.clients.clear();
                pool.fingerprint = fingerprint;
            }
            pool.clients.retain(|client| !client.is_closed());
            let start = pool.next;
            pool.next = pool.next.wrapping_add(count);
            let len = pool.clients.len();
            (0..count.min(len))
                .map(|i| pool.clients[(start + i) % len].clone())
                .collect::<Vec<_>>()
        };
        let missing = count - alive.len();
        if missing == 0 {
            return Ok(alive);
        }
        let opened = futures::future::try_join_all(
            (0..missing).map(|_| target.connect(database, &self.application_name)),
        )
        .await?;
        let opened: Vec<_> = opened.into_iter().map(Arc::new).collect();
        {
            let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
            let pool = pools.entry(key).or_default();
            if pool.fingerprint == fingerprint {
                pool.clients.extend(opened.iter().cloned());
            }
        }
        alive.extend(opened);
        Ok(alive)
    }

    /// Closes every connection cached for `cluster_key` (the Cluster is gone, or a connection
    /// misbehaved). They close once the last caller drops its handle.
    pub fn forget(&self, cluster_key: &str) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|(cluster, _), _| cluster != cluster_key);
    }

    /// How many connections are cached (open or not yet noticed closed).
    pub fn cached(&self) -> usize {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.values().map(|pool| pool.clients.len()).sum()
    }
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
    fn a_changed_password_changes_the_fingerprint() {
        let hasher = RandomState::new();
        let mut other = target();
        other.password = "another".into();
        assert_eq!(target().fingerprint(&hasher), target().fingerprint(&hasher));
        assert_ne!(target().fingerprint(&hasher), other.fingerprint(&hasher));
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
