//! The commands that ask a controller for something: each writes what the controller acts on
//! (an annotation, a Backup), waits for its answer through the API, and prints it.
//!
//! | command | writes | done when |
//! |---|---|---|
//! | switchover | Cluster annotation `tusk.dev/switchover` | `status.currentPrimary` is the new primary; a `SwitchoverFailed` or `SwitchoverRequestCleared` event is the refusal |
//! | restart | Cluster annotation `tusk.dev/restart` | `status.restartRequest` is the value written |
//! | restart INSTANCE | Cluster annotation `tusk.dev/restart-instance` (`<instance>=<token>`) | the instance's `status.instances[].restartRequest` is the value written and it is ready |
//! | backup | a Backup | `status.phase` Completed (or Failed) |
//! | rotate-password | PostgresUser annotation `tusk.dev/rotate-password` | `status.passwordRotationRequest` is the value written |

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tusk_api::backup::BackupPhase;
use tusk_api::condition::{find_condition, types};
use tusk_api::labels::{
    RESTART_ANNOTATION, RESTART_INSTANCE_ANNOTATION, ROTATE_PASSWORD_ANNOTATION,
    SWITCHOVER_ANNOTATION,
};
use tusk_api::{Backup, Cluster, PostgresUser};

use crate::wait::{Poll, until};
use crate::{BackupKind, Exit, Terminal, get_named};

/// The events by which the Cluster controller says it did not carry a switchover out.
const SWITCHOVER_REFUSALS: [&str; 2] = ["SwitchoverFailed", "SwitchoverRequestCleared"];

/// Sets `annotation` on `K` `name` (a merge patch: nothing else changes, no field ownership
/// taken).
async fn annotate<K>(api: &Api<K>, name: &str, annotation: &str, value: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"annotations": {annotation: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("setting {annotation} on {name}"))?;
    Ok(())
}

/// A value of a request annotation that no earlier request had: the controller records it
/// when done, and the wait looks for it.
fn request_token() -> String {
    format!("kubectl-tusk-{}", jiff::Timestamp::now().as_millisecond())
}

/// `switchover CLUSTER [--to INSTANCE]`.
pub async fn switchover(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    to: Option<&str>,
    timeout: Duration,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    let clusters = Api::<Cluster>::namespaced(client.clone(), namespace);
    let cluster = get_named::<Cluster>(client, namespace, name).await?;
    let status = cluster.status.clone().unwrap_or_default();
    let Some(primary) = status.current_primary.clone() else {
        terminal.line(&format!(
            "Cluster {namespace}/{name} has no primary to switch over from"
        ))?;
        return Ok(Exit::Failed);
    };
    if let Some(target) = to {
        if target == primary {
            terminal.line(&format!("{target} is already the primary of {name}"))?;
            return Ok(Exit::Ok);
        }
        let known: Vec<&str> = status.instances.iter().map(|i| i.name.as_str()).collect();
        if !known.contains(&target) {
            terminal.line(&format!(
                "{target} is not an instance of {name} (instances: {})",
                known.join(", ")
            ))?;
            return Ok(Exit::Error);
        }
    }
    let events = Api::<Event>::namespaced(client.clone(), namespace);
    let seen = refusal_events(&events, name).await?;
    annotate(&clusters, name, SWITCHOVER_ANNOTATION, to.unwrap_or("any")).await?;
    terminal.line(&format!(
        "switchover of {namespace}/{name} requested: from {primary} to {}",
        to.unwrap_or("the healthiest replica")
    ))?;
    let outcome = until(timeout, terminal, || async {
        let now = clusters.get(name).await?;
        let current = now.status.as_ref().and_then(|s| s.current_primary.clone());
        let moved = match (to, current.as_deref()) {
            (Some(target), Some(current)) => current == target,
            (None, Some(current)) => current != primary,
            (_, None) => false,
        };
        if moved {
            return Ok(Poll::Ready(Ok(current.unwrap_or_default())));
        }
        let requested = now.annotations().contains_key(SWITCHOVER_ANNOTATION);
        if !requested {
            let refusals = refusal_events(&events, name).await?;
            if let Some(note) = refusals.difference(&seen).next() {
                return Ok(Poll::Ready(Err(note.1.clone())));
            }
        }
        Ok(Poll::Pending(if requested {
            "waiting for the controller to take the request".to_owned()
        } else {
            format!(
                "Patroni is switching over; primary is {}",
                current.as_deref().unwrap_or("none")
            )
        }))
    })
    .await?;
    match outcome {
        Some(Ok(new_primary)) => {
            terminal.line(&format!("{new_primary} is the primary of {name}"))?;
            Ok(Exit::Ok)
        }
        Some(Err(note)) => {
            terminal.line(&format!("the switchover did not happen: {note}"))?;
            Ok(Exit::Failed)
        }
        None => {
            terminal.line(&format!(
                "no new primary after {}s; `kubectl describe cluster {name}` shows the controller's events",
                timeout.as_secs()
            ))?;
            Ok(Exit::TimedOut)
        }
    }
}

