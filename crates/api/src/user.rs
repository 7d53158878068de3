//! The `PostgresUser` resource: one role inside a Cluster's PostgreSQL, with the databases it
//! owns, its grants, its password and what happens to it on deletion.
//!
//! ```text
//!   PostgresUser ──(Cluster Ready)──► role, databases, grants in the Cluster's primary
//!        └──────────────────────────► Secret <cluster>-<user>-credentials (owned)
//! ```
//!
//! The role name is an identifier the controller always quotes, so it may hold any character
//! PostgreSQL accepts in a quoted identifier. What it may not be is one of the roles PostgreSQL
//! or tusk itself depends on: see [`RESERVED_ROLE_NAMES`] and [`is_reserved_role_name`], from
//! which the CRD's CEL rules are generated.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use kube::core::Rule;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::common::{Access, ClusterReference, SecretKeyReference, default_schemas, default_true};
use crate::condition::Condition;

/// The superuser role of every Cluster (Patroni's superuser).
pub const SUPERUSER_ROLE: &str = "postgres";
/// The role replicas and Patroni use for streaming replication.
pub const REPLICATION_ROLE: &str = "replicator";
/// The role postgres_exporter connects as.
pub const MONITORING_ROLE: &str = "tusk_monitor";
/// The role Patroni runs pg_rewind as after a failover.
pub const REWIND_ROLE: &str = "tusk_rewind";

/// Role names a PostgresUser may not manage: the superuser, the names PostgreSQL itself refuses
/// (`public`, `none`) and the roles tusk creates in every Cluster. Names starting with
/// [`RESERVED_ROLE_PREFIX`] are reserved too.
pub const RESERVED_ROLE_NAMES: &[&str] = &[
    SUPERUSER_ROLE,
    "public",
    "none",
    REPLICATION_ROLE,
    MONITORING_ROLE,
    REWIND_ROLE,
];

/// PostgreSQL reserves role names starting with `pg_` for its predefined roles.
pub const RESERVED_ROLE_PREFIX: &str = "pg_";

/// Longest role or database name PostgreSQL keeps, in bytes (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Databases a PostgresUser may not create or own: they exist in every Cluster and belong to
/// the superuser.
pub const RESERVED_DATABASE_NAMES: &[&str] = &["postgres", "template0", "template1"];

/// Longest value of the rotation annotation recorded as is in
/// `status.passwordRotationRequest`; longer values are recorded by hash (see
/// [`rotation_request_marker`]).
pub const MAX_ROTATION_REQUEST_LENGTH: usize = 128;

