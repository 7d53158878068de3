//! Patroni's Kubernetes DCS after pg_upgrade: the new data directory has a new system
//! identifier, and Patroni refuses to run a data directory whose identifier differs from the
//! `initialize` key it recorded at bootstrap ("system ID mismatch").
//!
//! The Cluster's Patroni runs with `use_endpoints: true` and scope `<cluster>-rw`, so its DCS
//! is two Endpoints objects:
//!
//! - `<cluster>-rw-config`: annotations `initialize` (the system identifier), `config`
//!   (the dynamic configuration), `history` (timeline switches);
//! - `<cluster>-rw`: the leader lock (`leader`, `acquireTime`, `renewTime`, `transitions`,
//!   `ttl`) and the leader's positions (`optime`, `slots`, `retain_slots`).
//!
//! Rather than deleting `initialize` — which would let whichever member starts first
//! *bootstrap a new empty cluster* if it has an empty data directory, as re-created replicas
//! do — the controller sets it to the upgraded system's identifier, which the upgrade Job
//! reports. The primary then starts on its upgraded data; replicas with empty volumes find the
//! key set and wait for the leader to clone from it. `history` and the leader's lock and
//! positions describe the old system and are removed; `config` (the user's parameters) stays.
//! This is done through the API with merge patches while every instance is stopped.

use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::error::Error;
use crate::machine::DcsFacts;

/// Annotations of the leader Endpoints that belong to the old system.
pub const LEADER_STATE_KEYS: &[&str] = &[
    "leader",
    "acquireTime",
    "renewTime",
    "transitions",
    "optime",
    "slots",
    "retain_slots",
    "failsafe",
];

/// The label the Cluster controller's Patroni configuration records the scope under (see
/// crates/cluster-controller/src/shared/layout.rs `SCOPE_LABEL`); Patroni lists its DCS objects by
/// it, so an Endpoints created here must carry it.
const SCOPE_LABEL: &str = "tusk.dev/patroni-scope";

/// Patroni's scope, and the name of the leader Endpoints: `<cluster>-rw`.
pub fn leader_name(cluster: &str) -> String {
    tusk_api::names::read_write_service(cluster)
}

/// The configuration Endpoints: `<scope>-config`.
pub fn config_name(cluster: &str) -> String {
    format!("{}-config", leader_name(cluster))
}

/// What the controller needs to know of the two objects.
pub fn facts(config: Option<&Endpoints>, leader: Option<&Endpoints>) -> DcsFacts {
    let initialize = config.and_then(|c| c.annotations().get("initialize").cloned());
    let leader_state_left = leader.is_some_and(|l| {
        let annotations = l.annotations();
        LEADER_STATE_KEYS
            .iter()
            .any(|key| annotations.get(*key).is_some_and(|v| !v.is_empty()))
    });
    DcsFacts {
        initialize,
        leader_state_left,
    }
}

/// The merge patch of the configuration Endpoints.
pub fn config_patch(system_identifier: &str) -> Value {
    json!({"metadata": {"annotations": {"initialize": system_identifier, "history": null}}})
}

/// The merge patch of the leader Endpoints.
pub fn leader_patch() -> Value {
    let removed: serde_json::Map<String, Value> = LEADER_STATE_KEYS
        .iter()
        .map(|key| ((*key).to_owned(), Value::Null))
        .collect();
    json!({"metadata": {"annotations": removed}})
}

/// Applies both patches; creates the configuration Endpoints if Patroni's is missing (so the
/// key is set before any member starts).
pub async fn rewrite(
    client: &kube::Client,
    namespace: &str,
    cluster: &str,
    system_identifier: &str,
    field_manager: &str,
) -> Result<(), Error> {
    let api = Api::<Endpoints>::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(field_manager.to_owned()),
        ..PatchParams::default()
    };
    let config = config_name(cluster);
    match api
        .patch(
            &config,
            &params,
            &Patch::Merge(config_patch(system_identifier)),
        )
        .await
    {
        Ok(_) => {}
        Err(error) if crate::error::api_code(&error) == Some(404) => {
            let mut endpoints = Endpoints::default();
            endpoints.metadata.name = Some(config.clone());
            endpoints.metadata.namespace = Some(namespace.to_owned());
            let mut labels = tusk_api::labels::cluster_selector(cluster);
            labels.insert(SCOPE_LABEL.to_owned(), leader_name(cluster));
            endpoints.metadata.labels = Some(labels);
            endpoints.metadata.annotations =
                Some([("initialize".to_owned(), system_identifier.to_owned())].into());
            api.create(&PostParams::default(), &endpoints)
                .await
                .map_err(Error::act(format!("creating Endpoints {config}")))?;
        }
        Err(error) => return Err(Error::act(format!("patching Endpoints {config}"))(error)),
    }
    let leader = leader_name(cluster);
    match api
        .patch(&leader, &params, &Patch::Merge(leader_patch()))
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if crate::error::api_code(&error) == Some(404) => Ok(()),
        Err(error) => Err(Error::act(format!("patching Endpoints {leader}"))(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(annotations: &[(&str, &str)]) -> Endpoints {
        let mut e = Endpoints::default();
        e.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        e
    }

    #[test]
    fn names_follow_patronis_scope() {
        assert_eq!(leader_name("db"), "db-rw");
        assert_eq!(config_name("db"), "db-rw-config");
    }

    #[test]
    fn old_leader_state_is_seen_and_cleared() {
        let leader = endpoints(&[("leader", "db-1"), ("optime", "67108960")]);
        let config = endpoints(&[("initialize", "111"), ("config", "{}")]);
        let facts = facts(Some(&config), Some(&leader));
        assert_eq!(facts.initialize.as_deref(), Some("111"));
        assert!(facts.leader_state_left);
        let empty = endpoints(&[("leader", "")]);
        assert!(!super::facts(None, Some(&empty)).leader_state_left);
        let patch = leader_patch();
        assert!(patch["metadata"]["annotations"]["leader"].is_null());
        assert!(patch["metadata"]["annotations"]["optime"].is_null());
    }

    #[test]
    fn config_keeps_parameters_and_takes_the_new_identifier() {
        let patch = config_patch("7441");
        assert_eq!(patch["metadata"]["annotations"]["initialize"], "7441");
        assert!(patch["metadata"]["annotations"]["history"].is_null());
        assert!(patch["metadata"]["annotations"].get("config").is_none());
    }
}
