//! PostgreSQL parameters and pg_hba as the spec asks for them, checked, merged over tusk's
//! defaults and under what tusk and Patroni control.

use super::document::*;
use std::collections::BTreeMap;
use tusk_api::cluster::Cluster;
use tusk_api::user::{REPLICATION_ROLE, REWIND_ROLE, SUPERUSER_ROLE};

/// Parameters Patroni sets on PostgreSQL's command line itself, dropping any other value.
pub const PATRONI_FORCED_PARAMETERS: &[&str] = &[
    "cluster_name",
    "hot_standby",
    "listen_addresses",
    "port",
    "wal_log_hints",
];

/// The least value Patroni accepts for the parameters it passes on the command line; a smaller
/// one is dropped without a word, so tusk refuses it instead.
pub(crate) const PATRONI_MINIMUMS: &[(&str, i64)] = &[
    ("max_connections", 25),
    ("max_locks_per_transaction", 32),
    ("max_prepared_transactions", 0),
    ("max_replication_slots", 4),
    ("max_wal_senders", 3),
    ("max_worker_processes", 2),
];

/// tusk's defaults that a Cluster may override in `spec.postgresql.parameters`.
pub(crate) fn default_parameters() -> BTreeMap<String, String> {
    [
        ("password_encryption", "scram-sha-256"),
        // Up to 15 replicas, plus a pg_basebackup (two senders) and a pgBackRest backup.
        ("max_wal_senders", "20"),
        ("max_replication_slots", "20"),
        // Logs go to the container's stderr.
        ("logging_collector", "off"),
        ("log_destination", "stderr"),
        ("log_line_prefix", "%m [%p] %q%u@%d "),
        ("log_checkpoints", "on"),
        ("log_lock_waits", "on"),
        ("log_autovacuum_min_duration", "1min"),
        ("log_temp_files", "128MB"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// Parameters tusk sets and a Cluster may not (they are in the API's `FORBIDDEN_PARAMETERS`).
pub(crate) fn controlled_parameters(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut controlled = BTreeMap::from([("wal_level".to_owned(), "replica".to_owned())]);
    if cluster.spec.has_repository() {
        controlled.insert("archive_mode".to_owned(), "on".to_owned());
        controlled.insert(
            "archive_command".to_owned(),
            tusk_pgbackrest::archive_command(),
        );
    }
    controlled
}

/// The dynamic PostgreSQL parameters: tusk's defaults, overridden by
/// `spec.postgresql.parameters`, then tusk's controlled settings (which the spec cannot name).
pub fn parameters(cluster: &Cluster) -> Result<BTreeMap<String, String>, RenderError> {
    let spec_parameters = &cluster.spec.postgresql.parameters;
    let forbidden: Vec<String> = cluster
        .spec
        .forbidden_parameters()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !forbidden.is_empty() {
        return Err(RenderError::ForbiddenParameter(forbidden));
    }
    for (name, value) in spec_parameters {
        check_parameter(name, value)?;
    }
    let mut parameters = default_parameters();
    parameters.extend(
        spec_parameters
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    parameters.extend(controlled_parameters(cluster));
    if cluster.spec.has_repository() && !parameters.contains_key("archive_timeout") {
        parameters.insert("archive_timeout".to_owned(), "5min".to_owned());
    }
    Ok(parameters)
}

pub(crate) fn check_parameter(name: &str, value: &str) -> Result<(), RenderError> {
    let mut chars = name.chars();
    let valid_name = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !valid_name {
        return Err(RenderError::InvalidParameterName(name.to_owned()));
    }
    // Patroni writes `name = 'value'` lines: a line break would start a line of its own.
    if value.chars().any(char::is_control) {
        return Err(RenderError::InvalidParameterValue(name.to_owned()));
    }
    if PATRONI_FORCED_PARAMETERS.contains(&name) {
        return Err(RenderError::PatroniControlledParameter(name.to_owned()));
    }
    if let Some((_, minimum)) = PATRONI_MINIMUMS.iter().find(|(known, _)| *known == name)
        && let Ok(number) = value.trim().parse::<i64>()
        && number < *minimum
    {
        return Err(RenderError::ParameterBelowPatroniMinimum {
            name: name.to_owned(),
            value: value.to_owned(),
            minimum: *minimum,
        });
    }
    Ok(())
}

/// pg_hba.conf, first match wins:
///
/// 1. tusk's own connections, each naming the role it is for: Patroni, the exporter and
///    pgBackRest over the pod's unix socket, and — over TLS from the network — replication,
///    pg_rewind of a former primary, and the operator's superuser connection. They come first
///    so a user line cannot lock tusk out of its own cluster.
/// 2. `spec.postgresql.pgHba`, so a user's `cert` or `reject` lines (or narrower networks)
///    take effect before the default.
/// 3. The default for applications: any role, any database, TLS and SCRAM.
/// 4. Everything else over TCP — notably without TLS — is rejected by name.
///
/// Local connections need a password too (`scram-sha-256`, never `trust` or `peer`): the
/// socket directory is shared by every container of the pod, and `peer` would tie a role to
/// an operating-system user name that pods run with arbitrary UIDs do not have. Every client
/// tusk runs in the pod has its role's password in its environment.
pub fn pg_hba(cluster: &Cluster) -> Result<Vec<String>, RenderError> {
    for line in &cluster.spec.postgresql.pg_hba {
        check_hba_line(line)?;
    }
    let mut lines = vec![
        format!("local all {SUPERUSER_ROLE} scram-sha-256"),
        format!("local replication {REPLICATION_ROLE} scram-sha-256"),
    ];
    if cluster.spec.monitoring.enabled {
        lines.push(format!(
            "local all {} scram-sha-256",
            tusk_api::user::MONITORING_ROLE
        ));
    }
    lines.extend([
        format!("hostssl replication {REPLICATION_ROLE} all scram-sha-256"),
        // pg_rewind reads the new primary's files through the `postgres` database.
        format!("hostssl postgres {REWIND_ROLE} all scram-sha-256"),
        format!("hostssl all {SUPERUSER_ROLE} all scram-sha-256"),
    ]);
    lines.extend(cluster.spec.postgresql.pg_hba.iter().cloned());
    lines.extend([
        "hostssl all all all scram-sha-256".to_owned(),
        "host all all all reject".to_owned(),
    ]);
    Ok(lines)
}

/// The API's CEL rule, checked again because a line break inside a line would slip a second
/// rule (say `host all all all trust`) past it.
pub(crate) fn check_hba_line(line: &str) -> Result<(), RenderError> {
    let invalid = |problem| {
        Err(RenderError::InvalidHbaLine {
            line: line.to_owned(),
            problem,
        })
    };
    if line.chars().any(char::is_control) {
        return invalid("it holds a line break or control character");
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    if !matches!(fields.first(), Some(&"local" | &"hostssl")) {
        return invalid("only `local` and `hostssl` lines are accepted");
    }
    if !fields
        .iter()
        .skip(1)
        .any(|field| matches!(*field, "scram-sha-256" | "cert" | "reject"))
    {
        return invalid("the method must be scram-sha-256, cert or reject");
    }
    Ok(())
}
