//! Names of the objects one controller creates and another looks up.
//!
//! A Cluster's name is at most [`MAX_CLUSTER_NAME_LENGTH`] characters (enforced by a CEL rule
//! on the CRD) so that every derived name below stays a valid DNS label: StatefulSet pods add
//! `-0` and Kubernetes adds a revision hash to a label value of at most 63 characters.

/// The port PostgreSQL listens on in every instance and every Service.
pub const POSTGRES_PORT: u16 = 5432;
/// Patroni's REST API port in every instance.
pub const PATRONI_PORT: u16 = 8008;
/// The pgBackRest TLS server's port in every instance.
pub const PGBACKREST_PORT: u16 = 8432;
/// The metrics exporter's port.
pub const EXPORTER_PORT: u16 = 9187;
/// The port a Pooler's Service (and PgBouncer in its pods) listens on for clients.
pub const POOLER_PORT: u16 = 5432;

/// The instance pod's container that runs Patroni and PostgreSQL (read for crash logs, exec'd
/// into by `kubectl tusk psql`).
pub const INSTANCE_CONTAINER: &str = "postgres";
/// PostgreSQL's unix socket directory in every instance container (an emptyDir shared by the
/// pod's containers).
pub const SOCKET_DIR: &str = "/var/run/postgresql";
/// The instance container's environment variable holding the superuser's password (Patroni
/// reads it; nothing else copies it out of the pod).
pub const SUPERUSER_PASSWORD_ENV: &str = "PATRONI_SUPERUSER_PASSWORD";

/// Keys of the Secrets a Cluster's children and other controllers share.
pub mod keys {
    /// In the superuser and replication Secrets: the role name.
    pub const USERNAME: &str = "username";
    /// In the superuser and replication Secrets: the cleartext password.
    pub const PASSWORD: &str = "password";
    /// The CA certificate (PEM), in the CA Secret and alongside every issued certificate.
    pub const CA_CERT: &str = "ca.crt";
    /// The CA's private key (PEM), only in a generated CA Secret.
    pub const CA_KEY: &str = "ca.key";
    /// A certificate (PEM) and its private key, as in `kubernetes.io/tls` Secrets.
    pub const TLS_CERT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
}

/// Keys of the pgBackRest Secret, besides `ca.crt` ([`keys::CA_CERT`]). A backup Job mounts
/// only the client pair and `ca.crt`; the instance's pgBackRest server the server pair.
pub mod pgbackrest_keys {
    pub const SERVER_CERT: &str = "server.crt";
    pub const SERVER_KEY: &str = "server.key";
    pub const CLIENT_CERT: &str = "client.crt";
    pub const CLIENT_KEY: &str = "client.key";
}

/// Common name of the pgBackRest client certificate; the pgBackRest server admits it with
/// `tls-server-auth=pgbackrest-client=<stanza>`.
pub const PGBACKREST_CLIENT_CN: &str = "pgbackrest-client";
/// Common name of the pgBackRest server certificate (clients verify its DNS SANs instead).
pub const PGBACKREST_SERVER_CN: &str = "pgbackrest-server";

/// The Kubernetes cluster DNS domain the long Service names end in.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Longest Cluster name that keeps every child name valid.
pub const MAX_CLUSTER_NAME_LENGTH: usize = 40;

/// The instance (and its StatefulSet) with ordinal `n`, counting from 1: `<cluster>-<n>`.
pub fn instance(cluster: &str, n: u32) -> String {
    format!("{cluster}-{n}")
}

/// The ordinal of an instance name of `cluster`, if `name` is one.
pub fn instance_ordinal(cluster: &str, name: &str) -> Option<u32> {
    let ordinal = name.strip_prefix(cluster)?.strip_prefix('-')?;
    if ordinal.starts_with('0') {
        return None;
    }
    ordinal.parse().ok()
}

/// The one pod of a single-replica StatefulSet (an instance or the repository host):
/// `<statefulset>-0`, as the StatefulSet controller names ordinal 0.
pub fn statefulset_pod(statefulset: &str) -> String {
    format!("{statefulset}-0")
}

/// The PVC the StatefulSet controller creates for claim template `template` of that pod:
/// `<template>-<statefulset>-0`.
pub fn statefulset_claim(template: &str, statefulset: &str) -> String {
    format!("{template}-{}", statefulset_pod(statefulset))
}

