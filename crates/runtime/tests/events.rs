//! Events through kube's real Recorder, against the in-memory API: different transitions with
//! one reason stay separate events, each with its own note; a true repeat forms a series.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};

#[tokio::test]
async fn each_transition_keeps_its_own_note_and_repeats_are_counted() {
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    // Any namespaced object serves as the event's subject; the Recorder only takes its reference.
    let subject = Api::<ConfigMap>::namespaced(client.clone(), "db")
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("pg".into()),
                    namespace: Some("db".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .unwrap();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tusk-cluster-controller".into(),
            instance: Some("test".into()),
        },
    );
    let moves = [
        "switched over from pg-3 to pg-1",
        "switched over from pg-1 to pg-2",
        "switched over from pg-2 to pg-1",
        "switched over from pg-1 to pg-2",
    ];
    for note in moves {
        tusk_runtime::events::publish(&recorder, &subject, EventType::Normal, "Switchover", note)
            .await;
    }

    let events = Api::<K8sEvent>::namespaced(client, "db")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut seen: Vec<(String, i32)> = events
        .iter()
        .map(|event| {
            (
                event.note.clone().unwrap(),
                event.series.as_ref().map_or(1, |series| series.count),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("switched over from pg-1 to pg-2".to_owned(), 2),
            ("switched over from pg-2 to pg-1".to_owned(), 1),
            ("switched over from pg-3 to pg-1".to_owned(), 1),
        ],
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.reason.as_deref() == Some("Switchover"))
    );
}
