//! What the rollout planner reads (the spec's wishes and the instances as observed) and what
//! it decides (a [`Plan`] with one [`Step`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::observe::Role;

/// One instance as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedInstance {
    /// Ordinal `n` of `<cluster>-<n>`.
    pub ordinal: u32,
    /// Whether its StatefulSet exists.
    pub statefulset: bool,
    /// Its pod, if one exists.
    pub pod: Option<ObservedPod>,
}

/// An instance pod as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPod {
    pub role: Role,
    /// Ready per its readiness probe (Patroni `/readiness`: running, and streaming for a
    /// replica).
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// The restart hash the pod was created with.
    pub restart_hash: Option<String>,
    /// Bytes of WAL a replica is behind, when Patroni reported it.
    pub lag_bytes: Option<i64>,
    /// Milliseconds a replica's replay is behind, when the primary has a recent measurement.
    pub replay_lag_ms: Option<i64>,
    /// The `tusk.dev/restart-instance` request the pod was created for.
    pub restart_request: Option<String>,
    /// The PostgreSQL timeline the instance is on, when Patroni reported it.
    pub timeline: Option<i64>,
    /// Patroni reports a parameter change that only a restart of PostgreSQL applies.
    pub pending_restart: bool,
    /// Patroni's synchronous standby: in synchronous mode Patroni switches over only to one.
    pub sync_standby: bool,
    /// The `postgres` container's last failure, as the kubelet reports it.
    pub crash: Option<crate::observe::crash::Crash>,
}

/// What the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub instances: u32,
    /// Hash of everything that needs a pod restart to take effect.
    pub restart_hash: String,
    /// The `tusk.dev/restart-instance` request each instance's pod template carries (the
    /// current one for the instance it names, the last one for the others).
    pub restart_requests: BTreeMap<u32, String>,
    /// Stop every instance and keep the volumes.
    pub shutdown: bool,
    /// A replica further behind than this is not caught up.
    pub max_lag_bytes: i64,
    /// A switchover asked for with the `tusk.dev/switchover` annotation.
    pub switchover: Option<SwitchoverRequest>,
    /// Patroni runs in synchronous mode: it switches over only to a synchronous standby, so
    /// no other replica is a target (the planner waits while none is registered).
    pub synchronous: bool,
}

impl Desired {
    /// Whether the pod of instance `ordinal` was created from the desired template: the
    /// restart hash and the instance's restart request both match.
    pub fn pod_is_current(&self, ordinal: u32, pod: &ObservedPod) -> bool {
        pod.restart_hash.as_deref() == Some(self.restart_hash.as_str())
            && pod.restart_request.as_ref() == self.restart_requests.get(&ordinal)
    }
}

/// Where a requested switchover should go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchoverRequest {
    /// The healthiest replica.
    Any,
    /// This instance.
    To(u32),
}

/// The next thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: every instance runs the desired configuration.
    Idle,
    /// Something is in flight; check again soon.
    Wait { reason: String },
    /// Make `to` the primary through Patroni.
    Switchover { from: u32, to: u32, reason: String },
    /// Delete the pod so its StatefulSet recreates it with the new template.
    RestartPod { ordinal: u32, reason: String },
    /// Ask the instance's Patroni to restart PostgreSQL in place (`POST /restart`), for a
    /// parameter change Patroni reports as `pending_restart`.
    RestartPostgres { ordinal: u32, reason: String },
    /// Delete the instance's StatefulSet (its volume is kept).
    RemoveInstance { ordinal: u32 },
}

/// The plan: which instances should run (their StatefulSets get `replicas: 1`), and the one
/// disruptive step to take now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Ordinals whose StatefulSet should exist.
    pub instances: BTreeSet<u32>,
    /// Ordinals that should be running (the others get `replicas: 0`).
    pub running: BTreeSet<u32>,
    pub step: Step,
    /// What this pass does with a `tusk.dev/switchover` request, if there is one to act on.
    pub switchover_request: Option<RequestHandling>,
}

/// How a pass disposes of a `tusk.dev/switchover` request. Either way the request is taken
/// away before anything else happens, so it is carried out at most once: a request that
/// stayed would move the primary again on every pass (`any` always finds another replica).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestHandling {
    /// Nothing to do, or nothing that can be done: clear it and say why.
    Settle(String),
    /// This plan's [`Step::Switchover`] carries it out: clear it, then switch over once,
    /// whatever Patroni answers.
    CarryOut,
}
