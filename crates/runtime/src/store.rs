//! What controllers keep of the objects they watch.
//!
//! Reflector stores hold every watched object for the life of the process. `managedFields`
//! and the `kubectl.kubernetes.io/last-applied-configuration` annotation often outweigh the
//! rest of an object and no controller reads them, so they are dropped before an object is
//! stored (`watcher(...).map_ok(|e| e.modify(prune))` in each controller).

use kube::Resource;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes what no controller reads from `object`'s metadata.
pub fn prune<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn prune_drops_managed_fields_and_last_applied_only() {
        let mut cm = ConfigMap::default();
        cm.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        cm.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_owned(), "{}".to_owned()),
                ("keep".to_owned(), "me".to_owned()),
            ]
            .into(),
        );
        prune(&mut cm);
        assert!(cm.metadata.managed_fields.is_none());
        assert_eq!(cm.metadata.annotations.unwrap().len(), 1);
    }
}
