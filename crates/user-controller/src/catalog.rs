//! Observing PostgreSQL: what the catalogs say about roles, databases and one role's grants.
//!
//! Two reads, both read-only and with every value bound as a parameter:
//!
//! - [`read_cluster`]: the shared catalogs (`pg_authid`, `pg_database`, `pg_shdepend`), for
//!   any number of roles at once — one round trip per Cluster per pass, whether one role or a
//!   thousand is reconciled;
//! - [`read_grants`]: inside one database, the role's privileges on that database, its
//!   schemas, tables, sequences and default privileges — one round trip per database the role
//!   has (or should have) grants in.
//!
//! The types are plain data (and deserialize from the planner's YAML fixtures), so the planner
//! never touches a connection.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// A role as `pg_authid` and `pg_shdepend` describe it.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedRole {
    pub oid: i64,
    pub name: String,
    pub superuser: bool,
    pub login: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub inherit: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub connection_limit: i32,
    /// `VALID UNTIL` as seconds since the epoch; `None` (or infinity) for no limit.
    pub valid_until: Option<f64>,
    /// The stored password verifier (`rolpassword`). Never printed.
    pub stored_password: Option<String>,
    /// `COMMENT ON ROLE`, which carries tusk's ownership marker.
    pub comment: Option<String>,
    /// Whether the role owns any object in any database (or a database).
    pub owns_objects: bool,
    /// Databases (that accept connections) in which the role owns objects or holds
    /// privileges, per `pg_shdepend`, plus those granting it privileges on themselves.
    pub dependent_databases: BTreeSet<String>,
    /// Databases the role owns.
    pub owned_databases: BTreeSet<String>,
}

impl std::fmt::Debug for ObservedRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedRole")
            .field("oid", &self.oid)
            .field("name", &self.name)
            .field("login", &self.login)
            .field("connection_limit", &self.connection_limit)
            .field("comment", &self.comment)
            .field(
                "stored_password",
                &self.stored_password.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// A database as `pg_database` describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedDatabase {
    pub name: String,
    pub owner: String,
    pub allows_connections: bool,
}

/// The shared-catalog state of a set of roles and databases.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterCatalog {
    pub roles: BTreeMap<String, ObservedRole>,
    pub databases: BTreeMap<String, ObservedDatabase>,
}

const READ_ROLES: &str = "
SELECT r.oid::int8, r.rolname::text, r.rolsuper, r.rolcanlogin, r.rolcreatedb, r.rolcreaterole,
       r.rolinherit, r.rolreplication, r.rolbypassrls, r.rolconnlimit,
       extract(epoch FROM r.rolvaliduntil)::float8,
       r.rolpassword,
       shobj_description(r.oid, 'pg_authid'),
       EXISTS (SELECT 1 FROM pg_shdepend s
               WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = r.oid
                 AND s.deptype = 'o'),
       ARRAY(SELECT DISTINCT d.datname::text FROM pg_shdepend s
               JOIN pg_database d ON d.oid = s.dbid
             WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = r.oid
               AND s.deptype IN ('a', 'o') AND d.datallowconn
             UNION
             SELECT d.datname::text FROM pg_database d
             WHERE d.datallowconn
               AND EXISTS (SELECT 1 FROM aclexplode(d.datacl) a WHERE a.grantee = r.oid)),
       ARRAY(SELECT d.datname::text FROM pg_database d WHERE d.datdba = r.oid ORDER BY 1)
FROM pg_authid r
WHERE r.rolname = ANY($1::text[])";

const READ_DATABASES: &str = "
SELECT d.datname::text, pg_get_userbyid(d.datdba)::text, d.datallowconn
FROM pg_database d
WHERE d.datname = ANY($1::text[])";

