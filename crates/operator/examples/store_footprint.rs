//! Memory of the controllers' reflector stores at scale, for `cargo xtask bench operator`.
//!
//! Fills the stores the Cluster, PostgresUser and ServiceBinding controllers keep with
//! 1,000 Clusters, 10,000 PostgresUsers and 10,000 ServiceBindings — realistic objects (the
//! docs/examples specs, full metadata, status with conditions), pruned as the controllers
//! prune them — and prints the process's resident memory as `rss_mib=`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference, Time};
use kube::Resource;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use serde::de::DeserializeOwned;
use tusk_api::condition::{DesiredCondition, set_condition, types};
use tusk_api::{Cluster, PostgresUser, ServiceBinding};

fn example<K: DeserializeOwned>(file: &str) -> K {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/examples")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("example exists");
    serde_yaml_ng::from_str(&text).expect("example parses")
}

/// Gives `object` the metadata a real API server returns (uid, versions, timestamps, labels,
/// managedFields that pruning must drop) under a unique name.
fn realistic<K: Resource>(mut object: K, name: String, i: usize) -> K {
    let meta = object.meta_mut();
    meta.name = Some(name);
    meta.uid = Some(format!("4c3b1f0e-9a7d-4e21-b0c5-{i:012x}"));
    meta.resource_version = Some(format!("{}", 1_000_000 + i));
    meta.generation = Some(3);
    meta.creation_timestamp = Some(Time(
        jiff::Timestamp::from_second(1_790_000_000 + i as i64).expect("time"),
    ));
    meta.labels = Some(
        [
            ("app.kubernetes.io/part-of".to_owned(), "shop".to_owned()),
            ("team".to_owned(), format!("team-{}", i % 50)),
        ]
        .into(),
    );
    meta.finalizers = Some(vec!["tusk.dev/user".to_owned()]);
    meta.managed_fields = Some(vec![ManagedFieldsEntry::default(); 3]);
    object
}

fn conditions(count: usize) -> Vec<tusk_api::condition::Condition> {
    let mut conditions = Vec::new();
    let now = Time(jiff::Timestamp::from_second(1_790_000_000).expect("time"));
    for (n, type_) in [types::READY, types::PROGRESSING, types::DEGRADED]
        .iter()
        .take(count)
        .enumerate()
    {
        set_condition(
            &mut conditions,
            DesiredCondition::new(
                type_,
                n == 0,
                "Applied",
                "role, databases and grants match the spec",
            ),
            Some(3),
            now.clone(),
        );
    }
    conditions
}

fn fill<K>(objects: impl Iterator<Item = K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for mut object in objects {
        tusk_runtime::store::prune(&mut object);
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let clusters_n: usize = std::env::var("CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let users_n: usize = std::env::var("USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let bindings_n: usize = std::env::var("BINDINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let before = rss_kib();
    let started = std::time::Instant::now();

    let cluster: Cluster = example("cluster.yaml");
    let user: PostgresUser = example("postgresuser.yaml");
    let binding: ServiceBinding = example("servicebinding.yaml");

    let clusters = fill((0..clusters_n).map(|i| {
        let mut c = realistic(cluster.clone(), format!("db-{i}"), i);
        c.status = Some(tusk_api::ClusterStatus {
            conditions: conditions(3),
            observed_generation: Some(3),
            ready_instances: 3,
            current_primary: Some(format!("db-{i}-1")),
            postgres_version: Some(17),
            ..Default::default()
        });
        c
    }));
    let users = fill((0..users_n).map(|i| {
        let mut u = realistic(user.clone(), format!("app-{i}"), i);
        u.spec.cluster.name = format!("db-{}", i % clusters_n.max(1));
        u.status = Some(tusk_api::PostgresUserStatus {
            conditions: conditions(1),
            observed_generation: Some(3),
            role_name: Some(format!("app-{i}")),
            role_oid: Some(16_384 + i as i64),
            secret_name: Some(format!("db-{}-app-{i}-credentials", i % clusters_n.max(1))),
            ..Default::default()
        });
        u.meta_mut().owner_references = Some(vec![OwnerReference {
            api_version: "tusk.dev/v1alpha1".into(),
            kind: "ServiceBinding".into(),
            name: format!("binding-{i}"),
            uid: format!("9d1e2a3b-0000-4000-8000-{i:012x}"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        u
    }));
    let bindings = fill((0..bindings_n).map(|i| {
        let mut b = realistic(binding.clone(), format!("binding-{i}"), i);
        b.status = Some(tusk_api::ServiceBindingStatus {
            conditions: conditions(1),
            observed_generation: Some(3),
            ..Default::default()
        });
        b
    }));

    let stored = clusters.state().len() + users.state().len() + bindings.state().len();
    let after = rss_kib();
    let keep: Vec<Arc<dyn std::any::Any>> =
        vec![Arc::new(clusters), Arc::new(users), Arc::new(bindings)];
    println!("objects={stored}");
    println!("fill_ms={}", started.elapsed().as_millis());
    println!("rss_mib={:.1}", after as f64 / 1024.0);
    println!(
        "stores_mib={:.1}",
        after.saturating_sub(before) as f64 / 1024.0
    );
    drop(keep);
}