/// A role inside a Cluster's PostgreSQL, in the Cluster's namespace.
///
/// The role gets LOGIN, CREATEDB, CREATEROLE, INHERIT and a connection limit as asked, never
/// SUPERUSER, REPLICATION or BYPASSRLS. It may own databases (created if absent) and gets
/// grants per database. Its password is generated (or taken from a Secret) and written, with
/// the connection details, to the Secret `<cluster>-<metadata.name>-credentials`.
// Every `printcolumn(...)` repeats `type_ = ...`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "PostgresUser",
    plural = "postgresusers",
    namespaced,
    status = "PostgresUserStatus",
    category = "tusk",
    shortname = "pguser",
    doc = "A PostgreSQL role in a Cluster, with the databases it owns, its grants and its \
           password. Never a superuser. Its credentials are written to the Secret \
           <cluster>-<name>-credentials.",
    validation = metadata_name_length_rule(),
    validation = metadata_name_reserved_rule(),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The Cluster the role lives in"
    ),
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".status.roleName",
        description = "The PostgreSQL role managed"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the role matches the spec"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.roleName) == has(oldSelf.roleName) && (!has(self.roleName) || self.roleName == oldSelf.roleName)",
        "message": "spec.roleName cannot be changed: create a new PostgresUser for the new role name (and delete this one)"
    },
    {
        "rule": "self.cluster == oldSelf.cluster",
        "message": "spec.cluster cannot be changed: create a new PostgresUser in the other Cluster (and delete this one)"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct PostgresUserSpec {
    /// The Cluster, in this namespace, whose PostgreSQL holds the role. Cannot be changed.
    pub cluster: ClusterReference,

    /// Name of the PostgreSQL role. Default: `metadata.name`. Any characters PostgreSQL allows
    /// in a quoted identifier (the name is always quoted, so `App-User` stays mixed case), 1 to
    /// 63 bytes. Refused: `postgres`, `public`, `none`, names starting with `pg_`, and tusk's
    /// own roles `replicator`, `tusk_monitor` and `tusk_rewind`. Cannot be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "role_name_schema")]
    pub role_name: Option<String>,

    /// Whether the role may log in. Default true.
    #[serde(default = "default_true")]
    pub login: bool,

    /// Whether the role may create databases. Default false.
    #[serde(default)]
    pub createdb: bool,

    /// Whether the role may create, alter and drop other roles. Default false. On PostgreSQL 15
    /// this reaches every non-superuser role in the Cluster (16 and later limit it to roles it
    /// created); grant it only to trusted applications.
    #[serde(default)]
    pub createrole: bool,

    /// Whether the role inherits the privileges of roles it is a member of. Default true.
    #[serde(default = "default_true")]
    pub inherit: bool,

    /// How many concurrent connections the role may open: -1 (the default) for no limit, or 0
    /// to 10000.
    #[serde(default = "default_connection_limit")]
    #[schemars(range(min = -1, max = 10000))]
    pub connection_limit: i32,

    /// The time after which the role's password no longer works (PostgreSQL `VALID UNTIL`), as
    /// RFC 3339 with a zone, for example `2027-01-01T00:00:00Z`. Default: forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::rfc3339")]
    pub valid_until: Option<String>,

    /// Databases this role owns, created if absent (never dropped by tusk, not even when the
    /// PostgresUser is deleted). An existing database is adopted only if this role already owns
    /// it; one owned by another role is refused. At most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"]
    ))]
    pub databases: Vec<UserDatabase>,

    /// Privileges in databases, one entry per database. Privileges the spec no longer lists are
    /// revoked. The databases must exist (listed under `databases` here or in another
    /// PostgresUser, or created otherwise). At most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["database"]
    ))]
    pub grants: Vec<Grant>,

    /// Where the password comes from and how often it changes. Default: generated, rotated
    /// only on request.
    #[serde(default)]
    pub password: PasswordSpec,

    /// What happens to the role when this PostgresUser is deleted. Default: the role is kept.
    #[serde(default)]
    pub deletion: DeletionSpec,
}

fn default_connection_limit() -> i32 {
    -1
}

/// A database the role owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDatabase {
    /// Name of the database, 1 to 63 bytes, any characters but NUL (always quoted). Not
    /// `postgres`, `template0` or `template1`.
    #[schemars(schema_with = "database_name_schema")]
    pub name: String,

    /// Character encoding the database is created with. Default `UTF8`. Only used at creation.
    #[serde(default = "default_encoding")]
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub encoding: String,

    /// Locale (collation and character classes) the database is created with, for example
    /// `en_US.UTF-8`. Default: the Cluster's locale. Only used at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.@-]+$"))]
    pub locale: Option<String>,

    /// Template database to copy. Default `template1`, or `template0` when `locale` is set or
    /// `encoding` is not UTF8 (PostgreSQL only copies template1 with its own encoding and
    /// locale). Only used at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "identifier_schema")]
    pub template: Option<String>,
}

fn default_encoding() -> String {
    "UTF8".to_owned()
}

/// Privileges of the role in one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The database, 1 to 63 bytes.
    #[schemars(schema_with = "identifier_schema")]
    pub database: String,

    /// What the role may do there: Owner (owns the database and the schemas, may change
    /// their structure), ReadWrite (reads and writes data, no DDL) or ReadOnly (reads data).
    /// Read and write privileges cover tables and sequences created later too.
    pub access: Access,

    /// The schemas the access applies to. Default `["public"]`. At most 32, each 1 to 63 bytes.
    #[serde(default = "default_schemas")]
    #[schemars(schema_with = "schema_list_schema")]
    pub schemas: Vec<String>,
}