/// Reads the shared catalogs for `roles` and `databases`, in one round trip (the two queries
/// are pipelined on the connection).
pub async fn read_cluster(
    client: &Client,
    roles: &[&str],
    databases: &[&str],
) -> Result<ClusterCatalog, tokio_postgres::Error> {
    let role_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&roles];
    let database_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&databases];
    let (role_rows, database_rows) = futures::try_join!(
        client.query(READ_ROLES, &role_params),
        client.query(READ_DATABASES, &database_params),
    )?;
    let mut catalog = ClusterCatalog::default();
    for row in role_rows {
        let role = ObservedRole {
            oid: row.try_get(0)?,
            name: row.try_get(1)?,
            superuser: row.try_get(2)?,
            login: row.try_get(3)?,
            createdb: row.try_get(4)?,
            createrole: row.try_get(5)?,
            inherit: row.try_get(6)?,
            replication: row.try_get(7)?,
            bypassrls: row.try_get(8)?,
            connection_limit: row.try_get(9)?,
            valid_until: row
                .try_get::<_, Option<f64>>(10)?
                .filter(|seconds| seconds.is_finite()),
            stored_password: row.try_get(11)?,
            comment: row.try_get(12)?,
            owns_objects: row.try_get(13)?,
            dependent_databases: row.try_get::<_, Vec<String>>(14)?.into_iter().collect(),
            owned_databases: row.try_get::<_, Vec<String>>(15)?.into_iter().collect(),
        };
        catalog.roles.insert(role.name.clone(), role);
    }
    for row in database_rows {
        let database = ObservedDatabase {
            name: row.try_get(0)?,
            owner: row.try_get(1)?,
            allows_connections: row.try_get(2)?,
        };
        catalog.databases.insert(database.name.clone(), database);
    }
    Ok(catalog)
}

/// Counts of one kind of relation (tables or sequences) in a schema: how many the role does
/// not own, and on how many of those it holds each privilege.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RelationPrivileges {
    pub total: i64,
    pub granted: BTreeMap<String, i64>,
}

/// A schema in the database and the role's standing in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedSchema {
    pub name: String,
    pub owner: String,
    /// The role's own privileges on the schema (`USAGE`, `CREATE`).
    pub privileges: BTreeSet<String>,
    pub tables: RelationPrivileges,
    pub sequences: RelationPrivileges,
}

/// What default privileges apply to: tables or sequences (the two tusk manages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DefaultObjects {
    Tables,
    Sequences,
}

impl DefaultObjects {
    /// The keyword in `ALTER DEFAULT PRIVILEGES ... ON <keyword>`.
    pub fn keyword(self) -> &'static str {
        match self {
            DefaultObjects::Tables => "TABLES",
            DefaultObjects::Sequences => "SEQUENCES",
        }
    }

    fn from_catalog(objtype: &str) -> Option<Self> {
        match objtype {
            "r" => Some(DefaultObjects::Tables),
            "S" => Some(DefaultObjects::Sequences),
            _ => None,
        }
    }
}

/// One `pg_default_acl` entry that gives the role something.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDefaultPrivileges {
    /// The role whose new objects get the privileges (`FOR ROLE`).
    pub creator: String,
    /// `None` for an entry that applies in every schema.
    #[serde(default)]
    pub schema: Option<String>,
    pub objects: DefaultObjects,
    pub privileges: BTreeSet<String>,
}

/// The role's grants inside one database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservedGrants {
    pub database: String,
    pub database_owner: String,
    /// The role's own privileges on the database (`CONNECT`, `CREATE`, `TEMPORARY`).
    pub database_privileges: BTreeSet<String>,
    /// Every schema but PostgreSQL's own (`pg_*`, `information_schema`).
    pub schemas: Vec<ObservedSchema>,
    pub default_privileges: Vec<ObservedDefaultPrivileges>,
}

const READ_DATABASE_GRANTS: &str = "
SELECT pg_get_userbyid(d.datdba)::text,
       ARRAY(SELECT a.privilege_type FROM aclexplode(d.datacl) a
             WHERE a.grantee::int8 = $1 ORDER BY 1)::text[]
FROM pg_database d WHERE d.datname = current_database()";

const READ_SCHEMAS: &str = "
SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text,
       ARRAY(SELECT a.privilege_type FROM aclexplode(n.nspacl) a
             WHERE a.grantee::int8 = $1 ORDER BY 1)::text[]
