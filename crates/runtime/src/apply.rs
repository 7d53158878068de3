//! Server-side apply, forced, with the controller's own field manager — and nothing sent when
//! nothing changed.
//!
//! A steady-state reconcile must write nothing. Two checks decide whether an apply is needed:
//!
//! - the object carries the hash of what this controller last applied
//!   ([`APPLIED_HASH_ANNOTATION`]); if the desired object hashes differently, the controller's
//!   intent changed (including a field it stopped setting, which a subset check cannot see);
//! - every field of the desired object must be present, equal, in the observed object; if
//!   someone edited or removed one, it is drift and is applied back.
//!
//! Only when both hold is the apply skipped. Desired objects must use the API server's
//! canonical forms (e.g. quantities as the server prints them), or they look like drift.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Annotation holding the hash of the object as last applied by its controller.
pub const APPLIED_HASH_ANNOTATION: &str = "tusk.dev/applied-hash";

/// What [`ensure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Applied,
}

/// Whether every field of `desired` is present and equal in `observed`. Lists must have the
/// same length and match element by element; fields only `observed` has (defaults, other
/// managers' fields, status) are ignored.
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|seen| is_subset(value, seen))),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| is_subset(w, h))
        }
        (want, have) => want == have,
    }
}

/// A stable 64-bit FNV-1a hash of the JSON form of `value` with object keys sorted, as 16
/// hex digits.
pub fn content_hash(value: &Value) -> String {
    let mut text = String::new();
    write_canonical(value, &mut text);
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Errors from [`ensure`] and [`ensure_status`].
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot serialize {kind} {name}: {source}")]
    Serialize {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind} has no name")]
    Unnamed { kind: String },
    #[error("applying {kind} {name}: {source}")]
    Kube {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Conflicts and server errors pass; a rejected object (422) or missing permission (403)
    /// will not fix itself.
    pub fn is_permanent(&self) -> bool {
        match self {
            ApplyError::Serialize { .. } | ApplyError::Unnamed { .. } => true,
            ApplyError::Kube {
                source: kube::Error::Api(status),
                ..
            } => matches!(status.code, 400 | 403 | 422),
            ApplyError::Kube { .. } => false,
        }
    }
}

/// Applies `desired` (forced, as `field_manager`) unless `observed` already matches it.
pub async fn ensure<K>(
    api: &Api<K>,
    field_manager: &str,
    mut desired: K,
    observed: Option<&K>,
) -> Result<Outcome, ApplyError>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let kind = K::kind(&()).into_owned();
    let name = desired
        .meta()
        .name
        .clone()
        .ok_or_else(|| ApplyError::Unnamed { kind: kind.clone() })?;
    let serialize = |source| ApplyError::Serialize {
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    if let Some(annotations) = desired.meta_mut().annotations.as_mut() {
        annotations.remove(APPLIED_HASH_ANNOTATION);
    }
    let hash = content_hash(&serde_json::to_value(&desired).map_err(serialize)?);
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());

    if let Some(observed) = observed {
        let same_intent = observed
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
            .is_some_and(|seen| *seen == hash);
        let want = serde_json::to_value(&desired).map_err(serialize)?;
        let have = serde_json::to_value(observed).map_err(serialize)?;
        if same_intent && is_subset(&want, &have) {
            return Ok(Outcome::Unchanged);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|source| ApplyError::Kube { kind, name, source })?;
    Ok(Outcome::Applied)
}

/// The body of a server-side apply to the status subresource: a typed object with only
/// `apiVersion`, `kind` and `status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a, S> {
    api_version: &'a str,
    kind: &'a str,
    status: &'a S,
}

/// Applies `status` to the status subresource of `name` unless it equals `observed`.
pub async fn ensure_status<K, S>(
    api: &Api<K>,
    field_manager: &str,
    name: &str,
    status: &S,
    observed: Option<&S>,
) -> Result<Outcome, ApplyError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    S: Serialize + PartialEq + Debug,
{
    if observed == Some(status) {
        return Ok(Outcome::Unchanged);
    }
    let body = StatusApply {
        api_version: &K::api_version(&()),
        kind: &K::kind(&()),
        status,
    };
    api.patch_status(
        name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| ApplyError::Kube {
        kind: K::kind(&()).into_owned(),
        name: name.to_owned(),
        source,
    })?;
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_fields_only_the_server_has() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 5432}]}});
        let observed = json!({
            "metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "other": "y"}},
            "spec": {"ports": [{"port": 5432, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
            "status": {}
        });
        assert!(is_subset(&desired, &observed));
    }

    #[test]
    fn subset_sees_edits_removals_and_list_changes() {
        let desired = json!({"spec": {"ports": [{"port": 5432}], "type": "ClusterIP"}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 5433}], "type": "ClusterIP"}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 5432}]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"ports": [{"port": 5432}, {"port": 1}], "type": "ClusterIP"}})
        ));
    }

    #[test]
    fn content_hash_is_stable_and_sensitive() {
        let a = json!({"a": 1, "b": [1, 2]});
        assert_eq!(
            content_hash(&a),
            content_hash(&json!({"b": [1, 2], "a": 1}))
        );
        assert_ne!(
            content_hash(&a),
            content_hash(&json!({"a": 1, "b": [2, 1]}))
        );
        assert_eq!(content_hash(&a).len(), 16);
    }
}