/// Where the role's password comes from and when it changes.
///
/// By default tusk generates a password (32+ characters from the operating system's secure
/// random generator) and keeps it until a rotation. To rotate now, set the annotation
/// `tusk.dev/rotate-password` on the PostgresUser to a new value (a time stamp, say): each new
/// value triggers one rotation, and the value handled last is shown in
/// `status.passwordRotationRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.secret) && has(self.rotationInterval))",
        "message": "spec.password.rotationInterval only applies to generated passwords: remove it, or remove spec.password.secret and let tusk generate the password"
    }
]))]
pub struct PasswordSpec {
    /// Take the password from this key of a Secret in this namespace instead of generating
    /// one. tusk re-applies it whenever the Secret changes, and never writes to this Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretKeyReference>,

    /// Generate a new password this often, as a duration such as `720h` (30 days); at least
    /// `1h`. Default: only on request (annotation `tusk.dev/rotate-password`). Not allowed
    /// together with `secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "rotation_interval_schema")]
    pub rotation_interval: Option<String>,
}

/// What happens to the role when its PostgresUser is deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.reassignOwnedTo) && has(self.dropOwnedObjects) && self.dropOwnedObjects)",
        "message": "spec.deletion: set either reassignOwnedTo (keep the role's objects under another role) or dropOwnedObjects (drop them), not both"
    },
    {
        "rule": "(has(self.policy) && self.policy == 'Drop') || (!has(self.reassignOwnedTo) && !(has(self.dropOwnedObjects) && self.dropOwnedObjects))",
        "message": "spec.deletion.reassignOwnedTo and dropOwnedObjects only apply when spec.deletion.policy is Drop: set policy: Drop or remove them"
    }
]))]
pub struct DeletionSpec {
    /// Retain (the default): the role, its objects and its databases stay when the
    /// PostgresUser is deleted. Drop: the role's sessions are ended, its privileges revoked and
    /// the role dropped; if it still owns objects, `reassignOwnedTo` or `dropOwnedObjects`
    /// says what happens to them, and with neither the drop waits (condition reason
    /// DropBlocked) until one is set.
    #[serde(default)]
    pub policy: DeletionPolicy,

    /// With policy Drop: the role that receives everything the dropped role owns, in every
    /// database (PostgreSQL `REASSIGN OWNED`), its databases included. 1 to 63 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "identifier_schema")]
    pub reassign_owned_to: Option<String>,

    /// With policy Drop: drop the objects the role owns in every database (PostgreSQL `DROP
    /// OWNED`). Destroys data. Databases it owns are never dropped; they are given to the
    /// superuser. Default false.
    #[serde(default)]
    pub drop_owned_objects: bool,
}

/// What happens to a role when its PostgresUser is deleted: Retain (keep the role, the default)
/// or Drop (drop it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Drop the role.
    Drop,
    /// Keep the role and everything it owns.
    #[default]
    Retain,
}

/// What the PostgresUser controller observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresUserStatus {
    /// `Ready`: the role, its databases, grants and password match the spec. The reason says
    /// what is wrong or awaited when it is not (see the reasons in the PostgresUser docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The PostgreSQL role this object manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub role_name: Option<String>,

    /// The role's OID, recorded when tusk created it. A role of the same name with another OID
    /// (dropped and recreated behind tusk's back, or made by someone else) is not taken over:
    /// the PostgresUser reports RoleOwnedElsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_oid: Option<i64>,

    /// The Secret holding the role's credentials (`<cluster>-<name>-credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub secret_name: Option<String>,

    /// When the password last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_password_rotation: Option<Time>,

    /// The last value of the `tusk.dev/rotate-password` annotation that was acted on (values
    /// longer than 128 characters are recorded by hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub password_rotation_request: Option<String>,

    /// The databases of `spec.databases` that exist and are owned by the role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 63)))]
    pub databases: Vec<String>,
}