/// The Cluster's switchover refusals so far: (event name and its latest count, note), so a
/// repeated one counts as new.
async fn refusal_events(
    events: &Api<Event>,
    cluster: &str,
) -> anyhow::Result<BTreeSet<((String, i32), String)>> {
    let list = events
        .list(&ListParams::default())
        .await
        .context("listing events (the RBAC for kubectl tusk needs list on events.k8s.io events)")?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Cluster") && r.name.as_deref() == Some(cluster)
            }) && e
                .reason
                .as_deref()
                .is_some_and(|r| SWITCHOVER_REFUSALS.contains(&r))
        })
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            ((e.name_any(), count), e.note.unwrap_or_default())
        })
        .collect())
}

/// `restart CLUSTER [INSTANCE]`.
pub async fn restart(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    instance: Option<&str>,
    timeout: Duration,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    let cluster = get_named::<Cluster>(client, namespace, name).await?;
    if cluster.spec.shutdown {
        terminal.line(&format!(
            "Cluster {namespace}/{name} is shut down (spec.shutdown): there is nothing to restart"
        ))?;
        return Ok(Exit::Error);
    }
    match instance {
        None => restart_cluster(client, &cluster, timeout, terminal).await,
        Some(instance) => restart_instance(client, &cluster, instance, timeout, terminal).await,
    }
}

/// `restart CLUSTER`: every instance, through `tusk.dev/restart`.
async fn restart_cluster(
    client: &kube::Client,
    cluster: &Cluster,
    timeout: Duration,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    let (namespace, name) = (cluster.namespace().unwrap_or_default(), cluster.name_any());
    let clusters = Api::<Cluster>::namespaced(client.clone(), &namespace);
    let request = request_token();
    annotate(&clusters, &name, RESTART_ANNOTATION, &request).await?;
    terminal.line(&format!(
        "rolling restart of {namespace}/{name} requested ({} instances)",
        cluster.spec.instances
    ))?;
    let done = until(timeout, terminal, || async {
        let now = clusters.get(&name).await?;
        let status = now.status.clone().unwrap_or_default();
        if status.restart_request.as_deref() == Some(request.as_str()) {
            return Ok(Poll::Ready(status));
        }
        Ok(Poll::Pending(progress(&status)))
    })
    .await?;
    match done {
        Some(status) => {
            terminal.line(&format!(
                "every instance restarted; {} is the primary",
                status.current_primary.as_deref().unwrap_or("none")
            ))?;
            Ok(Exit::Ok)
        }
        None => restart_timed_out(&name, timeout, terminal),
    }
}

/// `restart CLUSTER INSTANCE`: one instance, through `tusk.dev/restart-instance`; the
/// controller switches over first when it is the primary.
async fn restart_instance(
    client: &kube::Client,
    cluster: &Cluster,
    instance: &str,
    timeout: Duration,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    let (namespace, name) = (cluster.namespace().unwrap_or_default(), cluster.name_any());
    let status = cluster.status.clone().unwrap_or_default();
    let known: Vec<&str> = status.instances.iter().map(|i| i.name.as_str()).collect();
    if !known.contains(&instance) {
        terminal.line(&format!(
            "{instance} is not an instance of {name} (instances: {})",
            known.join(", ")
        ))?;
        return Ok(Exit::Error);
    }
    let was_primary = status.current_primary.as_deref() == Some(instance);
    let clusters = Api::<Cluster>::namespaced(client.clone(), &namespace);
    let request = format!("{instance}={}", request_token());
    annotate(&clusters, &name, RESTART_INSTANCE_ANNOTATION, &request).await?;
    terminal.line(&format!(
        "restart of {instance} requested{}",
        if was_primary {
            " (the primary: the controller switches over to a replica first)"
        } else {
            ""
        }
    ))?;
    let done = until(timeout, terminal, || async {
        let now = clusters.get(&name).await?;
        let status = now.status.clone().unwrap_or_default();
        let restarted = status.instances.iter().any(|i| {
            i.name == instance && i.ready && i.restart_request.as_deref() == Some(request.as_str())
        });
        if restarted {
            return Ok(Poll::Ready(status));
        }
        Ok(Poll::Pending(progress(&status)))
    })
    .await?;
    match done {
        Some(status) => {
            terminal.line(&format!(
                "{instance} restarted and ready; {} is the primary",
                status.current_primary.as_deref().unwrap_or("none")
            ))?;
            Ok(Exit::Ok)
        }
        None => restart_timed_out(&name, timeout, terminal),
    }
}

/// What the controller says it is doing, while a restart is under way.
fn progress(status: &tusk_api::ClusterStatus) -> String {
    match find_condition(&status.conditions, types::PROGRESSING) {
        Some(c) if c.status == "True" => format!("{}: {}", c.reason, c.message),
        _ => "waiting for the controller".to_owned(),
    }
}

fn restart_timed_out(
    name: &str,
    timeout: Duration,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    terminal.line(&format!(
        "the restart has not finished after {}s; it goes on: kubectl tusk status {name}",
        timeout.as_secs()
    ))?;
    Ok(Exit::TimedOut)
}