FROM pg_namespace n
WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY 1";

/// Relations the role does not own, per schema and kind, and per privilege it holds on them.
/// Rows with a NULL privilege carry the totals.
const READ_RELATIONS: &str = "
WITH rels AS (
  SELECT n.nspname::text AS schema, c.relkind = 'S' AS is_sequence,
         ARRAY(SELECT a.privilege_type FROM aclexplode(c.relacl) a
               WHERE a.grantee::int8 = $1)::text[] AS privileges
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relowner::int8 <> $1
    AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
)
SELECT schema, is_sequence, NULL::text, count(*)::int8 FROM rels GROUP BY 1, 2
UNION ALL
SELECT schema, is_sequence, p, count(*)::int8 FROM rels, unnest(privileges) p GROUP BY 1, 2, 3";

const READ_DEFAULT_PRIVILEGES: &str = "
SELECT pg_get_userbyid(d.defaclrole)::text, n.nspname::text, d.defaclobjtype::text,
       ARRAY(SELECT a.privilege_type FROM aclexplode(d.defaclacl) a
             WHERE a.grantee::int8 = $1 ORDER BY 1)::text[]
FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
WHERE d.defaclobjtype IN ('r', 'S')";

/// Reads the grants of the role with `role_oid` in the database `client` is connected to, in
/// one round trip. A role that does not exist yet (oid 0) simply holds nothing.
pub async fn read_grants(
    client: &Client,
    database: &str,
    role_oid: i64,
) -> Result<ObservedGrants, tokio_postgres::Error> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&role_oid];
    let (database_rows, schema_rows, relation_rows, default_rows) = futures::try_join!(
        client.query(READ_DATABASE_GRANTS, &params),
        client.query(READ_SCHEMAS, &params),
        client.query(READ_RELATIONS, &params),
        client.query(READ_DEFAULT_PRIVILEGES, &params),
    )?;
    let mut grants = ObservedGrants {
        database: database.to_owned(),
        ..ObservedGrants::default()
    };
    if let Some(row) = database_rows.first() {
        grants.database_owner = row.try_get(0)?;
        grants.database_privileges = row.try_get::<_, Vec<String>>(1)?.into_iter().collect();
    }
    for row in schema_rows {
        grants.schemas.push(ObservedSchema {
            name: row.try_get(0)?,
            owner: row.try_get(1)?,
            privileges: row.try_get::<_, Vec<String>>(2)?.into_iter().collect(),
            ..ObservedSchema::default()
        });
    }
    for row in relation_rows {
        let schema: String = row.try_get(0)?;
        let is_sequence: bool = row.try_get(1)?;
        let privilege: Option<String> = row.try_get(2)?;
        let count: i64 = row.try_get(3)?;
        let Some(observed) = grants.schemas.iter_mut().find(|s| s.name == schema) else {
            continue;
        };
        let relations = if is_sequence {
            &mut observed.sequences
        } else {
            &mut observed.tables
        };
        match privilege {
            None => relations.total = count,
            Some(privilege) => {
                relations.granted.insert(privilege, count);
            }
        }
    }
    for row in default_rows {
        let privileges: BTreeSet<String> = row.try_get::<_, Vec<String>>(3)?.into_iter().collect();
        let objtype: String = row.try_get(2)?;
        let Some(objects) = DefaultObjects::from_catalog(&objtype) else {
            continue;
        };
        if privileges.is_empty() {
            continue;
        }
        grants.default_privileges.push(ObservedDefaultPrivileges {
            creator: row.try_get(0)?,
            schema: row.try_get(1)?,
            objects,
            privileges,
        });
    }
    grants.default_privileges.sort();
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_role_debug_hides_the_verifier() {
        let role = ObservedRole {
            stored_password: Some("SCRAM-SHA-256$4096:c2FsdA==$a:b".into()),
            ..ObservedRole::default()
        };
        let text = format!("{role:?}");
        assert!(!text.contains("SCRAM"), "{text}");
    }
}