/// Reasons the PostgresUser controller writes into the `Ready` condition (also metric labels).
pub mod reasons {
    /// The referenced Cluster does not exist.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// The Cluster exists but is not Ready; the user waits.
    pub const CLUSTER_NOT_READY: &str = "ClusterNotReady";
    /// Role, databases, grants and password match the spec.
    pub const APPLIED: &str = "Applied";
    /// A role of that name exists and was not created for this object.
    pub const ROLE_OWNED_ELSEWHERE: &str = "RoleOwnedElsewhere";
    /// A database of `spec.databases` exists and is owned by another role.
    pub const DATABASE_OWNED_ELSEWHERE: &str = "DatabaseOwnedElsewhere";
    /// A database named in `spec.grants` does not exist (yet).
    pub const DATABASE_NOT_FOUND: &str = "DatabaseNotFound";
    /// The role name is reserved (should the CEL rule have been bypassed).
    pub const RESERVED_ROLE_NAME: &str = "ReservedRoleName";
    /// The Secret named in `spec.password.secret` or its key is missing.
    pub const PASSWORD_SECRET_NOT_FOUND: &str = "PasswordSecretNotFound";
    /// The password was just changed (interval or annotation).
    pub const PASSWORD_ROTATED: &str = "PasswordRotated";
    /// The spec cannot be applied as written; the message says what to change.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Deletion with policy Drop cannot proceed (the role owns objects and neither
    /// `reassignOwnedTo` nor `dropOwnedObjects` is set, or PostgreSQL refused); the message
    /// says why.
    pub const DROP_BLOCKED: &str = "DropBlocked";
}

/// Why a name cannot be a role tusk manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleNameProblem {
    Empty,
    /// Longer than [`MAX_IDENTIFIER_BYTES`] bytes: PostgreSQL would silently truncate it.
    TooLong,
    /// Contains a NUL character, which no PostgreSQL identifier can hold.
    ContainsNul,
    /// In [`RESERVED_ROLE_NAMES`] or starting with [`RESERVED_ROLE_PREFIX`].
    Reserved,
}

impl RoleNameProblem {
    /// A message for a person, saying what to change.
    pub fn message(self) -> &'static str {
        match self {
            RoleNameProblem::Empty => "the role name is empty: set spec.roleName",
            RoleNameProblem::TooLong => {
                "the role name is longer than 63 bytes, which PostgreSQL would truncate: set a shorter spec.roleName"
            }
            RoleNameProblem::ContainsNul => {
                "the role name contains a NUL character, which PostgreSQL does not allow: set another spec.roleName"
            }
            RoleNameProblem::Reserved => {
                "the role name is reserved (postgres, public, none, pg_*, and tusk's roles replicator, tusk_monitor, tusk_rewind): set another spec.roleName"
            }
        }
    }

    /// The condition reason to report.
    pub fn reason(self) -> &'static str {
        match self {
            RoleNameProblem::Reserved => reasons::RESERVED_ROLE_NAME,
            _ => reasons::INVALID_SPEC,
        }
    }
}

/// Whether `name` is a role a PostgresUser may not manage. Case matters, as it does for quoted
/// identifiers: `Postgres` is not reserved.
pub fn is_reserved_role_name(name: &str) -> bool {
    RESERVED_ROLE_NAMES.contains(&name) || name.starts_with(RESERVED_ROLE_PREFIX)
}

/// Checks that `name` can be a role tusk manages: 1 to 63 bytes, no NUL, not reserved. Any
/// other character is fine, because the controller always quotes the name.
pub fn check_role_name(name: &str) -> Result<(), RoleNameProblem> {
    if name.is_empty() {
        Err(RoleNameProblem::Empty)
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        Err(RoleNameProblem::TooLong)
    } else if name.contains('\0') {
        Err(RoleNameProblem::ContainsNul)
    } else if is_reserved_role_name(name) {
        Err(RoleNameProblem::Reserved)
    } else {
        Ok(())
    }
}

/// The CEL expression that is true when the string `subject` is not a reserved role name;
/// generated from [`RESERVED_ROLE_NAMES`] so the CRD and [`is_reserved_role_name`] agree.
fn not_reserved_cel(subject: &str) -> String {
    let names = RESERVED_ROLE_NAMES
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("!({subject} in [{names}]) && !{subject}.startsWith('{RESERVED_ROLE_PREFIX}')")
}

const RESERVED_ROLE_MESSAGE: &str = "is a reserved role name (postgres, public, none, names starting with pg_, and tusk's own roles replicator, tusk_monitor and tusk_rewind)";

fn metadata_name_length_rule() -> Rule {
    Rule::new("has(self.spec.roleName) || self.metadata.name.size() <= 63").message(
        "a PostgresUser whose name is longer than 63 characters needs spec.roleName: PostgreSQL role names are at most 63 bytes",
    )
}

