//! Golden files of every child the controller renders for a minimal, a three-instance HA and a
//! fully loaded Cluster. Review changes to `tests/snapshots/` like code: they are what lands
//! in users' clusters. Generated secret material is replaced by a placeholder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tusk_api::Cluster;
use tusk_cluster_controller::observe::Observed;
use tusk_cluster_controller::plan::plan;
use tusk_cluster_controller::shared::pod::Images;

fn rendered(cluster_yaml: &str) -> String {
    let mut cluster: Cluster = serde_yaml_ng::from_str(cluster_yaml).unwrap();
    cluster.metadata.uid = Some("00000000-0000-4000-8000-000000000001".into());
    cluster.metadata.generation = Some(1);
    let now = Time(jiff::Timestamp::from_second(1_795_000_000).unwrap());
    let desired = plan(&cluster, &Observed::default(), &Images::default(), now).unwrap();
    assert!(desired.problem.is_none());
    let mut objects: Vec<serde_json::Value> = vec![
        serde_json::to_value(&desired.service_account).unwrap(),
        serde_json::to_value(&desired.role).unwrap(),
        serde_json::to_value(&desired.role_binding).unwrap(),
    ];
    for secret in &desired.secrets {
        let mut value = serde_json::to_value(secret).unwrap();
        if let Some(data) = value.get_mut("data").and_then(|d| d.as_object_mut()) {
            for v in data.values_mut() {
                *v = serde_json::Value::String("<generated>".into());
            }
        }
        objects.push(value);
    }
    objects.push(serde_json::to_value(&desired.config_map).unwrap());
    if let Some(queries) = &desired.monitoring.config_map {
        // The queries file is reviewed as itself (src/exporter_queries.yaml), not three times.
        let mut value = serde_json::to_value(queries).unwrap();
        value["data"]["queries.yaml"] = "<src/exporter_queries.yaml>".into();
        objects.push(value);
    }
    objects.extend(
        desired
            .services
            .iter()
            .map(|s| serde_json::to_value(s).unwrap()),
    );
    objects.extend(
        desired
            .statefulsets
            .iter()
            .map(|s| serde_json::to_value(s).unwrap()),
    );
    if let Some(pdb) = &desired.pdb {
        objects.push(serde_json::to_value(pdb).unwrap());
    }
    objects.extend(desired.backup.objects());
    objects
        .iter()
        .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).unwrap()))
        .collect()
}

fn example(file: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/examples")
            .join(file),
    )
    .unwrap()
}

#[test]
fn minimal_cluster() {
    insta::assert_snapshot!(rendered(&example("cluster-minimal.yaml")));
}

#[test]
fn three_instance_ha_cluster() {
    insta::assert_snapshot!(rendered(
        "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: db}
spec:
  postgresVersion: 17
  instances: 3
  storage: {size: 20Gi, storageClassName: fast}
  replication: {mode: Synchronous}
  scheduling: {podAntiAffinity: {type: Required}}
"
    ));
}

#[test]
fn fully_loaded_cluster() {
    insta::assert_snapshot!(rendered(&example("cluster.yaml")));
}
