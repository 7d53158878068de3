//! Volume expansion: a raised size, a StorageClass that cannot expand, auto-grow from measured
//! usage.

use super::*;

#[tokio::test]
async fn a_raised_storage_size_expands_the_pvcs_not_the_statefulset_template() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.create_storage_class("standard", true).await;
    h.create_claims("standard").await;
    h.start_pods(1, true).await;
    h.reconcile().await;

    h.set_storage_size("20Gi").await;
    h.recording.clear();
    h.reconcile().await;
    for n in 1..=3 {
        assert_eq!(h.requested_size(&format!("data-db-{n}-0")).await, "20Gi");
    }
    let template_size = h
        .api::<StatefulSet>()
        .get("db-1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_claim_templates
        .unwrap()[0]
        .spec
        .clone()
        .unwrap()
        .resources
        .unwrap()
        .requests
        .unwrap()["storage"]
        .0
        .clone();
    assert_eq!(
        template_size, "10Gi",
        "volumeClaimTemplates are immutable: the StatefulSet keeps its size"
    );
    let writes = h.recording.writes();
    assert_eq!(
        writes
            .iter()
            .filter(|c| c.resource == "persistentvolumeclaims" && c.verb == "patch")
            .count(),
        3,
        "{writes:?}"
    );
    assert!(
        !writes.iter().any(|c| c.resource == "statefulsets"),
        "{writes:?}"
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
    );

    // Done once: the next pass writes nothing (the status is already current).
    h.reconcile().await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.recording.writes(), vec![]);
}

#[tokio::test]
async fn a_storage_class_without_expansion_is_reported_and_nothing_is_patched() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.create_storage_class("fixed", false).await;
    h.create_claims("fixed").await;
    h.start_pods(1, true).await;
    h.reconcile().await;
    h.set_storage_size("20Gi").await;
    h.recording.clear();
    h.reconcile().await;
    assert_eq!(h.requested_size("data-db-1-0").await, "10Gi");
    assert!(
        !h.recording
            .writes()
            .iter()
            .any(|c| c.resource == "persistentvolumeclaims")
    );
    let status = h.cluster().await.status.unwrap();
    let pressure = find_condition(&status.conditions, "StoragePressure")
        .cloned()
        .unwrap();
    assert_eq!(pressure.status, "True");
    assert_eq!(pressure.reason, "ExpansionNotAllowed");
    assert!(
        pressure.message.contains("allowVolumeExpansion"),
        "{}",
        pressure.message
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
    );
}

/// Pure tier: what one pass plans from measured usage (the SQL measurement itself runs in
/// tests/patroni_real.rs).
#[test]
fn measured_usage_past_the_threshold_plans_an_expansion_and_reports_usage() {
    use tusk_cluster_controller::observe::Observed;
    use tusk_cluster_controller::observe::instance_sql::InstanceUsage;
    use tusk_cluster_controller::plan::plan;

    let cluster = {
        let mut c = cluster(
            "  postgresVersion: 17\n  instances: 2\n  storage: {size: 10Gi, autoGrow: {thresholdPercent: 80, increasePercent: 25, limit: 12Gi}}\n",
        );
        c.metadata.uid = Some("u1".into());
        c
    };
    let gib = 1024 * 1024 * 1024;
    let mut observed = Observed::default();
    for n in 1..=2 {
        let instance = format!("db-{n}");
        let sts: StatefulSet = serde_yaml_ng::from_str(&format!(
            "metadata: {{name: {instance}}}\nspec: {{selector: {{}}, serviceName: db-pods, template: {{}}}}\n"
        ))
        .unwrap();
        observed.statefulsets.insert(instance.clone(), sts);
        let claim: PersistentVolumeClaim = serde_yaml_ng::from_str(&format!(
            "metadata: {{name: data-{instance}-0}}\nspec: {{resources: {{requests: {{storage: 10Gi}}}}, storageClassName: standard}}\nstatus: {{capacity: {{storage: 10Gi}}}}\n"
        ))
        .unwrap();
        observed.claims.insert(format!("data-{instance}-0"), claim);
    }
    observed.usage.insert(
        "db-1".into(),
        InstanceUsage {
            data: 8 * gib,
            wal: gib / 2,
        },
    );
    observed.usage.insert(
        "db-2".into(),
        InstanceUsage {
            data: 4 * gib,
            wal: gib / 2,
        },
    );
    observed.storage_classes.insert("standard".into(), true);
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let desired = plan(&cluster, &observed, &Images::default(), now).unwrap();

    let expansions = &desired.storage.expansions;
    assert_eq!(expansions.len(), 1, "{expansions:?}");
    assert_eq!(expansions[0].claim, "data-db-1-0");
    assert_eq!(
        expansions[0].to.0, "12Gi",
        "10Gi + 25% rounds to 13Gi, capped at the limit"
    );
    let usage: Vec<(String, i32)> = desired
        .status
        .storage
        .iter()
        .map(|u| (u.instance.clone(), u.used_percent))
        .collect();
    assert_eq!(usage, vec![("db-1".into(), 85), ("db-2".into(), 45)]);
    let pressure = find_condition(&desired.status.conditions, "StoragePressure").unwrap();
    assert_eq!(
        (pressure.status.as_str(), pressure.reason.as_str()),
        ("False", "Expanding")
    );
}
