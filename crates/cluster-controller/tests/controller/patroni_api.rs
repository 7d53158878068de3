//! What the controller asks of Patroni's REST API, against a stand-in for it: parameter
//! changes (PATCH /config), pending restarts, switchovers.

use super::*;

/// A stand-in for the Patroni REST API of the three instance pods (pod IPs 127.0.0.11–13,
/// port 8008): serves `GET /cluster` and `GET /config` from shared state and records the
/// unsafe requests the controller sends.
mod fake_patroni {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    pub(crate) struct Dcs {
        pub(crate) members: serde_json::Value,
        pub(crate) config: serde_json::Value,
        /// (address, method, path, had credentials, body)
        pub(crate) requests: Vec<(String, String, String, bool, String)>,
        /// What `POST /switchover` answers instead of carrying it out (Patroni's 412 "no good
        /// candidates", say); `None` moves the leader to the candidate, as Patroni does.
        pub(crate) switchover_refusal: Option<(u16, String)>,
    }

    pub(crate) type Shared = Arc<Mutex<Dcs>>;

    pub(crate) async fn serve(ip: &str, dcs: Shared) -> Option<()> {
        let listener = tokio::net::TcpListener::bind((ip, 8008)).await.ok()?;
        let ip = ip.to_owned();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let dcs = dcs.clone();
                let ip = ip.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0_u8; 4096];
                    let (head, body) = loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buffer).into_owned();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let length: usize = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if body.len() >= length {
                                break (head.to_owned(), body.to_owned());
                            }
                        }
                    };
                    let mut words = head.split_whitespace();
                    let (method, path) = (
                        words.next().unwrap_or_default().to_owned(),
                        words.next().unwrap_or_default().to_owned(),
                    );
                    let authorized = head.to_ascii_lowercase().contains("authorization: basic ");
                    let (code, answer) = {
                        let mut dcs = dcs.lock().unwrap();
                        match (method.as_str(), path.as_str()) {
                            ("GET", "/cluster") => (200, dcs.members.to_string()),
                            ("GET", "/config") => (200, dcs.config.to_string()),
                            ("POST", "/switchover") => {
                                dcs.requests.push((
                                    ip.clone(),
                                    method,
                                    path,
                                    authorized,
                                    body.clone(),
                                ));
                                match dcs.switchover_refusal.clone() {
                                    Some(refusal) => refusal,
                                    None => {
                                        let request: serde_json::Value =
                                            serde_json::from_str(&body).unwrap_or_default();
                                        let candidate = request["candidate"].as_str();
                                        for member in dcs.members["members"].as_array_mut().unwrap()
                                        {
                                            let role = if member["name"].as_str() == candidate {
                                                "leader"
                                            } else {
                                                "replica"
                                            };
                                            member["role"] = role.into();
                                        }
                                        (200, "Successfully switched over".to_owned())
                                    }
                                }
                            }
                            _ => {
                                dcs.requests
                                    .push((ip.clone(), method, path, authorized, body));
                                (200, "{}".to_owned())
                            }
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Some(())
    }
}

