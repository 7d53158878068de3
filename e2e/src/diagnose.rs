//! What a failed scenario prints, so a red run explains itself: every tusk object in the
//! scenario's namespaces with its conditions, the pods that are not ready (container states,
//! restarts, termination messages and the end of their logs, read through the API), recent
//! Warning events, and the operator's last log lines about those namespaces.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};
use tusk_api::{Backup, BackupSchedule, Cluster, PGUpgrade, PostgresUser, ServiceBinding};

use crate::env::E2e;
use crate::k8s::{HasConditions, describe_conditions};

/// Log lines quoted per container.
const POD_LOG_LINES: i64 = 40;
/// Operator log lines read, of which those naming a scenario namespace are printed.
const OPERATOR_LOG_LINES: i64 = 2000;
/// Operator log lines printed at most.
const OPERATOR_LINES_SHOWN: usize = 60;

/// The report for `namespaces`; never fails (what cannot be read is said in the report).
pub async fn report(e2e: &E2e, namespaces: &[String]) -> String {
    let mut out = String::new();
    for ns in namespaces {
        let _ = writeln!(out, "=== namespace {ns}");
        objects::<Cluster>(e2e, ns, &mut out).await;
        objects::<PostgresUser>(e2e, ns, &mut out).await;
        objects::<ServiceBinding>(e2e, ns, &mut out).await;
        objects::<Backup>(e2e, ns, &mut out).await;
        objects::<BackupSchedule>(e2e, ns, &mut out).await;
        objects::<PGUpgrade>(e2e, ns, &mut out).await;
        pods(e2e, ns, &mut out).await;
        warnings(e2e, ns, &mut out).await;
    }
    operator_log(e2e, namespaces, &mut out).await;
    out
}

async fn objects<K>(e2e: &E2e, ns: &str, out: &mut String)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + HasConditions
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&());
    match Api::<K>::namespaced(e2e.client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => {
            for object in list.items {
                let _ = writeln!(
                    out,
                    "{kind} {}: {}",
                    object.name_any(),
                    describe_conditions(object.conditions())
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "{kind}: cannot list: {e}");
        }
    }
}

/// Pods that are not ready or have restarted: their container states and the end of the log.
async fn pods(e2e: &E2e, ns: &str, out: &mut String) {
    let api = Api::<Pod>::namespaced(e2e.client.clone(), ns);
    let pods = match api.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => {
            let _ = writeln!(out, "pods: cannot list: {e}");
            return;
        }
    };
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        let containers = status.container_statuses.clone().unwrap_or_default();
        let troubled: Vec<_> = containers
            .iter()
            .filter(|c| !c.ready || c.restart_count > 0)
            .collect();
        let succeeded = status.phase.as_deref() == Some("Succeeded");
        if troubled.is_empty() || succeeded {
            continue;
        }
        let _ = writeln!(
            out,
            "pod {} phase {:?}",
            pod.name_any(),
            status.phase.as_deref().unwrap_or("?")
        );
        for c in troubled {
            let state = c.state.as_ref();
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let current = if state.and_then(|s| s.running.as_ref()).is_some() {
                "running".to_owned()
            } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                format!("waiting {}", w.reason.as_deref().unwrap_or(""))
            } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                format!("terminated exit {}", t.exit_code)
            } else {
                "unknown".to_owned()
            };
            let _ = writeln!(
                out,
                "  container {}: {current}, ready {}, restarts {}{}",
                c.name,
                c.ready,
                c.restart_count,
                last.map(|t| format!(", last exit {}", t.exit_code))
                    .unwrap_or_default()
            );
            let message = state
                .and_then(|s| s.terminated.as_ref())
                .or(last)
                .and_then(|t| t.message.clone());
            if let Some(message) = message.filter(|m| !m.trim().is_empty()) {
                let _ = writeln!(out, "  termination message:\n{}", indent(&message));
            }
            let log = api
                .logs(
                    &pod.name_any(),
                    &LogParams {
                        container: Some(c.name.clone()),
                        tail_lines: Some(POD_LOG_LINES),
                        ..LogParams::default()
                    },
                )
                .await;
            match log {
                Ok(log) if !log.trim().is_empty() => {
                    let _ = writeln!(out, "  last log lines:\n{}", indent(&log));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = writeln!(out, "  log: cannot read: {e}");
                }
            }
        }
    }
}

async fn warnings(e2e: &E2e, ns: &str, out: &mut String) {
    let Ok(list) = Api::<Event>::namespaced(e2e.client.clone(), ns)
        .list(&ListParams::default())
        .await
    else {
        return;
    };
    for event in list
        .items
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
    {
        let _ = writeln!(
            out,
            "warning {} {}: {}",
            event
                .regarding
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_default(),
            event.reason.as_deref().unwrap_or(""),
            event.note.as_deref().unwrap_or("")
        );
    }
}

async fn operator_log(e2e: &E2e, namespaces: &[String], out: &mut String) {
    let ns = &e2e.settings.operator_namespace;
    let api = Api::<Pod>::namespaced(e2e.client.clone(), ns);
    let pods = match api
        .list(&ListParams::default().labels("app.kubernetes.io/name=tusk"))
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            let _ = writeln!(out, "operator pods in {ns}: cannot list: {e}");
            return;
        }
    };
    for pod in pods {
        let log = api
            .logs(
                &pod.name_any(),
                &LogParams {
                    tail_lines: Some(OPERATOR_LOG_LINES),
                    ..LogParams::default()
                },
            )
            .await
            .unwrap_or_else(|e| format!("cannot read the log: {e}"));
        let lines = relevant_lines(&log, namespaces, OPERATOR_LINES_SHOWN);
        let _ = writeln!(
            out,
            "=== operator {ns}/{} (last lines about this scenario)\n{}",
            pod.name_any(),
            indent(&lines.join("\n"))
        );
    }
}

/// The last `max` lines of `log` that name one of `namespaces`, or the last `max` lines when
/// none does.
pub fn relevant_lines<'a>(log: &'a str, namespaces: &[String], max: usize) -> Vec<&'a str> {
    let all: Vec<&str> = log.lines().collect();
    let about: Vec<&str> = all
        .iter()
        .copied()
        .filter(|line| namespaces.iter().any(|ns| line.contains(ns.as_str())))
        .collect();
    let chosen = if about.is_empty() { all } else { about };
    chosen[chosen.len().saturating_sub(max)..].to_vec()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_lines_about_the_scenario_are_preferred_and_bounded() {
        let log = "a e2e-x-1 one\nb other\nc e2e-x-1 two\nd e2e-x-1 three\n";
        let ns = vec!["e2e-x-1".to_owned()];
        assert_eq!(
            relevant_lines(log, &ns, 2),
            vec!["c e2e-x-1 two", "d e2e-x-1 three"]
        );
        assert_eq!(
            relevant_lines("x\ny\nz\n", &ns, 2),
            vec!["y", "z"],
            "none about it: the last lines"
        );
        assert!(relevant_lines("", &ns, 2).is_empty());
    }
}
