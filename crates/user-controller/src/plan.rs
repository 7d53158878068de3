//! The pure heart of the controller: spec × observed catalog → the exact SQL to run.
//!
//! ```text
//!   PostgresUser ──DesiredRole::from_user──► DesiredRole ─┐
//!   read_cluster ──────────────────────────► ObservedRole ├─ plan_role ───► RolePlan
//!   password check ────────────────────────► PasswordAction┘                (role SQL, CREATE DATABASE)
//!   spec.grants ─► DesiredGrant ─┐
//!   read_grants ─► ObservedGrants┴─ plan_grants ─► GrantPlan (one transaction per database)
//!   ObservedRole × spec.deletion ── plan_drop ───► DropPlan
//! ```
//!
//! Nothing here does I/O, so every decision is tested from fixtures
//! (`tests/fixtures/plans/*.yaml`): a spec, what the catalogs said, and the exact statements
//! expected — an empty list when nothing differs, which is what makes a steady-state pass
//! write nothing.
//!
//! A role belongs to a PostgresUser when its comment carries `tusk.dev/owner=<uid>` and, once
//! recorded, its OID matches `status.roleOid`; anything else is refused, never taken over.

use std::collections::{BTreeMap, BTreeSet};

use tusk_api::PostgresUser;
use tusk_api::common::Access;
use tusk_api::user::{DeletionSpec, UserDatabase, check_role_name};

use crate::catalog::{
    DefaultObjects, ObservedDatabase, ObservedGrants, ObservedRole, RelationPrivileges,
};
use crate::sql::{
    check_identifier, database_privileges, quote_ident, quote_literal, schema_privileges,
    sequence_privileges, table_privileges,
};

/// The prefix of the ownership marker written into the role's comment.
pub const OWNER_MARKER_PREFIX: &str = "tusk.dev/owner=";

/// The role PostgreSQL 14+ uses as the owner of `public`, standing for the database owner.
const DATABASE_OWNER_ROLE: &str = "pg_database_owner";

/// The role as the spec wants it.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredRole {
    pub name: String,
    /// `tusk.dev/owner=<uid>`.
    pub owner_marker: String,
    /// The whole comment: the marker and which object manages the role.
    pub comment: String,
    pub login: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub inherit: bool,
    pub connection_limit: i32,
    pub valid_until: Option<ValidUntil>,
    /// `status.roleOid`: the role this object created, if any.
    pub known_oid: Option<i64>,
    pub databases: Vec<UserDatabase>,
}

/// A `VALID UNTIL` time: as seconds for comparing, as text for SQL.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidUntil {
    pub seconds: f64,
    pub literal: String,
}

/// Privileges in one database, as the spec wants them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredGrant {
    pub access: Access,
    pub schemas: Vec<String>,
}

/// A spec that cannot be applied as written (the CRD's rules should have caught it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecProblem {
    #[error("{}", .0.message())]
    RoleName(tusk_api::user::RoleNameProblem),
    #[error("{field} {problem}: change it in the spec")]
    Identifier {
        field: String,
        problem: crate::sql::IdentifierProblem,
    },
    #[error(
        "spec.validUntil {0:?} is not an RFC 3339 time with a zone (e.g. 2027-01-01T00:00:00Z)"
    )]
    ValidUntil(String),
    #[error("the object has no {0} (was it read from the API server?)")]
    Metadata(&'static str),
}

impl SpecProblem {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecProblem::RoleName(problem) => problem.reason(),
            _ => tusk_api::user::reasons::INVALID_SPEC,
        }
    }
}

