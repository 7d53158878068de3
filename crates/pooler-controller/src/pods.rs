//! The Pooler's running pods, through each one's PgBouncer admin console.
//!
//! ```text
//!   Deployment ──owns──► ReplicaSets ──own──► pods        (by owner, not only by label)
//!   each ready pod: SHOW CONFIG == tunable_settings(spec)?
//!                   └─ no: RELOAD (the kubelet may have refreshed pgbouncer.ini),
//!                          SHOW CONFIG again; what still differs and is changeable: SET
//!                          (the file catches up later; a restart reads it)
//!                   spec.paused: PAUSE (bounded wait)   was paused, no longer: RESUME
//! ```
//!
//! The kubelet refreshes a mounted ConfigMap within about a minute of its change, and
//! PgBouncer reads its file only on `RELOAD`; `SET` applies the same values at once, so a
//! settings change takes effect without a restart and without waiting for the kubelet. Only a
//! setting PgBouncer cannot change at run time stays pending (reason ReloadPending, naming it)
//! until the pod restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Resource, ResourceExt};
use tusk_api::Pooler;
use tusk_runtime::postgres::PrimaryTarget;

use crate::admin;
use crate::auth::ADMIN_ROLE;
use crate::children::pod_selector;
use crate::config::{POOLER_PORT, tunable_settings};
use crate::error::Error;

/// How long one pod's console may take (connect, SHOW, RELOAD, SET).
pub const CONSOLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the controller waits for `PAUSE` to finish before reporting Pausing and looking
/// again later (PgBouncer keeps pausing meanwhile).
pub const PAUSE_WAIT: Duration = Duration::from_secs(5);

/// How to reach a pod's admin console.
#[derive(Clone)]
pub struct Console {
    /// The name PgBouncer's certificate carries (`<pooler>.<namespace>.svc`).
    pub host: String,
    /// The CA that issued it.
    pub ca_pem: Vec<u8>,
    /// The admin console user's password.
    pub password: String,
    /// Every pod's console at this address instead of the pod's IP (tests).
    pub address: Option<SocketAddr>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("host", &self.host)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Console {
    fn target(&self, pod_ip: IpAddr) -> PrimaryTarget {
        let (address, port) = match self.address {
            Some(address) => (address.ip(), address.port()),
            None => (pod_ip, POOLER_PORT),
        };
        PrimaryTarget {
            host: self.host.clone(),
            port,
            address: Some(address),
            ca_pem: Some(self.ca_pem.clone()),
            user: ADMIN_ROLE.to_owned(),
            password: self.password.clone(),
        }
    }
}

/// What the pods run, as status reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodsSummary {
    /// Ready pods whose console answered.
    pub reached: usize,
    /// Per pod, settings it does not run yet (only a restart would apply them).
    pub pending: BTreeMap<String, Vec<String>>,
    /// Per pod, why its console could not be used.
    pub unreachable: BTreeMap<String, String>,
    /// Per pod, the settings this pass applied (RELOAD or SET).
    pub applied: BTreeMap<String, Vec<String>>,
    /// Pods holding new queries (spec.paused).
    pub paused: BTreeSet<String>,
    /// Pods still finishing a PAUSE.
    pub pausing: BTreeSet<String>,
}

/// The pods of `deployment` (through its ReplicaSets), with the IP of those that are ready.
pub async fn owned_pods(
    client: &kube::Client,
    pooler: &Pooler,
    deployment: &Deployment,
) -> Result<Vec<(String, Option<IpAddr>)>, Error> {
    let namespace = pooler.namespace().unwrap_or_default();
    let selector = pod_selector(pooler)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let params = ListParams::default().labels(&selector);
    let deployment_uid = deployment.uid();
    let sets: BTreeSet<String> = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
        .list(&params)
        .await
        .map_err(Error::Kube)?
        .items
        .iter()
        .filter(|set| controlled_by(*set, deployment_uid.as_deref()))
        .filter_map(ResourceExt::uid)
        .collect();
    let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&params)
        .await
        .map_err(Error::Kube)?
        .items;
    Ok(pods
        .into_iter()
        .filter(|pod| {
            pod.owner_references().iter().any(|owner| {
                owner.controller == Some(true)
                    && owner.kind == "ReplicaSet"
                    && sets.contains(&owner.uid)
            })
        })
        .map(|pod| {
            let ip = ready_ip(&pod);
            (pod.name_any(), ip)
        })
        .collect())
}

fn controlled_by<K: Resource>(object: &K, uid: Option<&str>) -> bool {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true) && Some(owner.uid.as_str()) == uid)
}

