//! The exporter's custom queries: the ConfigMap `<cluster>-monitoring` the `exporter` sidecar
//! reads with `--extend.query-path`.
//!
//! ```text
//!  exporter_queries.yaml (tusk's queries, compiled in)
//!        +  spec.monitoring.customQueries (the user's ConfigMap key, read by the controller)
//!        ──► ConfigMap <cluster>-monitoring, key queries.yaml
//!        ──► mounted read-only at /etc/tusk/exporter in the exporter container
//! ```
//!
//! postgres_exporter (v0.17) still reads custom queries only from `--extend.query-path`
//! (deprecated upstream since 0.13 in favour of built-in collectors, but the only way to add
//! queries such as the archiver's age or the backup age). It reads the file when it starts,
//! so a change of the queries reaches an instance at its next restart; tusk does not restart
//! PostgreSQL for a metrics change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, Volume, VolumeMount};
use serde_yaml_ng::{Mapping, Value};
use tusk_api::Cluster;

use crate::observe::CustomQueries;
use crate::shared::layout;
use crate::shared::layout::monitoring_config_map;
use crate::shared::meta::{child_meta, cluster_name};
use crate::shared::pod::{
    Images, env_from_secret, env_var, mount, port, restricted_container_security,
};
use k8s_openapi::api::core::v1::Container;
use tusk_api::names::EXPORTER_PORT;

/// tusk's own queries, in postgres_exporter's `queries.yaml` format.
pub const TUSK_QUERIES: &str = include_str!("../exporter_queries.yaml");

/// The ConfigMap key holding the queries.
pub const QUERIES_KEY: &str = "queries.yaml";

/// Where the exporter container sees the ConfigMap.
pub const QUERIES_DIR: &str = "/etc/tusk/exporter";

/// The volume name in the pod.
pub const VOLUME_NAME: &str = "exporter-queries";

/// Component label value of the ConfigMap.
pub const COMPONENT: &str = "monitoring";

/// The exporter's flag naming the queries file.
pub fn query_path_arg() -> String {
    format!("--extend.query-path={QUERIES_DIR}/{QUERIES_KEY}")
}

/// The desired ConfigMap, and a warning for the user when their queries were left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredQueries {
    /// `None` when monitoring is off.
    pub config_map: Option<ConfigMap>,
    /// Why the user's queries are not (all) in the file: a sentence saying what to fix.
    pub warning: Option<String>,
}

/// The ConfigMap for `cluster`: tusk's queries plus the user's. User queries whose name is
/// one of tusk's are left out (tusk's dashboards and alerts rely on them) and reported.
pub fn desired_config_map(cluster: &Cluster, custom: &CustomQueries) -> DesiredQueries {
    if !cluster.spec.monitoring.enabled {
        return DesiredQueries::default();
    }
    let describe = || {
        cluster
            .spec
            .monitoring
            .custom_queries
            .as_ref()
            .map(|r| format!("ConfigMap {} key {}", r.name, r.key))
            .unwrap_or_default()
    };
    let (text, warning) = match custom {
        CustomQueries::NotRequested => (TUSK_QUERIES.to_owned(), None),
        CustomQueries::Missing => (
            TUSK_QUERIES.to_owned(),
            Some(format!(
                "spec.monitoring.customQueries names {}, which does not exist: create it or remove the field; tusk's own queries run meanwhile",
                describe()
            )),
        ),
        CustomQueries::Found(user) => match merge(TUSK_QUERIES, user) {
            Ok((merged, skipped)) if skipped.is_empty() => (merged, None),
            Ok((merged, skipped)) => (
                merged,
                Some(format!(
                    "queries {} in {} have the names of tusk's own queries and were left out: rename them",
                    skipped.join(", "),
                    describe()
                )),
            ),
            Err(problem) => (
                TUSK_QUERIES.to_owned(),
                Some(format!(
                    "{} is not a postgres_exporter queries file ({problem}): fix it; tusk's own queries run meanwhile",
                    describe()
                )),
            ),
        },
    };
    DesiredQueries {
        config_map: Some(ConfigMap {
            metadata: child_meta(
                cluster,
                monitoring_config_map(&cluster_name(cluster)),
                COMPONENT,
            ),
            data: Some(BTreeMap::from([(QUERIES_KEY.to_owned(), text)])),
            ..ConfigMap::default()
        }),
        warning,
    }
}