#[tokio::test]
async fn parameter_changes_go_to_patroni_and_pending_restarts_restart_a_replica_in_place() {
    use std::sync::Mutex;
    use tusk_cluster_controller::plan::patroni;

    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    // The pods' IPs, where the controller finds Patroni.
    for n in 1..=3 {
        let api = h.api::<Pod>();
        let mut pod = api.get(&format!("db-{n}-0")).await.unwrap();
        pod.status.as_mut().unwrap().pod_ip = Some(format!("127.0.0.{}", 10 + n));
        api.replace_status(&format!("db-{n}-0"), &PostParams::default(), &pod)
            .await
            .unwrap();
    }
    let current = h.cluster().await;
    let dcs: fake_patroni::Shared = Arc::new(Mutex::new(fake_patroni::Dcs {
        members: serde_json::json!({"members": [
            {"name": "db-1-0", "role": "leader", "state": "running"},
            {"name": "db-2-0", "role": "replica", "state": "running", "lag": 0},
            {"name": "db-3-0", "role": "replica", "state": "running", "lag": 0},
        ]}),
        config: serde_json::to_value(patroni::dynamic_config(&current).unwrap()).unwrap(),
        requests: Vec::new(),
        switchover_refusal: None,
    }));
    for n in 1..=3 {
        if fake_patroni::serve(&format!("127.0.0.{}", 10 + n), dcs.clone())
            .await
            .is_none()
        {
            eprintln!("skipped: cannot listen on 127.0.0.1x:8008 here");
            return;
        }
    }
    let reachable = Arc::new(State {
        patroni_api: true,
        ..(*h.state).clone()
    });
    let reconcile_reachable =
        || async { reconcile(Arc::new(h.cluster().await), reachable.clone()).await };

    // In step with the DCS: nothing is sent to Patroni and nothing written to the API.
    reconcile_reachable().await.unwrap();
    h.recording.clear();
    reconcile_reachable().await.unwrap();
    assert!(dcs.lock().unwrap().requests.is_empty());
    assert_eq!(h.recording.writes(), vec![]);

    // A restart-only parameter: one PATCH /config with only that parameter, with credentials.
    let mut changed = h.cluster().await;
    changed
        .spec
        .postgresql
        .parameters
        .insert("shared_buffers".into(), "1GB".into());
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &changed)
        .await
        .unwrap();
    reconcile_reachable().await.unwrap();
    {
        let mut dcs = dcs.lock().unwrap();
        let requests = std::mem::take(&mut dcs.requests);
        assert_eq!(requests.len(), 1, "{requests:?}");
        let (_, method, path, authorized, body) = &requests[0];
        assert_eq!(
            (method.as_str(), path.as_str(), *authorized),
            ("PATCH", "/config", true)
        );
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"postgresql": {"parameters": {"shared_buffers": "1GB"}}})
        );
        // Patroni applied it and now reports the restart every member needs.
        dcs.config["postgresql"]["parameters"]["shared_buffers"] = "1GB".into();
        for member in dcs.members["members"].as_array_mut().unwrap() {
            member["pending_restart"] = true.into();
        }
    }
    reconcile_reachable().await.unwrap();
    {
        let requests = std::mem::take(&mut dcs.lock().unwrap().requests);
        assert_eq!(
            requests
                .iter()
                .map(|(ip, method, path, authorized, _)| (
                    ip.as_str(),
                    method.as_str(),
                    path.as_str(),
                    *authorized
                ))
                .collect::<Vec<_>>(),
            vec![("127.0.0.13", "POST", "/restart", true)],
            "the highest replica first, in place; no pod deleted"
        );
    }
    assert!(
        !h.recording
            .writes()
            .iter()
            .any(|c| c.resource == "pods" && c.verb == "delete")
    );
    let progressing = find_condition(
        &h.cluster().await.status.unwrap().conditions,
        types::PROGRESSING,
    )
    .cloned()
    .unwrap();
    assert_eq!(progressing.reason, "RollingUpdate");
    assert!(
        progressing.message.contains("PostgreSQL"),
        "{}",
        progressing.message
    );
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &h.recording.calls()),
        vec![]
    );
}

/// Three running instances, pod IPs 127.0.0.{first}–{first+2} with a fake Patroni on each
/// (db-1 the leader), and the controller allowed to reach it. `None` where this machine
/// cannot listen on those addresses.
async fn with_fake_patroni(first: u8) -> Option<(Harness, fake_patroni::Shared, Arc<State>)> {
    use std::sync::Mutex;
    use tusk_cluster_controller::plan::patroni;

    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(1, true).await;
    for n in 1..=3_u8 {
        let api = h.api::<Pod>();
        let name = format!("db-{n}-0");
        let mut pod = api.get(&name).await.unwrap();
        pod.status.as_mut().unwrap().pod_ip = Some(format!("127.0.0.{}", first + n - 1));
        api.replace_status(&name, &PostParams::default(), &pod)
            .await
            .unwrap();
    }
    let current = h.cluster().await;
    let dcs: fake_patroni::Shared = Arc::new(Mutex::new(fake_patroni::Dcs {
        members: serde_json::json!({"members": [
            {"name": "db-1-0", "role": "leader", "state": "running", "timeline": 1},
            {"name": "db-2-0", "role": "replica", "state": "streaming", "lag": 0, "timeline": 1},
            {"name": "db-3-0", "role": "replica", "state": "streaming", "lag": 0, "timeline": 1},
        ]}),
        config: serde_json::to_value(patroni::dynamic_config(&current).unwrap()).unwrap(),
        requests: Vec::new(),
        switchover_refusal: None,
    }));
    for n in 0..3 {
        fake_patroni::serve(&format!("127.0.0.{}", first + n), dcs.clone()).await?;
    }
    let reachable = Arc::new(State {
        patroni_api: true,
        ..(*h.state).clone()
    });
    // Settle: status and children in step with the fake DCS.
    reconcile(Arc::new(h.cluster().await), reachable.clone())
        .await
        .unwrap();
    Some((h, dcs, reachable))
}

async fn request_switchover(h: &Harness, value: &str) -> Cluster {
    let mut requested = h.cluster().await;
    requested
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::SWITCHOVER_ANNOTATION.to_owned(), value.to_owned());
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &requested)
        .await
        .unwrap()
}

fn switchover_posts(dcs: &fake_patroni::Shared) -> Vec<String> {
    dcs.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(_, method, path, _, _)| method == "POST" && path == "/switchover")
        .map(|(_, _, _, _, body)| body.clone())
        .collect()
}

