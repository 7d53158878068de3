//! Small types several resources share.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Cluster in the same namespace as the referring object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReference {
    /// Name of the Cluster, in this object's namespace.
    #[schemars(schema_with = "crate::schema::dns_label")]
    pub name: String,
}

/// A reference to a key of a Secret in the same namespace as the referring object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret.
    #[schemars(schema_with = "crate::schema::dns_subdomain")]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A reference to a Secret in the same namespace as the referring object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(schema_with = "crate::schema::dns_subdomain")]
    pub name: String,
}

/// What a role may do in a database.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
pub enum Access {
    /// Owns the database and the named schemas: may create, alter and drop objects in them.
    Owner,
    /// May read and write data (SELECT, INSERT, UPDATE, DELETE on tables; USAGE on
    /// sequences) in the named schemas, including tables created later. No DDL.
    #[default]
    ReadWrite,
    /// May only read data (SELECT on tables) in the named schemas, including tables created
    /// later.
    ReadOnly,
}

impl Access {
    /// The spelling used in the API, docs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Owner => "Owner",
            Access::ReadWrite => "ReadWrite",
            Access::ReadOnly => "ReadOnly",
        }
    }
}

/// Default schema list for grants: `["public"]`.
pub fn default_schemas() -> Vec<String> {
    vec!["public".to_owned()]
}

/// Returns `true`; for `#[serde(default = ...)]`.
pub fn default_true() -> bool {
    true
}

/// A reference to a key of a ConfigMap in the same namespace as the referring object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyReference {
    /// Name of the ConfigMap.
    #[schemars(schema_with = "crate::schema::dns_subdomain")]
    pub name: String,
    /// Key within the ConfigMap's `data`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}
