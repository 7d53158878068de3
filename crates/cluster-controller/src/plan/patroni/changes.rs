//! Changes after bootstrap: the `PATCH /config` that brings Patroni's dynamic configuration to
//! the spec, and which parameter changes reload and which need a restart.

use super::document::*;
use std::collections::BTreeMap;

/// The body to `PATCH /config` with so that Patroni's dynamic configuration (`observed`, from
/// `GET /config`) matches `desired`; `None` when it already does, so a steady-state reconcile
/// writes nothing.
///
/// Only keys tusk renders are compared; others (say a `slots` entry added by hand) are left
/// alone. Parameters present in `observed` but no longer desired are sent as `null`, which
/// Patroni's patch semantics delete (they return to PostgreSQL's or Patroni's default).
/// Scalars compare by their text, so `"100"` and `100` are the same value.
pub fn dynamic_config_patch(
    observed: &serde_json::Value,
    desired: &DynamicConfig,
) -> Result<Option<serde_json::Value>, serde_json::Error> {
    use serde_json::{Map, Value};

    let desired = serde_json::to_value(desired)?;
    let (Value::Object(desired), empty) = (desired, Map::new()) else {
        return Ok(None);
    };
    let observed = observed.as_object().unwrap_or(&empty);
    let mut patch = Map::new();
    for (key, want) in &desired {
        let have = observed.get(key).unwrap_or(&Value::Null);
        if key == "postgresql" {
            if let Some(section) = postgresql_patch(have, want) {
                patch.insert(key.clone(), section);
            }
        } else if !same_value(have, want) {
            patch.insert(key.clone(), want.clone());
        }
    }
    Ok((!patch.is_empty()).then_some(Value::Object(patch)))
}