/// Why a plan cannot be made without taking over or destroying something.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    RoleOwnedElsewhere(String),
    #[error(
        "database {database:?} exists and is owned by role {owner:?}, not by this role: tusk does not take over databases; remove it from spec.databases (and grant access under spec.grants), or change its owner yourself"
    )]
    DatabaseOwnedElsewhere { database: String, owner: String },
    #[error(
        "database {0:?} named in spec.grants does not exist: list it under spec.databases (here or in another PostgresUser) or create it"
    )]
    DatabaseNotFound(String),
    #[error(
        "schema {schema:?} does not exist in database {database:?}: create it (or use access Owner, which creates it) — tusk retries"
    )]
    SchemaNotFound { database: String, schema: String },
    #[error("{0}")]
    DropBlocked(String),
}

/// What to do about the password in this pass.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordAction {
    /// The stored verifier matches the password in the Secret: send nothing.
    Keep,
    /// Set this SCRAM-SHA-256 verifier (never a cleartext password).
    Set(String),
}

impl std::fmt::Debug for PasswordAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordAction::Keep => f.write_str("Keep"),
            PasswordAction::Set(_) => f.write_str("Set(<verifier>)"),
        }
    }
}

/// A change a plan makes, for events and status messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    RoleCreated,
    /// Role attributes that differed, by keyword (`LOGIN`, `CONNECTION LIMIT`, ...).
    AttributesChanged(Vec<&'static str>),
    PasswordSet,
    CommentSet,
    DatabaseCreated(String),
}

/// The role-level SQL for one PostgresUser.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RolePlan {
    /// Run in the maintenance database, in one transaction.
    pub role_statements: Vec<String>,
    /// `CREATE DATABASE`, each on its own (it cannot run in a transaction block).
    pub create_databases: Vec<String>,
    pub changes: Vec<Change>,
}

impl RolePlan {
    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.role_statements.is_empty() && self.create_databases.is_empty()
    }
}

/// The grants SQL for one database, run there in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantPlan {
    pub database: String,
    pub statements: Vec<String>,
}

/// The SQL that drops a role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropPlan {
    /// First, in the maintenance database: no new sessions, databases handed over.
    pub prepare: Vec<String>,
    /// Whether to end the role's sessions after `prepare`.
    pub terminate_sessions: bool,
    /// Then, in each database where the role owns or holds something (one transaction each).
    pub per_database: Vec<(String, Vec<String>)>,
    /// Last, in the maintenance database.
    pub drop_role: String,
}

/// The ownership marker for the object with `uid`.
pub fn owner_marker(uid: &str) -> String {
    format!("{OWNER_MARKER_PREFIX}{uid}")
}

/// Whether `comment` carries `marker` as a whole word.
pub fn has_marker(comment: &str, marker: &str) -> bool {
    comment.split_whitespace().any(|word| word == marker)
}

impl DesiredRole {
    /// The role `user` asks for; checks every name the SQL will carry.
    pub fn from_user(user: &PostgresUser) -> Result<Self, SpecProblem> {
        let name = user.role_name().ok_or(SpecProblem::Metadata("name"))?;
        check_role_name(name).map_err(SpecProblem::RoleName)?;
        let namespace = user
            .metadata
            .namespace
            .as_deref()
            .ok_or(SpecProblem::Metadata("namespace"))?;
        let object = user
            .metadata
            .name
            .as_deref()
            .ok_or(SpecProblem::Metadata("name"))?;
        let uid = user
            .metadata
            .uid
            .as_deref()
            .ok_or(SpecProblem::Metadata("uid"))?;
        let spec = &user.spec;
        for (i, database) in spec.databases.iter().enumerate() {
            identifier(&format!("spec.databases[{i}].name"), &database.name)?;
            identifier(
                &format!("spec.databases[{i}].template"),
                database.template(),
            )?;
        }
        for (i, grant) in spec.grants.iter().enumerate() {
            identifier(&format!("spec.grants[{i}].database"), &grant.database)?;
            for (j, schema) in grant.schemas.iter().enumerate() {
                identifier(&format!("spec.grants[{i}].schemas[{j}]"), schema)?;
            }
        }
        if let Some(target) = &spec.deletion.reassign_owned_to {
            identifier("spec.deletion.reassignOwnedTo", target)?;
        }
        let valid_until = spec
            .valid_until
            .as_deref()
            .map(|text| {
                let time: jiff::Timestamp = text
                    .parse()
                    .map_err(|_| SpecProblem::ValidUntil(text.to_owned()))?;
                Ok(ValidUntil {
                    seconds: time.as_millisecond() as f64 / 1000.0,
                    literal: time.to_string(),
                })
            })
            .transpose()?;
        let owner_marker = owner_marker(uid);
        Ok(Self {
            name: name.to_owned(),
            comment: format!(
                "{owner_marker} (PostgresUser {namespace}/{object}, managed by tusk; do not edit)"
            ),
            owner_marker,
            login: spec.login,
            createdb: spec.createdb,
            createrole: spec.createrole,
            inherit: spec.inherit,
            connection_limit: spec.connection_limit,
            valid_until,
            known_oid: user.status.as_ref().and_then(|s| s.role_oid),
            databases: spec.databases.clone(),
        })
    }
}