fn metadata_name_reserved_rule() -> Rule {
    let message =
        format!("metadata.name {RESERVED_ROLE_MESSAGE}: set spec.roleName to another name");
    Rule::new(format!(
        "has(self.spec.roleName) || ({})",
        not_reserved_cel("self.metadata.name")
    ))
    .message(message.as_str())
}

/// CEL: an identifier of at most 63 bytes. `size()` counts characters, the schema's maxLength
/// too, so the byte limit needs its own rule.
const IDENTIFIER_BYTES_RULE: &str = "bytes(self).size() <= 63";

/// No NUL anywhere; everything else PostgreSQL takes in a quoted identifier is allowed.
const NO_NUL_PATTERN: &str = r"^[^\x00]+$";

fn role_name_schema(_: &mut SchemaGenerator) -> Schema {
    let message = format!("spec.roleName {RESERVED_ROLE_MESSAGE}: choose another name");
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "pattern": NO_NUL_PATTERN,
        "x-kubernetes-validations": [
            {
                "rule": not_reserved_cel("self"),
                "message": message,
            },
            {
                "rule": IDENTIFIER_BYTES_RULE,
                "message": "spec.roleName is longer than 63 bytes (PostgreSQL's limit; letters outside ASCII take 2 to 4 bytes): choose a shorter name",
            },
        ],
    })
}

pub(crate) fn identifier_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 63,
        "pattern": NO_NUL_PATTERN,
        "x-kubernetes-validations": [
            {
                "rule": IDENTIFIER_BYTES_RULE,
                "message": "names of roles, databases and schemas are at most 63 bytes (PostgreSQL's limit; letters outside ASCII take 2 to 4 bytes): choose a shorter name",
            },
        ],
    })
}

fn database_name_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = identifier_schema(generator);
    let reserved = RESERVED_DATABASE_NAMES
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(rules) = schema
        .get_mut("x-kubernetes-validations")
        .and_then(|rules| rules.as_array_mut())
    {
        rules.push(serde_json::json!({
            "rule": format!("!(self in [{reserved}])"),
            "message": "spec.databases cannot include postgres, template0 or template1: they belong to the superuser; grant access to them under spec.grants instead",
        }));
    }
    schema
}

pub(crate) fn schema_list_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = identifier_schema(generator);
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 32,
        "x-kubernetes-list-type": "set",
        "default": default_schemas(),
        "items": item,
    })
}

fn rotation_interval_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "pattern": crate::schema::DURATION_PATTERN,
        "x-kubernetes-validations": [
            {
                "rule": "duration(self) >= duration('1h')",
                "message": "spec.password.rotationInterval must be at least 1h (for example 720h for 30 days)",
            },
        ],
    })
}

impl PostgresUserSpec {
    /// The role this spec manages: `roleName`, or the object's `metadata.name`.
    pub fn role_name<'a>(&'a self, metadata_name: &'a str) -> &'a str {
        self.role_name.as_deref().unwrap_or(metadata_name)
    }
}

impl PostgresUser {
    /// The role this object manages; `None` only for an object without a name (never one read
    /// from the API server).
    pub fn role_name(&self) -> Option<&str> {
        match &self.spec.role_name {
            Some(name) => Some(name),
            None => self.metadata.name.as_deref(),
        }
    }

    /// A password rotation asked for through the `tusk.dev/rotate-password` annotation and not
    /// yet acted on: the marker to record in `status.passwordRotationRequest` once it is.
    pub fn pending_rotation_request(&self) -> Option<String> {
        let value = self
            .metadata
            .annotations
            .as_ref()?
            .get(crate::labels::ROTATE_PASSWORD_ANNOTATION)?;
        let marker = rotation_request_marker(value);
        let handled = self
            .status
            .as_ref()
            .and_then(|s| s.password_rotation_request.as_deref());
        (handled != Some(marker.as_str())).then_some(marker)
    }
}

