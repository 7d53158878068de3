//! Waiting for tusk's CRDs, against the in-memory API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionCondition, CustomResourceDefinitionStatus,
};
use kube::Api;
use kube::api::PostParams;

async fn fake_client() -> kube::Client {
    kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn crd_wait_returns_once_established() {
    let client = fake_client().await;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = "clusters.tusk.dev".to_owned();
    let waiting = tokio::spawn(tusk_operator::crd::wait_established(
        client.clone(),
        vec![name],
        Duration::from_millis(20),
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "no CRD yet: still waiting");

    let mut crd = <tusk_api::Cluster as kube::CustomResourceExt>::crd();
    crd.status = Some(CustomResourceDefinitionStatus {
        conditions: Some(vec![CustomResourceDefinitionCondition {
            type_: "Established".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    api.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("returns once established")
        .unwrap();
}
