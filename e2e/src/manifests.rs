//! The objects the scenarios create, as typed tusk resources. Each builder goes through the
//! API types (serde), so a field the CRD does not know fails here, in a unit test, not on a
//! cluster.

use anyhow::Context as _;
use serde_json::{Value, json};
use tusk_api::{Backup, BackupSchedule, Cluster, PGUpgrade, Pooler, PostgresUser, ServiceBinding};

/// What varies between the scenarios' Clusters.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterOptions {
    pub postgres_version: i32,
    pub instances: i32,
    pub storage_size: String,
    pub storage_class: Option<String>,
    /// `(thresholdPercent, increasePercent, limit)`.
    pub auto_grow: Option<(i32, i32, String)>,
    /// A PVC backup repository `repo1` of this size.
    pub pvc_repository: Option<String>,
    /// Namespaces admitted by `spec.bindingPolicy`.
    pub binding_namespaces: Vec<String>,
    /// Restore from `(cluster, repository, target time)`.
    pub restore: Option<(String, String, String)>,
    /// CPU request (the rolling-update scenario changes it).
    pub cpu_request: String,
}

impl ClusterOptions {
    /// Small enough for a kind node: 100m CPU, 256Mi memory, 1Gi volumes.
    pub fn small(postgres_version: i32, instances: i32) -> Self {
        Self {
            postgres_version,
            instances,
            storage_size: "1Gi".to_owned(),
            storage_class: None,
            auto_grow: None,
            pvc_repository: None,
            binding_namespaces: Vec::new(),
            restore: None,
            cpu_request: "100m".to_owned(),
        }
    }
}

/// The repository name the scenarios use.
pub const REPOSITORY: &str = "repo1";

fn typed<T: serde::de::DeserializeOwned>(kind: &str, value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| format!("building the {kind} manifest"))
}

fn metadata(name: &str, namespace: &str) -> Value {
    json!({"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "tusk-e2e"}})
}

pub fn cluster(name: &str, namespace: &str, o: &ClusterOptions) -> anyhow::Result<Cluster> {
    let mut storage = json!({"size": o.storage_size});
    if let Some(class) = &o.storage_class {
        storage["storageClassName"] = json!(class);
    }
    if let Some((threshold, increase, limit)) = &o.auto_grow {
        storage["autoGrow"] = json!({
            "thresholdPercent": threshold, "increasePercent": increase, "limit": limit,
        });
    }
    let mut spec = json!({
        "postgresVersion": o.postgres_version,
        "instances": o.instances,
        "storage": storage,
        "resources": {
            "requests": {"cpu": o.cpu_request, "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        // One kind node in CI: instances may share it.
        "scheduling": {"podAntiAffinity": {"type": "Preferred"}},
    });
    if let Some(size) = &o.pvc_repository {
        spec["backup"] = json!({"repositories": [{"name": REPOSITORY, "volume": {"size": size}}]});
    }
    if !o.binding_namespaces.is_empty() {
        spec["bindingPolicy"] = json!({"namespaces": o.binding_namespaces});
    }
    if let Some((source, repository, time)) = &o.restore {
        spec["bootstrap"] = json!({"restore": {
            "cluster": source, "repositoryName": repository, "target": {"time": time},
        }});
    }
    typed(
        "Cluster",
        json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "Cluster",
               "metadata": metadata(name, namespace), "spec": spec}),
    )
}

/// A login role owning `database`, with read-only access to `postgres`' public schema too.
pub fn postgres_user(
    name: &str,
    namespace: &str,
    cluster: &str,
    database: &str,
) -> anyhow::Result<PostgresUser> {
    typed(
        "PostgresUser",
        json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "PostgresUser",
        "metadata": metadata(name, namespace),
        "spec": {
            "cluster": {"name": cluster},
            "login": true,
            "databases": [{"name": database}],
            "grants": [
                {"database": database, "access": "Owner", "schemas": ["public"]},
                {"database": "postgres", "access": "ReadOnly", "schemas": ["public"]},
            ],
        }}),
    )
}

/// A read-write binding to `database` of a Cluster in `cluster_namespace`.
pub fn service_binding(
    name: &str,
    namespace: &str,
    cluster: &str,
    cluster_namespace: &str,
    database: &str,
) -> anyhow::Result<ServiceBinding> {
    typed(
        "ServiceBinding",
        json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "ServiceBinding",
        "metadata": metadata(name, namespace),
        "spec": {
            "cluster": {"name": cluster, "namespace": cluster_namespace},
            "database": database,
            "access": "ReadWrite",
            "schemas": ["public"],
        }}),
    )
}

/// A read-write binding like [`service_binding`], through the Pooler `pooler`.
pub fn service_binding_through(
    name: &str,
    namespace: &str,
    cluster: &str,
    database: &str,
    pooler: &str,
) -> anyhow::Result<ServiceBinding> {
    let mut binding = service_binding(name, namespace, cluster, namespace, database)?;
    binding.spec.pooler = Some(tusk_api::binding::BindingPoolerReference {
        name: pooler.to_owned(),
    });
    Ok(binding)
}