/// What `status.passwordRotationRequest` records for an annotation value: the value itself
/// when it is at most [`MAX_ROTATION_REQUEST_LENGTH`] characters, else `hash:` and a stable
/// hash of it.
pub fn rotation_request_marker(value: &str) -> String {
    if value.chars().count() <= MAX_ROTATION_REQUEST_LENGTH {
        value.to_owned()
    } else {
        format!("hash:{:08x}", crate::names::fnv1a32(value.as_bytes()))
    }
}

impl PasswordSpec {
    /// Whether tusk generates the password (no `secret` given).
    pub fn is_generated(&self) -> bool {
        self.secret.is_none()
    }

    /// The rotation interval, parsed; `None` when unset or not a valid duration (which the
    /// schema refuses).
    pub fn rotation_interval(&self) -> Option<Duration> {
        parse_duration(self.rotation_interval.as_deref()?)
    }
}

impl DeletionSpec {
    /// Whether deleting the PostgresUser drops the role.
    pub fn drops_role(&self) -> bool {
        self.policy == DeletionPolicy::Drop
    }
}

impl UserDatabase {
    /// The template to create the database from: `template`, else `template0` when `locale`
    /// is set or the encoding is not UTF8, else `template1`.
    pub fn template(&self) -> &str {
        match &self.template {
            Some(template) => template,
            None if self.locale.is_some() || !self.encoding.eq_ignore_ascii_case("UTF8") => {
                "template0"
            }
            None => "template1",
        }
    }
}

