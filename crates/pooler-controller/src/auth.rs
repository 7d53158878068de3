//! The role PgBouncer's `auth_query` runs as, and the one function it may call.
//!
//! ```text
//!   role tusk_pooler  LOGIN, SCRAM password, nothing else granted
//!   every database:   schema tusk_pooler (owned by the superuser; USAGE for tusk_pooler)
//!                     tusk_pooler.lookup(text) SECURITY DEFINER, search_path pinned,
//!                     EXECUTE for tusk_pooler only (not PUBLIC)
//!                     ── returns the SCRAM verifier of a login role that is neither a
//!                        superuser nor a replication role, nor tusk_pooler itself
//! ```
//!
//! PgBouncer 1.18 (Debian 12) has no `auth_dbname`: the query runs in the database the client
//! asked for, so the function exists in every database that accepts connections. Like the
//! PostgresUser controller's SQL, each step is planned from what the catalog says and written
//! only when it differs, so a second pass writes nothing; every name and literal is quoted.

use postgres_protocol::escape::{escape_identifier, escape_literal};
pub use tusk_runtime::scram::{scram_verifier, verifier_matches};

/// The role `auth_query` runs as.
pub const AUTH_ROLE: &str = "tusk_pooler";
/// The admin console user (`RELOAD`, `PAUSE`, `SHOW STATS`); it exists only in PgBouncer's
/// auth file, not in PostgreSQL.
pub const ADMIN_ROLE: &str = "tusk_pooler_admin";
/// The schema holding the lookup function, in every database.
pub const SCHEMA: &str = "tusk_pooler";
/// What PgBouncer runs for a client not in its auth file.
pub const AUTH_QUERY: &str = "SELECT username, password FROM tusk_pooler.lookup($1)";

/// The lookup function's body. Roles that cannot log in, superusers, replication roles, expired
/// passwords and tusk_pooler itself are not found, so PgBouncer refuses them.
pub const LOOKUP_BODY: &str = "
SELECT a.rolname::text, a.rolpassword::text
  FROM pg_catalog.pg_authid a
 WHERE a.rolname = p_username
   AND a.rolcanlogin
   AND NOT a.rolsuper
   AND NOT a.rolreplication
   AND a.rolname <> 'tusk_pooler'
   AND (a.rolvaliduntil IS NULL OR a.rolvaliduntil > pg_catalog.now())
";

/// The role as the catalog has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedRole {
    pub exists: bool,
    pub can_login: bool,
    /// Whether it has more than LOGIN: superuser, CREATEDB, CREATEROLE, replication, BYPASSRLS.
    pub privileged: bool,
    /// The stored SCRAM verifier matches the password tusk holds.
    pub password_matches: bool,
}

/// The role and its attributes.
pub const ROLE_QUERY: &str = "SELECT rolcanlogin, \
     rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls, \
     rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1";

/// Statements that make the role [`AUTH_ROLE`] a plain login role with `verifier` as its
/// password; empty when it already is. `verifier` is only used when a password is written.
pub fn plan_role(observed: &ObservedRole, verifier: &str) -> Vec<String> {
    let role = escape_identifier(AUTH_ROLE);
    let password = escape_literal(verifier);
    if !observed.exists {
        return vec![format!(
            "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {password}"
        )];
    }
    let mut statements = Vec::new();
    if observed.privileged {
        statements.push(format!(
            "ALTER ROLE {role} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
        ));
    }
    if !observed.can_login || !observed.password_matches {
        statements.push(format!("ALTER ROLE {role} LOGIN PASSWORD {password}"));
    }
    statements
}

/// The lookup function in one database, as the catalog has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedLookup {
    pub schema_exists: bool,
    /// tusk_pooler may use the schema.
    pub schema_usage: bool,
    /// The function exists with [`LOOKUP_BODY`], SECURITY DEFINER and a pinned search_path.
    pub function_current: bool,
    pub function_exists: bool,
    /// Its ACL grants EXECUTE to tusk_pooler and nothing to PUBLIC.
    pub acl_current: bool,
}

/// Reads [`ObservedLookup`] (`$1` is the role, `$2` the schema).
pub const LOOKUP_QUERY: &str = "SELECT
  n.oid IS NOT NULL,
  n.oid IS NOT NULL AND pg_catalog.has_schema_privilege($1, n.oid, 'USAGE'),
  p.oid IS NOT NULL,
  p.oid IS NOT NULL AND p.prosecdef AND p.prosrc = $3
    AND p.proconfig = ARRAY['search_path=pg_catalog, pg_temp'],
  p.oid IS NOT NULL AND p.proacl IS NOT NULL
    AND pg_catalog.has_function_privilege($1, p.oid, 'EXECUTE')
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(p.proacl) x WHERE x.grantee = 0)
FROM (SELECT 1) one
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $2
LEFT JOIN pg_catalog.pg_proc p ON p.pronamespace = n.oid AND p.proname = 'lookup'";