/// The pod's IP when it is ready and not going away.
fn ready_ip(pod: &Pod) -> Option<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    ready.then(|| status.pod_ip.as_deref()?.parse().ok())?
}

/// Brings every ready pod to the Pooler's settings and pause state.
pub async fn sync(
    client: &kube::Client,
    pooler: &Pooler,
    deployment: &Deployment,
    console: &Console,
    resume: bool,
) -> Result<PodsSummary, Error> {
    let desired = tunable_settings(pooler);
    let mut summary = PodsSummary::default();
    for (pod, ip) in owned_pods(client, pooler, deployment).await? {
        let Some(ip) = ip else { continue };
        let target = console.target(ip);
        let pass = sync_pod(&target, &desired, pooler.spec.paused, resume);
        match tokio::time::timeout(CONSOLE_TIMEOUT + PAUSE_WAIT, pass).await {
            Ok(Ok(outcome)) => {
                summary.reached += 1;
                if !outcome.pending.is_empty() {
                    summary.pending.insert(pod.clone(), outcome.pending);
                }
                if !outcome.applied.is_empty() {
                    summary.applied.insert(pod.clone(), outcome.applied);
                }
                match outcome.pause {
                    Some(PauseState::Paused) => {
                        summary.paused.insert(pod);
                    }
                    Some(PauseState::Pausing) => {
                        summary.pausing.insert(pod);
                    }
                    None => {}
                }
            }
            Ok(Err(problem)) => {
                summary.unreachable.insert(pod, problem);
            }
            Err(_) => {
                summary
                    .unreachable
                    .insert(pod, "its admin console did not answer in time".to_owned());
            }
        }
    }
    Ok(summary)
}

#[derive(Debug, PartialEq, Eq)]
enum PauseState {
    Paused,
    Pausing,
}

#[derive(Debug, Default)]
struct PodOutcome {
    pending: Vec<String>,
    applied: Vec<String>,
    pause: Option<PauseState>,
}

/// One pod: settings, then pause state. The error is a message for the status (never a
/// password: the console's own errors and what failed).
async fn sync_pod(
    target: &PrimaryTarget,
    desired: &[(String, String)],
    paused: bool,
    resume: bool,
) -> Result<PodOutcome, String> {
    let console = target
        .connect("pgbouncer", "tusk-pooler-controller")
        .await
        .map_err(|error| format!("cannot reach its admin console: {error}"))?;
    let failed = |step: &str| {
        let step = step.to_owned();
        move |error: tokio_postgres::Error| format!("{step} failed: {error}")
    };
    let mut outcome = PodOutcome::default();
    let shown = admin::show_config(&console)
        .await
        .map_err(failed("SHOW CONFIG"))?;
    let before: Vec<String> = admin::pending_settings(desired, &shown)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !before.is_empty() {
        admin::reload(&console).await.map_err(failed("RELOAD"))?;
        let shown = admin::show_config(&console)
            .await
            .map_err(failed("SHOW CONFIG"))?;
        for key in admin::pending_settings(desired, &shown) {
            let changeable = shown.get(key).is_some_and(|shown| shown.changeable);
            let value = desired
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| value.as_str())
                .unwrap_or_default();
            if changeable {
                admin::set(&console, key, value)
                    .await
                    .map_err(failed(&format!("SET {key}")))?;
            }
        }
        let shown = admin::show_config(&console)
            .await
            .map_err(failed("SHOW CONFIG"))?;
        outcome.pending = admin::pending_settings(desired, &shown)
            .into_iter()
            .map(str::to_owned)
            .collect();
        outcome.applied = before
            .into_iter()
            .filter(|key| !outcome.pending.contains(key))
            .collect();
    }
    if paused {
        outcome.pause = Some(
            match tokio::time::timeout(PAUSE_WAIT, admin::pause(&console)).await {
                Ok(Ok(())) => PauseState::Paused,
                Ok(Err(error)) if admin::is_already_paused(&error) => {
                    // Sent before; done once no server connection is in use any more.
                    match admin::server_connections_in_use(&console).await {
                        Ok(0) => PauseState::Paused,
                        Ok(_) => PauseState::Pausing,
                        Err(error) => return Err(format!("SHOW POOLS failed: {error}")),
                    }
                }
                Ok(Err(error)) => return Err(format!("PAUSE failed: {error}")),
                Err(_) => PauseState::Pausing,
            },
        );
    } else if resume {
        match admin::resume(&console).await {
            Ok(()) => {}
            Err(error) if admin::is_not_paused(&error) => {}
            Err(error) => return Err(format!("RESUME failed: {error}")),
        }
    }
    Ok(outcome)
}
