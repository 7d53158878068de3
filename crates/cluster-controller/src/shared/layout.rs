//! The data-plane contract every part of the controller builds against: paths, the user the
//! image runs as, environment variable and Secret names, labels and annotations. A leaf: it
//! imports nothing of the crate, so any module may use it (lib.rs has the table).

use std::collections::BTreeMap;

use super::meta;
use tusk_api::Cluster;
use tusk_api::cluster::RestoreSpec;
use tusk_api::labels;
use tusk_api::names;
use tusk_api::names::{patroni_api_secret, rewind_secret};
use tusk_api::user::MONITORING_ROLE;
use tusk_api::user::{REPLICATION_ROLE, REWIND_ROLE, SUPERUSER_ROLE};

/// The user and group the instance image runs PostgreSQL as (images/postgres/Dockerfile).
pub const POSTGRES_UID: i64 = 26;

/// `app.kubernetes.io/component` label values.
pub mod component {
    /// Instance StatefulSets, their pods and the Services in front of them.
    pub const DATABASE: &str = "database";
    /// Patroni's ServiceAccount, Role, RoleBinding and ConfigMap.
    pub const PATRONI: &str = "patroni";
    /// The credential Secrets.
    pub const CREDENTIALS: &str = "credentials";
    /// The CA and TLS Secrets.
    pub const TLS: &str = "tls";
}

/// ConfigMap keys.
pub const PATRONI_CONFIG_KEY: &str = "patroni.yaml";

/// Annotation on the pod template carrying the hash of everything that needs a restart to
/// take effect; the rollout planner compares it with the running pods'.
pub const RESTART_HASH_ANNOTATION: &str = "tusk.dev/restart-hash";

/// The user name Patroni's REST API accepts for its unsafe endpoints.
pub const PATRONI_API_USERNAME: &str = "patroni";

/// `type` of the credential Secrets: the built-in type for `username` and `password`.
pub const BASIC_AUTH_TYPE: &str = "kubernetes.io/basic-auth";
/// `type` of the server TLS Secret.
pub const TLS_TYPE: &str = "kubernetes.io/tls";
/// `type` of the CA and pgBackRest Secrets.
pub const OPAQUE_TYPE: &str = "Opaque";

// ---------------------------------------------------------------------------------------------
// Data-plane layout (lib.rs documents it; the instance image follows it)
// ---------------------------------------------------------------------------------------------

/// Key of the ConfigMap [`names::patroni_config`] that holds the rendered configuration.
pub const CONFIG_KEY: &str = "patroni.yaml";
/// Where the ConfigMap is mounted; the container runs `patroni /etc/patroni/patroni.yaml`.
pub const CONFIG_DIR: &str = "/etc/patroni";
/// The data volume's mount point.
pub const DATA_MOUNT: &str = "/pgdata";
/// The WAL volume's mount point, when `spec.walStorage` is set.
pub const WAL_MOUNT: &str = "/pgwal";
/// Server certificate, key and CA: `tls.crt`, `tls.key`, `ca.crt`.
pub const TLS_DIR: &str = "/etc/tusk/tls";
/// The unix socket directory (an emptyDir shared by the pod's containers).
pub use tusk_api::names::SOCKET_DIR;
/// Patroni's password file, on the `/tmp` emptyDir (the root filesystem is read-only).
pub const PGPASS_FILE: &str = "/tmp/pgpass";
/// The user name of Patroni's REST API for unsafe requests (switchover, `PATCH /config`,
/// restart, reload); the password comes from [`ENV_RESTAPI_PASSWORD`]. Rendering the name and
/// not the password makes Patroni refuse to start when the password is missing, instead of
/// serving an unauthenticated API.
pub const RESTAPI_USERNAME: &str = PATRONI_API_USERNAME;
/// The label key on which Patroni's Kubernetes DCS records its scope. Every instance pod must
/// carry it with the value [`scope`] (see [`dcs_labels`]).
pub const SCOPE_LABEL: &str = "tusk.dev/patroni-scope";
/// The name of the Endpoints port Patroni writes for the leader; the `-rw` Service's port must
/// have the same name so that its (selector-less) Endpoints route.
pub const POSTGRES_PORT_NAME: &str = "postgresql";
/// The pgBackRest stanza every Cluster uses (one stanza per repository path).
pub const PGBACKREST_STANZA: &str = tusk_pgbackrest::STANZA;

/// Patroni's scope, `<cluster>-rw`: the leader lock is the Endpoints of the `-rw` Service.
pub fn scope(cluster: &str) -> String {
    names::read_write_service(cluster)
}

/// PostgreSQL's data directory for a major: `/pgdata/pg<major>`.
pub fn data_dir(postgres_version: i32) -> String {
    format!("{DATA_MOUNT}/pg{postgres_version}")
}

/// The WAL directory on the WAL volume for a major: `/pgwal/pg<major>_wal`.
pub fn wal_dir(postgres_version: i32) -> String {
    format!("{WAL_MOUNT}/pg{postgres_version}_wal")
}

/// The binaries of a major in the instance image (Debian layout).
pub fn bin_dir(postgres_version: i32) -> String {
    format!("/usr/lib/postgresql/{postgres_version}/bin")
}

/// The labels Patroni's Kubernetes DCS selects its members by and puts on the objects it
/// creates (`<scope>` and `<scope>-config` Endpoints, the `-config` Service): the Cluster
/// label, the manager label and [`SCOPE_LABEL`]. Every instance pod must carry all of them.
pub fn dcs_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = dcs_selector_labels(cluster);
    labels.insert(SCOPE_LABEL.to_owned(), scope(cluster));
    labels
}

