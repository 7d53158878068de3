//! What PgBouncer reads: `pgbouncer.ini` from a Pooler's spec, and the auth file holding only
//! tusk's two roles (the auth_query role and the admin console user) — never an application's
//! password.
//!
//! ```text
//!   Pooler spec ──► [databases]  * = host=<cluster>-rw|-ro port=5432 auth_user=tusk_pooler
//!               └─► [pgbouncer]  listen, auth (scram-sha-256 + auth_query), TLS both sides,
//!                                admin/stats user, pool settings, then the user's parameters
//! ```
//!
//! Every value comes from a validated field (ranges, enums) or from tusk; the user's extra
//! parameters are PgBouncer names (`^[a-z][a-z0-9_]*$`) with one-line values, and the ones
//! tusk controls are left out here too, so an object stored before the schema refused them
//! cannot change authentication or TLS.

use std::fmt::Write as _;

use tusk_api::pooler::{FORBIDDEN_PARAMETERS, PARAMETER_NAME_PATTERN, PoolerTarget};
use tusk_api::{Pooler, names};

use crate::auth::{ADMIN_ROLE, AUTH_QUERY, AUTH_ROLE};

/// The port PgBouncer listens on in the pod and the Service exposes.
pub const POOLER_PORT: u16 = names::POOLER_PORT;

/// Where PgBouncer listens, where the Cluster is, and where its files are mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub listen_addr: String,
    pub listen_port: u16,
    /// The Cluster's Service (or, in tests, the server) PgBouncer connects to. Its server
    /// certificate must name this host (`server_tls_sslmode = verify-full`).
    pub upstream_host: String,
    pub upstream_port: u16,
    pub files: Files,
}

/// Paths PgBouncer reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    /// The auth file ([`auth_file`]).
    pub auth_file: String,
    /// The certificate and key PgBouncer presents to clients (issued from the Cluster's CA
    /// for `<pooler>.<namespace>.svc`).
    pub client_tls_cert: String,
    pub client_tls_key: String,
    /// The Cluster's CA, which the server certificate must chain to.
    pub server_tls_ca: String,
}

impl Placement {
    /// In the Pooler's pod: every address, port 5432, the Cluster's `-rw` or `-ro` Service,
    /// files under `/etc/pgbouncer`.
    pub fn in_pod(pooler: &Pooler, namespace: &str) -> Self {
        let cluster = &pooler.spec.cluster.name;
        let service = match pooler.spec.target {
            PoolerTarget::ReadWrite => names::read_write_service(cluster),
            PoolerTarget::ReadOnly => names::read_only_service(cluster),
        };
        Placement {
            listen_addr: "*".to_owned(),
            listen_port: POOLER_PORT,
            upstream_host: format!("{service}.{namespace}.svc"),
            upstream_port: names::POSTGRES_PORT,
            files: Files {
                auth_file: "/etc/pgbouncer/auth/userlist.txt".to_owned(),
                client_tls_cert: "/etc/pgbouncer/tls/tls.crt".to_owned(),
                client_tls_key: "/etc/pgbouncer/tls/tls.key".to_owned(),
                server_tls_ca: "/etc/pgbouncer/server-ca/ca.crt".to_owned(),
            },
        }
    }
}

/// `pgbouncer.ini` for `pooler` at `placement`.
pub fn render_ini(pooler: &Pooler, placement: &Placement) -> String {
    let files = &placement.files;
    let mut out =
        String::from("; Written by tusk from the Pooler's spec; edits are overwritten.\n");
    out.push_str("[databases]\n");
    let _ = writeln!(
        out,
        "* = host={} port={} auth_user={AUTH_ROLE}",
        placement.upstream_host, placement.upstream_port
    );
    out.push_str("\n[pgbouncer]\n");
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "{key} = {value}");
    };
    line("listen_addr", &placement.listen_addr);
    line("listen_port", &placement.listen_port.to_string());
    // No Unix socket: the root file system is read-only and every client comes over TCP.
    line("unix_socket_dir", "");
    line("auth_type", "scram-sha-256");
    line("auth_file", &files.auth_file);
    line("auth_user", AUTH_ROLE);
    line("auth_query", AUTH_QUERY);
    line("admin_users", ADMIN_ROLE);
    line("stats_users", ADMIN_ROLE);
    line("client_tls_sslmode", "require");
    line("client_tls_cert_file", &files.client_tls_cert);
    line("client_tls_key_file", &files.client_tls_key);
    line("client_tls_protocols", "tlsv1.2,tlsv1.3");
    line("server_tls_sslmode", "verify-full");
    line("server_tls_ca_file", &files.server_tls_ca);
    line("server_tls_protocols", "tlsv1.2,tlsv1.3");
    for (key, value) in tunable_settings(pooler) {
        line(&key, &value);
    }
    out
}