pub(crate) fn postgresql_patch(
    observed: &serde_json::Value,
    desired: &serde_json::Value,
) -> Option<serde_json::Value> {
    use serde_json::{Map, Value};

    let empty = Map::new();
    let observed = observed.as_object().unwrap_or(&empty);
    let desired = desired.as_object().unwrap_or(&empty);
    let mut patch = Map::new();
    for (key, want) in desired {
        let have = observed.get(key).unwrap_or(&Value::Null);
        if key == "parameters" {
            let have = have.as_object().unwrap_or(&empty);
            let want = want.as_object().unwrap_or(&empty);
            let mut parameters = Map::new();
            for (name, value) in want {
                if !have.get(name).is_some_and(|old| same_value(old, value)) {
                    parameters.insert(name.clone(), value.clone());
                }
            }
            for name in have.keys().filter(|name| !want.contains_key(*name)) {
                parameters.insert(name.clone(), Value::Null);
            }
            if !parameters.is_empty() {
                patch.insert(key.clone(), Value::Object(parameters));
            }
        } else if !same_value(have, want) {
            patch.insert(key.clone(), want.clone());
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

pub(crate) fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;

    fn scalar_text(value: &Value) -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }
    match (a, b) {
        // A boolean in the DCS came from a plain YAML 1.1 word in bootstrap.dcs (see the module
        // docs): `on` rendered by tusk is stored as `true`.
        (Value::Bool(flag), Value::String(text)) | (Value::String(text), Value::Bool(flag)) => {
            yaml11_bool(text) == Some(*flag)
        }
        _ => a == b || matches!((scalar_text(a), scalar_text(b)), (Some(x), Some(y)) if x == y),
    }
}

/// The booleans of PyYAML's (YAML 1.1) resolver.
pub(crate) fn yaml11_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// The PostgreSQL parameters in Patroni's dynamic configuration as `GET /config` returns it,
/// as text: numbers as written, booleans (from plain `on`/`off` in bootstrap.dcs, see the
/// module docs) as `on`/`off`. Compare with [`parameters`](super::parameters::parameters) in [`plan_parameter_change`].
pub fn observed_parameters(observed: &serde_json::Value) -> BTreeMap<String, String> {
    use serde_json::Value;

    observed
        .pointer("/postgresql/parameters")
        .and_then(Value::as_object)
        .map(|parameters| {
            parameters
                .iter()
                .filter_map(|(name, value)| {
                    let text = match value {
                        Value::String(text) => text.clone(),
                        Value::Number(number) => number.to_string(),
                        Value::Bool(true) => "on".to_owned(),
                        Value::Bool(false) => "off".to_owned(),
                        _ => return None,
                    };
                    Some((name.clone(), text))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How a parameter change reaches the running servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParameterApply {
    /// A reload (`SIGHUP`) applies it; Patroni reloads after `PATCH /config` by itself.
    Reload,
    /// Only a restart applies it (`postmaster` context).
    Restart,
}

/// Parameters of `postmaster` context in PostgreSQL 15 to 18 (from `postgres
/// --describe-config`), plus well-known extension parameters of that context. Others, and
/// unknown extension parameters, are taken as reloadable: Patroni reports `pending_restart`
/// for anything PostgreSQL itself marks so, and the controller trusts that at run time.
pub(crate) const RESTART_PARAMETERS: &[&str] = &[
    "archive_mode",
    "autovacuum_freeze_max_age",
    "autovacuum_multixact_freeze_max_age",
    "autovacuum_worker_slots",
    "bonjour",
    "bonjour_name",
    "cluster_name",
    "commit_timestamp_buffers",
    "data_directory",
    "data_sync_retry",
    "dynamic_shared_memory_type",
    "event_source",
    "external_pid_file",
    "hba_file",
    "hot_standby",
    "huge_page_size",
    "huge_pages",
    "ident_file",
    "io_max_combine_limit",
    "io_max_concurrency",
    "io_method",
    "jit_provider",
    "listen_addresses",
    "logging_collector",
    "max_active_replication_origins",
    "max_connections",
    "max_files_per_process",
    "max_locks_per_transaction",
    "max_logical_replication_workers",
    "max_notify_queue_pages",
    "max_pred_locks_per_transaction",
    "max_prepared_transactions",
    "max_replication_slots",
    "max_wal_senders",
    "max_worker_processes",
    "min_dynamic_shared_memory",
    "multixact_member_buffers",
    "multixact_offset_buffers",
    "notify_buffers",
    "old_snapshot_threshold",
    "pg_stat_statements.max",
    "port",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "reserved_connections",
    "serializable_buffers",
    "shared_buffers",
    "shared_memory_type",
    "shared_preload_libraries",
    "subtransaction_buffers",
    "superuser_reserved_connections",
    "track_activity_query_size",
    "track_commit_timestamp",
    "transaction_buffers",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "wal_buffers",
    "wal_decode_buffer_size",
    "wal_level",
    "wal_log_hints",
];

/// Parameters a hot standby needs at least as high as its primary's. Raising one restarts the
/// replicas first (the usual order); lowering one must restart the primary first, or the
/// replicas cannot replay its WAL.
pub(crate) const HOT_STANDBY_MINIMUM_PARAMETERS: &[&str] = &[
    "max_connections",
    "max_locks_per_transaction",
    "max_prepared_transactions",
    "max_wal_senders",
    "max_worker_processes",
];

/// Whether changing `name` on PostgreSQL `postgres_version` needs a restart.
pub fn parameter_apply(name: &str, postgres_version: i32) -> ParameterApply {
    // PostgreSQL 18 made autovacuum_max_workers reloadable (up to autovacuum_worker_slots).
    if name == "autovacuum_max_workers" {
        return if postgres_version >= 18 {
            ParameterApply::Reload
        } else {
            ParameterApply::Restart
        };
    }
    if RESTART_PARAMETERS.contains(&name) {
        ParameterApply::Restart
    } else {
        ParameterApply::Reload
    }
}

/// What a change of the parameter set needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParameterChangePlan {
    /// Parameters added, removed or changed, sorted.
    pub changed: Vec<String>,
    /// Those of them that need a restart.
    pub restart: Vec<String>,
    /// Whether the primary must restart before the replicas: a hot-standby minimum went down
    /// (or was removed, which may lower it to the default).
    pub primary_first: bool,
}

impl ParameterChangePlan {
    /// Whether anything changed at all.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }

    /// Whether the change needs a rolling restart (else a reload, which Patroni does).
    pub fn needs_restart(&self) -> bool {
        !self.restart.is_empty()
    }
}

/// Compares two rendered parameter sets (for example [`parameters`](super::parameters::parameters) of the Cluster before and
/// after a spec change) and says how the change applies.
pub fn plan_parameter_change(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    postgres_version: i32,
) -> ParameterChangePlan {
    let mut plan = ParameterChangePlan::default();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (before, after) = (old.get(name), new.get(name));
        if before == after {
            continue;
        }
        plan.changed.push(name.clone());
        if parameter_apply(name, postgres_version) == ParameterApply::Restart {
            plan.restart.push(name.clone());
        }
        if HOT_STANDBY_MINIMUM_PARAMETERS.contains(&name.as_str()) {
            let number = |value: Option<&String>| value.and_then(|v| v.trim().parse::<i64>().ok());
            let lowered = match (number(before), number(after)) {
                (Some(before), Some(after)) => after < before,
                // Added or removed, or not a plain number: it may go down.
                _ => true,
            };
            plan.primary_first |= lowered;
        }
    }
    plan
}
