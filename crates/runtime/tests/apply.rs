//! Server-side apply against the in-memory API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tusk_runtime::apply::{self, Outcome};
use tusk_runtime::rbac::test_support::RecordingClient;

async fn fake_client() -> kube::Client {
    kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap()
}

fn config_map(value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("db-patroni".into()),
            namespace: Some("db".into()),
            labels: Some([("tusk.dev/cluster".to_owned(), "db".to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("patroni.yaml".to_owned(), value.to_owned())].into()),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn apply_writes_once_then_nothing_until_drift_or_intent_changes() {
    let recording = RecordingClient::new(fake_client().await);
    let api: Api<ConfigMap> = Api::namespaced(recording.client(), "db");
    let manager = "tusk-cluster-controller";

    assert_eq!(
        apply::ensure(&api, manager, config_map("a"), None)
            .await
            .unwrap(),
        Outcome::Applied
    );
    let observed = api.get("db-patroni").await.unwrap();
    assert_eq!(observed.data.as_ref().unwrap()["patroni.yaml"], "a");

    recording.clear();
    let outcome = apply::ensure(&api, manager, config_map("a"), Some(&observed))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Unchanged);
    assert_eq!(recording.writes(), vec![], "steady state writes nothing");

    // Someone edits the object: the next pass puts it back.
    let mut edited = observed.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("patroni.yaml".into(), "hand edit".into());
    let edited = api
        .replace("db-patroni", &PostParams::default(), &edited)
        .await
        .unwrap();
    assert_eq!(
        apply::ensure(&api, manager, config_map("a"), Some(&edited))
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        api.get("db-patroni").await.unwrap().data.unwrap()["patroni.yaml"],
        "a"
    );

    // The controller's intent changes: applied even though the old fields are all present.
    let current = api.get("db-patroni").await.unwrap();
    let mut without_label = config_map("a");
    without_label.metadata.labels = None;
    assert_eq!(
        apply::ensure(&api, manager, without_label, Some(&current))
            .await
            .unwrap(),
        Outcome::Applied
    );
    let writes = recording.writes();
    assert!(
        writes
            .iter()
            .all(|w| w.verb == "patch" || w.verb == "update"),
        "{writes:?}"
    );
}