/// The instance of `cluster` whose StatefulSet controls `pod` (by its controller owner
/// reference), e.g. `db-1` for pod `db-1-0`. Never read from labels: a Job's pod (stanza,
/// backup, a PGUpgrade's) carries the Cluster's and even the primary's instance labels.
pub fn pod_instance<'a>(
    cluster: &str,
    pod: &'a k8s_openapi::api::core::v1::Pod,
) -> Option<&'a str> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| {
            owner.controller == Some(true)
                && owner.kind == "StatefulSet"
                && owner.api_version == "apps/v1"
        })
        .map(|owner| owner.name.as_str())
        .filter(|owner| instance_ordinal(cluster, owner).is_some())
}

/// The DNS name cluster DNS serves for an instance's pod: `<pod>.<headless Service>.<ns>.svc`,
/// e.g. `db-1-0.db-pods.shop.svc` for instance `db-1` (the pod's hostname is its name, its
/// subdomain the StatefulSet's `serviceName`). Everything that reaches one instance by name —
/// pgBackRest's `pg1-host`, certificates' SANs — uses this, and the instance StatefulSets set
/// `serviceName` to [`headless_service`].
pub fn instance_host(cluster: &str, instance: &str, namespace: &str) -> String {
    format!(
        "{}.{}.{namespace}.svc",
        statefulset_pod(instance),
        headless_service(cluster)
    )
}

/// The Service (and Patroni leader Endpoints) that always points at the primary.
pub fn read_write_service(cluster: &str) -> String {
    format!("{cluster}-rw")
}

/// The DNS name of the read-write Service, which the server certificate carries and clients
/// verify: `<cluster>-rw.<namespace>.svc`.
pub fn read_write_host(cluster: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc", read_write_service(cluster))
}

/// The Service in front of a Pooler's PgBouncer pods: the Pooler's own name.
pub fn pooler_service(pooler: &str) -> String {
    pooler.to_owned()
}

/// The DNS name of a Pooler's Service, which its server certificate (issued from the
/// Cluster's CA) carries and clients verify: `<pooler>.<namespace>.svc`.
pub fn pooler_host(pooler: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc", pooler_service(pooler))
}

/// The Service over replicas only.
pub fn read_only_service(cluster: &str) -> String {
    format!("{cluster}-ro")
}

/// The Service over every instance.
pub fn read_any_service(cluster: &str) -> String {
    format!("{cluster}-r")
}

/// The headless Service that gives each instance pod a stable DNS name.
pub fn headless_service(cluster: &str) -> String {
    format!("{cluster}-pods")
}

/// The Secret holding the `postgres` superuser's credentials (`username`, `password`).
pub fn superuser_secret(cluster: &str) -> String {
    format!("{cluster}-superuser")
}

/// The Secret holding the replication user's credentials.
pub fn replication_secret(cluster: &str) -> String {
    format!("{cluster}-replication")
}