fn identifier(field: &str, name: &str) -> Result<(), SpecProblem> {
    check_identifier(name).map_err(|problem| SpecProblem::Identifier {
        field: field.to_owned(),
        problem,
    })
}

/// The grants `user` asks for, by database.
pub fn desired_grants(user: &PostgresUser) -> BTreeMap<String, DesiredGrant> {
    user.spec
        .grants
        .iter()
        .map(|grant| {
            (
                grant.database.clone(),
                DesiredGrant {
                    access: grant.access,
                    schemas: grant.schemas.clone(),
                },
            )
        })
        .collect()
}

/// Checks that an existing role belongs to `desired` (marker and, once known, OID).
pub fn check_ownership(desired: &DesiredRole, observed: &ObservedRole) -> Result<(), Refusal> {
    let marked = observed
        .comment
        .as_deref()
        .is_some_and(|comment| has_marker(comment, &desired.owner_marker));
    if !marked {
        return Err(Refusal::RoleOwnedElsewhere(format!(
            "role {:?} already exists and was not created for this PostgresUser (its comment has no {} marker): tusk does not take it over; choose another spec.roleName, or drop the existing role",
            desired.name, desired.owner_marker
        )));
    }
    if let Some(known) = desired.known_oid
        && known != observed.oid
    {
        return Err(Refusal::RoleOwnedElsewhere(format!(
            "role {:?} has OID {}, but this PostgresUser created OID {known}: the role was dropped and recreated outside tusk; drop it, or clear status.roleOid to adopt it",
            desired.name, observed.oid
        )));
    }
    Ok(())
}