pub fn dcs_selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CLUSTER.to_owned(), cluster.to_owned()),
        (labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned()),
    ])
}

// ---------------------------------------------------------------------------------------------
// Environment contract
// ---------------------------------------------------------------------------------------------

/// The pod's name; Patroni's member name.
pub const ENV_NAME: &str = "PATRONI_NAME";
/// The pod's IP, which Patroni's Kubernetes DCS writes into the leader Endpoints.
pub const ENV_POD_IP: &str = "PATRONI_KUBERNETES_POD_IP";
/// `<pod IP>:5432`, where the other members reach this one's PostgreSQL.
pub const ENV_POSTGRESQL_CONNECT_ADDRESS: &str = "PATRONI_POSTGRESQL_CONNECT_ADDRESS";
/// `<pod IP>:8008`, where the other members and the controller reach this one's REST API.
pub const ENV_RESTAPI_CONNECT_ADDRESS: &str = "PATRONI_RESTAPI_CONNECT_ADDRESS";
/// The `postgres` superuser's password.
pub use tusk_api::names::SUPERUSER_PASSWORD_ENV as ENV_SUPERUSER_PASSWORD;
/// The replication role's password.
pub const ENV_REPLICATION_PASSWORD: &str = "PATRONI_REPLICATION_PASSWORD";
/// The pg_rewind role's password.
pub const ENV_REWIND_PASSWORD: &str = "PATRONI_REWIND_PASSWORD";
/// The REST API password for [`RESTAPI_USERNAME`].
pub const ENV_RESTAPI_PASSWORD: &str = "PATRONI_RESTAPI_PASSWORD";

/// Every environment variable the `postgres` container must set for [`render_config`](crate::plan::patroni::render_config)'s
/// output to work. The addresses are `$(<pod IP var>):<port>`; the passwords come from the
/// credential Secrets' `password` keys. Role names and the REST API user name are in the file;
/// `PATRONI_<SECTION>_USERNAME` variables may repeat them (the environment overrides the file)
/// but must then hold the same names.
pub const INSTANCE_ENV: &[&str] = &[
    ENV_NAME,
    ENV_POD_IP,
    ENV_POSTGRESQL_CONNECT_ADDRESS,
    ENV_RESTAPI_CONNECT_ADDRESS,
    ENV_SUPERUSER_PASSWORD,
    ENV_REPLICATION_PASSWORD,
    ENV_REWIND_PASSWORD,
    ENV_RESTAPI_PASSWORD,
];

// ---------------------------------------------------------------------------------------------
// The monitoring role's credentials
// ---------------------------------------------------------------------------------------------

/// The Secret holding the monitoring role's credentials: `<cluster>-monitor`.
pub fn monitor_secret(cluster: &str) -> String {
    format!("{cluster}-monitor")
}

/// The exporter's environment variable holding the password, referenced from
/// `DATA_SOURCE_NAME` as `$(TUSK_MONITOR_PASSWORD)` (Kubernetes expands it; the pod spec never
/// holds the password).
pub const MONITOR_PASSWORD_ENV: &str = "TUSK_MONITOR_PASSWORD";

/// postgres_exporter's connection string: the pod's unix socket (where pg_hba has
/// `local all tusk_monitor scram-sha-256`), as `tusk_monitor`.
pub fn data_source_name() -> String {
    format!(
        "host={} port={} user={MONITORING_ROLE} password=$({MONITOR_PASSWORD_ENV}) dbname=postgres sslmode=disable",
        SOCKET_DIR,
        tusk_api::names::POSTGRES_PORT,
    )
}

/// (Secret name, role) of every credential Secret.
pub fn credential_secrets(cluster: &str) -> [(String, &'static str); 4] {
    [
        (names::superuser_secret(cluster), SUPERUSER_ROLE),
        (names::replication_secret(cluster), REPLICATION_ROLE),
        (rewind_secret(cluster), REWIND_ROLE),
        (patroni_api_secret(cluster), PATRONI_API_USERNAME),
    ]
}

/// Every Secret [`desired_secrets`](crate::plan::secrets::desired_secrets) reads, by name: the controller should get each of these
/// (not only list by label), so a Secret created ahead of tusk — or stripped of its labels —
/// is reused rather than overwritten with a new password or CA.
pub fn observed_secret_names(cluster: &Cluster) -> Vec<String> {
    let name = meta::cluster_name(cluster);
    let mut secret_names: Vec<String> = credential_secrets(&name)
        .into_iter()
        .map(|(secret, _)| secret)
        .collect();
    secret_names.extend([
        names::ca_secret(&name),
        names::server_tls_secret(&name),
        names::pgbackrest_secret(&name),
    ]);
    let tls = &cluster.spec.tls;
    for provided in [&tls.server_secret, &tls.ca_secret].into_iter().flatten() {
        if !secret_names.contains(&provided.name) {
            secret_names.push(provided.name.clone());
        }
    }
    secret_names
}

/// `<cluster>-monitoring`.
pub fn monitoring_config_map(cluster: &str) -> String {
    format!("{cluster}-monitoring")
}

/// The stanza Job of a Cluster: `<cluster>-stanza`.
pub fn stanza_job_name(cluster: &str) -> String {
    format!("{cluster}-stanza")
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// The restore spec, when the Cluster bootstraps from a backup.
pub fn restore_spec(cluster: &Cluster) -> Option<&RestoreSpec> {
    cluster.spec.bootstrap.as_ref()?.restore.as_ref()
}