/// A Pooler of `instances` PgBouncer pods in transaction mode in front of `cluster`.
pub fn pooler(
    name: &str,
    namespace: &str,
    cluster: &str,
    instances: i32,
) -> anyhow::Result<Pooler> {
    typed(
        "Pooler",
        json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "Pooler",
        "metadata": metadata(name, namespace),
        "spec": {
            "cluster": {"name": cluster},
            "instances": instances,
            "pgbouncer": {"poolMode": "Transaction", "defaultPoolSize": 5},
        }}),
    )
}

pub fn backup(name: &str, namespace: &str, cluster: &str) -> anyhow::Result<Backup> {
    typed(
        "Backup",
        json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "Backup",
               "metadata": metadata(name, namespace),
               "spec": {"cluster": {"name": cluster}, "type": "Full", "repository": REPOSITORY}}),
    )
}

/// Every minute, starting with one at once.
pub fn backup_schedule(
    name: &str,
    namespace: &str,
    cluster: &str,
) -> anyhow::Result<BackupSchedule> {
    typed(
        "BackupSchedule",
        json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "BackupSchedule",
        "metadata": metadata(name, namespace),
        "spec": {
            "cluster": {"name": cluster},
            "schedule": "* * * * *",
            "backupType": "Incremental",
            "repository": REPOSITORY,
            "immediate": true,
            "concurrencyPolicy": "Forbid",
            "successfulBackupsHistoryLimit": 3,
        }}),
    )
}

pub fn pg_upgrade(
    name: &str,
    namespace: &str,
    cluster: &str,
    from: i32,
) -> anyhow::Result<PGUpgrade> {
    typed(
        "PGUpgrade",
        json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "PGUpgrade",
        "metadata": metadata(name, namespace),
        "spec": {
            "cluster": {"name": cluster},
            "fromPostgresVersion": from,
            "toPostgresVersion": from + 1,
        }}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cluster_fits_a_kind_node() {
        let c = cluster("db", "e2e-a", &ClusterOptions::small(17, 3)).unwrap();
        assert_eq!(c.metadata.namespace.as_deref(), Some("e2e-a"));
        assert_eq!(c.spec.instances, 3);
        assert_eq!(c.spec.postgres_version, 17);
        assert_eq!(c.spec.storage.size.0, "1Gi");
        assert!(!c.spec.has_repository());
        assert!(c.spec.storage.auto_grow.is_none());
    }

    #[test]
    fn repository_binding_policy_and_auto_grow_are_set_when_asked() {
        let mut o = ClusterOptions::small(17, 1);
        o.pvc_repository = Some("2Gi".to_owned());
        o.binding_namespaces = vec!["e2e-app".to_owned()];
        o.auto_grow = Some((60, 50, "3Gi".to_owned()));
        o.storage_class = Some("csi-hostpath-sc".to_owned());
        let c = cluster("db", "e2e-db", &o).unwrap();
        assert!(c.spec.has_repository());
        let policy = c.spec.binding_policy.unwrap();
        assert_eq!(policy.namespaces, vec!["e2e-app".to_owned()]);
        let grow = c.spec.storage.auto_grow.unwrap();
        assert_eq!((grow.threshold_percent, grow.increase_percent), (60, 50));
        assert_eq!(grow.limit.0, "3Gi");
        assert_eq!(
            c.spec.storage.storage_class_name.as_deref(),
            Some("csi-hostpath-sc")
        );
    }

    #[test]
    fn restore_targets_a_point_in_time_of_another_cluster() {
        let mut o = ClusterOptions::small(17, 1);
        o.pvc_repository = Some("2Gi".to_owned());
        o.restore = Some((
            "db".to_owned(),
            REPOSITORY.to_owned(),
            "2026-11-22T10:15:00Z".to_owned(),
        ));
        let c = cluster("db-restored", "e2e", &o).unwrap();
        let restore = c.spec.bootstrap.unwrap().restore.unwrap();
        assert_eq!(restore.cluster.as_deref(), Some("db"));
        assert_eq!(restore.repository_name, REPOSITORY);
        assert_eq!(
            restore.target.unwrap().time.as_deref(),
            Some("2026-11-22T10:15:00Z")
        );
    }

    #[test]
    fn the_other_kinds_build_through_their_types() {
        let user = postgres_user("app", "e2e", "db", "app").unwrap();
        assert_eq!(user.spec.cluster.name, "db");
        let binding = service_binding("web", "e2e-app", "db", "e2e-db", "app").unwrap();
        assert_eq!(binding.spec.cluster.namespace.as_deref(), Some("e2e-db"));
        backup("b1", "e2e", "db").unwrap();
        let schedule = backup_schedule("s", "e2e", "db").unwrap();
        assert_eq!(schedule.spec.schedule, "* * * * *");
        let upgrade = pg_upgrade("u", "e2e", "db", 16).unwrap();
        assert_eq!(
            (
                upgrade.spec.from_postgres_version,
                upgrade.spec.to_postgres_version
            ),
            (16, 17)
        );
    }
}
