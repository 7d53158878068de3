//! The `PostgresUser` resource (stub, being written).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// Stub.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "tusk.dev", version = "v1alpha1", kind = "PostgresUser", plural = "postgresusers", namespaced, status = "PostgresUserStatus", category = "tusk")]
#[serde(rename_all = "camelCase")]
pub struct PostgresUserSpec {
    /// Stub.
    pub cluster: crate::common::ClusterReference,
}

/// Stub.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresUserStatus {
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,
}
