//! How the PostgresUser controller reaches a Cluster's primary: the target read from the
//! Cluster's Secrets, and a small cache so a steady-state reconcile does not reconnect.
//!
//! ```text
//!   Cluster ──► target_for_cluster ──► host  <cluster>-rw.<ns>.svc:5432
//!   (+ Secrets)                        user  <cluster>-superuser {username,password}
//!                                      CA    <cluster>-ca ca.crt  (or spec.tls.caSecret)
//!   PrimaryTarget ──► Connections::client(key, target, db) ──► Arc<tokio_postgres::Client>
//!                     cached per (Cluster UID, database); reopened when closed or when the
//!                     target (address, CA, credentials) changed
//! ```
//!
//! The target ([`tusk_runtime::postgres::target_for_cluster`]) and the connection itself (TLS
//! `verify-full` through rustls, [`PrimaryTarget::connect`]) are tusk-runtime's.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use tusk_runtime::postgres::{ConnectError, PrimaryTarget};

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
        let fingerprint = fingerprint(target, &self.hasher);
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

/// A hash of everything that decides which server and session a connection gets, so a
/// cached connection is dropped when the credentials or CA change. Keyed per process.
fn fingerprint(target: &PrimaryTarget, hasher: &RandomState) -> u64 {
    hasher.hash_one(target)
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
    fn a_changed_password_changes_the_fingerprint() {
        let hasher = RandomState::new();
        let mut other = target();
        other.password = "another".into();
        assert_eq!(
            fingerprint(&target(), &hasher),
            fingerprint(&target(), &hasher)
        );
        assert_ne!(
            fingerprint(&target(), &hasher),
            fingerprint(&other, &hasher)
        );
    }
}
