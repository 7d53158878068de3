//! Metadata every child of a Cluster carries: name, namespace, labels, and an owner reference
//! to the Cluster with `controller: true`, so garbage collection removes children with it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use tusk_api::Cluster;
use tusk_api::labels;

/// The owner reference that makes `cluster` the controller of a child.
pub fn owner_reference(cluster: &Cluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&())
}

/// The Cluster's namespace (children live beside it).
pub fn namespace(cluster: &Cluster) -> String {
    cluster
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

/// The Cluster's name.
pub fn cluster_name(cluster: &Cluster) -> String {
    cluster.metadata.name.clone().unwrap_or_default()
}

/// Metadata for a child named `name` with `component` (`database`, `tls`, `patroni`, ...).
pub fn child_meta(cluster: &Cluster, name: impl Into<String>, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace(cluster)),
        labels: Some(labels::cluster_child_labels(
            &cluster_name(cluster),
            component,
        )),
        owner_references: owner_reference(cluster).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// `child_meta` plus extra labels.
pub fn child_meta_with_labels(
    cluster: &Cluster,
    name: impl Into<String>,
    component: &str,
    extra: BTreeMap<String, String>,
) -> ObjectMeta {
    let mut meta = child_meta(cluster, name, component);
    meta.labels.get_or_insert_with(BTreeMap::new).extend(extra);
    meta
}

/// The Patroni ServiceAccount, Role and RoleBinding share this name: `<cluster>-patroni`.
pub fn patroni_account_name(cluster: &Cluster) -> String {
    format!("{}-patroni", cluster_name(cluster))
}