/// Statements that make the schema and function in one database what they should be.
pub fn plan_lookup(observed: &ObservedLookup) -> Vec<String> {
    let role = escape_identifier(AUTH_ROLE);
    let schema = escape_identifier(SCHEMA);
    let function = format!("{schema}.lookup(text)");
    let mut statements = Vec::new();
    if !observed.schema_exists {
        statements.push(format!("CREATE SCHEMA {schema}"));
    }
    if !observed.schema_usage {
        statements.push(format!("GRANT USAGE ON SCHEMA {schema} TO {role}"));
    }
    if !observed.function_current {
        statements.push(format!(
            "CREATE OR REPLACE FUNCTION {schema}.lookup(p_username text, OUT username text, OUT password text) \
             RETURNS SETOF record LANGUAGE sql STABLE SECURITY DEFINER \
             SET search_path = pg_catalog, pg_temp AS {}",
            escape_literal(LOOKUP_BODY)
        ));
    }
    if !observed.function_exists || !observed.function_current || !observed.acl_current {
        statements.push(format!("REVOKE ALL ON FUNCTION {function} FROM PUBLIC"));
        statements.push(format!("GRANT EXECUTE ON FUNCTION {function} TO {role}"));
    }
    statements
}

/// Databases PgBouncer may be asked for: every one that accepts connections.
pub const DATABASES_QUERY: &str = "SELECT datname FROM pg_catalog.pg_database \
     WHERE datallowconn AND NOT datistemplate ORDER BY datname";

/// Reads the role and writes what [`plan_role`] says; returns the statements run.
pub async fn ensure_role(
    client: &tokio_postgres::Client,
    password: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let observed = match client.query_opt(ROLE_QUERY, &[&AUTH_ROLE]).await? {
        Some(row) => ObservedRole {
            exists: true,
            can_login: row.get(0),
            privileged: row.get(1),
            password_matches: row
                .get::<_, Option<String>>(2)
                .is_some_and(|stored| verifier_matches(&stored, password)),
        },
        None => ObservedRole::default(),
    };
    let statements = plan_role(&observed, &scram_verifier(password));
    run(client, &statements).await?;
    Ok(statements)
}

/// Reads the lookup function of the connected database and writes what [`plan_lookup`]
/// says; returns the statements run. Needs a superuser session (the function reads
/// `pg_authid`, so its owner must be able to).
pub async fn ensure_lookup(
    client: &tokio_postgres::Client,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client
        .query_one(LOOKUP_QUERY, &[&AUTH_ROLE, &SCHEMA, &LOOKUP_BODY])
        .await?;
    let observed = ObservedLookup {
        schema_exists: row.get(0),
        schema_usage: row.get(1),
        function_exists: row.get(2),
        function_current: row.get(3),
        acl_current: row.get(4),
    };
    let statements = plan_lookup(&observed);
    run(client, &statements).await?;
    Ok(statements)
}

/// Drops the schema with the lookup function in the connected database (the last Pooler of a
/// Cluster is gone). Nothing else lives in it: tusk made it.
pub async fn drop_lookup(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            escape_identifier(SCHEMA)
        ))
        .await
}

/// Ends PgBouncer's sessions as the auth role and drops it (after [`drop_lookup`] in every
/// database, so nothing of it is left to depend on it).
pub async fn drop_role(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
             WHERE usename = $1",
            &[&AUTH_ROLE],
        )
        .await?;
    client
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {}",
            escape_identifier(AUTH_ROLE)
        ))
        .await
}

async fn run(
    client: &tokio_postgres::Client,
    statements: &[String],
) -> Result<(), tokio_postgres::Error> {
    if statements.is_empty() {
        return Ok(());
    }
    let transaction = format!("BEGIN;\n{};\nCOMMIT", statements.join(";\n"));
    client.batch_execute(&transaction).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_role_is_created_as_a_plain_login_role() {
        let statements = plan_role(&ObservedRole::default(), "SCRAM-SHA-256$4096:x$y:z");
        assert_eq!(statements.len(), 1);
        assert!(statements[0].starts_with("CREATE ROLE \"tusk_pooler\" LOGIN NOSUPERUSER"));
        assert!(statements[0].ends_with("PASSWORD 'SCRAM-SHA-256$4096:x$y:z'"));
    }

    #[test]
    fn a_current_role_needs_nothing_and_drift_is_corrected() {
        let current = ObservedRole {
            exists: true,
            can_login: true,
            privileged: false,
            password_matches: true,
        };
        assert_eq!(plan_role(&current, "v"), Vec::<String>::new());
        let drifted = ObservedRole {
            privileged: true,
            password_matches: false,
            ..current
        };
        assert_eq!(
            plan_role(&drifted, "v"),
            [
                "ALTER ROLE \"tusk_pooler\" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                "ALTER ROLE \"tusk_pooler\" LOGIN PASSWORD 'v'",
            ]
        );
    }

    #[test]
    fn the_lookup_is_made_once_and_its_grants_kept_tight() {
        let all = plan_lookup(&ObservedLookup::default());
        assert_eq!(all.len(), 5, "{all:#?}");
        assert!(all[2].contains("SECURITY DEFINER"));
        assert!(all[2].contains("SET search_path = pg_catalog, pg_temp"));
        let current = ObservedLookup {
            schema_exists: true,
            schema_usage: true,
            function_exists: true,
            function_current: true,
            acl_current: true,
        };
        assert_eq!(plan_lookup(&current), Vec::<String>::new());
        let public_granted = ObservedLookup {
            acl_current: false,
            ..current
        };
        assert_eq!(
            plan_lookup(&public_granted),
            [
                "REVOKE ALL ON FUNCTION \"tusk_pooler\".lookup(text) FROM PUBLIC",
                "GRANT EXECUTE ON FUNCTION \"tusk_pooler\".lookup(text) TO \"tusk_pooler\"",
            ]
        );
    }
}