/// Plans the role, its comment, its password and the databases it owns.
pub fn plan_role(
    desired: &DesiredRole,
    observed: Option<&ObservedRole>,
    databases: &BTreeMap<String, ObservedDatabase>,
    password: &PasswordAction,
) -> Result<RolePlan, Refusal> {
    let mut plan = RolePlan::default();
    let role = quote_ident(&desired.name);
    match observed {
        None => {
            let mut clauses = vec![
                flag(desired.login, "LOGIN"),
                "NOSUPERUSER".to_owned(),
                flag(desired.createdb, "CREATEDB"),
                flag(desired.createrole, "CREATEROLE"),
                flag(desired.inherit, "INHERIT"),
                "NOREPLICATION".to_owned(),
                "NOBYPASSRLS".to_owned(),
                format!("CONNECTION LIMIT {}", desired.connection_limit),
            ];
            if let Some(valid_until) = &desired.valid_until {
                clauses.push(format!(
                    "VALID UNTIL {}",
                    quote_literal(&valid_until.literal)
                ));
            }
            if let PasswordAction::Set(verifier) = password {
                clauses.push(format!("PASSWORD {}", quote_literal(verifier)));
            }
            plan.role_statements
                .push(format!("CREATE ROLE {role} WITH {}", clauses.join(" ")));
            plan.role_statements.push(format!(
                "COMMENT ON ROLE {role} IS {}",
                quote_literal(&desired.comment)
            ));
            plan.changes.push(Change::RoleCreated);
        }
        Some(observed) => {
            check_ownership(desired, observed)?;
            let mut clauses = Vec::new();
            let mut changed = Vec::new();
            let mut attribute = |differs: bool, keyword: &'static str, clause: String| {
                if differs {
                    clauses.push(clause);
                    changed.push(keyword);
                }
            };
            attribute(
                observed.login != desired.login,
                "LOGIN",
                flag(desired.login, "LOGIN"),
            );
            attribute(observed.superuser, "SUPERUSER", "NOSUPERUSER".to_owned());
            attribute(
                observed.createdb != desired.createdb,
                "CREATEDB",
                flag(desired.createdb, "CREATEDB"),
            );
            attribute(
                observed.createrole != desired.createrole,
                "CREATEROLE",
                flag(desired.createrole, "CREATEROLE"),
            );
            attribute(
                observed.inherit != desired.inherit,
                "INHERIT",
                flag(desired.inherit, "INHERIT"),
            );
            attribute(
                observed.replication,
                "REPLICATION",
                "NOREPLICATION".to_owned(),
            );
            attribute(observed.bypassrls, "BYPASSRLS", "NOBYPASSRLS".to_owned());
            attribute(
                observed.connection_limit != desired.connection_limit,
                "CONNECTION LIMIT",
                format!("CONNECTION LIMIT {}", desired.connection_limit),
            );
            match (&desired.valid_until, observed.valid_until) {
                (None, Some(_)) => attribute(
                    true,
                    "VALID UNTIL",
                    format!("VALID UNTIL {}", quote_literal("infinity")),
                ),
                (Some(want), have) => attribute(
                    have.is_none_or(|seconds| (seconds - want.seconds).abs() >= 0.001),
                    "VALID UNTIL",
                    format!("VALID UNTIL {}", quote_literal(&want.literal)),
                ),
                (None, None) => {}
            }
            if let PasswordAction::Set(verifier) = password {
                clauses.push(format!("PASSWORD {}", quote_literal(verifier)));
            }
            if !clauses.is_empty() {
                plan.role_statements
                    .push(format!("ALTER ROLE {role} WITH {}", clauses.join(" ")));
            }
            if !changed.is_empty() {
                plan.changes.push(Change::AttributesChanged(changed));
            }
            if observed.comment.as_deref() != Some(desired.comment.as_str()) {
                plan.role_statements.push(format!(
                    "COMMENT ON ROLE {role} IS {}",
                    quote_literal(&desired.comment)
                ));
                plan.changes.push(Change::CommentSet);
            }
        }
    }
    if matches!(password, PasswordAction::Set(_)) {
        plan.changes.push(Change::PasswordSet);
    }
    for database in &desired.databases {
        match databases.get(&database.name) {
            Some(existing) if existing.owner != desired.name => {
                return Err(Refusal::DatabaseOwnedElsewhere {
                    database: database.name.clone(),
                    owner: existing.owner.clone(),
                });
            }
            Some(_) => {}
            None => {
                let mut statement = format!(
                    "CREATE DATABASE {} WITH OWNER {role} TEMPLATE {} ENCODING {}",
                    quote_ident(&database.name),
                    quote_ident(database.template()),
                    quote_literal(&database.encoding)
                );
                if let Some(locale) = &database.locale {
                    statement.push_str(&format!(" LOCALE {}", quote_literal(locale)));
                }
                plan.create_databases.push(statement);
                plan.changes
                    .push(Change::DatabaseCreated(database.name.clone()));
            }
        }
    }
    Ok(plan)
}

fn flag(on: bool, keyword: &str) -> String {
    if on {
        keyword.to_owned()
    } else {
        format!("NO{keyword}")
    }
}