/// tusk's queries followed by the user's, as one YAML mapping; and the names of user queries
/// dropped because tusk has a query of that name.
fn merge(tusk: &str, user: &str) -> Result<(String, Vec<String>), String> {
    let mut merged: Mapping =
        serde_yaml_ng::from_str(tusk).map_err(|e| format!("tusk's queries: {e}"))?;
    let user: Value = serde_yaml_ng::from_str(user).map_err(|e| e.to_string())?;
    let user = match user {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        _ => return Err("the top level must be a mapping of query names".to_owned()),
    };
    let mut skipped = Vec::new();
    for (name, query) in user {
        let Some(key) = name.as_str() else {
            return Err("query names must be strings".to_owned());
        };
        if !query.as_mapping().is_some_and(|q| q.contains_key("query")) {
            return Err(format!("query {key} has no `query` field"));
        }
        if merged.contains_key(&name) {
            skipped.push(key.to_owned());
        } else {
            merged.insert(name, query);
        }
    }
    let text = serde_yaml_ng::to_string(&merged).map_err(|e| e.to_string())?;
    Ok((text, skipped))
}

/// The pod volume projecting the ConfigMap.
pub fn volume(cluster: &Cluster) -> Volume {
    Volume {
        name: VOLUME_NAME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: monitoring_config_map(&cluster_name(cluster)),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The exporter container's mount of [`volume`].
pub fn volume_mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME_NAME.to_owned(),
        mount_path: QUERIES_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// Names of the metrics queries produce: `<query>_<column>` for every column that is not a
/// label (what postgres_exporter exports). Used by the test that checks the chart's
/// dashboards and alerts.
pub fn produced_metrics(queries_yaml: &str) -> Result<Vec<String>, String> {
    let queries: Mapping = serde_yaml_ng::from_str(queries_yaml).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    for (name, query) in &queries {
        let name = name.as_str().ok_or("query names must be strings")?;
        let metrics = query
            .get("metrics")
            .and_then(Value::as_sequence)
            .ok_or_else(|| format!("query {name} has no metrics list"))?;
        for metric in metrics {
            let (column, spec) = metric
                .as_mapping()
                .and_then(|m| m.iter().next())
                .ok_or_else(|| format!("query {name}: a metric is not a one-key mapping"))?;
            let column = column.as_str().ok_or("column names must be strings")?;
            let usage = spec.get("usage").and_then(Value::as_str).unwrap_or("");
            if usage != "LABEL" && usage != "DISCARD" {
                names.push(format!("{name}_{column}"));
            }
        }
    }
    Ok(names)
}

/// The `exporter` container: postgres_exporter over the pod's unix socket as the monitoring
/// role, with tusk's queries (and the user's) from the mounted ConfigMap.
pub fn exporter_container(cluster: &Cluster, images: &Images) -> Container {
    Container {
        name: "exporter".to_owned(),
        image: Some(images.exporter_image(cluster)),
        args: Some(vec![
            "--no-collector.stat_bgwriter".to_owned(),
            query_path_arg(),
        ]),
        // The password variable comes first: Kubernetes expands `$(VAR)` only for
        // variables defined earlier in the list.
        env: Some(vec![
            env_from_secret(
                layout::MONITOR_PASSWORD_ENV,
                layout::monitor_secret(&cluster_name(cluster)),
                tusk_api::names::keys::PASSWORD,
            ),
            env_var("DATA_SOURCE_NAME", layout::data_source_name()),
        ]),
        ports: Some(vec![port("metrics", EXPORTER_PORT)]),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![
            mount("run", "/var/run/postgresql", false),
            volume_mount(),
        ]),
        ..Container::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> Cluster {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const MINIMAL: &str = r#"
apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: shop, uid: "1"}
spec:
  postgresVersion: 17
  storage: {size: 1Gi}
"#;

    const WITH_CUSTOM: &str = r#"
apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: shop, uid: "1"}
spec:
  postgresVersion: 17
  storage: {size: 1Gi}
  monitoring:
    customQueries: {name: my-queries, key: queries.yaml}
"#;

    fn queries_text(desired: &DesiredQueries) -> String {
        desired.config_map.as_ref().unwrap().data.as_ref().unwrap()[QUERIES_KEY].clone()
    }

    #[test]
    fn every_query_has_sql_and_typed_described_metrics() {
        let queries: Mapping = serde_yaml_ng::from_str(TUSK_QUERIES).unwrap();
        assert!(queries.len() >= 8);
        for (name, query) in &queries {
            let name = name.as_str().unwrap();
            assert!(name.starts_with("tusk_pg_"), "{name}");
            assert!(
                query.get("query").and_then(Value::as_str).is_some(),
                "{name}"
            );
            for metric in query.get("metrics").unwrap().as_sequence().unwrap() {
                let (column, spec) = metric.as_mapping().unwrap().iter().next().unwrap();
                let usage = spec.get("usage").and_then(Value::as_str).unwrap();
                assert!(
                    ["LABEL", "GAUGE", "COUNTER"].contains(&usage),
                    "{name}.{column:?}: {usage}"
                );
                assert!(spec.get("description").is_some(), "{name}.{column:?}");
            }
        }
    }

    #[test]
    fn produced_metrics_are_query_name_and_column() {
        let names = produced_metrics(TUSK_QUERIES).unwrap();
        for expected in [
            "tusk_pg_role_primary",
            "tusk_pg_replication_lag_bytes",
            "tusk_pg_archiver_failing",
            "tusk_pg_archiver_last_archived_age_seconds",
            "tusk_pg_connections_used",
            "tusk_pg_connections_max",
            "tusk_pg_database_size_bytes",
            "tusk_pg_database_xid_age",
            "tusk_pg_backup_last_age_seconds",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n == "tusk_pg_replication_replica"),
            "labels are not metrics"
        );
    }

    #[test]
    fn config_map_is_owned_and_holds_tusks_queries_verbatim() {
        let desired = desired_config_map(&cluster(MINIMAL), &CustomQueries::NotRequested);
        let cm = desired.config_map.as_ref().unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("db-monitoring"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("shop"));
        let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.controller, Some(true));
        assert_eq!(queries_text(&desired), TUSK_QUERIES);
        assert_eq!(desired.warning, None);
    }

    #[test]
    fn no_config_map_when_monitoring_is_off() {
        let mut c = cluster(MINIMAL);
        c.spec.monitoring.enabled = false;
        assert_eq!(
            desired_config_map(&c, &CustomQueries::NotRequested).config_map,
            None
        );
    }

    #[test]
    fn user_queries_are_added_after_tusks() {
        let user = "app_orders:\n  query: SELECT count(*) AS open FROM orders\n  metrics:\n    - open: {usage: GAUGE, description: open orders}\n";
        let desired = desired_config_map(
            &cluster(WITH_CUSTOM),
            &CustomQueries::Found(user.to_owned()),
        );
        assert_eq!(desired.warning, None);
        let names = produced_metrics(&queries_text(&desired)).unwrap();
        assert!(names.contains(&"app_orders_open".to_owned()));
        assert!(names.contains(&"tusk_pg_role_primary".to_owned()));
    }

    #[test]
    fn a_user_query_cannot_replace_one_of_tusks() {
        let user = "tusk_pg_role:\n  query: SELECT 0 AS primary\n  metrics:\n    - primary: {usage: GAUGE, description: lie}\n";
        let desired = desired_config_map(
            &cluster(WITH_CUSTOM),
            &CustomQueries::Found(user.to_owned()),
        );
        let text = queries_text(&desired);
        assert!(text.contains("pg_is_in_recovery"), "tusk's query kept");
        assert!(!text.contains("SELECT 0 AS primary"));
        let warning = desired.warning.unwrap();
        assert!(
            warning.contains("tusk_pg_role") && warning.contains("my-queries"),
            "{warning}"
        );
    }

    #[test]
    fn invalid_user_queries_leave_tusks_and_say_what_to_fix() {
        for bad in ["- just\n- a list\n", "a: [unclosed", "q:\n  metrics: []\n"] {
            let desired =
                desired_config_map(&cluster(WITH_CUSTOM), &CustomQueries::Found(bad.to_owned()));
            assert_eq!(queries_text(&desired), TUSK_QUERIES, "{bad}");
            let warning = desired.warning.unwrap();
            assert!(
                warning.contains("my-queries") && warning.contains("fix it"),
                "{warning}"
            );
        }
    }

    #[test]
    fn a_missing_user_config_map_is_reported() {
        let desired = desired_config_map(&cluster(WITH_CUSTOM), &CustomQueries::Missing);
        assert_eq!(queries_text(&desired), TUSK_QUERIES);
        assert!(desired.warning.unwrap().contains("does not exist"));
    }

    #[test]
    fn exporter_reads_the_mounted_file() {
        assert_eq!(
            query_path_arg(),
            "--extend.query-path=/etc/tusk/exporter/queries.yaml"
        );
        let v = volume(&cluster(MINIMAL));
        assert_eq!(v.config_map.unwrap().name, "db-monitoring");
        assert_eq!(volume_mount().read_only, Some(true));
        assert_eq!(volume_mount().mount_path, QUERIES_DIR);
    }
}