/// The Secret holding the cluster CA (`ca.crt`, and `ca.key` when tusk generated it).
pub fn ca_secret(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// The Secret holding the PostgreSQL server certificate (`tls.crt`, `tls.key`, `ca.crt`).
pub fn server_tls_secret(cluster: &str) -> String {
    format!("{cluster}-server-tls")
}

/// The Secret holding the pgBackRest TLS server and client certificates.
pub fn pgbackrest_secret(cluster: &str) -> String {
    format!("{cluster}-pgbackrest")
}

/// The Secret holding the `pg_rewind` role's credentials (`username`, `password`).
pub fn rewind_secret(cluster: &str) -> String {
    format!("{cluster}-rewind")
}

/// The Secret holding the basic-auth credentials of Patroni's REST API.
pub fn patroni_api_secret(cluster: &str) -> String {
    format!("{cluster}-patroni-api")
}

/// The Secret whose `ca.crt` clients should trust for PostgreSQL connections (ServiceBinding
/// copies it): `spec.tls.caSecret` when set, else the Cluster's CA Secret.
pub fn client_ca_secret(cluster: &crate::Cluster) -> String {
    cluster.spec.tls.ca_secret.as_ref().map_or_else(
        || ca_secret(cluster.metadata.name.as_deref().unwrap_or_default()),
        |secret| secret.name.clone(),
    )
}

/// The ConfigMap holding the rendered pgBackRest configuration of the instances and the
/// repository host (secret options are passed as environment variables, never here).
pub fn pgbackrest_config(cluster: &str) -> String {
    format!("{cluster}-pgbackrest-config")
}

/// The StatefulSet (one pod, `<cluster>-repo-host-0`) that serves a Cluster's volume (posix)
/// repositories over pgBackRest's TLS protocol; instances archive to it, backup Jobs share
/// its volume.
pub fn repo_host(cluster: &str) -> String {
    format!("{cluster}-repo-host")
}

/// The ConfigMap holding the rendered Patroni configuration.
pub fn patroni_config(cluster: &str) -> String {
    format!("{cluster}-patroni")
}

/// The Secret a PostgresUser's credentials are written to: `<cluster>-<user>-credentials`.
/// Kept within the 253 characters of a Secret name by [`truncate_with_hash`].
pub fn user_credentials_secret(cluster: &str, user: &str) -> String {
    let name = format!("{cluster}-{user}-credentials");
    truncate_with_hash(&name, &name, 253)
}

/// The Job that runs a Backup: deterministic, so a Backup never gets two.
pub fn backup_job(backup: &str) -> String {
    truncate_with_hash(&format!("{backup}-backup"), backup, 63)
}

/// Shortens `name` to `max` characters, keeping it unique by replacing the tail with a hash
/// of `seed`. Names that already fit are returned unchanged.
pub fn truncate_with_hash(name: &str, seed: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let hash = format!("{:08x}", fnv1a32(seed.as_bytes()));
    let keep = max.saturating_sub(hash.len() + 1);
    let mut prefix: String = name.chars().take(keep).collect();
    while prefix.ends_with('-') || prefix.ends_with('.') {
        prefix.pop();
    }
    format!("{prefix}-{hash}")
}

/// FNV-1a, 32 bit: stable across releases and platforms, which name derivation needs.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_round_trip() {
        assert_eq!(instance("db", 3), "db-3");
        assert_eq!(instance_ordinal("db", "db-3"), Some(3));
        assert_eq!(instance_ordinal("db", "db-03"), None);
        assert_eq!(instance_ordinal("db", "dbx-3"), None);
        assert_eq!(instance_ordinal("db", "db-rw"), None);
    }

    #[test]
    fn longest_cluster_name_keeps_children_valid() {
        let cluster = "c".repeat(MAX_CLUSTER_NAME_LENGTH);
        // pod `<sts>-0`, and the controller-revision-hash label `<sts>-<10 chars>`
        let sts = instance(&cluster, 99);
        assert!(sts.len() + 11 <= 63);
        for service in [
            read_write_service(&cluster),
            read_only_service(&cluster),
            read_any_service(&cluster),
            headless_service(&cluster),
        ] {
            assert!(service.len() <= 63, "{service}");
        }
    }

    #[test]
    fn a_pod_is_an_instance_only_through_its_statefulset_controller() {
        use k8s_openapi::api::core::v1::Pod;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owned = |kind: &str, name: &str, controller: bool| {
            let mut pod = Pod::default();
            pod.metadata.owner_references = Some(vec![OwnerReference {
                api_version: if kind == "Job" { "batch/v1" } else { "apps/v1" }.to_owned(),
                kind: kind.to_owned(),
                name: name.to_owned(),
                controller: Some(controller),
                ..OwnerReference::default()
            }]);
            pod
        };
        assert_eq!(
            pod_instance("db", &owned("StatefulSet", "db-2", true)),
            Some("db-2")
        );
        for (pod, why) in [
            (owned("Job", "up-upgrade", true), "a Job's pod"),
            (
                owned("StatefulSet", "db-repo-host", true),
                "the repository host",
            ),
            (
                owned("StatefulSet", "other-1", true),
                "another Cluster's instance",
            ),
            (owned("StatefulSet", "db-1", false), "not the controller"),
            (Pod::default(), "no owner"),
        ] {
            assert_eq!(pod_instance("db", &pod), None, "{why}");
        }
    }

    #[test]
    fn instance_host_is_the_pod_name_under_the_headless_service() {
        assert_eq!(statefulset_pod("db-1"), "db-1-0");
        assert_eq!(statefulset_claim("data", "db-1"), "data-db-1-0");
        assert_eq!(
            instance_host("db", "db-1", "shop"),
            "db-1-0.db-pods.shop.svc"
        );
    }

    #[test]
    fn pooler_host_is_its_service_in_its_namespace() {
        assert_eq!(pooler_service("db-pooler"), "db-pooler");
        assert_eq!(pooler_host("db-pooler", "db"), "db-pooler.db.svc");
        assert_eq!(POOLER_PORT, 5432);
    }

    #[test]
    fn long_names_are_truncated_with_a_stable_hash() {
        let long = "b".repeat(80);
        let job = backup_job(&long);
        assert_eq!(job.len(), 63);
        assert_eq!(job, backup_job(&long));
        assert_ne!(job, backup_job(&"b".repeat(81)));
        assert_eq!(backup_job("nightly"), "nightly-backup");
    }
}