/// The databases whose grants must be looked at: those the spec grants in, and those where
/// the role holds privileges today (to revoke what the spec no longer grants).
pub fn grant_databases(
    desired: &BTreeMap<String, DesiredGrant>,
    observed: Option<&ObservedRole>,
) -> BTreeSet<String> {
    let mut databases: BTreeSet<String> = desired.keys().cloned().collect();
    if let Some(role) = observed {
        databases.extend(role.dependent_databases.iter().cloned());
    }
    databases
}

/// Plans the grants of `role` in one database: `desired` is `None` when the spec grants
/// nothing there (everything observed is revoked).
pub fn plan_grants(
    role: &str,
    desired: Option<&DesiredGrant>,
    observed: &ObservedGrants,
) -> Result<GrantPlan, Refusal> {
    let mut statements = Vec::new();
    let role_q = quote_ident(role);
    let database_q = quote_ident(&observed.database);
    let owner_of = |schema_owner: &str| -> String {
        if schema_owner == DATABASE_OWNER_ROLE {
            observed.database_owner.clone()
        } else {
            schema_owner.to_owned()
        }
    };
    let wanted: BTreeMap<&str, Access> = desired
        .map(|grant| {
            grant
                .schemas
                .iter()
                .map(|schema| (schema.as_str(), grant.access))
                .collect()
        })
        .unwrap_or_default();

    // Schemas first: the privileges below need them to exist and to have their final owner.
    let mut owner_after: BTreeMap<&str, String> = observed
        .schemas
        .iter()
        .map(|schema| (schema.name.as_str(), owner_of(&schema.owner)))
        .collect();
    for (&schema, &access) in &wanted {
        let schema_q = quote_ident(schema);
        match (owner_after.get(schema), access) {
            (None, Access::Owner) => {
                statements.push(format!("CREATE SCHEMA {schema_q} AUTHORIZATION {role_q}"));
                owner_after.insert(schema, role.to_owned());
            }
            (None, _) => {
                return Err(Refusal::SchemaNotFound {
                    database: observed.database.clone(),
                    schema: schema.to_owned(),
                });
            }
            (Some(owner), Access::Owner) if owner != role => {
                statements.push(format!("ALTER SCHEMA {schema_q} OWNER TO {role_q}"));
                owner_after.insert(schema, role.to_owned());
            }
            (Some(_), _) => {}
        }
    }

    if observed.database_owner != role {
        let want: BTreeSet<&str> = desired
            .map(|grant| database_privileges(grant.access).iter().copied().collect())
            .unwrap_or_default();
        let have: BTreeSet<&str> = observed
            .database_privileges
            .iter()
            .map(String::as_str)
            .collect();
        grant_and_revoke(
            &mut statements,
            &want,
            &have,
            &format!("ON DATABASE {database_q}"),
            &role_q,
        );
    }

    let empty = crate::catalog::ObservedSchema::default();
    for (&schema, owner) in &owner_after {
        if owner == role {
            // The role's own schema: its privileges there are its own business.
            continue;
        }
        let access = wanted.get(schema).copied();
        let observed_schema = observed
            .schemas
            .iter()
            .find(|s| s.name == schema)
            .unwrap_or(&empty);
        let schema_q = quote_ident(schema);
        let want: BTreeSet<&str> = access
            .map(|a| schema_privileges(a).iter().copied().collect())
            .unwrap_or_default();
        let have: BTreeSet<&str> = observed_schema
            .privileges
            .iter()
            .map(String::as_str)
            .collect();
        grant_and_revoke(
            &mut statements,
            &want,
            &have,
            &format!("ON SCHEMA {schema_q}"),
            &role_q,
        );
        relations(
            &mut statements,
            access.map(table_privileges).unwrap_or_default(),
            &observed_schema.tables,
            &format!("ON ALL TABLES IN SCHEMA {schema_q}"),
            &role_q,
        );
        relations(
            &mut statements,
            access.map(sequence_privileges).unwrap_or_default(),
            &observed_schema.sequences,
            &format!("ON ALL SEQUENCES IN SCHEMA {schema_q}"),
            &role_q,
        );
    }

    // Default privileges: for objects the schema's owner creates later.
    type Key = (String, Option<String>, DefaultObjects);
    let mut want_defaults: BTreeMap<Key, BTreeSet<&str>> = BTreeMap::new();
    for (&schema, &access) in &wanted {
        let Some(creator) = owner_after.get(schema) else {
            continue;
        };
        if creator == role {
            continue;
        }
        for (objects, privileges) in [
            (DefaultObjects::Tables, table_privileges(access)),
            (DefaultObjects::Sequences, sequence_privileges(access)),
        ] {
            want_defaults.insert(
                (creator.clone(), Some(schema.to_owned()), objects),
                privileges.iter().copied().collect(),
            );
        }
    }
    let have_defaults: BTreeMap<Key, BTreeSet<&str>> = observed
        .default_privileges
        .iter()
        .map(|entry| {
            (
                (entry.creator.clone(), entry.schema.clone(), entry.objects),
                entry.privileges.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    let keys: BTreeSet<&Key> = want_defaults.keys().chain(have_defaults.keys()).collect();
    let none = BTreeSet::new();
    for key in keys {
        let (creator, schema, objects) = key;
        let want = want_defaults.get(key).unwrap_or(&none);
        let have = have_defaults.get(key).unwrap_or(&none);
        let scope = match schema {
            Some(schema) => format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {}",
                quote_ident(creator),
                quote_ident(schema)
            ),
            None => format!("ALTER DEFAULT PRIVILEGES FOR ROLE {}", quote_ident(creator)),
        };
        let missing: Vec<&str> = want.difference(have).copied().collect();
        let extra: Vec<&str> = have.difference(want).copied().collect();
        if !missing.is_empty() {
            statements.push(format!(
                "{scope} GRANT {} ON {} TO {role_q}",
                missing.join(", "),
                objects.keyword()
            ));
        }
        if !extra.is_empty() {
            statements.push(format!(
                "{scope} REVOKE {} ON {} FROM {role_q}",
                extra.join(", "),
                objects.keyword()
            ));
        }
    }

    Ok(GrantPlan {
        database: observed.database.clone(),
        statements,
    })
}

fn grant_and_revoke(
    statements: &mut Vec<String>,
    want: &BTreeSet<&str>,
    have: &BTreeSet<&str>,
    on: &str,
    role_q: &str,
) {
    let missing: Vec<&str> = want.difference(have).copied().collect();
    let extra: Vec<&str> = have.difference(want).copied().collect();
    if !missing.is_empty() {
        statements.push(format!("GRANT {} {on} TO {role_q}", missing.join(", ")));
    }
    if !extra.is_empty() {
        statements.push(format!("REVOKE {} {on} FROM {role_q}", extra.join(", ")));
    }
}

/// Grants a privilege on all relations when some lack it; revokes one the spec does not want
/// when any has it.
fn relations(
    statements: &mut Vec<String>,
    want: &[&str],
    have: &RelationPrivileges,
    on: &str,
    role_q: &str,
) {
    let count = |privilege: &str| have.granted.get(privilege).copied().unwrap_or(0);
    let missing: Vec<&str> = want
        .iter()
        .copied()
        .filter(|privilege| count(privilege) < have.total)
        .collect();
    let extra: Vec<&str> = have
        .granted
        .iter()
        .filter(|(privilege, count)| **count > 0 && !want.contains(&privilege.as_str()))
        .map(|(privilege, _)| privilege.as_str())
        .collect();
    if !missing.is_empty() {
        statements.push(format!("GRANT {} {on} TO {role_q}", missing.join(", ")));
    }
    if !extra.is_empty() {
        statements.push(format!("REVOKE {} {on} FROM {role_q}", extra.join(", ")));
    }
}

/// Plans dropping `role` per `deletion`. `superuser` receives databases when owned objects
/// are dropped; `maintenance_database` is where shared objects are handled.
pub fn plan_drop(
    role: &ObservedRole,
    deletion: &DeletionSpec,
    superuser: &str,
    maintenance_database: &str,
) -> Result<DropPlan, Refusal> {
    let role_q = quote_ident(&role.name);
    let reassign = deletion.reassign_owned_to.as_deref();
    if role.owns_objects && reassign.is_none() && !deletion.drop_owned_objects {
        let databases = if role.owned_databases.is_empty() {
            String::new()
        } else {
            format!(
                " (including the databases {})",
                role.owned_databases
                    .iter()
                    .map(|d| format!("{d:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Refusal::DropBlocked(format!(
            "role {:?} still owns objects{databases}: set spec.deletion.reassignOwnedTo to a role that should receive them, or spec.deletion.dropOwnedObjects: true to drop them (databases are then given to {superuser:?})",
            role.name
        )));
    }
    let mut prepare = vec![format!("ALTER ROLE {role_q} WITH NOLOGIN")];
    if deletion.drop_owned_objects {
        for database in &role.owned_databases {
            prepare.push(format!(
                "ALTER DATABASE {} OWNER TO {}",
                quote_ident(database),
                quote_ident(superuser)
            ));
        }
    }
    let mut databases = role.dependent_databases.clone();
    databases.insert(maintenance_database.to_owned());
    let per_database = databases
        .into_iter()
        .map(|database| {
            let mut statements = Vec::new();
            if let Some(target) = reassign {
                statements.push(format!(
                    "REASSIGN OWNED BY {role_q} TO {}",
                    quote_ident(target)
                ));
            }
            // After a reassign (or when the role owns nothing) this only revokes privileges;
            // with dropOwnedObjects it also drops what the role owns here.
            statements.push(format!("DROP OWNED BY {role_q}"));
            (database, statements)
        })
        .collect();
    Ok(DropPlan {
        prepare,
        terminate_sessions: true,
        per_database,
        drop_role: format!("DROP ROLE {role_q}"),
    })
}

#[cfg(test)]
mod tests {
    //! Fixture-driven: every `tests/fixtures/plans/*.yaml` is one case.

    use super::*;
    use serde::Deserialize;
    use tusk_api::user::PostgresUserStatus;

    /// The verifier fixtures use for `password: set`.
    const VERIFIER: &str = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$c3RvcmVk:c2VydmVy";

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Fixture {
        description: String,
        #[serde(default)]
        role: Option<RoleCase>,
        #[serde(default)]
        grants: Option<GrantCase>,
        #[serde(default, rename = "drop")]
        drop_case: Option<DropCase>,
        #[serde(default)]
        expected: Vec<String>,
        #[serde(default)]
        expected_create_databases: Vec<String>,
        #[serde(default)]
        expected_error: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct RoleCase {
        user: serde_json::Value,
        #[serde(default)]
        role_oid: Option<i64>,
        #[serde(default)]
        observed: Option<ObservedRole>,
        #[serde(default)]
        databases: Vec<ObservedDatabase>,
        #[serde(default)]
        set_password: bool,
        #[serde(default)]
        expected_changes: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct GrantCase {
        role: String,
        #[serde(default)]
        access: Option<Access>,
        #[serde(default)]
        schemas: Vec<String>,
        observed: ObservedGrants,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct DropCase {
        role: ObservedRole,
        deletion: DeletionSpec,
    }

    fn user_from(value: &serde_json::Value, role_oid: Option<i64>) -> PostgresUser {
        let mut user: PostgresUser = serde_json::from_value(value.clone()).unwrap();
        user.metadata.uid = Some("0000-uid".into());
        user.status = role_oid.map(|oid| PostgresUserStatus {
            role_oid: Some(oid),
            ..Default::default()
        });
        user
    }

    /// Planned statements, planned CREATE DATABASE statements, changes.
    type Planned = (Vec<String>, Vec<String>, Vec<Change>);

    fn run(fixture: &Fixture) -> Result<Planned, String> {
        if let Some(case) = &fixture.role {
            let user = user_from(&case.user, case.role_oid);
            let desired = DesiredRole::from_user(&user).map_err(|e| e.to_string())?;
            let databases = case
                .databases
                .iter()
                .map(|d| (d.name.clone(), d.clone()))
                .collect();
            let password = if case.set_password {
                PasswordAction::Set(VERIFIER.to_owned())
            } else {
                PasswordAction::Keep
            };
            let plan = plan_role(&desired, case.observed.as_ref(), &databases, &password)
                .map_err(|e| e.to_string())?;
            return Ok((plan.role_statements, plan.create_databases, plan.changes));
        }
        if let Some(case) = &fixture.grants {
            let desired = case.access.map(|access| DesiredGrant {
                access,
                schemas: case.schemas.clone(),
            });
            let plan = plan_grants(&case.role, desired.as_ref(), &case.observed)
                .map_err(|e| e.to_string())?;
            return Ok((plan.statements, Vec::new(), Vec::new()));
        }
        if let Some(case) = &fixture.drop_case {
            let plan = plan_drop(&case.role, &case.deletion, "postgres", "postgres")
                .map_err(|e| e.to_string())?;
            let mut statements = plan.prepare;
            for (database, sql) in plan.per_database {
                statements.extend(sql.into_iter().map(|s| format!("[{database}] {s}")));
            }
            statements.push(plan.drop_role);
            return Ok((statements, Vec::new(), Vec::new()));
        }
        panic!("{}: no role, grants or drop case", fixture.description);
    }

    #[test]
    fn every_fixture_plans_exactly_the_expected_sql() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plans");
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 10, "fixtures missing in {}", dir.display());
        let mut failures = Vec::new();
        for path in &paths {
            let text = std::fs::read_to_string(path).unwrap();
            let fixture: Fixture = serde_yaml_ng::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match (run(&fixture), &fixture.expected_error) {
                (Ok((statements, creates, changes)), None) => {
                    if statements != fixture.expected {
                        failures.push(format!(
                            "{name} ({}):\n  expected {:#?}\n  planned  {statements:#?}",
                            fixture.description, fixture.expected
                        ));
                    }
                    if creates != fixture.expected_create_databases {
                        failures.push(format!(
                            "{name}: expected databases {:#?}, planned {creates:#?}",
                            fixture.expected_create_databases
                        ));
                    }
                    if let Some(expected) = fixture
                        .role
                        .as_ref()
                        .and_then(|r| r.expected_changes.as_ref())
                    {
                        let planned: Vec<String> =
                            changes.iter().map(|c| format!("{c:?}")).collect();
                        if &planned != expected {
                            failures.push(format!(
                                "{name}: expected changes {expected:?}, planned {planned:?}"
                            ));
                        }
                    }
                }
                (Err(error), Some(expected)) if error.contains(expected.as_str()) => {}
                (outcome, expected) => failures.push(format!(
                    "{name} ({}): expected error {expected:?}, got {outcome:?}",
                    fixture.description
                )),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    #[test]
    fn marker_must_be_a_whole_word() {
        assert!(has_marker("tusk.dev/owner=abc (x)", "tusk.dev/owner=abc"));
        assert!(!has_marker("tusk.dev/owner=abcd", "tusk.dev/owner=abc"));
        assert!(!has_marker("created by hand", "tusk.dev/owner=abc"));
    }

    #[test]
    fn password_action_debug_hides_the_verifier() {
        let text = format!("{:?}", PasswordAction::Set(VERIFIER.to_owned()));
        assert!(!text.contains("SCRAM"), "{text}");
    }
}