/// What `backup` was asked for.
#[derive(Debug)]
pub struct BackupRequest<'a> {
    pub cluster: &'a str,
    pub kind: BackupKind,
    pub name: Option<&'a str>,
    /// `--wait` and its timeout.
    pub wait: Option<Duration>,
}

/// The default Backup name: `<cluster>-<full|diff|incr>-<YYYYMMDD-HHMMSS>` in UTC.
pub fn default_backup_name(cluster: &str, kind: BackupKind, now: jiff::Timestamp) -> String {
    let kind = kind.backup_type().pgbackrest_type();
    format!("{cluster}-{kind}-{}", now.strftime("%Y%m%d-%H%M%S"))
}

/// `backup CLUSTER [--type] [--name] [--wait]`.
pub async fn backup(
    client: &kube::Client,
    namespace: &str,
    request: &BackupRequest<'_>,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    let cluster = request.cluster;
    get_named::<Cluster>(client, namespace, cluster).await?;
    let name = request.name.map_or_else(
        || default_backup_name(cluster, request.kind, jiff::Timestamp::now()),
        str::to_owned,
    );
    let backup: Backup = serde_json::from_value(json!({
        "apiVersion": "tusk.dev/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "cluster": {"name": cluster},
            "type": request.kind.backup_type().as_str(),
        },
    }))?;
    let backups = Api::<Backup>::namespaced(client.clone(), namespace);
    backups
        .create(&PostParams::default(), &backup)
        .await
        .with_context(|| format!("creating Backup {namespace}/{name}"))?;
    terminal.line(&format!(
        "Backup {namespace}/{name} created ({} of Cluster {cluster})",
        request.kind.backup_type().as_str()
    ))?;
    let Some(timeout) = request.wait else {
        terminal.line(&format!(
            "follow it with: kubectl get backup -n {namespace} {name} -w"
        ))?;
        return Ok(Exit::Ok);
    };
    let finished = until(timeout, terminal, || async {
        let now = backups.get(&name).await?;
        let status = now.status.clone().unwrap_or_default();
        Ok(match status.phase.unwrap_or_default() {
            BackupPhase::Completed | BackupPhase::Failed => Poll::Ready(now),
            BackupPhase::Pending => {
                Poll::Pending("Pending: waiting for the Cluster and its Job".to_owned())
            }
            BackupPhase::Running => Poll::Pending(format!(
                "Running: Job {}",
                status.job_name.as_deref().unwrap_or("-")
            )),
        })
    })
    .await?;
    let Some(done) = finished else {
        terminal.line(&format!(
            "the backup is not finished after {}s; it goes on: kubectl get backup -n {namespace} {name}",
            timeout.as_secs()
        ))?;
        return Ok(Exit::TimedOut);
    };
    let status = done.status.unwrap_or_default();
    if status.phase == Some(BackupPhase::Completed) {
        let size = status.size.map_or_else(String::new, |s| {
            format!(
                ", {} in the repository ({} of database files)",
                crate::render::bytes(s.repository),
                crate::render::bytes(s.original)
            )
        });
        terminal.line(&format!(
            "completed: {}{size}",
            status.backup_label.as_deref().unwrap_or("no label")
        ))?;
        Ok(Exit::Ok)
    } else {
        terminal.line(&format!(
            "failed: {}",
            status.error.as_deref().unwrap_or("no reason given")
        ))?;
        Ok(Exit::Failed)
    }
}

/// `rotate-password USER`.
pub async fn rotate_password(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    terminal: &mut Terminal<'_>,
) -> anyhow::Result<Exit> {
    let users = Api::<PostgresUser>::namespaced(client.clone(), namespace);
    get_named::<PostgresUser>(client, namespace, name).await?;
    let request = request_token();
    annotate(&users, name, ROTATE_PASSWORD_ANNOTATION, &request).await?;
    terminal.line(&format!(
        "password rotation of {namespace}/{name} requested"
    ))?;
    let rotated = until(timeout, terminal, || async {
        let now = users.get(name).await?;
        let status = now.status.clone().unwrap_or_default();
        if status.password_rotation_request.as_deref() == Some(request.as_str()) {
            return Ok(Poll::Ready(status));
        }
        let ready = find_condition(&status.conditions, types::READY);
        Ok(Poll::Pending(match ready {
            Some(c) if c.status != "True" => format!("waiting: {} ({})", c.reason, c.message),
            _ => "waiting for the controller".to_owned(),
        }))
    })
    .await?;
    match rotated {
        Some(status) => {
            terminal.line(&format!(
                "password rotated{}; Secret {} holds the new one",
                status
                    .last_password_rotation
                    .map_or_else(String::new, |t| format!(" at {}", t.0)),
                status.secret_name.as_deref().unwrap_or("-")
            ))?;
            Ok(Exit::Ok)
        }
        None => {
            terminal.line(&format!(
                "not rotated after {}s; `kubectl describe postgresuser {name}` shows why",
                timeout.as_secs()
            ))?;
            Ok(Exit::TimedOut)
        }
    }
}