/// The settings a Pooler's spec decides, as `pgbouncer.ini` holds them: the pool settings, then
/// the user's parameters. These are what the controller compares with each pod's `SHOW CONFIG`
/// and reloads (or sets) when they differ; the rest of the file is fixed by tusk.
pub fn tunable_settings(pooler: &Pooler) -> Vec<(String, String)> {
    let settings = &pooler.spec.pgbouncer;
    let mut out: Vec<(String, String)> = [
        ("pool_mode", settings.pool_mode.as_pgbouncer().to_owned()),
        ("default_pool_size", settings.default_pool_size.to_string()),
        ("reserve_pool_size", settings.reserve_pool_size.to_string()),
        (
            "max_client_conn",
            settings.max_client_connections.to_string(),
        ),
        (
            "max_db_connections",
            settings.max_db_connections.to_string(),
        ),
        (
            "server_idle_timeout",
            settings.server_idle_timeout_seconds.to_string(),
        ),
        ("query_timeout", settings.query_timeout_seconds.to_string()),
        (
            "idle_transaction_timeout",
            settings.idle_transaction_timeout_seconds.to_string(),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    // Defaults the user may override: JDBC sends extra_float_digits at start-up.
    if !settings
        .parameters
        .contains_key("ignore_startup_parameters")
    {
        out.push((
            "ignore_startup_parameters".to_owned(),
            "extra_float_digits".to_owned(),
        ));
    }
    // PgBouncer waits server_login_retry (15 s by default) after a failed server login before
    // trying again, and refuses clients meanwhile; during a failover the -rw Service has no
    // endpoint for a few seconds, so a long wait turns a 5 s failover into 16 s (measured in
    // crates/operator/tests/pooler_failover_real.rs). The user may set another value.
    if !settings.parameters.contains_key("server_login_retry") {
        out.push(("server_login_retry".to_owned(), "2".to_owned()));
    }
    out.extend(
        settings
            .parameters
            .iter()
            .filter(|(key, value)| usable_parameter(key, value))
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    out
}

/// An extra parameter the schema would accept: a PgBouncer name that tusk does not control,
/// with a one-line value.
fn usable_parameter(key: &str, value: &str) -> bool {
    debug_assert_eq!(PARAMETER_NAME_PATTERN, "^[a-z][a-z0-9_]*$");
    let name_ok = key.len() <= 64
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    name_ok && !FORBIDDEN_PARAMETERS.contains(&key) && !value.contains(['\n', '\r'])
}

/// The auth file: the auth_query role with its password (PgBouncer logs in to PostgreSQL as
/// it, so it needs the password itself) and the admin console user by its SCRAM verifier
/// (it never logs in to PostgreSQL). Application roles are looked up through `auth_query`.
pub fn auth_file(auth_password: &str, admin_verifier: &str) -> String {
    format!(
        "{} {}\n{} {}\n",
        quoted(AUTH_ROLE),
        quoted(auth_password),
        quoted(ADMIN_ROLE),
        quoted(admin_verifier)
    )
}

/// A value in PgBouncer's auth file: double-quoted, a `"` doubled.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pooler(spec: &str) -> Pooler {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Pooler\nmetadata: {{name: db-pooler, namespace: shop}}\nspec:\n  cluster: {{name: db}}\n{spec}"
        ))
        .unwrap()
    }

    #[test]
    fn a_minimal_pooler_renders_safe_defaults() {
        let pooler = pooler("");
        insta::assert_snapshot!(
            "minimal_ini",
            render_ini(&pooler, &Placement::in_pod(&pooler, "shop"))
        );
    }

    #[test]
    fn a_read_only_pooler_points_at_the_replicas() {
        let pooler = pooler("  target: ReadOnly\n");
        let ini = render_ini(&pooler, &Placement::in_pod(&pooler, "shop"));
        assert!(
            ini.contains("* = host=db-ro.shop.svc port=5432 auth_user=tusk_pooler\n"),
            "{ini}"
        );
    }

    #[test]
    fn settings_and_extra_parameters_are_rendered_and_controlled_ones_left_out() {
        let pooler = pooler(
            "  pgbouncer:
    poolMode: Transaction
    defaultPoolSize: 5
    maxDbConnections: 10
    idleTransactionTimeoutSeconds: 60
    parameters:
      server_lifetime: \"3600\"
      ignore_startup_parameters: extra_float_digits,search_path
      auth_type: trust
      Bad-Name: x
      server_reset_query: \"DISCARD ALL\\nauth_type = trust\"
",
        );
        let ini = render_ini(&pooler, &Placement::in_pod(&pooler, "shop"));
        for expected in [
            "pool_mode = transaction\n",
            "default_pool_size = 5\n",
            "max_db_connections = 10\n",
            "idle_transaction_timeout = 60\n",
            "server_lifetime = 3600\n",
            "ignore_startup_parameters = extra_float_digits,search_path\n",
            "auth_type = scram-sha-256\n",
        ] {
            assert!(ini.contains(expected), "{expected:?} missing from\n{ini}");
        }
        assert_eq!(ini.matches("auth_type").count(), 1, "{ini}");
        assert_eq!(ini.matches("ignore_startup_parameters").count(), 1);
        assert!(!ini.contains("Bad-Name"));
        assert!(!ini.contains("server_reset_query"));
    }

    #[test]
    fn the_auth_file_quotes_its_values() {
        assert_eq!(
            auth_file("pa\"ss", "SCRAM-SHA-256$4096:c2FsdA==$a:b"),
            "\"tusk_pooler\" \"pa\"\"ss\"\n\"tusk_pooler_admin\" \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"\n"
        );
    }
}