/// Parses a duration as Go and Kubernetes write it (`720h`, `1h30m`, `1.5h`, `90s`, `500ms`),
/// the format [`crate::schema::DURATION_PATTERN`] admits. `None` for anything else.
pub fn parse_duration(text: &str) -> Option<Duration> {
    const UNITS: &[(&str, f64)] = &[
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let (_, scale) = UNITS.iter().find(|(name, _)| *name == unit)?;
        seconds += value * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kube::CustomResourceExt;

    /// Runs the CRD's CEL rules (with schema defaults applied, as the API server does) and
    /// returns the messages of the rules that failed.
    pub(crate) fn cel_errors<K: CustomResourceExt>(object: &str, old: Option<&str>) -> Vec<String> {
        let crd = K::crd();
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let object: serde_json::Value = serde_yaml_ng::from_str(object).unwrap();
        let old: Option<serde_json::Value> = old.map(|o| serde_yaml_ng::from_str(o).unwrap());
        match kube_cel::Validator::new().validate(&schema, &object, old.as_ref()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
        }
    }

    fn user(yaml: &str) -> PostgresUser {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const MINIMAL: &str = "apiVersion: tusk.dev/v1alpha1
kind: PostgresUser
metadata: {name: app, namespace: db}
spec:
  cluster: {name: db}
";

    #[test]
    fn minimal_user_gets_safe_defaults() {
        let user = user(MINIMAL);
        let spec = &user.spec;
        assert_eq!(spec.role_name("app"), "app");
        assert_eq!(user.role_name(), Some("app"));
        assert!(spec.login);
        assert!(!spec.createdb);
        assert!(!spec.createrole);
        assert!(spec.inherit);
        assert_eq!(spec.connection_limit, -1);
        assert!(spec.password.is_generated());
        assert_eq!(spec.password.rotation_interval(), None);
        assert_eq!(spec.deletion.policy, DeletionPolicy::Retain);
        assert!(!spec.deletion.drops_role());
        assert!(!spec.deletion.drop_owned_objects);
        assert!(spec.databases.is_empty() && spec.grants.is_empty());
    }

    #[test]
    fn role_name_overrides_metadata_name() {
        let user = user(&format!("{MINIMAL}  roleName: \"App-User\"\n"));
        assert_eq!(user.spec.role_name("app"), "App-User");
        assert_eq!(user.role_name(), Some("App-User"));
    }

    #[test]
    fn grant_schemas_default_to_public_and_database_defaults_apply() {
        let user = user(&format!(
            "{MINIMAL}  databases:\n  - name: shop\n  - name: eu\n    locale: de_DE.UTF-8\n  grants:\n  - database: shop\n    access: ReadOnly\n"
        ));
        assert_eq!(user.spec.grants[0].schemas, vec!["public"]);
        assert_eq!(user.spec.grants[0].access, Access::ReadOnly);
        assert_eq!(user.spec.databases[0].encoding, "UTF8");
        assert_eq!(user.spec.databases[0].template(), "template1");
        assert_eq!(user.spec.databases[1].template(), "template0");
    }

    #[test]
    fn reserved_names_are_refused_and_others_allowed() {
        for name in [
            "postgres",
            "public",
            "none",
            "replicator",
            "tusk_monitor",
            "tusk_rewind",
            "pg_monitor",
            "pg_",
        ] {
            assert!(is_reserved_role_name(name), "{name}");
            assert_eq!(
                check_role_name(name),
                Err(RoleNameProblem::Reserved),
                "{name}"
            );
        }
        for name in [
            "app",
            "Postgres",
            "PG_x",
            "pgx",
            "a\"b",
            "x; DROP ROLE postgres",
            "$$",
            "ünï",
            "back\\slash",
        ] {
            assert!(!is_reserved_role_name(name), "{name}");
            assert_eq!(check_role_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn role_name_limits_are_in_bytes() {
        assert_eq!(check_role_name(""), Err(RoleNameProblem::Empty));
        assert_eq!(check_role_name(&"a".repeat(63)), Ok(()));
        assert_eq!(
            check_role_name(&"a".repeat(64)),
            Err(RoleNameProblem::TooLong)
        );
        // 32 two-byte characters: 32 characters, 64 bytes
        assert_eq!(
            check_role_name(&"é".repeat(32)),
            Err(RoleNameProblem::TooLong)
        );
        assert_eq!(check_role_name("a\0b"), Err(RoleNameProblem::ContainsNul));
        assert_eq!(
            RoleNameProblem::Reserved.reason(),
            reasons::RESERVED_ROLE_NAME
        );
    }

    #[test]
    fn cel_rules_name_every_reserved_role() {
        let crd = serde_json::to_string(&PostgresUser::crd()).unwrap();
        let crd: serde_json::Value = serde_json::from_str(&crd).unwrap();
        let mut rules = Vec::new();
        collect_rules(&crd, &mut rules);
        let reserved_rules: Vec<_> = rules
            .iter()
            .filter(|rule| rule.contains(&format!("startsWith('{RESERVED_ROLE_PREFIX}')")))
            .collect();
        // one for spec.roleName, one for metadata.name when roleName is unset
        assert_eq!(reserved_rules.len(), 2, "{rules:?}");
        for rule in reserved_rules {
            for name in RESERVED_ROLE_NAMES {
                assert!(
                    rule.contains(&format!("'{name}'")),
                    "{name} missing from {rule}"
                );
            }
        }
    }

    fn collect_rules(value: &serde_json::Value, rules: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(rule) = map.get("rule").and_then(|r| r.as_str()) {
                    rules.push(rule.to_owned());
                }
                map.values().for_each(|v| collect_rules(v, rules));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_rules(v, rules)),
            _ => {}
        }
    }

    #[test]
    fn cel_refuses_reserved_role_names() {
        assert!(cel_errors::<PostgresUser>(MINIMAL, None).is_empty());
        for name in ["postgres", "pg_read_all_data", "tusk_monitor"] {
            let errors =
                cel_errors::<PostgresUser>(&format!("{MINIMAL}  roleName: {name}\n"), None);
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert!(errors[0].contains("reserved"), "{errors:?}");
        }
        let named_postgres = MINIMAL.replace("name: app", "name: postgres");
        let errors = cel_errors::<PostgresUser>(&named_postgres, None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("set spec.roleName"), "{errors:?}");
        let renamed = format!("{named_postgres}  roleName: app\n");
        assert!(cel_errors::<PostgresUser>(&renamed, None).is_empty());
    }

    #[test]
    fn cel_counts_role_name_bytes_and_long_metadata_names() {
        let long = format!("{MINIMAL}  roleName: {}\n", "é".repeat(32));
        let errors = cel_errors::<PostgresUser>(&long, None);
        assert!(errors.iter().any(|e| e.contains("63 bytes")), "{errors:?}");
        let long_name = MINIMAL.replace("name: app", &format!("name: {}", "a".repeat(64)));
        let errors = cel_errors::<PostgresUser>(&long_name, None);
        assert!(
            errors.iter().any(|e| e.contains("needs spec.roleName")),
            "{errors:?}"
        );
    }

    #[test]
    fn cel_checks_password_and_deletion_combinations() {
        let both = format!(
            "{MINIMAL}  password:\n    secret: {{name: s, key: password}}\n    rotationInterval: 720h\n"
        );
        assert!(cel_errors::<PostgresUser>(&both, None)[0].contains("only applies to generated"));
        let short = format!("{MINIMAL}  password:\n    rotationInterval: 30m\n");
        assert!(cel_errors::<PostgresUser>(&short, None)[0].contains("at least 1h"));
        let fine = format!("{MINIMAL}  password:\n    rotationInterval: 720h\n");
        assert!(cel_errors::<PostgresUser>(&fine, None).is_empty());

        let reassign_on_retain = format!("{MINIMAL}  deletion:\n    reassignOwnedTo: owner\n");
        assert!(
            cel_errors::<PostgresUser>(&reassign_on_retain, None)[0].contains("only apply when")
        );
        let both = format!(
            "{MINIMAL}  deletion:\n    policy: Drop\n    reassignOwnedTo: owner\n    dropOwnedObjects: true\n"
        );
        assert!(cel_errors::<PostgresUser>(&both, None)[0].contains("not both"));
        let drop = format!("{MINIMAL}  deletion:\n    policy: Drop\n    reassignOwnedTo: owner\n");
        assert!(cel_errors::<PostgresUser>(&drop, None).is_empty());
    }

    #[test]
    fn cel_refuses_owning_system_databases() {
        let yaml = format!("{MINIMAL}  databases:\n  - name: template1\n");
        assert!(cel_errors::<PostgresUser>(&yaml, None)[0].contains("template1"));
    }

    #[test]
    fn cel_keeps_role_name_and_cluster_fixed() {
        let old = format!("{MINIMAL}  roleName: app\n");
        let new = format!("{MINIMAL}  roleName: app2\n");
        assert!(cel_errors::<PostgresUser>(&new, Some(&old))[0].contains("cannot be changed"));
        let moved = MINIMAL.replace("{name: db}", "{name: other}");
        assert!(cel_errors::<PostgresUser>(&moved, Some(MINIMAL))[0].contains("spec.cluster"));
        let connection_limit = format!("{MINIMAL}  connectionLimit: 10\n");
        assert!(cel_errors::<PostgresUser>(&connection_limit, Some(MINIMAL)).is_empty());
    }

    #[test]
    fn rotation_requests_are_handled_once() {
        let mut user = user(MINIMAL);
        assert_eq!(user.pending_rotation_request(), None);
        user.metadata.annotations = Some(
            [(
                crate::labels::ROTATE_PASSWORD_ANNOTATION.to_owned(),
                "2026-11-22".to_owned(),
            )]
            .into(),
        );
        assert_eq!(
            user.pending_rotation_request().as_deref(),
            Some("2026-11-22")
        );
        user.status = Some(PostgresUserStatus {
            password_rotation_request: Some("2026-11-22".into()),
            ..Default::default()
        });
        assert_eq!(user.pending_rotation_request(), None);
        let long = "x".repeat(500);
        assert!(rotation_request_marker(&long).starts_with("hash:"));
        assert!(rotation_request_marker(&long).len() <= MAX_ROTATION_REQUEST_LENGTH);
    }

    #[test]
    fn go_durations_parse() {
        let h = 3600;
        assert_eq!(parse_duration("720h"), Some(Duration::from_secs(720 * h)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(h + 1800)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(h + 1800)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        for bad in ["", "h", "10", "10d", "1h-5m", ".5h", "5.h", "-1h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let pattern = regex::Regex::new(crate::schema::DURATION_PATTERN).unwrap();
        for good in ["720h", "1h30m", "1.5h", "500ms", "3µs"] {
            assert!(
                pattern.is_match(good) && parse_duration(good).is_some(),
                "{good}"
            );
        }
    }

    #[test]
    fn documented_example_is_valid() {
        let example = include_str!("../../../docs/examples/postgresuser.yaml");
        let object: PostgresUser = serde_yaml_ng::from_str(example).unwrap();
        assert!(object.metadata.namespace.is_some());
        let errors = cel_errors::<PostgresUser>(example, None);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