#[tokio::test]
async fn switchover_request_for_the_current_primary_is_cleared() {
    let h = Harness::new(cluster(THREE)).await;
    h.reconcile().await;
    h.start_pods(2, true).await;
    h.reconcile().await;
    let mut requested = h.cluster().await;
    requested
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(labels::SWITCHOVER_ANNOTATION.to_owned(), "db-2".to_owned());
    h.api::<Cluster>()
        .replace("db", &PostParams::default(), &requested)
        .await
        .unwrap();
    h.reconcile().await;
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION)
    );
    let calls = h.recording.calls();
    assert_eq!(
        disallowed_calls(tusk_cluster_controller::rbac::RULES, &calls),
        vec![]
    );
}

/// Models what broke on a real cluster: with `any`, every pass found another healthy replica
/// and switched again (13 moves in two minutes). The request is claimed — the annotation
/// removed with the resourceVersion the pass read, as the API server checks it — before
/// Patroni is asked, so a pass that still sees the annotation in a stale cache (the watch
/// has not delivered the removal yet) gets 409 Conflict and does nothing.
#[tokio::test]
async fn switchover_any_is_carried_out_once_and_cleared() {
    let Some((h, dcs, reachable)) = with_fake_patroni(21).await else {
        eprintln!("skipped: cannot listen on 127.0.0.21-23:8008 here");
        return;
    };
    let stale = request_switchover(&h, "any").await;
    reconcile(Arc::new(stale.clone()), reachable.clone())
        .await
        .unwrap();
    let posts = switchover_posts(&dcs);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let body: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
    assert_eq!(body["leader"], "db-1-0");
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION),
        "the request is cleared"
    );

    // The stale object (annotation still on it), then the current one, several times.
    reconcile(Arc::new(stale), reachable.clone()).await.unwrap();
    for _ in 0..3 {
        reconcile(Arc::new(h.cluster().await), reachable.clone())
            .await
            .unwrap();
    }
    assert_eq!(switchover_posts(&dcs).len(), 1, "exactly one switchover");
    let events = cluster_events(&h).await;
    let switched: Vec<_> = events.iter().filter(|e| e.1 == "Switchover").collect();
    assert_eq!(switched.len(), 1, "{events:?}");
    assert!(
        switched[0].2.contains("tusk.dev/switchover=any"),
        "{switched:?}"
    );
}

#[tokio::test]
async fn a_switchover_patroni_refuses_is_reported_once_and_cleared() {
    let Some((h, dcs, reachable)) = with_fake_patroni(24).await else {
        eprintln!("skipped: cannot listen on 127.0.0.24-26:8008 here");
        return;
    };
    dcs.lock().unwrap().switchover_refusal = Some((
        412,
        "switchover is not possible: no good candidates have been found".into(),
    ));
    request_switchover(&h, "db-3").await;
    for _ in 0..3 {
        reconcile(Arc::new(h.cluster().await), reachable.clone())
            .await
            .unwrap();
    }
    assert_eq!(switchover_posts(&dcs).len(), 1, "asked once, not retried");
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION)
    );
    let events = cluster_events(&h).await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.1 == "SwitchoverFailed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].0, "Warning");
    assert!(failed[0].2.contains("no good candidates"), "{failed:?}");
    assert!(
        failed[0].2.contains("tusk.dev/switchover=db-3"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_switchover_to_an_unknown_instance_is_cleared_with_the_reason() {
    let Some((h, dcs, reachable)) = with_fake_patroni(27).await else {
        eprintln!("skipped: cannot listen on 127.0.0.27-29:8008 here");
        return;
    };
    request_switchover(&h, "db-9").await;
    reconcile(Arc::new(h.cluster().await), reachable.clone())
        .await
        .unwrap();
    assert!(switchover_posts(&dcs).is_empty());
    assert!(
        !h.cluster()
            .await
            .annotations()
            .contains_key(labels::SWITCHOVER_ANNOTATION)
    );
    let events = cluster_events(&h).await;
    let cleared: Vec<_> = events
        .iter()
        .filter(|e| e.1 == "SwitchoverRequestCleared")
        .collect();
    assert_eq!(cleared.len(), 1, "{events:?}");
    assert!(cleared[0].2.contains("no such instance"), "{cleared:?}");
}

/// What Patroni's `GET /cluster` says of each member ends up in `status.instances`: the
/// timeline and the replicas' lag (what `kubectl tusk status` shows).
#[tokio::test]
async fn patronis_view_fills_each_instances_timeline_and_lag() {
    let Some((h, _dcs, _reachable)) = with_fake_patroni(33).await else {
        eprintln!("skipped: cannot listen on 127.0.0.33-35:8008 here");
        return;
    };
    let status = h.cluster().await.status.unwrap();
    let seen: Vec<_> = status
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.timeline, i.lag_bytes))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("db-1", Some(1), None),
            ("db-2", Some(1), Some(0)),
            ("db-3", Some(1), Some(0)),
        ]
    );
}
